"""Session input: YAML/JSON (one session or a list), JSONL, or standard input → Session models.

A session that fails validation becomes a SessionError in its place, so counts always add up; only an
input that cannot be parsed at all raises (UsageError, exit 2).
"""
from __future__ import annotations

import datetime
import sys

from .errors import SessionError, UsageError
from .model import Service, Session
from .schema import schema_errors
from .yamlload import Located, load_text

MAX_INPUT_BYTES = 64 * 1024 * 1024


def read_input(name: str):
    """(display name, text) of an input file or '-' for standard input."""
    if name == "-":
        data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
        display = "<stdin>"
    else:
        try:
            with open(name, "rb") as fh:
                data = fh.read(MAX_INPUT_BYTES + 1)
        except OSError as exc:
            raise UsageError(f"cannot read input: {exc.strerror}", name) from None
        display = name
    if len(data) > MAX_INPUT_BYTES:
        raise UsageError(f"input larger than {MAX_INPUT_BYTES} bytes", display)
    try:
        return display, data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError("input is not UTF-8 text", display, data[:exc.start].count(b"\n") + 1) from None


def load_sessions(name: str, start: int = 1) -> tuple:
    """(sessions, single): every session in one input, as Session or SessionError, in input order, and
    whether the input was one session object rather than a list or JSONL.
    `start` numbers the default session ids (session-<n>) across several inputs."""
    display, text = read_input(name)
    if display.endswith(".jsonl") or (display == "<stdin>" and _looks_like_jsonl(text)):
        return _from_jsonl(text, display, start), False
    doc = load_text(text, display, UsageError)
    if isinstance(doc.data, list):
        return [parse_session(item, doc, (i,), start + i) for i, item in enumerate(doc.data)], False
    if isinstance(doc.data, dict):
        return [parse_session(doc.data, doc, (), start)], True
    raise UsageError("input must hold a session (a mapping) or a list of sessions", display, doc.line_of(()))


def _is_date(text: str) -> bool:
    try:
        datetime.date.fromisoformat(text)
        return True
    except ValueError:
        return False


def _looks_like_jsonl(text: str) -> bool:
    lines = [l for l in text.splitlines() if l.strip()]
    return len(lines) > 1 and all(l.lstrip().startswith("{") and l.rstrip().endswith("}") for l in lines)


def _from_jsonl(text: str, display: str, start: int) -> list:
    out = []
    number = start
    for lineno, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            doc = load_text(raw, display, SessionError)
            doc.lines = {path: lineno for path in doc.lines}
        except SessionError as exc:
            out.append(SessionError(exc.message, display, lineno, session_id=f"session-{number}"))
            number += 1
            continue
        out.append(parse_session(doc.data, doc, (), number))
        number += 1
    return out


def parse_session(data, doc: Located, path: tuple, number: int):
    """One session object → Session, or SessionError naming the first problem."""
    default_id = f"session-{number}"
    if not isinstance(data, dict):
        return SessionError("a session must be a mapping", doc.file, doc.line_of(path), session_id=default_id)
    session_id = str(data["session_id"]) if isinstance(data.get("session_id"), (str, int)) \
        and not isinstance(data.get("session_id"), bool) else default_id
    errors = schema_errors("session", doc, SessionError, data=data, base_path=path, echo_values=False)
    if errors:
        errors[0].session_id = session_id
        return errors[0]
    date = data.get("date_of_service")
    if date is not None and not _is_date(date):
        return SessionError("not a calendar date (YYYY-MM-DD)", doc.file, doc.line_of(path + ("date_of_service",)),
                            "date_of_service", session_id=session_id)
    services = tuple(Service(code=str(s["code"]), minutes=s["minutes"], group_size=s.get("group_size"),
                             provider=s.get("provider")) for s in data["services"])
    return Session(session_id=session_id, services=services, payer=data.get("payer"),
                   date_of_service=data.get("date_of_service"), discipline=data.get("discipline"),
                   context=data.get("context", {}), file=doc.file, line=doc.line_of(path))

