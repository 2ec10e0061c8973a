"""`payrules bill` at scale: sessions streamed from the inputs, billed in this process or in N worker
processes, records written as they come — in input order, one per session, whatever is wrong with it —
and a summary whose counts add up."""
from __future__ import annotations

import collections
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field

from . import render
from .billing import Biller
from .counters import PatientYear
from .loader import Registry
from .errors import EvaluationError, OutputError, SessionError
from .sessions import ParseError, RawLine

CHUNK = 256                     # sessions per task sent to a worker
CHUNK_BYTES = 1 << 20           # ... or fewer: a chunk is cut once its unparsed JSONL lines reach this size


@dataclass
class Counts:
    read: int = 0
    billed: int = 0
    with_errors: int = 0
    failed_to_parse: int = 0

    def add(self, category: str) -> None:
        self.read += 1
        if category == "parse":
            self.failed_to_parse += 1
        elif category == "error":
            self.with_errors += 1
        else:
            self.billed += 1

    def line(self, interrupted: bool = False) -> str:
        return (f"payrules: {'interrupted: ' if interrupted else ''}{render.plural(self.read, 'session')} read: "
                f"{self.billed} billed, {self.with_errors} with errors, "
                f"{self.failed_to_parse} failed to parse")


# --- billing one session, in this process or a worker -----------------------------------------------

@dataclass(frozen=True)
class Job:
    """What every session of a run is billed and rendered with."""
    payer: str | None = None
    date: str | None = None
    fmt: str = "jsonl"
    audit: bool = False
    width: int = field(default_factory=render.text_width)   # for table: decided here, not in a worker


def process(biller, session, job: Job) -> tuple:
    """One session's outcome, rendered where it was billed so that only bytes cross processes:
    (category: billed | error | parse, the record in the output format as UTF-8 (for json: a list element),
    its error lines for stderr (no patient data), and for --audit-db what the log keeps of it (audit.entry)).
    A plain tuple: it pickles several times faster than a named one."""
    if isinstance(session, RawLine):
        session = session.parse()
    outcome = biller.evaluate(session, job.payer, job.date)
    record = outcome if isinstance(outcome, dict) else outcome.result
    states = None, None
    if not isinstance(outcome, dict) and outcome.session.patient_id is None and outcome.session.year_to_date is not None:
        # a session with its own year_to_date and no patient is a patient of its own (engine/counters.py)
        year = PatientYear(biller.registry.resolve, None)
        before = year.snapshot()
        record = year.apply(outcome.session, record, job.date)
        states = before, year.snapshot()
    return finish(session, outcome, record, job, states)


def finish(session, outcome, record: dict, job: Job, states: tuple = (None, None)) -> tuple:
    """process()'s tuple of a session billed (`outcome`) whose result is `record` (engine/patients.py
    passes the result after the edits across sessions and the patient's year), and the patient's year's
    state before and after it (the audit log keeps them, so that --replay reproduces a KX decision)."""
    failed = "error" in record or any(w["severity"] == "error" for w in record["warnings"])
    category = "parse" if isinstance(session, ParseError) else ("error" if failed else "billed")
    text = render_one(record, job.fmt, job.width, year_rules(outcome) if job.fmt == "table" else ())
    audit = None
    if job.audit:       # with the record as JSONL: the same bytes object when that is the output (pickled once)
        from .audit import entry
        audit = entry(session, outcome, record, text if job.fmt == "jsonl" else encode_jsonl(record), job.payer,
                      job.date, states)
    return category, text, report_lines(session, record) if failed else (), audit


def year_rules(outcome) -> frozenset:
    """The ids of the payer's counter thresholds (KX, visit limits), whose steps the table shows."""
    payer = getattr(outcome, "payer", None)
    return frozenset(t.id for c in payer.counters for t in c.thresholds) if payer else frozenset()


def render_one(record: dict, fmt: str, width: int = render.DEFAULT_WIDTH, year=frozenset()) -> bytes:
    """The record as written out: UTF-8 bytes, made where it was billed so that the reading process,
    which writes them, does not encode a record's text again."""
    if fmt == "jsonl":
        return encode_jsonl(record)
    if fmt == "json":
        text = "  " + json.dumps(record, indent=2, ensure_ascii=False).replace("\n", "\n  ")
    elif fmt == "csv":
        text = render.csv_lines(record)
    else:
        text = render.to_table([record], width, year)
    return encode_text(text)


def encode_text(text: str) -> bytes:
    # a lone surrogate (which session parsing keeps out of results) is written as its JSON escape
    return text.encode("utf-8", "backslashreplace")


def encode_jsonl(record: dict) -> bytes:
    """One JSONL line, newline included: json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\\n"
    in UTF-8. orjson writes a result with its trace about 5x faster. It refuses a few values the json
    module writes (integers beyond 64 bits, lone surrogates); those go through json."""
    import orjson       # here, not at the top: a cold run of one session in another format skips it
    try:
        return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError:
        return encode_text(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")


def report_lines(session, record, payer_id: str | None = None) -> tuple:
    """`FILE:LINE: session ID: problem` for each error of a session: its id, never its other data."""
    if isinstance(session, SessionError):
        return tuple(f"{line} (session {session.session_id})" for line in session.lines())
    where = f"{session.file}:{session.line}: " if session.file and session.line else ""
    who = f"session {record['session_id']}" + (f", payer {payer_id}" if payer_id else "")
    if "error" in record:
        return (f"{where}{who}: {record['error']}",)
    return tuple(f"{where}{who}: {w['rule']}: {w['message']}" for w in record["warnings"] if w["severity"] == "error")


_worker = {}


def _init_worker(registry, engine, job):
    """`registry`: the reading process's (a forked worker has it already: the rule files as read and checked
    when the run began, not as they may be on disk by now), or the --rules trees to read."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # Ctrl-C reaches the whole process group: the parent stops
    _worker["biller"] = Biller(registry if isinstance(registry, Registry) else Registry(registry), engine)
    _worker["job"] = job


def _process_chunk(items):
    biller, job = _worker["biller"], _worker["job"]
    return [process(biller, RawLine(item) if type(item) is tuple else item, job) for item in items]


def _wire(chunk: list) -> list:
    """A chunk as sent to a worker: an unparsed line goes as the plain tuple under its RawLine, which
    pickles several times faster (the reading process does the pickling)."""
    return [tuple(item) if type(item) is RawLine else item for item in chunk]


def bill_stream(sessions, rules, engine, job: Job, jobs: int, registry=None):
    """(item, process()'s tuple) for every session (a Session, SessionError or unparsed RawLine), in input
    order, billed in `jobs` processes."""
    if jobs <= 1:
        biller = Biller(registry or Registry(rules), engine)
        try:
            for session in sessions:
                yield session, process(biller, session, job)
        finally:
            biller.close()
        return
    # only here: they are slow to import and most runs use one process. Not multiprocessing.Pool: its
    # worker-handler thread spins while results wait in the pipe, taking CPU from the workers.
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    context = multiprocessing.get_context("fork")
    pool = ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker,
                               initargs=(registry or rules, engine, job))      # forked: not pickled
    try:
        pending = collections.deque()       # (chunk, future), at most 4 per worker in flight, oldest first
        chunk, size = [], 0
        for session in sessions:
            chunk.append(session)
            if type(session) is RawLine:        # memory stays flat however large the lines in flight
                size += len(session[0])
            if len(chunk) == CHUNK or size >= CHUNK_BYTES:
                pending.append((chunk, pool.submit(_process_chunk, _wire(chunk))))
                chunk, size = [], 0
                while len(pending) >= 4 * jobs:
                    yield from _drain(pending.popleft())
        if chunk:
            pending.append((chunk, pool.submit(_process_chunk, _wire(chunk))))
        while pending:
            yield from _drain(pending.popleft())
    finally:    # stopped early (Ctrl-C, an output error): chunks not started are dropped, not billed
        pool.shutdown(cancel_futures=True)


def _drain(item):
    from concurrent.futures.process import BrokenProcessPool
    chunk, future = item
    try:
        done = future.result()
    except BrokenProcessPool:
        raise EvaluationError("a worker process died (out of memory?); run again, or with fewer --jobs") from None
    yield from zip(chunk, done)


def interruptible(stream, restore: bool = True):
    """`stream`'s items, with Ctrl-C (SIGINT) held back while the caller handles one: KeyboardInterrupt is
    raised only while the next item is read or billed, so that each record is written and counted whole
    or not at all. Main thread only (where Python runs signal handlers). With `restore` false, SIGINT
    stays held back once the stream has ended, for a caller whose clean-up must not be cut short either;
    that caller puts the previous handler back."""
    state = {"armed": True, "pending": False}
    pid = os.getpid()

    def handler(signum, frame):
        if os.getpid() != pid:          # a worker, forked before it set SIGINT aside
            return
        if state["armed"]:
            state["armed"] = False      # once: a second Ctrl-C does not interrupt the clean-up
            raise KeyboardInterrupt
        state["pending"] = True

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:                  # not the main thread: signals are not handled here
        yield from stream
        return
    try:
        for item in stream:
            state["armed"] = False
            yield item
            state["armed"] = True
            if state["pending"]:
                raise KeyboardInterrupt
    finally:
        state["armed"] = False          # closing the stream (shutting the worker pool down) is not interrupted
        try:
            stream.close()
        finally:
            if restore:
                signal.signal(signal.SIGINT, previous)


# --- output -------------------------------------------------------------------------------------------

_CSV_HEADER = render.CSV_HEADER.encode()


class Writer:
    """Writes rendered records (bytes) as they come, with the list brackets and CSV header around them."""

    def __init__(self, fmt: str, out=None):
        self.fmt = fmt
        self.out = out or sys.stdout.buffer
        self.count = 0

    def write(self, data: bytes) -> None:
        if self.count == 0:
            data = {"json": b"[\n", "csv": _CSV_HEADER}.get(self.fmt, b"") + data
        elif self.fmt == "json":
            data = b",\n" + data
        elif self.fmt == "table":
            data = b"\n" + data
        self._put(data)
        self.count += 1

    def write_single(self, record: dict) -> None:
        """The one session of a single-object input, as an object (design.md §5)."""
        self._put(encode_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n"))
        self.count = -1

    def close(self) -> None:
        if self.fmt == "json" and self.count >= 0:
            self._put(b"[]\n" if self.count == 0 else b"\n]\n")
        elif self.fmt == "csv" and self.count == 0:
            self._put(_CSV_HEADER)
        self._put(b"", flush=True)

    def close_after(self, written: int, out) -> None:
        """Closes the output on the first `written` records, which reached `out` (the audit log stopped
        the run: the records after them were neither logged nor written)."""
        self.out = out
        if self.count >= 0:
            self.count = written
        self.close()

    def _put(self, data: bytes, flush: bool = False) -> None:
        try:
            self.out.write(data)
            if flush:
                self.out.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputError(exc) from None


class Progress:
    """Sessions done, rate and errors on one stderr line, when stderr is a terminal."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.on = self.stream.isatty()
        self.start = self.last = time.monotonic()

    def update(self, counts: Counts) -> None:
        if not self.on:
            return
        now = time.monotonic()
        if now - self.last >= 0.2:
            self.last = now
            rate = counts.read / max(now - self.start, 1e-9)
            errors = counts.with_errors + counts.failed_to_parse
            self._write(f"\r{render.plural(counts.read, 'session')}, {rate:,.0f}/s, {errors} with errors ")

    def done(self) -> None:
        if self.on:
            self._write("\r\033[K")

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except OSError:         # the terminal went away: billing goes on without a progress line
            self.on = False
