"""The library (RuleBook.bill_many, bill) and the service (POST /v1/bill with a list, the page's batch upload)
bill a list of sessions as `payrules bill` does (engine/patients.py): each patient's sessions in date order
whatever the input order, the same-day edits across a patient's sessions of one date, every record in input
order (issue 13 item 5, and items 4 and 2 through the library and the service).

Fee schedule: rules/private_payers/fees/synthetic-example.csv (SYNTHETIC: 97110 $30.00 a unit in 2026,
$29.00 in 2025; 97140 $28.00; 97530 $40.00). KX threshold (rules/medicare.yaml, docs/domain.md §18.2):
$2,480 in 2026, $2,410 in 2025, over PT+SLP together. PTP: the bundled excerpt's 97140 (column 1) / 97530
(column 2), modifier indicator 1 (docs/domain.md §17.1, §17.4). Units by the 8-minute rule (docs/domain.md
§3.1): 23-37 min = 2 units, 38-52 = 3.
"""
from __future__ import annotations

import base64
import json
import random
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from engine.api import RuleBook
from engine.service import create_app

with warnings.catch_warnings():     # Starlette 1.x suggests httpx2 for its TestClient; httpx still works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

REPO = Path(__file__).resolve().parent.parent
FEES = "example-medicare-fees"


@pytest.fixture(scope="module")
def book():
    with RuleBook(engine="python") as made:
        yield made


@pytest.fixture(scope="module")
def client(book):
    return TestClient(create_app(book), raise_server_exceptions=False)


def command(sessions: list, *options: str, tmp_path: Path, name: str = "bill") -> list:
    """`payrules bill FILE --format json` of the sessions as one JSON list: its records (`explain`: the
    result, or the error record, of each explanation)."""
    path = tmp_path / "sessions.json"
    path.write_text(json.dumps(sessions), encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "engine", name, str(path), "--format", "json", "--engine",
                          "python", *options], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode in (0, 1), run.stderr
    prefix = re.compile(re.escape(str(path)) + r":\d+: ")     # the API's sessions come from no file
    records = [r.get("result", r) for r in json.loads(run.stdout)]
    return [{**r, "error": prefix.sub("", r["error"])} if "error" in r else r for r in records]


def session(sid, codes, patient="P1", date="2026-03-05", payer=FEES, discipline="PT", **extra) -> dict:
    services = [{"code": c, "minutes": m, **({"modifiers": list(mods)} if mods else {})} for c, m, *mods in codes]
    data = {"session_id": sid, "payer": payer, "discipline": discipline, "services": services, **extra}
    if patient is not None:
        data["patient_id"] = patient
    if date is not None:
        data["date_of_service"] = date
    return data


def said(record: dict, rule: str) -> list:
    return [(w["severity"], w["codes"], w["message"]) for w in record["warnings"] if w["rule"] == rule]


def modifiers(record: dict) -> dict:
    return {line["code"]: line["modifiers"] for line in record["lines"]}


# --- worked by hand -----------------------------------------------------------------------------------------

def test_bill_many_works_kx_in_date_order_whatever_the_input_order(book, client):
    # year_to_date pt_slp $2,350. In date order: FEB 97110 38 min = 3 units x $30 = $90, 2,350 + 90 = 2,440
    # <= 2,480: no KX; MAR 2,440 + 90 = 2,530 > 2,480: KX. Given MAR first, the input order would put KX
    # on FEB instead (2,440 on MAR, 2,530 on FEB).
    ytd = {"year_to_date": {"pt_slp": 2350}}
    sessions = [session("MAR", [("97110", 38)], date="2026-03-10", **ytd),
                session("FEB", [("97110", 38)], date="2026-02-10", **ytd)]
    for records in (list(book.bill_many(sessions)), list(book.bill_many(iter(sessions))),
                    client.post("/v1/bill", json=sessions).json()):
        mar, feb = records
        assert [mar["session_id"], feb["session_id"]] == ["MAR", "FEB"]                # input order
        assert mar["lines"][0]["amount"] == feb["lines"][0]["amount"] == 90.0
        assert "KX" in modifiers(mar)["97110"] and "KX" not in modifiers(feb)["97110"]
        assert all(w["rule"] != "engine.patient-order" for r in records for w in r["warnings"])


def test_bill_many_applies_the_ptp_edit_across_a_patients_two_sessions_of_one_day(book, client):
    # 97140 (column 1) in AM, 97530 (column 2) in PM, one patient, one date: one date of service for PTP
    # (docs/domain.md §17.1): indicator 1 and no 59/X documented -> an error on the column 2 code, said on
    # the later session (AM before PM by session id on one date), naming the other session.
    am = session("AM", [("97140", 23)])
    pm = session("PM", [("97530", 23)])
    for records in (list(book.bill_many([pm, am])), client.post("/v1/bill", json=[pm, am]).json()):
        got_pm, got_am = records
        assert said(got_am, "ncci-ptp") == []
        [(severity, codes, message)] = said(got_pm, "ncci-ptp")
        assert (severity, codes) == ("error", ["97530", "97140"])
        assert message.startswith("97530 of this session with 97140 of session AM (the same date of service)")
    # 59 documented on 97530: the bypass is honoured by medicare, an info (§17.1); not by example-ncci-bypass (§17.3)
    pm59 = session("PM", [("97530", 23, "59")])
    assert [s for s, _, _ in said(list(book.bill_many([pm59, am]))[0], "ncci-ptp")] == ["info"]
    strict = [dict(s, payer="example-ncci-bypass") for s in (pm59, am)]
    assert [s for s, _, _ in said(list(book.bill_many(strict))[0], "ncci-ptp")] == ["error"]
    # another patient, or no patient, on that date: independent sessions, no edit
    for other in (session("PM", [("97530", 23)], patient="P2"), session("PM", [("97530", 23)], patient=None)):
        assert all(said(r, "ncci-ptp") == [] for r in book.bill_many([other, am]))


def test_bill_of_one_session_is_the_command_on_a_one_session_file(book, tmp_path):
    # year_to_date $2,450 + 97110 38 min (3 x $30 = $90) = $2,540 > $2,480: KX, with or without a patient_id
    # (without one, a session with year_to_date is a patient of its own).
    for patient in ("P1", None):
        one = session("ONE", [("97110", 38)], patient=patient, year_to_date={"pt_slp": 2450})
        result = book.bill(one)
        assert "KX" in modifiers(result)["97110"]
        assert [result] == command([one], tmp_path=tmp_path)
    undated = session("U", [("97110", 38)], date=None, year_to_date={"pt_slp": 2450})
    assert [book.bill(undated, date="2026-04-01")] == command([undated], "--date", "2026-04-01", tmp_path=tmp_path)


def test_the_batch_upload_bills_a_patients_sessions_as_the_command(client, tmp_path):
    sessions = [session("PM", [("97530", 23)]), session("AM", [("97140", 23)]), session("X", [("97110", 8)], patient=None)]
    text = "".join(json.dumps(s) + "\n" for s in sessions)
    page = client.post("/ui/batch", json={"name": "day.jsonl", "text": text})
    assert page.status_code == 200
    # PM has the PTP error (the pair across sessions), AM and X are billed
    assert "3 sessions: <b>2</b> billed, <b>1</b> with errors, <b>0</b> failed to parse" in page.text
    href = re.search(r'href="data:application/x-ndjson;base64,([^"]+)"', page.text).group(1)
    records = [json.loads(line) for line in base64.b64decode(href).decode().splitlines()]
    assert records == command(sessions, tmp_path=tmp_path)
    assert said(records[0], "ncci-ptp")[0][0] == "error"


def test_the_service_time_limit_holds_while_patients_are_billed(book):
    from engine.service import Refused, Service
    import asyncio
    service = Service(book, time_limit=0.0)
    sessions = [session(f"S{k}", [("97110", 38)], patient=f"P{k % 3}") for k in range(100)]
    with pytest.raises(Refused) as refused:
        asyncio.run(service.bill_list(sessions, None, None))
    # refused while the list is read, before any session is billed (test_review14 has the limit mid-shard)
    assert refused.value.status == 503 and "after 0 of 100 sessions" in refused.value.message


def test_bill_many_streams_sessions_without_a_patient_until_the_first_patient_session(book):
    pulled = []

    def sessions():
        for k, patient in enumerate([None, None, "P1", None, "P1"]):
            pulled.append(k)
            yield session(f"S{k}", [("97110", 38)], patient=patient)
    results = book.bill_many(sessions())
    assert pulled == []
    assert next(results)["session_id"] == "S0" and pulled == [0]
    assert next(results)["session_id"] == "S1" and pulled == [0, 1]
    # from the first patient session on, a record may depend on a later session of that patient: the
    # whole input is read first
    assert next(results)["session_id"] == "S2" and pulled == [0, 1, 2, 3, 4]
    assert [r["session_id"] for r in results] == ["S3", "S4"]


# --- property: any input order, the library, the service and the command agree ------------------------------

DATES = ["2025-06-02", "2025-12-30", "2026-01-05", "2026-03-05", "2026-03-06", "2026-11-20"]
PAYERS = [FEES, "example-visit-limits", "example-ncci-bypass"]
service_st = st.tuples(st.sampled_from(["97110", "97110", "97140", "97530", "97140", "97530", "97112"]), st.integers(8, 60),
                       st.sampled_from([(), (), ("59",)]))


@st.composite
def inputs(draw):
    """2-4 patients' sessions (dates in two years, often one date twice), a few without a patient, and a few
    the command cannot bill (an error record in their place)."""
    patients = [f"P{k}" for k in range(draw(st.integers(2, 4)))]
    payer_of = {p: draw(st.sampled_from(PAYERS)) for p in patients}      # a patient's payer, mostly
    out = []
    for k in range(draw(st.integers(4, 14))):
        kind = draw(st.sampled_from(["patient"] * 6 + ["none", "bad"]))
        codes = [(code, minutes, *mods) for code, minutes, mods in draw(st.lists(service_st, min_size=1, max_size=3))]
        extra = {}
        if draw(st.booleans()):
            extra["year_to_date"] = {"pt_slp": draw(st.integers(2200, 2480)), "ot": draw(st.integers(0, 2480)),
                                     "visits": draw(st.integers(0, 24))}
        patient = draw(st.sampled_from(patients))
        data = session(f"S{k}", codes, patient=patient if kind == "patient" else None,
                       date=draw(st.sampled_from(DATES + ["2026-03-05"] * 6)),     # often one date twice
                       payer=draw(st.sampled_from([payer_of[patient]] * 4 + PAYERS)),
                       discipline=draw(st.sampled_from(["PT", "PT", "OT"])), **extra)
        if kind == "bad":
            data["services"][0]["minutes"] = -5             # a schema error: an error record in its place
        out.append(data)
    return out


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(sessions=inputs(), seed=st.integers(0, 2**32 - 1))
@example(sessions=[session("S0", [("97530", 23)]), session("S1", [("97140", 38)]), session("S3", [("97110", 8)], patient=None),
                   session("S2", [("97110", 38)], date="2026-01-05", year_to_date={"pt_slp": 2400})],
         seed=1)    # always tried: the PTP pair across S0/S1 (on S1); KX from S2, the first by date ($2,400 + $90)

def test_any_order_gives_each_session_the_commands_record_in_the_library_the_service_and_explain(book, client, tmp_path,
                                                                                          sessions, seed):
    shuffled = sessions[:]
    random.Random(seed).shuffle(shuffled)
    want = {r["session_id"]: r for r in command(sessions, tmp_path=tmp_path)}
    # the check of the check: only the sessions made bad are error records
    assert {sid for sid, r in want.items() if "error" in r} == \
        {s["session_id"] for s in sessions if s["services"][0]["minutes"] < 0}
    explained = command(shuffled, tmp_path=tmp_path, name="explain")
    assert {r["session_id"]: r for r in explained} == want
    for given_ in (sessions, shuffled):
        library = list(book.bill_many(iter(given_)))
        served = client.post("/v1/bill", json=given_).json()
        assert [r["session_id"] for r in library] == [r["session_id"] for r in served] == [s["session_id"] for s in given_]
        assert {r["session_id"]: r for r in library} == want
        assert served == library


def test_the_property_inputs_reach_kx_and_the_edits_across_sessions(book):
    """The check of the check: inputs like the property's do give KX and PTP across sessions."""
    rnd = random.Random(7)
    found = set()
    for _ in range(20):
        sessions = [session(f"S{k}", [(rnd.choice(["97110", "97140", "97530"]), rnd.randint(8, 60))],
                            patient=rnd.choice(["P0", "P1"]), date=rnd.choice(DATES), payer=FEES,
                            year_to_date={"pt_slp": rnd.randint(2200, 2480)}) for k in range(10)]
        for record in book.bill_many(sessions):
            if any("KX" in line["modifiers"] for line in record.get("lines", [])):
                found.add("kx")
            if "warnings" in record and any("of session" in m for _, _, m in said(record, "ncci-ptp")):
                found.add("ptp")
    assert found == {"kx", "ptp"}


# --- compare of a list: each payer's results are what `bill --payer` gives ------------------------------------

def test_compare_of_a_list_gives_each_payer_the_bill_commands_records(tmp_path):
    # One patient, one date: PM (97530) given before AM (97140). Under each payer the pair is one date of
    # service (docs/domain.md §17.1): the error is on PM naming AM; under example-ncci-bypass too (59 absent).
    # Two sessions of another patient on one date, each $90 (97110 38 min = 3 x $30) from $2,350: the one
    # first by session id (K1) is 2,440 <= 2,480, the other 2,530 > 2,480 gets KX, whatever the input order.
    ytd = {"year_to_date": {"pt_slp": 2350}}
    sessions = [session("PM", [("97530", 23)]), session("K2", [("97110", 38)], patient="P2", **ytd),
                session("AM", [("97140", 23)]), session("K1", [("97110", 38)], patient="P2", **ytd)]
    path = tmp_path / "day.json"
    path.write_text(json.dumps(sessions), encoding="utf-8")
    payers = [FEES, "example-ncci-bypass"]
    run = subprocess.run([sys.executable, "-m", "engine", "compare", str(path), "--payers", ",".join(payers),
                          "--format", "json", "--engine", "python"], cwd=REPO, capture_output=True, text=True)
    compared = json.loads(run.stdout)
    assert [c["session_id"] for c in compared] == ["PM", "K2", "AM", "K1"]
    for payer in payers:
        assert [c["results"][payer] for c in compared] == command(sessions, "--payer", payer, tmp_path=tmp_path)
        pm, k2, am, k1 = (c["results"][payer] for c in compared)
        assert [s for s, _, m in said(pm, "ncci-ptp") if "session AM" in m] == ["error"]
    k2, k1 = compared[1]["results"][FEES], compared[3]["results"][FEES]
    assert "KX" in modifiers(k2)["97110"] and "KX" not in modifiers(k1)["97110"]


def test_explain_of_a_file_takes_a_patients_sessions_of_one_date_in_the_commands_order(tmp_path):
    # K2 given before K1, one patient, one date, each $90 from $2,350 (as above): `bill` takes K1 first
    # (session id order), so K2 crosses $2,480 and carries KX; explain shows the same decision.
    ytd = {"year_to_date": {"pt_slp": 2350}}
    sessions = [session("K2", [("97110", 38)], **ytd), session("K1", [("97110", 38)], **ytd)]
    path = tmp_path / "day.json"
    path.write_text(json.dumps(sessions), encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "engine", "explain", str(path), "--format", "json", "--engine",
                          "python"], cwd=REPO, capture_output=True, text=True)
    k2, k1 = (doc["result"] for doc in json.loads(run.stdout))
    assert "KX" in modifiers(k2)["97110"] and "KX" not in modifiers(k1)["97110"]
    assert [k2, k1] == command(sessions, tmp_path=tmp_path)


def test_explain_of_a_file_shows_the_edit_across_a_patients_sessions_of_one_date(tmp_path):
    # PM (97530) and AM (97140), one patient, one date, PM given first: as `bill` gives it (docs/domain.md
    # §17.1, indicator 1, no 59), PM's explanation has the PTP error naming AM among its edits.
    sessions = [session("PM", [("97530", 23)]), session("AM", [("97140", 23)]), session("X", [("97110", 8)], patient=None)]
    path = tmp_path / "day.json"
    path.write_text(json.dumps(sessions), encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "engine", "explain", str(path), "--format", "json", "--engine",
                          "python"], cwd=REPO, capture_output=True, text=True)
    docs = json.loads(run.stdout)
    assert [doc["result"] for doc in docs] == command(sessions, tmp_path=tmp_path)
    [edit] = [e for e in docs[0]["edits"] if e["rule"] == "ncci-ptp"]      # a trace entry, with its table row
    assert edit["effect"] == "97530 denied with 97140 of session AM: no 59/X modifier documented"
    assert edit["table"].startswith("rules/ncci/ptp-practitioner-excerpt.txt:")
    assert [e for e in docs[1]["edits"] if e["rule"] == "ncci-ptp"] == []


def test_a_scenario_patients_sessions_of_one_date_get_the_edit_across_them(tmp_path):
    # The scenario's patient: 97530 then 97140 on one date (session-1, session-2 by place). As `bill` gives
    # it (docs/domain.md §17.1): the PTP error on session-2, the later by session id, naming session-1.
    (tmp_path / "day.tests.yaml").write_text(
        "payer: medicare\nscenarios:\n"
        "  - name: two sessions of one day\n    patient:\n"
        "      - session: {date_of_service: 2026-03-05, discipline: PT, services: [{code: '97530', minutes: 23}]}\n"
        "        expect: {only_these_warnings: true}\n"
        "      - session: {date_of_service: 2026-03-05, discipline: PT, services: [{code: '97140', minutes: 23}]}\n"
        "        expect:\n"
        "          warnings: [{rule: ncci-ptp, severity: error, codes: ['97530', '97140'],\n"
        "                      message: '97530 of session session-1 with 97140 of this session'}]\n", encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "engine", "test", str(tmp_path / "day.tests.yaml"), "--engine",
                          "python"], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0 and "scenarios: 1 passed, 0 failed" in run.stdout, run.stdout + run.stderr
