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
