"""The patient's year (issue 13 items 1-3, 6; docs/domain.md §18): fee-schedule amounts, the Medicare KX
threshold and $3,000 review warning as counter data, the example payer's visit limit and authorization.

Expected values are worked by hand from the SYNTHETIC schedule rules/private_payers/fees/synthetic-example.csv
(97110 $29.00 in 2025, $30.00 from 2026; 97140 $28; 97530 $40, with CQ $33; 97112 $35; 97165 $100;
92507 $90; no row for 97035) and the thresholds of docs/domain.md §18.2 (2024 $2,330; 2025 $2,410; 2026
$2,480; review $3,000).
"""
from __future__ import annotations

import json
import random
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from engine.counters import PatientYear, apply_all
from engine.errors import RuleFileError
from engine.fees import load_fees
from engine.loader import Registry
from engine.tables import TableError

from conftest import ENGINES, session_from

ROOT = Path(__file__).resolve().parents[1]
FEES = "example-medicare-fees"


def run(biller, sessions: list, payer=FEES) -> list:
    """Bill session dicts and apply each patient's counters (apply_all sorts by patient and date)."""
    parsed = [session_from({"payer": payer, "session_id": f"s{i}", **s}, i) for i, s in enumerate(sessions, 1)]
    results = [biller.bill(s) for s in parsed]
    apply_all(biller.registry.resolve, parsed, results)
    return results


def pt(date, *services, **extra):
    return {"date_of_service": date, "discipline": extra.pop("discipline", "PT"), "patient_id": "P-1",
            "services": [{"code": c, "minutes": m, **({"provider": p} if p else {})} for c, m, p in
                         (s if len(s) == 3 else (*s, None) for s in services)], **extra}


def kx(result) -> list:
    return [line["code"] for line in result["lines"] if "KX" in line["modifiers"]]


def rules(result) -> list:
    return [w["rule"] for w in result["warnings"]]


@pytest.fixture(params=ENGINES)
def biller(request, billers):
    return billers[request.param]


# --- amounts ---------------------------------------------------------------------------------------

def test_amount_is_units_times_the_schedule_row_for_the_date(biller):
    # 97110 30 min -> 2 units; 2026 row $30.00 -> 60.00; 2025 row $29.00 -> 58.00; 97140 15 min 1 × 28
    r26, r25 = run(biller, [pt("2026-03-02", ("97110", 30), ("97140", 15)), pt("2025-03-02", ("97110", 30))])
    assert [(l["code"], l["amount"]) for l in r26["lines"]] == [("97110", 60.0), ("97140", 28.0)]
    assert [l["amount"] for l in r25["lines"]] == [58.0]
    entry = next(t for t in r26["trace"] if t["rule"] == "fee-schedule")
    assert entry["table"] == "rules/private_payers/fees/synthetic-example.csv:5"      # the 2026 row of 97110


def test_a_code_without_an_amount_gets_a_warning_and_no_amount(biller):
    (r,) = run(biller, [pt("2026-03-02", ("97035", 15), ("97110", 15))])
    line = next(l for l in r["lines"] if l["code"] == "97035")
    assert "amount" not in line
    assert any(w["rule"] == "fee-schedule" and w["codes"] == ["97035"] for w in r["warnings"])
    assert next(l for l in r["lines"] if l["code"] == "97110")["amount"] == 30.0


def test_cq_line_from_the_blank_row_is_85_percent_and_a_cq_row_wins(biller):
    # PTA alone 15 min of 97110: 1 unit GP CQ; blank row 30.00 × 85% = 25.50. 97530 has a CQ row: 33.00.
    (r,) = run(biller, [pt("2026-03-02", ("97110", 15, "PTA"), ("97530", 15, "PTA"))])
    assert [(l["code"], l["modifiers"], l["amount"]) for l in r["lines"]] == [
        ("97110", ["GP", "CQ"], 25.5), ("97530", ["GP", "CQ"], 33.0)]


def test_the_85_percent_starts_in_2022(biller):
    # 97112 $35 (no dates): PTA unit in 2021 -> 35.00 (before the reduction); in 2022 -> 29.75
    r21, r22 = run(biller, [pt("2021-06-01", ("97112", 15, "PTA")), pt("2022-06-01", ("97112", 15, "PTA"))])
    assert r21["lines"][0]["modifiers"] == r22["lines"][0]["modifiers"] == ["GP", "CQ"]
    assert (r21["lines"][0]["amount"], r22["lines"][0]["amount"]) == (35.0, 29.75)


def test_the_assistant_percent_is_a_payer_setting(tmp_path):
    tree = tmp_path / "r"
    tree.mkdir()
    (tree / "fees.csv").write_text("code,modifier,amount\n97110,,30.00\n")
    (tree / "full.yaml").write_text("payer: full-cq\nname: x\nextends: medicare\ntables: {fees: [fees.csv]}\n"
                                    "amounts: {assistant_percent: 100, source: test}\n")
    from engine.billing import Biller
    biller = Biller(Registry([tree]), "python")
    (r,) = run(biller, [pt("2026-03-02", ("97110", 15, "PTA"))], payer="full-cq")
    assert r["lines"][0]["amount"] == 30.0          # 100%: no reduction


# --- fee schedule reader ---------------------------------------------------------------------------

def write(tmp_path, text, name="f.csv"):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def test_fee_reader_quirks_bom_crlf_comments_columns_in_any_order(tmp_path):
    text = ("\ufeff# synthetic\r\nAmount,Code,Modifier,Effective_From,Effective_To\r\n\r\n"
            "30.00,97110,,2026-01-01,\r\n29,97110,,,2025-12-31\r\n25.5,97110,CQ,,\r\n")
    table = load_fees(write(tmp_path, text), "f.csv")
    assert table.lookup("97110", ["GP"], "2026-02-01").amount == Decimal("30.00")
    assert table.lookup("97110", ["GP"], "2025-02-01").amount == Decimal("29")
    assert table.lookup("97110", ["GP"], "2025-02-01").where == "f.csv:5"
    assert table.lookup("97110", ["GP", "CQ"], "2026-02-01").where == "f.csv:6"      # the CQ row wins
    assert table.lookup("97140", ["GP"], "2026-02-01") is None
    # a dated row cannot price a session without a date; only an undated one can
    assert table.lookup("97110", ["GP"], None) is None


@pytest.mark.parametrize("row, line, problem", [
    ("97110,,$60.00", 3, "amount: '$60.00' is not an amount"),
    ("97110,,1,234.00,,", 3, "row: 6 cells, the header has 5"),      # a thousands separator splits the row
    ("97110,,60.005", 3, "amount: '60.005' is not an amount"),
    ("9711,,60", 3, "code: '9711' is not a CPT/HCPCS code"),
    ("97110,cq,60", 3, "modifier: 'cq' is not a modifier"),
    ("97110,,60,2026-02-30,", 3, "effective_from: '2026-02-30' is not a date"),
    ("97110,,60,2026-03-01,2026-01-01", 3, "effective_to: effective_to is before effective_from"),
    ("97110,,30,,", 3, "code: a second row for 97110 (blank modifier) in force on the same days as line 2"),
])
def test_a_bad_fee_row_is_a_file_line_error(tmp_path, row, line, problem):
    path = write(tmp_path, "code,modifier,amount,effective_from,effective_to\n97110,,30,,\n" + row + "\n")
    with pytest.raises(TableError) as info:
        load_fees(path, "fees/f.csv")
    error = info.value
    assert (error.file, error.line) == ("fees/f.csv", line)
    assert f"{error.path}: {error.message}".startswith(problem), str(error)


def test_a_fee_schedule_without_its_columns_is_an_error(tmp_path):
    with pytest.raises(TableError, match="no amount column"):
        load_fees(write(tmp_path, "code,modifier,price\n97110,,30\n"), "f.csv")


def test_a_broken_fee_schedule_stops_the_run_with_file_line(tmp_path):
    tree = tmp_path / "r"
    (tree / "fees").mkdir(parents=True)
    (tree / "fees" / "bad.csv").write_text("code,modifier,amount\n97110,,30\n97140,,abc\n")
    (tree / "p.yaml").write_text("payer: p\nname: x\nextends: medicare\ntables: {fees: [fees/bad.csv]}\n")
    session = tmp_path / "s.json"
    session.write_text(json.dumps({"payer": "p", "services": [{"code": "97110", "minutes": 30}]}))
    proc = subprocess.run([sys.executable, "-m", "engine", "bill", str(session), "--rules", str(tree)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert "bad.csv:3: amount: 'abc' is not an amount" in proc.stderr and "Traceback" not in proc.stderr


# --- KX ----------------------------------------------------------------------------------------------

def test_kx_on_every_line_past_the_threshold_the_crossing_line_included(biller):
    # 2026, threshold 2,480: 2,400 + 97110 60 = 2,460 (not past); + 97140 28 = 2,488 > 2,480 -> KX on 97140
    (r,) = run(biller, [pt("2026-03-02", ("97110", 30), ("97140", 15), year_to_date={"pt_slp": 2400})])
    assert kx(r) == ["97140"]
    step = next(t for t in r["trace"] if t["rule"] == "kx-threshold")
    assert step["effect"] == "2,460.00 + 97140 28.00 = 2,488.00 > 2,480.00 (2026) → KX [value UNCONFIRMED]"
    assert step["source"].startswith("rules/medicare.yaml:")
    # the value itself is not past it: 2,420 + 60 = 2,480 exactly -> no KX on 97110
    (r,) = run(biller, [pt("2026-03-02", ("97110", 30), year_to_date={"pt_slp": 2420})])
    assert kx(r) == []


def test_kx_walks_sessions_in_date_order_whatever_the_input_order(biller):
    # 2,400 + Feb 60 = 2,460 (no KX); + Mar 60 = 2,520 (KX). Given March first, the result is the same.
    feb = pt("2026-02-01", ("97110", 30), year_to_date={"pt_slp": 2400})
    mar = pt("2026-03-01", ("97110", 30))
    in_order = run(biller, [feb, mar])
    shuffled = run(biller, [mar, feb])
    assert [kx(r) for r in in_order] == [[], ["97110"]]
    assert [kx(r) for r in shuffled] == [["97110"], []]


def test_pt_and_slp_share_a_bucket_and_ot_is_alone(biller):
    # pt_slp 2,470 + SLP 92507 90 = 2,560 > 2,480 -> KX; OT 97165 100 counts in ot (0 + 100): no KX
    slp = pt("2026-03-02", ("92507", 30), discipline="SLP", year_to_date={"pt_slp": 2470, "ot": 0})
    ot = pt("2026-03-03", ("97165", 30), discipline="OT")
    r_slp, r_ot = run(biller, [slp, ot])
    assert kx(r_slp) == ["92507"] and kx(r_ot) == []
    # an OT total past the threshold gives OT KX, and leaves PT alone
    r_ot, r_pt = run(biller, [pt("2026-03-02", ("97165", 30), discipline="OT", year_to_date={"ot": 2400}),
                              pt("2026-03-03", ("97140", 15))])
    assert kx(r_ot) == ["97165"] and kx(r_pt) == []


def test_thresholds_by_year(biller):
    # 2,300 + 97530 2 × 40 = 2,380: past 2024's 2,330 (KX), under 2025's 2,410 (no KX)
    r24 = run(biller, [pt("2024-06-01", ("97530", 30), year_to_date={"pt_slp": 2300})])[0]
    r25 = run(biller, [pt("2025-06-01", ("97530", 30), year_to_date={"pt_slp": 2300})])[0]
    assert (kx(r24), kx(r25)) == (["97530"], [])


def test_a_new_calendar_year_starts_from_zero_and_year_to_date_is_the_first_sessions_year(biller):
    # year_to_date 2,400 is for 2025 (the first session's year): Dec 58 -> 2,458 > 2,410 (KX); January
    # 2026 starts at 0: 60, no KX
    dec = pt("2025-12-20", ("97110", 30), year_to_date={"pt_slp": 2400})
    jan = pt("2026-01-05", ("97110", 30))
    r_dec, r_jan = run(biller, [jan, dec])[::-1]
    assert (kx(r_dec), kx(r_jan)) == (["97110"], [])


def test_a_year_without_a_threshold_is_not_decided(biller):
    (r,) = run(biller, [pt("2027-06-01", ("97530", 30), year_to_date={"pt_slp": 5000})])
    assert kx(r) == []
    assert any(w["rule"] == "kx-threshold" and "2027" in w["message"] for w in r["warnings"])


def test_passing_3000_is_a_warning_and_keeps_kx(biller):
    # 2,950 + 80 = 3,030 > 3,000: KX and the review warning; 2,900 + 80 = 2,980: KX only
    over = run(biller, [pt("2026-06-01", ("97530", 30), year_to_date={"pt_slp": 2950})])[0]
    under = run(biller, [pt("2026-06-01", ("97530", 30), year_to_date={"pt_slp": 2900})])[0]
    assert kx(over) == kx(under) == ["97530"]
    review = [w for w in over["warnings"] if w["rule"] == "kx-medical-review"]
    assert len(review) == 1 and review[0]["severity"] == "warning" and "3,030.00" in review[0]["message"]
    assert "kx-medical-review" not in rules(under)


def test_year_to_date_without_a_fee_schedule_warns_that_kx_cannot_be_decided(biller):
    (r,) = run(biller, [pt("2026-06-01", ("97530", 30), year_to_date={"pt_slp": 9000})], payer="medicare")
    assert kx(r) == []
    assert any(w["rule"] == "kx-threshold" and "cannot be decided" in w["message"] for w in r["warnings"])
    # no patient_id and no year_to_date: as before, nothing about counters
    plain = {"date_of_service": "2026-06-01", "discipline": "PT", "services": [{"code": "97530", "minutes": 30}]}
    (r,) = run(biller, [plain])
    assert kx(r) == [] and not {"kx-threshold", "kx-medical-review"} & set(rules(r))
    assert r["lines"][0]["amount"] == 80.0     # priced all the same


def test_kx_respects_the_four_modifier_limit(biller):
    # GP + documented 59, XE, 76 + KX = 5 modifiers: an error, none dropped
    s = pt("2026-06-01", ("97530", 30), year_to_date={"pt_slp": 3000})
    s["services"][0]["modifiers"] = ["59", "XE", "76"]
    (r,) = run(biller, [s])
    assert r["lines"][0]["modifiers"] == ["GP", "59", "XE", "76", "KX"]
    assert "engine.modifier-limit" in rules(r)


# --- counters as data: the example payer ---------------------------------------------------------------

def test_example_payer_visit_limit_and_authorization(biller):
    sessions = [pt(f"2026-01-{d:02d}", ("97110", 30)) for d in range(1, 27)]
    results = run(biller, sessions, payer="example-visit-limits")
    by_visit = {n: r for n, r in enumerate(results, 1)}
    assert [n for n, r in by_visit.items() if "visit-limit" in rules(r)] == list(range(20, 27))
    assert [w["severity"] for w in by_visit[20]["warnings"] if w["rule"] == "visit-limit"] == ["warning"]
    assert all(w["severity"] == "error" and w["message"].startswith("held: visit")
               for n in range(21, 27) for w in by_visit[n]["warnings"] if w["rule"] == "visit-limit")
    assert [n for n, r in by_visit.items() if "authorization" in rules(r)] == [13, 25]
    assert "visit 13 needs a new authorization (one covers 12 visits)" in \
        [w["message"] for w in by_visit[13]["warnings"]]
    # a new year starts again: visit 1 of 2027 has no limit warning
    (r,) = run(biller, [pt("2027-01-02", ("97110", 30))], payer="example-visit-limits")
    assert not {"visit-limit", "authorization"} & set(rules(r))


def test_visits_year_to_date_is_by_counter_id(biller):
    # 19 visits before this input: this session is visit 20 (the warning), the next one is held
    results = run(biller, [pt("2026-05-01", ("97110", 30), year_to_date={"visits": 19}),
                           pt("2026-05-02", ("97110", 30))], payer="example-visit-limits")
    assert [[w["severity"] for w in r["warnings"] if w["rule"] == "visit-limit"] for r in results] == \
        [["warning"], ["error"]]


def test_a_counter_naming_an_unknown_code_list_is_a_rule_file_error(tmp_path):
    tree = tmp_path / "r"
    tree.mkdir()
    (tree / "p.yaml").write_text(
        "payer: p\nname: x\nextends: medicare\ncounters:\n  - id: u\n    description: d\n    source: s\n"
        "    counts: units\n    codes: nope\n    thresholds:\n      - id: t\n        values: [{value: 2}, {value: 3}]\n"
        "        past: [{warn: over}]\n")
    with pytest.raises(RuleFileError) as info:
        Registry([tree])
    text = str(info.value)
    assert "p.yaml:9: counters[0].codes: no code list named 'nope'" in text
    assert "p.yaml:12: counters[0].thresholds[0].values[1].year: a second value for every year" in text


# --- state: snapshots, batches, replay ------------------------------------------------------------------

def test_a_session_replayed_from_its_before_state_gives_the_same_decision(biller):
    feb = pt("2026-02-01", ("97110", 30), year_to_date={"pt_slp": 2400})
    mar = pt("2026-03-01", ("97110", 30), ("97140", 15))
    s1, s2 = (session_from({"payer": FEES, "session_id": f"s{i}", **s}, i) for i, s in enumerate((feb, mar), 1))
    year = PatientYear(biller.registry.resolve, "P-1")
    year.apply(s1, biller.bill(s1))
    before = json.loads(json.dumps(year.snapshot()))          # as logged: JSON
    assert before["totals"] == {"example-medicare-fees/therapy-amounts/2026/pt_slp": "2460.00"}
    whole = year.apply(s2, biller.bill(s2))
    alone = PatientYear.restore(biller.registry.resolve, before).apply(s2, biller.bill(s2))
    assert alone == whole and kx(alone) == ["97110", "97140"]


def test_cli_bill_audit_and_replay_reproduce_kx(tmp_path):
    lines = [dict(pt("2026-02-01", ("97110", 30), year_to_date={"pt_slp": 2400}), session_id="a", payer=FEES),
             dict(pt("2026-03-01", ("97110", 30)), session_id="b", payer=FEES)]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(x) + "\n" for x in lines))
    db = tmp_path / "a.db"
    proc = subprocess.run([sys.executable, "-m", "engine", "bill", str(src), "--format", "jsonl", "--audit-db",
                           str(db)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [kx(r) for r in out] == [[], ["97110"]]
    proc = subprocess.run([sys.executable, "-m", "engine", "audit", str(db), "--replay", "--session", "b"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and "1 reproduced, 0 differ" in proc.stdout, proc.stdout + proc.stderr
    proc = subprocess.run([sys.executable, "-m", "engine", "audit", str(db), "--session", "b", "--format", "json"],
                          capture_output=True, text=True, cwd=ROOT)
    logged = json.loads(proc.stdout)[0]["input"]["patient_year"]
    assert logged["before"]["totals"] == {"example-medicare-fees/therapy-amounts/2026/pt_slp": "2460.00"}
    assert logged["after"]["totals"] == {"example-medicare-fees/therapy-amounts/2026/pt_slp": "2520.00"}


def test_the_command_takes_a_patients_sessions_in_date_order_whatever_the_input_order(tmp_path):
    # 2026, threshold 2,480, year_to_date 2,400 on the patient's first session (a, 02-01): 97110 30 min is
    # 2 units x 30.00 = 60.00 a session: a 2,460 (not past), b 2,520 (past -> KX). Given b first, the
    # command still bills a first: b carries KX, a does not; output stays in input order (b, a).
    lines = [dict(pt("2026-03-01", ("97110", 30)), session_id="b", payer=FEES),
             dict(pt("2026-02-01", ("97110", 30)), session_id="a", payer=FEES, year_to_date={"pt_slp": 2400})]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(x) + "\n" for x in lines))
    for jobs in ("1", "2"):
        proc = subprocess.run([sys.executable, "-m", "engine", "bill", str(src), "--format", "jsonl", "--jobs", jobs],
                              capture_output=True, text=True, cwd=ROOT)
        out = [json.loads(x) for x in proc.stdout.splitlines()]
        assert [r["session_id"] for r in out] == ["b", "a"]
        assert kx(out[0]) == ["97110"] and kx(out[1]) == [], proc.stderr


# --- properties --------------------------------------------------------------------------------------

PRICES = {"97110": {"2025": Decimal(29), "2026": Decimal(30)}, "97140": Decimal(28), "97530": Decimal(40),
          "92507": Decimal(90), "97165": Decimal(100)}
THRESHOLD = {"2025": Decimal(2410), "2026": Decimal(2480)}
BUCKET = {"PT": "pt_slp", "SLP": "pt_slp", "OT": "ot"}

a_session = st.fixed_dictionaries({
    "patient": st.sampled_from(["A", "B", "C"]),
    "date": st.dates(min_value=__import__("datetime").date(2025, 11, 1),
                     max_value=__import__("datetime").date(2026, 2, 28)).map(str),
    "discipline": st.sampled_from(["PT", "OT", "SLP"]),
    "services": st.lists(st.tuples(st.sampled_from(sorted(PRICES)), st.integers(8, 60)), min_size=1, max_size=3,
                         unique_by=lambda s: s[0]),
})


def naive(sessions: list, ytd: dict) -> list:
    """Per line (in input order): (code, amount, KX?) worked from the sessions in date order by hand."""
    totals, first, out = {}, {}, {}
    for i in sorted(range(len(sessions)), key=lambda i: (sessions[i]["patient"], sessions[i]["date"], i)):
        s, r = sessions[i], sessions[i]["result"]
        year, bucket = s["date"][:4], BUCKET[s["discipline"]]
        first.setdefault(s["patient"], year)
        key = (s["patient"], year, bucket)
        if key not in totals:
            totals[key] = Decimal(str(ytd[s["patient"]].get(bucket, 0))) if first[s["patient"]] == year \
                else Decimal(0)
        lines = []
        for line in r["lines"]:
            price = PRICES[line["code"]]
            price = price[year] if isinstance(price, dict) else price
            totals[key] += price * line["units"]
            lines.append((line["code"], float(price * line["units"]), totals[key] > THRESHOLD[year]))
        out[i] = lines
    return [out[i] for i in range(len(sessions))]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(a_session, min_size=1, max_size=8, unique_by=lambda s: (s["patient"], s["date"])), st.dictionaries(st.sampled_from(["A", "B", "C"]),
       st.fixed_dictionaries({"pt_slp": st.integers(2000, 2500), "ot": st.integers(2000, 2500)})),
       st.randoms(use_true_random=False))
def test_totals_equal_a_naive_recomputation_in_any_order_and_any_batch_split(billers, sessions, ytd, rnd):
    biller = billers["python"]
    ytd = {p: ytd.get(p, {"pt_slp": 0, "ot": 0}) for p in "ABC"}
    firsts = {}
    for i in sorted(range(len(sessions)), key=lambda i: (sessions[i]["patient"], sessions[i]["date"], i)):
        firsts.setdefault(sessions[i]["patient"], i)
    dicts = [{"session_id": f"s{i}", "payer": FEES, "patient_id": s["patient"], "date_of_service": s["date"],
              "discipline": s["discipline"], "services": [{"code": c, "minutes": m} for c, m in s["services"]],
              **({"year_to_date": ytd[s["patient"]]} if firsts[s["patient"]] == i else {})}
             for i, s in enumerate(sessions)]
    parsed = [session_from(d, i) for i, d in enumerate(dicts, 1)]
    results = [biller.bill(s) for s in parsed]
    apply_all(biller.registry.resolve, parsed, results)
    for s, r in zip(sessions, [biller.bill(p) for p in parsed]):
        s["result"] = r
    expected = naive(sessions, ytd)
    assert [[(l["code"], l["amount"], "KX" in l["modifiers"]) for l in r["lines"]] for r in results] == expected
    # any permutation of the input: the same result for each session (one session a day per patient here:
    # two on one day are taken in input order, by design)
    order = list(range(len(parsed)))
    rnd.shuffle(order)
    again = [biller.bill(parsed[i]) for i in order]
    apply_all(biller.registry.resolve, [parsed[i] for i in order], again)
    assert [again[order.index(i)] for i in range(len(parsed))] == results
    # the ordered sequence split into two batches, the state carried as JSON between them
    ordered = sorted(range(len(parsed)), key=lambda i: (sessions[i]["patient"], sessions[i]["date"], i))
    cut = rnd.randint(0, len(ordered))
    years: dict = {}
    split = {}
    for batch in (ordered[:cut], ordered[cut:]):
        years = {p: PatientYear.restore(biller.registry.resolve, json.loads(json.dumps(y.snapshot())))
                 for p, y in years.items()}
        for i in batch:
            year = years.setdefault(sessions[i]["patient"], PatientYear(biller.registry.resolve, sessions[i]["patient"]))
            split[i] = year.apply(parsed[i], biller.bill(parsed[i]))
    assert [split[i] for i in range(len(parsed))] == results


def test_both_engines_give_identical_results(billers):
    if len(billers) < 2:
        pytest.skip("durable-rules is not installed")
    rnd = random.Random(13)
    sessions = [pt(f"2026-0{rnd.randint(1, 9)}-{rnd.randint(10, 28)}", (rnd.choice(sorted(PRICES)), rnd.randint(8, 70)),
                   discipline=rnd.choice(["PT", "OT", "SLP"]), year_to_date={"pt_slp": 2300, "ot": 2300})
                for _ in range(30)]
    outputs = {name: run(b, sessions) for name, b in billers.items()}
    assert outputs["python"] == outputs["durable"]
    assert any(kx(r) for r in outputs["python"])


# --- scenario sequences ------------------------------------------------------------------------------

def test_a_patient_scenario_names_the_session_that_differs(tmp_path):
    (tmp_path / "kx.tests.yaml").write_text(
        "payer: example-medicare-fees\nscenarios:\n  - name: wrong\n    patient:\n"
        "      - session: {date_of_service: 2026-03-02, discipline: PT, year_to_date: {pt_slp: 2400},\n"
        "                  services: [{code: '97110', minutes: 30}]}\n"
        "        expect: {lines: {'97110 GP': 2}, amounts: {'97110': 60.0}}\n"
        "      - session: {date_of_service: 2026-03-03, discipline: PT, services: [{code: '97110', minutes: 30}]}\n"
        "        expect: {lines: {'97110 GP': 2}}\n"          # wrong: 2,460 + 60 = 2,520 > 2,480 -> KX
        "  - name: both\n    session: {services: [{code: '97110', minutes: 30}]}\n    expect: {total_units: 2}\n"
        "    patient: [{session: {services: [{code: '97110', minutes: 30}]}, expect: {total_units: 2}}]\n")
    proc = subprocess.run([sys.executable, "-m", "engine", "test", str(tmp_path / "kx.tests.yaml")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "kx.tests.yaml:10" in proc.stderr, proc.stderr     # session and patient: refused
    text = (tmp_path / "kx.tests.yaml").read_text()
    (tmp_path / "kx.tests.yaml").write_text(text[:text.index("  - name: both")])
    proc = subprocess.run([sys.executable, "-m", "engine", "test", str(tmp_path / "kx.tests.yaml")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1
    assert "patient[1]: lines.97110: expected x2 GP, got x2 GP KX" in proc.stdout, proc.stdout
    assert "patient[0]" not in proc.stdout


def test_units_of_a_code_list_in_a_plan_year(tmp_path):
    """A counter of the units of one code list, in a plan year starting July 1: YAML only."""
    tree = tmp_path / "r"
    tree.mkdir()
    (tree / "p.yaml").write_text(
        "payer: plan-year\nname: x\nextends: medicare\ncodes:\n  manual: [97140]\ncounters:\n  - id: manual-units\n"
        "    description: d\n    source: s\n    counts: units\n    codes: manual\n    period: plan_year\n"
        "    plan_year_starts: 07-01\n    thresholds:\n      - id: manual-limit\n        values: [{year: 2026, value: 3}]\n"
        "        past: [{error: 'manual therapy unit {total} is past {value} units of the plan year'}]\n")
    from engine.billing import Biller
    biller = Biller(Registry([tree]), "python")
    # 97140 15 min = 1 unit each visit. June 30 is in the plan year of 2025-07-01 (no 2025 value: not
    # decided, a warning); from July 1 the 2026 plan year counts 1, 2, 3 (not past), 4 (past: the error).
    # 97110 is not in the list and never counts.
    dates = ["2026-06-30", "2026-07-01", "2026-07-02", "2026-07-03", "2026-07-04"]
    results = run(biller, [pt(d, ("97140", 15), ("97110", 15)) for d in dates], payer="plan-year")
    limit = [[w["severity"] for w in r["warnings"] if w["rule"] == "manual-limit"] for r in results]
    assert limit == [["warning"], [], [], [], ["error"]]
    assert "manual therapy unit 4 is past 3 units" in results[4]["warnings"][-1]["message"]
    assert results[4]["warnings"][-1]["codes"] == ["97140"]


def test_compare_says_where_payers_counters_differ(tmp_path):
    # 2,400 + 60 = 2,460, then + 60 = 2,520 > 2,480: KX on the second session under example-medicare-fees;
    # example-visit-limits has no fee schedule (and year_to_date gives pt_slp): KX not decided there
    sessions = [dict(pt("2026-03-01", ("97110", 30)), session_id="b"),
                dict(pt("2026-02-01", ("97110", 30), year_to_date={"pt_slp": 2400}), session_id="a")]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(x) + "\n" for x in sessions))
    proc = subprocess.run([sys.executable, "-m", "engine", "compare", str(src), "--payers",
                           "example-medicare-fees,example-visit-limits", "--format", "json"],
                          capture_output=True, text=True, cwd=ROOT)
    b, a = json.loads(proc.stdout)
    assert (a["counters_differ"], b["counters_differ"]) == ([], ["kx-threshold"])
    assert kx(b["results"]["example-medicare-fees"]) == ["97110"] and kx(b["results"]["example-visit-limits"]) == []
