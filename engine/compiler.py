"""Payer → durable_rules rulesets (JSON form), restricted to a whitelisted, tested grammar subset.

Every rule becomes `{"all": [one alias term]}`: `s` (the session fact) for a rule on the session
alone, else `l` (one line fact). A rule on the session *and* a line needs no join: every line fact
carries the session's fields as `s_<field>` (facts.py), so its session tests become tests of the line.
Conditions are a flat `$and` of literal tests; anything that needs aggregation or "X and no Y" is computed in
Python beforehand into fact attributes, because durable-rules 2.0.28 answers wrongly or crashes on
reference joins, late `$not` and nested groups, and every join node costs memory and time in each
session's state (shared/durable-rules-notes.md §3, §4, §6).

Two more kinds of test are computed in Python into boolean fact attributes (`x_<n>`, facts.derive):
membership of a list of values (`in`, and an inline code list), since durable's `$or` links one node
per duplicate value (a rule then fires once per duplicate) and a long list crowds one node; and the
order comparisons of strings (lt, lte, gt, gte), since durable compares their JSON-escaped text.

durable's alpha network has fixed-size tables that ordinary payer files can fill (notes §5): a node
probes a 512-slot table of children forever once it is full (create_ruleset hangs, and so does a fact
whose field is not in it), 257 rules ending on one node fail with error 108, a fact matching more
than 64 alpha nodes at once overflows the traversal stack (error 303), and a fact may hold 255
properties (error 302). So a payer's rules are split into *chunks*, each its own durable ruleset with
its own sentinel, and `check_grammar` proves each chunk within these limits from a model of the
network durable builds (`_Trie`); a line fact sent to a chunk holds only the fields that chunk tests.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import RuleFileError
from .model import Payer, Rule

SENTINEL = "done"           # always fires once per session, so delete_state is safe (notes §1.2)
SENTINEL_PRI = 65000
ALIASES = {"session": "s", "line": "l"}
SESSION_ON_LINE = "s_"      # prefix of the session's fields copied onto every line fact
DERIVED = "x_"              # prefix of the attributes facts.derive computes for list and string-order tests
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
ORDER = ("lt", "lte", "gt", "gte")
ALLOWED_OPERATORS = {"$and", "$lt", "$lte", "$gt", "$gte", "$neq", "$ex", "$nex"}

# durable's limits (rules.h, state.h, rete.h) and the margins kept below them in every chunk
MAX_CHUNK_RULES = 200       # rules ending on one node < BETA_LIST_LENGTH 256; children of one node < 512
MAX_STACK = 56              # alpha nodes one fact can have pending at once < MAX_STACK_SIZE 64
MAX_NEX_CHILDREN = 100      # `$nex` children of one node < NEXT_LIST_LENGTH 128
MAX_FACT_FIELDS = 200       # fields a chunk tests, so a fact sent to it has < MAX_OBJECT_PROPERTIES 255


def list_field(name: str) -> str:
    """Fact attribute that marks membership of the code list `name`."""
    return f"in_{name}"


@dataclass(frozen=True)
class Derived:
    """A test computed in Python (facts.derive): the fact gets `name: true` when `field op value` holds
    (`in`: value is a frozenset), and nothing otherwise; a missing field never holds."""
    name: str
    field: str
    op: str
    value: object


@dataclass(frozen=True)
class Chunk:
    ruleset: dict               # durable_rules JSON definition: some of the payer's rules and a sentinel
    fields: frozenset           # the fact fields its rules test, with t and id: what a fact sent to it holds
    lines: bool                 # whether any of its rules tests a line fact


@dataclass(frozen=True)
class Compiled:
    payer: Payer
    ruleset: dict               # every rule, keyed by rule key, and the sentinel (the Python twin's input)
    keys: dict                  # rule key -> Rule (the sentinel is not in it)
    chunks: tuple = ()          # of Chunk: the rulesets durable is given
    derived: tuple = ()         # of Derived: the attributes facts.derive adds before the network runs


def rule_key(rule: Rule) -> str:
    return f"r{rule.index:04d}"


def compile_payer(payer: Payer) -> Compiled:
    ruleset, keys, derived = {}, {}, {}
    for rule in payer.rules:
        key = rule_key(rule)
        if "line" in rule.when:
            tests = condition_tests(rule.when["line"], "", derived)
            tests += condition_tests(rule.when.get("session", {}), SESSION_ON_LINE, derived)
            alias, kind = "l", "line"
        else:
            tests, alias, kind = condition_tests(rule.when["session"], "", derived), "s", "session"
        exprs = [{"t": FACT_TYPES[kind]}] + [expr for _, _, expr in tests]
        ruleset[key] = {"all": [{alias: {"$and": exprs} if len(exprs) > 1 else exprs[0]}]}
        keys[key] = rule
    chunks = tuple(_chunk(ruleset, keys))
    ruleset[SENTINEL] = _sentinel()
    return Compiled(payer, ruleset, keys, chunks,
                    tuple(Derived(name, *spec) for spec, name in derived.items()))


def _sentinel() -> dict:
    return {"all": [{"s": {"t": "session"}}], "pri": SENTINEL_PRI}


def condition_tests(conditions: dict, prefix: str, derived: dict) -> list:
    """[(condition name, operator or None, test expression)] of one fact's conditions, in order. `prefix`
    is put before the field names (s_ for a session condition tested on a line); `derived` maps
    (field, op, value) -> the attribute name of each test computed in Python, and is added to."""
    def flag(field, op, value):
        spec = (field, op, frozenset(value) if op == "in" else value)
        return derived.setdefault(spec, f"{DERIVED}{len(derived)}")

    out = []
    for name, test in conditions.items():
        field = prefix + name
        if name in ("code_in", "code_not_in"):
            marker = list_field(test) if isinstance(test, str) else flag("code", "in", test)
            out.append((name, None, {marker: True} if name == "code_in" else {"$nex": {marker: 1}}))
        elif not isinstance(test, dict):
            out.append((name, None, {field: test}))
        else:
            for op, value in test.items():
                if op == "exists":
                    expr = {"$ex" if value else "$nex": {field: 1}}
                elif op == "in" or (op in ORDER and isinstance(value, str)):
                    expr = {flag(field, op, value): True}
                else:
                    expr = {_COMPARE[op]: {field: value}}
                out.append((name, op, expr))
    return out


def fields_tested(ruleset: dict) -> dict:
    """{"session": fields, "line": fields} that some compiled condition tests (fact type aside)."""
    found = {"session": set(), "line": set()}
    for key, definition in ruleset.items():
        for term in definition["all"]:
            (alias, expr), = term.items()
            found["session" if alias == "s" else "line"].update(field for _, field, _ in _tests(expr)
                                                                 if field != "t")
    return found


def fields_read(compiled: Compiled) -> dict:
    """Like fields_tested, with each derived attribute replaced by the field it is computed from."""
    source = {d.name: d.field for d in compiled.derived}
    tested = fields_tested(compiled.ruleset)
    return {kind: {source.get(f, f) for f in fields} for kind, fields in tested.items()}


def _tests(expr: dict) -> list:
    """The (operator, field, value) tests of a term: `=` for equality; value 1 for $ex/$nex."""
    (op, body), = expr.items()
    if op == "$and":
        return [test for sub in body for test in _tests(sub)]
    if op.startswith("$"):
        (field, value), = body.items()
        return [(op, field, value)]
    return [("=", op, body)]


# --- chunks within durable's limits -------------------------------------------------------------------

class _Node:
    """One alpha node as durable builds it: a test shared by every rule whose tests so far are equal
    (rete.c findAlpha), with its children."""
    __slots__ = ("children", "eq_fields", "others", "nex", "ends", "deepest")

    def __init__(self):
        self.children = {}      # (op, field, value) -> _Node
        self.eq_fields = set()  # fields of its equality children: for each, one child at most matches a fact
        self.others = 0         # children of any other test: each may match
        self.nex = 0            # `$nex` children (a separate, 128-slot list)
        self.ends = 0           # rules whose tests end here
        self.deepest = 0        # the largest stack need of a child

    def need(self, matching=None, deepest=None) -> int:
        """Stack entries this node's subtree can hold at once: all children that may match are pushed,
        then one is taken and its own subtree pushed (events.c handleAlpha, a depth-first stack)."""
        m = len(self.eq_fields) + self.others if matching is None else matching
        d = self.deepest if deepest is None else deepest
        return 0 if not m else max(m, m - 1 + d)


class _Trie:
    """The alpha network of one chunk, enough to bound what durable's fixed tables hold."""

    def __init__(self):
        self.root, self.rules, self.fields = _Node(), 0, {"t", "id", "sid"}
        self.hashes = {_fnv(f): f for f in self.fields}

    def problem(self, path: list, fields: set):
        """Why the rule with these tests cannot join this chunk, or None (then it is added)."""
        if self.rules + 1 > MAX_CHUNK_RULES:
            return f"more than {MAX_CHUNK_RULES} rules in one durable ruleset"
        new = fields - self.fields
        if len(self.fields) + len(new) > MAX_FACT_FIELDS + 3:
            return f"more than {MAX_FACT_FIELDS} fields tested in one durable ruleset"
        hashes = {}
        for field in new:
            other = self.hashes.get(_fnv(field)) or hashes.get(_fnv(field))
            if other:       # durable tells fields apart by a 32-bit hash of the name alone
                return f"fields {field!r} and {other!r} have the same hash in durable"
            hashes[_fnv(field)] = field
        nodes, node = [self.root], self.root
        for depth, test in enumerate(path):
            child = node.children.get(test)
            if child is None:
                break
            nodes.append(node := child)
        else:
            if node.ends + 1 > MAX_CHUNK_RULES:
                return f"more than {MAX_CHUNK_RULES} rules with the same conditions"
            depth = len(path)
        rest = path[depth:]
        if rest:
            op, field, _ = rest[0]
            if op == "$nex" and node.nex + 1 > MAX_NEX_CHILDREN:
                return f"more than {MAX_NEX_CHILDREN} 'not given' tests after the same conditions"
            if len(node.children) + 1 > MAX_CHUNK_RULES:
                return f"more than {MAX_CHUNK_RULES} different tests after the same conditions"
            grows = op != "=" or field not in node.eq_fields
            need = node.need(len(node.eq_fields) + node.others + grows, max(node.deepest, int(len(rest) > 1)))
            for parent in reversed(nodes[:-1]):
                need = parent.need(deepest=max(parent.deepest, need))
            if need > MAX_STACK:
                return f"a fact could match more than {MAX_STACK} tests at once in one durable ruleset"
        self._add(nodes, rest)
        self.rules += 1
        self.fields |= new
        self.hashes.update(hashes)
        return None

    def _add(self, nodes: list, rest: list):
        node = nodes[-1]
        for op, field, value in rest:
            child = node.children[(op, field, value)] = _Node()
            if op == "=":
                node.eq_fields.add(field)
            else:
                node.others += 1
                node.nex += op == "$nex"
            nodes.append(node := child)
        node.ends += 1
        for parent, child in zip(reversed(nodes[:-1]), reversed(nodes[1:])):
            parent.deepest = max(parent.deepest, child.need())


def _fnv(name: str) -> int:
    """durable's FNV-1a hash of a field name (json.c getStringAndHash; names here are ASCII)."""
    h = 0x811C9DC5
    for byte in name.encode():
        h = ((h ^ byte) * 16777619) & 0xFFFFFFFF
    return h


def _path(definition: dict) -> tuple:
    """(alpha tests in order, fields) of a compiled rule: its fact type test first."""
    (term,) = definition["all"]
    (_, expr), = term.items()
    tests = _tests(expr)
    return [(op, field, _hashable(value)) for op, field, value in tests], {field for _, field, _ in tests}


def _hashable(value):
    return (type(value).__name__, value)


def _chunk(ruleset: dict, keys: dict):
    """Split the rules, in order, into as few durable rulesets as the limits allow (greedy)."""
    chunk, trie = None, None
    for key, definition in ruleset.items():
        path, fields = _path(definition)
        if chunk is not None and trie.problem(path, fields) is None:
            chunk[key] = definition
            continue
        if chunk is not None:
            yield _finish(chunk, keys)
        chunk, trie = {SENTINEL: _sentinel()}, _Trie()
        trie.problem(*_path(chunk[SENTINEL]))
        problem = trie.problem(path, fields)
        if problem:
            _refuse(keys.get(key), key, problem)
        chunk[key] = definition
    if chunk is None:
        chunk = {SENTINEL: _sentinel()}
    yield _finish(chunk, keys)


def _finish(chunk: dict, keys: dict) -> Chunk:
    ruleset = {key: d for key, d in chunk.items() if key != SENTINEL}
    ruleset[SENTINEL] = chunk[SENTINEL]        # last, like the flat ruleset; its pri makes it fire last
    check_grammar(ruleset, keys)
    tested = fields_tested(ruleset)
    return Chunk(ruleset, frozenset(tested["session"] | tested["line"] | {"t", "id"}),
                 any("l" in d["all"][0] for d in ruleset.values()))


def _refuse(rule, key, message):
    raise RuleFileError(f"cannot compile rule: {message}", rule.file if rule else None,
                        rule.line if rule else None, f"rules[{rule.index}]" if rule else key)


def check_grammar(ruleset: dict, keys: dict) -> None:
    """Refuse a durable ruleset outside the subset proven safe on durable-rules 2.0.28: its shapes, and
    (from a model of the alpha network it builds) the limits of durable's fixed tables."""
    trie = _Trie()
    for key, definition in ruleset.items():
        rule = keys.get(key)

        def fail(message):
            _refuse(rule, key, message)

        if set(definition) - {"all", "pri"}:
            fail(f"unexpected rule keys {sorted(set(definition) - {'all', 'pri'})}")
        terms = definition["all"]
        if len(terms) != 1:
            fail("a rule must bind exactly one fact (joins are not emitted)")
        for term in terms:
            if len(term) != 1:
                fail(f"malformed term {term!r}")
            (alias, expr), = term.items()
            if alias not in ALIASES.values():
                fail(f"alias {alias!r} is not allowed")
            kind = "session" if alias == "s" else "line"
            tests = expr["$and"] if isinstance(expr, dict) and set(expr) == {"$and"} else [expr]
            if not tests or tests[0] != {"t": FACT_TYPES[kind]}:
                fail(f"the first test must be the fact type {FACT_TYPES[kind]!r}")
            for test in tests[1:]:
                _check_test(test, kind, fail)
        problem = trie.problem(*_path(definition))
        if problem:
            fail(problem)


def _check_test(expr, kind, fail):
    if not isinstance(expr, dict) or len(expr) != 1:
        fail(f"malformed test {expr!r}")
    (op, body), = expr.items()
    if op.startswith("$"):
        if op not in ALLOWED_OPERATORS or op == "$and":
            fail(f"operator {op} is not in the whitelist (here)")
        if not isinstance(body, dict) or len(body) != 1:
            fail(f"malformed test {expr!r}")
        (field, value), = body.items()
    else:
        field, value = op, body
    if field == "t" or field.startswith("$"):
        fail(f"field {field!r} is not allowed here")
    if op in ("$ex", "$nex"):
        if value != 1:
            fail(f"{op} takes 1, not {value!r}")
        return
    if isinstance(value, (dict, list)):
        fail(f"reference or arithmetic test on {field!r} is not allowed")
    expected = FIELD_TYPES[kind].get(field, bool if field.startswith(("in_", DERIVED)) else None)
    if expected is None:
        fail(f"unknown {kind} field {field!r}")
    if type(value) is not expected:
        fail(f"{kind}.{field} compares a {type(value).__name__} with a {expected.__name__}")
    if op in ("$lt", "$lte", "$gt", "$gte") and expected is not int:
        fail(f"{op} on {kind}.{field}: durable orders only numbers correctly (it compares strings as escaped text)")
