"""`payrules bill` with `patient_id`: a patient's sessions billed in date order, whatever the input's order,
and every record written in input order (issue 13).

Sessions without a `patient_id` (and records that cannot be read as a session) take batch.bill_stream as
before: billed as they are read, and written as they come until the first session with a `patient_id`.
Sessions with one are spooled to disk as they were read (the unparsed JSONL line, or the parsed session),
with their place in the input; once the input has ended they are sorted by (patient, date of service,
session id, place) in an external sort (sorted runs of at most SPOOL_BYTES, merged with heapq.merge), cut
into shards of whole patients (SHARD sessions or more), and each shard is billed by bill_shard — in this
process, or with --jobs N in N worker processes, a patient's sessions always in one shard. Records that come
after the first patient session are spooled too (by place), and all are merged back into input order.

Memory: the two spools' buffers (2 x SPOOL_BYTES) and the shards in flight (4 per worker), whatever the
input's length. Temporary space (in TMPDIR): about the size of the patient sessions as read plus that of
the records written after the first of them.

Sessions of a patient without a date of service come after the patient's dated ones. Within one date
sessions are taken in session id order, then by content, then input order (counters.walk_key, as explain
takes them), so that a session's record does not depend on the input's order (the edits across sessions of
one date are on the later one). Before a patient's first session is billed, those of its sessions that
may give a year_to_date are read: the patient's is the first given in that order, whichever session
gives it. A day's sessions of a patient at a time are held parsed.

The library's lists (RuleBook.bill_many, bill), the service's, `compare` (per payer) and a scenario's patient
bill through bill_records, `explain` through explain_in_order: the same code, so none depends on the order."""
from __future__ import annotations

import collections
import heapq
import itertools
import pickle
import tempfile
from operator import itemgetter

from . import edits as E
from .batch import Job, _init_worker, _worker, bill_stream, finish, process
from .billing import Biller
from .counters import PatientYear, content
from .errors import EvaluationError
from .loader import Registry
from .sessions import RawLine

SAME_DAY = 12              # a patient's earlier sessions of one date the edits across sessions look at
SHARD = 256                 # sessions per shard, at least: a shard ends at the end of a patient's sessions
SPOOL_BYTES = 32 << 20      # bytes of records held in memory by each spool before a sorted run is written
PACE = object()             # bill_in_order(pace=True): a patient session was read and spooled


def patient_year(resolve, patient_id: str) -> PatientYear:
    """A patient's year (engine/counters.py: KX, visit limits): its apply(session, result, date) is called
    for each billed session of the patient in the order above, and its snapshot() before and after each is
    what the audit log keeps. Tests pass another factory to watch the order."""
    return PatientYear(resolve, patient_id)


# --- the unit of work: a shard of patients ------------------------------------------------------------

def bill_shard(shard: list, biller: Biller, job: Job, year_factory=patient_year, done=finish) -> list:
    """[(place, process()'s tuple)] of a shard: [(patient, no date, date, session id, place, pickled item)]
    sorted, every session of each of its patients. The same code whatever runs it (this process, a worker,
    a distributed engine's partition). `done`: what makes that tuple (explain_in_order keeps the outcome)."""
    out = []
    for patient, rows in itertools.groupby(shard, itemgetter(0)):
        rows = list(rows)
        year = year_factory(biller.registry.resolve, patient)
        snapshot = getattr(year, "snapshot", None)
        if hasattr(year, "begin"):      # the patient's year_to_date, whichever of its sessions gives it
            year.begin(_giving(rows))
        for (_, date), day in itertools.groupby(rows, itemgetter(1, 2)):
            # a day's sessions parsed (not a whole patient's: one patient may have very many), in the walk's
            # order: two of one session id by content (counters.walk_key), whatever their order in the input
            day = sorted(((row[3], row[4], _parsed(row[5])) for row in day), key=lambda s: (s[0], content(s[2])))
            billed: dict = {}   # id(payer) -> [(session id, lines)] of the day's sessions billed so far
            for _, place, session in day:
                outcome = biller.evaluate(session, job.payer, job.date)
                if isinstance(outcome, dict):           # not billed: an error record in its place
                    out.append((place, done(session, outcome, outcome, job)))
                    continue
                record, payer = outcome.result, outcome.payer
                earlier = billed.setdefault(id(payer), [])
                # the first SAME_DAY of them: a placeholder patient_id on thousands of sessions of one date
                # would make the edits across sessions quadratic (the later session names every earlier one)
                others, beyond = earlier[:SAME_DAY], max(0, len(earlier) - SAME_DAY)
                same_day = None
                if others and payer.edits:
                    made = E.apply_across(record, date or None, payer.edits, others, beyond)
                    if made:
                        outcome.edits = [*outcome.edits, *made]
                    if made or beyond:
                        same_day = same_day_lines(others)       # the audit log keeps them: --replay
                earlier.append((record["session_id"], record["lines"]))
                state = [snapshot() if snapshot else None]
                record = year.apply(outcome.session, record, job.date)
                state += [snapshot() if snapshot else None, same_day, beyond if same_day is not None else 0]
                out.append((place, done(session, outcome, record, job, tuple(state))))
    return out


def same_day_lines(others) -> list:
    """The lines of the day's earlier sessions an edit across sessions was worked from, as the audit log
    keeps them: [[session id, [{code, units, modifiers}]]] (what edits.apply_across reads)."""
    return [[sid, [{"code": line["code"], "units": line["units"], "modifiers": list(line["modifiers"])}
                   for line in lines]] for sid, lines in others]


def _giving(rows) -> list:
    """The sessions of a patient's sorted rows that give a year_to_date, in the walk's order (parsed: an
    unparsed line only when its text may hold one)."""
    giving = []
    for row in rows:
        item = pickle.loads(row[5])
        if isinstance(item, RawLine):
            if b"year_to_date" not in item[0] and b"\\u" not in item[0]:
                continue
            item = item.parse()
        if getattr(item, "year_to_date", None) is not None:
            giving.append((row[1:4], content(item), item))
    giving.sort(key=itemgetter(0, 1))
    return [item for *_, item in giving]


def _parsed(blob):
    session = pickle.loads(blob)
    return session.parse() if isinstance(session, RawLine) else session


def _bill_shard_in_worker(shard):
    return bill_shard(shard, _worker["biller"], _worker["job"], _worker["year"])


def _init_patient_worker(registry, engine, job, year_factory):
    _init_worker(registry, engine, job)
    _worker["year"] = year_factory


# --- spooling ----------------------------------------------------------------------------------------

class Spool:
    """An external sort: tuples added in any order (their last but one item unique, so that the
    pickled last is never compared), read back sorted; at most SPOOL_BYTES of them in memory."""

    def __init__(self, limit: int | None = None):
        self.limit, self.buffer, self.size, self.runs = limit or SPOOL_BYTES, [], 0, []

    def add(self, record: tuple) -> None:
        self.buffer.append(record)
        self.size += len(record[-1]) + 100
        if self.size >= self.limit:
            self._flush()

    def _flush(self) -> None:
        self.buffer.sort()
        try:
            run = tempfile.TemporaryFile(prefix="payrules-spool-")
            write, dumps = run.write, pickle.dumps
            for record in self.buffer:
                write(dumps(record, 5))
            run.flush()
            run.seek(0)
        except OSError as exc:
            raise EvaluationError(f"cannot write the temporary spool in {tempfile.gettempdir()}: "
                                  f"{exc.strerror or exc}; free some space or set TMPDIR") from None
        self.runs.append(run)
        self.buffer, self.size = [], 0

    def __iter__(self):
        if not self.runs:
            self.buffer.sort()
            return iter(self.buffer)
        if self.buffer:
            self._flush()
        return heapq.merge(*map(_read_run, self.runs))

    def close(self) -> None:
        for run in self.runs:
            run.close()
        self.runs, self.buffer = [], []


def _read_run(run):
    load = pickle.load
    while True:
        try:
            yield load(run)
        except EOFError:
            return


def patient_key(item, date: str | None):
    """(patient, no date, date, session id) of a session with a patient_id, else None (it takes the
    stateless path). `date`: --date, which replaces every session's date of service."""
    if type(item) is RawLine:
        raw = item[0]
        if b'"patient_id"' not in raw and b"\\u" not in raw:      # a key may be written with an escape
            return None
        import orjson
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            data = None
        if data is not None and type(data) is not dict:
            return None                     # not a session: an error record on the stateless path
        patient = data.get("patient_id") if data is not None else None
        if type(patient) is not str and type(patient) is not int and (data is None or patient is not None):
            # what orjson refuses and the session's reader may take (an integer beyond 64 bits, NaN), or a
            # patient_id it may read (7.0 is "7.0"): read as the session will be, so that --jobs N (which
            # defers parsing) routes the session as --jobs 1 does
            parsed = item.parse()
            return None if isinstance(parsed, Exception) else patient_key(parsed, date)
        day, sid = data.get("date_of_service"), data.get("session_id")
        sid = sid if type(sid) is str else str(sid) if type(sid) is int else f"session-{item[3]}"
    else:
        patient = getattr(item, "patient_id", None)     # a SessionError has none: an error record in its place
        day, sid = getattr(item, "date_of_service", None), getattr(item, "session_id", "")
    if type(patient) is int:
        patient = str(patient)              # a number is the patient's id, as the session reads it: any length
    elif type(patient) is not str or not patient or (type(item) is RawLine and len(patient) > 128):
        return None                         # no patient, or a text the schema refuses (said on that path)
    day = date or (day if type(day) is str else None)
    return patient, day is None, day or "", sid


# --- the run -----------------------------------------------------------------------------------------

def bill_in_order(sources, rules, engine, job: Job, jobs: int, registry=None, year_factory=patient_year,
                  biller=None, pace: bool = False):
    """batch.bill_stream's (item, tuple) pairs, for every session of `sources` in input order (the item is
    None for a session billed as a patient's), each patient's sessions billed in date order.

    `biller`: bill with this Biller (one process; it is not closed), as the library and the service do with
    their RuleBook's. `pace`: also yield (None, None) for each session spooled, each record held back and after each
    shard of patients, so that a caller that serves others meanwhile (the service's event loop, its time
    limit) gets its turns."""
    positions = collections.deque()     # places of the sessions sent down the stateless path, in order
    patients, records = Spool(), Spool()
    first = []                          # the place of the first patient session

    def stateless():
        for place, item in enumerate(sources):
            key = patient_key(item, job.date)
            if key is None:
                positions.append(place)
                yield item
            else:
                first or first.append(place)
                patients.add((*key, place, pickle.dumps(item, 5)))
                if pace:
                    yield PACE          # a session read and spooled: the caller's turn (never to bill_stream)

    try:
        stream = bill_stream(stateless(), rules, engine, job, jobs, registry) if biller is None else \
            ((item, None if item is PACE else process(biller, item, job)) for item in stateless())
        try:
            for item, done in stream:
                if item is PACE:
                    yield None, None
                    continue
                place = positions.popleft()
                if not first or place < first[0]:
                    yield item, done
                else:
                    records.add((place, pickle.dumps(done, 5)))
                    if pace:
                        yield None, None
        finally:
            stream.close()
        if not first:
            return
        for shard in _bill_patients(patients, rules, engine, job, jobs, registry, year_factory, biller):
            for place, done in shard:
                records.add((place, pickle.dumps(done, 5)))
            if pace:
                yield None, None
        patients.close()
        for _, blob in records:
            yield None, pickle.loads(blob)
    finally:
        patients.close()
        records.close()


def bill_records(items, biller, payer: str | None = None, date: str | None = None, pace: bool = False):
    """(category, record) of each of `items` (Session, SessionError or RawLine), in input order, billed by
    bill_in_order in this process with `biller` (the library's and the service's lists): the record is the
    dict `payrules bill --format json` writes for the session, billed with --payer `payer`, --date `date`.
    With `pace`, (None, None) between them, as bill_in_order's."""
    import orjson
    for _, done in bill_in_order(items, (), None, Job(payer, date, "jsonl"), 1, biller=biller, pace=pace):
        if done is None:
            yield None, None
            continue
        try:
            record = orjson.loads(done[1])
        except orjson.JSONDecodeError:      # what orjson does not read (an integer beyond 64 bits)
            import json
            record = json.loads(done[1])
        yield done[0], record


def explain_in_order(sessions: list, biller, payer: str | None = None, date: str | None = None) -> list:
    """(outcome or error record, the patient's year's Steps) of each session of an input held in memory
    (`explain`), billed as bill_in_order bills it: a patient's sessions by bill_shard (date order, the edits
    across its sessions of one date), each other session alone (with its own year_to_date, if any)."""
    from .counters import apply_all
    out, rows, years = [], [], []
    for place, session in enumerate(sessions):
        key = patient_key(session, date)
        if key is None:
            outcome = biller.evaluate(session, payer, date)
            steps = [] if isinstance(outcome, dict) else \
                apply_all(biller.registry.resolve, [session], [outcome.result], date, explain=True)[0]
            out.append((outcome, steps))
        else:
            out.append(None)
            rows.append((*key, place, pickle.dumps(session, 5)))

    def year_factory(resolve, patient):
        years.append(PatientYear(resolve, patient, explain=True))
        return years[-1]

    def done(session, outcome, record, job, states=None):
        return outcome, (list(years[-1].steps) if states else [])

    for place, explained in bill_shard(sorted(rows), biller, Job(payer, date), year_factory, done):
        out[place] = explained
    return out


def _shards(sorted_sessions):
    shard = []
    for patient, sessions in itertools.groupby(sorted_sessions, itemgetter(0)):
        shard.extend(sessions)
        if len(shard) >= SHARD:
            yield shard
            shard = []
    if shard:
        yield shard


def _bill_patients(spool, rules, engine, job, jobs, registry, year_factory, biller=None):
    """bill_shard's [(place, tuple)] of each shard of the spooled sessions, in `jobs` processes (one with a
    `biller` given)."""
    if jobs <= 1 or biller is not None:
        own = biller is None
        biller = biller or Biller(registry or Registry(rules), engine)
        try:
            for shard in _shards(spool):
                yield bill_shard(shard, biller, job, year_factory)
        finally:
            if own:
                biller.close()
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork"),
                               initializer=_init_patient_worker, initargs=(registry or rules, engine, job, year_factory))
    try:
        pending = collections.deque()
        for shard in _shards(spool):
            pending.append(pool.submit(_bill_shard_in_worker, shard))
            while len(pending) >= 4 * jobs:
                yield _result(pending.popleft(), BrokenProcessPool)
        while pending:
            yield _result(pending.popleft(), BrokenProcessPool)
    finally:
        pool.shutdown(cancel_futures=True)


def _result(future, broken):
    try:
        return future.result()
    except broken:
        raise EvaluationError("a worker process died (out of memory?); run again, or with fewer --jobs") from None
