"""`payrules compare`: one session under several payers, side by side (shared/design.md §3 and §5, CONTRACT).

Every test runs `python -m engine compare ...` as a subprocess from the repository root, with its session
files in tmp_path. Expected units are worked by hand in comments from shared/domain.md:

- Medicare (`cms_8_minute`, §3): N = chart(total timed minutes), chart 8-22 = 1, 23-37 = 2, 38-52 = 3,
  53-67 = 4, i.e. (T + 7) // 15 for T >= 8; each code first gets minutes // 15 full units, the N - F units
  left go one each to the codes with the largest leftover (minutes % 15); ties by larger minutes, then
  order entered (rules/medicare.yaml tie_break).
- example-midpoint (`midpoint_per_code`, §4): each code alone, (m + 7) // 15 for m >= 8, else 0.
- example-full-unit: each code alone, one unit per full 15 minutes (first_unit_minutes 15): m // 15;
  only its own code lists (no 97129/97130, no 97139).
- example-unit-limits: Medicare, plus 97140 at most 3 units/day through 2025, 2 from 2026; 97139/97039
  not covered.
- 97129/97130 (§7): the family's minutes give n units by the active method → 97129 x1 + 97130 x(n - 1).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parent.parent
RESULT_VALIDATOR = Draft202012Validator(json.loads((ROOT / "schemas" / "result.schema.json").read_text("utf-8")))
CONTRACT_KEYS = {"session_id", "payers", "results", "rows", "totals"}
OPTIONAL_KEYS = {"differs", "base", "modifiers_differ", "counters_differ"}
EX_PAYERS = ["medicare", "example-midpoint", "example-full-unit"]


def durable_available() -> bool:
    try:
        import durable_rules_engine  # noqa: F401
    except ImportError:
        return False
    return True


def run_cli(*args, columns: int = 120) -> subprocess.CompletedProcess:
    """`python -m engine ARGS...` from the repository root; table text wrapped to `columns`."""
    return subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "COLUMNS": str(columns)})


def no_traceback(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr


def write_yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def session(sid, services, date="2025-06-01", discipline="PT") -> dict:
    data = {"session_id": sid}
    if date:
        data["date_of_service"] = date
    if discipline:
        data["discipline"] = discipline
    data["services"] = [{"code": code, "minutes": minutes} for code, minutes in services]
    return data


# CMS §20.2 Example 1: 97112 24 + 97110 23.
#   medicare: T = 47 → chart 38-52 = 3. Full units 24//15 = 1, 23//15 = 1 → F = 2; leftovers 9 and 8,
#             the 1 unit left goes to 97112 (9 > 8) → 97112 x2, 97110 x1, total 3.
#   example-midpoint: (24+7)//15 = 2, (23+7)//15 = 2 → total 4 (one MORE than medicare).
#   example-full-unit: 24//15 = 1, 23//15 = 1 → total 2 (one FEWER than medicare).
EX1 = session("EX1", [("97112", 24), ("97110", 23)])
# CMS §20.2 Example 5: 97112 7 + 97110 7 + 97140 7.
#   medicare: T = 21 → chart 8-22 = 1. F = 0; leftovers 7, 7, 7 tie, minutes tie → order entered →
#             97112 x1; total 1.
#   example-midpoint: 7 < 8 for each code → 0.   example-full-unit: 7//15 = 0 each → 0.
EX5 = session("EX5", [("97112", 7), ("97110", 7), ("97140", 7)])
# Three codes of 10 minutes (domain.md §4.1, Gawenda).
#   medicare: T = 30 → chart 23-37 = 2; F = 0; leftovers 10, 10, 10 tie → first two entered:
#             97110 x1, 97112 x1, 97140 x0; total 2.
#   example-midpoint: (10+7)//15 = 1 each → 3.   example-full-unit: 10//15 = 0 each → 0.
TEN3 = session("TEN3", [("97110", 10), ("97112", 10), ("97140", 10)])
# 97140 50 min alone (dated 2025).
#   medicare / example-unit-limits (limit 3 in 2025) / example-midpoint: (50+7)//15 = 3.
#   example-full-unit: 50//15 = 3.
MT2025 = session("MT", [("97140", 50)])


def compare(tmp_path, data, payers, *extra, name="s.yaml"):
    """Write the session(s), run compare --format json; (proc, parsed stdout or None, path)."""
    path = write_yaml(tmp_path / name, data)
    which = ["--all-payers"] if payers is None else ["--payers", ",".join(payers)]
    proc = run_cli("compare", path, *which, "--format", "json", *extra)
    no_traceback(proc)
    parsed = json.loads(proc.stdout) if proc.stdout.strip() else None
    return proc, parsed, path


def bill_json(path, payer, *extra):
    proc = run_cli("bill", path, "--payer", payer, "--format", "json", *extra)
    no_traceback(proc)
    return json.loads(proc.stdout)


def check_contract(c: dict, payers: list) -> None:
    """The contract shape of one session's comparison, and its internal consistency."""
    assert CONTRACT_KEYS <= set(c) <= CONTRACT_KEYS | OPTIONAL_KEYS, sorted(c)
    assert c["payers"] == payers
    assert set(c["results"]) == set(payers)
    assert set(c["totals"]) == set(payers)
    for pid in payers:
        result = c["results"][pid]
        errors = [e.message for e in RESULT_VALIDATOR.iter_errors(result)]
        assert errors == [], (pid, errors)
        assert result["session_id"] == c["session_id"]
        if "error" in result:
            assert c["totals"][pid] is None
        else:
            assert result["payer"] == pid
            assert c["totals"][pid] == result["total_units"]
    for row in c["rows"]:
        assert set(row) == {"code", "minutes", "units", "modifiers"}, row
        assert set(row["units"]) == set(payers), row
        for pid in payers:
            result = c["results"][pid]
            if "error" in result:
                assert row["units"][pid] is None, (pid, row)
            else:
                billed: dict = {}
                for line in result["lines"]:        # a code's units over its lines (one per modifier set)
                    billed[line["code"]] = billed.get(line["code"], 0) + line["units"]
                assert row["units"][pid] == billed.get(row["code"], 0), (pid, row)
                assert row["modifiers"][pid] == [{"modifiers": line["modifiers"], "units": line["units"]}
                                                 for line in result["lines"] if line["code"] == row["code"]]
    # every billed line of every payer has its row
    codes = [row["code"] for row in c["rows"]]
    assert len(codes) == len(set(codes)), codes
    for pid in payers:
        for line in c["results"][pid].get("lines", []):
            assert line["code"] in codes, (pid, line)
    assert c["differs"] == [r["code"] for r in c["rows"] if len(set(r["units"].values())) > 1]


def rows_of(c: dict) -> list:
    return [(r["code"], r["minutes"], r["units"]) for r in c["rows"]]


# ---------------------------------------------------------------------------------------------- JSON


def test_json_example1_payers_differ_both_ways(tmp_path):
    proc, c, path = compare(tmp_path, EX1, EX_PAYERS)
    assert proc.returncode == 0, proc.stderr
    assert isinstance(c, dict)          # one session object in → one comparison object out
    check_contract(c, EX_PAYERS)
    assert c["session_id"] == "EX1"
    # worked in the EX1 comment above
    assert rows_of(c) == [
        ("97112", 24, {"medicare": 2, "example-midpoint": 2, "example-full-unit": 1}),
        ("97110", 23, {"medicare": 1, "example-midpoint": 2, "example-full-unit": 1}),
    ]
    assert c["totals"] == {"medicare": 3, "example-midpoint": 4, "example-full-unit": 2}
    # one payer gives more than medicare, another fewer
    assert c["totals"]["example-midpoint"] > c["totals"]["medicare"] > c["totals"]["example-full-unit"]
    assert c["results"]["medicare"]["method"] == "cms_8_minute"
    assert c["results"]["example-midpoint"]["method"] == "midpoint_per_code"
    # 97112: 2/2/1 differ; 97110: 1/2/1 differ
    assert c["differs"] == ["97112", "97110"]


def test_json_results_equal_bill_output(tmp_path):
    proc, c, path = compare(tmp_path, EX1, EX_PAYERS)
    assert proc.returncode == 0, proc.stderr
    for pid in EX_PAYERS:
        assert c["results"][pid] == bill_json(path, pid), pid


def test_json_example5_midpoint_bills_fewer_than_medicare(tmp_path):
    proc, c, path = compare(tmp_path, EX5, EX_PAYERS)
    assert proc.returncode == 0, proc.stderr
    check_contract(c, EX_PAYERS)
    # worked in the EX5 comment: medicare 97112 x1 (tie → first entered), the others nothing
    assert rows_of(c) == [
        ("97112", 7, {"medicare": 1, "example-midpoint": 0, "example-full-unit": 0}),
        ("97110", 7, {"medicare": 0, "example-midpoint": 0, "example-full-unit": 0}),
        ("97140", 7, {"medicare": 0, "example-midpoint": 0, "example-full-unit": 0}),
    ]
    assert c["totals"] == {"medicare": 1, "example-midpoint": 0, "example-full-unit": 0}
    assert c["differs"] == ["97112"]
    for pid in EX_PAYERS:
        assert c["results"][pid] == bill_json(path, pid), pid


def test_json_payers_in_the_order_given(tmp_path):
    order = ["example-full-unit", "medicare", "example-midpoint"]     # neither sorted nor file order
    proc, c, path = compare(tmp_path, EX1, order)
    assert proc.returncode == 0, proc.stderr
    check_contract(c, order)
    assert c["payers"] == order
    assert list(c["rows"][0]["units"]) == order
    assert list(c["totals"]) == order
    # same numbers as in EX1, whatever the order
    assert c["totals"] == {"example-full-unit": 2, "medicare": 3, "example-midpoint": 4}


def test_json_rows_merge_minutes_in_order_of_first_appearance_and_zero_for_unbilled(tmp_path):
    data = session("MRG", [("97110", 10), ("97139", 12), ("97112", 20), ("97110", 15), ("97161", 30)])
    payers = ["medicare", "example-unit-limits", "example-midpoint", "example-full-unit"]
    proc, c, path = compare(tmp_path, data, payers)
    # example-unit-limits and example-full-unit report 97139 as an error → exit 1 (design.md §3)
    assert proc.returncode == 1, proc.stderr
    check_contract(c, payers)
    # 97110 10 + 15 = 25 merged into one row, placed where 97110 first appeared.
    # medicare timed: 97110 25 + 97112 20 = 45 → chart 38-52 = 3; full units 1 + 1 = 2; leftovers 10 vs 5
    #   → 97110 x2, 97112 x1; 97139 unlisted = 1 unit; 97161 evaluation = 1 unit; total 5.
    # example-unit-limits: the same, but 97139 is not covered (0 units) → total 4.
    # example-midpoint: 97110 (25+7)//15 = 2, 97112 (20+7)//15 = 1, 97139 1, 97161 1 → total 5.
    # example-full-unit: 97110 25//15 = 1, 97112 20//15 = 1, 97139 not in its lists → 0, 97161 1 → 3.
    assert rows_of(c) == [
        ("97110", 25, {"medicare": 2, "example-unit-limits": 2, "example-midpoint": 2, "example-full-unit": 1}),
        ("97139", 12, {"medicare": 1, "example-unit-limits": 0, "example-midpoint": 1, "example-full-unit": 0}),
        ("97112", 20, {"medicare": 1, "example-unit-limits": 1, "example-midpoint": 1, "example-full-unit": 1}),
        ("97161", 30, {"medicare": 1, "example-unit-limits": 1, "example-midpoint": 1, "example-full-unit": 1}),
    ]
    assert c["totals"] == {"medicare": 5, "example-unit-limits": 4, "example-midpoint": 5, "example-full-unit": 3}
    assert c["differs"] == ["97110", "97139"]
    for pid in payers:
        assert c["results"][pid] == bill_json(path, pid), pid


def test_json_generated_addon_row(tmp_path):
    payers = ["medicare", "example-midpoint", "example-unit-limits"]
    proc, c, path = compare(tmp_path, session("COG", [("97129", 40)], discipline="OT"), payers)
    assert proc.returncode == 0, proc.stderr
    check_contract(c, payers)
    # 40 min of the cognitive family: medicare chart 38-52 = 3; midpoint (40+7)//15 = 3;
    # unit-limits = medicare → 97129 x1 + 97130 x2 for every payer. 97130 was not entered: minutes 0.
    both = {pid: 1 for pid in payers}
    assert rows_of(c) == [("97129", 40, both), ("97130", 0, {pid: 2 for pid in payers})]
    assert c["totals"] == {pid: 3 for pid in payers}
    assert c["differs"] == []
    for pid in payers:
        assert c["results"][pid] == bill_json(path, pid), pid


def test_json_generated_addon_row_sits_right_after_its_primary(tmp_path):
    data = session("COG2", [("97129", 40), ("97110", 20)], discipline="OT")
    proc, c, path = compare(tmp_path, data, ["medicare", "example-midpoint"])
    assert proc.returncode == 0, proc.stderr
    check_contract(c, ["medicare", "example-midpoint"])
    # medicare: T = 60 → chart 53-67 = 4; full units family 40//15 = 2, 97110 20//15 = 1 → F = 3;
    #   leftovers family 10 vs 97110 5 → family 3 units → 97129 x1, 97130 x2, 97110 x1.
    # midpoint: family (40+7)//15 = 3 → 97129 x1, 97130 x2; 97110 (20+7)//15 = 1.
    same = lambda n: {"medicare": n, "example-midpoint": n}  # noqa: E731
    assert rows_of(c) == [("97129", 40, same(1)), ("97130", 0, same(2)), ("97110", 20, same(1))]
    assert c["totals"] == same(4)


def test_json_several_sessions_give_a_list(tmp_path):
    proc, cs, path = compare(tmp_path, [EX1, EX5, TEN3], EX_PAYERS)
    assert proc.returncode == 0, proc.stderr
    assert isinstance(cs, list) and [c["session_id"] for c in cs] == ["EX1", "EX5", "TEN3"]
    for c in cs:
        check_contract(c, EX_PAYERS)
    # TEN3 worked in its comment: medicare 97110 x1, 97112 x1 (tie → first two entered); midpoint 1 each;
    # full-unit 0 each.
    assert rows_of(cs[2]) == [
        ("97110", 10, {"medicare": 1, "example-midpoint": 1, "example-full-unit": 0}),
        ("97112", 10, {"medicare": 1, "example-midpoint": 1, "example-full-unit": 0}),
        ("97140", 10, {"medicare": 0, "example-midpoint": 1, "example-full-unit": 0}),
    ]
    assert [c["totals"] for c in cs] == [
        {"medicare": 3, "example-midpoint": 4, "example-full-unit": 2},
        {"medicare": 1, "example-midpoint": 0, "example-full-unit": 0},
        {"medicare": 2, "example-midpoint": 3, "example-full-unit": 0},
    ]
    for pid in EX_PAYERS:
        assert [c["results"][pid] for c in cs] == bill_json(path, pid), pid


# --------------------------------------------------------------------------------------------- table


def cells(line: str) -> list:
    """Cells of a table line: columns are separated by two or more spaces ("4 (+1)" has one)."""
    return re.split(r"\s{2,}", line.strip())


def blocks_of(out: str) -> list:
    return [b for b in out.strip("\n").split("\n\n") if b.strip()]


def test_table_single_session(tmp_path):
    path = write_yaml(tmp_path / "s.yaml", EX1)
    proc = run_cli("compare", path, "--payers", ",".join(EX_PAYERS))
    no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any("EX1" in l for l in lines[:2]), lines[:2]
    header = next(l for l in lines if l.split() and l.split()[0] == "Code")
    # the payer ids are the columns, in the order given, after code and minutes; medicare, the base, marked
    assert cells(header)[2:] == ["medicare (base)", "example-midpoint", "example-full-unit"], header
    body = {cells(l)[0]: cells(l) for l in lines if l.split() and l.split()[0] in ("97112", "97110", "Total")}
    # EX1 worked above: medicare 2/1 = 3, midpoint 2/2 = 4, full-unit 1/1 = 2; differences against medicare
    assert body["97112"] == ["97112", "24", "2", "2", "1 (-1)"]
    assert body["97110"] == ["97110", "23", "1", "2 (+1)", "1"]
    assert body["Total"] == ["Total", "3", "4 (+1)", "2 (-1)"]
    # one row per code: no code row twice
    assert sum(1 for l in lines if l.split() and l.split()[0] == "97112") == 1
    assert sum(1 for l in lines if l.split() and l.split()[0] == "Total") == 1


def test_table_marks_a_code_one_payer_does_not_cover(tmp_path):
    # unit-limits does not cover 97139 (error warning, 0 units, exit 1); medicare bills it 1 unit
    path = write_yaml(tmp_path / "s.yaml", session("UL", [("97139", 20)]))
    proc = run_cli("compare", path, "--payers", "medicare,example-unit-limits")
    no_traceback(proc)
    assert proc.returncode == 1, proc.stderr
    rows = {cells(l)[0]: cells(l) for l in proc.stdout.splitlines() if l.split() and l.split()[0] in ("97139", "Total")}
    # medicare 1 (untimed unlisted code), unit-limits 0 → "0 (-1)"
    assert rows["97139"] == ["97139", "20", "1", "0 (-1)"]
    assert rows["Total"] == ["Total", "1", "0 (-1)"]
    assert "97139" in proc.stderr


def test_table_several_sessions_with_summary(tmp_path):
    path = write_yaml(tmp_path / "s.yaml", [EX1, EX5, MT2025, TEN3])
    proc = run_cli("compare", path, "--payers", ",".join(EX_PAYERS))
    no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    blocks = blocks_of(proc.stdout)
    assert len(blocks) == 5, proc.stdout           # one per session + the summary
    for block, sid in zip(blocks, ["EX1", "EX5", "MT", "TEN3"]):
        first = block.splitlines()[0]
        assert sid in first and "Summary" not in first, block
        assert any(l.split() and l.split()[0] == "Total" for l in block.splitlines()), block
    # EX5: medicare 1, midpoint 0, full-unit 0
    ex5 = {cells(l)[0]: cells(l) for l in blocks[1].splitlines() if l.split() and l.split()[0] in ("97112", "Total")}
    assert ex5["97112"] == ["97112", "7", "1", "0 (-1)", "0 (-1)"]
    assert ex5["Total"] == ["Total", "1", "0 (-1)", "0 (-1)"]
    # MT: 3 / 3 / 3 → no differences marked
    mt = {cells(l)[0]: cells(l) for l in blocks[2].splitlines() if l.split() and l.split()[0] in ("97140", "Total")}
    assert mt["97140"] == ["97140", "50", "3", "3", "3"]
    assert mt["Total"] == ["Total", "3", "3", "3"]

    summary = blocks[-1].splitlines()
    assert summary[0].lstrip().startswith("Summary"), blocks[-1]
    # totals medicare / midpoint / full-unit: EX1 3/4/2, EX5 1/0/0, MT 3/3/3, TEN3 2/3/0
    #   example-midpoint vs medicare: more in EX1, TEN3 (2); fewer in EX5 (1); same in MT (1)
    #   example-full-unit vs medicare: more in none (0); fewer in EX1, EX5, TEN3 (3); same in MT (1)
    expected = {"example-midpoint": (2, 1, 1), "example-full-unit": (0, 3, 1)}
    for pid, (more, fewer, same) in expected.items():
        line = next(l for l in summary[1:] if pid in l)
        assert "medicare" in line, line
        found = re.search(r"more\D*(\d+).*fewer\D*(\d+).*same\D*(\d+)", line)
        assert found, line
        assert tuple(int(g) for g in found.groups()) == (more, fewer, same), line
    # medicare is the base, not compared with itself
    assert not any(l.split() and l.split()[0] == "medicare" for l in summary[1:]), summary


# ------------------------------------------------------------------------------------ payers / errors


def test_all_payers_includes_every_listed_payer(tmp_path):
    listing = run_cli("payers", "--format", "json")
    assert listing.returncode == 0, listing.stderr
    ids = list(dict.fromkeys(p["id"] for p in json.loads(listing.stdout)))
    assert {"medicare", "example-midpoint", "example-unit-limits", "example-full-unit"} <= set(ids)
    proc, c, path = compare(tmp_path, EX1, None)
    assert proc.returncode == 0, proc.stderr
    assert sorted(c["payers"]) == sorted(ids) and len(c["payers"]) == len(ids)
    check_contract(c, c["payers"])
    # EX1: example-unit-limits is medicare here (no 97140, no unlisted code) → 3
    assert c["totals"] == {"medicare": 3, "example-midpoint": 4, "example-full-unit": 2, "example-unit-limits": 3,
                           "example-ncci-bypass": 3,     # medicare's units: it changes only an NCCI setting
                           "example-medicare-fees": 3, "example-visit-limits": 3,   # and only counters
                           "example-authorizations": 3}


def test_unknown_payer_is_a_usage_error_naming_it(tmp_path):
    path = write_yaml(tmp_path / "s.yaml", EX1)
    proc = run_cli("compare", path, "--payers", "medicare,no-such-payer", "--format", "json")
    no_traceback(proc)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "no-such-payer" in proc.stderr
    assert proc.stdout == ""


LEGACY_PAYER = """\
payer: legacy-plan
name: "Test: a plan in effect before Medicare's total-time method"
effective_from: 1990-01-01
method:
  name: midpoint_per_code
  unit_minutes: 15
  first_unit_minutes: 8
  source: "test fixture"
codes:
  timed_15: [97110, 97112, 97140]
rules:
  - id: unknown-code
    description: Codes outside this plan's list are not billed.
    source: "test fixture"
    when:
      line: {known: false}
    then:
      - error: "{code} is not billable under this plan"
      - hold: "{code} is not a code of this plan"
  - id: timed-per-code
    description: Timed codes are billed on their own minutes.
    source: "test fixture"
    when:
      line: {code_in: timed_15}
    then:
      - timed_units: true
"""

OLD = session("OLD", [("97110", 30)], date="1999-06-01")


def legacy_rules(tmp_path) -> Path:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "legacy.yaml").write_text(LEGACY_PAYER, encoding="utf-8")
    return rules


def test_payer_without_version_in_effect_is_an_error_cell(tmp_path):
    rules = legacy_rules(tmp_path)
    payers = ["medicare", "legacy-plan", "example-full-unit"]
    proc, c, path = compare(tmp_path, OLD, payers, "--rules", rules)
    # medicare starts 2000-04-01, example-full-unit 2020-01-01: neither has a version on 1999-06-01 → exit 1
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    check_contract(c, payers)
    for pid in ("medicare", "example-full-unit"):
        assert set(c["results"][pid]) == {"session_id", "error"}, c["results"][pid]
        assert pid in c["results"][pid]["error"]
        assert pid in proc.stderr
    # legacy-plan is still billed: 97110 30 min per code → (30+7)//15 = 2
    assert rows_of(c) == [("97110", 30, {"medicare": None, "legacy-plan": 2, "example-full-unit": None})]
    assert c["totals"] == {"medicare": None, "legacy-plan": 2, "example-full-unit": None}
    for pid in payers:
        assert c["results"][pid] == bill_json(path, pid, "--rules", rules), pid
    # the table shows the error cells and the payer still billed
    table = run_cli("compare", path, "--payers", ",".join(payers), "--rules", rules)
    row = next(cells(l) for l in table.stdout.splitlines() if l.split() and l.split()[0] == "97110")
    assert row[:3] == ["97110", "30", "error"] and row[3] == "2" and row[4] == "error", row
    assert table.returncode == 1


def test_extending_payer_without_parent_version_is_an_error_cell(tmp_path):
    # example-midpoint extends medicare, which has no version on 1999-06-01: like medicare itself this is
    # one session that cannot be billed under that payer (error record, exit 1), not a broken rule file
    # that stops the whole run (exit 2).
    rules = legacy_rules(tmp_path)
    payers = ["legacy-plan", "example-midpoint", "medicare"]
    proc, c, path = compare(tmp_path, OLD, payers, "--rules", rules)
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert c is not None, "no output"
    check_contract(c, payers)
    assert set(c["results"]["example-midpoint"]) == {"session_id", "error"}
    assert rows_of(c) == [("97110", 30, {"legacy-plan": 2, "example-midpoint": None, "medicare": None})]
    assert c["totals"] == {"legacy-plan": 2, "example-midpoint": None, "medicare": None}


def test_date_option_changes_unit_limit(tmp_path):
    payers = ["medicare", "example-unit-limits"]
    data = session("MTD", [("97140", 50)], date=None)
    # 97140 50 min: chart 38-52 = 3 units under medicare in both years.
    # example-unit-limits: 3 earned; limit 3 through 2025 → 3; limit 2 from 2026 → 2 and a warning.
    proc25, c25, path = compare(tmp_path, data, payers, "--date", "2025-06-01")
    proc26, c26, _ = compare(tmp_path, data, payers, "--date", "2026-06-01")
    assert proc25.returncode == 0 and proc26.returncode == 0, (proc25.stderr, proc26.stderr)
    check_contract(c25, payers)
    check_contract(c26, payers)
    assert rows_of(c25) == [("97140", 50, {"medicare": 3, "example-unit-limits": 3})]
    assert rows_of(c26) == [("97140", 50, {"medicare": 3, "example-unit-limits": 2})]
    assert c25["totals"] == {"medicare": 3, "example-unit-limits": 3}
    assert c26["totals"] == {"medicare": 3, "example-unit-limits": 2}
    limited = c26["results"]["example-unit-limits"]
    assert any(w["severity"] == "warning" and "97140" in w["codes"] for w in limited["warnings"]), limited["warnings"]
    assert not any("97140" in w["codes"] and w["severity"] != "info"
                   for w in c25["results"]["example-unit-limits"]["warnings"])
    assert c25["differs"] == [] and c26["differs"] == ["97140"]
    for date, c in (("2025-06-01", c25), ("2026-06-01", c26)):
        for pid in payers:
            assert c["results"][pid] == bill_json(path, pid, "--date", date), (date, pid)
    # the table shows it too: "2 (-1)" against medicare's 3, and the warning under the block
    table = run_cli("compare", path, "--payers", ",".join(payers), "--date", "2026-06-01")
    lines = table.stdout.splitlines()
    row = next(cells(l) for l in lines if l.split() and l.split()[0] == "97140")
    assert row == ["97140", "50", "3", "2 (-1)"]
    assert any("example-unit-limits" in l and "warning" in l for l in lines), table.stdout


def test_date_option_overrides_the_session_date(tmp_path):
    # the session says 2025 (limit 3), --date says 2026 (limit 2): --date wins (design.md §3)
    proc, c, _ = compare(tmp_path, MT2025, ["medicare", "example-unit-limits"], "--date", "2026-06-01")
    assert proc.returncode == 0, proc.stderr
    assert c["totals"] == {"medicare": 3, "example-unit-limits": 2}


# ------------------------------------------------------------------------------------- determinism


DET_ARGS = ("--all-payers",)


@pytest.mark.parametrize("fmt", ["json", "table"])
def test_output_is_byte_identical_across_runs(tmp_path, fmt):
    path = write_yaml(tmp_path / "s.yaml", [EX1, EX5, MT2025, TEN3, session("COG", [("97129", 40)])])
    first = run_cli("compare", path, *DET_ARGS, "--format", fmt)
    second = run_cli("compare", path, *DET_ARGS, "--format", fmt)
    no_traceback(first)
    # COG has 97129, which example-full-unit does not list → an error warning → exit 1
    assert first.returncode == second.returncode == 1
    assert first.stdout and first.stdout == second.stdout


@pytest.mark.skipif(not durable_available(), reason="durable_rules_engine not installed")
@pytest.mark.parametrize("fmt", ["json", "table"])
def test_python_and_durable_engines_agree(tmp_path, fmt):
    path = write_yaml(tmp_path / "s.yaml", [EX1, EX5, MT2025, TEN3, session("COG", [("97129", 40)])])
    py = run_cli("compare", path, *DET_ARGS, "--format", fmt, "--engine", "python")
    du = run_cli("compare", path, *DET_ARGS, "--format", fmt, "--engine", "durable")
    no_traceback(py)
    no_traceback(du)
    assert py.returncode == du.returncode == 1
    assert py.stdout and py.stdout == du.stdout


# ------------------------------------------------------------------------------------------- the base


def test_all_payers_are_measured_against_medicare(tmp_path):
    # --all-payers lists the payers alphabetically: example-authorizations comes first, medicare last, and
    # medicare is the base all the same.
    proc, c, path = compare(tmp_path, EX1, None)
    assert proc.returncode == 0, proc.stderr
    assert c["payers"][0] == "example-authorizations" and c["payers"][-1] == "medicare"
    assert c["base"] == "medicare"
    table = run_cli("compare", path, "--all-payers")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    header = next(l for l in lines if l.split() and l.split()[0] == "Code")
    assert [h for h in cells(header) if h.endswith("(base)")] == ["medicare (base)"], header
    # EX1 totals (worked at EX1): full-unit 2, midpoint 4, unit-limits 3, medicare 3 → against medicare
    # 2 (-1), 4 (+1), 3, 3; columns in the order example-full-unit, example-midpoint, example-unit-limits,
    # medicare
    total = next(cells(l) for l in lines if l.split() and l.split()[0] == "Total")
    # example-authorizations (3) first, example-medicare-fees (3) after full-unit, example-ncci-bypass (3)
    # before unit-limits, and example-visit-limits (3) after it: Medicare's units, all four
    assert total == ["Total", "3", "2 (-1)", "3", "4 (+1)", "3", "3", "3", "3"], total
    assert any(l.strip().endswith("units more/fewer than medicare") for l in lines), table.stdout


def test_medicare_is_the_base_wherever_it_is_listed(tmp_path):
    proc, c, _ = compare(tmp_path, EX1, ["example-midpoint", "medicare"])
    assert proc.returncode == 0, proc.stderr
    assert c["base"] == "medicare"


def test_without_medicare_the_first_listed_payer_is_the_base(tmp_path):
    proc, c, _ = compare(tmp_path, EX1, ["example-midpoint", "example-full-unit"])
    assert proc.returncode == 0, proc.stderr
    assert c["base"] == "example-midpoint"


def test_base_option_picks_another_payer(tmp_path):
    payers = ["medicare", "example-midpoint", "example-full-unit"]
    proc, c, path = compare(tmp_path, [EX1, EX5], payers, "--base", "example-full-unit")
    assert proc.returncode == 0, proc.stderr
    assert [x["base"] for x in c] == ["example-full-unit"] * 2
    check_contract(c[0], payers)
    table = run_cli("compare", path, "--payers", ",".join(payers), "--base", "example-full-unit")
    assert table.returncode == 0, table.stderr
    blocks = blocks_of(table.stdout)
    lines = blocks[0].splitlines()
    header = next(l for l in lines if l.split() and l.split()[0] == "Code")
    assert cells(header)[2:] == ["medicare", "example-midpoint", "example-full-unit (base)"], header
    # EX1 against full-unit (97112 1, 97110 1, total 2): medicare 2/1/3, midpoint 2/2/4
    rows = {cells(l)[0]: cells(l) for l in lines if l.split() and l.split()[0] in ("97112", "97110", "Total")}
    assert rows["97112"] == ["97112", "24", "2 (+1)", "2 (+1)", "1"]
    assert rows["97110"] == ["97110", "23", "1", "2 (+1)", "1"]
    assert rows["Total"] == ["Total", "3 (+1)", "4 (+2)", "2"]
    assert any("units more/fewer than example-full-unit" in l for l in lines), blocks[0]
    # summary: EX1 totals 3/4/2, EX5 1/0/0 (worked at EX5) against full-unit:
    #   medicare: more in EX1 and EX5 (2), net +1 +1 = +2; midpoint: more in EX1 (+2), same in EX5, net +2
    summary = blocks[-1].splitlines()
    assert summary[0] == "Summary: 2 sessions, payers differ on 2"
    assert summary[1:] == [
        "  medicare vs example-full-unit: more units in 2, fewer in 0, same in 0 (net +2 units)",
        "  example-midpoint vs example-full-unit: more units in 1, fewer in 0, same in 1 (net +2 units)",
    ]


@pytest.mark.parametrize("base", ["no-such-payer", "example-unit-limits"])
def test_base_not_among_the_compared_payers_is_a_usage_error(tmp_path, base):
    # example-unit-limits is a known payer, but not one of those compared
    path = write_yaml(tmp_path / "s.yaml", EX1)
    for fmt in ("json", "table"):
        proc = run_cli("compare", path, "--payers", "medicare,example-midpoint", "--base", base, "--format", fmt)
        no_traceback(proc)
        assert proc.returncode == 2, (proc.returncode, proc.stderr)
        assert proc.stdout == ""
        assert proc.stderr.startswith("error: ") and base in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_readme_guide_compare_output_is_what_the_program_prints(tmp_path):
    # README "Adding a payer" step 3 shows the command and its output; the output must be exactly what
    # the command prints to a pipe (100 columns, COLUMNS unset), whatever prefix the command is shown with.
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    payer = re.search(r"```yaml\n(\s*# my-rules/acme-health\.yaml\n.*?)```", text, re.S).group(1)
    # the session of step 3: 97112 24 min, 97110 23 min, 97140 40 min, the id the block shows
    session = {"session_id": "T-1", "date_of_service": "2026-03-02", "discipline": "PT",
               "services": [{"code": "97112", "minutes": 24}, {"code": "97110", "minutes": 23},
                            {"code": "97140", "minutes": 40}]}
    found = re.search(r"```\n   \$ \S*payrules compare session\.yaml ([^\n]*)\n(.*?)   ```", text, re.S)
    assert found, "the guide's compare example is missing from README.md"
    args, shown = found.group(1).split(), found.group(2)
    assert args == ["--payers", "medicare,acme-health", "--rules", "my-rules"], args
    (tmp_path / "my-rules").mkdir()
    (tmp_path / "my-rules" / "acme-health.yaml").write_text(textwrap.dedent(payer), encoding="utf-8")
    write_yaml(tmp_path / "session.yaml", session)
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-m", "engine", "compare", "session.yaml", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "".join(l[3:] + "\n" for l in shown.splitlines()) == proc.stdout


def test_rows_keep_a_codes_total_units_and_show_modifier_differences(tmp_path):
    """97110 PTA 23 + PT 13 (shared domain.md §17.1 case D): Medicare bills x1 GP CQ + x1 GP, the example
    midpoint payer turns CQ/CO off (x2 GP): the row holds 2 units for both, and the modifiers differ."""
    from engine.billing import Biller
    from engine.compare import compare_session, to_table
    from engine.loader import Registry
    from conftest import session_from
    session = session_from({"discipline": "PT", "services": [
        {"code": "97110", "minutes": 23, "provider": "PTA"}, {"code": "97110", "minutes": 13, "provider": "PT"}]})
    biller = Biller(Registry(), "python")
    c = compare_session(session, ["medicare", "example-midpoint"], biller)
    assert c["rows"][0]["units"] == {"medicare": 2, "example-midpoint": 2} and c["differs"] == []
    assert c["modifiers_differ"] == ["97110"]
    assert "Modifiers differ on 97110: medicare x1 GP CQ + x1 GP; example-midpoint x2 GP" in to_table([c])
    biller.close()
