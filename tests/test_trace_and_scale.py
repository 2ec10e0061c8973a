"""Audit trail and network safety: every rule location points at the rule's `id:` line, the trace and
billed lines name real rules, one durable ruleset survives more sessions than durable-rules can keep
alive at once, the compiler stays inside the safe grammar subset, and both networks fire alike.

design.md §1 (network, compiler guard-rails) and §5 (rule/source contract);
shared/durable-rules-notes.md §1, §3, §9 for the limits being guarded.
"""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from engine.billing import Biller
from engine.compiler import SENTINEL, check_grammar, compile_payer
from engine.errors import RuleFileError
from engine.loader import PayerFile, load_payer
from engine.network import DurableNetwork, PythonNetwork
from engine.paths import RULES_DIR

from conftest import ENGINES, session_from

needs_durable = pytest.mark.skipif("durable" not in ENGINES, reason="durable_rules is not installed on this Python")


def text_at(location: str) -> str:
    """The stripped text at `path:line`, path relative to the rules tree's parent (design.md §5)."""
    path, _, line = location.rpartition(":")
    assert path and line.isdigit(), location
    assert not Path(path).is_absolute(), location
    lines = (RULES_DIR.parent / path).read_text(encoding="utf-8").splitlines()
    number = int(line)
    assert 1 <= number <= len(lines), location
    text = lines[number - 1].strip()
    return text[2:] if text.startswith("- ") else text


# --- rule locations ---------------------------------------------------------------------------------

def test_every_bundled_rule_location_holds_its_id(registry):
    assert registry.all_payers(), "no bundled payer found"
    checked = 0
    for payer in registry.all_payers():
        assert payer.rules, payer.id
        for rule in payer.rules:
            assert Path(rule.file).parts[0] == RULES_DIR.name, rule.location
            assert text_at(rule.location) == f"id: {rule.id}", (payer.id, rule.id, rule.location)
            checked += 1
    # medicare.yaml alone defines 20 rules (counted in the file by hand).
    assert len(registry.resolve("medicare", None).rules) >= 20
    assert checked >= 20


TRACE_SESSIONS = [
    # domain.md §3.2 Example 3, PT plan of care
    {"discipline": "PT", "services": [{"code": "97110", "minutes": 33}, {"code": "97140", "minutes": 7}]},
    # §3.2 Example 4, no discipline
    {"services": [{"code": "97110", "minutes": 18}, {"code": "97140", "minutes": 13},
                  {"code": "97116", "minutes": 10}, {"code": "97035", "minutes": 8}]},
    # family, group too small, unknown code, e-stim, OT
    {"discipline": "OT", "services": [{"code": "97129", "minutes": 40}, {"code": "97150", "minutes": 30, "group_size": 1},
                                      {"code": "97111", "minutes": 10}, {"code": "97014", "minutes": 15}]},
    # add-on without primary, unlisted, group without size, evaluation, work hardening, SLP
    {"discipline": "SLP", "services": [{"code": "97130", "minutes": 20}, {"code": "97139", "minutes": 12},
                                       {"code": "97150", "minutes": 45}, {"code": "92523", "minutes": 50},
                                       {"code": "97545", "minutes": 150}, {"code": "92607", "minutes": 75}]},
]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("data", TRACE_SESSIONS, ids=[f"session{i}" for i in range(len(TRACE_SESSIONS))])
def test_trace_and_lines_point_at_real_rule_definitions(billers, registry, engine, data):
    payer = registry.resolve("medicare", None)
    by_id = {rule.id: rule for rule in payer.rules}
    result = billers[engine].bill(session_from(data), "medicare")
    assert "error" not in result, result
    assert result["trace"], "every one of these sessions fires rules"

    for entry in result["trace"]:
        assert entry["rule"] in by_id, entry
        assert entry["source"] == by_id[entry["rule"]].location, entry
        assert text_at(entry["source"]) == f"id: {entry['rule']}", entry

    named = [rid for line in result["lines"] + result["unbilled"] for rid in line["rules"]]
    named += [w["rule"] for w in result["warnings"] if not w["rule"].startswith("engine.")]
    assert named
    fired = {entry["rule"] for entry in result["trace"]}
    for rid in named:
        assert rid in by_id, rid
        assert text_at(by_id[rid].location) == f"id: {rid}", rid
        assert rid in fired, f"{rid} is named in the output but never fired"


# --- one durable ruleset, more sessions than durable keeps alive ------------------------------------

SCALE_CODES = ["97110", "97112", "97140", "97530", "97035", "97116", "97129", "97130", "97150", "97161",
               "97010", "97139", "97545", "97546", "97111", "G0283"]


def scale_sessions(count: int) -> list:
    rng = random.Random(20261128)
    out = []
    for n in range(count):
        services = []
        for _ in range(rng.randint(1, 5)):
            service = {"code": rng.choice(SCALE_CODES), "minutes": rng.randint(0, 90)}
            if service["code"] == "97150" and rng.random() < 0.7:
                service["group_size"] = rng.randint(0, 5)
            services.append(service)
        # entries of one code that disagree on group_size are an error (design.md §4): the first size given
        sizes = [s["group_size"] for s in services if "group_size" in s]
        services = [dict(s, group_size=sizes[0]) if "group_size" in s else s for s in services]
        data = {"session_id": f"scale-{n}", "services": services}
        discipline = rng.choice([None, "PT", "OT", "SLP"])
        if discipline:
            data["discipline"] = discipline
        out.append(data)
    return out


@needs_durable
def test_one_durable_biller_bills_more_sessions_than_durable_keeps_alive(registry, billers):
    # durable-rules holds at most 1,024 live sessions per ruleset (notes §1.2); the network deletes
    # each session's state after use, so one ruleset handle must serve any number of sessions.
    # remember=False: every session's facts go through durable, none is answered from the plans' memo.
    sessions = scale_sessions(1100)
    biller = Biller(registry, "durable", remember=False)
    try:
        payer = registry.resolve("medicare", None)
        handles = list(biller.planner(payer).network.handles)
        results = [biller.bill(session_from(data), "medicare") for data in sessions]
        assert biller.planner(payer).network.handles == handles, "the ruleset was rebuilt mid-run"
    finally:
        biller.close()
    assert len(results) == 1100
    assert [r.get("session_id") for r in results] == [f"scale-{n}" for n in range(1100)]
    assert [r for r in results if "error" in r] == []
    expected = [billers["python"].bill(session_from(data), "medicare") for data in sessions]
    mismatches = [n for n, (got, want) in enumerate(zip(results, expected)) if got != want]
    assert mismatches == [], f"{len(mismatches)} sessions differ, first: {sessions[mismatches[0]]}"
    # the sessions past the 1,024th really were billed, not emptied
    assert sum(r["total_units"] for r in results[1024:]) > 0


# --- the compiled ruleset stays inside the safe grammar --------------------------------------------

WHITELIST = {"$and", "$or", "$lt", "$lte", "$gt", "$gte", "$neq", "$ex", "$nex"}
COMPARISONS = WHITELIST - {"$and", "$or"}


def walk(expr, problems: list, where: str) -> None:
    if not isinstance(expr, dict) or len(expr) != 1:
        problems.append(f"{where}: not a one-key test: {expr!r}")
        return
    (op, body), = expr.items()
    if op in ("$and", "$or"):
        if not isinstance(body, list) or not body:
            problems.append(f"{where}: {op} without a list of tests")
            return
        for i, sub in enumerate(body):
            walk(sub, problems, f"{where}/{op}[{i}]")
        return
    if op.startswith("$"):
        if op not in COMPARISONS:
            problems.append(f"{where}: operator {op} not whitelisted")
            return
        if not isinstance(body, dict) or len(body) != 1:
            problems.append(f"{where}: {op} body is not one field: {body!r}")
            return
        (field, value), = body.items()
    else:
        field, value = op, body                          # plain equality
    if field.startswith("$"):
        problems.append(f"{where}: field {field!r} looks like an operator")
    if isinstance(value, (dict, list)):
        problems.append(f"{where}: reference or compound value on {field!r}: {value!r}")


def test_compiled_medicare_ruleset_uses_only_the_safe_subset(registry):
    payer = registry.resolve("medicare", None)
    ruleset = compile_payer(payer).ruleset
    problems: list = []
    for key, definition in ruleset.items():
        assert set(definition) <= {"all", "pri"}, (key, definition)
        terms = definition["all"]
        aliases = [alias for term in terms for alias in term]
        assert 1 <= len(aliases) <= 2, (key, aliases)
        assert len(set(aliases)) == len(aliases), (key, aliases)
        for term in terms:
            assert len(term) == 1, (key, term)
            (alias, expr), = term.items()
            assert "$" not in alias, (key, alias)       # no `x$not` / `x$all` terms
            walk(expr, problems, f"{key}.{alias}")
    assert problems == []
    # one compiled rule per payer rule, plus the always-firing sentinel on the session fact
    assert len(ruleset) == len(payer.rules) + 1
    assert SENTINEL == "done"
    assert ruleset["done"]["all"] == [{"s": {"t": "session"}}]
    assert all("pri" not in d or d["pri"] < ruleset["done"]["pri"] for k, d in ruleset.items() if k != "done")


VALID_RULE = {"r0000": {"all": [{"l": {"$and": [{"t": "line"}, {"$gt": {"minutes": 10}}]}}]}}
REFUSED = {
    "not-as-term": {"r0000": {"all": [{"s": {"t": "session"}}, {"l$not": {"$and": [{"t": "line"}, {"code": "97129"}]}}]}},
    "not-as-operator": {"r0000": {"all": [{"l": {"$and": [{"t": "line"}, {"$not": {"code": "97129"}}]}}]}},
    "ne-operator": {"r0000": {"all": [{"l": {"$and": [{"t": "line"}, {"$ne": {"code": "97110"}}]}}]}},
    "reference-test": {"r0000": {"all": [{"s": {"t": "session"}},
                                         {"l": {"$and": [{"t": "line"}, {"$gt": {"minutes": {"l": "minutes"}}}]}}]}},
    "int-field-vs-string": {"r0000": {"all": [{"l": {"$and": [{"t": "line"}, {"$gt": {"minutes": "10"}}]}}]}},
}


def test_check_grammar_accepts_a_plain_rule():
    check_grammar(VALID_RULE, {})          # the control: the refusals below are about one thing each


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_check_grammar_refuses_unsafe_shapes(name):
    with pytest.raises(RuleFileError):
        check_grammar(REFUSED[name], {})


# --- the Python twin against durable on a hand-written ruleset --------------------------------------

TINY_PAYER = """\
payer: tiny
name: Tiny test payer
method: {name: cms_8_minute}
codes:
  timed: [97110, 97140]
  group: [97150, 92508]
rules:
  - id: timed
    description: timed codes
    source: test
    when: {line: {code_in: timed}}
    then: [{warn: "timed {code}"}]
  - id: long
    description: thirty minutes or more
    source: test
    when: {line: {minutes: {gte: 30}}}
    then: [{warn: "long {code}"}]
  - id: small-group
    description: group below two
    source: test
    when: {line: {code_in: group, group_size: {lt: 2}}}
    then: [{warn: "small {code}"}]
  - id: no-size
    description: group without a size
    source: test
    when: {line: {code_in: group, group_size: {exists: false}}}
    then: [{warn: "no size {code}"}]
  - id: pt-ot-untimed
    description: PT or OT session, a line outside the timed list
    source: test
    when:
      session: {discipline: {in: [PT, OT]}}
      line: {code_not_in: timed}
    then: [{warn: "untimed {code}"}]
  - id: busy
    description: more than two lines
    source: test
    when: {session: {line_count: {gt: 2}}}
    then: [{warn: busy}]
  - id: short-other
    description: a short line other than 97110
    source: test
    when: {line: {code: {ne: "97110"}, minutes: {lte: 9}}}
    then: [{warn: "short {code}"}]
  - id: no-discipline
    description: session without discipline
    source: test
    when: {session: {discipline: {exists: false}}}
    then: [{warn: none}]
"""

# Line facts carry the session's fields as s_<field> (engine/facts.py), so that a rule on the session
# and a line is a test of the line alone: no join in the network.
PT = {"s_line_count": 4, "s_discipline": "PT"}
PT_FACTS = [
    {"t": "session", "id": "session", "line_count": 4, "discipline": "PT"},
    {"t": "line", "id": "line-0001", "code": "97110", "minutes": 33, "known": True, "in_timed": True, **PT},
    {"t": "line", "id": "line-0002", "code": "97140", "minutes": 7, "known": True, "in_timed": True, **PT},
    {"t": "line", "id": "line-0003", "code": "97150", "minutes": 20, "group_size": 1, "known": True, "in_group": True,
     **PT},
    {"t": "line", "id": "line-0004", "code": "92508", "minutes": 45, "known": True, "in_group": True, **PT},
]
# Worked by hand from TINY_PAYER (keys r0000.. in rule order; aliases session then line):
PT_FIRINGS = sorted([
    ("r0000", ("line-0001",)), ("r0000", ("line-0002",)),          # timed: 97110, 97140
    ("r0001", ("line-0001",)), ("r0001", ("line-0004",)),          # long: 33 and 45 minutes
    ("r0002", ("line-0003",)),                                     # small-group: group_size 1
    ("r0003", ("line-0004",)),                                     # no-size: 92508 has no group_size
    ("r0004", ("line-0003",)), ("r0004", ("line-0004",)),          # PT (on the line), not timed
    ("r0005", ("session",)),                                       # busy: 4 lines > 2
    ("r0006", ("line-0002",)),                                     # short-other: 97140 at 7 min
])

SLP = {"s_line_count": 2, "s_discipline": "SLP"}
SLP_FACTS = [
    {"t": "line", "id": "line-0002", "code": "97110", "minutes": 5, "known": True, "in_timed": True, **SLP},
    {"t": "session", "id": "session", "line_count": 2, "discipline": "SLP"},
    {"t": "line", "id": "line-0001", "code": "97150", "minutes": 30, "group_size": 2, "known": True, "in_group": True,
     **SLP},
]
SLP_FIRINGS = sorted([
    ("r0000", ("line-0002",)),                                     # timed: 97110
    ("r0001", ("line-0001",)),                                     # long: 30 >= 30
    # small-group: 2 is not < 2; no-size: size given; pt-ot-untimed: SLP; busy: 2 lines;
    # short-other: 97110 is excluded and 97150 runs 30 minutes; no-discipline: SLP given
])

BARE_FACTS = [
    {"t": "session", "id": "session", "line_count": 1},
    {"t": "line", "id": "line-0001", "code": "97140", "minutes": 9, "known": True, "in_timed": True, "s_line_count": 1},
]
BARE_FIRINGS = sorted([
    ("r0000", ("line-0001",)),                                     # timed: 97140
    ("r0006", ("line-0001",)),                                     # short-other: 97140 at 9 min (lte 9)
    ("r0007", ("session",)),                                       # no-discipline
    # pt-ot-untimed: no discipline at all, so `in [PT, OT]` is false (a missing field never matches)
])


@pytest.fixture
def tiny_compiled(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text(TINY_PAYER, encoding="utf-8")
    payer = load_payer(PayerFile(path, "tmp/x.yaml"))
    assert [r.id for r in payer.rules][:2] == ["timed", "long"]
    assert payer.rules[0].location == "tmp/x.yaml:8"
    return compile_payer(payer)


@pytest.mark.parametrize("facts, expected", [(PT_FACTS, PT_FIRINGS), (SLP_FACTS, SLP_FIRINGS), (BARE_FACTS, BARE_FIRINGS)],
                         ids=["pt", "slp-unordered", "no-discipline"])
def test_python_twin_fires_as_worked_by_hand(tiny_compiled, facts, expected):
    assert PythonNetwork(tiny_compiled).run(facts) == expected


@needs_durable
@pytest.mark.parametrize("facts, expected", [(PT_FACTS, PT_FIRINGS), (SLP_FACTS, SLP_FIRINGS), (BARE_FACTS, BARE_FIRINGS)],
                         ids=["pt", "slp-unordered", "no-discipline"])
def test_durable_and_python_twin_fire_identically(tiny_compiled, facts, expected):
    durable = DurableNetwork(tiny_compiled)
    try:
        first = durable.run(facts)
        again = durable.run(facts)          # the same handle, a new sid: nothing left over
    finally:
        durable.close()
    assert first == PythonNetwork(tiny_compiled).run(facts)
    assert first == again == expected
