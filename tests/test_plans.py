"""The plan memo (engine/plans.py): what the rules decide for a fact is worked out once and remembered.

`Planner` keys each line fact by its code and by the fields some rule condition or message template
reads (minutes, group_size, provider, has_primary, s_discipline, s_date_of_service, s_line_count only
when read); the session fact by the session fields read. `Biller(remember=True)` uses the memo,
`Biller(remember=False)` asks the network about every fact of every session.

What is checked here:
1. memo equivalence: random sessions under every bundled payer, billed by one long-lived remembering
   Biller (shared by all examples, so the memo is really hit) and by a non-remembering one, give the same
   result dict, on each engine;
2. key completeness: tmp payers whose rules read a field Medicare does not read (minutes in a condition,
   {discipline} / {minutes} / {date_of_service} / {provider} / {group_size} in a message, date_of_service
   and line_count in session conditions, provider in a condition) give different answers for sessions that
   differ only in that field, in the same remembering Biller;
3. the network is asked only about facts it has not seen (counted by wrapping `planner.network.run`);
4. Outcome.facts and Outcome.firings describe every line of a session whose plans all came from the memo;
5. the memo starting afresh at MEMO_LIMIT does not lose the plans of the session being billed.

Expected values are worked out by hand from rules/medicare.yaml and the tmp payer texts below, using the
CMS chart (units = 1 + (m - 8) // 15 for m >= 8) and the pooled leftover allocation of engine/units.py.
"""
from __future__ import annotations

import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import engine.plans as plans
from conftest import ENGINES, session_from, units_of
from engine.billing import Biller
from engine.loader import Registry


BUNDLED_PAYERS = ["example-authorizations", "example-full-unit", "example-medicare-fees", "example-midpoint", "example-ncci-bypass",
                  "example-unit-limits", "example-visit-limits", "medicare"]


def without_session_id(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "session_id"}


# --- 1. memo equivalence -------------------------------------------------------------------------------

CODES = [
    "97110", "97112", "97140", "97530", "97035",    # 15-minute timed
    "97010", "97014", "G0283",                      # untimed (97014 has a Medicare warning)
    "97161", "92521",                               # evaluations
    "97150",                                        # group (group_size drawn below)
    "97129", "97130", "97545", "97546",             # families: cognitive, work hardening
    "92605", "92618", "96125",                      # block units
    "97139",                                        # unlisted
    "97999", "97111", "12345",                      # unknown (97111 is one edit from 97110/97112)
]
SERVICE = st.fixed_dictionaries(
    {"code": st.sampled_from(CODES), "minutes": st.integers(0, 120)},
    optional={"group_size": st.integers(0, 5), "provider": st.sampled_from(["PT", "PTA", "OT", "OTA", "SLP"]),
              "modifiers": st.lists(st.sampled_from(["59", "XE", "76", "95"]), max_size=3, unique=True)},
)


def agreeing_group_sizes(services: list) -> list:
    # entries of one code that disagree on group_size are an error for the session (design.md §4): every
    # entry of a code that gives a size gives the first one's
    first: dict = {}
    return [dict(s, group_size=first.setdefault(s["code"], s["group_size"])) if "group_size" in s else s
            for s in services]


# every session has a date: example-unit-limits and example-full-unit have dated rules and need one
SESSION = st.fixed_dictionaries(
    {"services": st.lists(SERVICE, min_size=1, max_size=8).map(agreeing_group_sizes),
     "date_of_service": st.sampled_from(["2025-06-01", "2025-12-31", "2026-01-01", "2026-03-02"])},
    optional={"discipline": st.sampled_from(["PT", "OT", "SLP"])},
)


@pytest.fixture(scope="module")
def memo_billers():
    """{engine: (remembering Biller, non-remembering Biller)}, kept for the whole module so that the
    remembering one's memo fills up across hypothesis examples."""
    registry = Registry()
    made = {engine: (Biller(registry, engine, remember=True), Biller(registry, engine, remember=False))
            for engine in ENGINES}
    yield made
    for pair in made.values():
        for biller in pair:
            biller.close()


def test_bundled_payers_are_the_ones_checked():
    assert Registry().ids() == BUNDLED_PAYERS


class NetworkAsked(Exception):
    pass


def refuse(facts):
    raise NetworkAsked([fact["id"] for fact in facts])


@settings(max_examples=60, deadline=None)
@given(data=SESSION)
def test_remembered_plans_give_the_same_result_as_the_network(memo_billers, data):
    session = session_from(data)
    for engine in ENGINES:
        remembering, fresh = memo_billers[engine]
        for payer in BUNDLED_PAYERS:
            expected = fresh.bill(session, payer)
            assert "error" not in expected, expected
            # first time: the facts not seen in earlier examples go through the network
            assert remembering.bill(session, payer) == expected, (engine, payer)
            # second time: every plan must come from the memo; the network is not even reachable
            # (Biller turns the NetworkAsked into an error record, which then differs from `expected`)
            network = remembering.planner(remembering.registry.resolve(payer, data["date_of_service"])).network
            network.run = refuse
            try:
                assert remembering.bill(session, payer) == expected, (engine, payer)
            finally:
                del network.run             # the class's run again


# --- 2. key completeness ---------------------------------------------------------------------------------

def tmp_payer(payer_id: str, rule: str) -> str:
    """A stand-alone payer (no extends, so nothing of Medicare is read): 97110 and 97140 are timed and
    pooled, plus one rule under test."""
    return textwrap.dedent("""\
        payer: {id}
        name: Memo key test payer {id}
        method: {{name: cms_8_minute}}
        codes:
          timed_15: [97110, 97140]
          group: [97150]
        rules:
          - id: timed-pool
            description: timed codes share the pool
            source: test
            when: {{line: {{code_in: timed_15}}}}
            then: [{{timed_units: true}}]
          - id: group-one-unit
            description: group therapy is one unit
            source: test
            when: {{line: {{code_in: group}}}}
            then: [{{units: 1}}]
        """).format(id=payer_id) + textwrap.indent(textwrap.dedent(rule), "  ")


def svc(code, minutes, **extra):
    return {"code": code, "minutes": minutes, **extra}


# name -> (rule text, session A, session B, warnings of A, warnings of B). A and B differ only in the field
# the rule reads (for line_count: in the presence of a second code, which is the only way to change it).
KEY_CASES = {
    # (a) condition on line minutes: 5 < 8 warns, 30 does not
    "minutes-condition": (
        """\
        - id: short-line
          description: a very short 97110
          source: test
          when: {line: {code: 97110, minutes: {lt: 8}}}
          then: [{warn: "97110 is under 8 minutes"}]
        """,
        {"services": [svc("97110", 5)]},
        {"services": [svc("97110", 30)]},
        [("warning", "short-line", "97110 is under 8 minutes", ["97110"])],
        [],
    ),
    # (b) {discipline} in a message, no condition on the discipline
    "discipline-template": (
        """\
        - id: discipline-note
          description: names the plan of care
          source: test
          when: {line: {code: 97110}}
          then: [{info: "97110 under a {discipline} plan of care"}]
        """,
        {"discipline": "PT", "services": [svc("97110", 20)]},
        {"discipline": "OT", "services": [svc("97110", 20)]},
        [("info", "discipline-note", "97110 under a PT plan of care", ["97110"])],
        [("info", "discipline-note", "97110 under a OT plan of care", ["97110"])],
    ),
    # (c) a line rule on the session's date_of_service ("2025-12-31" < "2026-01-01" as strings)
    "date-condition-on-line": (
        """\
        - id: new-form-2026
          description: from 2026 97110 needs a new form
          source: test
          when: {session: {date_of_service: {gte: "2026-01-01"}}, line: {code: 97110}}
          then: [{warn: "97110 from 2026 needs the new form"}]
        """,
        {"date_of_service": "2025-12-31", "services": [svc("97110", 20)]},
        {"date_of_service": "2026-01-01", "services": [svc("97110", 20)]},
        [],
        [("warning", "new-form-2026", "97110 from 2026 needs the new form", ["97110"])],
    ),
    # (c) a rule on the session fact alone, on date_of_service
    "date-condition-on-session": (
        """\
        - id: old-fee-schedule
          description: sessions before 2026 use the old fee schedule
          source: test
          when: {session: {date_of_service: {lt: "2026-01-01"}}}
          then: [{info: "billed under the 2025 fee schedule"}]
        """,
        {"date_of_service": "2025-12-31", "services": [svc("97110", 20)]},
        {"date_of_service": "2026-01-01", "services": [svc("97110", 20)]},
        [("info", "old-fee-schedule", "billed under the 2025 fee schedule", [])],
        [],
    ),
    # (c) a line rule on the session's line_count: the 97110 line facts differ only in s_line_count
    "line-count-condition-on-line": (
        """\
        - id: only-code
          description: 97110 as the only code of the day
          source: test
          when: {session: {line_count: 1}, line: {code: 97110}}
          then: [{info: "97110 was the only code"}]
        """,
        {"services": [svc("97110", 20)]},
        {"services": [svc("97110", 20), svc("97140", 20)]},
        [("info", "only-code", "97110 was the only code", ["97110"])],
        [],
    ),
    # (c) a rule on the session fact alone, on line_count
    "line-count-condition-on-session": (
        """\
        - id: several-codes
          description: two or more codes
          source: test
          when: {session: {line_count: {gte: 2}}}
          then: [{info: "two or more codes billed"}]
        """,
        {"services": [svc("97110", 20)]},
        {"services": [svc("97110", 20), svc("97140", 20)]},
        [],
        [("info", "several-codes", "two or more codes billed", [])],
    ),
    # (d) {minutes} in a message, no condition on the minutes
    "minutes-template": (
        """\
        - id: minutes-note
          description: records the minutes
          source: test
          when: {line: {code: 97110}}
          then: [{info: "97110: {minutes} min recorded"}]
        """,
        {"services": [svc("97110", 20)]},
        {"services": [svc("97110", 35)]},
        [("info", "minutes-note", "97110: 20 min recorded", ["97110"])],
        [("info", "minutes-note", "97110: 35 min recorded", ["97110"])],
    ),
    # {date_of_service} in a message
    "date-template": (
        """\
        - id: date-note
          description: records the date
          source: test
          when: {line: {code: 97110}}
          then: [{info: "97110 on {date_of_service}"}]
        """,
        {"date_of_service": "2026-03-02", "services": [svc("97110", 20)]},
        {"date_of_service": "2026-03-03", "services": [svc("97110", 20)]},
        [("info", "date-note", "97110 on 2026-03-02", ["97110"])],
        [("info", "date-note", "97110 on 2026-03-03", ["97110"])],
    ),
    # provider in a condition
    "provider-condition": (
        """\
        - id: assistant
          description: 97110 by an assistant
          source: test
          when: {line: {code: 97110, provider: PTA}}
          then: [{warn: "97110 by an assistant needs the CQ modifier"}]
        """,
        {"services": [svc("97110", 20, provider="PT")]},
        {"services": [svc("97110", 20, provider="PTA")]},
        [],
        [("warning", "assistant", "97110 by an assistant needs the CQ modifier", ["97110"])],
    ),
    # {provider} in a message
    "provider-template": (
        """\
        - id: provider-note
          description: names the provider
          source: test
          when: {line: {code: 97110}}
          then: [{info: "97110 by {provider}"}]
        """,
        {"services": [svc("97110", 20, provider="PT")]},
        {"services": [svc("97110", 20, provider="PTA")]},
        [("info", "provider-note", "97110 by PT", ["97110"])],
        [("info", "provider-note", "97110 by PTA", ["97110"])],
    ),
    # {group_size} in a message
    "group-size-template": (
        """\
        - id: group-note
          description: records the group size
          source: test
          when: {line: {code: 97150}}
          then: [{info: "97150 with {group_size} patients"}]
        """,
        {"services": [svc("97150", 45, group_size=3)]},
        {"services": [svc("97150", 45, group_size=4)]},
        [("info", "group-note", "97150 with 3 patients", ["97150"])],
        [("info", "group-note", "97150 with 4 patients", ["97150"])],
    ),
}
# units of A and B: 97110 5 -> 0 (5 < 8); 20 -> 1 (8..22); 30 and 35 -> 2 (23..37);
# 97110 20 + 97140 20 pooled: 40 min -> 3 units, full units 1 + 1, leftovers 5 and 5 tie -> the extra unit to
# 97110 (tie-break minutes equal, then order) -- only the rule's warnings are compared below for that case.
KEY_UNITS = {
    "minutes-condition": ({}, {"97110": 2}),
    "minutes-template": ({"97110": 1}, {"97110": 2}),
    "group-size-template": ({"97150": 1}, {"97150": 1}),
}


@pytest.fixture(scope="module")
def key_billers(tmp_path_factory):
    """{engine: (remembering Biller, non-remembering Biller)} over a tree holding one tmp payer per case."""
    rules = tmp_path_factory.mktemp("plan-keys")
    for name, (rule, *_rest) in KEY_CASES.items():
        (rules / f"{name}.yaml").write_text(tmp_payer(f"tmp-{name}", rule), encoding="utf-8")
    registry = Registry([rules], include_bundled=False)
    made = {engine: (Biller(registry, engine, remember=True), Biller(registry, engine, remember=False))
            for engine in ENGINES}
    yield made
    for pair in made.values():
        for biller in pair:
            biller.close()


def rule_warnings(result: dict, rule_ids: set) -> list:
    return [(w["severity"], w["rule"], w["message"], w["codes"]) for w in result["warnings"] if w["rule"] in rule_ids]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", list(KEY_CASES))
def test_memo_key_holds_every_field_the_rules_read(key_billers, engine, case):
    rule, a, b, expected_a, expected_b = KEY_CASES[case]
    rule_id = rule.split("id: ", 1)[1].split("\n", 1)[0].strip()
    remembering, fresh = key_billers[engine]
    payer = f"tmp-{case}"
    # A, B, A, B in one remembering Biller: each must get its own answer whichever was planned first
    for n, (data, expected) in enumerate([(a, expected_a), (b, expected_b), (a, expected_a), (b, expected_b)]):
        session = session_from({"session_id": f"{case}-{n}", **data})
        result = remembering.bill(session, payer)
        assert "error" not in result, result
        assert rule_warnings(result, {rule_id}) == expected, (case, n, result["warnings"])
        assert result == fresh.bill(session, payer), (case, n)
        if case in KEY_UNITS:
            assert units_of(result) == KEY_UNITS[case][n % 2], (case, n)


# --- 3. the network is asked only about new facts -------------------------------------------------------

def counting(planner, monkeypatch) -> list:
    """Wrap planner.network.run; returns the list that records the fact ids of every call."""
    calls = []
    run = planner.network.run

    def counted(facts):
        calls.append([fact["id"] for fact in facts])
        return run(facts)

    monkeypatch.setattr(planner.network, "run", counted)
    return calls


# 97110 20 + 97140 10: pool 30 min -> 2 units; full units 1 + 0, leftovers 5 and 10 -> the extra unit to 97140
SAME = [svc("97110", 20), svc("97140", 10)]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("remember, expected_calls", [(True, 1), (False, 2)])
def test_same_content_twice_asks_the_network_once_when_remembering(engine, remember, expected_calls, monkeypatch):
    registry = Registry()
    biller = Biller(registry, engine, remember=remember)
    try:
        calls = counting(biller.planner(registry.resolve("medicare", None)), monkeypatch)
        first = biller.bill(session_from({"session_id": "A", "discipline": "PT", "services": SAME}), "medicare")
        second = biller.bill(session_from({"session_id": "B", "discipline": "PT", "services": SAME}), "medicare")
        assert len(calls) == expected_calls, calls
        assert calls[0] == ["session", "line-0001", "line-0002"]
        assert units_of(first) == {"97110": 1, "97140": 1}
        assert (first["session_id"], second["session_id"]) == ("A", "B")
        assert without_session_id(first) == without_session_id(second)
    finally:
        biller.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_only_the_new_line_is_sent_to_the_network(engine, monkeypatch):
    registry = Registry()
    biller = Biller(registry, engine, remember=True)
    try:
        calls = counting(biller.planner(registry.resolve("medicare", None)), monkeypatch)
        biller.bill(session_from({"discipline": "PT", "services": SAME}), "medicare")
        # Medicare reads no minutes: 97110 with other minutes is the same fact; 97530 is new.
        # 97110 25 + 97530 10: pool 35 -> 2 units; full 1 + 0, leftovers 10 and 10 tie; tie-break minutes:
        # 97110 (25) wins -> 97110 2, 97530 0
        result = biller.bill(session_from({"discipline": "PT", "services": [svc("97110", 25), svc("97530", 10)]}),
                             "medicare")
        assert calls == [["session", "line-0001", "line-0002"], ["session", "line-0002"]]
        assert units_of(result) == {"97110": 2}
        # the same lines under another discipline: the key holds s_discipline (modifier rules), so all new
        biller.bill(session_from({"discipline": "OT", "services": SAME}), "medicare")
        assert calls[2] == ["session", "line-0001", "line-0002"]
        assert len(calls) == 3
    finally:
        biller.close()


# --- 4. Outcome.facts and Outcome.firings from remembered plans ------------------------------------------

# Medicare rule order (rules/medicare.yaml): timed-pool is rule 1, evaluation-one-unit 4, modifier-gp 16,
# so the firings come in that order, then by fact id.
FIRINGS = [
    ("timed-pool", ("line-0001",)),
    ("timed-pool", ("line-0002",)),
    ("evaluation-one-unit", ("line-0003",)),
    ("modifier-gp", ("session", "line-0001")),
    ("modifier-gp", ("session", "line-0002")),
    ("modifier-gp", ("session", "line-0003")),
]


def described(outcome):
    facts = [(f["id"], f.get("code"), f.get("minutes")) for f in outcome.facts]
    firings = [(rule.id, ids) for rule, ids in outcome.firings]
    return facts, firings


@pytest.mark.parametrize("engine", ENGINES)
def test_facts_and_firings_describe_every_line_from_the_memo(engine):
    registry = Registry()
    biller = Biller(registry, engine, remember=True)
    try:
        # 97110 33 + 5 merged into one 38-min line; 97140 7; 97161 45 (evaluation, 1 unit)
        services = [svc("97110", 33), svc("97140", 7), svc("97110", 5), svc("97161", 45)]
        first = biller.evaluate(session_from({"session_id": "A", "discipline": "PT", "services": services}),
                                "medicare")
        second = biller.evaluate(session_from({"session_id": "B", "discipline": "PT", "services": services}),
                                 "medicare")
        expected_facts = [("session", None, None), ("line-0001", "97110", 38), ("line-0002", "97140", 7),
                          ("line-0003", "97161", 45)]
        for outcome in (first, second):
            facts, firings = described(outcome)
            assert facts == expected_facts
            assert firings == FIRINGS
            # pool 38 + 7 = 45 -> 3 units; full 2 + 0, leftovers 8 and 7 -> the extra unit to 97110
            assert units_of(outcome.result) == {"97110": 3, "97161": 1}
            effects = {(e["rule"], tuple(e["facts"])): e["effect"] for e in outcome.result["trace"]}
            assert effects["timed-pool", ("97110",)] == "97110: 38 min counted as timed minutes → 3 unit(s)"
            assert effects["timed-pool", ("97140",)] == "97140: 7 min counted as timed minutes → 0 unit(s)"
            assert [line["modifiers"] for line in outcome.result["lines"]] == [["GP"], ["GP"]]

        # Same codes and discipline, other minutes: Medicare's key has no minutes, so every plan is
        # remembered, yet the facts, the trace and the units are this session's.
        # 97110 30 + 5 = 35, 97140 10: pool 45 -> 3 units; full 2 + 0, leftovers 5 and 10 -> extra to 97140
        other = [svc("97110", 30), svc("97140", 10), svc("97110", 5), svc("97161", 20)]
        third = biller.evaluate(session_from({"session_id": "C", "discipline": "PT", "services": other}), "medicare")
        facts, firings = described(third)
        assert facts == [("session", None, None), ("line-0001", "97110", 35), ("line-0002", "97140", 10),
                         ("line-0003", "97161", 20)]
        assert firings == FIRINGS
        assert units_of(third.result) == {"97110": 2, "97140": 1, "97161": 1}
        effects = {(e["rule"], tuple(e["facts"])): e["effect"] for e in third.result["trace"]}
        assert effects["timed-pool", ("97110",)] == "97110: 35 min counted as timed minutes → 2 unit(s)"
        assert effects["timed-pool", ("97140",)] == "97140: 10 min counted as timed minutes → 1 unit(s)"
        assert third.result["lines"][0]["minutes"] == 35
    finally:
        biller.close()


# --- 5. the memo starting afresh -----------------------------------------------------------------------

@pytest.mark.parametrize("engine", ENGINES)
def test_memo_reset_at_the_limit_keeps_the_plans_of_the_session_being_billed(engine, monkeypatch):
    # With MEMO_LIMIT 3: session 1 (97110) leaves 2 entries (its session fact and 97110); session 2
    # (97110 + 97112) finds 97110 and learns 97112 -> 3 entries. Session 3 (97110 + 97140) finds 97110 in the
    # memo and asks the network only about 97140; the memo is then full and starts afresh. The 97110 plan
    # found before the reset must still be used for session 3.
    monkeypatch.setattr(plans, "MEMO_LIMIT", 3)
    registry = Registry()
    biller = Biller(registry, engine, remember=True)
    try:
        biller.bill(session_from({"discipline": "PT", "services": [svc("97110", 20)]}), "medicare")
        biller.bill(session_from({"discipline": "PT", "services": [svc("97110", 20), svc("97112", 20)]}),
                    "medicare")
        result = biller.bill(session_from({"session_id": "S3", "discipline": "PT",
                                           "services": [svc("97110", 20), svc("97140", 20)]}), "medicare")
        # 97110 20 + 97140 20: pool 40 -> 3 units; full 1 + 1, leftovers 5 and 5 tie; tie-break minutes equal,
        # then order: 97110 -> 97110 2, 97140 1
        assert "error" not in result, result
        assert units_of(result) == {"97110": 2, "97140": 1}
    finally:
        biller.close()


# --- 6. the key can hold everything a rule may read ------------------------------------------------------

def test_every_field_a_rule_can_test_is_in_the_memo_key_or_follows_from_the_code():
    # compiler.FIELD_TYPES is the whole vocabulary of conditions (check_grammar refuses any other field);
    # a field added there but not to the key would let one line reuse another's plan.
    from engine.compiler import FIELD_TYPES, SESSION_ON_LINE
    covered_line = set(plans.LINE_INPUTS) | set(plans.CODE_DERIVED) | {SESSION_ON_LINE + f for f in plans.SESSION_INPUTS}
    assert set(FIELD_TYPES["line"]) <= covered_line
    assert set(FIELD_TYPES["session"]) <= set(plans.SESSION_INPUTS)


def test_every_message_placeholder_is_in_the_memo_key_or_follows_from_the_code():
    from engine.loader import PLACEHOLDERS
    assert PLACEHOLDERS <= set(plans.PLACEHOLDER_INPUTS) | set(plans.CODE_PLACEHOLDERS)


def test_a_field_the_key_does_not_hold_turns_the_memo_off(monkeypatch):
    # if the key ever missed a field the rules read, the planner must not remember (and so stay correct)
    from engine.compiler import compile_payer
    from engine.network import make_network
    compiled = compile_payer(Registry().resolve("medicare", None))
    assert plans.Planner(compiled, make_network(compiled, "python")).remember is True
    # medicare.yaml tests family_role (the add-on rule); pretend the key did not cover it
    monkeypatch.setattr(plans, "CODE_DERIVED", ("known", "family"))
    assert plans.Planner(compiled, make_network(compiled, "python")).remember is False
