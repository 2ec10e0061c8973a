"""Payer → durable_rules ruleset (JSON form), restricted to a whitelisted, tested grammar subset.

Every rule becomes `{"all": [one alias term]}`: `s` (the session fact) for a rule on the session
alone, else `l` (one line fact). A rule on the session *and* a line needs no join: every line fact
carries the session's fields as `s_<field>` (facts.py), so its session tests become tests of the line.
Conditions are flat literal tests; anything that needs aggregation or "X and no Y" is computed in
Python beforehand into fact attributes, because durable-rules 2.0.28 answers wrongly or crashes on
reference joins, late `$not` and nested groups, and every join node costs memory and time in each
session's state (shared/durable-rules-notes.md §3, §4, §6). `check_grammar` re-checks the output so that a compiler change
cannot emit a shape outside the subset.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import RuleFileError
from .model import Payer, Rule

SENTINEL = "done"           # always fires once per session, so delete_state is safe (notes §1.2)
SENTINEL_PRI = 65000
ALIASES = {"session": "s", "line": "l"}
SESSION_ON_LINE = "s_"      # prefix of the session's fields copied onto every line fact
FACT_TYPES = {"session": "session", "line": "line"}

# Field of a fact -> Python type of its values. Comparisons are only ever emitted between equal types,
# since durable compares mixed types as strings ("10" > 8 is false).
FIELD_TYPES = {
    "line": {"code": str, "minutes": int, "group_size": int, "provider": str, "known": bool, "family": str,
             "family_role": str, "has_primary": bool},
    "session": {"discipline": str, "date_of_service": str, "line_count": int},
}
FIELD_TYPES["line"].update({SESSION_ON_LINE + f: t for f, t in FIELD_TYPES["session"].items()})
_COMPARE = {"lt": "$lt", "lte": "$lte", "gt": "$gt", "gte": "$gte", "ne": "$neq"}
ALLOWED_OPERATORS = {"$and", "$or", "$lt", "$lte", "$gt", "$gte", "$neq", "$ex", "$nex"}
MAX_DISTINCT_VALUES = 512   # findAlpha hangs above this (notes §4 #5)


def list_field(name: str) -> str:
    """Fact attribute that marks membership of the code list `name`."""
    return f"in_{name}"


@dataclass(frozen=True)
class Compiled:
    payer: Payer
    ruleset: dict               # durable_rules JSON definition, keyed by rule key
    keys: dict                  # rule key -> Rule (the sentinel is not in it)


def rule_key(rule: Rule) -> str:
    return f"r{rule.index:04d}"


def compile_payer(payer: Payer) -> Compiled:
    ruleset, keys = {}, {}
    for rule in payer.rules:
        key = rule_key(rule)
        if "line" in rule.when:
            session_tests = {SESSION_ON_LINE + f: t for f, t in rule.when.get("session", {}).items()}
            term = {"l": _fact_expr("line", {**rule.when["line"], **session_tests}, rule)}
        else:
            term = {"s": _fact_expr("session", rule.when["session"], rule)}
        ruleset[key] = {"all": [term]}
        keys[key] = rule
    ruleset[SENTINEL] = {"all": [{"s": {"t": "session"}}], "pri": SENTINEL_PRI}
    check_grammar(ruleset, keys)
    return Compiled(payer, ruleset, keys)


def _fact_expr(kind: str, conditions: dict, rule: Rule) -> dict:
    tests = [{"t": FACT_TYPES[kind]}]
    for name, test in conditions.items():
        if name == "code_in":
            tests.append(_in_list(test))
        elif name == "code_not_in":
            tests.append({"$nex": {list_field(test): 1}} if isinstance(test, str)
                         else {"$and": [{"$neq": {"code": c}} for c in test]})
        else:
            tests.extend(_field_tests(name, test))
    return {"$and": tests} if len(tests) > 1 else tests[0]


def _in_list(ref) -> dict:
    if isinstance(ref, str):
        return {list_field(ref): True}
    return {"$or": [{"code": c} for c in ref]} if len(ref) > 1 else {"code": ref[0]}


def _field_tests(field: str, test) -> list:
    if not isinstance(test, dict):
        return [{field: test}]
    out = []
    for op, value in test.items():
        if op == "exists":
            out.append({"$ex" if value else "$nex": {field: 1}})
        elif op == "in":
            out.append({"$or": [{field: v} for v in value]} if len(value) > 1 else {field: value[0]})
        else:
            out.append({_COMPARE[op]: {field: value}})
    return out


def fields_tested(ruleset: dict) -> dict:
    """{"session": fields, "line": fields} that some compiled condition tests (fact type aside)."""
    found = {"session": set(), "line": set()}

    def walk(expr, names):
        (op, body), = expr.items()
        if op in ("$and", "$or"):
            for sub in body:
                walk(sub, names)
        elif op.startswith("$"):
            names.update(body)
        elif op != "t":
            names.add(op)

    for definition in ruleset.values():
        for term in definition["all"]:
            (alias, expr), = term.items()
            walk(expr, found["session" if alias == "s" else "line"])
    return found


def check_grammar(ruleset: dict, keys: dict) -> None:
    """Refuse any emitted shape outside the subset proven safe on durable-rules 2.0.28."""
    distinct: dict = {}
    for key, definition in ruleset.items():
        rule = keys.get(key)

        def fail(message):
            raise RuleFileError(f"cannot compile rule: {message}", rule.file if rule else None,
                                rule.line if rule else None, f"rules[{rule.index}]" if rule else key)

        if set(definition) - {"all", "pri"}:
            fail(f"unexpected rule keys {sorted(set(definition) - {'all', 'pri'})}")
        terms = definition["all"]
        if len(terms) != 1:
            fail("a rule must bind exactly one fact (joins are not emitted)")
        for term in terms:
            (alias, expr), = term.items()
            if alias not in ALIASES.values():
                fail(f"alias {alias!r} is not allowed")
            kind = "session" if alias == "s" else "line"
            _check_expr(expr, kind, fail, distinct, depth=0)
    for (kind, field), values in distinct.items():
        if len(values) > MAX_DISTINCT_VALUES:
            raise RuleFileError(f"more than {MAX_DISTINCT_VALUES} distinct values tested on {kind}.{field}; "
                                "use a code list instead")


def _check_expr(expr, kind, fail, distinct, depth):
    if not isinstance(expr, dict) or len(expr) != 1:
        fail(f"malformed test {expr!r}")
    (op, body), = expr.items()
    if op in ("$and", "$or"):
        if depth > 2 or not isinstance(body, list) or not body:
            fail(f"{op} nested too deeply or empty")
        for sub in body:
            _check_expr(sub, kind, fail, distinct, depth + 1)
        return
    if op.startswith("$"):
        if op not in ALLOWED_OPERATORS:
            fail(f"operator {op} is not in the whitelist")
        (field, value), = body.items()
        if op in ("$ex", "$nex"):
            return
    else:
        field, value = op, body
    if field == "t":
        return
    if isinstance(value, dict):
        fail(f"reference or arithmetic test on {field!r} is not allowed")
    expected = FIELD_TYPES[kind].get(field, bool if field.startswith("in_") else None)
    if expected is None:
        fail(f"unknown {kind} field {field!r}")
    if type(value) is not expected:
        fail(f"{kind}.{field} compares a {type(value).__name__} with a {expected.__name__}")
    distinct.setdefault((kind, field), set()).add(value)
