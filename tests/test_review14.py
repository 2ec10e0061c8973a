"""Hostile review of the round that bills the library's and the service's lists through engine/patients.py and
counts visits by prior authorization: one test per defect found, and the harnesses that would catch the next.

Payers (bundled, all EXAMPLE or Medicare): example-authorizations covers 12 visits per authorization (visit 12
warns, 13 on are held; docs/domain.md §18.5); example-visit-limits 20 visits a year and a new authorization
every 12; example-medicare-fees prices with the SYNTHETIC schedule rules/private_payers/fees/synthetic-example.csv;
example-ncci-bypass does not honour 59 on 97530 with 97140 (docs/domain.md §17.3).
"""
from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import re
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from engine import patients as P
from engine.api import RuleBook
from engine.service import Refused, Service, create_app

with warnings.catch_warnings():     # Starlette 1.x suggests httpx2 for its TestClient; httpx still works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

ROOT = Path(__file__).resolve().parent.parent
AUTH = "example-authorizations"


@pytest.fixture(scope="module")
def book():
    with RuleBook(engine="python") as made:
        yield made


def visit(k, authorization, patient="P1", payer=AUTH, day=None, **extra) -> dict:
    """One PT visit of 97110 30 min (2 units), on March 1 + k (or `day`)."""
    return {"session_id": f"S{k:02d}", "payer": payer, "patient_id": patient,
            "date_of_service": day or f"2026-03-{k + 1:02d}", "discipline": "PT",
            "services": [{"code": "97110", "minutes": 30}], "context": {"authorization": authorization}, **extra}


def held(record) -> list:
    """The authorization counter's warnings of a record, by their first words."""
    return [(w["severity"], w["message"].split(" under ")[0].split(" of the ")[0]) for w in record["warnings"]
            if w["rule"] == "authorization-visits"]


# --- counters by authorization: which authorization a session names ---------------------------------------

def test_two_long_values_that_share_their_first_64_characters_are_never_one_authorization(book):
    """Context authorizations A...AB and A...AC (64 A's, then one letter), 13 visits alternating between them.
    Before the fix both were cut to their first 64 characters and counted as one authorization: visit 12
    warned and visit 13 was held, though neither value was used 12 times. A value over 64 characters is no
    authorization number (docs/domain.md §18.5: a number such as PA-1234): each visit says so and none is
    counted, so nothing warns or is held."""
    stem = "A" * 64
    records = list(book.bill_many([visit(k, stem + "BC"[k % 2]) for k in range(13)]))
    for record in records:
        [said] = [w for w in record["warnings"] if w["rule"] == "authorization-visits"]
        assert said["severity"] == "warning" and said["message"].startswith("no authorization")
        assert "over 64 characters" in said["message"] and stem not in said["message"]


@pytest.mark.parametrize("value, why", [
    (7.5, "a number that is not whole"), (True, "true"), (["PA-1"], "a list"), ({"n": 1}, "an object"),
    ("", "empty"), ("  \t", "empty"), ("PA-" + "9" * 70, "over 64 characters"), ("PA\x1b[31m1", "a control character")])
def test_a_context_authorization_that_is_no_authorization_number_is_said_so_and_not_counted(book, value, why):
    """11 visits under PA-1, then one whose context authorization is no authorization number (an odd type, a
    value over 64 characters, a control character), then PA-1's 12th: that one is said to name no usable
    authorization, saying why (not a bare 'no authorization' for a value the billing staff did type), and is
    not counted, so PA-1's 12th visit is its 12th (warns)."""
    sessions = [visit(k, "PA-1") for k in range(11)] + [visit(11, value), visit(12, "PA-1")]
    records = list(book.bill_many(sessions))
    odd = [w["message"] for w in records[11]["warnings"] if w["rule"] == "authorization-visits"]
    assert len(odd) == 1 and odd[0].startswith("no authorization") and why in odd[0], odd
    assert "\x1b" not in odd[0]
    assert held(records[12]) == [("warning", "visit 12")]


def test_an_authorization_is_one_whatever_its_spaces_and_the_number_or_its_text(book):
    """'PA 7', ' PA  7 ' and 'PA\\u00a07' (a no-break space) are one authorization number written with other
    spaces; 7 and '7' one number. 12 visits under the first three: the 12th warns, the 13th (under 'PA 7')
    is held. Unicode letters are kept: 'PÄ-7' is another authorization, its first visit counts 1."""
    spellings = ["PA 7", " PA  7 ", "PA\u00a07"]
    sessions = [visit(k, spellings[k % 3]) for k in range(13)] + [visit(13, "PÄ-7")]
    records = list(book.bill_many(sessions))
    assert held(records[11]) == [("warning", "visit 12")]
    assert held(records[12]) == [("error", "held: visit 13")]
    assert "authorization PA 7," in records[12]["warnings"][0]["message"]
    assert held(records[13]) == []
    numbers = list(book.bill_many([visit(k, 7 if k % 2 else "7") for k in range(13)]))
    assert held(numbers[12]) == [("error", "held: visit 13")]


def test_one_authorization_number_of_two_patients_is_counted_apart(book):
    """PA-1 under example-authorizations for patients P1 and P2, 7 visits each, interleaved: 14 visits of PA-1
    in all, but each patient's authorization has 7, so nothing warns (an authorization is the patient's)."""
    sessions = [visit(k, "PA-1", patient=f"P{1 + k % 2}") for k in range(14)]
    assert [held(r) for r in book.bill_many(sessions)] == [[]] * 14


# --- the service: a list whose sessions all have a patient_id ----------------------------------------------

def patients_list(n: int) -> list:
    return [{"session_id": f"S{k}", "payer": "medicare", "patient_id": f"P{k % 7}", "date_of_service": "2026-03-05",
             "discipline": "PT", "services": [{"code": "97110", "minutes": 30}]} for k in range(n)]


def test_the_service_gives_other_requests_turns_while_it_reads_a_list_of_patients_sessions(book, monkeypatch):
    """320 sessions, each with a patient_id: every one is read and spooled before the first is billed (a
    patient's later session may come first by date). The service gives the event loop to other requests every
    32 sessions (service.py's docstring): 320 / 32 = 10 turns while reading, before the first session is
    billed. Before the fix it gave none: an 8 MB list held every other request for seconds."""
    ticks, at_first_bill = [0], []
    from engine import api

    real = api._Turns.evaluate

    def watched(self, *args, **kwargs):
        at_first_bill.append(ticks[0])
        return real(self, *args, **kwargs)
    monkeypatch.setattr(api._Turns, "evaluate", watched)

    async def run():
        async def ticker():
            while True:
                await asyncio.sleep(0)
                ticks[0] += 1
        other = asyncio.create_task(ticker())
        records = await Service(book).bill_list(patients_list(320), None, None)
        other.cancel()
        return records
    records = asyncio.run(run())
    assert len(records) == 320
    assert at_first_bill[0] >= 9, at_first_bill[:1]


def test_the_service_time_limit_holds_while_a_list_is_read(book, monkeypatch):
    """A time limit already past when the list is read: the answer is 503 before any session is billed
    (before the fix the whole list was read and spooled, and 32 sessions billed, before the limit was
    looked at: a 0.5 s limit was answered after 3 s on an 8 MB list)."""
    from engine import api
    billed = []
    real = api._Turns.evaluate
    monkeypatch.setattr(api._Turns, "evaluate", lambda self, *a, **k: billed.append(1) or real(self, *a, **k))
    with pytest.raises(Refused) as refused:
        asyncio.run(Service(book, time_limit=0.0).bill_list(patients_list(200), None, None))
    assert refused.value.status == 503
    assert "after 0 of 200 sessions" in refused.value.message and billed == []


def test_the_service_time_limit_holds_in_the_middle_of_a_shard_of_patients(book, monkeypatch):
    """100 sessions of 7 patients: one shard (SHARD is 256). The limit passes while the 40th session is
    billed; it is looked at every 32 sessions billed, so the answer is 503 after 64, mid-shard, and the
    spools are closed (no file descriptor left open)."""
    from engine import api
    real = api._Turns.evaluate

    def slow(self, *args, **kwargs):
        if self.count == 40:
            self.deadline = 0.0         # the limit passes now
        return real(self, *args, **kwargs)
    monkeypatch.setattr(api._Turns, "evaluate", slow)
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(Refused) as refused:
        asyncio.run(Service(book, time_limit=1000).bill_list(patients_list(100), None, None))
    assert refused.value.status == 503 and "after 64 of 100 sessions" in refused.value.message
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) <= before


# --- the harness: a batch against each session billed alone ------------------------------------------------
#
# For a random batch, each patient's records in the whole batch must be the records of that patient's
# sessions billed alone (only them, in input order), and each session without a patient_id (or whose
# patient_id the engine does not take) the record of that session billed alone: no session's record may
# depend on another patient's sessions or on sessions without a patient. Through the library, the service
# and the command (--jobs 1 and 2, small spools and shards); "alone" is billed by another RuleBook or
# another process, so that a memo or cache shared between sessions cannot make both sides wrong alike.

SMALL_AUTH = """payer: auth-small
name: "TEST: authorizations of 2 visits"
extends: medicare
counters:
  - id: authorized-visits
    description: TEST visits under each authorization
    source: test
    counts: visits
    period: authorization
    thresholds:
      - id: authorization-visits
        values:
          - {value: 2}
        reached:
          - warn: "visit {total} of the {value} visits authorization {authorization} covers"
        past:
          - hold: "visit {total} under authorization {authorization}, which covers {value} visits"
"""
PAYERS = ["example-medicare-fees", "example-visit-limits", AUTH, "example-ncci-bypass", "auth-small", "medicare"]
DAYS = ["2025-12-31", "2026-01-02", "2026-03-05", "2026-03-05", "2026-03-05", "2026-03-06", None]
CODES = ["97110", "97140", "97530", "97112", "97161", "92507"]
AUTHS = ["PA-1", "PA-1", "PA-2", " PA-1 ", 7, "7", "PÄ-1", "", 7.5, None, "A" * 65]


@pytest.fixture(scope="module")
def rules(tmp_path_factory):
    root = tmp_path_factory.mktemp("rules14")
    (root / "auth-small.yaml").write_text(SMALL_AUTH)
    return root


@pytest.fixture(scope="module")
def books(rules):
    """(the book billing whole batches, the book billing each group alone, a service client on the first)."""
    with RuleBook([rules], engine="python") as whole, RuleBook([rules], engine="python") as alone:
        yield whole, alone, TestClient(create_app(whole), raise_server_exceptions=False)


def a_batch(rnd: random.Random, size: int) -> list:
    """Sessions of 1-3 patients and two more (one given as the number 3 and the text "3": one patient; one a
    number of 131 digits), often on one date,
    several payers, year_to_date near the KX threshold, authorizations (odd ones too), PTA minutes and
    documented 59s; sessions without a patient_id (some with a year_to_date: a patient of their own); and
    what cannot be billed: a schema error, an unknown payer, a patient_id the schema refuses, no session."""
    patients = [f"P{k}" for k in range(rnd.randint(1, 3))] + [3, "3", 10**130]
    usual = {str(p): (rnd.choice(PAYERS), rnd.choice(AUTHS)) for p in patients}    # a patient's, mostly
    out = []
    for k in range(size):
        kind = rnd.choice(["patient"] * 7 + ["none", "none", "schema", "payer", "bad-patient", "not-a-session"])
        if kind == "not-a-session":
            out.append(rnd.choice([5, "text", [1, 2], None]))
            continue
        patient = rnd.choice(patients)
        payer, authorization = usual[str(patient)] if rnd.random() < 0.6 else (rnd.choice(PAYERS), rnd.choice(AUTHS))
        data = {"session_id": f"S{rnd.randint(0, size)}", "payer": payer,
                "discipline": rnd.choice(["PT", "PT", "OT", "SLP"]),
                "services": [{"code": rnd.choice(CODES), "minutes": rnd.randint(0, 60),
                              **({"provider": "PTA"} if rnd.random() < 0.2 else {}),
                              **({"modifiers": ["59"]} if rnd.random() < 0.2 else {})}
                             for _ in range(rnd.randint(1, 3))]}
        day = rnd.choice(DAYS)
        if day:
            data["date_of_service"] = day
        if kind != "none":
            data["patient_id"] = patient if kind != "bad-patient" else rnd.choice(["", "x" * 129])
        if rnd.random() < 0.3:
            data["year_to_date"] = {"pt_slp": rnd.choice([0, 2400, 2470]), "visits": rnd.choice([0, 11, 19])}
        if authorization is not None:
            data["context"] = {"authorization": authorization}
        if kind == "schema":
            data["services"][0]["minutes"] = -1
        elif kind == "payer":
            data["payer"] = "no-such-payer"
        out.append(data)
    return out


def groups(batch: list) -> list:
    """The places of each patient's sessions (a patient_id the engine takes: a text of 1-128 characters or a
    whole number of any length, 3 and "3" one patient), and of each other element alone."""
    found: dict = {}
    for place, item in enumerate(batch):
        patient = item.get("patient_id") if isinstance(item, dict) else None
        if type(patient) is int or type(patient) is str and 1 <= len(patient) <= 128:
            found.setdefault(str(patient), []).append(place)
        else:
            found[("alone", place)] = [place]
    return list(found.values())


def same(record: dict) -> dict:
    """A record without what names the input's positions: an error record's FILE:LINE and session-N."""
    if "error" not in record:
        return record
    return {"session_id": re.sub(r"^session-\d+$", "session-N", str(record["session_id"])),
            "error": re.sub(r"^\S+?\.jsonl:\d+: ", "", record["error"])}


def check_alone(batch: list, whole: list, bill_alone) -> None:
    assert len(whole) == len(batch)
    for places in groups(batch):
        alone = bill_alone([batch[p] for p in places])
        assert [same(r) for r in alone] == [same(whole[p]) for p in places], places


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(2, 18),
       options=st.sampled_from([{}, {}, {"payer": "auth-small"}, {"date": "2026-03-05"}]))
def test_harness_each_patients_records_in_a_batch_are_its_sessions_billed_alone_library_and_service(books, seed, size,
                                                                                                  options):
    """Also with a payer or a date of service for every session (--payer, --date; ?payer=, ?date=)."""
    whole_book, alone_book, client = books
    batch = a_batch(random.Random(seed), size)
    whole = list(whole_book.bill_many(iter(batch), **options))
    check_alone(batch, whole, lambda sessions: list(alone_book.bill_many(sessions, **options)))
    served = client.post("/v1/bill", json=batch, params=options)
    assert served.status_code == 200 and served.json() == whole
    check_alone(batch, whole, lambda sessions: client.post("/v1/bill", json=sessions, params=options).json())


def test_harness_the_batches_reach_what_depends_on_other_sessions(books):
    """The check of the check: batches like the harness's give KX, a PTP edit across a patient's sessions
    of one date, an authorization's visit reached and held, error records and sessions without a patient."""
    found = set()
    for seed in range(40):
        batch = a_batch(random.Random(seed), 16)
        for record in books[0].bill_many(batch):
            if "error" in record:
                found.add("error record")
                continue
            messages = [(w["rule"], w["message"]) for w in record["warnings"]]
            found.update(name for name, hit in (
                ("KX", any("KX" in line["modifiers"] for line in record["lines"])),
                ("PTP across", any(r == "ncci-ptp" and "of session" in m for r, m in messages)),
                ("authorization reached", any(r == "authorization-visits" and m.startswith("visit") for r, m in messages)),
                ("authorization held", any(r == "authorization-visits" and m.startswith("held") for r, m in messages)),
                ("no authorization", any(r == "authorization-visits" and m.startswith("no auth") for r, m in messages)))
                if hit)
    assert found == {"KX", "PTP across", "authorization reached", "authorization held", "no authorization",
                     "error record"}


def command(path: Path, rules: Path, jobs: int) -> list:
    """`payrules bill PATH --format jsonl --jobs N`, with spools of 1,500 bytes (several sorted runs) and
    shards of 2 sessions."""
    code = ("import sys; import engine.patients as P; P.SPOOL_BYTES = 1500; P.SHARD = 2\n"
            f"from engine.cli import main; sys.exit(main(['bill', {str(path)!r}, '--rules', {str(rules)!r}, "
            f"'--format', 'jsonl', '--jobs', '{jobs}']))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, timeout=300)
    assert b"Traceback" not in run.stderr and run.returncode in (0, 1), run.stderr.decode()[-2000:]
    return [json.loads(line) for line in run.stdout.splitlines()]


@pytest.mark.parametrize("seed", [14, 1914])
def test_harness_each_patients_records_in_a_batch_are_its_sessions_billed_alone_command(rules, tmp_path, seed):
    """The harness through `payrules bill` with --jobs 1 and 2 (each group alone in a process of its own)."""
    batch = a_batch(random.Random(seed), 24)
    path = tmp_path / "batch.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in batch))

    def bill_alone(sessions):
        one = tmp_path / "alone.jsonl"
        one.write_text("".join(json.dumps(item) + "\n" for item in sessions))
        return command(one, rules, 1)
    one = command(path, rules, 1)
    assert command(path, rules, 2) == one
    check_alone(batch, one, bill_alone)


# --- patient ids the reader takes are patients ---------------------------------------------------------------

@pytest.mark.parametrize("patient", [10**130, -(10**129), 10**25])
def test_a_whole_number_patient_id_of_any_length_is_a_patient(book, tmp_path, patient):
    """The session schema takes a patient_id that is a whole number of any size (maxLength is for texts). Two
    sessions of that patient, the first with year_to_date $2,470 PT+SLP under example-medicare-fees (97110 2
    units x $30.00 = $60.00 each, SYNTHETIC): 2,470 + 60 = 2,530 > 2,480 (2026) -> KX on both. Before the fix
    a number of more than 128 digits was billed as no patient: its year_to_date was dropped and no KX given,
    silently. The same through the command (where an integer beyond 64 bits takes the reader's slow path)."""
    sessions = [{"session_id": f"S{k}", "payer": "example-medicare-fees", "patient_id": patient,
                 "date_of_service": f"2026-03-0{k + 1}", "discipline": "PT", "services": [{"code": "97110", "minutes": 30}],
                 **({"year_to_date": {"pt_slp": 2470}} if k == 0 else {})} for k in range(2)]
    want = [["GP", "KX"], ["GP", "KX"]]
    assert [r["lines"][0]["modifiers"] for r in book.bill_many(sessions)] == want
    path = tmp_path / "big.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in reversed(sessions)))
    for jobs in (1, 2):
        run = subprocess.run([sys.executable, "-m", "engine", "bill", str(path), "--format", "jsonl", "--jobs", str(jobs)],
                             cwd=ROOT, capture_output=True, timeout=120)
        assert [json.loads(line)["lines"][0]["modifiers"] for line in run.stdout.splitlines()] == want, run.stderr


# --- bill_many over generators: laziness, the caller's exceptions, abandoned iterators, threads -----------------

def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def plain(k, patient=None) -> dict:
    return {"session_id": f"S{k}", "payer": "medicare", "date_of_service": "2026-03-05", "discipline": "PT",
            "services": [{"code": "97110", "minutes": 30}], **({"patient_id": patient} if patient else {})}


def test_bill_many_reads_an_endless_generator_of_sessions_without_a_patient_lazily(book):
    import itertools
    results = book.bill_many(plain(k) for k in itertools.count())
    assert [next(results)["session_id"] for _ in range(3)] == ["S0", "S1", "S2"]
    results.close()


def test_an_abandoned_or_failing_bill_many_closes_its_spools(book, monkeypatch):
    """Spools of 2,000 bytes: 500 sessions (every other one a patient's) make many sorted runs, each an open
    temporary file. A bill_many read 3 records and dropped, and one whose generator raises after 250
    sessions, leave no file open; the caller gets its own exception, with the records before it."""
    monkeypatch.setattr(P, "SPOOL_BYTES", 2000)
    before = open_files()
    results = book.bill_many(plain(k, f"P{k % 7}" if k % 2 else None) for k in range(500))
    assert [next(results)["session_id"] for _ in range(3)] == ["S0", "S1", "S2"]
    assert open_files() > before + 10           # the check of the check: runs were written
    del results
    gc.collect()
    assert open_files() == before

    def failing():
        yield from (plain(k, f"P{k % 7}") for k in range(250))
        raise LookupError("the caller's own")
    with pytest.raises(LookupError, match="the caller's own"):
        list(book.bill_many(failing()))
    gc.collect()
    assert open_files() == before


def test_one_rulebook_used_from_threads_while_bill_many_is_suspended(rules):
    """Four threads each read a bill_many of a random batch one record at a time, and between records bill,
    explain and compare sessions on the same book (durable engine where installed: its handles must never be
    driven from two threads at once). Every answer equals the one given with no other thread."""
    with RuleBook([rules]) as shared:
        batches = [a_batch(random.Random(seed), 14) for seed in range(4)]
        alone = [list(shared.bill_many(batch)) for batch in batches]
        one = [plain(k, "P9") for k in range(3)]
        single = [shared.bill(s) for s in one]
        failures = []

        def work(i):
            try:
                for _ in range(2):
                    got = []
                    for record in shared.bill_many(iter(batches[i])):
                        got.append(record)
                        k = len(got) % 3
                        if shared.bill(one[k]) != single[k]:
                            failures.append("bill")
                        shared.explain(one[k])
                        shared.compare(one[k], ["medicare", AUTH])
                    if got != alone[i]:
                        failures.append(f"bill_many {i}")
            except Exception as exc:        # noqa: BLE001 - reported below
                failures.append(repr(exc))
        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []


def test_replay_reproduces_authorizations_of_odd_values_two_payers_and_two_patients(rules, tmp_path):
    """auth-small (TEST: 2 visits an authorization: visit 2 warns, 3 on are held) and example-authorizations,
    both counting PA-1; patients P1 and P2 both under PA-1; authorizations written ' PA-1 ', 7 and '7', 'PÄ-1',
    and values that are none (7.5, 65 characters). P1 under auth-small: PA-1 visits 1, 2 (warns), 3 (' PA-1 ',
    held); 7 then '7': visits 1, 2 (warns). `audit --replay` bills each session alone from its logged input
    (which keeps the authorization) and state: every one reproduced."""
    values = ["PA-1", "PA-1", " PA-1 ", 7, "7", "PÄ-1", 7.5, "A" * 65]
    sessions = [visit(k, value, patient=patient, payer=payer)
                for k, (value, patient, payer) in enumerate(
                    [(v, "P1", "auth-small") for v in values] + [(v, "P2", "auth-small") for v in values[:3]]
                    + [(v, "P1", AUTH) for v in values])]
    random.Random(5).shuffle(sessions)
    path, db = tmp_path / "auth.jsonl", tmp_path / "log.db"
    path.write_text("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in sessions), encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "engine", "bill", str(path), "--rules", str(rules), "--format", "jsonl",
                          "--audit-db", str(db)], cwd=ROOT, capture_output=True, timeout=120)
    records = {r["session_id"] + r["payer"]: r for r in map(json.loads, run.stdout.splitlines())}
    said = {key: held(r) for key, r in records.items() if r["payer"] == "auth-small" and r["session_id"] <= "S10"}
    # P1's PA-1 visits are S00, S01, S02 (' PA-1 '); 7 and '7' are S03, S04; P2's are S08, S09, S10
    assert said["S01auth-small"] == [("warning", "visit 2")] and said["S02auth-small"] == [("error", "held: visit 3")]
    assert said["S04auth-small"] == [("warning", "visit 2")] and said["S10auth-small"] == [("error", "held: visit 3")]
    replay = subprocess.run([sys.executable, "-m", "engine", "audit", str(db), "--replay"], cwd=ROOT,
                            capture_output=True, timeout=120)
    assert replay.returncode == 0 and b"19 reproduced, 0 differ" in replay.stdout, replay.stdout.decode()[-1500:]


# --- the web page's explanation ----------------------------------------------------------------------------------

def test_the_pages_explanation_shows_the_patients_year_and_the_kx_it_gives(book):
    """97110 30 min = 2 units x $30.00 (SYNTHETIC) = $60.00 under example-medicare-fees, year_to_date $2,470:
    2,470 + 60 = 2,530 > 2,480 (2026) -> KX, as `payrules explain` and /v1/explain say. Before the fix the
    page's explanation billed the session without its patient's year: 'Billed: 97110 x2 GP', no KX and no
    running total, for a claim that needs KX."""
    import html as html_module
    client = TestClient(create_app(book), raise_server_exceptions=False)
    session = {"session_id": "S", "payer": "example-medicare-fees", "patient_id": "P", "date_of_service": "2026-03-05",
               "discipline": "PT", "services": [{"code": "97110", "minutes": 30}], "year_to_date": {"pt_slp": 2470}}
    page = client.post("/ui/explain", json={"session": session, "payer": "example-medicare-fees"})
    text = html_module.unescape(page.text)
    assert page.status_code == 200
    assert "Billed: 97110 x2 GP KX" in text
    assert "2,470.00 + 97110 60.00 = 2,530.00 > 2,480.00 (2026) → KX" in text


def test_harness_the_pages_explanation_is_the_commands_for_any_session(rules, books, tmp_path):
    """Each session of a random batch (patients with year_to_date, authorizations, edits) explained on the
    page for its payer: the text shown is `payrules explain FILE --payer ID` of that one session, word for
    word (both bill it as one session of its patient)."""
    import html as html_module
    client = books[2]
    sessions = [s for s in a_batch(random.Random(77), 30) if isinstance(s, dict) and s.get("payer") in PAYERS][:8]
    assert sessions
    for k, session in enumerate(sessions):
        page = client.post("/ui/explain", json={"session": session, "payer": session["payer"]})
        shown = re.search(r'<pre class="explain-text"[^>]*>(.*?)</pre>', page.text, re.S)
        path = tmp_path / f"one{k}.json"
        path.write_text(json.dumps(session))
        run = subprocess.run([sys.executable, "-m", "engine", "explain", str(path), "--payer", session["payer"],
                              "--rules", str(rules), "--engine", "python"], cwd=ROOT, capture_output=True, text=True,
                             timeout=120)
        if run.returncode == 2 or shown is None:      # not billed: the page says so, the command too
            assert shown is None and page.status_code in (200, 422), page.text[:300]
            continue
        assert html_module.unescape(shown.group(1)).strip() == run.stdout.strip()


# --- scenario tests bill a session as `payrules bill` does -------------------------------------------------------

def test_a_scenario_of_one_session_with_its_own_year_to_date_gets_the_kx_bill_gives(tmp_path):
    """One session (no patient: a patient of its own) with year_to_date $2,470 under example-medicare-fees:
    97110 30 min = 2 units x $30.00 (SYNTHETIC) = 60 -> 2,530 > 2,480 (2026) -> GP KX, which `payrules bill`
    gives. Before the fix a scenario's single session was billed without its year: 'expected x2 GP KX, got
    x2 GP', so a payer file's author was told the engine gives no KX."""
    path = tmp_path / "kx.tests.yaml"
    path.write_text('payer: example-medicare-fees\nscenarios:\n  - name: "its own year_to_date"\n    session:\n'
                    '      date_of_service: 2026-03-02\n      discipline: PT\n      year_to_date: {pt_slp: 2470}\n'
                    '      services: [{code: "97110", minutes: 30}]\n    expect:\n      lines: {"97110 GP KX": 2}\n')
    run = subprocess.run([sys.executable, "-m", "engine", "test", str(path)], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0 and "1 passed, 0 failed" in run.stdout, run.stdout


def test_harness_every_surface_bills_one_session_as_bill_does(books):
    """Each session of random batches billed alone: RuleBook.bill's record is the result RuleBook.explain
    shows and the one RuleBook.compare gives its payer (sessions with year_to_date, patients, authorizations,
    edits)."""
    book = books[0]
    for seed in range(6):
        for session in a_batch(random.Random(seed), 12):
            if not isinstance(session, dict) or session.get("payer") not in PAYERS:
                continue
            record = book.bill(session)
            explained = book.explain(session)
            assert explained.get("result", explained) == record
            if "error" not in record:
                assert book.compare(session, [session["payer"]])["results"][session["payer"]] == record


def test_harness_only_the_patient_path_bills_sessions():
    """What bills a session for an answer goes through engine/patients.py (bill_records, explain_in_order,
    bill_shard) or batch.process: a module calling Biller.bill or Biller.evaluate itself skips the patient's
    year (the page's explanation and one-session scenarios did). The known callers: billing.py itself,
    batch.process, patients.py, api._Turns, service._Timed, and audit's replay (which applies the logged
    year)."""
    allowed = {"billing.py", "batch.py", "patients.py", "api.py", "service.py", "audit.py", "compare.py"}
    found = {}
    for path in sorted((ROOT / "engine").glob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            # RuleBook.bill (book.bill, _book(...).bill) is the library's own path
            if re.search(r"(?<!book)(?<!\))\.(evaluate|bill)\(", line) and "def " not in line:
                found.setdefault(path.name, []).append(f"{number}: {line.strip()}")
    assert set(found) <= allowed, {name: lines for name, lines in found.items() if name not in allowed}
    # the allowed ones: compare.py's only when results are given by the caller; service.py's only _Timed's
    assert [line for line in found.get("service.py", []) if "super().evaluate" not in line] == []


def test_one_authorization_number_under_two_payers_is_counted_apart(books):
    """P1's PA-1 under example-authorizations on March 1-11 (visits 1-11 of 12: nothing said), then PA-1 under
    auth-small (TEST, 2 visits) on March 12: under auth-small it is visit 1 (nothing said), not visit 12 of
    one PA-1 (which auth-small would hold: 12 > 2)."""
    sessions = [visit(k, "PA-1") for k in range(11)] + [visit(11, "PA-1", payer="auth-small")]
    assert [held(r) for r in books[0].bill_many(sessions)] == [[]] * 12


# --- known and not fixed this round ------------------------------------------------------------------------------

@pytest.mark.xfail(strict=True, reason="the edits across one date's sessions are pairwise: a session gets one PTP "
                   "error per earlier session with the other code, among the first SAME_DAY (12) earlier sessions "
                   "(engine/patients.py; the quadratic cost of a placeholder patient id is bounded there, see "
                   "tests/test_patients.py). Refinement left: one edit per line and code pair naming the other "
                   "sessions (the first few, then a count), from per-code totals of the day")
def test_a_days_sessions_of_one_patient_id_give_each_line_one_edit_per_code_pair(book):
    """300 sessions of patient UNKNOWN on one date, alternately 97140 and 97530 (the excerpt's pair,
    modifier indicator 1, no 59): each 97530 line is not payable with the day's 97140, one edit for that
    pair, whatever the number of sessions that bill 97140."""
    sessions = [{"session_id": f"S{k:03d}", "payer": "medicare", "patient_id": "UNKNOWN", "date_of_service": "2026-03-05",
                 "discipline": "PT", "services": [{"code": ("97140", "97530")[k % 2], "minutes": 30}]} for k in range(300)]
    most = max(sum(w["rule"] == "ncci-ptp" for w in r["warnings"]) for r in book.bill_many(sessions))
    assert most == 1
