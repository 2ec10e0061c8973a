"""NCCI PTP and MUE claim edits from payer tables (issue 12 items 3, 4, 6; design.md §5, §6; docs/domain.md §17).

Every table here is SYNTHETIC: the CMS practitioner layouts with pairs, dates and MUE values made up for
the test (the codes are real therapy codes; the edits are not CMS data). Expected warnings are worked by
hand from the rows written, in the comments beside them. Until documented modifiers reach the input
(issue 12 item 1, the cqco helper), lines with 59/XS are built directly as result lines.
"""
from __future__ import annotations

import datetime
import os
import subprocess
import sys
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ENGINES
from engine import edits as E
from engine.billing import Biller
from engine.loader import Registry
from engine.tables import load_mue, load_ptp
from test_cli import run_cli

PTP_HEADER = ("Column 1\tColumn 2\t*=in existence prior to 1996\tEffective Date\tDeletion Date *=no data\t"
              "Modifier 0=not allowed 1=allowed 9=not applicable\tPTP Edit Rationale")
MUE_HEADER = '"HCPCS/\nCPT Code","Practitioner Services MUE Values","MUE Adjudication Indicator","MUE Rationale"'
NOTICE = "SYNTHETIC test table, not CMS data."


def ptp_file(path: Path, rows: list) -> Path:
    """rows: (col1, col2, effective, deletion or '*', indicator); row k (0-based) is on line k + 3."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = [f"{a}\t{b}\t\t{e}\t{d}\t{m}\tsynthetic" for a, b, e, d, m in rows]
    path.write_text("\n".join([NOTICE, PTP_HEADER] + body) + "\n")
    return path


def mue_file(path: Path, rows: list) -> Path:
    """rows: (code, value, mai); the header takes lines 2-3, row k (0-based) is on line k + 4."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([f'"{NOTICE}",,,', MUE_HEADER] + [f'{c},{v},"{m} x",synthetic' for c, v, m in rows])
                    + "\n")
    return path


def tables(tmp_path, ptp=(), mue=(), not_honoured=()):
    return E.EditTables(
        (load_ptp(ptp_file(tmp_path / "ptp.txt", ptp), "t/ptp.txt"),) if ptp else (),
        (load_mue(mue_file(tmp_path / "mue.csv", mue), "t/mue.csv"),) if mue else (),
        {"ptp": "t/payer.yaml:9", "mue": "t/payer.yaml:10"},
        {frozenset(p): "t/payer.yaml:12" for p in not_honoured})


def result(*lines):
    """A result with billed lines (code, units[, modifiers])."""
    return {"lines": [{"code": c, "units": u, "minutes": 0, "modifiers": list(m[0]) if m else ["GP"], "rules": []}
                      for c, u, *m in lines], "warnings": [], "trace": []}


def edits_of(res):
    return [(w["severity"], w["rule"], w["codes"][0], w["table"]) for w in res["warnings"]]


# ---------------------------------------------------------------- PTP

PAIRS = [("97110", "97112", "20200101", "*", 0),          # line 3
         ("97140", "97530", "20200101", "*", 1),          # line 4
         ("97116", "97110", "20200101", "*", 9),          # line 5
         ("97035", "97032", "20150101", "20200101", 0),   # line 6: deleted from 2020-01-01
         ("97113", "97110", "20250101", "*", 0)]          # line 7: in effect from 2025-01-01


def test_indicator_0_is_an_error_on_the_column_2_line(tmp_path):
    res = result(("97110", 2), ("97112", 1))
    E.apply(res, "2024-05-01", tables(tmp_path, PAIRS))
    assert edits_of(res) == [("error", "ncci-ptp", "97112", "t/ptp.txt:3")]
    assert "never payable with 97110" in res["warnings"][0]["message"]
    assert res["trace"][-1]["source"] == "t/payer.yaml:9" and res["trace"][-1]["table"] == "t/ptp.txt:3"
    assert [line["code"] for line in res["lines"]] == ["97110", "97112"]    # the line stays, flagged


def test_indicator_1_without_a_documented_modifier_asks_for_it(tmp_path):
    res = result(("97140", 1), ("97530", 2))
    E.apply(res, "2024-05-01", tables(tmp_path, PAIRS))
    assert edits_of(res) == [("error", "ncci-ptp", "97530", "t/ptp.txt:4")]
    message = res["warnings"][0]["message"]
    # docs/domain.md §17: 59 or X{EPSU} on the column 2 code; for 97140+97530 distinct 15-minute blocks
    assert "59 or XE/XS/XP/XU on 97530" in message and "distinct 15-minute time blocks" in message
    assert all("59" not in line["modifiers"] for line in res["lines"])       # never added by the engine


@pytest.mark.parametrize("modifier", ["59", "XS", "XU", "XE", "XP"])
def test_indicator_1_with_a_documented_modifier_bills_with_an_info(tmp_path, modifier):
    res = result(("97140", 1), ("97530", 2, ["GP", modifier]))
    E.apply(res, "2024-05-01", tables(tmp_path, PAIRS))
    assert edits_of(res) == [("info", "ncci-ptp", "97530", "t/ptp.txt:4")]


def test_a_modifier_on_the_column_1_line_does_not_bypass(tmp_path):
    res = result(("97140", 1, ["GP", "59"]), ("97530", 2))
    E.apply(res, "2024-05-01", tables(tmp_path, PAIRS))
    assert edits_of(res) == [("error", "ncci-ptp", "97530", "t/ptp.txt:4")]


def test_indicator_9_is_no_edit(tmp_path):
    res = result(("97116", 1), ("97110", 1))
    E.apply(res, "2024-05-01", tables(tmp_path, PAIRS))
    assert res["warnings"] == [] and res["trace"] == []


@pytest.mark.parametrize("date, expected", [
    ("2019-12-31", [("error", "ncci-ptp", "97032", "t/ptp.txt:6")]),    # the day before its deletion
    ("2020-01-01", []),                                                   # deleted on that day
])
def test_an_edit_deleted_before_the_date_of_service_does_not_apply(tmp_path, date, expected):
    res = result(("97035", 1), ("97032", 1))
    E.apply(res, date, tables(tmp_path, PAIRS))
    assert edits_of(res) == expected


@pytest.mark.parametrize("date, expected", [
    ("2024-12-31", []),                                                   # not yet in effect
    ("2025-01-01", [("error", "ncci-ptp", "97110", "t/ptp.txt:7")]),     # its effective date
])
def test_an_edit_not_yet_in_effect_does_not_apply(tmp_path, date, expected):
    res = result(("97113", 1), ("97110", 1))
    E.apply(res, date, tables(tmp_path, PAIRS))
    assert edits_of(res) == expected


def test_without_a_date_the_ptp_edits_are_not_guessed(tmp_path):
    res = result(("97110", 2), ("97112", 1))
    E.apply(res, None, tables(tmp_path, PAIRS))
    assert [(w["severity"], w["rule"]) for w in res["warnings"]] == [("warning", "ncci-ptp")]
    assert "date_of_service" in res["warnings"][0]["message"]
    assert "97110/97112" in res["warnings"][0]["message"]          # the pair with a row (line 3)
    quiet = result(("97110", 2), ("97140", 1))                          # no row for this pair: nothing to say
    E.apply(quiet, None, tables(tmp_path, PAIRS))
    assert quiet["warnings"] == []


def test_bypass_not_honoured_for_a_pair_is_an_error_citing_the_setting(tmp_path):
    res = result(("97140", 1), ("97530", 2, ["GP", "59"]))
    E.apply(res, "2024-05-01", tables(tmp_path, PAIRS, not_honoured=[("97530", "97140")]))   # either order
    assert edits_of(res) == [("error", "ncci-ptp", "97530", "t/ptp.txt:4")]
    assert "does not honour 59" in res["warnings"][0]["message"]
    assert res["trace"][-1]["source"] == "t/payer.yaml:12"


# ---------------------------------------------------------------- MUE

def test_mue_mai_1_is_per_line(tmp_path):
    # MUE 2 per line: the 3-unit line is over (denied whole), the 2-unit line of the same code is not
    res = result(("97110", 3), ("97110", 2, ["GP", "59"]))
    E.apply(res, "2024-05-01", tables(tmp_path, mue=[("97110", 2, 1)]))
    assert edits_of(res) == [("error", "ncci-mue", "97110", "t/mue.csv:4")]
    assert "3 units on the line exceed the MUE of 2 (MAI 1" in res["warnings"][0]["message"]
    assert "whole line" in res["warnings"][0]["message"]


@pytest.mark.parametrize("mai, appeal", [(2, "not appealable"), (3, "appealable with documentation")])
def test_mue_mai_2_and_3_count_the_date_across_the_lines_of_a_code(tmp_path, mai, appeal):
    # 3 + 2 = 5 units of 97110 on the date > 4: both lines denied; each line alone (3, 2) would pass
    res = result(("97110", 3), ("97112", 1), ("97110", 2, ["GP", "59"]))
    E.apply(res, "2024-05-01", tables(tmp_path, mue=[("97112", 1, mai), ("97110", 4, mai)]))
    assert edits_of(res) == [("error", "ncci-mue", "97110", "t/mue.csv:5")] * 2
    assert f"5 units on the date of service exceed the MUE of 4 (MAI {mai}" in res["warnings"][0]["message"]
    assert appeal in res["warnings"][0]["message"]


def test_mue_at_the_value_is_no_edit(tmp_path):
    res = result(("97110", 3), ("97110", 2))
    E.apply(res, "2024-05-01", tables(tmp_path, mue=[("97110", 5, 3)]))     # 5 <= 5
    assert res["warnings"] == []


# ---------------------------------------------------------------- property: a naive scan

CODES = ["97110", "97112", "97140", "97530", "97116"]


def naive(rows, mues, lines, date):
    """The edits by reading every row, as docs/domain.md §17 states them: (severity, rule, code, line), in
    the order of the output: PTP edits by the column 2 code's place among the billed codes, then column 1's,
    then the row's line, each on every line of its column 2 code; then the MUE edits in line order."""
    day = int(date.replace("-", ""))
    codes = list(dict.fromkeys(c for c, _, _ in lines))
    out = []
    hits = [(codes.index(b), codes.index(a), 3 + k, a, b, m) for k, (a, b, e, d, m) in enumerate(rows)
            if a in codes and b in codes and a != b and int(e) <= day and (d == "*" or day < int(d)) and m != 9]
    for _, _, line, a, b, m in sorted(hits):
        for code, _, mods in lines:
            if code == b:
                ok = m == 1 and any(x in mods for x in ("59", "XE", "XS", "XP", "XU"))
                out.append(("info" if ok else "error", "ncci-ptp", b, f"t/ptp.txt:{line}"))
    for code, units, _ in lines:
        found = [(k, v, mai) for k, (c, v, mai) in enumerate(mues) if c == code]
        if found:
            k, v, mai = found[-1]
            n = units if mai == 1 else sum(u for c, u, _ in lines if c == code)
            if n > v:
                out.append(("error", "ncci-mue", code, f"t/mue.csv:{4 + k}"))
    return out


DATES = st.integers(2015, 2026).map(lambda y: f"{y}0101")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(st.sampled_from(CODES), st.sampled_from(CODES), DATES,
                               st.one_of(st.just("*"), DATES), st.sampled_from([0, 1, 9])), max_size=12),
       mues=st.lists(st.tuples(st.sampled_from(CODES), st.integers(1, 6), st.sampled_from([1, 2, 3])),
                     max_size=4, unique_by=lambda r: r[0]),
       lines=st.lists(st.tuples(st.sampled_from(CODES), st.integers(1, 5),
                                st.sampled_from([("GP",), ("GP", "59"), ("GP", "XS")])), min_size=1, max_size=5),
       date=st.dates(datetime.date(2014, 1, 1), datetime.date(2027, 1, 1)).map(str))
def test_edits_equal_a_naive_scan_of_every_row(tmp_path, rows, mues, lines, date):
    rows = [r for r in rows if r[3] == "*" or r[3] > r[2]]
    res = result(*[(c, u, list(m)) for c, u, m in lines])
    E.apply(res, date, tables(tmp_path, rows, mues) if rows or mues else E.NONE)
    got = [(w["severity"], w["rule"], w["codes"][0], w["table"]) for w in res["warnings"]]
    assert got == naive(rows, mues, lines, date)        # the same edits, in the same order


# ---------------------------------------------------------------- payer files: tables, inheritance, errors

PARENT = """payer: clinic
name: Clinic
extends: medicare
tables:
  ptp: [ncci/ptp.txt]
  mue: [ncci/mue.csv]
ptp:
  bypass_not_honoured: [[97140, 97530]]
"""
CHILD = """payer: clinic-child
name: Clinic child
extends: clinic
tables:
  mue: [child/mue.csv]
"""


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "extra"
    ptp_file(root / "ncci/ptp.txt", PAIRS)
    mue_file(root / "ncci/mue.csv", [("97110", 2, 3)])
    mue_file(root / "child/mue.csv", [("97110", 8, 3)])
    (root / "clinic.yaml").write_text(PARENT)
    (root / "clinic-child.yaml").write_text(CHILD)
    return root


def session(*pairs, date="2024-05-01"):
    return {"session_id": "S", "date_of_service": date, "discipline": "PT",
            "services": [{"code": c, "minutes": m} for c, m in pairs]}


def test_a_child_inherits_tables_and_replaces_them_kind_by_kind(tree):
    registry = Registry([tree])
    parent, child = registry.resolve("clinic", "2024-05-01"), registry.resolve("clinic-child", "2024-05-01")
    assert [t.path for t in parent.edits.ptp] == ["extra/ncci/ptp.txt"]
    assert [t.path for t in child.edits.ptp] == ["extra/ncci/ptp.txt"]          # inherited
    assert [t.path for t in child.edits.mue] == ["extra/child/mue.csv"]         # replaced
    assert child.edits.sources["mue"] == "extra/clinic-child.yaml:5"     # line 5: `  mue: [...]`
    assert child.edits.sources["ptp"] == "extra/clinic.yaml:5"
    assert set(child.edits.not_honoured) == {frozenset({"97140", "97530"})}     # ptp: settings inherited
    # medicare's own table (the excerpt) is what clinic replaced
    assert [t.path for t in registry.resolve("medicare", "2024-05-01").edits.ptp] == \
        ["rules/ncci/ptp-practitioner-excerpt.txt"]


@pytest.mark.parametrize("engine_name", ENGINES)
def test_billing_applies_the_payers_tables_on_both_engines(tree, engine_name):
    registry = Registry([tree])
    biller = Biller(registry, engine_name, remember=False)
    from conftest import session_from
    # 97110 23 min + 97112 23 min = 46 min: 3 units (97110 x2, 97112 x1 by leftovers... both 8 left: tie)
    res = biller.bill(session_from(session(("97110", 38), ("97112", 8))), "clinic")
    # 38 + 8 = 46 min -> 3 units: 97110 2 full (8 left), 97112 0 full (8 left); the tie-break (minutes)
    # gives the remaining unit to 97110: 97110 x3, 97112 x0 -> only 97110 billed, so no PTP pair;
    # MUE 97110 = 2 (MAI 3): 3 > 2, the line is denied
    assert [(w["rule"], w["table"]) for w in res["warnings"] if "table" in w] == [("ncci-mue", "extra/ncci/mue.csv:4")]
    child = biller.bill(session_from(session(("97110", 38), ("97112", 8))), "clinic-child")
    assert [w for w in child["warnings"] if "table" in w] == []               # the child's MUE is 8
    both = biller.bill(session_from(session(("97110", 23), ("97112", 23))), "clinic")
    # 46 min -> 3 units; 97110 1 full (8 left), 97112 1 full (8 left): both billed; edit 97110/97112 is 0
    assert [(w["severity"], w["rule"], w["table"]) for w in both["warnings"] if "table" in w] == \
        [("error", "ncci-ptp", "extra/ncci/ptp.txt:3")]
    biller.close()


def test_effective_dated_versions_each_have_their_own_tables(tmp_path):
    root = tmp_path / "extra"
    mue_file(root / "a.csv", [("97110", 1, 1)])
    mue_file(root / "b.csv", [("97110", 9, 1)])
    for name, start, end, table in (("v1", "2020-01-01", "2023-12-31", "a.csv"), ("v2", "2024-01-01", None, "b.csv")):
        (root / f"{name}.yaml").write_text(f"payer: dated\nname: Dated\nextends: medicare\neffective_from: {start}\n"
                                           + (f"effective_to: {end}\n" if end else "") + f"tables:\n  mue: [{table}]\n")
    registry = Registry([root])
    assert registry.resolve("dated", "2023-06-01").edits.mue[0].path == "extra/a.csv"
    assert registry.resolve("dated", "2024-06-01").edits.mue[0].path == "extra/b.csv"


@pytest.mark.parametrize("name", ["../outside.csv", "/etc/passwd", "a/../../b.csv"])
def test_a_table_path_leaving_the_payers_folder_is_an_error_at_its_line(tmp_path, name):
    root = tmp_path / "extra"
    root.mkdir()
    (root / "p.yaml").write_text(f"payer: p\nname: P\nextends: medicare\ntables:\n  mue: [{json.dumps(name)}]\n")
    proc = run_cli("validate", str(root))
    assert proc.returncode == 2
    assert f"p.yaml:5: tables.mue[0]: {name!r}: a table's path is relative" in proc.stderr


def test_a_broken_table_stops_the_run_before_any_output(tree, tmp_path):
    (tree / "ncci/mue.csv").write_text(f"{MUE_HEADER}\n97110,six,\"3 x\",r\n")     # value not a number, line 3
    sessions = tmp_path / "s.jsonl"
    sessions.write_text(json.dumps({**session(("97110", 30)), "payer": "medicare"}) + "\n")
    proc = run_cli("bill", "--rules", str(tree), str(sessions))
    assert proc.returncode == 2 and proc.stdout == ""
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {tree / 'ncci/mue.csv'}:3: ")
    assert "Traceback" not in proc.stderr


def test_validate_reports_rows_and_the_ptp_date_range(tree):
    proc = run_cli("validate", str(tree))
    assert proc.returncode == 0, proc.stderr
    # PAIRS: 5 rows, effective dates 2015-01-01 (line 6) to 2025-01-01 (line 7); MUE: 1 row
    assert (f"table {tree}/ncci/ptp.txt (ptp, named by {tree}/clinic.yaml): 5 rows, effective dates 2015-01-01 to "
            "2025-01-01\n") in proc.stderr
    assert f"table {tree}/ncci/mue.csv (mue, named by {tree}/clinic.yaml): 1 row\n" in proc.stderr


def test_explain_shows_the_edit_with_its_table_row_and_why_not(tree, tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({**session(("97110", 23), ("97112", 23)), "payer": "clinic"}))
    proc = run_cli("explain", "--rules", str(tree), str(path), "--why-not", "ncci-ptp")
    assert "table extra/ncci/ptp.txt:3: column 1 97110, column 2 97112, effective 2020-01-01" in proc.stdout
    assert "97110 / 97112: in force: applied" in proc.stdout
    assert "97112 / 97110: no row in the PTP table(s)" in proc.stdout


# ---------------------------------------------------------------- the bundled excerpt, audit, compare

ROOT = Path(__file__).resolve().parents[1]
PAIR_SESSION = {"session_id": "P", "payer": "medicare", "date_of_service": "2025-03-04", "discipline": "PT",
                "services": [{"code": "97140", "minutes": 15}, {"code": "97530", "minutes": 23}]}


def test_medicare_applies_its_excerpt_row_on_both_engines(bill):
    res = bill(PAIR_SESSION)
    # 38 min -> 3 units: 97140 1 full (0 left), 97530 1 full (8 left) + the remaining unit -> 97140 x1, 97530 x2
    assert {l["code"]: l["units"] for l in res["lines"]} == {"97140": 1, "97530": 2}
    (edit,) = [w for w in res["warnings"] if w["rule"] == "ncci-ptp"]
    assert edit["severity"] == "error" and edit["codes"] == ["97530", "97140"]
    assert edit["table"] == "rules/ncci/ptp-practitioner-excerpt.txt:9"
    (entry,) = [t for t in res["trace"] if t["rule"] == "ncci-ptp"]
    path, line = entry["source"].rsplit(":", 1)
    assert (ROOT / path).read_text().splitlines()[int(line) - 1].strip() == "ptp: [ncci/ptp-practitioner-excerpt.txt]"
    row = (ROOT / "rules/ncci/ptp-practitioner-excerpt.txt").read_text().splitlines()[8]
    assert row.startswith("97140\t97530\t\t19960101\t*\t1\t")


def test_the_audit_log_stores_the_table_and_replay_reproduces_or_says_it_is_missing(tree, tmp_path):
    import sqlite3
    path, db = tmp_path / "s.json", tmp_path / "log.sqlite"
    path.write_text(json.dumps({**session(("97110", 23), ("97112", 23)), "payer": "clinic"}))
    assert run_cli("bill", "--rules", str(tree), str(path), "--audit-db", str(db)).returncode == 1   # an edit error
    (row,) = json.loads(run_cli("audit", str(db), "--format", "json").stdout)
    # clinic's tables, and medicare's excerpt it replaced (the replay rebuilds medicare.yaml, which names it)
    assert {t["file"] for t in row["tables"]} == {"extra/ncci/ptp.txt", "extra/ncci/mue.csv",
                                                  "rules/ncci/ptp-practitioner-excerpt.txt"}
    (tree / "ncci/ptp.txt").unlink()        # replay needs only the log
    replay = run_cli("audit", str(db), "--replay")
    assert replay.returncode == 0 and "1 reproduced" in replay.stdout, replay.stdout + replay.stderr
    with sqlite3.connect(db) as con:
        sha = next(t["sha256"] for t in row["tables"] if t["file"] == "extra/ncci/ptp.txt")
        con.execute("DELETE FROM rule_files WHERE sha256 = ?", (sha,))
    replay = run_cli("audit", str(db), "--replay")
    assert "logged table extra/ncci/ptp.txt is missing or does not match its sha256" in replay.stdout + replay.stderr


def test_compare_says_where_payers_differ_on_an_edit(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps(PAIR_SESSION))
    # example-full-unit names no tables: only medicare has the 97140/97530 edit
    proc = run_cli("compare", str(path), "--payers", "medicare,example-full-unit")
    assert "Payers differ on the claim edits (NCCI tables) of 97530" in proc.stdout
    same = run_cli("compare", str(path), "--payers", "medicare,example-midpoint")
    assert "claim edits" not in same.stdout


def test_an_empty_list_drops_the_parents_tables_of_that_kind(tmp_path):
    root = tmp_path / "extra"
    root.mkdir()
    (root / "bare.yaml").write_text("payer: bare\nname: Bare\nextends: medicare\ntables:\n  ptp: []\n")
    payer = Registry([root]).resolve("bare", "2025-03-04")
    assert not payer.edits and payer.edits.ptp == ()        # medicare's excerpt is not inherited


def test_explain_json_lists_the_edits_with_their_rows(tree, tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({**session(("97110", 23), ("97112", 23)), "payer": "clinic"}))
    proc = run_cli("explain", "--rules", str(tree), str(path), "--format", "json", "--why-not", "ncci-mue")
    (doc,) = json.loads(proc.stdout) if proc.stdout.lstrip().startswith("[") else [json.loads(proc.stdout)]
    (edit,) = doc["edits"]
    # 97110/97112 is row 3 of PAIRS (indicator 0). 23 + 23 = 46 min -> 3 units, each 1 full with 8 left
    # over: a tie, and the tie-break (minutes, then order) gives the unit to 97110 -> 97110 x2, at its MUE
    # of 2 (MAI 3): no MUE edit
    assert (edit["rule"], edit["table"], edit["source"]) == ("ncci-ptp", "extra/ncci/ptp.txt:3", "extra/clinic.yaml:5")
    assert edit["row"].startswith("column 1 97110, column 2 97112, effective 2020-01-01, deletion * (in force), "
                                  "modifier indicator 0")
    (why,) = doc["why_not"]
    assert why["fired"] == 0
    assert "97110: 2 units on the date <= MUE 2 (MAI 3) [table extra/ncci/mue.csv:4]" in why["checks"]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(st.sampled_from(CODES), st.sampled_from(CODES), DATES,
                               st.one_of(st.just("*"), DATES), st.sampled_from([0, 1, 9])), min_size=1, max_size=12),
       mues=st.lists(st.tuples(st.sampled_from(CODES), st.integers(1, 6), st.sampled_from([1, 2, 3])),
                     min_size=1, max_size=4, unique_by=lambda r: r[0]),
       sessions=st.lists(st.tuples(
           st.lists(st.tuples(st.sampled_from(CODES), st.integers(1, 5),
                              st.sampled_from([("GP",), ("GP", "59"), ("GP", "XS")])), min_size=1, max_size=4),
           st.sampled_from(["2016-06-01", "2021-03-01", "2026-01-01", None])), min_size=1, max_size=8))
def test_one_payers_tables_give_each_session_of_a_batch_its_own_edits(tmp_path, rows, mues, sessions):
    """One payer's tables across a batch (its row texts, EditTables.texts, fill as it goes): every session's
    edits equal a naive scan whatever came before, and changing a returned result never changes a later one."""
    rows = [r for r in rows if r[3] == "*" or r[3] > r[2]]
    shared = tables(tmp_path, rows, mues)       # one payer's tables: the row texts (EditTables.texts) are shared
    # each session twice, and beside it the same codes with 6 more units each (over every MUE value here):
    # a cache that forgot the units would give those the first one's edits
    sessions = [(v, d) for lines, d in sessions for v in (lines, [(c, u + 6, m) for c, u, m in lines])]
    for lines, date in sessions + sessions:
        res = result(*[(c, u, list(m)) for c, u, m in lines])
        E.apply(res, date, shared)
        got = [(w["severity"], w["rule"], w["codes"][0], w["table"]) for w in res["warnings"]]
        if date is not None:
            assert got == naive(rows, mues, lines, date)
        for w in res["warnings"]:
            w["codes"].append("00000")
            w["message"] = "changed"
        for t in res["trace"]:
            t["facts"].append("changed")
    again = result(*[(c, u, list(m)) for c, u, m in sessions[0][0]])
    E.apply(again, sessions[0][1], shared)
    assert all("00000" not in w["codes"] and w["message"] != "changed" for w in again["warnings"])
    assert all(t["facts"] == ["session"] for t in again["trace"])


def test_two_ptp_tables_give_their_edits_by_code_place_then_table_path_then_line(tmp_path):
    """A payer naming two PTP files (the "z" one first): the edits come by the column 2 code's place among
    the billed codes, then column 1's, then the table's path, then the row's line, whatever order the payer
    names the tables in. Lines 97530, 97110, 97140 (places 0, 1, 2); rows, worked by hand:
    z/ptp.txt line 3: 97140/97530 (ind 1), line 4: 97530/97110 (ind 0);
    a/ptp.txt line 3: 97110/97530 (ind 0), line 4: 97140/97530 (ind 1).
    Column 2 97530 (place 0): column 1 97110 (place 1): a:3; column 1 97140 (place 2): a:4 then z:3.
    Column 2 97110 (place 1): column 1 97530 (place 0): z:4."""
    z = load_ptp(ptp_file(tmp_path / "z" / "ptp.txt", [("97140", "97530", "20200101", "*", 1),
                                                        ("97530", "97110", "20200101", "*", 0)]), "z/ptp.txt")
    a = load_ptp(ptp_file(tmp_path / "a" / "ptp.txt", [("97110", "97530", "20200101", "*", 0),
                                                        ("97140", "97530", "20200101", "*", 1)]), "a/ptp.txt")
    edits = E.EditTables((z, a), (), {"ptp": "t/payer.yaml:9"})
    res = result(("97530", 1), ("97110", 1), ("97140", 1))
    E.apply(res, "2024-01-01", edits)
    assert [w["table"] for w in res["warnings"]] == ["a/ptp.txt:3", "a/ptp.txt:4", "z/ptp.txt:3", "z/ptp.txt:4"]
