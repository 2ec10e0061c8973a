"""What the rules decide for one fact, worked out once per distinct content and remembered.

Every compiled rule tests a single fact (compiler.check_grammar), so the rules a line fires, and what
their actions do to it (its unit basis, modifiers, holds, limits and rendered messages), depend on that
line's fact alone — and within it only on the fields that some condition or message reads. Those
fields are the memo key. The network (durable or Python) is asked only about facts whose key it has
not seen, so fact building, C round trips and action dispatch are paid once per distinct line, not
once per session; what is left per session is the arithmetic that pools the lines (billing.py).
"""
from __future__ import annotations

import operator
import string
from dataclasses import dataclass

from .compiler import SESSION_ON_LINE, fields_read
from .facts import build_facts
from .model import Payer, Rule

UNIT_ACTIONS = ("timed_units", "units", "block_units")
SEVERITIES = {"info": "info", "warn": "warning", "error": "error"}
# what a line's effect text says depends on the units the whole session gives it
_UNITS_DEPENDENT = ("timed_units", "block_units", "max_units")
# the inputs of a line fact that its code does not determine, and of the session fact
LINE_INPUTS = ("code", "minutes", "group_size", "provider", "has_primary")
SESSION_INPUTS = ("discipline", "date_of_service", "line_count")
# line fact fields that follow from the code alone (with the `in_<list>` flags)
CODE_DERIVED = ("known", "family", "family_role")
# message placeholders -> the input they read
PLACEHOLDER_INPUTS = {"minutes": "minutes", "group_size": "group_size", "provider": "provider",
                      "discipline": "s_discipline", "date_of_service": "s_date_of_service"}
CODE_PLACEHOLDERS = ("code", "family", "primary")
MEMO_LIMIT = 20_000         # remembered facts per payer version (a few MB); the memo starts afresh beyond it


@dataclass(frozen=True, slots=True)
class Firing:
    """One rule fired on one fact, with what its actions did to that fact."""
    rank: int               # the rule's position << 20: a session's firings are ordered by rank + fact position
    rule: Rule
    rule_id: str
    source: str             # the rule's file:line
    effects: tuple          # (kind, value) per action, messages rendered
    names: tuple            # the facts as the trace shows them: ("session", code), (code,) or ("session",)
    warnings: tuple         # (severity, message) per warning action
    text: str | None        # the trace's effect text, or None when it depends on the session's units


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything the rules decided for one fact."""
    firings: tuple          # of Firing, in rule key order
    decisions: tuple = ()   # (Rule, Action) giving the line's unit basis
    modifiers: tuple = ()
    rules: tuple = ()       # ids of the rules that touched the line, in firing order
    holds: tuple = ()       # (Rule, reason)
    caps: tuple = ()        # (Rule, max units)
    decision: object = None     # the unit basis: (kind, value), "conflict", or None when no rule gave one
    family: object = None       # the line's add-on Family, if any


EMPTY_PLAN = Plan(())


class Scratch:
    """A line's decisions while its plan is being worked out."""

    def __init__(self, line):
        self.line = line
        self.units = self.capped_from = 0          # a held line earns nothing
        self.decisions, self.modifiers, self.rules, self.holds, self.caps = [], [], [], [], []

    def touch(self, rule_id):
        if rule_id not in self.rules:
            self.rules.append(rule_id)


class Planner:
    """The plans of one compiled payer, asking its network about each distinct fact once.
    `remember=False` asks the network about every fact of every session (for cross-checks)."""

    def __init__(self, compiled, network, remember: bool = True):
        self.compiled, self.network, self.remember = compiled, network, remember
        self.payer = compiled.payer
        tested = fields_read(compiled)
        read = tested["line"] | {SESSION_ON_LINE + f for f in tested["session"]}
        placeholders = _placeholders(self.payer)
        read |= {PLACEHOLDER_INPUTS[name] for name in placeholders if name in PLACEHOLDER_INPUTS}
        inputs = LINE_INPUTS + tuple(SESSION_ON_LINE + f for f in SESSION_INPUTS)
        unkeyed = {f for f in read if f not in inputs and f not in CODE_DERIVED and not f.startswith("in_")}
        if unkeyed or not placeholders <= PLACEHOLDER_INPUTS.keys() | set(CODE_PLACEHOLDERS):
            # something is read that the key would not hold: remembering could give a fact another's plan
            self.remember = False
        # the key of a line: its code (which decides its lists and family) and the inputs that are read
        self._line_key = operator.itemgetter(0, *[i for i, name in enumerate(inputs) if i and name in read])
        session_read = tested["session"] | {f for f in SESSION_INPUTS if SESSION_ON_LINE + f in read}
        read_at = [i for i, name in enumerate(SESSION_INPUTS) if name in session_read]
        self._session_key = operator.itemgetter(*read_at) if read_at else _nothing
        self.memo: dict = {}
        self._family_of = {code: family for family in self.payer.families
                           for code in (family.primary, family.addon) if code}.get

    def plans(self, session, lines: list) -> tuple:
        """(plan of the session fact, [plan of each line])."""
        family_of = self._family_of
        values = (session.discipline, session.date_of_service, len(lines))
        present = None
        keys = []
        for line in lines:
            family = family_of(line.code)
            has_primary = None
            if family is not None:
                present = present or {other.code for other in lines}
                has_primary = family.primary in present
            keys.append(self._line_key((line.code, line.minutes, line.group_size, line.provider, has_primary)
                                       + values))
        session_key = ("session", self._session_key(values))
        memo = self.memo
        found = [memo.get(key) for key in keys]
        session_plan = memo.get(session_key)
        if session_plan is None or not all(found):      # (a Plan is always true; `None in` would call its __eq__)
            learned = self._learn(session, lines, keys, session_key, session_plan, found)
            if not self.remember:
                memo.clear()
            return learned[session_key], [learned[key] for key in keys]
        return session_plan, found

    def _learn(self, session, lines: list, keys: list, session_key, session_plan, found: list) -> dict:
        """Run the network on the session fact and the lines it has no plan for; plan what fired."""
        payer, compiled = self.payer, self.compiled
        facts = build_facts(session, lines, payer)
        wanted = [facts[0]] + [fact for fact, plan in zip(facts[1:], found) if plan is None]
        fired: dict = {fact["id"]: [] for fact in wanted}
        for key, (fact_id,) in self.network.run(wanted):
            fired[fact_id].append(compiled.keys[key])
        learned = {session_key: session_plan or _plan(None, fired["session"], session, payer)}
        for line, key, plan in zip(lines, keys, found):
            learned[key] = plan or _plan(line, fired[line.fact_id], session, payer)
        if len(self.memo) >= MEMO_LIMIT:
            self.memo.clear()
        self.memo.update(learned)
        return learned


def _nothing(values):
    return None


def _plan(line, rules: list, session, payer: Payer) -> Plan:
    """Apply the actions of the rules fired on one fact (a line, or the session when `line` is None)."""
    state = Scratch(line) if line is not None else None
    applied = []
    for rule in rules:
        warnings = []
        effects = tuple(_apply(action, rule, state, session, payer, warnings) for action in rule.then)
        applied.append((rule, effects, tuple(warnings)))
    code = line.code if line is not None else None
    firings = []
    for rule, effects, warnings in applied:
        names = ("session",) if line is None else ("session", code) if len(rule.when) == 2 else (code,)
        # a held line's unit effects, and everything but units, are known now (the holds are final)
        dynamic = state is not None and not state.holds and any(kind in _UNITS_DEPENDENT for kind, _ in effects)
        text = None if dynamic else "; ".join(describe(effect, state) for effect in effects)
        firings.append(Firing(rule.index << 20, rule, rule.id, rule.location, effects, names, warnings, text))
    if state is None:
        return Plan(tuple(firings))
    return Plan(tuple(firings), tuple(state.decisions), tuple(state.modifiers), tuple(state.rules),
                tuple(state.holds), tuple(state.caps), _decision(state.decisions), payer.family_of(code)[0])


def _decision(decisions: list):
    """The one unit decision for a line: (kind, value), "conflict", or None when no rule decided."""
    if not decisions:
        return None
    _, action = decisions[0]
    if len(decisions) > 1 and len({(a.kind, repr(a.value)) for _, a in decisions}) > 1:
        return "conflict"
    return action.kind, action.value


def _apply(action, rule, state, session, payer, warnings):
    kind, value = action.kind, action.value
    if kind in UNIT_ACTIONS:
        state.decisions.append((rule, action))
        state.touch(rule.id)
        return (kind, value)
    if kind == "max_units":
        state.caps.append((rule, value))
        state.touch(rule.id)
        return (kind, value)
    if kind == "modifier":
        if value not in state.modifiers:
            state.modifiers.append(value)
        state.touch(rule.id)
        return (kind, value)
    message = _render(value, state.line if state else None, session, payer)
    if kind == "hold":
        state.holds.append((rule, message))
        state.touch(rule.id)
        return (kind, message)
    severity = SEVERITIES[kind]
    warnings.append((severity, message))
    if state:
        state.touch(rule.id)
    return ("warning", f"{severity}: {message}")


class _Blank(dict):
    def __missing__(self, key):
        return ""


def _render(template: str, line, session, payer) -> str:
    """Fill a rule's message template. Only the names validated in loader.PLACEHOLDERS can appear."""
    values = _Blank(discipline=session.discipline or "", date_of_service=session.date_of_service or "")
    if line is not None:
        values.update(code=line.code, minutes=line.minutes, group_size="" if line.group_size is None else line.group_size,
                      provider=line.provider or "")
        family, _ = payer.family_of(line.code)
        if family:
            values.update(family=family.id, primary=family.primary)
    return string.Formatter().vformat(template, (), values)


def _placeholders(payer: Payer) -> set:
    """The placeholder names used by the payer's message templates."""
    names = set()
    for rule in payer.rules:
        for action in rule.then:
            if isinstance(action.value, str) and action.kind in ("hold", *SEVERITIES):
                names.update(field for _, field, _, _ in string.Formatter().parse(action.value) if field)
    return names


def describe(effect, state) -> str:
    """The trace's text for one effect on a line (`state`: its plan scratch, or its billed LineState)."""
    kind, value = effect
    code = state.line.code if state else ""
    if kind in UNIT_ACTIONS and state.holds:
        return f"{code}: held, its minutes are not counted"
    if kind == "timed_units":
        return f"{code}: {state.line.minutes} min counted as timed minutes → {state.units} unit(s)"
    if kind == "units":
        return f"{code}: {value} unit(s)"
    if kind == "block_units":
        return f"{code}: {state.line.minutes} min counted in blocks → {state.units} unit(s)"
    if kind == "modifier":
        return f"{code}: modifier {value}"
    if kind == "max_units":
        reached = f" (capped from {state.capped_from})" if state.capped_from else " (not reached)"
        return f"{code}: at most {value} unit(s){reached}"
    if kind == "hold":
        return f"{code} not billed: {value}"
    return value
