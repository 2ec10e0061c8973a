"""`payrules bill` at scale (shared/design.md §3–§5, engine/sessions.py, engine/batch.py): mixed good and
bad batches in JSONL, JSON lists and CSV; one output record per session, in input order; a summary whose
counts add up; --jobs N giving the same bytes as one process; a rule-file problem stopping the run before
anything is billed; standard input.

Every test runs `python -m engine` as a subprocess from the repository root, with a timeout so that a hang
fails the test. Expected units are worked by hand from the CMS 8-minute chart (domain.md §3.1:
8-22 min = 1 unit, 23-37 = 2, 38-52 = 3, 53-67 = 4) and the leftover-minute allocation of
rules/medicare.yaml (larger leftover first; ties by minutes, then order of entry).
"""
from __future__ import annotations

import csv
import io
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60
DATE = "2026-03-02"
SUMMARY = re.compile(r"^payrules: (\d+) sessions? read: (\d+) billed, (\d+) with errors, (\d+) failed to parse$")
CSV_HEADER = ["session_id", "payer", "status", "code", "minutes", "units", "modifiers", "rules", "message",
              "amount"]


def run_cli(*args, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """`python -m engine ARGS...` from the repository root; stdout/stderr kept as bytes."""
    proc = subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=ROOT, capture_output=True,
                          input=stdin, timeout=TIMEOUT)
    assert b"Traceback" not in proc.stderr, proc.stderr.decode("utf-8", "replace")[-3000:]
    return proc


def out_text(proc) -> str:
    return proc.stdout.decode("utf-8")          # the output itself must be UTF-8


def err_text(proc) -> str:
    return proc.stderr.decode("utf-8", "replace")


def summary(proc) -> tuple:
    """(read, billed, with errors, failed to parse) from the last stderr line; the counts must add up."""
    last = err_text(proc).rstrip("\n").rsplit("\n", 1)[-1]
    match = SUMMARY.match(last)
    assert match, f"no summary line at the end of stderr: {err_text(proc)[-2000:]!r}"
    read, billed, errors, failed = map(int, match.groups())
    assert read == billed + errors + failed, last
    return read, billed, errors, failed


def jsonl_records(proc) -> list:
    lines = out_text(proc).split("\n")
    assert lines[-1] == "", "jsonl output must end with a newline"
    return [json.loads(line) for line in lines[:-1]]


def is_error_record(record: dict) -> bool:
    return set(record) == {"session_id", "error"} and isinstance(record["error"], str) and bool(record["error"])


def is_result(record: dict) -> bool:
    return {"session_id", "payer", "method", "lines", "unbilled", "total_timed_minutes", "total_timed_units",
            "total_units", "warnings", "trace"} <= set(record) and "error" not in record


def units_of(result: dict) -> dict:
    return {line["code"]: line["units"] for line in result["lines"]}


def error_rules(result: dict) -> list:
    return [w["rule"] for w in result["warnings"] if w["severity"] == "error"]


def dumps(obj) -> bytes:
    return json.dumps(obj).encode("utf-8")


def bill_alone(tmp_path: Path, session: dict, *extra) -> dict:
    """Bill one session on its own (a single-object .json file, --format json → one object)."""
    path = tmp_path / f"alone-{abs(hash(json.dumps(session, sort_keys=True)))}.json"
    path.write_text(json.dumps(session), encoding="utf-8")
    proc = run_cli("bill", path, "--format", "json", *extra)
    record = json.loads(out_text(proc))
    assert isinstance(record, dict), "a single-session JSON file gives one object, not a list"
    return record


# --- good sessions, worked by hand -------------------------------------------------------------------

# OT: 97110 33 + 97140 7 + 97535 20 = 60 timed min -> chart 4 units. Full units: 97110 2 (3 left),
# 97535 1 (5 left), 97140 0 (7 left): 3 full, 1 more unit to the largest leftover, 97140.
GOOD_OT = {"session_id": "OT-1", "payer": "medicare", "date_of_service": DATE, "discipline": "OT",
           "services": [{"code": "97110", "minutes": 33}, {"code": "97140", "minutes": 7},
                        {"code": "97535", "minutes": 20}]}
GOOD_OT_UNITS = {"97110": 2, "97140": 1, "97535": 1}

# PT: 97112 20 + 97110 20 = 40 min -> 3 units; 1 full unit each, 5 min left each: a tie on leftover and
# on minutes, so order of entry decides: 97112 (first) gets the third unit.
GOOD_PT = {"session_id": "PT-9", "payer": "medicare", "date_of_service": DATE, "discipline": "PT",
           "services": [{"code": "97112", "minutes": 20}, {"code": "97110", "minutes": 20}]}
GOOD_PT_UNITS = {"97112": 2, "97110": 1}

# Group 97150 is one unit whatever its length (out of the pool); 97530 25 min -> 2 units.
GOOD_GROUP = {"session_id": "GRP-3", "payer": "medicare", "date_of_service": DATE, "discipline": "PT",
              "services": [{"code": "97150", "minutes": 45, "group_size": 3}, {"code": "97530", "minutes": 25}]}
GOOD_GROUP_UNITS = {"97150": 1, "97530": 2}

HUGE = 10 * 1024 * 1024         # a 10 MB string: below the 16 MB record limit, so it is read and refused


def test_mixed_jsonl_batch(tmp_path):
    huge = "9" * HUGE
    lines = [
        dumps(GOOD_OT),                                                                 # s1 billed
        b'{"session_id": "MAL", "payer": "medicare", "services": [',                    # s2 failed to parse
        b'[{"session_id": "ARR", "services": []}]',                                     # s3 failed to parse
        dumps({"session_id": "TYPE", "payer": "medicare",                               # s4 with errors
               "services": [{"code": "97110", "minutes": "ten"}]}),
        dumps({"session_id": "UNK", "payer": "medicare", "date_of_service": DATE,      # s5 with errors (billed,
               "discipline": "PT", "services": [{"code": "97111", "minutes": 20}]}),   #    error warning)
        dumps({"session_id": "NOPAYER", "payer": "no-such-payer",                       # s6 with errors
               "services": [{"code": "97110", "minutes": 20}]}),
        dumps({"session_id": "NOSERV", "payer": "medicare"}),                           # s7 with errors
        dumps({"session_id": "BIGMIN", "payer": "medicare",                             # s8 with errors
               "services": [{"code": "97110", "minutes": 10000}]}),
        dumps({"session_id": "MANY", "payer": "medicare",                               # s9 with errors
               "services": [{"code": "97110", "minutes": 1}] * 500}),
        dumps({"session_id": "HUGECODE", "payer": "medicare",                           # s10 with errors
               "services": [{"code": huge, "minutes": 10}]}),
        dumps(GOOD_PT),                                                                 # s11 billed
        b'{"session_id": "LATIN1", "payer": "m\xe9dicare", "services": []}',            # s12 failed to parse
        b"",                                                                            # empty: no session
        dumps({"session_id": huge, "payer": "medicare",                                 # s13 with errors
               "services": [{"code": "97110", "minutes": 10}]}),
        b"   ",                                                                         # blank: no session
        dumps(GOOD_GROUP),                                                              # s14 billed
    ]
    path = tmp_path / "batch.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    proc = run_cli("bill", path, "--format", "jsonl")
    assert proc.returncode == 1, err_text(proc)[-2000:]
    records = jsonl_records(proc)
    # 16 lines, two of them empty/blank -> 14 sessions, one record each, in input order.
    assert len(records) == 14
    ids = [r["session_id"] for r in records]
    # Default ids count sessions (not lines): the empty line before the huge id is not a session, so that
    # session is the 13th -> "session-13"; a 10 MB id (over maxLength 128) is not echoed back.
    assert ids == ["OT-1", "session-2", "session-3", "TYPE", "UNK", "NOPAYER", "NOSERV", "BIGMIN", "MANY",
                   "HUGECODE", "PT-9", "session-12", "session-13", "GRP-3"]
    for record in records:
        assert is_result(record) or is_error_record(record), record
    results = {r["session_id"]: r for r in records}
    errors = {sid for sid, r in results.items() if is_error_record(r)}
    assert errors == {"session-2", "session-3", "TYPE", "NOPAYER", "NOSERV", "BIGMIN", "MANY", "HUGECODE",
                      "session-12", "session-13"}
    # what each error says (the field it is about), and that a 10 MB value is never echoed back
    assert "malformed JSON" in results["session-2"]["error"]
    assert "batch.jsonl:2" in results["session-2"]["error"]
    assert "mapping" in results["session-3"]["error"]
    assert "minutes" in results["TYPE"]["error"]
    assert "unknown payer" in results["NOPAYER"]["error"] and "no-such-payer" in results["NOPAYER"]["error"]
    assert "services" in results["NOSERV"]["error"]
    assert "1440" in results["BIGMIN"]["error"]                 # schema maximum of minutes
    assert "200" in results["MANY"]["error"]                    # schema maxItems of services
    assert "code" in results["HUGECODE"]["error"]
    assert "UTF-8" in results["session-12"]["error"]
    assert "batch.jsonl:12" in results["session-12"]["error"]   # line 12 of the file
    assert "session_id" in results["session-13"]["error"]
    # (that error messages do not echo the 10 MB value back is checked in test_hostile_input.py)
    # the unknown code is billed (a result), with an error-severity warning and nothing billed for it
    assert is_result(results["UNK"])
    assert error_rules(results["UNK"]) == ["unknown-code"]
    assert results["UNK"]["lines"] == [] and results["UNK"]["unbilled"][0]["code"] == "97111"
    # good sessions: the hand-worked units, and exactly what billing each alone gives
    assert units_of(results["OT-1"]) == GOOD_OT_UNITS
    assert units_of(results["PT-9"]) == GOOD_PT_UNITS
    assert units_of(results["GRP-3"]) == GOOD_GROUP_UNITS
    for good in (GOOD_OT, GOOD_PT, GOOD_GROUP):
        assert error_rules(results[good["session_id"]]) == []
        assert results[good["session_id"]] == bill_alone(tmp_path, good)
    # 14 read = 3 billed (OT-1, PT-9, GRP-3) + 8 with errors (TYPE, UNK, NOPAYER, NOSERV, BIGMIN, MANY,
    # HUGECODE, session-13) + 3 failed to parse (malformed JSON, array, not UTF-8)
    assert summary(proc) == (14, 3, 8, 3)


def test_json_list_with_good_and_bad_elements(tmp_path):
    items = [
        GOOD_OT,                                                                        # billed
        {"session_id": "TYPE", "payer": "medicare", "services": [{"code": "97110", "minutes": "ten"}]},
        {"session_id": "NOPAYER", "payer": "nobody", "services": [{"code": "97110", "minutes": 20}]},
        {"session_id": "NOSERV", "payer": "medicare"},                                  # with errors
        GOOD_PT,                                                                        # billed
        {"session_id": "UNK", "payer": "medicare", "date_of_service": DATE, "discipline": "PT",
         "services": [{"code": "97111", "minutes": 20}]},                               # with errors
        {"payer": "medicare", "services": [{"code": "97110", "minutes": 10000}]},       # with errors
    ]
    path = tmp_path / "batch.json"
    path.write_text(json.dumps(items, indent=1), encoding="utf-8")
    proc = run_cli("bill", path, "--format", "json")
    assert proc.returncode == 1
    records = json.loads(out_text(proc))
    assert isinstance(records, list) and len(records) == 7
    assert [r["session_id"] for r in records] == ["OT-1", "TYPE", "NOPAYER", "NOSERV", "PT-9", "UNK", "session-7"]
    for record in records:
        assert is_result(record) or is_error_record(record), record
    assert [is_error_record(r) for r in records] == [False, True, True, True, False, False, True]
    assert units_of(records[0]) == GOOD_OT_UNITS and records[0] == bill_alone(tmp_path, GOOD_OT)
    assert units_of(records[4]) == GOOD_PT_UNITS and records[4] == bill_alone(tmp_path, GOOD_PT)
    assert error_rules(records[5]) == ["unknown-code"]
    assert "minutes" in records[1]["error"] and "unknown payer" in records[2]["error"]
    assert "services" in records[3]["error"] and "1440" in records[6]["error"]
    # 7 read = 2 billed + 5 with errors (TYPE, NOPAYER, NOSERV, UNK, session-7) + 0 failed to parse
    assert summary(proc) == (7, 2, 5, 0)


def test_json_list_elements_that_are_not_objects_are_records(tmp_path):
    """A list element that is valid JSON but not an object (a list, a string) is that session's error
    record, like in a YAML list or a JSONL line; the elements after it are still billed."""
    items = [GOOD_OT, [1, 2], GOOD_PT, "just a string", GOOD_GROUP]
    path = tmp_path / "batch.json"
    path.write_text(json.dumps(items, indent=1), encoding="utf-8")
    proc = run_cli("bill", path, "--format", "json")
    assert proc.returncode == 1, err_text(proc)
    records = json.loads(out_text(proc))
    assert [r["session_id"] for r in records] == ["OT-1", "session-2", "PT-9", "session-4", "GRP-3"]
    assert [is_error_record(r) for r in records] == [False, True, False, True, False]
    assert units_of(records[4]) == GOOD_GROUP_UNITS
    # 5 read = 3 billed + 0 with errors + 2 failed to parse (the list and the string)
    assert summary(proc) == (5, 3, 0, 2)
    # the same elements as a YAML list give the same records
    yaml_path = tmp_path / "batch.yaml"
    yaml_path.write_text(json.dumps(items, indent=1), encoding="utf-8")    # JSON is YAML
    from_yaml = run_cli("bill", yaml_path, "--format", "json")
    assert [r["session_id"] for r in json.loads(out_text(from_yaml))] == [r["session_id"] for r in records]


CSV_BATCH = """\
session_id,payer,date_of_service,discipline,code,minutes,group_size
A,medicare,2026-03-02,OT,97110,33,
A,medicare,2026-03-02,OT,97140,7,
B,medicare,2026-03-02,PT,97110,abc,
C,medicare,2026-03-02,PT,97530,25,
C,example-midpoint,2026-03-02,PT,97110,10,
D,medicare,2026-03-02,PT,97150,45,3
D,medicare,2026-03-02,PT,97530,25,
E,medicare,2026-03-02,PT,97112,20,
E,,,,97110,20,
"""

# The same sessions as JSON objects (what the CSV rows mean), for the "same as alone" check.
CSV_AS_JSON = {
    "A": {"session_id": "A", "payer": "medicare", "date_of_service": DATE, "discipline": "OT",
          "services": [{"code": "97110", "minutes": 33}, {"code": "97140", "minutes": 7}]},
    "D": {"session_id": "D", "payer": "medicare", "date_of_service": DATE, "discipline": "PT",
          "services": [{"code": "97150", "minutes": 45, "group_size": 3}, {"code": "97530", "minutes": 25}]},
    "E": {"session_id": "E", "payer": "medicare", "date_of_service": DATE, "discipline": "PT",
          "services": [{"code": "97112", "minutes": 20}, {"code": "97110", "minutes": 20}]},
}


def test_csv_batch_groups_rows_into_sessions(tmp_path):
    path = tmp_path / "lines.csv"
    path.write_text(CSV_BATCH, encoding="utf-8")
    proc = run_cli("bill", path, "--format", "jsonl")
    assert proc.returncode == 1
    records = jsonl_records(proc)
    # 9 rows, consecutive session ids A A B C C D D E E -> 5 sessions
    assert [r["session_id"] for r in records] == ["A", "B", "C", "D", "E"]
    by_id = {r["session_id"]: r for r in records}
    # A: 97110 33 + 97140 7 = 40 min -> 3 units; full units 97110 2 (3 left), 97140 0 (7 left) -> 97140 1
    assert units_of(by_id["A"]) == {"97110": 2, "97140": 1}
    assert all(line["modifiers"] == ["GO"] for line in by_id["A"]["lines"])
    # B: minutes "abc" -> that session is an error record naming the field and its CSV line (4)
    assert is_error_record(by_id["B"])
    assert "minutes" in by_id["B"]["error"] and "lines.csv:4" in by_id["B"]["error"]
    # C: payer medicare on line 5, example-midpoint on line 6 -> an error record naming payer and line 6
    assert is_error_record(by_id["C"])
    assert "payer" in by_id["C"]["error"] and "lines.csv:6" in by_id["C"]["error"]
    # D: group 97150 -> 1 unit; 97530 25 min -> 2 units
    assert units_of(by_id["D"]) == {"97150": 1, "97530": 2}
    # E: the second row leaves payer/date/discipline blank: the session's values come from the first row.
    # 97112 20 + 97110 20 = 40 min -> 3 units; tie -> order of entry -> 97112 gets the extra unit.
    assert units_of(by_id["E"]) == {"97112": 2, "97110": 1}
    assert all(line["modifiers"] == ["GP"] for line in by_id["E"]["lines"])
    for sid, data in CSV_AS_JSON.items():
        assert by_id[sid] == bill_alone(tmp_path, data), sid
    # 5 read = 3 billed (A, D, E) + 2 with errors (B, C) + 0 failed to parse
    assert summary(proc) == (5, 3, 2, 0)


def test_csv_session_ids_group_only_consecutive_rows(tmp_path):
    path = tmp_path / "split.csv"
    path.write_text("session_id,payer,code,minutes\n"
                    "X,medicare,97110,20\n"
                    "Y,medicare,97110,20\n"
                    "X,medicare,97112,40\n", encoding="utf-8")
    proc = run_cli("bill", path, "--format", "jsonl")
    records = jsonl_records(proc)
    # X, then Y, then X again: three sessions (rows are grouped by *consecutive* session_id)
    assert [r["session_id"] for r in records] == ["X", "Y", "X"]
    # X#1: 97110 20 -> 1 unit; X#2: 97112 40 -> 3 units (38-52)
    assert units_of(records[0]) == {"97110": 1} and units_of(records[2]) == {"97112": 3}
    # no discipline column: each session gets the discipline-missing warning (a warning, not an error)
    assert proc.returncode == 0
    assert summary(proc) == (3, 3, 0, 0)


def test_csv_unknown_column_is_a_usage_error(tmp_path):
    path = tmp_path / "typo.csv"
    path.write_text("session_id,payer,code,minute\nA,medicare,97110,33\n", encoding="utf-8")
    proc = run_cli("bill", path, "--format", "jsonl")
    assert proc.returncode == 2
    assert proc.stdout == b""
    err = err_text(proc)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "'minute'" in err and "did you mean 'minutes'" in err
    assert "typo.csv:1" in err


# --- output formats -------------------------------------------------------------------------------------

def test_format_json_single_yaml_gives_one_object():
    proc = run_cli("bill", "examples/ot-session.yaml", "--format", "json")
    assert proc.returncode == 0
    record = json.loads(out_text(proc))
    assert isinstance(record, dict)
    assert record["session_id"] == "OT-2026-0302-01"
    # 97110 33 + 97140 7 + 97535 20 = 60 min -> 4 units: 2 + 1 (largest leftover, 7) + 1
    assert units_of(record) == {"97110": 2, "97140": 1, "97535": 1}


def test_format_json_list_and_empty_input(tmp_path):
    proc = run_cli("bill", "examples/batch.jsonl", "--format", "json")
    records = json.loads(out_text(proc))
    assert isinstance(records, list) and [r["session_id"] for r in records] == ["SLP-1", "PT-9"]
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"\n\n")
    proc = run_cli("bill", empty, "--format", "json")
    assert proc.returncode == 0
    assert json.loads(out_text(proc)) == []              # no session: an empty list, still valid JSON
    assert summary(proc) == (0, 0, 0, 0)
    proc = run_cli("bill", empty, "--format", "csv")
    assert out_text(proc).splitlines() == [",".join(CSV_HEADER)]
    # the same on standard input, whose format is sniffed: nothing (or blank lines, or a BOM) is no session,
    # not an unreadable input (`grep medicare day.jsonl | payrules bill -` finding nothing bills nothing)
    for data in (b"", b"\n\n", b"\xef\xbb\xbf"):
        proc = run_cli("bill", "-", "--format", "json", stdin=data)
        assert proc.returncode == 0 and json.loads(out_text(proc)) == [] and summary(proc) == (0, 0, 0, 0)


def test_format_jsonl_one_line_per_session():
    proc = run_cli("bill", "examples/batch.jsonl", "--format", "jsonl")
    assert proc.returncode == 0
    lines = out_text(proc).splitlines()
    assert len(lines) == 2
    records = [json.loads(line) for line in lines]
    assert [r["session_id"] for r in records] == ["SLP-1", "PT-9"]
    # SLP-1: 92507 untimed 1; 97129 40 min -> 3 units as the cognitive family: 97129 x1 + 97130 x2
    assert units_of(records[0]) == {"92507": 1, "97129": 1, "97130": 2}
    assert units_of(records[1]) == {"97112": 2, "97110": 1}


def test_format_csv_header_and_rows():
    proc = run_cli("bill", "examples/batch.jsonl", "--format", "csv")
    assert proc.returncode == 0
    rows = list(csv.reader(io.StringIO(out_text(proc))))
    assert rows[0] == CSV_HEADER                     # exactly one header, first
    assert CSV_HEADER not in rows[1:]
    assert all(len(row) == len(CSV_HEADER) for row in rows)
    billed = [(r[0], r[3], r[5], r[6]) for r in rows[1:] if r[2] == "billed"]
    assert billed == [("SLP-1", "92507", "1", "GN"), ("SLP-1", "97129", "1", "GN"), ("SLP-1", "97130", "2", "GN"),
                      ("PT-9", "97112", "2", "GP"), ("PT-9", "97110", "1", "GP")]
    # rows are grouped by session, in input order
    sids = [r[0] for r in rows[1:]]
    assert sids == sorted(sids, key=["SLP-1", "PT-9"].index)


def test_format_csv_error_record_is_one_row(tmp_path):
    path = tmp_path / "two.jsonl"
    path.write_text(json.dumps(GOOD_PT) + "\n" + json.dumps({"session_id": "BAD", "payer": "nobody",
                                                             "services": [{"code": "97110", "minutes": 20}]})
                    + "\n", encoding="utf-8")
    proc = run_cli("bill", path, "--format", "csv")
    assert proc.returncode == 1
    rows = list(csv.reader(io.StringIO(out_text(proc))))
    assert rows[0] == CSV_HEADER
    bad = [r for r in rows if r[0] == "BAD"]
    assert len(bad) == 1 and bad[0][2] == "error" and "unknown payer" in bad[0][8]


# --- --jobs N -------------------------------------------------------------------------------------------

def generated_batch(n: int, seed: int = 20260302) -> bytes:
    """n JSONL lines, mixed good and bad, deterministic."""
    rng = random.Random(seed)
    codes = ["97110", "97112", "97140", "97530", "97535", "97116", "97129", "97130", "92507", "97150",
             "97161", "G0283", "97545", "97546", "97111"]
    payers = ["medicare", "medicare", "medicare", "example-full-unit", "example-midpoint", "example-unit-limits"]
    out = []
    for i in range(n):
        kind = rng.random()
        if kind < 0.06:
            out.append(b'{"session_id": "broken-%d", "services": [' % i)
            continue
        if kind < 0.09:
            out.append(b"[1, 2, 3]")
            continue
        if kind < 0.11:
            out.append(b'{"payer": "\xff\xfe"}')
            continue
        services = []
        for _ in range(rng.randint(1, 5)):
            s = {"code": rng.choice(codes), "minutes": rng.randint(0, 75)}
            if s["code"] == "97150":
                s["group_size"] = rng.randint(1, 8)
            services.append(s)
        session = {"session_id": f"S-{i:04d}", "payer": rng.choice(payers), "date_of_service": DATE,
                   "services": services}
        if rng.random() < 0.8:
            session["discipline"] = rng.choice(["PT", "OT", "SLP"])
        if kind < 0.14:
            session["payer"] = "nobody"
        elif kind < 0.17:
            services[0]["minutes"] = "ten"
        elif kind < 0.19:
            del session["services"]
        out.append(json.dumps(session).encode())
    return b"\n".join(out) + b"\n"


@pytest.fixture(scope="module")
def big_batch(tmp_path_factory):
    # 600 mixed sessions: more than one chunk per worker; the in-flight limit is tested below
    path = tmp_path_factory.mktemp("jobs") / "big.jsonl"
    path.write_bytes(generated_batch(600))
    return path


def test_jobs_keep_input_order_far_past_the_in_flight_limit(tmp_path):
    # --jobs 2 keeps at most 4 x 2 chunks of batch.CHUNK sessions in flight, then drains the oldest; ten
    # times that many sessions (plus a partial last chunk) go through the limit and the final drain
    # many times. Every id is distinct, so a chunk written out of turn shows as ids out of order.
    from engine import batch
    jobs = 2
    n = batch.CHUNK * 4 * jobs * 10 + 17
    assert n > 20_000
    path = tmp_path / "ordered.jsonl"
    session = {"payer": "medicare", "date_of_service": DATE, "discipline": "PT",
               "services": [{"code": "97110", "minutes": 8}]}
    path.write_text("".join(json.dumps(dict(session, session_id=f"S-{i:06d}")) + "\n" for i in range(n)), "utf-8")
    proc = run_cli("bill", path, "--format", "jsonl", "--jobs", jobs)
    assert proc.returncode == 0
    ids = [json.loads(line)["session_id"] for line in proc.stdout.splitlines()]
    assert ids == [f"S-{i:06d}" for i in range(n)]
    assert summary(proc) == (n, n, 0, 0)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_jobs_2_gives_the_same_bytes_as_jobs_1(big_batch, fmt):
    one = run_cli("bill", big_batch, "--format", fmt, "--jobs", "1")
    two = run_cli("bill", big_batch, "--format", fmt, "--jobs", "2")
    assert one.returncode == two.returncode == 1          # the batch has bad sessions
    assert one.stdout == two.stdout
    assert summary(one) == summary(two)
    read, billed, errors, failed = summary(one)
    assert read == 600
    assert billed > 0 and errors > 0 and failed > 0
    if fmt == "jsonl":
        records = jsonl_records(one)
        assert len(records) == 600
        # input order: S-0000 ... at their own positions, default ids numbered by position
        for i, record in enumerate(records):
            assert record["session_id"] in (f"S-{i:04d}", f"session-{i + 1}"), (i, record["session_id"])
        # failed to parse = the lines written broken: malformed, arrays, not UTF-8
        broken = sum(1 for line in big_batch.read_bytes().split(b"\n")
                     if line and (line.startswith(b"[") or line.endswith(b"[") or b"\xff" in line))
        assert failed == broken


# --- rule files, standard input -------------------------------------------------------------------------

BROKEN_PAYER = """\
payer: broken
name: Broken payer
method: {name: cms_8_minute}
codes:
  timed_15: [97110]
rules:
  - id: timed
    description: timed codes
    source: test
    when: {line: {code_in: timed_15}}
    then: [{explode: true}]
"""


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_rule_file_problem_stops_the_run_before_billing(tmp_path, jobs):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "broken.yaml").write_text(BROKEN_PAYER, encoding="utf-8")
    batch = tmp_path / "ok.jsonl"
    batch.write_text(json.dumps(GOOD_OT) + "\n" + json.dumps(GOOD_PT) + "\n", encoding="utf-8")
    proc = run_cli("bill", batch, "--rules", rules, "--format", "jsonl", "--jobs", jobs)
    assert proc.returncode == 2
    assert proc.stdout == b""                         # nothing billed, not even the medicare sessions
    err = err_text(proc)
    assert err.startswith("error: ") and "broken.yaml" in err
    assert "sessions read" not in err                  # no summary: no session was read


def test_stdin_jsonl():
    data = (ROOT / "examples" / "batch.jsonl").read_bytes()
    from_file = run_cli("bill", "examples/batch.jsonl", "--format", "jsonl")
    proc = run_cli("bill", "-", "--format", "jsonl", stdin=data)
    assert proc.returncode == 0
    records = jsonl_records(proc)
    assert [r["session_id"] for r in records] == ["SLP-1", "PT-9"]
    assert proc.stdout == from_file.stdout
    assert summary(proc) == (2, 2, 0, 0)
    explicit = run_cli("bill", "-", "--input-format", "jsonl", "--format", "jsonl", stdin=data)
    assert explicit.stdout == from_file.stdout


def test_stdin_csv():
    proc = run_cli("bill", "-", "--input-format", "csv", "--format", "jsonl", stdin=CSV_BATCH.encode())
    assert proc.returncode == 1
    records = jsonl_records(proc)
    assert [r["session_id"] for r in records] == ["A", "B", "C", "D", "E"]
    assert units_of(records[0]) == {"97110": 2, "97140": 1}
    # messages name standard input as <stdin>, with the CSV line
    assert "<stdin>:4" in records[1]["error"]
    assert summary(proc) == (5, 3, 2, 0)


def _killed(sessions):
    """A worker's chunk that ends with the worker killed (as the OOM killer would)."""
    import os
    import signal
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_worker_that_dies_is_a_clear_error_not_a_hang(monkeypatch):
    # the run stops with one message instead of waiting for results that will never come, or a traceback
    from engine import batch
    from engine.errors import EvaluationError
    from engine.sessions import RawLine

    monkeypatch.setattr(batch, "_process_chunk", _killed)
    lines = [RawLine((b'{"payer": "medicare", "services": [{"code": "97110", "minutes": 20}]}', "k.jsonl", n, n))
             for n in range(1, 4)]
    with pytest.raises(EvaluationError, match="worker process died"):
        list(batch.bill_stream(iter(lines), [], "python", batch.Job(), 2))


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_an_input_that_breaks_off_keeps_what_was_read_before_it_in_every_jobs(tmp_path, fmt):
    # 600 good sessions (more than 2 chunks of batch.CHUNK: with --jobs 2 several are in flight when
    # the reader meets the garbage after the list), then text that is no JSON: the 600 sessions read
    # are billed and written in both --jobs, the output is well-formed (the json list closed), the log
    # holds them too, and stderr says what stopped the run, then the summary; exit 2.
    path = tmp_path / "garbage-after.json"
    sessions = [dict(GOOD_PT, session_id=f"S-{i:04d}") for i in range(600)]
    path.write_text(json.dumps(sessions, indent=1) + "\nthis is not JSON\n", encoding="utf-8")
    runs = []
    for jobs in ("1", "2"):
        db = tmp_path / f"audit-{jobs}.sqlite"
        proc = run_cli("bill", path, "--format", fmt, "--jobs", jobs, "--audit-db", db)
        assert proc.returncode == 2
        records = json.loads(out_text(proc)) if fmt == "json" else jsonl_records(proc)
        assert [r["session_id"] for r in records] == [f"S-{i:04d}" for i in range(600)]
        assert all(units_of(r) == GOOD_PT_UNITS for r in records)
        assert summary(proc) == (600, 600, 0, 0)
        assert err_text(proc).startswith("error: ") and "unexpected text after the JSON list" in err_text(proc)
        logged = run_cli("audit", db, "--format", "json")
        assert [r["session_id"] for r in json.loads(out_text(logged))] == [f"S-{i:04d}" for i in range(600)]
        runs.append(proc)
    assert runs[0].stdout == runs[1].stdout and runs[0].stderr == runs[1].stderr


def test_more_input_files_than_may_be_open_at_once(tmp_path):
    # `payrules bill day/*.jsonl`: every input was opened before the first was read, so more files than
    # the open-file limit (1024 on many systems, 256 on macOS) stopped the run (exit 2, nothing billed).
    # They are opened one at a time; one that cannot be opened still stops the run before anything is
    # billed.
    import resource
    names = []
    for i in range(150):
        path = tmp_path / f"f{i:03d}.jsonl"
        path.write_text(json.dumps(dict(GOOD_PT, session_id=f"F{i:03d}")) + "\n", encoding="utf-8")
        names.append(path)

    def few_files():
        resource.setrlimit(resource.RLIMIT_NOFILE, (100, 100))
    proc = subprocess.run([sys.executable, "-m", "engine", "bill", *map(str, names), "--format", "jsonl"], cwd=ROOT,
                          capture_output=True, timeout=TIMEOUT, preexec_fn=few_files)
    assert proc.returncode == 0, err_text(proc)[-2000:]
    records = jsonl_records(proc)
    assert [r["session_id"] for r in records] == [f"F{i:03d}" for i in range(150)]
    assert all(units_of(r) == GOOD_PT_UNITS for r in records)
    proc = run_cli("bill", names[0], tmp_path / "absent.jsonl", "--format", "jsonl")
    assert proc.returncode == 2 and proc.stdout == b"" and "absent.jsonl" in err_text(proc)


# A worker killed mid-run (the OOM killer): the run stops with one error line and exit 2, as it did, but
# its output is well-formed up to the last record written (the json list closed) and the summary counts
# those records; it left the list without its ']' and printed no summary. The worker that bills the third
# chunk (it holds S-0600) kills itself a second after it starts: the first two chunks are billed by then.
_WORKER_KILLER = """
import os, signal, sys, time
from engine import batch
from engine.cli import main
process = batch._process_chunk
def killed(items):
    if any(b'"S-0600"' in (item[0] if type(item) is tuple else b"") for item in items):
        time.sleep(1)
        os.kill(os.getpid(), signal.SIGKILL)
    return process(items)
batch._process_chunk = killed
sys.exit(main(sys.argv[1:]))
"""


def batch_chunk() -> int:
    from engine import batch
    return batch.CHUNK


def test_a_worker_killed_mid_run_leaves_well_formed_output_and_a_summary(tmp_path):
    path = tmp_path / "day.jsonl"
    path.write_text("".join(json.dumps(dict(GOOD_PT, session_id=f"S-{i:04d}")) + "\n" for i in range(1200)),
                    encoding="utf-8")
    proc = subprocess.run([sys.executable, "-c", _WORKER_KILLER, "bill", str(path), "--format", "json",
                           "--jobs", "2"], cwd=ROOT, capture_output=True, timeout=TIMEOUT)
    assert proc.returncode == 2 and b"Traceback" not in proc.stderr, err_text(proc)[-2000:]
    ids = [r["session_id"] for r in json.loads(out_text(proc))]
    assert ids == [f"S-{i:04d}" for i in range(len(ids))] and len(ids) in (batch_chunk(), 2 * batch_chunk())
    assert "worker process died" in err_text(proc)
    assert summary(proc) == (len(ids), len(ids), 0, 0)


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_jobs_memory_stays_flat_with_large_records(tmp_path, fmt):
    # --jobs sent JSONL lines to the workers 256 at a time, up to 8 such chunks in flight, whatever their
    # size: 300 sessions with a 1 MB context each took 807 MB in the reading process (30 MB with --jobs
    # 1), and 16 MB lines (allowed) would take some 30 GB. A chunk is also cut at batch.CHUNK_BYTES.
    from engine import batch
    # (a JSON list's elements, parsed in the reading process, went as sessions: 100 took 328 MB there;
    # they go as their text now, parsed where they are billed, as JSONL lines are)
    path = tmp_path / f"fat.{fmt}"
    note = "x" * (1024 * 1024)
    with open(path, "w", encoding="utf-8") as fh:
        lines = [json.dumps(dict(GOOD_PT, session_id=f"F-{i:03d}", context={"note": note})) for i in range(100)]
        fh.write("\n".join(lines) + "\n" if fmt == "jsonl" else "[\n" + ",\n".join(lines) + "\n]\n")
    # run under a fresh process whose children are only this run (the reading process and its workers)
    measure = ("import resource, subprocess, sys\n"
               "proc = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE)\n"
               "sys.stdout.buffer.write(proc.stdout)\n"
               "sys.stderr.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
               "sys.exit(proc.returncode)\n")
    proc = subprocess.run([sys.executable, "-c", measure, sys.executable, "-m", "engine", "bill", str(path),
                           "--format", "jsonl", "--jobs", "2"], cwd=ROOT, capture_output=True, timeout=TIMEOUT)
    assert proc.returncode == 0
    assert [r["session_id"] for r in jsonl_records(proc)] == [f"F-{i:03d}" for i in range(100)]
    peak_mb = int(proc.stderr.decode().rsplit("\n", 1)[-1]) / 1024
    assert peak_mb < 150, f"{peak_mb:.0f} MB"         # the largest process of the run
    assert batch.CHUNK_BYTES <= 4 * 1024 * 1024
