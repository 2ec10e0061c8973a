"""The rule network behind one seam: durable_rules (raw C binding) or its pure-Python twin.

Both take the same compiled ruleset and a session's facts, and return the firings as data:
a sorted list of `(rule_key, (fact_id, ...))`, aliases in rule order. Nothing here knows YAML.

durable_rules is driven exactly as shared/durable-rules-notes.md §9 prescribes: no Host, no
durable.lang, one ruleset handle per compiled payer, one live sid per session deleted in `finally`,
an always-firing sentinel rule so the delete is safe, unique fact ids, canonical fact order.
"""
from __future__ import annotations

import itertools
import json
import operator

from .compiler import SENTINEL, Compiled, check_grammar
from .errors import EvaluationError
from .facts import derive

try:  # durable-rules does not build on Python 3.13+; the Python twin then serves alone.
    import durable_rules_engine as _durable
except ImportError:  # pragma: no cover - depends on the interpreter
    _durable = None

ENGINES = ("durable", "python")
_names = itertools.count()


def durable_available() -> bool:
    return _durable is not None


def default_engine() -> str:
    return "durable" if durable_available() else "python"


def make_network(compiled: Compiled, engine: str):
    if engine == "durable":
        if not durable_available():
            raise EvaluationError("the durable engine is not installed on this Python; use --engine python")
        return DurableNetwork(compiled)
    if engine == "python":
        return PythonNetwork(compiled)
    raise EvaluationError(f"unknown engine {engine!r}")


class DurableNetwork:
    """One durable_rules ruleset handle per chunk of one compiled payer (compiler._chunk)."""

    def __init__(self, compiled: Compiled):
        self.aliases = {key: [next(iter(t)) for t in rule["all"]] for key, rule in compiled.ruleset.items()}
        self.derived = compiled.derived
        self.chunks, self.handles = [], []
        try:
            for chunk in compiled.chunks:
                # re-proved here, since a ruleset outside the limits can hang create_ruleset for ever
                check_grammar(chunk.ruleset, compiled.keys)
                name = f"payer-{compiled.payer.id}-{next(_names)}"
                self.handles.append(_durable.create_ruleset(name, json.dumps(chunk.ruleset)))
                self.chunks.append((chunk.fields, chunk.lines))
        except BaseException:
            self.close()
            raise
        self.sids = itertools.count()

    def run(self, facts: list) -> list:
        # Only one sid is ever live per handle (deleted before the next session starts), so the
        # 1,024-live-sid limit and the 32-bit sid hash collisions of notes §4 #6/#7 cannot bite.
        # Facts are asserted one at a time, each followed by a drain: measured 4x faster on 2.0.28 than
        # one assert_facts of the whole session (about 35 against 145 us for 4-5 facts and 21 rules).
        # The session fact comes first, so the sentinel has fired before anything else can go wrong.
        # A fact sent to a chunk holds only the fields the chunk tests (fewer than durable's 255).
        facts = derive(facts, self.derived)
        firings = set()     # a (rule, fact) pair counts once, however durable reached it
        for handle, (fields, lines) in zip(self.handles, self.chunks):
            sid = f"s{next(self.sids)}"
            try:
                for fact in facts:
                    if fact["t"] == "line" and not lines:
                        continue
                    sent = {k: v for k, v in fact.items() if k in fields}
                    sent["sid"] = sid
                    code, state = _durable.assert_fact(handle, json.dumps(sent))
                    if code == 2:
                        raise EvaluationError("two facts share an id")
                    started = _durable.start_action_for_state(handle, state)
                    message = started[1] if started else None
                    while message:
                        (key, bound), = json.loads(message).items()
                        if key != SENTINEL:
                            firings.add((key, tuple(bound[alias]["id"] for alias in self.aliases[key])))
                        message = _durable.complete_and_start_action(handle, state)
            finally:
                _durable.delete_state(handle, sid)
        return sorted(firings)

    def close(self):
        while self.handles:
            _durable.delete_ruleset(self.handles.pop())


class PythonNetwork:
    """Pure-Python evaluation of the same compiled ruleset JSON (the twin and the cross-check).

    Every compiled rule tests one fact (compiler.check_grammar). Like an alpha network, a fact is
    tested only against the rules whose key equality test (`code`, `in_<list>`, ...) it passes, found
    by a hash lookup on its items; what remains of the rule after its fact type and key test is checked
    by a predicate (often nothing is left). Like durable, it is asked only about facts plans.py has not
    seen before."""

    def __init__(self, compiled: Compiled):
        self.derived = compiled.derived
        self.terms = []             # term id -> (rule key, residual predicate or None)
        self.index = {}             # fact type -> (keyed: {(field, value): [term id]}, unkeyed: [term id])
        for key, rule in compiled.ruleset.items():
            if key == SENTINEL:
                continue
            (term,) = rule["all"]
            expr = next(iter(term.values()))
            index_key = _index_key(expr)
            keyed, unkeyed = self.index.setdefault(_kind_of(expr), ({}, []))
            if index_key is None:
                unkeyed.append(len(self.terms))
            else:
                keyed.setdefault(index_key, []).append(len(self.terms))
            self.terms.append((key, _residual(expr, index_key)))

    def run(self, facts: list) -> list:
        facts = derive(facts, self.derived)
        terms = self.terms
        firings = [(terms[t][0], (fact["id"],)) for fact in facts for t in self._matching(fact)]
        firings.sort()
        return firings

    def _matching(self, fact: dict) -> list:
        """The terms a fact satisfies."""
        keyed, unkeyed = self.index.get(fact["t"], _EMPTY_INDEX)
        candidates = list(unkeyed)
        for item in fact.items():
            hits = keyed.get(item)
            if hits:
                candidates.extend(hits)
        return [t for t in sorted(candidates) if self.terms[t][1] is None or self.terms[t][1](fact)]

    def close(self):
        pass


_EMPTY_INDEX = ({}, [])


def _index_key(expr: dict):
    """One plain equality test of the term (other than its fact type) to index it by, or None."""
    tests = expr["$and"] if "$and" in expr else [expr]
    for test in tests:
        (field, value), = test.items()
        if not field.startswith("$") and field != "t":
            return (field, value)
    return None


def _residual(expr: dict, index_key):
    """The term's tests other than its fact type and its index key, as one predicate (None: none left)."""
    tests = expr["$and"] if "$and" in expr else [expr]
    rest = [t for t in tests if "t" not in t and (index_key is None or t != {index_key[0]: index_key[1]})]
    if not rest:
        return None
    return predicate(rest[0] if len(rest) == 1 else {"$and": rest})


def _kind_of(expr: dict) -> str:
    if "t" in expr:
        return expr["t"]
    return next(sub["t"] for sub in expr["$and"] if "t" in sub)


_OPS = {"$lt": operator.lt, "$lte": operator.le, "$gt": operator.gt, "$gte": operator.ge, "$neq": operator.ne}


def predicate(expr: dict):
    """A Python function fact -> bool with durable's semantics: a test on a missing field is false."""
    (op, body), = expr.items()
    if op == "$and":
        parts = [predicate(e) for e in body]
        return lambda f: all(p(f) for p in parts)
    if op == "$ex":
        (field, _), = body.items()
        return lambda f: field in f
    if op == "$nex":
        (field, _), = body.items()
        return lambda f: field not in f
    if op in _OPS:
        (field, value), = body.items()
        compare = _OPS[op]
        return lambda f: field in f and compare(f[field], value)
    field, value = op, body
    return lambda f: field in f and f[field] == value
