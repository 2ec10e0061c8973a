"""The audit log under faults (issue 10): two writers at once, a full disk, a killed run, file names that
look like URI syntax, files that are not a payrules log; and what the log must hold to reproduce a
decision (`payrules audit --replay`).

Sessions are generated with timed codes only and 8-60 minutes each, so that none has an error warning:
the only `error:` line a run may print is the audit log's own.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import resource
import signal
import sqlite3
import subprocess
import sys
import time
import tomllib
import zlib
from pathlib import Path

import pytest
import yaml

import engine

ROOT = Path(__file__).resolve().parent.parent
# no 97140 with 97530: the NCCI PTP edit medicare.yaml names makes that pair an error without a documented 59
TIMED = ["97110", "97112", "97116", "97140", "97535"]
APPLICATION_ID = 0x50524C47
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]


def sessions_file(path: Path, n: int, prefix: str, seed: int = 1) -> Path:
    rnd = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for k in range(n):
            services = [{"code": rnd.choice(TIMED), "minutes": rnd.randint(8, 60)} for _ in range(rnd.randint(1, 4))]
            fh.write(json.dumps({"session_id": f"{prefix}{k}", "payer": "medicare", "date_of_service": "2026-03-02",
                                 "discipline": "PT", "services": services}) + "\n")
    return path


def command(*args) -> list:
    return [sys.executable, "-m", "engine", *map(str, args)]


def run_cli(*args, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(command(*args), cwd=ROOT, capture_output=True, text=True, timeout=300, **kw)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def logged_ids(db: Path) -> list:
    with sqlite3.connect(db) as con:
        return [sid for (sid,) in con.execute("SELECT session_id FROM sessions ORDER BY row_id")]


def integrity(db: Path) -> str:
    with sqlite3.connect(db) as con:
        return con.execute("PRAGMA integrity_check").fetchone()[0]


def stdout_ids(text: str) -> list:
    """Session ids of the complete JSONL lines of an output (a killed run may leave half a line)."""
    return [json.loads(line)["session_id"] for line in text.split("\n")[:-1]]


# --- two writers ---------------------------------------------------------------------------------------

def test_two_runs_write_one_log_at_once(tmp_path):
    a = sessions_file(tmp_path / "a.jsonl", 4000, "A", seed=1)
    b = sessions_file(tmp_path / "b.jsonl", 4000, "B", seed=2)
    db = tmp_path / "shared.sqlite"           # new: both runs also race to create it
    procs = [subprocess.Popen(command("bill", f, "--audit-db", db, "--format", "jsonl"), cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for f in (a, b)]
    outs = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, outs):
        assert proc.returncode == 0, err
        assert "error:" not in err and "locked" not in err and "Traceback" not in err
    assert stdout_ids(outs[0][0]) == [f"A{k}" for k in range(4000)]
    assert stdout_ids(outs[1][0]) == [f"B{k}" for k in range(4000)]
    ids = logged_ids(db)
    assert sorted(ids) == sorted([f"A{k}" for k in range(4000)] + [f"B{k}" for k in range(4000)])
    assert integrity(db) == "ok"
    # each run's sessions in its own order, under its own run id
    with sqlite3.connect(db) as con:
        runs = con.execute("SELECT run_id, COUNT(*), MIN(position), MAX(position) FROM sessions"
                           " GROUP BY run_id").fetchall()
    assert sorted(r[1:] for r in runs) == [(4000, 1, 4000), (4000, 1, 4000)]


def test_a_run_waits_for_another_writers_transaction(tmp_path):
    # another writer holds the log's write lock for 6 s (longer than sqlite3's default 5 s timeout, which
    # gave "database is locked"): the run waits for it, then logs every session
    db = tmp_path / "busy.sqlite"
    assert run_cli("bill", sessions_file(tmp_path / "a.jsonl", 2, "A"), "--audit-db", db).returncode == 0
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("UPDATE runs SET engine = engine")
    proc = subprocess.Popen(command("bill", sessions_file(tmp_path / "b.jsonl", 50, "B"), "--audit-db", db,
                                    "--format", "jsonl"), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    time.sleep(6)
    assert proc.poll() is None              # still waiting, not failed
    holder.execute("COMMIT")
    holder.close()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert stdout_ids(out) == [f"B{k}" for k in range(50)]
    assert logged_ids(db) == ["A0", "A1"] + [f"B{k}" for k in range(50)]


def test_the_log_is_the_same_whatever_jobs(tmp_path):
    source = sessions_file(tmp_path / "s.jsonl", 1500, "J")
    logs = []
    for jobs in (1, 2):
        db = tmp_path / f"jobs{jobs}.sqlite"
        proc = run_cli("bill", source, "--audit-db", db, "--format", "csv", "--jobs", jobs)
        assert proc.returncode == 0, proc.stderr
        rows = json.loads(run_cli("audit", db, "--format", "json").stdout)
        logs.append([{k: v for k, v in r.items() if k not in ("run_id", "billed_at")} for r in rows])
    assert len(logs[0]) == 1500 and logs[0] == logs[1]


# --- a full disk ---------------------------------------------------------------------------------------

def _small_disk(limit: int):
    def limit_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)       # write() fails with EFBIG instead of a signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return limit_files


def output_ids(text: str, fmt: str) -> list:
    """Session ids of a whole output: json must parse as one list, csv as rows under its header."""
    if fmt == "json":
        return [record["session_id"] for record in json.loads(text)]
    if fmt == "csv":
        rows = list(csv.reader(io.StringIO(text)))
        assert rows[0][0] == "session_id"
        return list(dict.fromkeys(row[0] for row in rows[1:]))    # a row per billed line, in session order
    assert text.endswith("\n")
    return stdout_ids(text)


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv"])
def test_a_full_disk_is_one_error_and_the_log_stays_consistent(tmp_path, fmt):
    source = sessions_file(tmp_path / "s.jsonl", 12000, "F")
    db = tmp_path / "full.sqlite"
    # 400 KB: the log is created and a few batches fit (about 250 bytes a session), 12,000 sessions do not
    proc = subprocess.run(command("bill", source, "--audit-db", db, "--format", fmt), cwd=ROOT,
                          capture_output=True, text=True, timeout=300, preexec_fn=_small_disk(400_000))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(db) in errors[0] and "full" in errors[0], proc.stderr
    assert integrity(db) == "ok"
    logged = logged_ids(db)
    assert 0 < len(logged) < 12000
    # what was committed stays (in input order); what was written out is exactly what was committed, and the
    # output is whole (a json list closed with its ']'), with a summary that counts those records
    assert logged == [f"F{k}" for k in range(len(logged))]
    assert output_ids(proc.stdout, fmt) == logged
    assert proc.stderr.splitlines()[-1] == (f"payrules: {len(logged)} sessions read: {len(logged)} billed, "
                                            "0 with errors, 0 failed to parse")
    # the log is still a good log: another run appends to it and a query reads it
    small = sessions_file(tmp_path / "t.jsonl", 3, "G")
    assert run_cli("bill", small, "--audit-db", db).returncode == 0
    assert logged_ids(db)[-3:] == ["G0", "G1", "G2"]
    assert run_cli("audit", db, "--session", "G1").returncode == 0


def test_a_disk_full_before_the_first_session_is_one_error(tmp_path):
    source = sessions_file(tmp_path / "s.jsonl", 5, "E")
    db = tmp_path / "tiny.sqlite"
    proc = subprocess.run(command("bill", source, "--audit-db", db), cwd=ROOT, capture_output=True, text=True,
                          timeout=300, preexec_fn=_small_disk(2048))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert [line for line in proc.stderr.splitlines()] == [proc.stderr.strip()]
    assert proc.stderr.startswith(f"error: {db}: ")
    assert proc.stdout == ""                    # nothing billed is shown when nothing could be logged


# --- a killed run --------------------------------------------------------------------------------------

def test_every_record_written_out_by_a_killed_run_is_in_the_log(tmp_path):
    source = sessions_file(tmp_path / "s.jsonl", 60000, "K")
    db, out = tmp_path / "killed.sqlite", tmp_path / "out.jsonl"
    with open(out, "wb") as fh:
        proc = subprocess.Popen(command("bill", source, "--audit-db", db, "--format", "jsonl"), cwd=ROOT,
                                stdout=fh, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while out.stat().st_size < 1_000_000 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL           # killed mid-run, not finished
    written = out.read_bytes()              # the kill may cut a line, even a character, short:
    shown = stdout_ids(written[:written.rfind(b"\n") + 1].decode("utf-8"))   # the whole lines only
    assert len(shown) > 1000
    assert integrity(db) == "ok"
    logged = set(logged_ids(db))
    assert [sid for sid in shown if sid not in logged] == []


# --- file names ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["100%.sqlite", "a#b.sqlite", "what?mode=rw.sqlite", "x%23y #2.sqlite"])
def test_a_log_name_with_uri_characters_is_a_file_name(tmp_path, name):
    source = sessions_file(tmp_path / "s.jsonl", 3, "U")
    db = tmp_path / name
    assert run_cli("bill", source, "--audit-db", db).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["s.jsonl", name])   # no other file made
    proc = run_cli("audit", db, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert [r["session_id"] for r in json.loads(proc.stdout)] == ["U0", "U1", "U2"]
    proc = run_cli("audit", db, "--replay")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "replay: 3 sessions: 3 reproduced, 0 differ\n"


# --- files that are not a payrules log ------------------------------------------------------------------

def foreign_sqlite(path: Path) -> Path:
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        con.execute("INSERT INTO notes (text) VALUES ('not yours')")
    con.close()
    return path


def old_log(path: Path) -> Path:
    with sqlite3.connect(path) as con:
        for table in ("runs", "sessions", "rule_files", "firings"):
            con.execute(f"CREATE TABLE {table} (x)")
    con.close()
    return path


@pytest.mark.parametrize("make,says", [
    (lambda p: p.write_bytes(random.Random(5).randbytes(8192)) and p, "not an SQLite database"),
    (lambda p: p.write_bytes(b"SQLite format 3\x00" + bytes(84) + random.Random(6).randbytes(4000)) and p,
     "not a payrules audit log"),
    (foreign_sqlite, "another application's SQLite database"),
    (old_log, "payrules 0.1"),
])
def test_a_file_that_is_not_a_payrules_log_is_refused_and_left_alone(tmp_path, make, says):
    path = tmp_path / "other.db"
    make(path)
    before = path.read_bytes()
    source = sessions_file(tmp_path / "s.jsonl", 2, "N")
    for args in (("bill", source, "--audit-db", path), ("audit", path), ("audit", path, "--replay")):
        proc = run_cli(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.startswith(f"error: {path}: ") and proc.stderr.count("\n") == 1, proc.stderr
        assert says in proc.stderr
        assert proc.stdout == ""
        assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db", "s.jsonl"]


def test_a_new_log_is_marked_as_ours(tmp_path):
    db = tmp_path / "new.sqlite"
    db.write_bytes(b"")                     # an empty file is a new database
    assert run_cli("bill", sessions_file(tmp_path / "s.jsonl", 1, "M"), "--audit-db", db).returncode == 0
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert con.execute("PRAGMA user_version").fetchone()[0] == 2
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# --- reproducing a decision ----------------------------------------------------------------------------

ACME = """\
payer: acme-health
name: "Acme Health (example)"
extends: medicare
method:
  name: midpoint_per_code
rules:
  - id: acme-manual-therapy-limit
    description: At most {cap} units of manual therapy a day.
    source: "Acme provider manual 4.2"
    when:
      line: {{code: 97140}}
    then:
      - max_units: {cap}
"""

# R1 acme: 97140 40 min, midpoint per code: 38-52 min = 3 units, capped at 2 by the acme rule.
# R2 acme: 97110 20 min (8-22 = 1 unit) + 97140 30 min (23-37 = 2 units, under the cap).
# R3 medicare (CMS): 97112 24 + 97110 23 = 47 min = 3 units; 97112 1 full + 9 left, 97110 1 full + 8 left:
#    the third unit goes to 97112 (more leftover) -> 97112 x2, 97110 x1. Context with a patient name.
# R4 medicare: 97150 group of 4 with an OT assistant, 45 min -> one unit; provider and group size logged.
REPLAY = [
    {"session_id": "R1", "payer": "acme-health", "date_of_service": "2026-03-02", "discipline": "PT",
     "services": [{"code": "97140", "minutes": 40}]},
    {"session_id": "R2", "payer": "acme-health", "date_of_service": "2026-03-03", "discipline": "PT",
     "services": [{"code": "97110", "minutes": 20}, {"code": "97140", "minutes": 30}]},
    {"session_id": "R3", "payer": "medicare", "date_of_service": "2026-03-02", "discipline": "PT",
     "services": [{"code": "97112", "minutes": 24}, {"code": "97110", "minutes": 23}],
     "context": {"patient_name": "Jane Roe", "mrn": "12345"}},
    {"session_id": "R4", "payer": "medicare", "date_of_service": "2026-03-04", "discipline": "OT",
     "services": [{"code": "97150", "minutes": 45, "group_size": 4, "provider": "OTA"}]},
]


@pytest.fixture()
def replay_log(tmp_path):
    rules = tmp_path / "myrules"
    rules.mkdir()
    (rules / "acme.yaml").write_text(ACME.format(cap=2), encoding="utf-8")
    source = tmp_path / "r.yaml"
    source.write_text(yaml.safe_dump(REPLAY, sort_keys=False), encoding="utf-8")
    db = tmp_path / "replay.sqlite"
    proc = run_cli("bill", source, "--rules", rules, "--audit-db", db, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    records = json.loads(proc.stdout)
    units = [{line["code"]: line["units"] for line in r["lines"]} for r in records]
    assert units == [{"97140": 2}, {"97110": 1, "97140": 2}, {"97112": 2, "97110": 1}, {"97150": 1}]
    return db, rules, records


def test_the_log_holds_the_billing_input_and_a_hash_of_the_whole_session(replay_log):
    db, _, records = replay_log
    rows = json.loads(run_cli("audit", db, "--format", "json").stdout)
    for row, session, record in zip(rows, REPLAY, records):
        assert row["input"] == {k: v for k, v in session.items() if k != "context"}
        # sha256 of the session as given, context included: sorted keys, no spaces, UTF-8
        canonical = json.dumps(session, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        assert row["input_sha256"] == hashlib.sha256(canonical).hexdigest()
        assert row["result"] == record
        assert row["version"] == VERSION == engine.__version__ and row["engine"] in ("durable", "python")
    assert rows[3]["input"]["services"] == [{"code": "97150", "minutes": 45, "group_size": 4, "provider": "OTA"}]
    # the rule files' content is in the log, by hash
    with sqlite3.connect(db) as con:
        content = dict(con.execute("SELECT sha256, content FROM rule_files").fetchall())
    for f in rows[0]["rule_files"]:
        assert hashlib.sha256(content[f["sha256"]]).hexdigest() == f["sha256"]
    assert ACME.format(cap=2).encode() in content.values()


def test_no_patient_data_in_the_log_even_decompressed(replay_log):
    db, _, _ = replay_log
    raw = db.read_bytes()
    with sqlite3.connect(db) as con:
        batches = b"".join(zlib.decompress(d) for (d,) in con.execute("SELECT data FROM batches"))
    assert b"R3" in batches and b"97112" in batches        # reading the right content
    for text in (b"Jane Roe", b"patient_name", b"12345", b"mrn"):
        assert text not in raw and text not in batches


def test_replay_reproduces_every_decision_from_the_log_alone(replay_log):
    db, rules, _ = replay_log
    # the rule file changes and moves away after billing: the replay uses the logged content
    (rules / "acme.yaml").write_text(ACME.format(cap=4), encoding="utf-8")
    rules.rename(rules.with_name("gone"))
    proc = run_cli("audit", db, "--replay")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == "replay: 4 sessions: 4 reproduced, 0 differ\n"
    proc = run_cli("audit", db, "--replay", "--session", "R2")
    assert (proc.returncode, proc.stdout) == (0, "replay: 1 session: 1 reproduced, 0 differ\n")


def _doctor(db: Path, session_id: str, change) -> None:
    with sqlite3.connect(db) as con:
        batch_id, item = con.execute("SELECT batch_id, item FROM sessions WHERE session_id = ?",
                                     (session_id,)).fetchone()
        (data,) = con.execute("SELECT data FROM batches WHERE batch_id = ?", (batch_id,)).fetchone()
        lines = zlib.decompress(data).split(b"\n")
        record = json.loads(lines[2 * item + 1])
        change(record)
        lines[2 * item + 1] = json.dumps(record).encode()
        con.execute("UPDATE batches SET data = ? WHERE batch_id = ?", (zlib.compress(b"\n".join(lines)), batch_id))
    con.close()


def test_a_doctored_result_is_not_reproduced(replay_log):
    db, _, _ = replay_log

    def more_units(record):         # R3 logged as 97112 x3 instead of x2
        record["lines"][0]["units"] = 3
    _doctor(db, "R3", more_units)
    proc = run_cli("audit", db, "--replay")
    assert proc.returncode == 1
    assert proc.stdout == "R3: 97112 units 3 -> 2\nreplay: 4 sessions: 3 reproduced, 1 differ\n"


def test_replay_with_current_rules_lists_what_would_change(replay_log, tmp_path):
    db, rules, _ = replay_log
    # unchanged rules: nothing would change
    proc = run_cli("audit", db, "--replay", "--current-rules", "--rules", rules)
    assert (proc.returncode, proc.stdout) == (0, "replay with current rules: 4 sessions: 4 unchanged, 0 would change\n")
    # the cap goes from 2 to 3: R1's 97140 (3 units by the midpoint method) is no longer cut; R2's 2 units
    # of 97140 are under either cap, but its trace says which cap was not reached; R3 and R4 are medicare
    (rules / "acme.yaml").write_text(ACME.format(cap=3), encoding="utf-8")
    proc = run_cli("audit", db, "--replay", "--current-rules", "--rules", rules)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert lines[0] == "R1: 97140 units 2 -> 3"
    assert [line for line in lines if not line.startswith("R1: ")] == [
        "R2: firing removed: acme-manual-therapy-limit on 97140: 97140: at most 2 unit(s) (not reached)",
        "R2: firing added: acme-manual-therapy-limit on 97140: 97140: at most 3 unit(s) (not reached)",
        "replay with current rules: 4 sessions: 2 unchanged, 2 would change"]
    # the logged-rules replay still reproduces everything
    assert run_cli("audit", db, "--replay").returncode == 0


def test_replay_with_current_rules_shows_warnings_added(replay_log):
    db, rules, _ = replay_log
    # without the acme payer, R1 and R2 cannot be billed today
    (rules / "acme.yaml").unlink()
    proc = run_cli("audit", db, "--replay", "--current-rules", "--rules", rules)
    assert proc.returncode == 1
    assert [line.split(":")[0] for line in proc.stdout.splitlines()[:-1]] == ["R1", "R2"]
    assert "-> not billed (unknown payer" in proc.stdout
    assert proc.stdout.splitlines()[-1] == "replay with current rules: 4 sessions: 2 unchanged, 2 would change"


def test_a_damaged_batch_is_one_error_naming_the_log(replay_log):
    db, _, _ = replay_log
    with sqlite3.connect(db) as con:
        con.execute("UPDATE batches SET data = ?", (b"not zlib",))
    con.close()
    for args in ((), ("--replay",), ("--rule", "timed-pool")):
        proc = run_cli("audit", db, *args)
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr.startswith(f"error: {db}: damaged audit log") and proc.stderr.count("\n") == 1, proc.stderr


def test_replay_with_a_broken_current_rule_file_is_a_usage_error(replay_log):
    db, rules, _ = replay_log
    (rules / "acme.yaml").write_text("payer: [unclosed\n", encoding="utf-8")
    proc = run_cli("audit", db, "--replay", "--current-rules", "--rules", rules)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(f"error: {(rules / 'acme.yaml').as_posix()}:"), proc.stderr     # as given


def test_replay_option_misuse_is_a_usage_error(replay_log):
    db, rules, _ = replay_log
    for args in (("--current-rules",), ("--rules", rules), ("--replay", "--rule", "timed-pool")):
        proc = run_cli("audit", db, *args)
        assert proc.returncode == 2 and proc.stderr.startswith("error: "), (args, proc.stderr)


# --- property: whatever is billed comes back from the log, and replays --------------------------------

from hypothesis import given, settings, strategies as st         # noqa: E402

from engine import audit as audit_log                             # noqa: E402
from engine.batch import Job, process                             # noqa: E402
from engine.billing import Biller                                 # noqa: E402
from engine.loader import Registry                                # noqa: E402
from engine.sessions import parse_session                         # noqa: E402
from engine.yamlload import Located                               # noqa: E402

text_st = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
service_st = st.fixed_dictionaries(
    {"code": st.sampled_from(TIMED + ["97150", "97129", "97130", "97161", "97010", "99999"]),
     "minutes": st.integers(0, 130)},
    optional={"group_size": st.integers(0, 6), "provider": st.sampled_from(["PT", "PTA", "OT", "OTA", "SLP"])})
def one_group_size(services: list) -> list:
    """Entries of one code that give group_size give the same one (different ones are an error, design.md §4)."""
    first = {}
    for s in services:
        if "group_size" in s:
            s["group_size"] = first.setdefault(s["code"], s["group_size"])
    return services


session_st = st.fixed_dictionaries(
    {"session_id": text_st.filter(lambda t: 1 <= len(t)),
     "services": st.lists(service_st, min_size=1, max_size=5).map(one_group_size)},
    optional={"payer": st.sampled_from(["medicare", "example-midpoint", "example-unit-limits", "nobody"]),
              "date_of_service": st.sampled_from(["2026-03-02", "2025-12-31", "2026-06-01"]),
              "discipline": st.sampled_from(["PT", "OT", "SLP"]),
              "context": st.dictionaries(text_st, text_st | st.integers(-10**6, 10**6), max_size=3)})
REGISTRY = Registry()


@settings(max_examples=20, deadline=None)
@given(sessions=st.lists(session_st, min_size=1, max_size=4), overrides=st.sampled_from([(None, None),
                                                                                        ("medicare", "2026-04-01")]))
def test_the_log_gives_back_what_was_billed_and_replays_it(tmp_path_factory, sessions, overrides):
    class Out:
        data = b""

        def write(self, data):
            self.data += data

        def flush(self):
            pass
    db, out = tmp_path_factory.mktemp("prop") / "p.sqlite", Out()
    job = Job(*overrides, fmt="jsonl", audit=True)
    biller = Biller(REGISTRY, "python")
    log = audit_log.AuditLog(str(db), "python", REGISTRY, out)
    records = []
    for i, given_session in enumerate(sessions, 1):
        session = parse_session(given_session, Located(given_session, {(): i}, "p.jsonl"), (), i)
        _, text, _, entry = process(biller, session, job)
        log.out.write(text)
        log.record(i, entry)
        records.append(json.loads(text))
    log.close()
    biller.close()
    assert [json.loads(line) for line in out.data.splitlines()] == records        # every record written out
    rows = audit_log.query(str(db))
    assert [r["result"] for r in rows] == records
    for row, given_session in zip(rows, sessions):
        canonical = json.dumps(given_session, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        assert row["input_sha256"] == hashlib.sha256(canonical).hexdigest()
        assert row["input"] == {k: v for k, v in given_session.items() if k != "context"}
        assert row["payer"] == (overrides[0] or given_session.get("payer"))
    for a in records:               # the differences of two results are empty exactly when they are equal
        for b in records:
            assert (audit_log.differences(a, b) == []) == (a == b)
    for entry, replayed, diffs in audit_log.replay(str(db)):
        assert replayed is None or diffs == [], (entry["session_id"], diffs)
        assert (replayed is None) == (entry["rules_hash"] is None)     # only sessions not billed are skipped
