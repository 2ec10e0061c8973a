"""Hostile review of issue 13 (the patient's year) and issue 12's CQ/CO amounts: one test per defect found,
and the harness that would catch the next one (a random-batch property over permutations, --jobs, the
deferred (RawLine) and parsed input paths, small spools and shards).

Fee values come from tables written here, SYNTHETIC (made-up amounts, not CMS values). KX thresholds from
docs/domain.md §18.2 (2026 $2,480, exceeded means > not >=). Units by the 8-minute rule: 30 min of one
code alone = 2 units, 8 min = 1 unit.
"""
from __future__ import annotations

import json
import random
import tempfile
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import patients as P
from engine.batch import Job
from engine.billing import Biller
from engine.counters import apply_all
from engine.loader import Registry
from engine.sessions import RawLine
from test_batch import run_cli
from test_edits import mue_file

DAY = "2026-03-05"


@pytest.fixture(scope="module")
def rules(tmp_path_factory):
    """gpfees: medicare with a fee table that has a GP row for 97110 (a modifier row that is not CQ/CO) and
    an MUE table (97110 MAI 2 value 4); every-year: a threshold of $100 in every year, KX past it."""
    root = tmp_path_factory.mktemp("rules")
    (root / "fees").mkdir()
    (root / "fees" / "f.csv").write_text("# SYNTHETIC amounts for tests\ncode,modifier,amount\n"
                                         "97110,,30.00\n97110,GP,30.00\n97530,,40.00\n97140,,28.00\n"
                                         "97112,,35.00\n97530,CQ,33.00\n")
    mue_file(root / "mue.csv", [("97110", 4, 2)])
    (root / "gp.yaml").write_text("payer: gpfees\nname: GP fees\nextends: medicare\n"
                                  "tables:\n  fees: [fees/f.csv]\n  mue: [mue.csv]\n")
    (root / "every.yaml").write_text(
        "payer: every-year\nname: Every year\nextends: medicare\ntables:\n  fees: [fees/f.csv]\n"
        "counters:\n  - id: therapy-amounts\n    description: x\n    source: test\n    counts: amount\n"
        "    buckets: {pt_slp: [PT, SLP], ot: [OT]}\n    period: calendar_year\n    thresholds:\n"
        "      - id: kx-threshold\n        values:\n          - {value: 100}\n        past:\n"
        "          - add_modifier: KX\n")
    return root


@pytest.fixture(scope="module")
def registry(rules):
    return Registry([rules])


def doc(sid, codes, patient="P1", date=DAY, payer="gpfees", discipline="PT", **extra) -> dict:
    services = [{"code": c, "minutes": m, **({"provider": p[0]} if p else {})} for c, m, *p in codes]
    data = {"session_id": sid, "payer": payer, "discipline": discipline, "services": services, **extra}
    if discipline is None:
        del data["discipline"]
    if patient is not None:
        data["patient_id"] = patient
    if date is not None:
        data["date_of_service"] = date
    return data


def bill(docs, registry, jobs=1, deferred=False, lines=None, date=None) -> list:
    """The records of `docs` through bill_in_order in the order written: as JSONL lines parsed in the
    reading process (the command's --jobs 1 path), or `deferred` (unparsed RawLines, as --jobs N sends
    them). `lines`: the raw JSONL lines to use instead of json.dumps(doc)."""
    raws = lines or [json.dumps(d).encode() for d in docs]
    items = [RawLine((raw, "t.jsonl", i, i)) for i, raw in enumerate(raws, 1)]
    if not deferred:
        items = [item.parse() for item in items]
    return [json.loads(done[1]) for _, done in P.bill_in_order(iter(items), [], "python", Job(date=date), jobs, registry)]


def kx(record) -> list:
    return [line["code"] for line in record["lines"] if "KX" in line["modifiers"]]


# --- the patient's year_to_date ---------------------------------------------------------------------------

def test_year_to_date_on_any_session_of_the_patient_seeds_its_year(registry):
    """Two sessions of one patient on one day; the year_to_date ($2,440 PT+SLP) is on the session that
    sorts second (session id B). The patient's year starts at $2,440 whatever session carries it:
    A 97112 2 x 35 = 70 -> 2,510 > 2,480 -> KX; B 97110 2 x 30 = 60 -> 2,570 -> KX. Before the fix the
    value was silently dropped (A had started the year at 0) and neither line had KX."""
    docs = [doc("B", [("97110", 30)], payer="example-medicare-fees", year_to_date={"pt_slp": 2440}),
            doc("A", [("97112", 30)], payer="example-medicare-fees")]
    b, a = bill(docs, registry)
    assert (kx(a), kx(b)) == (["97112"], ["97110"])


def test_explain_and_bill_take_a_days_sessions_in_the_same_order(registry):
    """explain/compare/the library (counters.apply_all) and bill (patients.py) walk a day's sessions of a
    patient in one order: session id, then input order. B (given first) and A on one day, $2,440 given:
    A 70 -> 2,510 (KX, the crossing line), B 60 -> 2,570 (KX). The trace of A shows 2,440.00 + 70.00."""
    docs = [doc("B", [("97110", 30)], payer="example-medicare-fees", year_to_date={"pt_slp": 2440}),
            doc("A", [("97112", 30)], payer="example-medicare-fees")]
    billed = bill(docs, registry)
    parsed = [RawLine((json.dumps(d).encode(), "t.jsonl", i, i)).parse() for i, d in enumerate(docs, 1)]
    biller = Biller(registry, "python")
    results = [biller.bill(s) for s in parsed]
    biller.close()
    apply_all(registry.resolve, parsed, results)
    assert results == billed
    [a_step] = [t["effect"] for t in results[1]["trace"] if t["rule"] == "kx-threshold"]
    assert a_step.startswith("2,440.00 + 97112 70.00 = 2,510.00 > 2,480.00")


def test_a_year_to_date_that_differs_from_the_patients_is_said_not_silently_dropped(registry):
    """Two values for one patient: the first in the walk (by date) is used, the other session says its
    value was not used. 03-01 A gives 2,440: A 60 -> 2,500 KX. 03-02 B gives 100 (not used): 2,560 KX."""
    docs = [doc("B", [("97110", 30)], date="2026-03-02", payer="example-medicare-fees", year_to_date={"pt_slp": 100}),
            doc("A", [("97110", 30)], date="2026-03-01", payer="example-medicare-fees",
                year_to_date={"pt_slp": 2440})]
    b, a = bill(docs, registry)
    assert (kx(a), kx(b)) == (["97110"], ["97110"])
    said = [w for w in b["warnings"] if w["rule"] == "engine.year-to-date"]
    assert len(said) == 1 and "session A" in said[0]["message"] and said[0]["severity"] == "warning"
    assert not [w for w in a["warnings"] if w["rule"] == "engine.year-to-date"]


def test_year_to_date_seeds_the_patients_first_year_not_a_later_year_of_another_payer(registry):
    """year_to_date is the patient's amount in the year of its first session (schemas/session.schema.json):
    a patient billed to gpfees in 2026 ($90 given) and to every-year (threshold $100, every year) in 2027.
    2027 starts at 0: 97140 8 min = 1 unit x 28 = 28 <= 100, no KX. Before the fix every-year's 2027 total
    started at the 2026 value (90 + 28 = 118 > 100: KX)."""
    docs = [doc("X1", [("97140", 30)], date="2026-12-05", year_to_date={"pt_slp": 90}),
            doc("Y1", [("97140", 8)], date="2027-01-05", payer="every-year")]
    x1, y1 = bill(docs, registry)
    assert kx(y1) == []
    # and in 2026 the same payer does start from the value: 90 + 28 = 118 > 100
    docs[1]["date_of_service"] = "2026-12-06"
    assert kx(bill(docs, registry)[1]) == ["97140"]


# --- amounts ---------------------------------------------------------------------------------------------

def test_a_cq_line_priced_from_another_modifiers_row_is_still_85_percent(registry):
    """97110 by a PTA, 30 min: 2 units GP CQ. The table has a blank row and a GP row (30.00), no CQ row, so
    the line is an assistant's priced from a row that is not CQ's: 2 x 30.00 x 85% = 51.00. Before the fix
    the GP row (first modifier in claim order) priced it at 60.00 while the warning said 85%."""
    [record] = bill([doc("S1", [("97110", 30, "PTA")], patient=None)], registry)
    [line] = record["lines"]
    assert line["modifiers"] == ["GP", "CQ"] and line["amount"] == 51.0
    # a CQ row of its own is the assistant's price: 97530 CQ 33.00 x 2 = 66.00, no further 85%
    [record] = bill([doc("S2", [("97530", 30, "PTA")], patient=None)], registry)
    assert record["lines"][0]["amount"] == 66.0


# --- the command paths agree -----------------------------------------------------------------------------

def test_a_patient_id_written_with_an_escape_takes_the_patient_path_with_jobs_too(registry):
    """`"patient\\u005fid"` is the key patient_id. Two sessions of P, the earlier with $2,470: both
    2,470 + 60 > 2,480 -> KX, parsed in the reading process or deferred to a worker alike."""
    docs = [doc("F1", [("97110", 30)], payer="example-medicare-fees"),
            doc("F2", [("97110", 30)], payer="example-medicare-fees", date="2026-03-04",
                year_to_date={"pt_slp": 2470})]
    lines = [json.dumps(d).replace('"patient_id"', '"patient\\u005fid"').encode() for d in docs]
    for deferred in (False, True):
        assert [kx(r) for r in bill(docs, registry, deferred=deferred, lines=lines)] == [["97110"], ["97110"]]


# --- the harness: a random batch, any permutation, any path --------------------------------------------

PATIENTS = ["P1", "P2", None]
DATES = ["2025-12-31", "2026-01-01", DAY, DAY, None, "2027-01-04"]
PAYERS = ["gpfees", "example-medicare-fees", "example-visit-limits", "every-year", "medicare"]
CODES = ["97110", "97112", "97140", "97530"]
COUNTER_RULES = ("kx-threshold", "kx-medical-review", "visit-limit", "authorization", "engine.year-to-date")

a_session = st.fixed_dictionaries({
    "patient": st.sampled_from(PATIENTS), "date": st.sampled_from(DATES), "payer": st.sampled_from(PAYERS),
    "discipline": st.sampled_from(["PT", "PT", "OT", "SLP", None]),
    "services": st.lists(st.tuples(st.sampled_from(CODES), st.integers(0, 60), st.sampled_from([None, "PTA", "OTA"])),
                         min_size=1, max_size=3),
    "ytd": st.sampled_from([None, None, "patient", 500, 2470]),     # "patient": that patient's one value
    "escaped": st.booleans(),
    "bad": st.sampled_from([None, None, None, None, "schema", "json", "payer"])})
A_YTD = {"P1": 2400, "P2": 1000, "P3": 2460, "P4": 0, None: 2450}


def ytd_of(value) -> dict:
    return {"pt_slp": value, "ot": value, "visits": value // 300}


def make(k, spec, ytd=None) -> bytes:
    """A JSONL line of the spec; `ytd`: the year_to_date to give it instead of the spec's."""
    services = [(c, m, p) if p else (c, m) for c, m, p in spec["services"]]
    value = A_YTD[spec["patient"]] if spec["ytd"] == "patient" else spec["ytd"]
    extra = {"year_to_date": ytd_of(value)} if value is not None else {}
    if ytd is not None:
        extra = {"year_to_date": ytd} if ytd else {}
    data = doc(f"S{k % 7}", services, spec["patient"], spec["date"], spec["payer"], spec["discipline"], **extra)
    if spec["bad"] == "payer":
        data["payer"] = "no-such-payer"
    text = json.dumps(data)
    if spec["escaped"]:                     # the same JSON, keys written with an escape
        text = text.replace('"patient_id"', '"patient\\u005fid"').replace('"session_id"', '"session\\u005fid"')
    if spec["bad"] == "schema":
        text = text.replace('"minutes": ', '"minutes": -', 1)
    elif spec["bad"] == "json":
        text = text[:-5]                    # a truncated line
    return text.encode()


def comparable(record: dict) -> dict:
    """A record without the input's positions (an error record names its file:line; a session that cannot
    be read is named by its place, session-N)."""
    if "error" in record:
        return {"session_id": re.sub(r"^session-\d+$", "session-N", record["session_id"]),
                "error": re.sub(r"^(\S+\.jsonl?|<stdin>):\d+: ", "INPUT:N: ", record["error"])}
    return record


def counted(record: dict):
    """What the patient's year decides on a record: each line's modifiers and amount, the counters' warnings."""
    if "error" in record:
        return "not billed"
    return ([(line["code"], line["units"], line["modifiers"], line.get("amount")) for line in record["lines"]],
            sorted((w["rule"], w["message"]) for w in record["warnings"] if w["rule"] in COUNTER_RULES))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=st.lists(a_session, min_size=1, max_size=14), seed=st.integers(0, 2**32),
       date=st.sampled_from([None, None, DAY]))
def test_harness_any_permutation_any_path_gives_each_session_the_same_record(registry, monkeypatch, specs, seed, date):
    """Random sessions of a few patients (same-day, year-boundary and undated sessions, repeated session ids
    with different content, year_to_date on some sessions only and conflicting ones, several payers per
    patient, keys written with escapes, bad and truncated records interleaved), with spools of a few records
    and tiny shards:
    - for any permutation, parsed in the reading process or deferred (as --jobs sends them), one record per
      input in input order, each the same;
    - the patient's year decided as explain/compare/scenarios decide it (counters.apply_all);
    - a patient's year_to_date given on every session of the patient or on one only: the same decisions."""
    monkeypatch.setattr(P, "SPOOL_BYTES", 600)
    monkeypatch.setattr(P, "SHARD", 2)
    lines = [make(k, spec) for k, spec in enumerate(specs)]
    order = list(range(len(lines)))
    random.Random(seed).shuffle(order)
    first = bill(None, registry, lines=lines, date=date)
    assert len(first) == len(lines)
    for deferred in (False, True):
        again = bill(None, registry, deferred=deferred, lines=[lines[k] for k in order], date=date)
        assert len(again) == len(lines)
        assert [comparable(again[i]) for i in range(len(order))] == [comparable(first[k]) for k in order]
    # the differential: Biller.bill + counters.apply_all over the whole input
    parsed = [RawLine((line, "t.jsonl", i, i)).parse() for i, line in enumerate(lines, 1)]
    biller = Biller(registry, "python")
    results = [biller.bill(s, None, date) if not isinstance(s, Exception) else {"session_id": s.session_id, "error": "x"}
               for s in parsed]
    biller.close()
    apply_all(registry.resolve, parsed, results, date)
    assert [counted(r) for r in results if "error" not in r] == [counted(r) for r in first if "error" not in r]
    # one patient's value on all its sessions, or on one of them only
    patients = {spec["patient"] for spec in specs if spec["patient"]}
    everywhere = [make(k, spec, ytd_of(A_YTD[spec["patient"]]) if spec["patient"] else None)
                  for k, spec in enumerate(specs)]
    giver = {p: random.Random(seed).choice([k for k, spec in enumerate(specs) if spec["patient"] == p and
                                            spec["bad"] in (None, "payer")] or [-1]) for p in patients}
    once = [make(k, spec, (ytd_of(A_YTD[spec["patient"]]) if giver[spec["patient"]] == k else {})
                 if spec["patient"] else None) for k, spec in enumerate(specs)]
    assert [counted(r) for r in bill(None, registry, lines=once, date=date)] == \
        [counted(r) for r in bill(None, registry, lines=everywhere, date=date)]


def test_harness_jobs_2_equals_jobs_1_on_a_random_batch(registry, monkeypatch):
    monkeypatch.setattr(P, "SHARD", 3)
    rnd = random.Random(13)
    specs = [
        {"patient": rnd.choice(PATIENTS), "date": rnd.choice(DATES), "payer": rnd.choice(PAYERS),
         "discipline": rnd.choice(["PT", "OT", "SLP"]),
         "services": [(rnd.choice(CODES), rnd.randint(0, 60), rnd.choice([None, "PTA"])) for _ in range(rnd.randint(1, 3))],
         "ytd": rnd.choice([None, None, "patient", 500]), "escaped": rnd.random() < 0.2,
         "bad": rnd.choice([None] * 6 + ["schema", "json", "payer"])}
        for _ in range(150)]
    lines = [make(k, spec) for k, spec in enumerate(specs)]
    one = bill(None, registry, lines=lines)
    two = bill(None, registry, jobs=2, deferred=True, lines=lines)
    assert len(one) == len(lines) and one == two


# --- the audit log ---------------------------------------------------------------------------------------

def test_replay_reproduces_a_patient_session_with_an_edit_across_the_day_and_its_kx(rules, tmp_path):
    """AM 97140 and PM 97530 of one patient on one day (the excerpt's pair, indicator 1, no 59): the PTP
    error is on PM, naming AM. $2,470 given: AM 2 x 28 = 56 -> 2,526 > 2,480 KX; PM 2 x 40 = 80 KX.
    `audit --replay` bills each session alone from the log: it must reproduce PM's edit across the day
    (before the fix: 'warning removed: error ncci-ptp ...', exit 1)."""
    path = tmp_path / "day.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in [
        doc("PM", [("97530", 30)], year_to_date={"pt_slp": 2470}), doc("AM", [("97140", 30)])]))
    db = tmp_path / "log.db"
    proc = run_cli("bill", path, "--rules", rules, "--format", "jsonl", "--audit-db", db)
    pm, am = [json.loads(line) for line in proc.stdout.splitlines()]
    assert (kx(am), kx(pm)) == (["97140"], ["97530"])
    assert any(w["rule"] == "ncci-ptp" and "session AM" in w["message"] for w in pm["warnings"])
    replay = run_cli("audit", db, "--replay")
    assert replay.returncode == 0, replay.stdout
    assert b"replay: 2 sessions: 2 reproduced, 0 differ" in replay.stdout


def test_harness_replay_reproduces_every_session_of_a_random_batch(rules, tmp_path):
    """A random batch of patient and independent sessions (same-day pairs, year_to_date, several payers, bad
    records) billed with --audit-db and --jobs 2: `audit --replay` reproduces every billed session."""
    rnd = random.Random(7)
    specs = [{"patient": rnd.choice(PATIENTS), "date": rnd.choice(DATES[:4]), "payer": rnd.choice(PAYERS),
              "discipline": rnd.choice(["PT", "OT", "SLP"]),
              "services": [(rnd.choice(CODES), rnd.randint(0, 60), rnd.choice([None, "PTA"]))
                           for _ in range(rnd.randint(1, 3))],
              "ytd": rnd.choice([None, None, "patient", 500]), "escaped": False,
              "bad": rnd.choice([None] * 8 + ["schema", "payer"])} for _ in range(80)]
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"".join(make(k, spec) + b"\n" for k, spec in enumerate(specs)))
    db = tmp_path / "log.db"
    proc = run_cli("bill", path, "--rules", rules, "--format", "jsonl", "--audit-db", db, "--jobs", "2")
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(records) == 80
    assert any("of session" in w["message"] for r in records if "error" not in r for w in r["warnings"])
    assert any(kx(r) for r in records if "error" not in r)
    replay = run_cli("audit", db, "--replay")
    assert replay.returncode == 0, replay.stdout.decode()[-2000:]


def cli(args, stdin=None, spool=None):
    """`payrules ARGS` in a subprocess, with the spool's buffer of `spool` bytes and shards of 3 sessions."""
    import subprocess
    import sys
    from test_batch import ROOT
    code = (f"import sys; import engine.patients as P; P.SPOOL_BYTES = {spool or P.SPOOL_BYTES}; P.SHARD = 3\n"
            f"from engine.cli import main; sys.exit(main({[str(a) for a in args]!r}))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, input=stdin, timeout=300)
    assert b"Traceback" not in proc.stderr, proc.stderr.decode()[-2000:]
    return proc


def test_harness_the_command_gives_the_same_records_from_jsonl_a_json_list_stdin_and_any_jobs(rules, tmp_path):
    """One random batch as JSONL and as a JSON list (one element a line, so element k is on line k + 2), from a
    file and from standard input, with --jobs 1, 2 and 3, spools of 2 KB (several sorted runs) and shards of
    3 sessions: the same records (error records up to their line numbers), one per session, and the
    summary's counts add up to the sessions read."""
    rnd = random.Random(21)
    specs = [{"patient": rnd.choice(PATIENTS + ["P3", "P4"]), "date": rnd.choice(DATES), "payer": rnd.choice(PAYERS),
              "discipline": rnd.choice(["PT", "OT", "SLP"]),
              "services": [(rnd.choice(CODES), rnd.randint(0, 60), rnd.choice([None, "PTA"]))
                           for _ in range(rnd.randint(1, 3))],
              "ytd": rnd.choice([None, None, "patient", 500]), "escaped": rnd.random() < 0.1,
              "bad": rnd.choice([None] * 8 + ["schema", "payer"])} for _ in range(120)]
    lines = [make(k, spec) for k, spec in enumerate(specs)]
    jsonl, array = tmp_path / "in.jsonl", tmp_path / "in.json"
    jsonl.write_bytes(b"".join(line + b"\n" for line in lines))
    array.write_bytes(b"[\n" + b",\n".join(lines) + b"\n]\n")
    runs = [cli(["bill", path, "--rules", rules, "--format", "jsonl", "--jobs", jobs], spool=2048)
            for path in (jsonl, array) for jobs in (1, 2, 3)]
    runs.append(cli(["bill", "-", "--rules", rules, "--format", "jsonl"], stdin=jsonl.read_bytes(), spool=2048))
    first = [json.loads(line) for line in runs[0].stdout.splitlines()]
    assert len(first) == 120
    for proc in runs:
        records = [json.loads(line) for line in proc.stdout.splitlines()]
        assert [comparable(r) for r in records] == [comparable(r) for r in first]
        summary = proc.stderr.decode().rstrip("\n").rsplit("\n", 1)[-1]
        read, billed, errors, failed = map(int, re.findall(r"\d+", summary))
        assert read == billed + errors + failed == 120, summary


# --- KX at its edges (docs/domain.md §18.2: exceeds is >, 2026 $2,480; 97110 2 units x $30 = $60) ---------

@pytest.mark.parametrize("ytd, expected", [
    (2420, []),                 # 2,420 + 60 = 2,480.00: at the threshold, not past it: no KX
    (2419.99, []),              # 2,479.99
    (2420.01, ["97110"]),       # 2,480.01 > 2,480
    (5000, ["97110"]),          # past it already: every line
])
def test_kx_exceeds_means_greater_than_to_the_cent(registry, ytd, expected):
    [record] = bill([doc("S", [("97110", 30)], payer="example-medicare-fees", year_to_date={"pt_slp": ytd})],
                    registry)
    assert kx(record) == expected


def test_a_year_without_a_kx_threshold_is_a_labelled_warning_not_a_silent_no_kx(registry):
    """2027 has no KX value in rules/medicare.yaml (docs/domain.md §18.2): the line has no KX and a warning
    of rule kx-threshold says it is not decided; the $3,000 review value of 2027 still acts (2,970 + 60)."""
    [record] = bill([doc("S", [("97110", 30)], date="2027-01-05", payer="example-medicare-fees",
                         year_to_date={"pt_slp": 2970})], registry)
    assert kx(record) == []
    said = {w["rule"]: (w["severity"], w["message"]) for w in record["warnings"]}
    assert said["kx-threshold"] == ("warning", "no value of kx-threshold for 2027 in the payer's rules "
                                    "(rules/medicare.yaml:278): not decided, KX not applied; add the 2027 value "
                                    "once it is known")
    assert "3,030.00" in said["kx-medical-review"][1]


@pytest.mark.parametrize("accrual, total, expected", [
    ("reduced", "2,476.00", []),           # 2,425 + 51.00 (85% of 2 x 30.00) = 2,476 <= 2,480
    ("full", "2,485.00", ["97110"]),       # 2,425 + 60.00 (the amount before the 85%) = 2,485 > 2,480
])
def test_whether_kx_accrues_a_cq_lines_reduced_amount_is_a_payer_setting(rules, tmp_path, accrual, total, expected):
    """docs/domain.md §18.1: UNCONFIRMED whether the KX total accrues the 85% or the full amount of a CQ/CO
    line: `amounts.assistant_accrual` (Medicare: reduced). The line's amount is 51.00 either way."""
    (tmp_path / "f.csv").write_bytes((rules / "fees" / "f.csv").read_bytes())
    (tmp_path / "accrual.yaml").write_text(
        "payer: accrual\nname: Accrual\nextends: medicare\ntables:\n  fees: [f.csv]\n"
        f"amounts:\n  assistant_percent: 85\n  effective_from: 2022-01-01\n  assistant_accrual: {accrual}\n")
    local = Registry([tmp_path])
    [record] = bill([doc("S", [("97110", 30, "PTA")], payer="accrual", year_to_date={"pt_slp": 2425})], local)
    assert record["lines"][0]["amount"] == 51.0 and kx(record) == expected
    [step] = [t["effect"] for t in record["trace"] if t["rule"] == "kx-threshold"] or [None]
    assert (step is not None) == bool(expected) and (step is None or f"= {total} >" in step)


# --- the fee schedule reader ------------------------------------------------------------------------------

def test_a_bad_fee_cell_is_quoted_short_and_the_line_is_where_the_row_starts(tmp_path):
    """A 200,000-character amount: one short error line (it was the whole cell: 200 KB). A row whose quote
    is never closed starts on line 2 (it was said to be on line 1)."""
    from engine.fees import load_fees
    from engine.tables import TableError
    path = tmp_path / "f.csv"
    path.write_text("code,modifier,amount\n97110,," + "9" * 200_000 + "\n")
    with pytest.raises(TableError) as caught:
        load_fees(path, "f.csv")
    assert len(str(caught.value)) < 200 and str(caught.value).startswith("f.csv:2: amount:")
    path.write_text('code,modifier,amount\n"97110,,60\n')
    with pytest.raises(TableError) as caught:
        load_fees(path, "f.csv")
    assert str(caught.value).startswith("f.csv:2: code:")


CELLS = st.sampled_from(["97110", "97530", "", "CQ", "GP", "60", "60.5", "-60", "1,234.00", "$60", "60.005",
                         "2026-01-01", "2026-02-30", "2025-12-31", '"', '"x"', "\n", "\r\n", "\x00", "#", "é", " 60 ", "9" * 500])


@settings(max_examples=200, deadline=None)
@given(header=st.sampled_from(["code,modifier,amount", "code,modifier,amount,effective_from,effective_to",
                               "Amount,CODE,modifier", "code,amount"]),
       rows=st.lists(st.lists(CELLS, min_size=0, max_size=6), max_size=8),
       crlf=st.booleans(), bom=st.booleans())
def test_fuzz_a_fee_schedule_loads_or_is_one_short_file_line_error(tmp_path_factory, header, rows, crlf, bom):
    """Any file: a table whose every amount is an exact Decimal of at most two places and not negative, or
    a TableError `f.csv:LINE: column: message` on a line of the file, short; never another exception."""
    from decimal import Decimal
    from engine.fees import load_fees
    from engine.tables import TableError
    newline = "\r\n" if crlf else "\n"
    text = ("\ufeff" if bom else "") + newline.join([header] + [",".join(r) for r in rows]) + newline
    path = tmp_path_factory.mktemp("fees") / "f.csv"
    path.write_bytes(text.encode("utf-8"))
    try:
        table = load_fees(path, "f.csv")
    except TableError as exc:
        message = str(exc)
        match = re.match(r"f\.csv:(\d+): (\w+): ", message)
        assert match and 1 <= int(match.group(1)) <= text.count("\n") + 1, message
        assert match.group(2) == "header" or int(match.group(1)) >= 2, message     # a row is below the header
        assert len(message) < 300 and "\n" not in message.split(": ", 2)[2].replace("\\n", ""), message
        return
    for rows_of_code in table._by_code.values():
        for fee in rows_of_code:
            assert isinstance(fee.amount, Decimal) and fee.amount >= 0 and fee.amount == fee.amount.quantize(Decimal("0.01"))


def test_year_to_date_keys_given_on_different_sessions_are_all_the_patients(registry):
    """pt_slp on one session, ot on another (billing staff keep each bucket's total apart): both are the
    patient's. PT session A: 2,440 + 60 = 2,500 > 2,480 KX; OT session B (97530 2 x 40): 2,450 + 80 = 2,530
    KX. No warning: no key was given two values."""
    docs = [doc("A", [("97110", 30)], payer="example-medicare-fees", year_to_date={"pt_slp": 2440}),
            doc("B", [("97530", 30)], payer="example-medicare-fees", discipline="OT", year_to_date={"ot": 2450})]
    a, b = bill(docs, registry)
    assert (kx(a), kx(b)) == (["97110"], ["97530"])
    assert not [w for r in (a, b) for w in r["warnings"] if w["rule"] == "engine.year-to-date"]


# --- the PTP/MUE readers (engine/tables.py: the coordinator's file this round; the fix is described) -----

# --- counters -------------------------------------------------------------------------------------------

def test_an_every_threshold_of_dollars_is_passed_by_a_cent(rules, tmp_path):
    """An amount counter with a value every $100 (warn past each multiple): $40.50 given + 97110 2 x 30.00 =
    $100.50 > $100: past the first multiple. The integer arithmetic of visits ((after - 1) // value) said
    99.50 // 100 = 0: not past."""
    (tmp_path / "f.csv").write_bytes((rules / "fees" / "f.csv").read_bytes())
    (tmp_path / "every.yaml").write_text(
        "payer: every-100\nname: Every 100\nextends: medicare\ntables:\n  fees: [f.csv]\n"
        "counters:\n  - id: dollars\n    description: x\n    source: test\n    counts: amount\n"
        "    period: calendar_year\n    thresholds:\n      - id: each-100\n        values:\n"
        "          - {value: 100, every: true}\n        past:\n          - warn: \"past {value}\"\n")
    local = Registry([tmp_path])
    [record] = bill([doc("S", [("97110", 30)], payer="every-100", year_to_date={"dollars": 40.5})], local)
    [step] = [t["effect"] for t in record["trace"] if t["rule"] == "each-100"]
    assert step.startswith("40.50 + 97110 60.00 = 100.50 > 100.00 (every 100.00)")
    # $39.50 + 60 = 99.50: not past; 140 + 60 = 200.00: at the second multiple, not past it (exceeds is >)
    for given in (39.5, 140):
        [record] = bill([doc("S", [("97110", 30)], payer="every-100", year_to_date={"dollars": given})], local)
        assert not [t for t in record["trace"] if t["rule"] == "each-100"]


@settings(max_examples=300, deadline=None)
@given(value=st.integers(1, 3000), cents=st.booleans(), before=st.integers(0, 10_000), add=st.integers(0, 5000))
def test_every_threshold_fires_exactly_where_a_multiple_is_reached_or_passed(value, cents, before, add):
    """Against brute force: `past` fires on a step from before to after when some multiple k x value (k >= 1)
    is >= before and < after (the step goes past it); `reached` when one is > before and <= after. In
    whole units or in cents (an amount counter)."""
    from decimal import Decimal
    from engine import counters as C
    scale = Decimal("0.01") if cents else Decimal(1)
    v, b, a = Decimal(value) * scale, Decimal(before) * scale, Decimal(before + add) * scale
    threshold = C.Threshold("t", (C.Value(None, v, True, "", "x:1"),), (("warn", "reached"),), (("warn", "past"),), "x:1")
    counter = C.Counter("c", "amount" if cents else "units", None, (), "calendar_year", "01-01", (threshold,), "x:1")
    year = C.PatientYear(lambda *a: None)
    result = {"warnings": [], "trace": []}
    year._fire(counter, threshold, threshold.values[0], b, a, [], "x", 2026, None, result)
    said = {w["message"] for w in result["warnings"]}
    multiples = [k * v for k in range(1, int(a / v) + 2)]
    assert ("past" in said) == any(b <= m < a for m in multiples), (v, b, a)
    assert ("reached" in said) == any(b < m <= a for m in multiples), (v, b, a)


def test_the_log_keeps_each_patient_sessions_state_before_and_after_in_date_order(rules, tmp_path):
    """Three sessions of one patient given latest first, $100 given: each 97110 2 x 30.00 = 60.00. In date
    order the PT+SLP total goes 100 -> 160 -> 220 -> 280; each session's logged 'before' is the previous
    one's 'after', and the first's 'before' has no total yet (the year_to_date is the patient's)."""
    from engine.audit import query
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(doc(f"S{d}", [("97110", 30)], date=f"2026-03-0{d}", payer="example-medicare-fees",
                                           **({"year_to_date": {"pt_slp": 100}} if d == 2 else {}))) + "\n"
                            for d in (3, 2, 1)))
    db = tmp_path / "log.db"
    run_cli("bill", path, "--rules", rules, "--format", "jsonl", "--audit-db", db)
    states = {e["session_id"]: e["input"]["patient_year"] for e in query(str(db))}
    key = "example-medicare-fees/therapy-amounts/2026/pt_slp"
    assert states["S1"]["before"]["totals"] == {} and states["S1"]["before"]["year_to_date"] == {"pt_slp": 100}
    assert [states[s]["after"]["totals"][key] for s in ("S1", "S2", "S3")] == ["160.00", "220.00", "280.00"]
    assert states["S2"]["before"] == states["S1"]["after"] and states["S3"]["before"] == states["S2"]["after"]


@pytest.mark.parametrize("fmt", ["json", "csv", "jsonl"])
@pytest.mark.parametrize("kind", ["empty", "only-patients", "truncated-last-line"])
def test_edge_inputs_give_well_formed_output_and_counts_that_add_up(rules, tmp_path, kind, fmt):
    """No session at all; only patient sessions (nothing takes the streaming path); patient sessions whose
    last line is cut short (no newline, unfinished JSON): one record per session, the output well formed."""
    docs = [] if kind == "empty" else [doc(f"S{k}", [("97110", 30)], patient=f"P{k % 3}", date=f"2026-03-0{9 - k}")
                                       for k in range(6)]
    text = "".join(json.dumps(d) + "\n" for d in docs)
    if kind == "truncated-last-line":
        text = text[:-20]
    path = tmp_path / "in.jsonl"
    path.write_text(text)
    for jobs in ("1", "2") if fmt == "jsonl" else ("1",):
        proc = cli(["bill", path, "--rules", rules, "--format", fmt, "--jobs", jobs], spool=512)
        out = proc.stdout.decode()
        n = len(docs)
        if fmt == "json":
            records = json.loads(out)
        elif fmt == "jsonl":
            records = [json.loads(line) for line in out.splitlines()]
        else:
            records = out.splitlines()[1:]
            assert out.splitlines()[0].startswith("session_id,")
        assert len(records) == n
        summary = proc.stderr.decode().rstrip("\n").rsplit("\n", 1)[-1]
        read, billed, errors, failed = map(int, re.findall(r"\d+", summary))
        assert read == billed + errors + failed == n and failed == (kind == "truncated-last-line"), summary


def test_visit_limit_and_authorization_at_their_exact_boundaries(registry):
    """example-visit-limits (docs/domain.md §18.4): 26 visits of one patient in 2026, shuffled. Visit 20
    warns (reached), 21 on are held (past 20); an authorization every 12: visits 13 and 25 warn (past 12, 24),
    not 12 or 24."""
    days = [f"2026-{1 + k // 28:02}-{1 + k % 28:02}" for k in range(26)]
    docs = [doc(f"V{k + 1:02}", [("97110", 30)], date=days[k], payer="example-visit-limits") for k in range(26)]
    random.Random(3).shuffle(docs)
    said = {r["session_id"]: {(w["rule"], w["severity"]) for w in r["warnings"]} for r in bill(docs, registry)}
    visit = lambda n: said[f"V{n:02}"]      # noqa: E731
    assert [n for n in range(1, 27) if ("authorization", "warning") in visit(n)] == [13, 25]
    assert [n for n in range(1, 27) if ("visit-limit", "warning") in visit(n)] == [20]
    assert [n for n in range(1, 27) if ("visit-limit", "error") in visit(n)] == list(range(21, 27))


@pytest.mark.parametrize("date, amount", [("2024-12-31", None), ("2025-01-01", 58.0), ("2025-12-31", 58.0),
                                          ("2026-01-01", 60.0)])
def test_fee_rows_are_in_force_on_both_boundary_days(registry, date, amount):
    """The synthetic schedule: 97110 $29.00 from 2025-01-01 to 2025-12-31, $30.00 from 2026-01-01 (both days
    included); 2 units. Before 2025 no row: no amount, a warning."""
    [record] = bill([doc("S", [("97110", 30)], patient=None, date=date, payer="example-medicare-fees")], registry)
    assert record["lines"][0].get("amount") == amount
    assert any(w["rule"] == "fee-schedule" for w in record["warnings"]) == (amount is None)


@pytest.mark.parametrize("row, minutes, provider, amount", [
    ("0.03", 15, "PTA", 0.03),              # 1 x 0.03 x 85% = 0.0255 -> 0.03 (half up, not to even: 0.02)
    ("33.33", 15, "PTA", 28.33),            # 28.3305 -> 28.33
    ("1234567.89", 30, None, 2469135.78),   # thousands, exact: 2 x 1,234,567.89
    ("0", 30, None, 0.0),
])
def test_amounts_are_exact_cents_rounded_half_up(tmp_path, row, minutes, provider, amount):
    (tmp_path / "f.csv").write_text(f"code,modifier,amount\n97110,,{row}\n")
    (tmp_path / "p.yaml").write_text("payer: cents\nname: Cents\nextends: medicare\ntables:\n  fees: [f.csv]\n")
    services = [("97110", minutes, provider)] if provider else [("97110", minutes)]
    [record] = bill([doc("S", services, patient=None, payer="cents")], Registry([tmp_path]))
    assert record["lines"][0]["amount"] == amount


def test_explain_shows_the_edit_across_a_days_sessions_that_bill_makes(rules, tmp_path):
    """AM 97140, PM 97530 of one patient on one day: bill puts the NCCI PTP error on PM naming AM; explain
    must say the same of PM."""
    path = tmp_path / "day.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in [doc("PM", [("97530", 30)]), doc("AM", [("97140", 30)])]))
    billed = run_cli("bill", path, "--rules", rules, "--format", "jsonl")
    assert b"of session AM" in billed.stdout
    explained = run_cli("explain", path, "--rules", rules)
    assert b"of session AM" in explained.stdout


def test_replay_with_current_rules_names_an_amount_that_changed(rules, tmp_path):
    """The fee of 97140 goes from 28.00 to 128.00 after the run: replay with the logged files reproduces
    (2 x 28.00 = 56.00), with today's it names the amount: 56.00 -> 256.00 (it said only 'lines differs')."""
    import shutil
    tree = tmp_path / "rules"
    shutil.copytree(rules, tree)
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps(doc("S", [("97140", 30)], patient=None)) + "\n")
    db = tmp_path / "log.db"
    run_cli("bill", path, "--rules", tree, "--format", "jsonl", "--audit-db", db)
    fees = tree / "fees" / "f.csv"
    fees.write_text(fees.read_text().replace("97140,,28.00", "97140,,128.00"))
    assert run_cli("audit", db, "--replay").returncode == 0
    today = run_cli("audit", db, "--replay", "--current-rules", "--rules", tree)
    assert b"S: 97140 amount 56.00 -> 256.00\n" in today.stdout and today.returncode == 1


def test_a_fractional_count_in_a_payer_file_is_a_rule_file_error(tmp_path):
    """A visits limit of "12.50" was read as 12 (reached on visit 12, which 12.5 is not): a file:line error."""
    from engine.errors import RuleFileError
    (tmp_path / "p.yaml").write_text(
        "payer: val\nname: Val\nextends: medicare\ncounters:\n  - id: visits\n    description: x\n    source: t\n"
        "    counts: visits\n    thresholds:\n      - id: lim\n        values:\n          - {value: \"12.50\"}\n"
        "        reached:\n          - warn: \"at {value}\"\n")
    with pytest.raises(RuleFileError) as caught:
        Registry([tmp_path])
    assert "p.yaml:12:" in str(caught.value) and "whole number" in str(caught.value)


@pytest.mark.parametrize("where", ["folder", "file"])
def test_replay_with_a_full_temporary_disk_is_one_clear_error(rules, tmp_path, where):
    """--replay writes the logged rule files to a temporary folder: a full disk there is one error line
    saying so and exit 2 (it said 'cannot read input: No space left on device')."""
    import subprocess
    import sys
    from test_batch import ROOT
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps(doc("S", [("97140", 30)])) + "\n")
    db = tmp_path / "log.db"
    run_cli("bill", path, "--rules", rules, "--format", "jsonl", "--audit-db", db)
    full = ("def full(*a, **k): raise OSError(errno.ENOSPC, 'No space left on device')\n"
            + ("tempfile.TemporaryDirectory = full\n" if where == "folder" else
               "real = pathlib.Path.write_bytes\n"
               "pathlib.Path.write_bytes = lambda self, data: full() if 'payrules-replay-' in str(self) "
               "else real(self, data)\n"))
    code = (f"import errno, pathlib, sys, tempfile\n{full}"
            f"from engine.cli import main; sys.exit(main(['audit', {str(db)!r}, '--replay']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (f"error: cannot write the logged rule files to a temporary folder in "
                           f"{tempfile.gettempdir()}: No space left on device; free some space or set TMPDIR\n")


@pytest.mark.parametrize("header", ["code,modifier,amount,note", "code,modifier,amount,amount",
                                    "note,code,modifier,amount"])
def test_a_fee_schedule_with_another_column_is_refused_so_a_split_amount_is_never_a_price(tmp_path, header):
    """With a 'note' column after amount, the row 97110,,1,234.00 read as amount 1 (note '234.00'): $1 a unit,
    silently. A fee schedule now has only its documented columns: the header is a FILE:LINE error."""
    from engine.fees import load_fees
    from engine.tables import TableError
    path = tmp_path / "f.csv"
    path.write_text(header + "\n97110,,1,234.00\n")
    with pytest.raises(TableError) as caught:
        load_fees(path, "f.csv")
    assert str(caught.value).startswith("f.csv:1: header: ")
