"""The audit log: `bill --audit-db PATH` appends every session's result, trace, payer, rule-file hashes
and run time to SQLite; `payrules audit PATH [--session] [--rule] [--payer] [--from] [--to]` queries it.

Expected subsets are worked out by hand from the batch below (comments say which rules fire where).
"""
from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


# Six sessions, in this order (positions 1..6):
#  1 A1 medicare 2026-03-02 PT: CMS Example 1 (97112 24, 97110 23) -> 97112 x2, 97110 x1.
#       fires timed-pool (x2: 97112, 97110), modifier-gp (x2).                              status billed
#  2 A2 medicare 2026-03-05 PT: 97150 30 min, group_size 1 -> group-one-unit, group-size (error
#       warning, held), modifier-gp.                                                          error-warnings
#  3 A3 a bad session (unknown key 'bogus') -> error record; no payer, no date of service.    not-billed
#  4 A4 example-midpoint 2026-03-07 OT: 97150 45 group of 3 + 97110 25 -> group-one-unit,
#       timed-pool (97110), modifier-go (x2).                                                  billed
#  5 A5 example-unit-limits 2026-06-01 PT: 97140 50 (chart 3, capped at 2) with a patient name in
#       context -> timed-pool, manual-therapy-daily-limit, modifier-gp.                       billed
#  6 A6 medicare 2026-04-15 SLP: 97129 40 -> cognitive-family-pool (not timed-pool), modifier-gn.
#                                                                                               billed
BATCH = [
    {"session_id": "A1", "payer": "medicare", "date_of_service": "2026-03-02", "discipline": "PT",
     "services": [{"code": "97112", "minutes": 24}, {"code": "97110", "minutes": 23}]},
    {"session_id": "A2", "payer": "medicare", "date_of_service": "2026-03-05", "discipline": "PT",
     "services": [{"code": "97150", "minutes": 30, "group_size": 1}]},
    {"session_id": "A3", "payer": "medicare", "date_of_service": "2026-03-10", "discipline": "PT",
     "services": [{"code": "97110", "minutes": 30}], "bogus": 1},
    {"session_id": "A4", "payer": "example-midpoint", "date_of_service": "2026-03-07", "discipline": "OT",
     "services": [{"code": "97150", "minutes": 45, "group_size": 3}, {"code": "97110", "minutes": 25}]},
    {"session_id": "A5", "payer": "example-unit-limits", "date_of_service": "2026-06-01", "discipline": "PT",
     "services": [{"code": "97140", "minutes": 50}], "context": {"patient_name": "Jane Roe"}},
    {"session_id": "A6", "payer": "medicare", "date_of_service": "2026-04-15", "discipline": "SLP",
     "services": [{"code": "97129", "minutes": 40}]},
]
IDS = [s["session_id"] for s in BATCH]


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """(db path, bill JSON records) after billing BATCH with --audit-db."""
    tmp = tmp_path_factory.mktemp("audit")
    batch = tmp / "batch.yaml"
    batch.write_text(yaml.safe_dump(BATCH, sort_keys=False), encoding="utf-8")
    db = tmp / "audit.sqlite"
    proc = run_cli("bill", batch, "--audit-db", db, "--format", "json")
    assert proc.returncode == 1, proc.stderr      # A2 has an error warning, A3 cannot be billed
    records = json.loads(proc.stdout)
    assert [r["session_id"] for r in records] == IDS
    return db, records


def audit(db, *args) -> list:
    proc = run_cli("audit", db, *args, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_one_record_per_session_in_input_order(logged):
    db, records = logged
    rows = audit(db)
    assert [r["session_id"] for r in rows] == IDS
    assert [r["position"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert len({r["run_id"] for r in rows}) == 1
    for row, record in zip(rows, records):
        assert row["result"] == record
    assert [r["status"] for r in rows] == ["billed", "error-warnings", "not-billed", "billed", "billed", "billed"]
    assert [r["payer"] for r in rows] == ["medicare", "medicare", None, "example-midpoint",
                                          "example-unit-limits", "medicare"]
    assert [r["date_of_service"] for r in rows] == ["2026-03-02", "2026-03-05", None, "2026-03-07",
                                                    "2026-06-01", "2026-04-15"]
    assert "error" in rows[2]["result"] and "bogus" in rows[2]["result"]["error"]
    # the billed answers really are in the log: A1 = CMS Example 1, A5 = 97140 capped at 2
    assert {l["code"]: l["units"] for l in rows[0]["result"]["lines"]} == {"97112": 2, "97110": 1}
    assert {l["code"]: l["units"] for l in rows[4]["result"]["lines"]} == {"97140": 2}
    for row in rows:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", row["billed_at"])   # UTC


def test_query_by_session(logged):
    db, records = logged
    rows = audit(db, "--session", "A2")
    assert [r["session_id"] for r in rows] == ["A2"]
    assert rows[0]["position"] == 2 and rows[0]["result"] == records[1]
    assert audit(db, "--session", "NOPE") == []


def test_query_by_rule_group_size(logged):
    db, _ = logged
    rows = audit(db, "--rule", "group-size")
    assert [r["session_id"] for r in rows] == ["A2"]          # only A2 has a group smaller than 2
    firings = rows[0]["firings"]
    assert [(f["rule"], f["facts"]) for f in firings] == [("group-size", ["97150"])]
    assert "group_size 1" in firings[0]["effect"]


def test_query_by_rule_timed_pool(logged):
    db, _ = logged
    rows = audit(db, "--rule", "timed-pool")
    # A1 (2 timed codes), A4 (97110), A5 (97140); not A2 (group only), A3 (not billed), A6 (97129 family)
    assert [r["session_id"] for r in rows] == ["A1", "A4", "A5"]
    facts = {r["session_id"]: [f["facts"] for f in r["firings"]] for r in rows}
    assert facts == {"A1": [["97112"], ["97110"]], "A4": [["97110"]], "A5": [["97140"]]}
    assert all(f["rule"] == "timed-pool" for r in rows for f in r["firings"])


def test_query_by_rule_that_never_fired(logged):
    db, _ = logged
    assert audit(db, "--rule", "unknown-code") == []


@pytest.mark.parametrize("args,expected", [
    (["--payer", "medicare"], ["A1", "A2", "A6"]),
    (["--payer", "example-midpoint"], ["A4"]),
    (["--payer", "example-unit-limits"], ["A5"]),
    (["--payer", "example-full-unit"], []),
    # inclusive date range: 03-05 (A2), 03-07 (A4), 04-15 (A6); A1 03-02 and A5 06-01 outside; A3 has none
    (["--from", "2026-03-05", "--to", "2026-04-15"], ["A2", "A4", "A6"]),
    (["--from", "2026-06-01"], ["A5"]),
    (["--to", "2026-03-02"], ["A1"]),
    (["--from", "2026-03-03", "--to", "2026-03-04"], []),
    # filters combine: medicare sessions that timed-pool fired on
    (["--payer", "medicare", "--rule", "timed-pool"], ["A1"]),
    (["--rule", "modifier-gp", "--from", "2026-03-03"], ["A2", "A5"]),
])
def test_query_filters(logged, args, expected):
    db, _ = logged
    assert [r["session_id"] for r in audit(db, *args)] == expected


def test_table_format(logged):
    db, _ = logged
    proc = run_cli("audit", db, "--payer", "medicare")
    assert proc.returncode == 0
    assert proc.stdout.rstrip().endswith("\n3 sessions")
    for sid in ("A1", "A2", "A6"):
        assert re.search(rf"\b{sid}\b", proc.stdout)
    assert not re.search(r"\bA4\b", proc.stdout)
    one = run_cli("audit", db, "--session", "A1")
    assert one.returncode == 0 and one.stdout.rstrip().endswith("\n1 session"), one.stdout


# --- sources ---------------------------------------------------------------------------------------

def holds_rule_id(base: Path, source: str, rule_id: str) -> bool:
    file, line = source.rsplit(":", 1)
    raw = (base / file).read_text(encoding="utf-8").splitlines()[int(line) - 1]
    return re.search(rf"\bid:\s*['\"]?{re.escape(rule_id)}['\"]?\s*$", raw) is not None


def test_every_logged_source_points_at_the_rule_id(logged):
    db, _ = logged
    rows = audit(db)
    traced = [(t["rule"], t["source"]) for r in rows for t in r["result"].get("trace", [])]
    # A1 4 + A2 3 + A3 0 + A4 4 + A5 3 + A6 2 firings
    assert len(traced) == 16
    assert sorted(stored_firings(db)) == sorted(traced)
    for rule, source in traced:
        assert holds_rule_id(ROOT, source, rule), (rule, source)
    for rule in ("group-size", "timed-pool", "manual-therapy-daily-limit", "cognitive-family-pool"):
        for r in audit(db, "--rule", rule):
            for f in r["firings"]:
                assert holds_rule_id(ROOT, f["source"], rule), f


def stored_firings(db) -> list:
    """(rule, source) of every firing, read from the tables themselves: a batch is zlib-compressed JSON
    lines, two per session in order (its billing input, then its result)."""
    out = []
    with sqlite3.connect(db) as con:
        for batch_id, item in con.execute("SELECT batch_id, item FROM sessions ORDER BY row_id"):
            (data,) = con.execute("SELECT data FROM batches WHERE batch_id = ?", (batch_id,)).fetchone()
            result = json.loads(zlib.decompress(data).split(b"\n")[2 * item + 1])
            out += [(t["rule"], t["source"]) for t in result.get("trace", [])]
    return out


# --- rule-file hashes ------------------------------------------------------------------------------

def test_bundled_rule_files_are_hashed(logged):
    db, _ = logged
    medicare = ("rules/medicare.yaml", sha256_file(ROOT / "rules" / "medicare.yaml"))
    midpoint = "rules/private_payers/example-midpoint.yaml"
    limits = "rules/private_payers/example-unit-limits.yaml"
    files = {r["session_id"]: {f["file"]: f["sha256"] for f in r["rule_files"]} for r in audit(db)}
    assert files["A1"] == files["A2"] == files["A6"] == dict([medicare])
    assert files["A3"] == {}                                  # not billed: no payer, no rule files
    assert files["A4"] == dict([medicare, (midpoint, sha256_file(ROOT / midpoint))])
    assert files["A5"] == dict([medicare, (limits, sha256_file(ROOT / limits))])
    hashes = {r["session_id"]: r["rules_hash"] for r in audit(db)}
    assert hashes["A1"] == hashes["A2"] == hashes["A6"]       # one payer, one set of files
    assert hashes["A3"] is None
    assert len({hashes["A1"], hashes["A4"], hashes["A5"]}) == 3


ACME = """\
payer: acme-health
name: "Acme Health (example)"
extends: medicare
method:
  name: midpoint_per_code
rules:
  - id: acme-manual-therapy-limit
    description: {description}
    source: "Acme provider manual 4.2"
    when:
      line: {{code: 97140}}
    then:
      - max_units: 2
"""


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_rule_file_hashes_are_stored_and_change_with_the_file(tmp_path):
    rules = tmp_path / "myrules"
    rules.mkdir()
    acme = rules / "acme.yaml"
    acme.write_text(ACME.format(description="At most 2 units of manual therapy a day."), encoding="utf-8")
    session = tmp_path / "s.yaml"
    session.write_text(yaml.safe_dump({"session_id": "H1", "payer": "acme-health", "date_of_service": "2026-03-02",
                                       "discipline": "PT", "services": [{"code": "97140", "minutes": 40}]}),
                       encoding="utf-8")
    db = tmp_path / "audit.sqlite"
    medicare_sha = sha256_file(ROOT / "rules" / "medicare.yaml")
    first_sha = sha256_file(acme)

    proc = run_cli("bill", session, "--rules", rules, "--audit-db", db, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    first_result = json.loads(proc.stdout)
    # 97140 40 min per code -> 3 (38-52), capped at 2 by the acme rule
    assert {l["code"]: l["units"] for l in first_result["lines"]} == {"97140": 2}
    [row] = audit(db)
    assert re.fullmatch(r"[0-9a-f]{64}", row["rules_hash"])
    # the payer is built from its own file and the file it extends, each with the sha256 of its bytes
    assert {f["file"]: f["sha256"] for f in row["rule_files"]} == {"myrules/acme.yaml": first_sha,
                                                                   "rules/medicare.yaml": medicare_sha}
    acme_sources = [t["source"] for t in row["result"]["trace"] if t["rule"] == "acme-manual-therapy-limit"]
    assert acme_sources and all(holds_rule_id(tmp_path, s, "acme-manual-therapy-limit") for s in acme_sources)

    # change the description only: a different file hash, a different rules hash, a second run
    acme.write_text(ACME.format(description="No more than 2 units of manual therapy per day."), encoding="utf-8")
    second_sha = sha256_file(acme)
    assert second_sha != first_sha
    proc = run_cli("bill", session, "--rules", rules, "--audit-db", db, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    second_result = json.loads(proc.stdout)

    rows = audit(db, "--session", "H1")
    assert len(rows) == 2
    old, new = rows
    assert old["run_id"] != new["run_id"]
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 2
    assert old["rules_hash"] != new["rules_hash"]
    assert {f["file"]: f["sha256"] for f in old["rule_files"]} == {"myrules/acme.yaml": first_sha,
                                                                   "rules/medicare.yaml": medicare_sha}
    assert {f["file"]: f["sha256"] for f in new["rule_files"]} == {"myrules/acme.yaml": second_sha,
                                                                   "rules/medicare.yaml": medicare_sha}
    assert old["result"] == first_result and new["result"] == second_result
    # both still found by rule and by payer
    assert [r["run_id"] for r in audit(db, "--rule", "acme-manual-therapy-limit")] == [old["run_id"], new["run_id"]]
    assert len(audit(db, "--payer", "acme-health")) == 2


# --- privacy and errors ----------------------------------------------------------------------------

def log_bytes(db) -> bytes:
    """The log file and its batches decompressed (zlib would hide a name from a plain byte search)."""
    with sqlite3.connect(db) as con:
        batches = b"".join(zlib.decompress(d) for (d,) in con.execute("SELECT data FROM batches"))
    return db.read_bytes() + batches


def test_no_patient_data_in_the_log(logged):
    db, _ = logged
    data = log_bytes(db)
    assert b"Jane Roe" not in data
    assert b"patient_name" not in data
    # the session itself is there (sanity: we are reading the right file)
    assert b"A5" in data and b"example-unit-limits" in data


def test_no_patient_data_even_when_the_session_is_the_only_one(tmp_path):
    session = tmp_path / "p.yaml"
    session.write_text(yaml.safe_dump({"session_id": "P1", "payer": "medicare", "date_of_service": "2026-03-02",
                                       "discipline": "PT", "services": [{"code": "97110", "minutes": 30}],
                                       "context": {"patient_name": "Jane Roe"}}), encoding="utf-8")
    db = tmp_path / "p.sqlite"
    assert run_cli("bill", session, "--audit-db", db).returncode == 0
    assert b"Jane Roe" not in log_bytes(db) and b"P1" in log_bytes(db)
    assert [r["session_id"] for r in audit(db)] == ["P1"]


def test_a_session_not_billed_keeps_the_payer_and_date_it_asked_for(tmp_path):
    # N1 names a payer that does not exist: an error record and no rule files, but the log can still be
    # queried by the payer and date the session gave. N2 is not a valid session (unknown key) billed with
    # --payer/--date, which apply to every session: they are what it asked for.
    n1 = tmp_path / "n1.jsonl"
    n1.write_text(json.dumps({"session_id": "N1", "payer": "no-such-payer", "date_of_service": "2026-03-02",
                              "services": [{"code": "97110", "minutes": 30}]}) + "\n", encoding="utf-8")
    n2 = tmp_path / "n2.jsonl"
    n2.write_text(json.dumps({"session_id": "N2", "services": [{"code": "97110", "minutes": 30}], "bogus": 1}) + "\n",
                  encoding="utf-8")
    db = tmp_path / "n.sqlite"
    assert run_cli("bill", n1, "--audit-db", db).returncode == 1
    assert run_cli("bill", n2, "--audit-db", db, "--payer", "medicare", "--date", "2026-05-04").returncode == 1
    rows = audit(db)
    assert [(r["session_id"], r["payer"], r["date_of_service"], r["status"], r["rules_hash"]) for r in rows] == [
        ("N1", "no-such-payer", "2026-03-02", "not-billed", None),
        ("N2", "medicare", "2026-05-04", "not-billed", None)]
    assert [r["session_id"] for r in audit(db, "--payer", "no-such-payer", "--from", "2026-03-02")] == ["N1"]


def test_audit_on_a_missing_file(tmp_path):
    missing = tmp_path / "nope.sqlite"
    proc = run_cli("audit", missing)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ")
    assert "no such audit database" in proc.stderr and str(missing) in proc.stderr
    assert proc.stdout == ""
    assert not missing.exists()            # querying must not create an empty log


def test_audit_on_a_file_that_is_not_a_database(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n", encoding="utf-8")
    proc = run_cli("audit", text)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: {text}")
    assert text.read_text(encoding="utf-8") == "not a database\n"      # left as it was


def test_two_rule_trees_with_the_same_name_and_file_names_can_be_logged_and_replayed(tmp_path):
    # --rules /a/payers --rules /b/payers, each with a payers/p.yaml (payers pa and pb): both files show
    # as "payers/p.yaml". The log read one path per shown name and refused the other's content as
    # "changed or vanished while billing": exit 2, nothing billed.
    payer = ("payer: {id}\nname: {id}\nmethod: {{name: cms_8_minute}}\ncodes: {{timed_15: [97110]}}\nrules:\n"
             "  - {{id: t, description: d, source: s, when: {{line: {{code_in: timed_15}}}}, "
             "then: [{{timed_units: true}}]}}\n")
    trees = []
    for name in ("pa", "pb"):
        tree = tmp_path / name / "payers"
        tree.mkdir(parents=True)
        (tree / "p.yaml").write_text(payer.format(id=name), encoding="utf-8")
        trees += ["--rules", tree]
    batch = tmp_path / "batch.jsonl"
    batch.write_text("".join(json.dumps({"session_id": f"S-{p}", "payer": p, "services": [
        {"code": "97110", "minutes": 20}]}) + "\n" for p in ("pa", "pb")), encoding="utf-8")
    db = tmp_path / "log.sqlite"
    proc = run_cli("bill", batch, *trees, "--audit-db", db, "--format", "jsonl")
    assert proc.returncode == 0, proc.stderr
    # 20 min of 97110 -> 1 unit (8-22 min)
    assert [json.loads(line)["lines"][0]["units"] for line in proc.stdout.splitlines()] == [1, 1]
    assert [r["session_id"] for r in audit(db)] == ["S-pa", "S-pb"]
    replay = run_cli("audit", db, "--replay")
    assert replay.returncode == 0 and "2 sessions: 2 reproduced" in replay.stdout


# A rule file saved while a run bills (a payer analyst's edit during the nightly batch) changes nothing in
# that run: it bills, in every worker, with the files as read and checked at its start, and logs exactly
# those. The log read the file again when it first logged one of its sessions (the run then stopped with
# exit 2: "changed or vanished while billing", the json list unclosed, the last batch lost), and --jobs
# workers read every file again when they started. Made deterministic: the file is rewritten as soon as
# the audit log is opened, before the first session is billed.
_EDIT_DRIVER = """
import sys
from pathlib import Path
from engine import audit
from engine.cli import main
path, opened = Path(sys.argv[1]), audit.AuditLog.__init__
def init(self, *args):
    opened(self, *args)
    path.write_text(path.read_text().replace("timed_units: true", "units: 7"))
audit.AuditLog.__init__ = init
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_rule_file_edited_during_the_run_changes_nothing_in_it(tmp_path, jobs):
    tree = tmp_path / "payers"
    tree.mkdir()
    payer = ("payer: pe\nname: PE\nmethod: {name: cms_8_minute}\ncodes: {timed_15: [97110]}\nrules:\n"
             "  - {id: t, description: d, source: s, when: {line: {code_in: timed_15}}, then: [{timed_units: true}]}\n")
    (tree / "p.yaml").write_text(payer, encoding="utf-8")
    batch = tmp_path / "batch.jsonl"
    batch.write_text("".join(json.dumps({"session_id": f"S-{i}", "payer": "pe", "services": [
        {"code": "97110", "minutes": 20}]}) + "\n" for i in range(600)), encoding="utf-8")
    db = tmp_path / "log.sqlite"
    proc = subprocess.run([sys.executable, "-c", _EDIT_DRIVER, tree / "p.yaml", "bill", batch, "--rules", tree,
                           "--audit-db", db, "--format", "json", "--jobs", jobs], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert (tree / "p.yaml").read_text() != payer                   # the file was edited during the run
    assert proc.returncode == 0, proc.stderr
    # every session with the rules as they were: 20 min of 97110 -> 1 timed unit (8-22 min), never 7
    assert [r["lines"][0]["units"] for r in json.loads(proc.stdout)] == [1] * 600
    logged = audit(db, "--session", "S-599")[0]
    content = sqlite3.connect(db).execute("SELECT content FROM rule_files WHERE sha256 = ?",
                                          (logged["rule_files"][0]["sha256"],)).fetchone()[0]
    assert content.decode() == payer
    replay = run_cli("audit", db, "--replay")
    assert replay.returncode == 0 and "600 sessions: 600 reproduced" in replay.stdout
