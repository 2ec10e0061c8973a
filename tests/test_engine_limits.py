"""durable-rules limits that ordinary payer files reach (issue 10, class 3), and the compiler's answer.

durable 2.0.28 has fixed-size tables (shared/durable-rules-notes.md §4 #5, §5): 512 children per alpha
node (create_ruleset spins for ever past it), 256 rules on one node (error 108), 64 pending alpha nodes
per fact (error 303), 255 properties per fact (error 302); its `$or` fires once per duplicate value, and
it orders strings by their JSON-escaped text. Each test below bills one payer file that hits one of them
on both engines and checks the result worked by hand; the compiler splits the rules into chunks and
computes list and string-order tests in Python (engine/compiler.py).
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.billing import Biller
from engine.compiler import MAX_CHUNK_RULES, MAX_STACK, SENTINEL, check_grammar, compile_payer
from engine.errors import RuleFileError
from engine.loader import Registry
from engine.network import durable_available
from conftest import ENGINES, session_from, units_of

ROOT = Path(__file__).resolve().parent.parent
needs_durable = pytest.mark.skipif(not durable_available(), reason="durable-rules not installed")
TIMED = "  - id: timed\n    description: d\n    source: s\n    when: {line: {}}\n    then: [{timed_units: true}]\n"


def codes(n: int, start: int = 10000) -> list:
    return [str(start + i) for i in range(n)]


def payer_text(rules: str, lists: dict | None = None, payer: str = "big") -> str:
    lists = lists or {"all": codes(600)}
    listed = "".join(f"  {name}: [{', '.join(items)}]\n" for name, items in lists.items())
    return f"payer: {payer}\nname: n\nmethod: {{name: midpoint_per_code}}\ncodes:\n{listed}rules:\n{TIMED}{rules}"


def rule(n, when: str, then: str) -> str:
    return f"  - id: r{n}\n    description: d\n    source: s\n    when: {when}\n    then: [{then}]\n"


def bill_both(tmp_path, text: str, services: list, payer: str = "big", **session) -> dict:
    (tmp_path / f"{payer}.yaml").write_text(text, encoding="utf-8")
    registry = Registry([tmp_path], include_bundled=False)
    results = {}
    for engine in ENGINES:
        biller = Biller(registry, engine, remember=False)
        try:
            results[engine] = biller.bill(session_from({"session_id": "L", "services": services, **session}), payer)
        finally:
            biller.close()
    assert "error" not in results["python"], results["python"]
    for engine, result in results.items():
        assert result == results["python"], engine
    return results["python"]


def infos(result) -> list:
    return sorted(w["rule"] for w in result["warnings"] if w["severity"] == "info")


def test_six_hundred_per_code_limits_bill_on_both_engines(tmp_path):
    # 600 rules `when: {line: {code: X}}` with a different X: 600 children of one alpha node (> 512).
    text = payer_text("".join(rule(i, f"{{line: {{code: {c}}}}}", "{max_units: 1}") for i, c in enumerate(codes(600))))
    # 10599 at 60 min: midpoint per code -> 4 units (53-67 min), capped at 1 by r599
    result = bill_both(tmp_path, text, [{"code": "10599", "minutes": 60}, {"code": "10000", "minutes": 8}])
    # 10000 at 8 min: 1 unit (8-22 min), within its limit of 1
    assert units_of(result) == {"10599": 1, "10000": 1}


def test_three_hundred_identical_conditions_all_fire(tmp_path):
    # 300 rules on exactly `code: 10005` end on one alpha node: durable's list of rules there holds 256.
    text = payer_text("".join(rule(i, "{line: {code: 10005}}", f'{{info: "n{i}"}}') for i in range(300)))
    result = bill_both(tmp_path, text, [{"code": "10005", "minutes": 30}])
    assert infos(result) == sorted(f"r{i}" for i in range(300))


def test_a_code_in_three_hundred_lists(tmp_path):
    # 10007 is in 300 lists: its line fact has 300 in_<list> flags (> 255 properties), and the 300
    # rules `code_in: lK` all match it at once (> 64 pending alpha nodes).
    lists = {"all": codes(20), **{f"l{k}": ["10007", str(11000 + k)] for k in range(300)}}
    text = payer_text("".join(rule(k, f"{{line: {{code_in: l{k}}}}}", f'{{info: "{k}"}}') for k in range(300)), lists)
    result = bill_both(tmp_path, text, [{"code": "10007", "minutes": 30}, {"code": "11003", "minutes": 30}])
    fired_on = {}
    for w in result["warnings"]:
        fired_on.setdefault(w["rule"], []).append(w["codes"][0])
    assert fired_on == {**{f"r{k}": ["10007"] for k in range(300)}, "r3": ["10007", "11003"]}


def test_seventy_comparisons_matching_one_fact(tmp_path):
    # 70 rules `minutes: {gt: k}`: a 100-minute line matches all 70 (durable's stack holds 64).
    text = payer_text("".join(rule(k, f"{{line: {{minutes: {{gt: {k}}}}}}}", f'{{info: "{k}"}}') for k in range(70)))
    result = bill_both(tmp_path, text, [{"code": "10001", "minutes": 100}, {"code": "10002", "minutes": 5}])
    # 100 > k for all k < 70; 5 > k for k = 0..4
    assert sorted((w["rule"], w["codes"][0]) for w in result["warnings"]) == sorted(
        [(f"r{k}", "10001") for k in range(70)] + [(f"r{k}", "10002") for k in range(5)])


@pytest.mark.parametrize("when", ["{line: {code_in: [10003, 10003, 10004, 10003]}}",
                                  "{line: {provider: {in: [PTA, OT, PTA]}}}",
                                  "{line: {code: 10003}, session: {discipline: {in: [PT, PT]}}}"])
def test_duplicate_values_in_a_list_fire_once(tmp_path, when):
    text = payer_text(rule(1, when, '{info: "once"}'))
    result = bill_both(tmp_path, text, [{"code": "10003", "minutes": 30, "provider": "PTA"}], discipline="PT")
    assert infos(result) == ["r1"]


@pytest.mark.parametrize("field, op, value, fires", [
    # fact values: family "cog", provider "PTA". Python compares characters; durable compared the
    # JSON-escaped text, where "é" is "\\u00e9", '"' is '\\"' and a newline is "\\n" (all from "\\", 0x5C).
    ("family", "lt", "é", True),            # "c" (0x63) < "é" (0xE9); escaped: "c" > "\\" (0x5C)
    ("provider", "gt", 'PT"', True),        # "A" (0x41) > '"' (0x22); escaped: "A" < "\\"
    ("provider", "gt", "PT\n", True),       # "A" > newline (0x0A); escaped: "A" < "\\"
    ("provider", "gte", "PT\x01", True),    # "A" > 0x01; escaped "\\u0001"
    ("family", "gt", "c\\", True),          # "o" (0x6F) > "\\" (0x5C)
    ("provider", "lte", "PTA", True),
    ("provider", "lt", "PTA", False),
])
def test_string_order_compares_characters_not_escapes(tmp_path, field, op, value, fires):
    quoted = '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\x01", "\\x01") + '"'
    text = payer_text(rule(1, f"{{line: {{{field}: {{{op}: {quoted}}}}}}}", '{info: "ordered"}'))
    text = text.replace("rules:\n", "families: [{id: cog, primary: 10003}]\nrules:\n", 1)
    result = bill_both(tmp_path, text, [{"code": "10003", "minutes": 30, "provider": "PTA"}])
    assert infos(result) == (["r1"] if fires else [])


def test_string_order_on_the_date_of_service(tmp_path):
    text = payer_text(rule(1, '{session: {date_of_service: {gte: "2026-01-01"}}}', '{info: "new year"}'))
    assert infos(bill_both(tmp_path, text, [{"code": "10003", "minutes": 30}], date_of_service="2026-01-01")) == ["r1"]
    assert infos(bill_both(tmp_path, text, [{"code": "10003", "minutes": 30}], date_of_service="2025-12-31")) == []


# --- the compiler's chunks are proven within the limits -------------------------------------------------

def compiled_from(tmp_path, text: str, payer: str = "big"):
    (tmp_path / f"{payer}.yaml").write_text(text, encoding="utf-8")
    return compile_payer(Registry([tmp_path], include_bundled=False).resolve(payer, None))


def test_chunks_hold_every_rule_once_each_with_a_sentinel(tmp_path):
    text = payer_text("".join(rule(i, "{line: {code: 10005}}", f'{{info: "n{i}"}}') for i in range(450)))
    compiled = compiled_from(tmp_path, text)
    keys = [key for chunk in compiled.chunks for key in chunk.ruleset if key != SENTINEL]
    assert sorted(keys) == sorted(compiled.keys)            # the 451 rules, each in one chunk
    assert all(len(c.ruleset) - 1 <= MAX_CHUNK_RULES and SENTINEL in c.ruleset for c in compiled.chunks)
    assert len(compiled.chunks) == 3                        # 451 rules, at most 200 a chunk: 200 + 200 + 51


def test_check_grammar_refuses_a_ruleset_past_the_limits():
    line = lambda k: {"all": [{"l": {"$and": [{"t": "line"}, {"$gt": {"minutes": k}}]}}]}  # noqa: E731
    within = {f"r{k:04d}": line(k) for k in range(MAX_STACK)}
    check_grammar(within, {})                               # the control: MAX_STACK tests that can all match
    with pytest.raises(RuleFileError, match="more than 56 tests at once"):
        check_grammar({**within, "r9999": line(9999)}, {})
    same = {f"r{k:04d}": line(1) for k in range(MAX_CHUNK_RULES + 1)}
    with pytest.raises(RuleFileError, match="200 rules"):
        check_grammar(same, {})
    with pytest.raises(RuleFileError, match="orders only numbers"):
        check_grammar({"r0000": {"all": [{"l": {"$and": [{"t": "line"}, {"$lt": {"provider": "é"}}]}}]}}, {})


@needs_durable
def test_durable_network_refuses_a_chunk_outside_the_limits_instead_of_creating_it(tmp_path):
    from dataclasses import replace
    from engine.compiler import Chunk
    from engine.network import DurableNetwork
    compiled = compiled_from(tmp_path, payer_text(rule(1, "{line: {code: 10005}}", '{info: "x"}')))
    children = {f"r{k:04d}": {"all": [{"l": {"$and": [{"t": "line"}, {"code": str(20000 + k)}]}}]} for k in range(600)}
    bad = replace(compiled, chunks=(Chunk({**children, SENTINEL: compiled.ruleset[SENTINEL]}, frozenset(), True),))
    with pytest.raises(RuleFileError):
        DurableNetwork(bad)


@needs_durable
def test_durable_ruleset_creation_of_a_huge_payer_ends_in_a_subprocess(tmp_path):
    # Guard against a hang: 1,500 per-code rules, a code list per rule and 300 identical rules, created
    # and billed in a child process with a time limit (create_ruleset spins for ever past 512 children).
    rules = "".join(rule(i, f"{{line: {{code: {c}}}}}", "{max_units: 1}") for i, c in enumerate(codes(1500)))
    rules += "".join(rule(2000 + i, "{line: {code_in: [10001, 10002, 10002]}}", f'{{info: "{i}"}}') for i in range(300))
    (tmp_path / "big.yaml").write_text(payer_text(rules, {"all": codes(1500)}), encoding="utf-8")
    script = textwrap.dedent(f"""
        from engine.billing import Biller
        from engine.loader import Registry
        from engine.sessions import parse_session
        from engine.yamlload import Located
        data = {{"session_id": "H", "services": [{{"code": "10002", "minutes": 60}}]}}
        biller = Biller(Registry([{str(tmp_path)!r}], include_bundled=False), "durable", remember=False)
        result = biller.bill(parse_session(data, Located(data, {{(): 1}}, "t"), (), 1), "big")
        print(result["lines"], len([w for w in result["warnings"] if w["severity"] == "info"]))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # 10002 at 60 min: midpoint 4 units, capped at 1 by its max_units rule; 300 info rules fire on it
    assert proc.stdout.split("] ")[1].strip() == "300"
    assert "'units': 1" in proc.stdout


def test_validate_refuses_what_the_compiler_refuses_with_the_rules_file_and_line(tmp_path, monkeypatch):
    # No schema-valid rule is past the limits alone (a rule tests at most ~55 fields); lowering one limit
    # shows the path: Registry.errors (what `validate` prints) names the rule's file:line and the limit.
    import engine.compiler as compiler
    monkeypatch.setattr(compiler, "MAX_FACT_FIELDS", 1)
    (tmp_path / "big.yaml").write_text(payer_text(rule(1, "{line: {code: 10005, minutes: 3}}", '{info: "x"}')),
                                       encoding="utf-8")
    errors = Registry([tmp_path], include_bundled=False, strict=False).errors()
    # lines: payer, name, method, codes:, the list, rules:, 5 of the timed rule; r1's id is line 12
    assert [(e.file, e.line, e.path) for e in errors] == [((tmp_path / "big.yaml").as_posix(), 12, "rules[1]")]
    assert "more than 1 fields tested in one durable ruleset" in errors[0].message


def test_the_stack_model_holds_when_one_line_matches_every_test_of_every_rule(tmp_path):
    # 300 rules of 1-3 comparisons in different orders on minutes, group_size and line_count, every one
    # true for a 200-minute line in a group of 9 in a 1-line session: every alpha node matches that line,
    # so the chunks must be small enough in durable's terms (a chunk the model misjudges gives error 303).
    import random
    rnd = random.Random(7)
    fields = ["minutes", "group_size"]
    rules = []
    for i in range(300):
        tests = {f: {rnd.choice(["gt", "gte", "ne"]): rnd.randint(0, 8)} for f in rnd.sample(fields, rnd.randint(1, 2))}
        when = {"line": tests} if rnd.random() < 0.7 else {"line": tests, "session": {"line_count": {"lt": 2 + i}}}
        rules.append(rule(i, json.dumps(when), f'{{info: "{i}"}}'))
    result = bill_both(tmp_path, payer_text("".join(rules)), [{"code": "10001", "minutes": 200, "group_size": 9}])
    assert infos(result) == sorted(f"r{i}" for i in range(300))
