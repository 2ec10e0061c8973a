"""The audit log: `bill --audit-db PATH` records every billed session in SQLite so that a decision can be
found (`payrules audit PATH --session/--rule/--payer/--from/--to`) and reproduced from the log alone
(`payrules audit PATH --replay`).

A session's row holds its id, position in the run, payer and date of service as billed, the sha256 of the
whole session as read (context included: it proves which input it was without keeping the context), the
rule set it was billed with and the set of rules that fired. Its billing input (discipline and services:
code, minutes, group_size, provider, modifiers — what a rule can read —, patient_id, year_to_date, and of
the context only the keys its payer's counters read: an authorization number) and its result (as `bill --format jsonl`
writes it) are in its batch: the sessions of one write transaction, compressed together with zlib, which
shrinks them about 20-fold (the same words recur session after session). Rule files are stored once each,
content and all, by sha256; a rule set lists the files (display path, sha256) a payer was built from.

Writing: WAL mode, a busy timeout, and one short BEGIN IMMEDIATE transaction per batch, so that several
`bill --audit-db` runs can share one log. A batch's output is written only after the batch is committed
(the log is written before the output): whatever a killed run has written out is in the log.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import queue
import sqlite3
import threading
import time
import zlib

import orjson
from pathlib import Path, PurePosixPath

from . import __version__
from .errors import LogWriteError, OutputError, PayrulesError, UsageError
from .model import NO_CONTEXT, Service, Session
from .paths import env_rules
from .render import plural

APPLICATION_ID = 0x50524C47         # "PRLG" in the SQLite header: a payrules audit log
FORMAT = 2                          # PRAGMA user_version of the layout below (0.1.0 wrote an unmarked format 1)
BATCH = 1000                        # sessions per write transaction (and per release of their output)
BATCH_SECONDS = 1.0                 # ... or fewer, when they come slowly
BUSY_SECONDS = 60.0                 # how long a writer waits for another one's transaction

SCHEMA = (
    """CREATE TABLE runs (
        run_id      INTEGER PRIMARY KEY,
        started_at  TEXT NOT NULL,          -- UTC, ISO 8601
        engine      TEXT NOT NULL,
        version     TEXT NOT NULL           -- of payrules
    )""",
    """CREATE TABLE rule_files (
        sha256      TEXT PRIMARY KEY,       -- of the content
        content     BLOB NOT NULL           -- the file's bytes
    )""",
    """CREATE TABLE rule_sets (
        set_id      INTEGER PRIMARY KEY,
        rules_hash  TEXT NOT NULL UNIQUE,   -- the payer's digest: sha256 over its files' hashes
        files       TEXT NOT NULL           -- JSON [[display path, sha256], ...], parent first
    )""",
    """CREATE TABLE rule_lists (
        list_id     INTEGER PRIMARY KEY,
        rules       TEXT NOT NULL UNIQUE    -- ' a b c ': the ids of the rules that fired, sorted
    )""",
    """CREATE TABLE batches (
        batch_id    INTEGER PRIMARY KEY,
        data        BLOB NOT NULL           -- zlib: two JSON lines per session of the batch, in order (see
                                            -- entry): its billing input, and its result as bill writes it
    )""",
    """CREATE TABLE sessions (
        row_id          INTEGER PRIMARY KEY,
        run_id          INTEGER NOT NULL REFERENCES runs(run_id),
        position        INTEGER NOT NULL,   -- 1-based position in the run's input
        session_id      TEXT NOT NULL,
        payer           TEXT,               -- as billed (--payer applied); for a session not billed, as asked
        date_of_service TEXT,               -- as billed (--date applied)
        set_id          INTEGER REFERENCES rule_sets(set_id),      -- NULL: not billed
        list_id         INTEGER REFERENCES rule_lists(list_id),    -- NULL: no rule fired
        input_sha256    BLOB,               -- of the session as read, context included (input_digest)
        batch_id        INTEGER NOT NULL REFERENCES batches(batch_id),
        item            INTEGER NOT NULL    -- 0-based place in the batch
    )""",
    "CREATE INDEX sessions_by_id ON sessions(session_id)",     # the other filters scan the table
)
TABLES = {"runs", "rule_files", "rule_sets", "rule_lists", "batches", "sessions"}


# --- what a session leaves in the log: made where it was billed (a worker, with --jobs) ---------------

def entry(session, outcome, record: dict, line: bytes, payer_id=None, date=None, states=(None, None)) -> tuple:
    """(session id, payer, date of service, rule set (digest, files) or None, the ids of the rules that fired,
    billing input line, input sha256, result line): bytes and text, cheap to send between processes.
    The billing input line is the session as read without its context (see input_doc; null when the
    session could not be read); the result line is `line`: the record as `bill --format jsonl` writes it."""
    if isinstance(outcome, dict):           # not billed: the payer and date the session asked for
        rules = fired = None
        if isinstance(session, Session):
            payer_id, date = payer_id or session.payer, date or session.date_of_service
    else:
        edits = outcome.payer.edits
        # the data tables (NCCI PTP/MUE) billed with are logged like rule files, by content
        rules = (outcome.payer.digest, outcome.payer.files + edits.named if edits else outcome.payer.files)
        payer_id, date = outcome.payer.id, outcome.session.date_of_service
        fired = frozenset([t["rule"] for t in record["trace"]])
    billing_input, digest = b"null", None
    if isinstance(session, Session):
        doc = input_doc(session)
        billing_input = _canonical(doc, sort=False)
        if session.context is not NO_CONTEXT:
            doc["context"] = session.context
            digest = hashlib.sha256(_canonical(doc)).digest()
            # of the context, only what billing read is kept: the keys that name an authorization
            read = context_read(None if isinstance(outcome, dict) else outcome.payer)
            kept = {key: session.context[key] for key in sorted(read) if key in session.context}
            doc.pop("context")
            if kept:
                doc["context"] = kept
                billing_input = _canonical(doc)
        else:
            digest = hashlib.sha256(billing_input).digest()
        if states[0] is not None:   # the patient's accumulators before and after (engine/counters.py): replay
            doc["patient_year"] = {"before": states[0], "after": states[1]}
            if len(states) > 2 and states[2]:   # the day's other sessions an edit across sessions read
                doc["patient_year"]["same_day"] = states[2]
                if len(states) > 3 and states[3]:       # and how many more there were (not looked at)
                    doc["patient_year"]["same_day_beyond"] = states[3]
            billing_input = _canonical(doc)
    return record["session_id"], payer_id, date, rules, fired, billing_input + b"\n", digest, line


def context_read(payer) -> frozenset:
    """The keys of a session's context that billing under `payer` reads: its counters' authorization_field
    (period: authorization). No rule reads the context."""
    if payer is None:
        return frozenset()
    return frozenset(c.authorization_field for c in payer.counters if c.period == "authorization")


def input_doc(session: Session) -> dict:
    """The session as read, without its context: {session_id, payer, date_of_service, discipline,
    services: [{code, minutes, group_size, provider, modifiers}]}, fields it did not give left out, session id and
    codes as text; its keys in sorted order. The input sha256 is that of this object with the context
    (when the session has one) written as JSON with sorted keys and no spaces (orjson.dumps(doc,
    option=OPT_SORT_KEYS))."""
    doc = {}
    if session.date_of_service is not None:
        doc["date_of_service"] = session.date_of_service
    if session.discipline is not None:
        doc["discipline"] = session.discipline
    if session.patient_id is not None:
        doc["patient_id"] = session.patient_id
    if session.payer is not None:
        doc["payer"] = session.payer
    doc["services"] = [{"code": s[0], "minutes": s[1]} if s[2] is None and s[3] is None and not s[4] else
                       {k: list(v) if k == "modifiers" else v for k, v in sorted(zip(Service._fields, s))
                        if v is not None and v != ()} for s in session.services]
    doc["session_id"] = session.session_id
    if session.year_to_date is not None:
        doc["year_to_date"] = dict(session.year_to_date)
    return doc


def _canonical(doc, sort: bool = True) -> bytes:
    """JSON with sorted keys, no spaces (`sort` False: the keys are in order already)."""
    try:
        return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS) if sort else orjson.dumps(doc)
    except (orjson.JSONEncodeError, TypeError):     # e.g. integers beyond 64 bits, keys that are not text
        try:
            return json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                              default=str).encode("utf-8", "backslashreplace")
        except TypeError:
            return repr(doc).encode("utf-8", "backslashreplace")


# --- opening -------------------------------------------------------------------------------------------

def _identity(db: sqlite3.Connection) -> tuple:
    app = db.execute("PRAGMA application_id").fetchone()[0]
    version = db.execute("PRAGMA user_version").fetchone()[0]
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return app, version, tables


def _check(app, version, tables, path: str) -> None:
    if app == APPLICATION_ID and version == FORMAT and TABLES <= tables:
        return
    if app == APPLICATION_ID:
        raise UsageError(f"audit log of format {version}; this payrules ({__version__}) reads format {FORMAT}", path)
    if app == 0 and {"runs", "sessions", "rule_files", "firings"} <= tables:
        raise UsageError("an audit log written by payrules 0.1 (an older format): start a new log", path)
    if not tables:
        raise UsageError("not a payrules audit log (an empty database)", path)
    raise UsageError("not a payrules audit log (another application's SQLite database; left as it is)", path)


def _sqlite_error(exc: sqlite3.Error, path: str, doing: str, kind=UsageError) -> UsageError:
    text = str(exc)
    if "not a database" in text:
        return UsageError("not a payrules audit log (not an SQLite database, or a damaged one)", path)
    return kind(f"cannot {doing} the audit log: {text}", path)


def open_for_writing(path: str, threads: bool = False) -> sqlite3.Connection:
    """The log at `path`, created when the file is new or empty; refused when it is anything else.
    `threads`: used by another thread than this one (one at a time)."""
    try:
        db = sqlite3.connect(path, timeout=BUSY_SECONDS, isolation_level=None, check_same_thread=not threads)
    except sqlite3.Error as exc:
        raise _sqlite_error(exc, path, "open") from None
    try:
        # one look at the file under the write lock: two runs may create the same new log at once, and a
        # look in several statements could see its application_id before the other run's commit and its
        # tables after it
        db.execute("BEGIN IMMEDIATE")
        app, version, tables = _identity(db)
        if app == 0 and not tables:
            for statement in SCHEMA:
                db.execute(statement)
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute(f"PRAGMA user_version = {FORMAT}")
            app, version, tables = APPLICATION_ID, FORMAT, TABLES
        db.execute("COMMIT")
        _check(app, version, tables, path)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")   # a commit survives a killed process; fsync at checkpoints
        return db
    except BaseException as exc:
        db.close()
        if isinstance(exc, sqlite3.Error):
            raise _sqlite_error(exc, path, "use") from None
        raise


def open_for_reading(path: str) -> sqlite3.Connection:
    """An existing log, read-only: a query never changes the file. The path goes into a file: URI, quoted
    (a name with % # or ? is a file name, not URI syntax)."""
    try:
        db = sqlite3.connect(Path(path).absolute().as_uri() + "?mode=ro", uri=True, timeout=BUSY_SECONDS)
    except sqlite3.Error as exc:
        raise _sqlite_error(exc, path, "read") from None
    try:
        _check(*_identity(db), path)
        return db
    except BaseException as exc:
        db.close()
        if not isinstance(exc, sqlite3.Error):
            raise
        raise _sqlite_error(exc, path, "read") from None


def _close(db: sqlite3.Connection) -> None:
    """Closes a log; a failure here (the last checkpoint on a full disk) loses nothing committed: the
    next opening of the log finds it in the WAL file."""
    try:
        db.close()
    except sqlite3.Error:
        pass


# --- writing -------------------------------------------------------------------------------------------

class _Held:
    """The output stream of `bill`, held back: what is written reaches the real stream only once the
    sessions it shows are committed to the log."""

    def __init__(self, log):
        self.log, self.chunks = log, []

    def write(self, data: bytes) -> None:
        self.chunks.append(data)

    def flush(self) -> None:
        self.log.commit()


class AuditLog:
    """One run's sessions, appended in batches; `out` is the stream `bill` writes its records to.

    A writer thread compresses and commits each batch, then writes the batch's output to `out`, while the
    main thread bills the next one (zlib and SQLite let go of the GIL). A failure there (disk full, a
    closed output) is raised in the main thread at its next commit or at close; later batches are then
    neither committed nor written out."""

    def __init__(self, path: str, engine: str, registry, out):
        self.path, self.stream = path, out
        self.db = open_for_writing(path, threads=True)
        # each rule file's bytes as read when the run began, by sha256: a file saved since is not read again
        self.contents = {spec.digest: spec.raw for specs in registry.versions.values() for spec in specs}
        self.out = _Held(self)
        self.pending = []
        self.sets, self.lists = {}, {}          # rules hash -> set_id; rule ids that fired -> list_id
        self.failure = None
        self.written = 0                        # records whose output was written out (after their commit)
        self.closed = False
        self.last = time.monotonic()
        started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        try:
            self.run_id = self._write(lambda: self.db.execute(
                "INSERT INTO runs (started_at, engine, version) VALUES (?, ?, ?)",
                (started, engine, __version__)).lastrowid)
        except BaseException:
            _close(self.db)
            raise
        self.batches = queue.Queue(maxsize=2)
        self.thread = threading.Thread(target=self._writer, name="audit-log", daemon=True)
        self.thread.start()

    def record(self, position: int, entry: tuple) -> None:
        self.pending.append((position, entry))
        if len(self.pending) >= BATCH or time.monotonic() - self.last >= BATCH_SECONDS:
            self.commit()

    def commit(self) -> None:
        """Hands the pending sessions and their output to the writer thread."""
        self._raise()
        self.batches.put((self.pending, self.out.chunks))
        self.pending, self.out.chunks = [], []
        self.last = time.monotonic()

    def close(self) -> None:
        """Commits what is pending (and writes out its output), then closes the log (once)."""
        if self.closed:
            return
        self.closed = True
        try:
            if self.failure is None:
                self.batches.put((self.pending, self.out.chunks))
            self.pending, self.out.chunks = [], []
            self.batches.put(None)
            self.thread.join()
        finally:
            _close(self.db)
        self._raise()

    def _raise(self) -> None:
        if self.failure is not None:
            failure, self.failure = self.failure, False     # raised once; the log stays stopped
            if failure:
                raise failure

    def _writer(self) -> None:
        while True:
            batch = self.batches.get()
            if batch is None:
                return
            if self.failure is not None:
                continue
            pending, chunks = batch
            try:
                if pending:
                    # compressed before the transaction, which stays short
                    data = zlib.compress(b"".join(line for _, e in pending for line in (e[5], e[7])), 1)
                    self._write(lambda: self._insert(data, pending))
                try:
                    if chunks:
                        self.stream.write(b"".join(chunks))
                    self.stream.flush()
                except BrokenPipeError:
                    raise
                except OSError as exc:      # stdout closed or full: `bill`'s own error for it
                    raise OutputError(exc) from None
                self.written += len(pending)
            except BaseException as exc:    # noqa: B036 - handed over to the main thread
                self.failure = exc

    def _write(self, work):
        """`work` in one BEGIN IMMEDIATE transaction; a failure (disk full, ...) rolls it back, so the log
        keeps every batch committed before, and becomes one error."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                result = work()
                self.db.execute("COMMIT")
                return result
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise _sqlite_error(exc, self.path, "write", LogWriteError) from None

    def _insert(self, data: bytes, pending: list) -> None:
        batch_id = self.db.execute("INSERT INTO batches (data) VALUES (?)", (data,)).lastrowid
        sets, lists = self.sets, self.lists
        self.db.executemany(
            "INSERT INTO sessions (run_id, position, session_id, payer, date_of_service, set_id, list_id,"
            " input_sha256, batch_id, item) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(self.run_id, position, sid, payer, date, rules and (sets.get(rules[0]) or self._set(*rules)),
              fired and (lists.get(fired) or self._list(fired)), digest, batch_id, item)
             for item, (position, (sid, payer, date, rules, fired, _, digest, _)) in enumerate(pending)])

    def _list(self, fired: frozenset) -> int:
        rules = f" {' '.join(sorted(fired))} "
        found = self.db.execute("SELECT list_id FROM rule_lists WHERE rules = ?", (rules,)).fetchone()
        list_id = self.lists[fired] = found[0] if found else \
            self.db.execute("INSERT INTO rule_lists (rules) VALUES (?)", (rules,)).lastrowid
        return list_id

    def _set(self, digest: str, files: tuple) -> int:
        set_id = self.sets.get(digest)
        if set_id is None:
            found = self.db.execute("SELECT set_id FROM rule_sets WHERE rules_hash = ?", (digest,)).fetchone()
            if found:
                set_id = found[0]
            else:
                for display, sha in files:
                    self.db.execute("INSERT OR IGNORE INTO rule_files (sha256, content) VALUES (?, ?)",
                                    (sha, self._content(display, sha)))
                set_id = self.db.execute("INSERT INTO rule_sets (rules_hash, files) VALUES (?, ?)",
                                         (digest, json.dumps([list(f) for f in files]))).lastrowid
            self.sets[digest] = set_id
        return set_id

    def _content(self, display: str, sha: str) -> bytes:
        """A rule file's bytes as billed with (read when the run began)."""
        content = self.contents.get(sha)
        if content is None:
            content = _table_content(sha)
        if content is None:
            raise UsageError(f"rule file {display} billed with is not one the run read: its content cannot be logged",
                             self.path)
        return content


def _table_content(sha: str) -> bytes | None:
    """A data table billed with, zlib-compressed (the benchmark's 125 MB synthetic PTP file: 23 MB, 2.8 s
    CPU), once per content; None when no table of that sha256 was read or its file has changed since."""
    from .edits import loaded_tables
    for table in loaded_tables():
        if table.digest == sha:
            try:
                with open(table.file, "rb") as fh:
                    raw = fh.read()
            except OSError:
                return None
            return zlib.compress(raw, 6) if hashlib.sha256(raw).hexdigest() == sha else None
    return None


def is_table(display: str) -> bool:
    """Whether a logged file is a data table (stored compressed), not a rule file."""
    return PurePosixPath(display).suffix not in (".yaml", ".yml")


# --- reading -------------------------------------------------------------------------------------------

class _Reader:
    def __init__(self, db):
        self.db = db
        self.sets, self.batch = {}, (None, [])

    def rule_set(self, set_id):
        """(rules hash, [(file, sha256), ...]) of a rule set, or (None, [])."""
        if set_id is None:
            return None, []
        if set_id not in self.sets:
            digest, files = self.db.execute("SELECT rules_hash, files FROM rule_sets WHERE set_id = ?",
                                            (set_id,)).fetchone()
            self.sets[set_id] = digest, [tuple(f) for f in json.loads(files)]
        return self.sets[set_id]

    def lines(self, batch_id: int, item: int) -> tuple:
        """(billing input, result) of a session: lines 2 item and 2 item + 1 of its batch."""
        if self.batch[0] != batch_id:
            (data,) = self.db.execute("SELECT data FROM batches WHERE batch_id = ?", (batch_id,)).fetchone()
            self.batch = batch_id, zlib.decompress(data).split(b"\n")
        lines = self.batch[1]
        return json.loads(lines[2 * item]), json.loads(lines[2 * item + 1])

    def rows(self, session_id=None, payer=None, date_from=None, date_to=None, rule=None):
        where, args = [], []
        for column, op, value in (("s.session_id", "=", session_id), ("s.payer", "=", payer),
                                  ("s.date_of_service", ">=", date_from), ("s.date_of_service", "<=", date_to)):
            if value is not None:
                where.append(f"{column} {op} ?")
                args.append(value)
        if rule is not None:
            where.append("s.list_id IN (SELECT list_id FROM rule_lists WHERE instr(rules, ?))")
            args.append(f" {rule} ")
        sql = ("SELECT s.run_id, r.started_at, r.engine, r.version, s.position, s.session_id, s.payer,"
               " s.date_of_service, s.set_id, s.input_sha256, s.batch_id, s.item"
               " FROM sessions s JOIN runs r USING (run_id)"
               + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY s.row_id")
        yield from self.db.execute(sql, args).fetchall()

    def entry(self, row) -> dict:
        run_id, started, engine, version, position, sid, payer, dos, set_id, digest, batch_id, item = row
        billing_input, record = self.lines(batch_id, item)
        rules_hash, files = self.rule_set(set_id)
        return {"run_id": run_id, "billed_at": started, "engine": engine, "version": version, "position": position,
                "session_id": sid, "payer": payer, "date_of_service": dos, "rules_hash": rules_hash,
                "status": status(record),
                "rule_files": [{"file": f, "sha256": h} for f, h in sorted(files) if not is_table(f)],
                "tables": [{"file": f, "sha256": h} for f, h in sorted(files) if is_table(f)],
                "input": billing_input, "input_sha256": digest.hex() if digest is not None else None,
                "result": record}


def status(record: dict) -> str:
    if "error" in record:
        return "not-billed"
    return "error-warnings" if any(w["severity"] == "error" for w in record["warnings"]) else "billed"


def _read(path: str, work):
    db = open_for_reading(path)
    try:
        return work(_Reader(db))
    except sqlite3.Error as exc:
        raise _sqlite_error(exc, path, "read") from None
    except (zlib.error, ValueError, TypeError, IndexError) as exc:      # a batch or row not as written
        raise UsageError(f"damaged audit log: {type(exc).__name__}: {exc}", path) from None
    finally:
        db.close()


def query(path: str, session_id=None, rule=None, payer=None, date_from=None, date_to=None) -> list:
    """Logged sessions matching every filter given, oldest first. With `rule`, only sessions that rule
    touched (fired on), each with the firings of that rule."""
    def work(reader):
        out = []
        for row in reader.rows(session_id, payer, date_from, date_to, rule):
            entry = reader.entry(row)
            if rule:
                entry["firings"] = [t for t in entry["result"].get("trace", ()) if t["rule"] == rule]
            out.append(entry)
        return out
    return _read(path, work)


# --- replay --------------------------------------------------------------------------------------------

def replay(path: str, session_id=None, current_rules=None, engine=None) -> list:
    """Bill the logged sessions again from their logged input: with the logged rule files (`current_rules`
    None) or with today's (bundled + the `current_rules` trees). Returns [(entry as query gives it, the
    new record or None when it cannot be replayed, the differences)]."""
    from .billing import Biller
    from .loader import Registry
    from .network import durable_available, default_engine
    import tempfile

    def engine_for(logged):
        name = engine or logged
        return name if name != "durable" or durable_available() else default_engine()

    today = Registry(current_rules) if current_rules is not None else None     # a bad rule file: exit 2

    def unwritable(exc: OSError) -> UsageError:
        return UsageError(f"cannot write the logged rule files to a temporary folder in {tempfile.gettempdir()}: "
                          f"{exc.strerror or exc}; free some space or set TMPDIR")

    def work(reader):
        out, billers = [], {}
        try:
            folder = tempfile.TemporaryDirectory(prefix="payrules-replay-")
        except OSError as exc:
            raise unwritable(exc) from None
        with folder as tmp:
            try:
                for row in reader.rows(session_id):
                    entry, set_id = reader.entry(row), row[8]
                    if entry["input"] is None or (current_rules is None and set_id is None):
                        out.append((entry, None, []))
                        continue
                    key = (None if current_rules is not None else set_id, engine_for(entry["engine"]))
                    if key not in billers:
                        try:
                            registry = today or _logged_registry(reader, set_id, Path(tmp) / str(set_id))
                            billers[key] = Biller(registry, key[1])
                        except OSError as exc:      # the logged files could not be written out (a full disk)
                            raise unwritable(exc) from None
                        except PayrulesError as exc:
                            billers[key] = exc
                    biller = billers[key]
                    if isinstance(biller, PayrulesError):
                        out.append((entry, {"session_id": entry["session_id"], "error": str(biller)},
                                    [f"the logged rule files cannot be loaded: {biller}"]))
                        continue
                    session = _session(entry)
                    record = biller.bill(session)
                    logged_year = entry["input"].get("patient_year")
                    if logged_year is not None and "error" not in record:
                        # the edits across the day's sessions from their logged lines, then the patient's year
                        # from the logged "before" state: the session replayed alone
                        from .counters import PatientYear
                        if logged_year.get("same_day"):
                            from .edits import apply_across
                            payer = biller.registry.resolve(record["payer"], session.date_of_service)
                            apply_across(record, session.date_of_service, payer.edits,
                                         [(sid, lines) for sid, lines in logged_year["same_day"]],
                                         logged_year.get("same_day_beyond", 0))
                        PatientYear.restore(biller.registry.resolve, logged_year["before"]).apply(session, record)
                    out.append((entry, record, differences(entry["result"], record)))
            finally:
                for biller in billers.values():
                    if not isinstance(biller, PayrulesError):
                        biller.close()
        return out
    return _read(path, work)


def _logged_registry(reader, set_id: int, root: Path):
    """A registry of exactly the rule files of a logged rule set, written under `root` with the display
    paths they were billed with (so a trace's file:line comes out the same)."""
    from .loader import PayerFile, Registry
    _, files = reader.rule_set(set_id)
    written = []
    for display, sha in files:
        parts = PurePosixPath(display).parts
        if len(parts) < 2 or PurePosixPath(display).is_absolute() or ".." in parts:
            raise UsageError(f"logged rule file path {display!r} cannot be recreated")
        row = reader.db.execute("SELECT content FROM rule_files WHERE sha256 = ?", (sha,)).fetchone()
        content = row and row[0]
        if content is not None and is_table(display):
            try:
                content = zlib.decompress(content)
            except zlib.error:
                content = None
        if content is None or hashlib.sha256(content).hexdigest() != sha:
            raise UsageError(f"logged {'table' if is_table(display) else 'rule file'} {display} is missing or does not "
                             "match its sha256")
        target = root.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        if not is_table(display):       # a table is read where its payer file names it
            written.append(PayerFile(target, display, display))     # messages too name it as it was logged
    return Registry(include_bundled=False, extra_files=written)


def _session(entry: dict) -> Session:
    """The logged session as billed: its input, with the payer and date of service it was billed under
    (--payer and --date applied)."""
    given = entry["input"]
    services = tuple(Service(s["code"], s["minutes"], s.get("group_size"), s.get("provider"),
                             tuple(s.get("modifiers", ()))) for s in given["services"])
    return Session(given["session_id"], services, entry["payer"], entry["date_of_service"], given.get("discipline"),
                   context=given.get("context", NO_CONTEXT), patient_id=given.get("patient_id"),
                   year_to_date=given.get("year_to_date"))


def differences(old: dict, new: dict) -> list:
    """What changed from one result to another, one short text each: units, modifiers and lines billed
    per code, warnings added or removed; else which part of the record differs. [] when equal."""
    if old == new:
        return []
    if "error" in old or "error" in new:
        def said(r):
            return f"not billed ({r['error']})" if "error" in r else f"billed, {plural(r.get('total_units'), 'unit')}"
        return [f"{said(old)} -> {said(new)}"]
    out = []
    was, now = ({line["code"]: line for line in r.get("lines", [])} for r in (old, new))
    for code in list(was) + [c for c in now if c not in was]:
        a, b = was.get(code), now.get(code)
        if b is None:
            out.append(f"{code} no longer billed (was {plural(a['units'], 'unit')})")
        elif a is None:
            out.append(f"{code} now billed: {plural(b['units'], 'unit')}")
        else:
            if a["units"] != b["units"]:
                out.append(f"{code} units {a['units']} -> {b['units']}")
            if a.get("modifiers") != b.get("modifiers"):
                out.append(f"{code} modifiers {','.join(a.get('modifiers', [])) or '-'} -> "
                           f"{','.join(b.get('modifiers', [])) or '-'}")
            if a.get("amount") != b.get("amount"):
                said = lambda x: "no amount" if x is None else f"{x:,.2f}"     # noqa: E731
                out.append(f"{code} amount {said(a.get('amount'))} -> {said(b.get('amount'))}")
    said = lambda w: f"{w['severity']} {w['rule']}: {w['message']}"      # noqa: E731
    before, after = ([said(w) for w in r.get("warnings", [])] for r in (old, new))
    out += [f"warning removed: {w}" for w in before if w not in after]
    out += [f"warning added: {w}" for w in after if w not in before]
    if out:
        return out
    for key in dict.fromkeys(list(old) + list(new)):
        if old.get(key) == new.get(key):
            continue
        if key == "trace":          # the units are the same; say which firings changed
            firing = lambda t: f"{t['rule']} on {', '.join(t['facts'])}: {t['effect']}"     # noqa: E731
            before, after = ([firing(t) for t in r.get("trace", [])] for r in (old, new))
            out += [f"firing removed: {t}" for t in before if t not in after]
            out += [f"firing added: {t}" for t in after if t not in before]
        else:
            out.append(f"{key} differs")
    return out or ["trace order differs"]


def replay_command(args, write) -> int:
    """`payrules audit PATH --replay [--session ID] [--current-rules [--rules DIR]...]`: a line per
    difference, then a summary; exit 0 when every replayed session is reproduced (unchanged), else 1."""
    if not args.replay or (args.rules and not args.current_rules):
        raise UsageError("--current-rules and --rules go with --replay (and --rules with --current-rules)")
    others = [f"--{name}" for name in ("rule", "payer", "date_from", "date_to") if getattr(args, name)]
    if others:
        raise UsageError(f"--replay takes --session, not {', '.join(o.replace('date_', '') for o in others)}")
    current_rules = [*env_rules(), *args.rules] if args.current_rules else None     # as bill finds them
    results = replay(args.database, args.session, current_rules)
    done = [(e, r, d) for e, r, d in results if r is not None]
    changed = 0
    for entry, _, diffs in done:
        if diffs:
            changed += 1
            for text in diffs:
                write(f"{entry['session_id']}: {text}\n")
    skipped = len(results) - len(done)
    if current_rules is None:
        summary = f"replay: {plural(len(done), 'session')}: {len(done) - changed} reproduced, {changed} differ"
        why = "not billed when logged, so no rule files to bill with"
    else:
        summary = f"replay with current rules: {plural(len(done), 'session')}: {len(done) - changed} unchanged, " \
                  f"{changed} would change"
        why = "no billing input logged: not readable as a session"
    write(summary + (f" ({skipped} not replayed: {why})" if skipped else "") + "\n")
    return 1 if changed else 0
