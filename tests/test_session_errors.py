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


# --- all of a session's mistakes at once (issue 11 §6) -------------------------------------------------------

MISTAKES = """\
session_id: S-1
payer: medicare
date_of_service: 2026-3-2
disipline: PT
services:
  - code: "97110"
    minuts: 5
  - code: "97140"
    minutes: -4
context: {patient_name: "Jane Roe"}
"""
# Four mistakes, by line: 3 a date not written YYYY-MM-DD, 4 a misspelt key, 7 a misspelt key (its
# "missing minutes" is the same mistake: not said twice), 9 a negative minute count.
EXPECTED = [
    (3, "date_of_service", "not a date like 2026-03-02"),
    (4, "disipline", "unknown key 'disipline' (did you mean 'discipline'?)"),
    (7, "services[0].minuts", "unknown key 'minuts' (did you mean 'minutes'?)"),
    (9, "services[1].minutes", "must be at least 0"),
]


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv", "table"])
def test_all_of_a_sessions_mistakes_in_one_record(tmp_path, fmt):
    path = write(tmp_path, MISTAKES)
    proc = run_bill(path, "--format", fmt)
    assert proc.returncode == 1
    joined = "; ".join(f"{path}:{line}: {field}: {message}" for line, field, message in EXPECTED)
    if fmt in ("json", "jsonl"):
        assert single_error_record(proc) == {"session_id": "S-1", "error": joined}
    elif fmt == "csv":      # the same text, in its one row
        assert joined in proc.stdout and proc.stdout.count("S-1") == 1, proc.stdout
    else:                   # the same words in its one block, wrapped to the width
        assert " ".join(joined.split()) in " ".join(proc.stdout.split()) and proc.stdout.count("S-1") == 1
    # stderr: one line per mistake, in order of line
    said = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
    assert said == [f"error: {path}:{line}: {field}: {message} (session S-1)" for line, field, message in EXPECTED]
    assert "2026-3-2" not in proc.stdout + proc.stderr      # the patient's date is not echoed


def test_mistakes_of_a_one_line_session_are_in_order_of_position(tmp_path):
    # JSONL: every field is on line 1, so the order is the place in the text: payer, services[0], services[1]
    text = json.dumps({"session_id": "J", "payer": "", "services": [{"code": "97110", "minutes": "30"},
                                                                     {"code": "9711", "minutes": 5}]}) + "\n"
    path = write(tmp_path, text, "one.jsonl")
    proc = run_bill(path, "--format", "jsonl")
    record = single_error_record(proc)
    assert record["error"] == "; ".join([
        f"{path}:1: payer: must not be empty",
        f"{path}:1: services[0].minutes: text in quotes; write the number without quotes",
        f"{path}:1: services[1].code: value is not a CPT/HCPCS code (five characters, like 97110 or G0283)"])


def test_a_hostile_session_makes_a_bounded_record(tmp_path):
    # 200 services (the most allowed), each with a negative minute count: 20 listed, then "and 180 more"
    services = [{"code": "97110", "minutes": -1} for _ in range(200)]
    path = write(tmp_path, json.dumps({"session_id": "H", "payer": "medicare", "services": services}) + "\n",
                 "h.jsonl")
    record = single_error_record(run_bill(path, "--format", "jsonl"))
    parts = record["error"].split("; ")
    assert parts[:20] == [f"{path}:1: services[{i}].minutes: must be at least 0" for i in range(20)]
    assert parts[20:] == ["and 180 more"]


def test_a_session_of_many_unknown_keys_is_counted_not_explained():
    # 50,000 unknown keys: 20 listed, the rest counted (only MAX_GATHERED are given a "did you mean"
    # and a position, so this costs about what a valid session of that size does)
    from engine.sessions import parse_session
    from engine.yamlload import Located
    data = {"session_id": "H", "services": [{"code": "97110", "minutes": 5}], **{f"k{i}": i for i in range(50_000)}}
    error = parse_session(data, Located(data, {(): 1}, "h.jsonl"), (), 1)
    assert len(error.errors) == 20 and error.unlisted == 50_000 - 20
    assert error.lines()[-1] == "and 49980 more"


@pytest.mark.parametrize("written, message", [
    ("2026-3-2", "not a date like 2026-03-02"),
    ("20260302", "not a date like 2026-03-02"),
    ('"March 2, 2026"', "not a date like 2026-03-02"),
    ("2026-02-30", "not a real date"),          # the right form, but February has 28 days in 2026
    ("2026-13-01", "not a real date"),
])
def test_a_bad_date_is_said_in_words(tmp_path, written, message):
    path = write(tmp_path, edit("date_of_service: 2026-03-02", f"date_of_service: {written}"))      # line 3
    proc = run_bill(path)
    assert single_error_record(proc)["error"] == f"{path}:3: date_of_service: {message}"
    assert "[0-9]" not in proc.stderr and "YYYY" not in proc.stderr


def test_a_quoted_number_is_named_as_such(tmp_path):
    path = write(tmp_path, edit("minutes: 33", 'minutes: "33"'))        # line 7
    proc = run_bill(path)
    assert single_error_record(proc)["error"] == \
        f"{path}:7: services[0].minutes: text in quotes; write the number without quotes"


def test_a_tab_in_a_session_file_is_named(tmp_path):
    path = write(tmp_path, edit("    minutes: 33", "\tminutes: 33"))    # line 7
    proc = run_bill(path)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0] == f"error: {path}:7: a tab character; indent YAML with spaces"


@pytest.mark.parametrize("args, message", [
    (["bill", "examples/ot-session.yaml", "--date", "2026-3-2"],
     "argument --date: '2026-3-2' is not a date like 2026-03-02"),
    (["bill", "examples/ot-session.yaml", "--date", "2026-02-30"],
     "argument --date: '2026-02-30' is not a real date"),
    (["audit", "x.db", "--from", "20260101"], "argument --from: '20260101' is not a date like 2026-03-02"),
    (["audit", "x.db", "--to", "2026-04-31"], "argument --to: '2026-04-31' is not a real date"),
])
def test_command_line_dates_in_words(args, message):
    proc = subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2
    assert message in proc.stderr and "YYYY" not in proc.stderr, proc.stderr


# --- harness: k independent mistakes are k errors, each at its path and line -------------------------------

from hypothesis import given, settings, strategies as st  # noqa: E402

from engine.errors import SessionError  # noqa: E402
from engine.sessions import SessionInput  # noqa: E402

N_SERVICES = 4
# A valid session, one field a line: line 1 session_id, 2 payer, 3 date, 4 discipline, 5 context,
# 6 services:, then service i on lines 7+3i (code), 8+3i (minutes), 9+3i (provider).
BASE = ["session_id: S-1", "payer: medicare", "date_of_service: 2026-03-02", "discipline: PT", "context: {a: 1}",
        "services:"] + [f for i in range(N_SERVICES)
                        for f in ('  - code: "97110"', f"    minutes: {10 + i}", "    provider: PT")]
# Mistakes by place: (line index in BASE, that line with the mistake, path of the error). Each is one
# mistake a person makes, reported as one error at its own line and path.
TOP = {
    "payer": [(1, 'payer: ""', "payer"), (1, "payer: [medicare]", "payer")],
    "date": [(2, "date_of_service: 2026-3-2", "date_of_service"), (2, "date_of_service: 2026-02-30", "date_of_service"),
             (2, "date_of_servce: 2026-03-02", "date_of_servce")],
    "discipline": [(3, "disipline: PT", "disipline"), (3, "discipline: PX", "discipline")],
    "context": [(4, "context: 5", "context"), (4, "contxt: {a: 1}", "contxt")],
}
SERVICE = [     # (offset of the line within the service, the line, the field of the path)
    (0, '  - code: "9711"', "code"), (0, '  - cod: "97110"', "cod"), (1, "    minutes: -3", "minutes"),
    (1, '    minutes: "30"', "minutes"), (1, "    minuts: 30", "minuts"), (1, "    minutes: 1441", "minutes"),
    (2, "    provider: PX", "provider"), (2, "    provder: PT", "provder"), (2, "    group_size: -1", "group_size"),
    # wrong on two counts of the schema (type and range), one mistake: one error
    (0, "  - code: 5.5", "code"), (2, "    group_size: -1.5", "group_size"),
]
PLACES = sorted(TOP) + [f"services[{i}]" for i in range(N_SERVICES)]


def _mistake(place: str, choice: int):
    if place in TOP:
        options = TOP[place]
        return options[choice % len(options)]
    i = int(place[len("services["):-1])
    offset, line, field = SERVICE[choice % len(SERVICE)]
    return 6 + 3 * i + offset, line, f"{place}.{field}"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(PLACES), st.integers(0, 99)), min_size=1, max_size=4,
                unique_by=lambda m: m[0]),
       st.booleans())
def test_k_mistakes_are_k_errors_each_at_its_place(tmp_path_factory, mistakes, as_json):
    lines = list(BASE)
    expected = []
    for place, choice in mistakes:
        index, text, path = _mistake(place, choice)
        lines[index] = text
        expected.append((index + 1, path))
    folder = tmp_path_factory.mktemp("k")
    if as_json:         # the same session on one JSONL line: every error on line 1, in order of place
        import yaml
        path = folder / "s.jsonl"
        data = yaml.safe_load("\n".join(lines).replace("2026-02-30", '"2026-02-30"'))
        path.write_text(json.dumps(data, default=str) + "\n")          # default: a YAML date as its text
        expected = [(1, p) for _, p in sorted(expected)]      # (the order of lines is the order of places)
    else:
        path = folder / "s.yaml"
        path.write_text("\n".join(lines) + "\n")
        expected.sort()
    items = list(SessionInput(str(path)))
    assert len(items) == 1 and isinstance(items[0], SessionError), items
    found = items[0].errors or (items[0],)
    assert [(e.line, e.path) for e in found] == expected, items[0].lines()
    assert items[0].unlisted == 0 and all(e.message and "\n" not in e.message for e in found)
    assert len(str(items[0]).split("; ")) >= len(expected)
