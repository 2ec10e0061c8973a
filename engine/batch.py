"""`payrules bill` at scale: sessions streamed from the inputs, billed in this process or in N worker
processes, records written as they come — in input order, one per session, whatever is wrong with it —
and a summary whose counts add up."""
from __future__ import annotations

import collections
import json
import sys
import time
from dataclasses import dataclass

from . import render
from .billing import Biller
from .loader import Registry
from .sessions import ParseError

CHUNK = 64                      # sessions per task sent to a worker


@dataclass
class Counts:
    read: int = 0
    billed: int = 0
    with_errors: int = 0
    failed_to_parse: int = 0

    def add(self, session, record) -> None:
        self.read += 1
        if isinstance(session, ParseError):
            self.failed_to_parse += 1
        elif "error" in record or any(w["severity"] == "error" for w in record["warnings"]):
            self.with_errors += 1
        else:
            self.billed += 1

    def line(self) -> str:
        return (f"payrules: {self.read} sessions read: {self.billed} billed, {self.with_errors} with errors, "
                f"{self.failed_to_parse} failed to parse")


# --- workers ------------------------------------------------------------------------------------------

_worker = {}


def _init_worker(rules, engine, payer, date):
    _worker["biller"] = Biller(Registry(rules), engine)
    _worker["args"] = (payer, date)


def _bill_chunk(sessions):
    biller, (payer, date) = _worker["biller"], _worker["args"]
    return [bill_one(biller, s, payer, date) for s in sessions]


def bill_one(biller, session, payer, date):
    """(record, audit facts): the record and what the audit log needs beyond it."""
    outcome = biller.evaluate(session, payer, date)
    if isinstance(outcome, dict):
        return outcome, None
    return outcome.result, (outcome.payer.digest, outcome.payer.files, outcome.session.date_of_service)


def bill_stream(sessions, rules, engine, payer, date, jobs: int, registry=None):
    """(session, record, audit facts) for every session, in input order."""
    if jobs <= 1:
        biller = Biller(registry or Registry(rules), engine)
        try:
            for session in sessions:
                yield (session, *bill_one(biller, session, payer, date))
        finally:
            biller.close()
        return
    import multiprocessing          # only here: it is slow to import and most runs use one process
    context = multiprocessing.get_context("fork")
    with context.Pool(jobs, _init_worker, (rules, engine, payer, date)) as pool:
        pending = collections.deque()       # (chunk, async result), at most 4 per worker in flight
        chunk = []
        for session in sessions:
            chunk.append(session)
            if len(chunk) == CHUNK:
                pending.append((chunk, pool.apply_async(_bill_chunk, (chunk,))))
                chunk = []
                while len(pending) >= 4 * jobs:
                    yield from _drain(pending.popleft())
        if chunk:
            pending.append((chunk, pool.apply_async(_bill_chunk, (chunk,))))
        while pending:
            yield from _drain(pending.popleft())


def _drain(item):
    chunk, result = item
    for session, (record, audit) in zip(chunk, result.get()):
        yield session, record, audit


# --- output -------------------------------------------------------------------------------------------

class Writer:
    """Writes records as they come; `single` = one JSON object instead of a list."""

    def __init__(self, fmt: str, out=None):
        self.fmt = fmt
        self.out = out or sys.stdout
        self.count = 0

    def write(self, record: dict, single: bool = False) -> None:
        out, n = self.out, self.count
        if self.fmt == "jsonl":
            out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
        elif self.fmt == "json":
            text = json.dumps(record, indent=2, ensure_ascii=False)
            if single:
                out.write(text + "\n")
            else:
                out.write(("[\n" if n == 0 else ",\n") + "  " + text.replace("\n", "\n  "))
        elif self.fmt == "csv":
            rows = render.to_csv([record])
            out.write(rows if n == 0 else rows.split("\n", 1)[1])
        else:
            out.write(("" if n == 0 else "\n") + render.to_table([record]))
        self.count += 1

    def close(self, single: bool = False) -> None:
        if self.fmt == "json" and not single:
            self.out.write("[]\n" if self.count == 0 else "\n]\n")
        elif self.fmt == "csv" and self.count == 0:
            self.out.write(",".join(render.CSV_COLUMNS) + "\n")
        self.out.flush()


class Progress:
    """Sessions done, rate and errors on one stderr line, when stderr is a terminal."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.on = self.stream.isatty()
        self.start = self.last = time.monotonic()

    def update(self, counts: Counts) -> None:
        now = time.monotonic()
        if self.on and now - self.last >= 0.2:
            self.last = now
            rate = counts.read / max(now - self.start, 1e-9)
            errors = counts.with_errors + counts.failed_to_parse
            self.stream.write(f"\r{counts.read} sessions, {rate:,.0f}/s, {errors} with errors ")
            self.stream.flush()

    def done(self) -> None:
        if self.on:
            self.stream.write("\r\033[K")
