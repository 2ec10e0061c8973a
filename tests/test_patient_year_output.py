"""The patient's year where billing staff read it (issue 13 items 1, 2 and 6): line amounts and the KX /
visit-limit steps in `bill --format table` and `csv`, the running total line by line in `explain` in the
issue's format ("2,435.00 + 97110 60.00 = 2,495.00 > 2,480.00 (2026) → KX"), `compare` naming the
counters that differ, and Medicare's thresholds as data, worked by hand at their boundaries.

Hand-worked values use the SYNTHETIC schedule rules/private_payers/fees/synthetic-example.csv: 97110 $29.00
a unit in 2025, $30.00 from 2026; 97140 $28.00; 97530 $40.00 (no dates; CQ row $33.00); 97112 $35.00;
97165 $100.00; 92507 $90.00; no row for 97035. Thresholds: docs/domain.md §18.2 (and the shared domain
notes §9.3): 2022 $2,150, 2023 $2,230, 2024 $2,330 [CERTAIN]; 2025 $2,410 [secondary]; 2026 $2,480
[UNCONFIRMED]; targeted review $3,000 each year to 2027.
"""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from engine.counters import apply_all
from engine.render import to_table

from conftest import session_from

ROOT = Path(__file__).resolve().parents[1]
FEES = "example-medicare-fees"
VISITS = "example-visit-limits"


def cli(*args, stdin=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    return subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, env=env, input=stdin, timeout=120)


def pt(sid, date, *services, payer=FEES, discipline="PT", **extra):
    return {"session_id": sid, "payer": payer, "patient_id": "P-7", "date_of_service": date,
            "discipline": discipline,
            "services": [{"code": c, "minutes": m, **({"provider": p} if p else {})}
                         for c, m, p in (s if len(s) == 3 else (*s, None) for s in services)], **extra}


def jsonl(tmp_path, *sessions, name="in.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(s) + "\n" for s in sessions))
    return path


def kx(result) -> list:
    return [line["code"] for line in result["lines"] if "KX" in line["modifiers"]]


def run(biller, sessions: list) -> list:
    parsed = [session_from(s, i) for i, s in enumerate(sessions, 1)]
    results = [biller.bill(s) for s in parsed]
    apply_all(biller.registry.resolve, parsed, results)
    return results


# --- bill --format table ---------------------------------------------------------------------------

def test_table_shows_each_lines_amount_and_the_sessions_total(tmp_path):
    # 2026: 97110 30 min + 97140 15 min = 45 min = 3 units (97110 x2, 97140 x1); 2 × 30.00 = 60.00,
    # 1 × 28.00 = 28.00; the session's amount 88.00
    proc = cli("bill", jsonl(tmp_path, pt("A1", "2026-03-02", ("97110", 30), ("97140", 15))), "--format", "table")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    header = next(l for l in lines if l.strip().startswith("Code"))
    assert header.split() == ["Code", "Min", "Units", "Modifiers", "Amount", "Rules"]
    rows = {l.split()[0]: l.split() for l in lines if l.strip()[:5] in ("97110", "97140")}
    assert rows["97110"][:5] == ["97110", "30", "2", "GP", "60.00"]
    assert rows["97140"][:5] == ["97140", "15", "1", "GP", "28.00"]
    assert any(l.strip() == "Timed: 45 min billed as 3 units; total 3 units; amount 88.00" for l in lines), lines


def test_a_table_without_amounts_has_no_amount_column(tmp_path):
    # Medicare names no fee schedule: the table is as before (no Amount column, no amount total)
    proc = cli("bill", jsonl(tmp_path, pt("M1", "2026-03-02", ("97110", 30), payer="medicare")), "--format", "table")
    assert "Amount" not in proc.stdout and "amount" not in proc.stdout, proc.stdout


def test_table_line_without_an_amount_shows_a_dash_and_the_warning(tmp_path):
    # 97035 has no row in the synthetic schedule: no amount ("-"), a warning; 97110 2 × 30.00 = 60.00
    # (97110 30 + 97035 10 = 40 min = 3 units: 97110 2 full units, the third to 97035's 10 leftover minutes)
    proc = cli("bill", jsonl(tmp_path, pt("A1", "2026-03-02", ("97110", 30), ("97035", 10))), "--format", "table")
    rows = {l.split()[0]: l.split() for l in proc.stdout.splitlines() if l.strip()[:5] in ("97110", "97035")}
    assert rows["97035"][:5] == ["97035", "10", "1", "GP", "-"]
    assert rows["97110"][4] == "60.00"
    assert "WARNING fee-schedule [97035]: 97035: no amount in the fee schedule" in proc.stdout
    assert "; amount 60.00" in proc.stdout


def test_table_shows_the_kx_crossing_and_the_limit_warnings(tmp_path):
    # KX: 2,400 + 97110 60.00 = 2,460.00 (not past 2,480); + 97140 28.00 = 2,488.00 > 2,480.00 -> KX on 97140;
    # the next session (given first) 2,488 + 60 = 2,548 -> KX on 97110
    src = jsonl(tmp_path, pt("A2", "2026-03-09", ("97110", 30)),
                pt("A1", "2026-03-02", ("97110", 30), ("97140", 15), year_to_date={"pt_slp": 2400}))
    proc = cli("bill", src, "--format", "table")
    out = proc.stdout
    assert out.index("Session A2") < out.index("Session A1")           # input order
    a1 = out[out.index("Session A1"):]
    assert "Patient's year: kx-threshold: 2,460.00 + 97140 28.00 = 2,488.00 > 2,480.00 (2026) → KX" in a1
    assert "97110 60.00 = 2,460.00" not in a1          # a line that sets nothing off is not shown
    a2 = out[:out.index("Session A1")]
    assert "Patient's year: kx-threshold: 2,488.00 + 97110 60.00 = 2,548.00 > 2,480.00 (2026) → KX" in a2
    # the visit limit: 19 visits before -> visit 20 warns, visit 21 is held (an error: exit 1)
    src = jsonl(tmp_path, pt("V1", "2026-03-02", ("97110", 30), payer=VISITS, year_to_date={"visits": 19}),
                pt("V2", "2026-03-09", ("97110", 30), payer=VISITS), name="v.jsonl")
    proc = cli("bill", src, "--format", "table")
    assert proc.returncode == 1
    v1, v2 = proc.stdout.split("\n\n")
    assert "WARNING visit-limit [97110]: visit 20 of the 20 visits a year" in v1
    assert "Patient's year: visit-limit: 19 + visit = 20 >= 20 (2026) → warning" in v1
    assert "ERROR   visit-limit [97110]: held: visit 21 is past the 20 visits a year" in v2
    assert "Patient's year: visit-limit: 20 + visit = 21 > 20 (2026) → hold" in v2


def test_table_with_amounts_is_the_same_with_jobs_2_and_fits_the_width(tmp_path):
    sessions = [pt(f"S{i}", f"2026-0{1 + i % 9}-1{i % 10}", ("97110", 30 + i), ("97140", 15), ("97112", 20),
                   year_to_date={"pt_slp": 2300}) for i in range(12)]
    for i, s in enumerate(sessions):
        s["patient_id"] = f"P-{i % 3}"
    src = jsonl(tmp_path, *sessions)
    one, two = (cli("bill", src, "--format", "table", "--jobs", j) for j in ("1", "2"))
    assert one.stdout == two.stdout and "Amount" in one.stdout and "→ KX" in one.stdout
    assert max(len(l) for l in one.stdout.splitlines()) <= 100


CODE = st.sampled_from(["97110", "97112", "97140", "97530"])
LINE = st.fixed_dictionaries({"code": CODE, "minutes": st.integers(0, 9999), "units": st.integers(1, 99),
                              "modifiers": st.lists(st.sampled_from(["GP", "CQ", "59", "KX"]), max_size=4),
                              "rules": st.lists(st.sampled_from(["timed-pool", "modifier-gp"]), max_size=2)},
                             optional={"amount": st.decimals(0, 99999, places=2).map(float)})
TRACE = st.fixed_dictionaries({"rule": st.sampled_from(["kx-threshold", "visit-limit", "timed-pool"]),
                               "source": st.just("rules/medicare.yaml:1"), "facts": st.lists(CODE, max_size=2),
                               "effect": st.lists(st.sampled_from(["2,400.00", "+", "97110", "=", "→", "KX"]),
                                                  min_size=1, max_size=30).map(" ".join)})
RESULT = st.fixed_dictionaries({
    "session_id": st.sampled_from(["S-1", "a b c"]), "payer": st.just(FEES), "method": st.just("cms_8_minute"),
    "lines": st.lists(LINE, max_size=5), "unbilled": st.just([]), "warnings": st.just([]),
    "trace": st.lists(TRACE, max_size=4), "total_timed_minutes": st.integers(0, 9999),
    "total_timed_units": st.integers(0, 99), "total_units": st.integers(0, 99)})


@settings(max_examples=100, deadline=None)
@given(RESULT, st.integers(60, 160))
def test_table_with_amounts_fits_the_width_and_shows_every_amount(record, width):
    out = to_table([record], width, frozenset({"kx-threshold", "visit-limit"}))
    assert all(len(l) <= width for l in out.splitlines())
    priced = [l for l in record["lines"] if "amount" in l]
    assert ("Amount" in out) == bool(priced)
    for line in priced:
        assert f"{line['amount']:,.2f}" in out
    if priced:
        assert f"amount {sum(l['amount'] for l in priced):,.2f}" in " ".join(out.split())
    tokens = " ".join(out.split())
    for entry in record["trace"]:
        if entry["rule"] in ("kx-threshold", "visit-limit"):
            assert f"Patient's year: {entry['rule']}: {entry['effect']}" in tokens
        else:
            assert f"Patient's year: {entry['rule']}" not in tokens


# --- csv ---------------------------------------------------------------------------------------------

def test_csv_has_an_amount_column_last(tmp_path):
    # 97110 2 × 30.00 = 60.00; 97035 no row: an empty amount and a warning row; the review warning row
    # (2,950 + 60 = 3,010 > 3,000) has an empty amount too
    src = jsonl(tmp_path, pt("A1", "2026-03-02", ("97110", 30), ("97035", 10), year_to_date={"pt_slp": 2950}),
                pt("M1", "2026-03-02", ("97110", 30), payer="medicare"))
    proc = cli("bill", src, "--format", "csv")
    rows = list(csv.reader(io.StringIO(proc.stdout)))
    assert rows[0] == ["session_id", "payer", "status", "code", "minutes", "units", "modifiers", "rules", "message",
                       "amount"]
    assert all(len(r) == 10 for r in rows)
    billed = {(r[0], r[3]): r for r in rows if r[2] == "billed"}
    assert billed["A1", "97110"][6] == "GP KX" and billed["A1", "97110"][9] == "60.00"
    assert billed["A1", "97035"][9] == ""          # no amount: never guessed
    assert billed["M1", "97110"][9] == ""          # medicare has no fee schedule
    review = [r for r in rows if r[7] == "kx-medical-review"]
    assert len(review) == 1 and review[0][2] == "warning" and review[0][9] == ""
    assert [r[2] for r in rows if r[7] == "fee-schedule"] == ["warning"]


def test_csv_amounts_of_a_thousand_dollars_or_more_have_no_thousands_separator(tmp_path):
    # 97165 (an evaluation: 1 unit) is $100.00; 97530 50 min: 3 units... a big line: 97112 under a schedule row
    # of $1,234.50 a unit × 2 units = 2,469.00 -> written 2469.00 (a spreadsheet reads it as a number)
    tree = tmp_path / "r"
    tree.mkdir()
    (tree / "fees.csv").write_text("code,modifier,amount\n97112,,1234.50\n")
    (tree / "big.yaml").write_text("payer: big\nname: x\nextends: medicare\ntables: {fees: [fees.csv]}\n")
    src = jsonl(tmp_path, pt("B1", "2026-03-02", ("97112", 30), payer="big"))
    rows = list(csv.reader(io.StringIO(cli("bill", src, "--rules", tree, "--format", "csv").stdout)))
    assert rows[1][3] == "97112" and rows[1][9] == "2469.00"
    table = cli("bill", src, "--rules", tree, "--format", "table").stdout
    assert "2,469.00" in table


# --- explain: the running total line by line -----------------------------------------------------------

README_SESSION = {"session_id": "P-7-0302", "payer": FEES, "patient_id": "P-7",
                  "year_to_date": {"pt_slp": 2435.00, "ot": 0}, "date_of_service": "2026-03-02",
                  "discipline": "PT", "services": [{"code": "97110", "minutes": 30}, {"code": "97140", "minutes": 15}]}


def year_lines(text: str) -> list:
    lines = text.splitlines()
    start = lines.index("The patient's year (running totals in date order, then line order):")
    return [l for l in lines[start + 1:lines.index("", start)]]


def test_explain_shows_the_running_total_in_the_issues_format(tmp_path):
    # 2,435 + 97110 2 × 30.00 = 2,495.00 > 2,480.00 -> KX (the issue's example, word for word);
    # 2,495 + 97140 28.00 = 2,523.00 -> KX. The review threshold: 2,495 and 2,523 are not past 3,000.
    proc = cli("explain", jsonl(tmp_path, README_SESSION))
    assert proc.returncode == 0, proc.stderr
    steps = year_lines(proc.stdout)
    where = next(l.rsplit("[", 1)[1] for l in steps if l.startswith("  kx-threshold"))
    assert steps == [
        "  kx-threshold: 2,435.00 + 97110 60.00 = 2,495.00 > 2,480.00 (2026) → KX  [" + where,
        "  kx-medical-review: 2,435.00 + 97110 60.00 = 2,495.00 <= 3,000.00 (2026) → no warning  ["
        + next(l.rsplit("[", 1)[1] for l in steps if l.startswith("  kx-medical-review")),
        "  kx-threshold: 2,495.00 + 97140 28.00 = 2,523.00 > 2,480.00 (2026) → KX  [" + where,
        "  kx-medical-review: 2,495.00 + 97140 28.00 = 2,523.00 <= 3,000.00 (2026) → no warning  ["
        + next(l.rsplit("[", 1)[1] for l in steps if l.startswith("  kx-medical-review")),
    ]
    # the 2026 value's confidence stays visible, beside the row it comes from
    assert where.startswith("rules/medicare.yaml:") and where.endswith(", value UNCONFIRMED]")
    text = (ROOT / where.split(":")[0]).read_text().splitlines()[int(where.split(":")[1].split(",")[0]) - 1]
    assert "year: 2026" in text and "value: 2480" in text and "UNCONFIRMED" in text
    assert "Billed: 97110 x2 GP KX, 97140 x1 GP KX (total 3 units)" in proc.stdout


def test_explain_below_the_threshold_says_no_kx(tmp_path):
    # 2,400 + 97110 60.00 = 2,460.00, not past 2,480.00: no KX; + 97140 28.00 = 2,488.00 > 2,480.00: KX
    session = dict(README_SESSION, year_to_date={"pt_slp": 2400})
    steps = [l.split("  [")[0] for l in year_lines(cli("explain", jsonl(tmp_path, session)).stdout)]
    assert steps[0] == "  kx-threshold: 2,400.00 + 97110 60.00 = 2,460.00 <= 2,480.00 (2026) → no KX"
    assert steps[2] == "  kx-threshold: 2,460.00 + 97140 28.00 = 2,488.00 > 2,480.00 (2026) → KX"
    # from zero in 2025 (threshold 2,410, SECONDARY): 0.00 + 97110 2 × 29.00 = 58.00
    session = dict(README_SESSION, date_of_service="2025-03-02", year_to_date={"pt_slp": 0})
    steps = year_lines(cli("explain", jsonl(tmp_path, session)).stdout)
    assert steps[0].startswith("  kx-threshold: 0.00 + 97110 58.00 = 58.00 <= 2,410.00 (2025) → no KX  [")
    assert steps[0].endswith(", value SECONDARY]")


def test_explain_takes_a_patients_sessions_in_date_order_and_starts_each_from_the_last(tmp_path):
    # given March 9 first: March 2 is walked first (2,400 -> 2,460 -> 2,488), March 9 starts at 2,488
    later = pt("A2", "2026-03-09", ("97110", 30))
    first = pt("A1", "2026-03-02", ("97110", 30), ("97140", 15), year_to_date={"pt_slp": 2400})
    out = cli("explain", jsonl(tmp_path, later, first)).stdout
    a2, a1 = out.split("\nSession A1")
    assert "kx-threshold: 2,488.00 + 97110 60.00 = 2,548.00 > 2,480.00 (2026) → KX" in a2
    assert "kx-threshold: 2,400.00 + 97110 60.00 = 2,460.00 <= 2,480.00 (2026) → no KX" in a1
    # explain --format json: the same steps, with the threshold, the value's row and its confidence
    docs = json.loads(cli("explain", jsonl(tmp_path, later, first), "--format", "json").stdout)
    steps = docs[1]["patient_year"]
    assert steps[0]["threshold"] == "kx-threshold" and steps[0]["confidence"] == "UNCONFIRMED"
    assert steps[0]["step"] == "2,400.00 + 97110 60.00 = 2,460.00 <= 2,480.00 (2026) → no KX"
    assert steps[0]["source"].startswith("rules/medicare.yaml:")


def test_explain_visit_limits_and_authorizations(tmp_path):
    # 11 visits before: V1 is visit 12 (under the limit, and the first authorization covers it), V2 is
    # visit 13: a new authorization (13 > 12, every 12 visits)
    v1 = pt("V1", "2026-03-02", ("97110", 30), payer=VISITS, year_to_date={"visits": 11})
    v2 = pt("V2", "2026-03-09", ("97110", 30), payer=VISITS)
    out = cli("explain", jsonl(tmp_path, v1, v2)).stdout
    s1, s2 = out.split("\nSession V2")
    assert [l.split("  [")[0] for l in year_lines(s1)] == [
        "  visit-limit: 11 + visit = 12 <= 20 (2026) → no warning or hold",
        "  authorization: 11 + visit = 12 <= 12 (every 12) (2026) → no warning"]
    assert [l.split("  [")[0] for l in year_lines("Session V2" + s2)] == [
        "  visit-limit: 12 + visit = 13 <= 20 (2026) → no warning or hold",
        "  authorization: 12 + visit = 13 > 12 (every 12) (2026) → warning"]
    assert all(l.endswith(", value EXAMPLE]") for l in year_lines(s1))
    # visit 20 warns (reached), 21 is held (past)
    v1 = dict(v1, year_to_date={"visits": 19})
    out = cli("explain", jsonl(tmp_path, v1, v2)).stdout
    s1, s2 = out.split("\nSession V2")
    assert "  visit-limit: 19 + visit = 20 >= 20 (2026) → warning  [" in s1
    assert "  visit-limit: 20 + visit = 21 > 20 (2026) → hold  [" in s2


# --- compare: where payers' counters differ --------------------------------------------------------------

def test_compare_names_the_counters_that_differ_across_three_payers(tmp_path):
    # Patient P-7, 2026, year_to_date pt_slp 2,400 and 19 visits; each session 97110 30 min (2 units).
    # medicare: no fee schedule: KX cannot be decided (a warning), no visit limit.
    # example-medicare-fees: A1 2,400 + 60 = 2,460 (no KX); A2 2,460 + 60 = 2,520 > 2,480: KX.
    # example-visit-limits: no fee schedule (KX not decided); A1 visit 20 (warning), A2 visit 21 (held).
    ytd = {"pt_slp": 2400, "ot": 0, "visits": 19}
    src = jsonl(tmp_path, pt("A2", "2026-03-09", ("97110", 30)),
                pt("A1", "2026-03-02", ("97110", 30), year_to_date=ytd))
    proc = cli("compare", src, "--payers", f"medicare,{FEES},{VISITS}", "--format", "json")
    a2, a1 = json.loads(proc.stdout)
    assert a1["counters_differ"] == ["visit-limit"]
    assert a2["counters_differ"] == ["kx-threshold", "visit-limit"]
    assert [kx(a2["results"][p]) for p in ("medicare", FEES, VISITS)] == [[], ["97110"], []]
    assert [w["severity"] for w in a2["results"][VISITS]["warnings"] if w["rule"] == "visit-limit"] == ["error"]
    assert all("cannot be decided" in " ".join(w["message"] for w in a2["results"][p]["warnings"])
               for p in ("medicare", VISITS))
    text = cli("compare", src, "--payers", f"medicare,{FEES},{VISITS}").stdout
    t2, t1 = text.split("\n\nSession A1")[0], text.split("\n\nSession A1")[1].split("\n\nSummary")[0]
    flat2, flat1 = " ".join(t2.split()), " ".join(t1.split())
    assert "Payers' counters differ on this session (the patient's year): kx-threshold, visit-limit" in flat2
    # each payer's step of a counter that differs, so the reader sees why
    assert f"{FEES}: kx-threshold: 2,460.00 + 97110 60.00 = 2,520.00 > 2,480.00 (2026) → KX" in flat2
    assert f"{VISITS}: visit-limit: 20 + visit = 21 > 20 (2026) → hold" in flat2
    assert f"{VISITS}: visit-limit: 19 + visit = 20 >= 20 (2026) → warning" in flat1
    assert f"{FEES}: kx-threshold:" not in flat1          # 2,460: no KX under any payer, so not a difference
    # the summary counts the sessions whose counters differ (both: visit-limit acts on each)
    assert "Summary: 2 sessions, payers differ on 0; their counters (the patient's year) differ on 2" in text


def test_compare_without_patient_fields_says_nothing_of_counters(tmp_path):
    plain = {"session_id": "X", "date_of_service": "2026-03-02", "discipline": "PT",
             "services": [{"code": "97110", "minutes": 30}]}
    proc = cli("compare", jsonl(tmp_path, plain), "--payers", f"medicare,{FEES},{VISITS}", "--format", "json")
    doc, = json.loads(proc.stdout)
    # without patient_id and year_to_date a session is independent (as before the patient's year): no
    # counter acts under any payer
    assert doc["counters_differ"] == []
    assert kx(doc["results"][FEES]) == []


# --- Medicare's thresholds as data, at their boundaries -------------------------------------------------

THRESHOLDS = {2022: (2150, "CERTAIN"), 2023: (2230, "CERTAIN"), 2024: (2330, "CERTAIN"),
              2025: (2410, "SECONDARY"), 2026: (2480, "UNCONFIRMED")}


def test_medicare_yaml_holds_the_thresholds_by_year_with_their_confidence(registry):
    payer = registry.resolve("medicare", "2026-01-01")
    counter, = [c for c in payer.counters if c.id == "therapy-amounts"]
    assert counter.buckets == (("pt_slp", ("PT", "SLP")), ("ot", ("OT",))) and counter.period == "calendar_year"
    kx_, review = counter.thresholds
    assert {v.year: (int(v.value), v.confidence) for v in kx_.values} == THRESHOLDS
    assert kx_.past == (("add_modifier", "KX"),) and kx_.reached == ()
    assert {v.year: int(v.value) for v in review.values} == {y: 3000 for y in range(2022, 2028)}
    assert [a for a, _ in review.past] == ["warn"]


@pytest.mark.parametrize("year", sorted(THRESHOLDS))
def test_kx_at_each_years_threshold_exactly_and_one_dollar_past(billers, year):
    # 97530 30 min = 2 units × 40.00 = 80.00. year_to_date T - 80 -> total T exactly: not past, no KX;
    # T - 79 -> T + 1: KX. The same under both engines.
    value = THRESHOLDS[year][0]
    for biller in billers.values():
        at, past = (run(biller, [pt("s", f"{year}-06-01", ("97530", 30), year_to_date={"pt_slp": value - d})])[0]
                    for d in (80, 79))
        assert (kx(at), kx(past)) == ([], ["97530"]), year


def test_the_3000_review_warning_at_3000_exactly_and_past_it(billers):
    # 2,920 + 80 = 3,000.00: not past (KX, no warning); 2,921 + 80 = 3,001.00: the warning, once per line
    biller = billers["python"]
    at = run(biller, [pt("s", "2026-06-01", ("97530", 30), year_to_date={"pt_slp": 2920})])[0]
    past = run(biller, [pt("s", "2026-06-01", ("97530", 30), year_to_date={"pt_slp": 2921})])[0]
    assert kx(at) == kx(past) == ["97530"]
    assert not [w for w in at["warnings"] if w["rule"] == "kx-medical-review"]
    review, = [w for w in past["warnings"] if w["rule"] == "kx-medical-review"]
    assert review["severity"] == "warning" and "3,001.00" in review["message"] and "3,000.00" in review["message"]
    # OT has its own 3,000: an OT total of 2,990 + 97165 100.00 = 3,090 warns; PT+SLP untouched
    ot = run(biller, [pt("s", "2026-06-01", ("97165", 30), discipline="OT", year_to_date={"pt_slp": 0, "ot": 2990})])[0]
    assert [w["codes"] for w in ot["warnings"] if w["rule"] == "kx-medical-review"] == [["97165"]]


def test_december_31_and_january_1_are_two_years(billers):
    # year_to_date 2,400 is 2025's (the first session's year). Dec 31 2025: 2,400 + 97530 80 = 2,480 >
    # 2,410 (2025) -> KX. Jan 1 2026 starts from 0: 80, no KX; however the input is ordered.
    biller = billers["python"]
    dec = pt("d", "2025-12-31", ("97530", 30), year_to_date={"pt_slp": 2400})
    jan = pt("j", "2026-01-01", ("97530", 30))
    for order in ([dec, jan], [jan, dec]):
        results = {r["session_id"]: r for r in run(biller, order)}
        assert (kx(results["d"]), kx(results["j"])) == (["97530"], [])
    # a year_to_date given on the January session only is still the patient's amount before the input's
    # sessions (design.md §4), so it seeds the year of the patient's first session, 2025 (docs/domain.md §18):
    # Dec 31: 2,420 + 80 = 2,500 > 2,410 -> KX; Jan 1 2026 starts from 0: 80, no KX
    bare_dec = {k: v for k, v in dec.items() if k != "year_to_date"}
    results = {r["session_id"]: r for r in run(biller, [dict(jan, year_to_date={"pt_slp": 2420}), bare_dec])}
    assert (kx(results["d"]), kx(results["j"])) == (["97530"], [])


def test_pt_and_slp_add_up_and_ot_does_not_across_a_patients_sessions(billers):
    # pt_slp 2,300: PT 97530 80 -> 2,380; SLP 92507 90 -> 2,470 (not past 2,480); PT 97140 28 -> 2,498: KX.
    # OT 97165 100 between them counts in ot (0 -> 100): no KX, and does not move pt_slp.
    biller = billers["python"]
    sessions = [pt("1", "2026-02-01", ("97530", 30), year_to_date={"pt_slp": 2300, "ot": 0}),
                pt("2", "2026-02-02", ("92507", 30), discipline="SLP"),
                pt("3", "2026-02-03", ("97165", 30), discipline="OT"),
                pt("4", "2026-02-04", ("97140", 15))]
    assert [kx(r) for r in run(biller, sessions[::-1])][::-1] == [[], [], [], ["97140"]]


def test_the_cq_accrual_is_a_payer_setting_labelled_unconfirmed(tmp_path, billers):
    # 97110 30 min by a PTA = 2 units GP CQ, priced from the blank row: 2 × 30.00 × 85% = 51.00.
    # year_to_date 2,425: Medicare accrues the line's (reduced) amount: 2,476.00, not past 2,480 -> no KX.
    # A payer whose setting is 100%: 60.00 -> 2,485.00 > 2,480 -> KX.
    (r,) = run(billers["python"], [pt("s", "2026-06-01", ("97110", 30, "PTA"), year_to_date={"pt_slp": 2425})])
    assert r["lines"][0]["modifiers"] == ["GP", "CQ"] and r["lines"][0]["amount"] == 51.0 and kx(r) == []
    tree = tmp_path / "r"
    tree.mkdir()
    (tree / "full.yaml").write_text(f"payer: full-cq\nname: x\nextends: {FEES}\namounts: "
                                    "{assistant_percent: 100, source: test}\n")
    from engine.billing import Biller
    from engine.loader import Registry
    biller = Biller(Registry([tree]), "python")
    (r,) = run(biller, [pt("s", "2026-06-01", ("97110", 30, "PTA"), payer="full-cq", year_to_date={"pt_slp": 2425})])
    assert r["lines"][0]["amount"] == 60.0 and kx(r) == ["97110"]
    biller.close()
    # the setting is labelled UNCONFIRMED where it is set (rules/medicare.yaml, its amounts: block)
    text = (ROOT / "rules/medicare.yaml").read_text()
    start = text.index("\namounts:")
    block = text[start - 600:text.index("\n\n", start + 1)]     # the comment above the block and the block
    assert "UNCONFIRMED" in block and "85%" in block


def test_year_to_date_without_a_fee_schedule_warns_and_no_patient_id_stays_independent(billers):
    biller = billers["python"]
    # medicare has no fee schedule: the running total cannot be worked: a warning, no KX, on each session
    results = run(biller, [pt("a", "2026-06-01", ("97530", 30), payer="medicare", year_to_date={"pt_slp": 9000}),
                           pt("b", "2026-06-02", ("97530", 30), payer="medicare")])
    for r in results:
        assert kx(r) == []
        assert [w["severity"] for w in r["warnings"] if "cannot be decided" in w["message"]] == ["warning"]
    # no patient_id: two sessions that would cross together (2 × 80 from 2,400) stay independent: the second
    # is not added to the first, and without year_to_date it starts nowhere: no KX, no counter warning
    plain = [dict(pt(s, "2026-06-0" + s, ("97530", 30)), patient_id=None) for s in "12"]
    for p in plain:
        p.pop("patient_id")
    plain[0]["year_to_date"] = {"pt_slp": 2400}
    a, b = run(biller, plain)
    assert kx(a) == [] and kx(b) == []             # 2,400 + 80 = 2,480: not past; b is not added on
    plain[1]["year_to_date"] = {"pt_slp": 2400}
    a, b = run(biller, plain)
    assert kx(a) == kx(b) == []                    # each its own 2,480: neither past
    assert not any(w["rule"].startswith("kx") for r in (a, b) for w in r["warnings"])


def test_a_payer_with_another_kx_threshold_and_buckets_is_yaml_only(tmp_path):
    # KX is one counter: a child payer replaces Medicare's therapy-amounts (same id) with its own threshold
    # (1,000 in 2026) and buckets (PT alone; OT and SLP together) and no review warning, in YAML only.
    # PT: 950 + 97110 2 × 30.00 = 1,010 > 1,000 -> KX. SLP 92507 90.00 from ot_slp 950 -> 1,040: KX, and
    # it does not move PT. Under example-medicare-fees the same PT line is 950 + 60 = 1,010: no KX.
    tree = tmp_path / "r"
    tree.mkdir()
    (tree / "kx1000.yaml").write_text(
        f"payer: kx1000\nname: x\nextends: {FEES}\ncounters:\n  - id: therapy-amounts\n    description: d\n"
        "    source: s\n    counts: amount\n    buckets: {pt: [PT], ot_slp: [OT, SLP]}\n    thresholds:\n"
        "      - id: kx-threshold\n        values: [{year: 2026, value: 1000, confidence: EXAMPLE}]\n"
        "        past: [{add_modifier: KX}]\n")
    from engine.billing import Biller
    from engine.loader import Registry
    biller = Biller(Registry([tree]), "python")
    ytd = {"pt": 950, "ot_slp": 950}
    pt_, slp = run(biller, [pt("1", "2026-03-02", ("97110", 30), payer="kx1000", year_to_date=ytd),
                            pt("2", "2026-03-03", ("92507", 30), payer="kx1000", discipline="SLP")])
    assert (kx(pt_), kx(slp)) == (["97110"], ["92507"])
    assert not any(w["rule"] == "kx-medical-review" for r in (pt_, slp) for w in r["warnings"])
    step, = [t["effect"] for t in slp["trace"] if t["rule"] == "kx-threshold"]
    assert step == "950.00 + 92507 90.00 = 1,040.00 > 1,000.00 (2026) → KX [value EXAMPLE]"
    biller.close()
    (r,) = run(Biller(Registry(), "python"), [pt("1", "2026-03-02", ("97110", 30), year_to_date={"pt_slp": 950})])
    assert kx(r) == []


def test_bundled_patient_scenarios_run_in_payrules_test():
    # the example payers' scenario files state patients' sequences (patient:), and `payrules test` runs
    # them: KX crossing, buckets, the $3,000 warning, a year boundary; visit limit and authorization
    import yaml
    named = {}
    for name in ("example-medicare-fees", "example-visit-limits"):
        doc = yaml.safe_load((ROOT / f"rules/private_payers/{name}.tests.yaml").read_text())
        named[name] = [s["name"] for s in doc["scenarios"] if "patient" in s]
    assert len(named["example-medicare-fees"]) >= 4 and len(named["example-visit-limits"]) >= 1
    proc = cli("test", *(f"rules/private_payers/{n}.tests.yaml" for n in named))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for payer, names in named.items():
        for scenario in names:
            assert any(l.startswith("ok") and l.endswith(f"{payer}: {scenario}") for l in proc.stdout.splitlines())
