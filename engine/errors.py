"""One root error class, one branch for authoring (input) errors and one for evaluation.

Every expected error carries where it happened (file, line) and what (a field path), so the CLI can
print `error: FILE:LINE: PATH: message` and never a traceback.
"""
from __future__ import annotations

import datetime


class PayrulesError(Exception):
    """Root of every error the engine raises on purpose."""


class InputError(PayrulesError):
    """Bad input: a rule file, a session or a command-line argument.

    `file` and `line` locate it, `path` names the offending field (`rules[2].then[0]`).
    """

    def __init__(self, message: str, file: str | None = None, line: int | None = None, path: str = ""):
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.path = path

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        field = f"{self.path}: " if self.path else ""
        return f"{where}{field}{self.message}"


class RuleFileError(InputError):
    """A payer rule file that cannot be loaded, validated or compiled (exit code 2)."""


class SessionError(InputError):
    """A session that cannot be billed at all (becomes an error record, exit code 1)."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None, path: str = "",
                 session_id: str | None = None):
        super().__init__(message, file, line, path)
        self.session_id = session_id


class UsageError(InputError):
    """A command-line mistake or an input file that cannot be parsed at all (exit code 2)."""


class LogWriteError(UsageError):
    """The audit log could not commit a batch (a full disk, ...): the run stops after the records logged."""


class OutputError(PayrulesError):
    """Standard output cannot be written: closed, or a full disk (exit code 2)."""

    def __init__(self, cause: OSError | str):
        reason = cause.strerror or str(cause) if isinstance(cause, OSError) else cause
        super().__init__(f"cannot write standard output: {reason}")


class EvaluationError(PayrulesError):
    """A rule network or action handler failed while billing a session."""


def is_date(text: str) -> bool:
    """A real calendar date written YYYY-MM-DD (date.fromisoformat alone also takes 20260101 and 2026-W01-1)."""
    try:
        return (len(text) == 10 and text.isascii() and text[4] == text[7] == "-"
                and bool(datetime.date.fromisoformat(text)))
    except (ValueError, TypeError):
        return False


def suggest(word: str, choices) -> str:
    """' (did you mean X?)' for the closest choice, or '' when nothing is close."""
    best = closest(word, choices)
    return f" (did you mean {best!r}?)" if best is not None else ""


def closest(word: str, choices, max_distance: int | None = None):
    """The choice with the smallest edit distance to `word`; ties go to the numerically nearest code,
    then to the smallest. None when nothing is within `max_distance` (default: a third of the length)."""
    word = str(word)
    limit = max_distance if max_distance is not None else max(1, len(word) // 3)
    best_key, best = None, None
    for choice in choices:
        choice = str(choice)
        distance = edit_distance(word, choice)
        if distance > limit and max_distance is None and len(word) >= 4 and choice.startswith(word):
            distance = limit        # an abbreviation: 'midpoint' for 'midpoint_per_code'
        if distance > limit:
            continue
        nearness = abs(int(word) - int(choice)) if word.isdigit() and choice.isdigit() else 0
        key = (distance, nearness, choice)
        if best_key is None or key < best_key:
            best_key, best = key, choice
    return best


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insert, delete, substitute)."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]
