"""The audit log: one SQLite row per billed session with its result, full trace, payer, the content hash
of the exact rule files used and the time of the run, so a decision can be found and reproduced later.

It stores only what the result already holds (session id, payer, date of service, codes, minutes, units,
warnings, trace) — never the session's `context` or anything else the input carried.
"""
from __future__ import annotations

import datetime
import json
import sqlite3

from . import __version__
from .errors import UsageError

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id      INTEGER PRIMARY KEY,
    started_at  TEXT NOT NULL,              -- UTC, ISO 8601
    engine      TEXT NOT NULL,
    version     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    row_id          INTEGER PRIMARY KEY,
    run_id          INTEGER NOT NULL REFERENCES runs(run_id),
    position        INTEGER NOT NULL,        -- 1-based position in the run's input
    session_id      TEXT NOT NULL,
    payer           TEXT,
    date_of_service TEXT,
    rules_hash      TEXT,                    -- sha256 over the rule files the payer was built from
    status          TEXT NOT NULL,           -- billed | error-warnings | not-billed
    result          TEXT NOT NULL            -- the result or error record, as `bill --format json` writes it
);
CREATE TABLE IF NOT EXISTS rule_files (
    rules_hash  TEXT NOT NULL,
    file        TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    PRIMARY KEY (rules_hash, file)
);
CREATE TABLE IF NOT EXISTS firings (
    row_id  INTEGER NOT NULL REFERENCES sessions(row_id),
    seq     INTEGER NOT NULL,
    rule    TEXT NOT NULL,
    source  TEXT NOT NULL,
    facts   TEXT NOT NULL,
    effect  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_id ON sessions(session_id);
CREATE INDEX IF NOT EXISTS sessions_by_payer ON sessions(payer);
CREATE INDEX IF NOT EXISTS firings_by_rule ON firings(rule);
"""


def _connect(path: str) -> sqlite3.Connection:
    try:
        db = sqlite3.connect(path)
        db.executescript(SCHEMA)
        return db
    except sqlite3.Error as exc:
        raise UsageError(f"cannot use audit database: {exc}", path) from None


class AuditLog:
    """Appends one run's sessions; commits once at the end (or every `batch` sessions)."""

    def __init__(self, path: str, engine: str, batch: int = 1000):
        self.db = _connect(path)
        self.path = path
        self.batch = batch
        self.pending = 0
        started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        self.run_id = self.db.execute("INSERT INTO runs (started_at, engine, version) VALUES (?, ?, ?)",
                                      (started, engine, __version__)).lastrowid

    def record(self, position: int, record: dict, rules_hash=None, files=(), payer=None, date_of_service=None) -> None:
        """Log one session: its record, the hash and (file, sha256) list of the rule files its payer was
        built from, its payer and its date of service (for a session not billed: as the session gave them)."""
        status = "not-billed" if "error" in record else (
            "error-warnings" if any(w["severity"] == "error" for w in record["warnings"]) else "billed")
        row = self.db.execute(
            "INSERT INTO sessions (run_id, position, session_id, payer, date_of_service, rules_hash, status, result)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (self.run_id, position, record["session_id"], payer, date_of_service, rules_hash, status,
             json.dumps(record, ensure_ascii=False))).lastrowid
        if rules_hash is not None:
            self.db.executemany("INSERT OR IGNORE INTO rule_files (rules_hash, file, sha256) VALUES (?, ?, ?)",
                                [(rules_hash, f, h) for f, h in files])
        self.db.executemany("INSERT INTO firings (row_id, seq, rule, source, facts, effect) VALUES (?, ?, ?, ?, ?, ?)",
                            [(row, i, t["rule"], t["source"], json.dumps(t["facts"]), t["effect"])
                             for i, t in enumerate(record.get("trace", []), 1)])
        self.pending += 1
        if self.pending >= self.batch:
            self.db.commit()
            self.pending = 0

    def close(self) -> None:
        self.db.commit()
        self.db.close()


def _open_log(path: str) -> sqlite3.Connection:
    """An existing audit log, read-only: a query never changes the file."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as exc:
        raise UsageError(f"cannot read audit database: {exc}", path) from None
    if not {"runs", "sessions", "rule_files", "firings"} <= tables:
        db.close()
        raise UsageError("not a payrules audit log (bill --audit-db writes one)", path)
    return db


def query(path: str, session_id=None, rule=None, payer=None, date_from=None, date_to=None) -> list:
    """Logged sessions matching every filter given, oldest first. With `rule`, only sessions that rule
    touched, each with the firings of that rule."""
    db = _open_log(path)
    try:
        where, args = [], []
        for column, value in (("s.session_id", session_id), ("s.payer", payer)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if date_from:
            where.append("s.date_of_service >= ?")
            args.append(date_from)
        if date_to:
            where.append("s.date_of_service <= ?")
            args.append(date_to)
        if rule:
            where.append("EXISTS (SELECT 1 FROM firings f WHERE f.row_id = s.row_id AND f.rule = ?)")
            args.append(rule)
        sql = ("SELECT s.row_id, s.run_id, r.started_at, s.position, s.session_id, s.payer, s.date_of_service,"
               " s.rules_hash, s.status, s.result FROM sessions s JOIN runs r USING (run_id)"
               + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY s.row_id")
        out = []
        for row_id, run_id, started, position, sid, pid, dos, rules_hash, status, result in db.execute(sql, args):
            entry = {"run_id": run_id, "billed_at": started, "position": position, "session_id": sid, "payer": pid,
                     "date_of_service": dos, "rules_hash": rules_hash, "status": status,
                     "rule_files": [{"file": f, "sha256": h} for f, h in db.execute(
                         "SELECT file, sha256 FROM rule_files WHERE rules_hash = ? ORDER BY file", (rules_hash,))],
                     "result": json.loads(result)}
            if rule:
                entry["firings"] = [{"rule": r, "source": src, "facts": json.loads(f), "effect": e}
                                    for r, src, f, e in db.execute(
                                        "SELECT rule, source, facts, effect FROM firings WHERE row_id = ? AND rule = ?"
                                        " ORDER BY seq", (row_id, rule))]
            out.append(entry)
        return out
    finally:
        db.close()
