"""Counters by prior authorization (issue 13 item 3: the period "authorization"; docs/domain.md §18.3, §18.5)
and the counters' messages checked at load. The example payer rules/private_payers/example-authorizations.yaml
(EXAMPLE: no real policy) covers 12 visits per authorization: visit 12 warns, visits 13 on are held; a
session names its authorization in its context (context.authorization)."""
from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from engine.counters import PatientYear, apply_all
from engine.loader import Registry

from conftest import ENGINES, session_from

ROOT = Path(__file__).resolve().parents[1]
PAYER = "example-authorizations"


def visit(date, authorization=None, sid=None, **extra):
    return {"session_id": sid or f"v-{date}", "payer": PAYER, "patient_id": "P-1", "date_of_service": date,
            "discipline": "PT", "services": [{"code": "97110", "minutes": 30}],
            **({"context": {"authorization": authorization}} if authorization is not None else {}), **extra}


def run(biller, sessions: list) -> dict:
    parsed = [session_from(s, i) for i, s in enumerate(sessions, 1)]
    results = [biller.bill(s) for s in parsed]
    apply_all(biller.registry.resolve, parsed, results)
    return {r["session_id"]: r for r in results}


def said(result) -> list:
    return [(w["severity"], w["message"].split(":")[0]) for w in result["warnings"]
            if w["rule"] == "authorization-visits"]


@pytest.fixture(params=ENGINES)
def biller(request, billers):
    return billers[request.param]


def test_visits_are_counted_per_authorization_in_date_order(biller):
    # PA-1 on March 1..13 (given shuffled), PA-2 on March 14: visit 12 of PA-1 warns, visit 13 is held,
    # PA-2's first visit counts from 1 (no warning), whatever the input order
    sessions = [visit(f"2026-03-{d:02d}", "PA-1") for d in range(1, 14)] + [visit("2026-03-14", "PA-2")]
    random.Random(4).shuffle(sessions)
    results = run(biller, sessions)
    assert said(results["v-2026-03-12"]) == [("warning", "visit 12 of the 12 visits authorization PA-1 covers")]
    assert said(results["v-2026-03-13"]) == [("error", "held")]
    assert "visit 13 under authorization PA-1, which covers 12 visits" in results["v-2026-03-13"]["warnings"][0]["message"]
    assert all(said(results[f"v-2026-03-{d:02d}"]) == [] for d in range(1, 12))
    assert said(results["v-2026-03-14"]) == []


def test_an_authorization_is_not_a_year_and_a_number_is_its_text(biller):
    # PA 7 spans the year end: Dec 2025 visits 1-11, Jan 2026 visit 12 (warns) and 13 (held); the number 7
    # and the text "7" are one authorization
    sessions = [visit(f"2025-12-{d:02d}", 7) for d in range(1, 12)] + \
        [visit("2026-01-02", "7"), visit("2026-01-03", 7)]
    results = run(biller, sessions)
    assert said(results["v-2026-01-02"]) == [("warning", "visit 12 of the 12 visits authorization 7 covers")]
    assert said(results["v-2026-01-03"]) == [("error", "held")]


@pytest.mark.parametrize("context", [None, {"authorization": ""}, {"authorization": True},
                                     {"authorization": ["PA-1"]}, {"other": "PA-1"}])
def test_a_session_without_an_authorization_is_said_and_not_counted(biller, context):
    # 12 visits under PA-1 and one without a usable authorization between them: PA-1's 12th visit still
    # warns (the one without was not counted), and that one says so
    sessions = [visit(f"2026-03-{d:02d}", "PA-1") for d in range(1, 13)]
    odd = visit("2026-03-05", sid="odd")
    if context is not None:
        odd["context"] = context
    results = run(biller, sessions + [odd])
    assert [w["message"].split(":")[0] for w in results["odd"]["warnings"]] == ["no authorization"]
    assert said(results["v-2026-03-12"]) == [("warning", "visit 12 of the 12 visits authorization PA-1 covers")]


def test_year_to_date_does_not_seed_an_authorization(biller):
    # year_to_date.authorized-visits 11 (a counter id names it) would make the first visit the 12th if it
    # seeded the authorization: it is a year's figure, so PA-1's first visit is visit 1
    results = run(biller, [visit("2026-03-01", "PA-1", year_to_date={"authorized-visits": 11})])
    assert said(results["v-2026-03-01"]) == []


def test_an_authorization_with_a_slash_survives_the_snapshot():
    # the audit log keeps the totals as 'payer/counter/period/bucket': an authorization "PA/2026/7" holds '/'
    registry = Registry()
    year = PatientYear(registry.resolve, "P-1")
    year.totals = {(PAYER, "authorized-visits", "authorization PA/2026/7", "authorized-visits"): 3}
    again = PatientYear.restore(registry.resolve, json.loads(json.dumps(year.snapshot())))
    assert again.totals == {(PAYER, "authorized-visits", "authorization PA/2026/7", "authorized-visits"): 3}


def test_replay_reproduces_a_held_visit(tmp_path):
    # the 13th visit under "PA/1" is held; audit --replay of the run reproduces every session
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps(visit(f"2026-03-{d:02d}", "PA/1")) + "\n" for d in range(13, 0, -1)))
    db = tmp_path / "log.db"
    run_cli = lambda *a: subprocess.run([sys.executable, "-m", "engine", *map(str, a)], cwd=ROOT,  # noqa: E731
                                        capture_output=True, text=True)
    billed = run_cli("bill", path, "--format", "jsonl", "--audit-db", db)
    assert billed.returncode == 1 and "held: visit 13 under authorization PA/1" in billed.stdout
    replay = run_cli("audit", db, "--replay")
    assert replay.returncode == 0, replay.stdout + replay.stderr


def test_replay_reproduces_the_visit_limit_and_authorization_warnings(tmp_path):
    """example-visit-limits: visits 1-21 of one patient; visit 13 needs a new authorization, 20 warns, 21 is
    held. Replayed from the log, each session starts from its logged state, whose totals are text ("12.00"):
    the messages must still say "visit 21", as billed (they said "visit 21.00": 3 sessions differed)."""
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps({**visit(f"2026-03-{d:02d}"), "payer": "example-visit-limits"}) + "\n"
                            for d in range(21, 0, -1)))
    db = tmp_path / "log.db"
    run_cli = lambda *a: subprocess.run([sys.executable, "-m", "engine", *map(str, a)], cwd=ROOT,  # noqa: E731
                                        capture_output=True, text=True)
    billed = run_cli("bill", path, "--format", "jsonl", "--audit-db", db)
    assert "held: visit 21 is past the 20 visits" in billed.stdout and "visit 13 needs" in billed.stdout
    replay = run_cli("audit", db, "--replay")
    assert replay.returncode == 0 and "21 reproduced, 0 differ" in replay.stdout, replay.stdout


# --- the counters' messages are checked when the payer file is read ------------------------------------

COUNTER = """payer: t
name: T
extends: medicare
counters:
  - id: visits
    description: x
    source: test
    counts: visits
    {period}
    thresholds:
      - id: lim
        values:
          - {{value: 1}}
        past:
          - warn: {message}
"""


def test_an_unknown_placeholder_in_a_counter_message_is_an_error_at_its_line(tmp_path):
    (tmp_path / "t.yaml").write_text(COUNTER.format(period="", message='"visit {totl}"'))
    errors = [str(e) for e in Registry([tmp_path], strict=False).errors()]
    assert any(e.startswith(f"{tmp_path / 't.yaml'}:15: counters[0].thresholds[0].past[0].warn: unknown "
                            "placeholder {totl} (did you mean 'total'?)") for e in errors), errors


def test_authorization_field_is_for_the_authorization_period(tmp_path):
    (tmp_path / "t.yaml").write_text(COUNTER.format(period="authorization_field: pa", message='"x"'))
    errors = [str(e) for e in Registry([tmp_path], strict=False).errors()]
    assert any(":9: counters[0].authorization_field: authorization_field is for period: authorization" in e
               for e in errors), errors


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=st.lists(st.sampled_from(list("{}!:>0 ") + ["total", "value", "year", "counter", "authorization",
                                                           "totl", "x"]), max_size=8).map("".join))
def test_a_counter_message_is_refused_at_load_or_billed_without_a_crash(tmp_path_factory, message):
    """Any message text: the loader gives FILE:LINE errors, or both visits bill (the second past the value
    1) and the warning shows the message with its placeholders filled."""
    folder = tmp_path_factory.mktemp("m")
    (folder / "t.yaml").write_text(COUNTER.format(period="period: authorization", message=json.dumps(message)))
    registry = Registry([folder], strict=False)
    if registry.errors():
        assert all(str(e).startswith(str(folder / "t.yaml") + ":") for e in registry.errors())
        return
    from engine.billing import Biller
    biller = Biller(Registry([folder]), "python")
    try:
        sessions = [session_from({**visit(d, "A"), "payer": "t", "session_id": d}, i)
                    for i, d in enumerate(["2026-01-01", "2026-01-02"], 1)]
        results = [biller.bill(s) for s in sessions]
        apply_all(biller.registry.resolve, sessions, results)
        (warning,) = [w for w in results[1]["warnings"] if w["rule"] == "lim"]
        assert warning["message"] == message.format(value=1, total=2, year=2026, counter="visits", authorization="A")
    finally:
        biller.close()


def test_a_fractional_count_in_year_to_date_is_said_not_cut(billers):
    """example-visit-limits: year_to_date visits 19.7 was cut to 19 silently (visit 20 then warned). A count
    is whole: 19.7 is not used (a warning says so) and the year starts at 0: this visit is visit 1."""
    biller = billers["python"]
    results = run(biller, [{**visit("2026-03-01"), "payer": "example-visit-limits", "year_to_date": {"visits": 19.7}}])
    (result,) = results.values()
    assert [(w["rule"], w["message"]) for w in result["warnings"]] == [
        ("engine.year-to-date", "year_to_date visits 19.7 is not a whole number of visits: not used, the visits "
                                "total of 2026 starts at 0")]
