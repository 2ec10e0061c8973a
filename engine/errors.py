"""One root error class, one branch for authoring (input) errors and one for evaluation.

Every expected error carries where it happened (file, line) and what (a field path), so the CLI can
print `error: FILE:LINE: PATH: message` and never a traceback.
"""
from __future__ import annotations

import datetime
import re


class PayrulesError(Exception):
    """Root of every error the engine raises on purpose."""


class InputError(PayrulesError):
    """Bad input: a rule file, a session or a command-line argument.

    `file` and `line` locate it, `path` names the offending field (`rules[2].then[0]`). Input with several
    mistakes is one error whose `errors` holds each of them, in order of position (see gather); str()
    lists them all, "; " between them, and lines() one per line.
    """

    errors: tuple = ()          # with several mistakes: each of them (this one stands for them all)
    unlisted = 0                # mistakes found beyond those in `errors`

    def __init__(self, message: str, file: str | None = None, line: int | None = None, path: str = ""):
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.path = path

    @classmethod
    def gather(cls, errors: list, unlisted: int = 0):
        """One error for all of these mistakes (a non-empty list, in order): the first MAX_LISTED of them,
        and how many more there are."""
        unlisted += max(0, len(errors) - MAX_LISTED)
        errors = errors[:MAX_LISTED]
        first = errors[0]
        if len(errors) == 1 and not unlisted:
            return first
        out = cls(first.message, first.file, first.line, first.path)
        out.errors, out.unlisted = tuple(errors), unlisted
        return out

    def lines(self) -> list:
        """One line per mistake (`FILE:LINE: PATH: message`), and "and N more" when some are not listed."""
        shown = [e.where() for e in self.errors or (self,)]
        return shown + [f"and {self.unlisted} more"] if self.unlisted else shown

    def where(self) -> str:
        """This one mistake: `FILE:LINE: PATH: message`."""
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        field = f"{self.path}: " if self.path else ""
        return f"{where}{field}{self.message}"

    def __str__(self) -> str:
        return "; ".join(self.lines())


MAX_LISTED = 20         # mistakes listed in one error (one session's error record, one run's rule files)


class RuleFileError(InputError):
    """A payer rule file that cannot be loaded, validated or compiled (exit code 2)."""


class SessionError(InputError):
    """A session that cannot be billed at all (becomes an error record, exit code 1)."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None, path: str = "",
                 session_id: str | None = None):
        super().__init__(message, file, line, path)
        self.session_id = session_id

    @classmethod
    def gather(cls, errors: list, session_id: str | None = None, unlisted: int = 0):
        for e in errors:
            e.session_id = session_id
        out = super().gather(errors, unlisted)
        out.session_id = session_id
        return out


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
    """A real calendar date written YYYY-MM-DD (date.fromisoformat alone also takes 20260101 and 2026-W01-1).
    What is wrong with one that is not: date_problem."""
    try:
        return (len(text) == 10 and text.isascii() and text[4] == text[7] == "-"
                and bool(datetime.date.fromisoformat(text)))
    except (ValueError, TypeError):
        return False


_DATE_SHAPE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def date_problem(value, echo: bool = True) -> str | None:
    """None for a real calendar date written YYYY-MM-DD; otherwise what is wrong with it, in words:
    "'2026-3-2' is not a date like 2026-03-02", "'2026-02-30' is not a real date". With `echo` false the
    value is left out (a session's date is the patient's): "not a real date"."""
    if is_date(value):
        return None
    shown = f"{_shown(value)} is " if echo else ""
    if not isinstance(value, str) or not _DATE_SHAPE.fullmatch(value):
        return f"{shown}not a date like 2026-03-02"
    return f"{shown}not a real date"


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
