"""The command line as a user and a script see it (shared/design.md §3 and §5, CONTRACT).

Every test runs `python -m engine` as a subprocess from the repository root. Expected units are worked
by hand from the CMS 8-minute chart (8-22 min = 1 unit, 23-37 = 2, 38-52 = 3, 53-67 = 4) and the
leftover-minute allocation of rules/medicare.yaml (larger leftover first; ties by minutes, then order).
"""
from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
MEDICARE = ROOT / "rules" / "medicare.yaml"
RESULT_VALIDATOR = Draft202012Validator(json.loads((ROOT / "schemas" / "result.schema.json").read_text("utf-8")))


def run_cli(*args, stdin: str | None = None) -> subprocess.CompletedProcess:
    """`python -m engine ARGS...` from the repository root."""
    return subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, input=stdin, timeout=300)


def no_traceback(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr


def schema_errors(record) -> list:
    return [e.message for e in RESULT_VALIDATOR.iter_errors(record)]


def units_of(result: dict) -> dict:
    return {line["code"]: line["units"] for line in result["lines"]}


def durable_available() -> bool:
    try:
        import durable_rules_engine  # noqa: F401
    except ImportError:
        return False
    return True


def write_yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


# Worked by hand for each single-session example (session id, {code: units}, {code: minutes}, modifier,
# total timed minutes, total timed units, total units).
SINGLE_EXAMPLES = {
    # 97110 33 + 97140 7 + 97535 20 = 60 timed min -> 4 units. Full units: 97110 2 (3 left), 97535 1
    # (5 left), 97140 0 (7 left); the 1 remaining unit goes to the largest leftover, 97140. OT -> GO.
    "ot-session.yaml": ("OT-2026-0302-01", {"97110": 2, "97140": 1, "97535": 1},
                        {"97110": 33, "97140": 7, "97535": 20}, "GO", 60, 4, 4),
    # 97162 is an evaluation: 1 unit, out of the pool. Pool: 97116 10 + 97110 (15+8=23, merged) = 33 min
    # -> 2 units. Full units: 97110 1 (8 left), 97116 0 (10 left) -> remaining unit to 97116. PT -> GP.
    "pt-evaluation.yaml": ("PT-2026-0302-07", {"97162": 1, "97116": 1, "97110": 1},
                           {"97162": 30, "97116": 10, "97110": 23}, "GP", 33, 2, 3),
    # 97150 group: 1 unit whatever its length, out of the pool. 97530 25 min -> 2 units. PT -> GP.
    "group-session.yaml": ("PT-2026-0303-02", {"97150": 1, "97530": 2}, {"97150": 45, "97530": 25}, "GP", 25, 2, 3),
}

# batch.jsonl, worked by hand:
# SLP-1: 92507 untimed -> 1; 97129 40 min is the cognitive family, one pooled service: 40 min -> 3 units,
#        split 97129 x1 + 97130 x2 (the add-on line is created). SLP -> GN. Total 4.
# PT-9:  97112 20 + 97110 20 = 40 min -> 3 units; 1 full unit each, 5 min left each: a tie; tie_break
#        [minutes, order, code]: equal minutes, so order -> 97112 (entered first) gets it. PT -> GP. Total 3.
BATCH = [("SLP-1", {"92507": 1, "97129": 1, "97130": 2}, "GN", 4),
         ("PT-9", {"97112": 2, "97110": 1}, "GP", 3)]


def medicare_rule_ids() -> set:
    return {rule["id"] for rule in yaml.safe_load(MEDICARE.read_text("utf-8"))["rules"]}


def ot_session() -> dict:
    return yaml.safe_load((EXAMPLES / "ot-session.yaml").read_text("utf-8"))


# --- bill --format json -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SINGLE_EXAMPLES))
def test_bill_json_single_session_file_gives_one_valid_object(name):
    session_id, units, minutes, modifier, timed_min, timed_units, total = SINGLE_EXAMPLES[name]
    proc = run_cli("bill", f"examples/{name}", "--format", "json")
    no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert isinstance(result, dict)
    assert schema_errors(result) == []
    assert result["session_id"] == session_id
    assert result["payer"] == "medicare"
    assert result["method"] == "cms_8_minute"
    # one line per code, in order of first appearance in the input
    assert [line["code"] for line in result["lines"]] == list(units)
    assert units_of(result) == units
    assert {line["code"]: line["minutes"] for line in result["lines"]} == minutes
    assert all(line["modifiers"] == [modifier] for line in result["lines"])
    assert result["unbilled"] == []
    assert result["total_timed_minutes"] == timed_min
    assert result["total_timed_units"] == timed_units
    assert result["total_units"] == total
    assert not [w for w in result["warnings"] if w["severity"] == "error"]


def test_bill_json_jsonl_file_gives_a_list():
    proc = run_cli("bill", "examples/batch.jsonl", "--format", "json")
    no_traceback(proc)
    assert proc.returncode == 0, proc.stderr      # PT-9 has an info (tie) message only
    results = json.loads(proc.stdout)
    assert isinstance(results, list) and len(results) == 2
    for result, (session_id, units, modifier, total) in zip(results, BATCH):
        assert schema_errors(result) == []
        assert result["session_id"] == session_id
        assert units_of(result) == units
        assert [line["code"] for line in result["lines"]] == list(units)
        assert all(line["modifiers"] == [modifier] for line in result["lines"])
        assert result["total_units"] == total
    assert results[0]["total_timed_minutes"] == 40 and results[0]["total_timed_units"] == 3
    tie = [w for w in results[1]["warnings"] if w["severity"] == "info"]
    assert tie and set(tie[0]["codes"]) == {"97112", "97110"}


def test_bill_json_single_line_jsonl_still_gives_a_list(tmp_path):
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps(ot_session(), default=str) + "\n", encoding="utf-8")
    proc = run_cli("bill", path, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert isinstance(results, list) and len(results) == 1
    assert schema_errors(results[0]) == []
    assert units_of(results[0]) == {"97110": 2, "97140": 1, "97535": 1}


def test_bill_json_yaml_list_gives_a_list(tmp_path):
    path = write_yaml(tmp_path / "list.yaml", [ot_session()])
    proc = run_cli("bill", path, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert isinstance(results, list) and len(results) == 1
    assert schema_errors(results[0]) == []
    assert results[0]["session_id"] == "OT-2026-0302-01"


def test_bill_default_ids_are_session_n_by_position(tmp_path):
    first, second = ot_session(), ot_session()
    del first["session_id"], second["session_id"]
    path = write_yaml(tmp_path / "noids.yaml", [first, second])
    proc = run_cli("bill", path, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert [r["session_id"] for r in json.loads(proc.stdout)] == ["session-1", "session-2"]


# --- other formats ------------------------------------------------------------------------------------

def _row_tokens(text: str, code: str) -> list:
    """Token sets of the table lines that show `code` as a token."""
    rows = []
    for line in text.splitlines():
        tokens = set(re.split(r"[\s,|;:\[\]()]+", line.strip()))
        if code in tokens:
            rows.append(tokens)
    return rows


@pytest.mark.parametrize("name", sorted(SINGLE_EXAMPLES))
def test_bill_table_shows_code_minutes_units_and_modifier(name):
    session_id, units, minutes, modifier, _, _, total = SINGLE_EXAMPLES[name]
    proc = run_cli("bill", f"examples/{name}", "--format", "table")
    no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    assert session_id in proc.stdout
    for code, n in units.items():
        rows = _row_tokens(proc.stdout, code)
        assert any({code, str(minutes[code]), str(n), modifier} <= row for row in rows), (code, proc.stdout)
    assert str(total) in proc.stdout
    assert not proc.stdout.lstrip().startswith(("{", "["))     # not JSON


def test_bill_table_shows_warnings():
    # batch.jsonl: PT-9 has an info message from timed-pool about the tie between 97112 and 97110.
    proc = run_cli("bill", "examples/batch.jsonl", "--format", "table")
    assert proc.returncode == 0, proc.stderr
    info = [l for l in proc.stdout.splitlines() if re.search(r"\binfo\b", l, re.I) and "timed-pool" in l]
    assert info, proc.stdout
    assert "97112" in info[0] and "97110" in info[0]
    assert "SLP-1" in proc.stdout and "PT-9" in proc.stdout


def test_bill_table_shows_warning_severity(tmp_path):
    # No discipline: rule discipline-missing warns (severity "warning"), no modifier is added.
    session = ot_session()
    del session["discipline"]
    path = write_yaml(tmp_path / "nodisc.yaml", session)
    proc = run_cli("bill", path, "--format", "table")
    assert proc.returncode == 0, proc.stderr
    lines = [l for l in proc.stdout.splitlines() if "discipline-missing" in l]
    assert lines and re.search(r"\bwarning\b", lines[0], re.I), proc.stdout
    assert all("GO" not in row for code in ("97110", "97140", "97535") for row in _row_tokens(proc.stdout, code))


def test_bill_jsonl_one_object_per_line():
    proc = run_cli("bill", "examples/batch.jsonl", "--format", "jsonl")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2
    records = [json.loads(line) for line in lines]
    for record, (session_id, units, _, _) in zip(records, BATCH):
        assert schema_errors(record) == []
        assert record["session_id"] == session_id
        assert units_of(record) == units


def test_bill_jsonl_single_session_is_one_line():
    proc = run_cli("bill", "examples/ot-session.yaml", "--format", "jsonl")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1
    assert units_of(json.loads(lines[0])) == {"97110": 2, "97140": 1, "97535": 1}


def test_bill_csv_header_and_one_row_per_billed_line():
    proc = run_cli("bill", "examples/ot-session.yaml", "--format", "csv")
    no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.reader(io.StringIO(proc.stdout)))
    header = rows[0]
    assert {"session_id", "code", "minutes", "units"} <= set(header)
    data = [dict(zip(header, row)) for row in rows[1:]]
    # ot-session has no warnings and nothing unbilled: exactly its three billed lines
    assert len(data) == 3
    assert [(r["session_id"], r["code"], r["minutes"], r["units"]) for r in data] == [
        ("OT-2026-0302-01", "97110", "33", "2"),
        ("OT-2026-0302-01", "97140", "7", "1"),
        ("OT-2026-0302-01", "97535", "20", "1"),
    ]
    if "modifiers" in header:
        assert all(r["modifiers"] == "GO" for r in data)


def test_bill_csv_several_sessions():
    proc = run_cli("bill", "examples/batch.jsonl", "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    reader = csv.DictReader(io.StringIO(proc.stdout))
    rows = list(reader)
    billed = {(r["session_id"], r["code"]): r["units"] for r in rows if r["units"] not in ("", "0")}
    expected = {(sid, code): str(n) for sid, units, _, _ in BATCH for code, n in units.items()}
    assert billed == expected


# --- payers: --payer, unknown payers, no payer ----------------------------------------------------------

TEST_PAYER = """\
payer: testpayer
name: Test payer
method:
  name: cms_8_minute
codes:
  timed_15: [97110, 97140, 97535]
rules:
  - id: timed-pool
    description: Timed codes share the pool.
    source: "test"
    when:
      line: {code_in: timed_15}
    then:
      - timed_units: true
"""


def test_payer_option_overrides_session_payer(tmp_path):
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "testpayer.yaml").write_text(TEST_PAYER, encoding="utf-8")
    # ot-session.yaml says payer: medicare; --payer testpayer wins. testpayer has no modifier rules.
    proc = run_cli("bill", "examples/ot-session.yaml", "--rules", extra, "--payer", "testpayer")
    no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert schema_errors(result) == []
    assert result["payer"] == "testpayer"
    assert units_of(result) == {"97110": 2, "97140": 1, "97535": 1}
    assert all(line["modifiers"] == [] for line in result["lines"])
    assert all(t["source"].startswith("extra/testpayer.yaml:") for t in result["trace"])


def test_payer_option_rescues_a_session_with_an_unknown_payer(tmp_path):
    session = ot_session()
    session["payer"] = "acme-health"
    path = write_yaml(tmp_path / "acme.yaml", session)
    proc = run_cli("bill", path, "--payer", "medicare")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["payer"] == "medicare"
    assert units_of(result) == {"97110": 2, "97140": 1, "97535": 1}


def test_unknown_payer_option_is_a_usage_error():
    proc = run_cli("bill", "examples/ot-session.yaml", "--payer", "nosuchpayer")
    no_traceback(proc)
    assert proc.returncode == 2
    assert "nosuchpayer" in proc.stderr
    assert proc.stderr.startswith("error:")
    assert proc.stdout == ""


def test_session_with_unknown_payer_gives_error_record_in_its_place(tmp_path):
    bad = ot_session()
    bad["session_id"] = "BAD-1"
    bad["payer"] = "acme-health"
    group = yaml.safe_load((EXAMPLES / "group-session.yaml").read_text("utf-8"))
    path = write_yaml(tmp_path / "three.yaml", [ot_session(), bad, group])
    proc = run_cli("bill", path, "--format", "json")
    no_traceback(proc)
    assert proc.returncode == 1
    results = json.loads(proc.stdout)
    assert len(results) == 3
    assert all(schema_errors(r) == [] for r in results)
    assert set(results[1]) == {"session_id", "error"}
    assert results[1]["session_id"] == "BAD-1"
    assert "acme-health" in results[1]["error"]
    assert units_of(results[0]) == {"97110": 2, "97140": 1, "97535": 1}
    assert units_of(results[2]) == {"97150": 1, "97530": 2}
    assert "BAD-1" in proc.stderr and "acme-health" in proc.stderr


def test_session_without_any_payer_gives_error_record(tmp_path):
    session = ot_session()
    del session["payer"]
    path = write_yaml(tmp_path / "nopayer.yaml", session)
    proc = run_cli("bill", path, "--format", "json")
    no_traceback(proc)
    assert proc.returncode == 1
    record = json.loads(proc.stdout)
    assert set(record) == {"session_id", "error"}
    assert record["session_id"] == "OT-2026-0302-01"
    assert "payer" in record["error"].replace(str(path), "")
    assert "OT-2026-0302-01" in proc.stderr


# --- dates ----------------------------------------------------------------------------------------------

def test_date_before_medicare_effective_from_gives_error_record():
    # rules/medicare.yaml: effective_from 2000-04-01, so 2000-03-31 has no version in effect
    proc = run_cli("bill", "examples/ot-session.yaml", "--date", "2000-03-31")
    no_traceback(proc)
    assert proc.returncode == 1
    record = json.loads(proc.stdout)
    assert set(record) == {"session_id", "error"}
    assert "no version in effect" in record["error"]


def test_date_on_medicare_effective_from_is_billed():
    proc = run_cli("bill", "examples/ot-session.yaml", "--date", "2000-04-01")
    assert proc.returncode == 0, proc.stderr
    assert units_of(json.loads(proc.stdout)) == {"97110": 2, "97140": 1, "97535": 1}


def test_session_date_before_effective_from_gives_error_record(tmp_path):
    session = ot_session()
    session["date_of_service"] = "1999-12-31"
    path = write_yaml(tmp_path / "old.yaml", session)
    proc = run_cli("bill", path)
    assert proc.returncode == 1
    record = json.loads(proc.stdout)
    assert set(record) == {"session_id", "error"} and "no version in effect" in record["error"]


def test_malformed_date_option_is_a_usage_error():
    proc = run_cli("bill", "examples/ot-session.yaml", "--date", "2026-02-30")
    no_traceback(proc)
    assert proc.returncode == 2
    assert proc.stdout == ""


# --- standard input, engines, determinism, exit codes ---------------------------------------------------

def test_bill_reads_standard_input():
    text = (EXAMPLES / "ot-session.yaml").read_text("utf-8")
    proc = run_cli("bill", "-", "--format", "json", stdin=text)
    no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert isinstance(result, dict)
    assert result["session_id"] == "OT-2026-0302-01"
    assert units_of(result) == {"97110": 2, "97140": 1, "97535": 1}
    assert proc.stdout == run_cli("bill", "examples/ot-session.yaml", "--format", "json").stdout


def test_bill_reads_jsonl_from_standard_input():
    text = (EXAMPLES / "batch.jsonl").read_text("utf-8")
    proc = run_cli("bill", "-", "--format", "json", stdin=text)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert [r["session_id"] for r in results] == ["SLP-1", "PT-9"]
    assert [units_of(r) for r in results] == [units for _, units, _, _ in BATCH]


@pytest.mark.skipif(not durable_available(), reason="durable-rules is not installed")
@pytest.mark.parametrize("name", sorted(SINGLE_EXAMPLES) + ["batch.jsonl"])
@pytest.mark.parametrize("fmt", ["json", "table"])
def test_engines_give_identical_output(name, fmt):
    python = run_cli("bill", f"examples/{name}", "--format", fmt, "--engine", "python")
    durable = run_cli("bill", f"examples/{name}", "--format", fmt, "--engine", "durable")
    assert python.returncode == durable.returncode == 0, (python.stderr, durable.stderr)
    assert python.stdout and python.stdout == durable.stdout


@pytest.mark.skipif(not durable_available(), reason="durable-rules is not installed")
def test_engines_identical_on_errors_and_warnings(tmp_path):
    sessions = [
        {"session_id": "E1", "payer": "medicare", "discipline": "PT",
         "services": [{"code": "97150", "minutes": 30, "group_size": 1}, {"code": "97110", "minutes": 8}]},
        {"session_id": "E2", "payer": "medicare", "services": [{"code": "97130", "minutes": 15}]},
        {"session_id": "E3", "payer": "medicare", "services": [{"code": "97111", "minutes": 15}]},
    ]
    path = write_yaml(tmp_path / "mixed.yaml", sessions)
    python = run_cli("bill", path, "--engine", "python")
    durable = run_cli("bill", path, "--engine", "durable")
    assert python.returncode == durable.returncode == 1
    assert python.stdout == durable.stdout
    assert python.stderr == durable.stderr


@pytest.mark.parametrize("fmt", ["json", "table", "csv", "jsonl"])
def test_output_is_byte_identical_across_runs(fmt):
    args = ("bill", "examples/ot-session.yaml", "examples/pt-evaluation.yaml", "examples/group-session.yaml",
            "examples/batch.jsonl", "--format", fmt)
    first, second = run_cli(*args), run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout and first.stdout == second.stdout


def test_exit_0_with_info_and_warning_messages(tmp_path):
    session = ot_session()
    del session["discipline"]           # discipline-missing: severity "warning"
    path = write_yaml(tmp_path / "warn.yaml", session)
    proc = run_cli("bill", path)
    assert proc.returncode == 0, proc.stderr
    severities = {w["severity"] for w in json.loads(proc.stdout)["warnings"]}
    assert severities == {"warning"}
    # batch.jsonl: an info message (the PT-9 tie) only
    proc = run_cli("bill", "examples/batch.jsonl")
    assert proc.returncode == 0, proc.stderr
    assert {w["severity"] for r in json.loads(proc.stdout) for w in r["warnings"]} == {"info"}


def test_exit_1_when_a_session_has_an_error_severity_warning(tmp_path):
    # group-size: 97150 with group_size 1 is an error and is not billed; 97110 8 min -> 1 unit still billed
    session = {"session_id": "G-1", "payer": "medicare", "discipline": "PT",
               "services": [{"code": "97150", "minutes": 30, "group_size": 1}, {"code": "97110", "minutes": 8}]}
    path = write_yaml(tmp_path / "group1.yaml", session)
    proc = run_cli("bill", path)
    no_traceback(proc)
    assert proc.returncode == 1
    result = json.loads(proc.stdout)
    assert "error" not in result and schema_errors(result) == []
    assert units_of(result) == {"97110": 1}
    assert [u["code"] for u in result["unbilled"]] == ["97150"]
    errors = [w for w in result["warnings"] if w["severity"] == "error"]
    assert errors and errors[0]["rule"] == "group-size" and errors[0]["codes"] == ["97150"]
    assert "G-1" in proc.stderr and "group-size" in proc.stderr


def test_exit_1_when_one_of_several_sessions_fails(tmp_path):
    bad = {"session_id": "U-1", "payer": "medicare", "services": [{"code": "97111", "minutes": 15}]}
    path = write_yaml(tmp_path / "mix.yaml", [ot_session(), bad])
    proc = run_cli("bill", path)
    assert proc.returncode == 1
    results = json.loads(proc.stdout)
    assert units_of(results[0]) == {"97110": 2, "97140": 1, "97535": 1}


# --- payers, validate, trace ----------------------------------------------------------------------------

def test_payers_json_matches_the_contract():
    proc = run_cli("payers", "--format", "json")
    no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    listing = json.loads(proc.stdout)
    assert isinstance(listing, list)
    keys = {"id", "name", "method", "file", "extends", "effective_from", "effective_to"}
    assert all(set(entry) == keys for entry in listing)
    medicare = [entry for entry in listing if entry["id"] == "medicare"]
    assert len(medicare) == 1
    source = yaml.safe_load(MEDICARE.read_text("utf-8"))
    assert medicare[0] == {"id": "medicare", "name": source["name"], "method": "cms_8_minute",
                           "file": "rules/medicare.yaml", "extends": None, "effective_from": "2000-04-01",
                           "effective_to": None}


def test_payers_lists_extra_rules_trees(tmp_path):
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "testpayer.yaml").write_text(TEST_PAYER, encoding="utf-8")
    proc = run_cli("payers", "--format", "json", "--rules", extra)
    assert proc.returncode == 0, proc.stderr
    entries = {entry["id"]: entry for entry in json.loads(proc.stdout)}
    assert entries["testpayer"]["file"] == "extra/testpayer.yaml"
    assert entries["testpayer"]["name"] == "Test payer"
    assert "medicare" in entries


def test_payers_table_names_medicare():
    proc = run_cli("payers")
    assert proc.returncode == 0, proc.stderr
    assert "medicare" in proc.stdout and "rules/medicare.yaml" in proc.stdout


def test_validate_without_arguments_checks_bundled_payers():
    proc = run_cli("validate")
    no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    assert "rules/medicare.yaml" in proc.stdout
    assert "error:" not in proc.stderr


def test_validate_named_file():
    proc = run_cli("validate", "rules/medicare.yaml")
    assert proc.returncode == 0, proc.stderr
    assert "error:" not in proc.stderr


def test_validate_missing_path_is_usage_error(tmp_path):
    proc = run_cli("validate", tmp_path / "nope.yaml")
    no_traceback(proc)
    assert proc.returncode == 2
    assert "nope.yaml" in proc.stderr


@pytest.mark.parametrize("name", sorted(SINGLE_EXAMPLES) + ["batch.jsonl"])
def test_trace_sources_point_at_rule_definitions(name):
    proc = run_cli("bill", f"examples/{name}", "--format", "jsonl")
    assert proc.returncode == 0, proc.stderr
    file_lines = MEDICARE.read_text("utf-8").splitlines()
    ids = medicare_rule_ids()
    for record in map(json.loads, proc.stdout.splitlines()):
        assert record["trace"]
        for entry in record["trace"]:
            match = re.fullmatch(r"rules/medicare\.yaml:(\d+)", entry["source"])
            assert match, entry["source"]
            assert entry["rule"] in ids
            # the line a source points at is the definition (`- id: <rule>`) of that rule
            assert file_lines[int(match.group(1)) - 1].strip() == f"- id: {entry['rule']}"
        used = {r for line in record["lines"] for r in line["rules"]} | {w["rule"] for w in record["warnings"]}
        assert used <= ids


def test_no_command_is_a_usage_error():
    proc = run_cli()
    no_traceback(proc)
    assert proc.returncode == 2


@pytest.mark.parametrize("argv", [
    [], ["frob"], ["bill"], ["bill", "x.jsonl", "--jobs", "0"], ["bill", "x.jsonl", "--format", "xml\x1b[2J"],
    ["bill", "x.jsonl", "--date", "2026-13-01"], ["bill", "x.jsonl", "--no-such-option"], ["audit"],
])
def test_command_line_mistakes_are_one_error_line(argv):
    # like every other error: one `error: ` line on stderr (no usage block, no argparse prefix), text
    # from the command line escaped, exit 2
    proc = run_cli(*argv)
    no_traceback(proc)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "\x1b" not in proc.stderr


def test_missing_input_file_is_a_usage_error(tmp_path):
    proc = run_cli("bill", tmp_path / "absent.yaml")
    no_traceback(proc)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error:") and "absent.yaml" in proc.stderr


# --- explain --why-not: a rule of the payer not in effect on the date is not a usage error -----------------

DATED_PAYER = TEST_PAYER.replace("payer: testpayer", "payer: dated") + """\
  - id: late-rule
    description: From 2027 on, 97140 is held.
    source: "test"
    effective_from: 2027-01-01
    when:
      line: {code: 97140}
    then:
      - hold: "not from 2027"
"""


def test_why_not_rule_out_of_effect_is_explained_not_refused(tmp_path):
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "dated.yaml").write_text(DATED_PAYER, encoding="utf-8")
    session = dict(ot_session(), payer="dated", date_of_service="2026-03-02")
    path = write_yaml(tmp_path / "dated-session.yaml", session)
    proc = run_cli("explain", path, "--rules", extra, "--why-not", "late-rule")
    no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    assert "Why not late-rule: payer dated has no rule 'late-rule' in effect for this session" in proc.stdout
    # in effect on a 2027 date: it fired on 97140
    proc = run_cli("explain", path, "--rules", extra, "--why-not", "late-rule", "--date", "2027-03-01")
    assert proc.returncode == 0, proc.stderr
    assert "Why not late-rule (extra/dated.yaml:" in proc.stdout and "fired 1 time" in proc.stdout
    # not a rule of this payer in any version: a usage error, checked against every session's payer
    proc = run_cli("explain", path, "examples/ot-session.yaml", "--rules", extra, "--why-not", "late-rule")
    no_traceback(proc)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "payer medicare has no rule 'late-rule'" in proc.stderr
