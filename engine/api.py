"""The library API (shared/design.md §7): `payer_rules.RuleBook`, `payer_rules.bill` and the one exception
class, `payer_rules.PayrulesError`.

Every call goes through the functions the `payrules` command uses (Registry, Biller, the session parser,
compare and explain), so a result equals, as data, what `payrules ... --format json` prints for the same
session. What the command turns into an error record (a session it cannot bill: invalid, no payer, an
unknown payer of its own) is returned as that record; what makes the command stop with `error: ...` and
exit code 2 (a broken rule file, an unknown `payer=` or compare payer, a bad `engine` or `date`) raises
PayrulesError, whose str() is the message the command prints after `error: `.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from typing import Any, Union

from .billing import Biller
from .cli import _check_why_not, _date, _ids
from .compare import choose_base, compare_sessions
from .errors import PayrulesError, SessionError, UsageError
from .explain import explain_json
from .loader import Registry
from .model import Session
from .network import ENGINES, default_engine, durable_available
from .patients import bill_records, explain_in_order
from .sessions import ParseError, parse_session
from .yamlload import Located

__all__ = ["RuleBook", "bill", "PayrulesError"]

RulesPath = Union[str, "os.PathLike[str]"]   # a rules directory, as --rules takes it
Record = dict[str, Any]                     # a result (design.md §5) or an error record
DateLike = Union[str, datetime.date]        # a date of service: "2026-03-02" or datetime.date(2026, 3, 2)


class RuleBook:
    """The bundled payers plus the rule trees in `rules`, loaded and checked once, ready to bill.

    `rules`: extra rules trees, like `payrules --rules DIR` (one path, or several). `engine`: "durable",
    "python", or None for the default (durable where it is installed). Every rule file is read, validated
    and compiled, and every payer's rule network built, here: a broken rule file raises PayrulesError
    with the message `payrules validate` gives, before anything is billed.

    A RuleBook may be used from several threads: calls that touch its rule networks take turns (a
    durable-rules handle must never be driven from two threads at once). `close()` (or a `with` block)
    frees the networks now; they are built again if the book is used after it.
    """

    def __init__(self, rules: RulesPath | Iterable[RulesPath] = (), engine: str | None = None) -> None:
        self.engine: str = _engine(engine) or default_engine()
        self.rules: tuple[str, ...] = _rule_dirs(rules)
        self._registry = Registry(self.rules)       # a rule-file problem raises here ...
        self._registry.check_all(self.engine)       # ... and so does one the compiler or the engine refuses
        self._biller = Biller(self._registry, self.engine)
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, self._biller.close)

    def bill(self, session: Any, *, payer: str | None = None, date: DateLike | None = None) -> Record:
        """The result of one session (design.md §5), or its error record `{"session_id", "error"}`: what
        `payrules bill` gives for a file of that one session.

        `session` is a session as JSON gives it (design.md §4); `payer` bills it under that payer whatever
        its own (`--payer`), `date` sets its date of service (`--date`). A session without a session_id is
        "session-1", as in a file of one session. Its `year_to_date` seeds its patient's year (KX, visit
        limits), with or without a patient_id; no other session is counted with it (bill_many counts a
        patient's sessions together)."""
        payer, date = self._options(payer, date)
        return self._bill(session, 1, payer, date)

    def bill_many(self, sessions: Iterable[Any], *, payer: str | None = None,
                  date: DateLike | None = None) -> Iterator[Record]:
        """The result or error record of each session, in input order, one per session: what `payrules
        bill --format json` writes for a file of these sessions (engine/patients.py), whatever their order.

        A patient's sessions (those with a `patient_id`) are billed in date-of-service order, with the
        patient's year (KX, visit limits, from its `year_to_date`) and the edits across its sessions of one
        date (NCCI PTP, MUE per date of service). Sessions without a patient_id are billed as the iterator
        is read (a generator input is read one session at a time) until the first session with a
        patient_id: from there on a record may depend on a later session, so the rest of the input is read
        before the next result. Memory is bounded as the command's: patient sessions and the records after
        the first of them are spooled to temporary files (TMPDIR) beyond 32 MB each.

        An element that is not a session (not a mapping, or one the schema refuses) is an error record in
        its place. A session without a session_id is "session-N", N its position from 1, as in a file that
        lists them. `sessions` itself must be an iterable of sessions: one session (a mapping), a str or a
        non-iterable raises PayrulesError, and so do a bad `payer` or `date`, at once."""
        if isinstance(sessions, (Mapping, str, bytes, bytearray)):
            raise UsageError("sessions: give an iterable of sessions (bill() takes one session)")
        try:
            items = iter(sessions)
        except TypeError:
            raise UsageError(f"sessions: {type(sessions).__name__} is not an iterable of sessions") from None
        payer, date = self._options(payer, date)
        parsed = (_parse(item, number) for number, item in enumerate(items, 1))
        return (record for _, record in self._records(parsed, payer, date))

    def compare(self, session: Any, payers: Iterable[str] | str, *, base: str | None = None,
                date: DateLike | None = None) -> dict[str, Any]:
        """One session under several payers (`payrules compare --payers A,B [--base ID] --format json` for
        one session): {"session_id", "payers", "base", "results": {id: result}, "rows", "totals", "differs"}.
        `payers`: payer ids (or one comma-separated text); repeats are dropped. `base`: the payer the others
        are measured against, one of `payers` (default: medicare when compared, else the first)."""
        try:
            ids = _ids(",".join(_texts(payers, "payers", "payer ids")))
        except argparse.ArgumentTypeError as exc:
            raise UsageError(f"payers: {exc}") from None
        for payer_id in ids:
            if not self._registry.has(payer_id):
                raise UsageError(self._registry.unknown_message(payer_id))
        base = choose_base(ids, base)
        date = self._date(date)
        parsed = _parse(session, 1)
        with self._lock:
            return compare_sessions([parsed], ids, self._biller, date, base)[0]

    def explain(self, session: Any, *, payer: str | None = None, date: DateLike | None = None,
                why_not: Iterable[str] | str = ()) -> dict[str, Any]:
        """How one session was billed (`payrules explain --format json` for one session): every rule that
        fired with its source and facts, the unit arithmetic, why each unbilled code got nothing, the
        result, and for each id in `why_not` which condition of that rule failed. A session that cannot
        be billed is its error record. A `why_not` id that is no rule of the payer raises PayrulesError."""
        payer, date = self._options(payer, date)
        rule_ids = _texts(why_not, "why_not", "rule ids")
        parsed = _parse(session, 1)
        with self._lock:
            own = set() if payer or isinstance(parsed, SessionError) or not parsed.payer \
                or not self._registry.has(parsed.payer) else {parsed.payer}
            _check_why_not(self._registry, rule_ids, {payer} if payer else own)
            outcome, steps = explain_in_order([parsed], self._biller, payer, date)[0]
            if isinstance(outcome, dict):
                return outcome
            return explain_json(outcome, rule_ids, steps)

    def payers(self) -> list[dict[str, Any]]:
        """Every version of every known payer (`payrules payers --format json`): id, name, method, file,
        extends, effective_from, effective_to."""
        with self._lock:
            return self._registry.listing()

    def close(self) -> None:
        """Free the rule networks (durable-rules handles) now rather than when the book is collected."""
        with self._lock:
            self._biller.close()

    def __enter__(self) -> RuleBook:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RuleBook(rules={self.rules!r}, engine={self.engine!r})"

    # --- helpers -------------------------------------------------------------------------------------
    def _bill(self, data: Any, number: int, payer: str | None, date: str | None) -> Record:
        """One session billed alone, as the command bills a file of it (the service uses this too)."""
        return next(self._records([_parse(data, number)], payer, date))[1]

    def _records(self, parsed: Iterable[Any], payer: str | None, date: str | None, biller: Any = None,
                 pace: bool = False) -> Iterator[tuple]:
        """engine/patients.bill_records over parsed sessions (Session or SessionError), with this book's
        rule networks (`biller`: a _Turns of them, by default a new one)."""
        return bill_records(parsed, biller or _Turns(self), payer, date, pace)

    def _options(self, payer: Any, date: Any) -> tuple[str | None, str | None]:
        """`payer` and `date` checked as the command checks --payer and --date (an empty payer is none)."""
        if payer is not None and payer != "" and (not isinstance(payer, str) or not self._registry.has(payer)):
            raise UsageError(self._registry.unknown_message(payer))
        return payer or None, self._date(date)

    @staticmethod
    def _date(date: Any) -> str | None:
        if date is None:
            return None
        try:
            return _date(date if isinstance(date, str) else str(date))   # a datetime.date is its ISO text
        except argparse.ArgumentTypeError as exc:
            raise UsageError(f"date: {exc}") from None


class _Turns:
    """A RuleBook's Biller as engine/patients.py drives it: each call that reaches the rule networks or the
    registry's caches holds the book's lock (a list billed in one thread and the calls of another take
    turns, one network call at a time), and closing it leaves the book's networks alone."""

    def __init__(self, book: RuleBook) -> None:
        self._biller, self._lock = book._biller, book._lock
        self.registry = self            # process() and bill_shard() resolve payers through biller.registry

    def evaluate(self, session: Any, payer_id: str | None = None, date: str | None = None) -> Any:
        with self._lock:
            return self._biller.evaluate(session, payer_id, date)

    def resolve(self, payer_id: str, date: str | None) -> Any:
        with self._lock:
            return self._biller.registry.resolve(payer_id, date)

    def close(self) -> None:
        pass


def _engine(engine: Any) -> str | None:
    """`engine` checked as argparse checks --engine's choices, and "durable" where it is not installed."""
    if engine is not None and (not isinstance(engine, str) or engine not in ENGINES):
        raise UsageError(f"engine: invalid choice: {engine!r} (choose from {', '.join(map(repr, ENGINES))})")
    if engine == "durable" and not durable_available():
        raise UsageError('engine: the durable engine is not installed on this Python; use engine="python" '
                         '(or None, the default)')
    return engine


def _texts(value: Any, name: str, what: str) -> list[str]:
    """One text, or an iterable of texts, as a list; anything else raises."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, Iterable) and not isinstance(value, Mapping):
        items = list(value)
        if all(isinstance(item, str) for item in items):
            return items
    raise UsageError(f"{name}: give a list of {what}")


def _rule_dirs(rules: Any) -> tuple[str, ...]:
    if isinstance(rules, (str, os.PathLike)):
        rules = (rules,)
    if not isinstance(rules, Iterable) or isinstance(rules, Mapping):
        raise UsageError("rules: give a rules directory or a list of them")
    out = []
    for item in rules:
        if not isinstance(item, (str, os.PathLike)):
            raise UsageError(f"rules: {item!r} is not a directory name")
        out.append(os.fspath(item))
    return tuple(out)


def _parse(data: Any, number: int) -> Session | SessionError:
    """A session → Session, or the SessionError its error record reports. It is billed as the command
    bills the JSON text json.dumps(session) (a date is its ISO text, as an unquoted date in YAML; a
    mapping, its dict), so that the result is the command's; a value JSON cannot write (a set, bytes,
    a key that is no text or number) is an error record. Messages have no FILE:LINE: (no file)."""
    try:
        text = json.dumps(data, ensure_ascii=False, default=_json_default)
        data = json.loads(text)
    except (TypeError, ValueError) as exc:
        return ParseError(f"not JSON data: {exc}", session_id=_id_of(data, number))
    except RecursionError:
        return ParseError("JSON nested too deeply", session_id=_id_of(data, number))
    return parse_session(data, Located(data, {}, ""), (), number, text)    # "": from no file


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def _id_of(data: Any, number: int) -> str:
    """The session id of a session that is not JSON data: its own when that is plain text."""
    sid = data.get("session_id") if isinstance(data, Mapping) else None
    return sid if type(sid) is str and 1 <= len(sid) <= 128 and sid.isprintable() else f"session-{number}"


@lru_cache(maxsize=8)
def _book(rules: tuple[str, ...], engine: str | None) -> RuleBook:
    return RuleBook(rules, engine)


def bill(session: Any, *, rules: RulesPath | Iterable[RulesPath] = (), engine: str | None = None,
         payer: str | None = None, date: DateLike | None = None) -> Record:
    """Bill one session: `RuleBook(rules, engine).bill(session, payer=..., date=...)`, with the RuleBook
    made at the first call for these `rules` and `engine` and kept for the next (rule files edited after
    it are not seen: make a RuleBook to choose when they are read)."""
    return _book(_rule_dirs(rules), _engine(engine)).bill(session, payer=payer, date=date)
