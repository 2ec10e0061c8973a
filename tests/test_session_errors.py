"""Bad session input (design.md §3-§5): what cannot be parsed at all is exit 2; a session that cannot be
billed becomes an error record `{"session_id", "error"}` in its place (exit 1) and the others are still
billed; stderr has `error: FILE:LINE: ...`, never a traceback, never patient data.

Each test writes a session file into tmp_path and runs `python -m engine bill FILE`. Expected lines are
counted by hand in the text written (GOOD's line numbers are in the comment beside it).
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parent.parent
RESULT_VALIDATOR = Draft202012Validator(json.loads((ROOT / "schemas" / "result.schema.json").read_text("utf-8")))
PATIENT = "Jane Roe"

GOOD = """\
session_id: S-1
payer: medicare
date_of_service: 2026-03-02
discipline: OT
services:
  - code: "97110"
    minutes: 33
context: {patient_name: "Jane Roe"}
"""
# Lines of GOOD: 1 session_id, 2 payer, 3 date_of_service, 4 discipline, 5 services:, 6 - code,
# 7 minutes, 8 context. Billed: 97110 33 min -> 2 units (CMS chart 23-37 min), modifier GO.


def run_bill(path: Path, *args) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "engine", "bill", str(path), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert PATIENT not in proc.stderr, proc.stderr
    return proc


def edit(old: str, new: str, text: str = GOOD) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def write(tmp_path: Path, text: str, name: str = "session.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_lines(stderr: str, path: Path, line: int, field: str | None = None) -> list:
    """The messages (what follows the prefix) of the stderr lines `error: FILE:LINE: [FIELD: ]message`."""
    prefix = f"error: {re.escape(str(path))}:{line}: "
    if field is not None:
        prefix += re.escape(field) + ": "
    return re.findall(f"^{prefix}(.*)$", stderr, re.M)


def single_error_record(proc) -> dict:
    record = json.loads(proc.stdout)
    assert isinstance(record, dict)
    assert set(record) == {"session_id", "error"}, record
    assert list(RESULT_VALIDATOR.iter_errors(record)) == []
    return record


def units_of(result: dict) -> dict:
    return {line["code"]: line["units"] for line in result["lines"]}


def test_good_session_bills(tmp_path):
    """The base case: every failure below is caused by the one edit it makes."""
    proc = run_bill(write(tmp_path, GOOD))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert units_of(result) == {"97110": 2}
    assert result["lines"][0]["modifiers"] == ["GO"]


# --- inputs that cannot be parsed at all: exit 2 ---------------------------------------------------------

def test_invalid_yaml_is_exit_2_with_line(tmp_path):
    path = write(tmp_path, edit("    minutes: 33", "    minutes: 33: x"))      # line 7
    proc = run_bill(path)
    assert proc.returncode == 2
    assert error_lines(proc.stderr, path, 7), proc.stderr
    assert proc.stdout == ""


def test_not_a_session_at_all(tmp_path):
    path = write(tmp_path, "just a string\n")
    proc = run_bill(path)
    assert proc.returncode == 2
    assert error_lines(proc.stderr, path, 1), proc.stderr
    assert proc.stdout == ""


def test_duplicate_key_is_exit_2_with_line(tmp_path):
    path = write(tmp_path, edit("payer: medicare\n", "payer: medicare\npayer: acme\n"))    # second on line 3
    proc = run_bill(path)
    assert proc.returncode == 2
    lines = error_lines(proc.stderr, path, 3, "payer")
    assert lines and "duplicate" in lines[0].lower(), proc.stderr
    assert proc.stdout == ""


def test_anchor_in_session_refused(tmp_path):
    text = edit('  - code: "97110"\n    minutes: 33\n',
                '  - &svc\n    code: "97110"\n    minutes: 33\n  - *svc\n')       # anchor line 6, alias line 9
    path = write(tmp_path, text)
    proc = run_bill(path)
    assert proc.returncode in (1, 2)
    assert re.search(rf"^error: {re.escape(str(path))}:(6|9): .*(anchor|alias)", proc.stderr, re.M | re.I), proc.stderr


@pytest.mark.parametrize("value", ['!!python/object/apply:os.system ["touch {marker}"]',
                                   '!!python/object:argparse.Namespace {{cmd: "touch {marker}"}}',
                                   '!!python/object/apply:os.system "touch {marker}"'],
                         ids=["apply-sequence", "object-mapping", "apply-scalar"])
def test_python_tag_in_session_refused(tmp_path, value):
    marker = tmp_path / "executed"
    text = edit('context: {patient_name: "Jane Roe"}', "context: " + value.format(marker=marker.as_posix()))
    path = write(tmp_path, text)                    # the tag is on line 8
    proc = run_bill(path)
    assert proc.returncode in (1, 2), proc.stdout
    lines = error_lines(proc.stderr, path, 8)
    assert any("tag" in l.lower() and "python/object" in l for l in lines), proc.stderr
    assert not marker.exists()


# --- sessions that cannot be billed: error record in place, exit 1 ------------------------------------------

def test_unknown_key_typo_services(tmp_path):
    path = write(tmp_path, edit("services:", "servics:"))        # line 5
    proc = run_bill(path)
    assert proc.returncode == 1
    record = single_error_record(proc)
    assert record["session_id"] == "S-1"
    lines = error_lines(proc.stderr, path, 5, "servics")
    assert lines, proc.stderr
    assert "S-1" in lines[0]


def test_unknown_key_with_services_present(tmp_path):
    path = write(tmp_path, edit("discipline: OT", "disciplin: OT"))     # line 4
    proc = run_bill(path)
    assert proc.returncode == 1
    record = single_error_record(proc)
    assert record["session_id"] == "S-1" and "disciplin" in record["error"]
    lines = error_lines(proc.stderr, path, 4, "disciplin")
    assert lines and "discipline" in lines[0].replace("disciplin:", ""), proc.stderr


def test_minutes_of_wrong_type(tmp_path):
    path = write(tmp_path, edit("minutes: 33", 'minutes: "ten"'))       # line 7
    proc = run_bill(path)
    assert proc.returncode == 1
    record = single_error_record(proc)
    assert "services[0].minutes" in record["error"]
    assert error_lines(proc.stderr, path, 7, "services[0].minutes"), proc.stderr


def test_missing_services(tmp_path):
    text = 'session_id: S-1\npayer: medicare\ncontext: {patient_name: "Jane Roe"}\n'
    path = write(tmp_path, text)
    proc = run_bill(path)
    assert proc.returncode == 1
    record = single_error_record(proc)
    assert record["session_id"] == "S-1" and "services" in record["error"].replace(str(path), "")
    # the session mapping starts on line 1
    lines = error_lines(proc.stderr, path, 1)
    assert lines and "services" in lines[0], proc.stderr


def test_negative_minutes(tmp_path):
    path = write(tmp_path, edit("minutes: 33", "minutes: -5"))          # line 7
    proc = run_bill(path)
    assert proc.returncode == 1
    record = single_error_record(proc)
    assert "services[0].minutes" in record["error"]
    assert error_lines(proc.stderr, path, 7, "services[0].minutes"), proc.stderr


def test_empty_services(tmp_path):
    text = 'session_id: S-1\npayer: medicare\nservices: []\n'
    path = write(tmp_path, text)                                         # line 3
    proc = run_bill(path)
    assert proc.returncode == 1
    record = single_error_record(proc)
    assert "services" in record["error"].replace(str(path), "")
    assert error_lines(proc.stderr, path, 3, "services"), proc.stderr


def test_malformed_code(tmp_path):
    path = write(tmp_path, edit('code: "97110"', 'code: "abc"'))         # line 6
    proc = run_bill(path)
    assert proc.returncode == 1
    record = single_error_record(proc)
    assert "services[0].code" in record["error"]
    assert error_lines(proc.stderr, path, 6, "services[0].code"), proc.stderr


@pytest.mark.parametrize("written", ["2026-02-30", '"2026-02-30"'], ids=["plain", "quoted"])
def test_impossible_date(tmp_path, written):
    path = write(tmp_path, edit("date_of_service: 2026-03-02", f"date_of_service: {written}"))     # line 3
    proc = run_bill(path)
    assert proc.returncode == 1, proc.stderr
    record = single_error_record(proc)
    assert record["session_id"] == "S-1" and "date_of_service" in record["error"]
    assert error_lines(proc.stderr, path, 3, "date_of_service"), proc.stderr


# --- unknown but well-formed code: billed, with an error-severity warning -------------------------------------

def test_unknown_code_is_billed_as_unbilled_never_with_another_code_suggested(tmp_path):
    text = edit('  - code: "97110"\n    minutes: 33\n',
                '  - code: "97111"\n    minutes: 33\n  - code: "97140"\n    minutes: 10\n')
    path = write(tmp_path, text)
    proc = run_bill(path)
    assert proc.returncode == 1
    result = json.loads(proc.stdout)
    assert "error" not in result and list(RESULT_VALIDATOR.iter_errors(result)) == []
    # 97111 is in none of Medicare's lists: held, its minutes stay out of the pool; 97140 10 min -> 1 unit
    assert units_of(result) == {"97140": 1}
    assert [(u["code"], u["minutes"]) for u in result["unbilled"]] == [("97111", 33)]
    assert result["total_timed_minutes"] == 10 and result["total_units"] == 1
    errors = [w for w in result["warnings"] if w["severity"] == "error"]
    assert len(errors) == 1 and errors[0]["codes"] == ["97111"] and "97111" in errors[0]["message"]
    # 97110, 97112, 97113, 97116 and 97161 are one edit away and billable: a billing tool must not offer
    # any of them as the fix (issue 10 §11), only say the code is not covered
    assert "not covered by this payer" in errors[0]["message"]
    assert not re.search(r"did you mean|\b9\d{4}\b(?<!97111)", errors[0]["message"]), errors[0]["message"]
    assert "S-1" in proc.stderr and "97111" in proc.stderr


# --- several sessions --------------------------------------------------------------------------------------

THREE = """\
- session_id: A
  payer: medicare
  discipline: PT
  services:
    - {code: "97110", minutes: 20}
- payer: medicare
  discipline: PT
  services:
    - {code: "97110", minutes: -1}
  context: {patient_name: "Jane Roe"}
- session_id: C
  payer: medicare
  discipline: PT
  services:
    - {code: "97140", minutes: 40}
"""


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_bad_session_in_the_middle_of_three(tmp_path, fmt):
    path = write(tmp_path, THREE, "three.yaml")
    proc = run_bill(path, "--format", fmt)
    assert proc.returncode == 1
    records = json.loads(proc.stdout) if fmt == "json" else [json.loads(l) for l in proc.stdout.splitlines()]
    assert len(records) == 3
    assert all(list(RESULT_VALIDATOR.iter_errors(r)) == [] for r in records)
    # A: 20 min -> 1 unit; C: 40 min -> 3 units (CMS chart 38-52); the middle one has no id: session-2
    assert records[0]["session_id"] == "A" and units_of(records[0]) == {"97110": 1}
    assert set(records[1]) == {"session_id", "error"} and records[1]["session_id"] == "session-2"
    assert records[2]["session_id"] == "C" and units_of(records[2]) == {"97140": 3}
    # the bad minutes are on line 9
    lines = error_lines(proc.stderr, path, 9, "services[0].minutes")
    assert lines and "session-2" in lines[0], proc.stderr


def test_jsonl_with_a_malformed_line(tmp_path):
    text = ('{"session_id": "J1", "payer": "medicare", "discipline": "PT", "services": [{"code": "97110", "minutes": 20}]}\n'
            '{"session_id": "J2", "payer": "medicare", "services": [{"code": "97110", "minutes": 20}, \n'
            '{"session_id": "J3", "payer": "medicare", "discipline": "PT", "services": [{"code": "97140", "minutes": 25}]}\n')
    path = write(tmp_path, text, "batch.jsonl")
    proc = run_bill(path, "--format", "json")
    assert proc.returncode == 1
    records = json.loads(proc.stdout)
    assert len(records) == 3
    assert records[0]["session_id"] == "J1" and units_of(records[0]) == {"97110": 1}
    assert set(records[1]) == {"session_id", "error"}
    assert records[2]["session_id"] == "J3" and units_of(records[2]) == {"97140": 2}      # 25 min -> 2 units
    assert error_lines(proc.stderr, path, 2), proc.stderr


def test_jsonl_line_that_is_not_a_session(tmp_path):
    text = ('{"session_id": "J1", "payer": "medicare", "discipline": "PT", "services": [{"code": "97110", "minutes": 20}]}\n'
            '"just a string"\n')
    path = write(tmp_path, text, "batch.jsonl")
    proc = run_bill(path, "--format", "jsonl")
    assert proc.returncode == 1
    records = [json.loads(l) for l in proc.stdout.splitlines()]
    assert len(records) == 2
    assert units_of(records[0]) == {"97110": 1}
    assert set(records[1]) == {"session_id", "error"} and records[1]["session_id"] == "session-2"


# --- stderr: no traceback, no patient data ------------------------------------------------------------------

PRIVATE = {
    # (edit of GOOD, expected exit code)
    "negative minutes": (("minutes: 33", "minutes: -5"), 1),
    "unknown key": (("discipline: OT", "disciplin: OT"), 1),
    "unknown payer": (("payer: medicare", "payer: acme-health"), 1),
    "unknown code": (('code: "97110"', 'code: "97111"'), 1),
    "bad code": (('code: "97110"', 'code: "abc"'), 1),
    "patient data where an object belongs": (('context: {patient_name: "Jane Roe"}', 'context: "Jane Roe"'), 1),
    "patient data under an unknown key": (('context: {patient_name: "Jane Roe"}', 'patient_name: "Jane Roe"'), 1),
    "invalid YAML": (("minutes: 33", "minutes: [33"), 2),
}


@pytest.mark.parametrize("case", sorted(PRIVATE))
def test_stderr_has_no_patient_data_and_no_traceback(tmp_path, case):
    (old, new), code = PRIVATE[case]
    path = write(tmp_path, edit(old, new))
    proc = run_bill(path)               # asserts: no "Traceback", no "Jane Roe" on stderr
    assert proc.returncode == code, proc.stderr
    assert proc.stderr.startswith("error: ")
    if code == 1:
        assert "S-1" in proc.stderr     # the session is named by its id
