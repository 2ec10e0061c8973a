"""Bill one session under one payer: facts → network firings → actions → unit method → result.

The network decides *what applies* to each line (its unit basis, modifiers, warnings, holds), worked
out once per distinct line by plans.py; the pure functions in units.py do the arithmetic; this module
joins the two and records, for every line, unit and warning, the rules that produced it.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import assistants as A
from . import units as U
from .compiler import compile_payer
from .counters import price
from .edits import apply as apply_edits
from .errors import SessionError
from .facts import Line, build_facts, merge_services
from .model import Payer, Session
from .network import make_network
from .plans import EMPTY_PLAN, Plan, Planner, describe


class LineState:
    """One line of the session: what the rules decided for it (its plan, whose fields used for every
    line are copied here) and the units it is billed."""

    __slots__ = ("line", "plan", "modifiers", "rules", "holds", "decision", "family",
                 "units", "capped_from", "reason", "reason_rules", "split")

    def __init__(self, line: Line, plan: Plan = EMPTY_PLAN):
        self.line = line
        self.plan = plan
        self.modifiers = plan.modifiers
        self.rules = plan.rules             # ids of every rule that touched the line
        self.holds = plan.holds             # (rule, reason)
        self.decision = plan.decision       # the unit basis: see plans._decision
        self.family = plan.family           # the line's add-on Family, if any
        self.units = 0
        self.capped_from = 0                # units earned before a max_units limit
        self.reason = ""
        self.reason_rules = ()
        self.split = None                   # [(units, minutes, modifiers)]: the line's claim lines


class Biller:
    """Bills sessions against a payer registry; compiles each payer and builds its network once."""

    def __init__(self, registry, engine: str, remember: bool = True):
        self.registry = registry
        self.engine = engine
        self.remember = remember        # False: every session's facts go through the network
        self._planners: dict = {}

    def planner(self, payer: Payer) -> Planner:
        """The payer's compiled network and its plans, built once per resolved payer (the registry
        caches resolved payers, so identity is stable)."""
        key = id(payer)
        if key not in self._planners:
            compiled = compile_payer(payer)
            self._planners[key] = Planner(compiled, make_network(compiled, self.engine), self.remember)
        return self._planners[key]

    def bill(self, session, payer_id: str | None = None, date: str | None = None) -> dict:
        """A result dict, or an error record `{"session_id", "error"}` for a session that cannot be billed."""
        outcome = self.evaluate(session, payer_id, date)
        return outcome if isinstance(outcome, dict) else outcome.result

    def evaluate(self, session, payer_id: str | None = None, date: str | None = None):
        """The whole Outcome of billing a session (for explain and audit), or an error record."""
        if isinstance(session, SessionError):
            return error_record(session.session_id, str(session))
        payer_id = payer_id or session.payer
        if not payer_id:
            return error_record(session.session_id, "no payer: give the session a payer field or use --payer")
        if date:
            session = session._replace(date_of_service=date)
        try:
            payer = self.registry.resolve(payer_id, session.date_of_service)
        except SessionError as exc:
            return error_record(session.session_id, exc.message)
        planner = self._planners.get(id(payer)) or self.planner(payer)
        try:
            return evaluate_session(session, planner)
        except Exception as exc:    # nothing is lost: a failure bills this session as an error record
            return error_record(session.session_id, f"internal error while billing: {type(exc).__name__}: {exc}")

    def close(self):
        for planner in self._planners.values():
            planner.network.close()
        self._planners.clear()


def error_record(session_id, message: str) -> dict:
    return {"session_id": session_id, "error": message}


@dataclass
class Outcome:
    """Everything billing a session produced: the result, and the steps that explain it."""
    session: Session
    payer: Payer
    lines: list                 # merged Lines
    fired: list                 # (rank, Firing, LineState or None) in canonical order
    states: list                # LineState per merged line
    allocation: U.Allocation    # the unit method's arithmetic over the timed services
    notes: dict                 # service key -> how its units were computed
    result: dict
    edits: list = ()            # (trace entry, table row or None) of each claim edit (engine/edits.py)

    @property
    def facts(self) -> list:
        return build_facts(self.session, self.lines, self.payer)

    @property
    def firings(self) -> list:
        """(Rule, (fact id, ...)) in canonical order: a rule on the session and a line matched the line,
        which carries the session's fields."""
        return [(f.rule, ("session",) if state is None else ("session", state.line.fact_id) if len(f.names) == 2
                 else (state.line.fact_id,)) for _, f, state in self.fired]


def evaluate_session(session: Session, planner: Planner) -> Outcome:
    payer = planner.payer
    lines = merge_services(session)
    session_plan, line_plans = planner.plans(session, lines)
    states = list(map(LineState, lines, line_plans))
    # canonical order: by rule, then by fact (the session, then lines in order); the int is unique, so
    # the sort compares nothing else
    fired = [(f.rank, f, None) for f in session_plan.firings] if session_plan.firings else []
    for state in states:
        position = state.line.order + 1
        for f in state.plan.firings:        # a loop: a comprehension per line costs more than it saves
            fired.append((f.rank + position, f, state))
    fired.sort()

    warnings = [{"severity": severity, "rule": f.rule_id, "message": message,
                 "codes": [state.line.code] if state else []}
                for _, f, state in fired if f.warnings for severity, message in f.warnings]
    extra_lines, method_notes = _allocate(states, payer, warnings)
    method_notes["timed_units_capped"] = _apply_caps(states, warnings)
    # a firing's effect text is known from its plan, unless it tells the units the session gave the line
    trace = [{"rule": f.rule_id, "source": f.source, "facts": [*f.names],
              "effect": f.text if f.text is not None else _effect_text(f, state)} for _, f, state in fired]
    if not A.plain(session.services) or any([len(state.modifiers) > 4 for state in states]):
        _claim_lines(session, payer, states, warnings, trace)
    result = _result(session, payer, states, extra_lines, warnings, trace, method_notes)
    # NCCI PTP/MUE tables: over the final lines, after the network and its memo
    edits = apply_edits(result, session.date_of_service, payer.edits) if payer.edits else []
    if payer.edits is not None and payer.edits.fees:       # amounts from the fee schedule (engine/counters.py)
        price(result, session.date_of_service, payer)
    return Outcome(session, payer, lines, fired, states, method_notes["allocation"], method_notes["notes"], result,
                   edits)


def _claim_lines(session: Session, payer: Payer, states: list, warnings: list, trace: list) -> None:
    """Each billed line's units by modifier set (design.md §5): the payer's modifiers for the line, the
    assistant modifier of each unit (CQ/CO, assistants.py) and the modifiers documented on the entries
    that furnished the unit, in the payer's claim order; a line of more than 4 is an error (837P)."""
    settings = payer.assistants
    evaluations = payer.codes.get(settings.evaluations, ()) if settings.evaluations else ()
    marked = []
    for state in states:
        line = state.line
        if state.units <= 0:
            documented = [m for e in line.entries for m in e.modifiers]
            if documented:      # said, never dropped silently
                warnings.append({"severity": "warning", "rule": "engine.documented-modifier", "codes": [line.code],
                                 "message": f"{line.code}: {' '.join(dict.fromkeys(documented))} documented, but "
                                            f"{line.code} is not billed: on no line of the claim"})
            continue
        if not any(e.modifiers or e.provider in A.ASSISTANTS for e in line.entries):
            # the common case: nothing but the rules' modifiers, one line (_result puts them in order)
            if len(state.modifiers) > 4:
                state.split = [(state.units, line.minutes, A.claim_order(state.modifiers, payer.modifier_order))]
                _limit(state, state.split[0][2], payer, warnings, trace)
            continue
        entries = [(e.provider, e.minutes) for e in line.entries]
        assisted = A.has_assistant(entries)
        uncapped = state.capped_from or state.units
        timed_line = bool(state.decision) and state.decision[0] == "timed_units" and state.family is None
        if assisted and line.code in evaluations:
            who = ", ".join(sorted({p for p, _ in entries if p in A.ASSISTANTS}))
            warnings.append({"severity": "error", "rule": "engine.assistant-evaluation", "codes": [line.code],
                             "message": f"{line.code} is an evaluation or re-evaluation: the therapist furnishes it, "
                                        f"not an assistant ({who})"})
            trace.append({"rule": "engine.assistant-evaluation", "source": settings.source("evaluation_codes"),
                          "facts": [line.code], "effect": f"{line.code}: an assistant on an evaluation is an error"})
            assisted = False
        if assisted and settings.enabled and session.discipline in ("PT", "OT"):
            other = sorted({p for p, _ in entries if p in A.ASSISTANTS and p != session.discipline + "A"})
            if other:       # CQ goes with GP (a PTA), CO with GO (an OTA)
                warnings.append({"severity": "warning", "rule": "engine.assistant-modifier", "codes": [line.code],
                                 "message": f"{line.code}: {', '.join(other)} minutes under a {session.discipline} "
                                            "plan of care (CQ goes with GP, CO with GO): check who furnished them"})
        if assisted and settings.enabled and session.discipline != "SLP":
            if timed_line:
                method = payer.method
                units = A.timed(entries, uncapped, settings, method.unit_minutes, method.first_unit_minutes)
            else:
                units = A.untimed(entries, uncapped, settings)
            units = units[:state.units]
            for n, unit in enumerate(units, 1):
                source = settings.source(unit.setting or "by_provider")
                trace.append({"rule": "engine.assistant-modifier", "source": source, "facts": [line.code],
                              "effect": f"{line.code} unit {n}: {unit.why}"})
            if any(u.modifier for u in units):
                marked.append(line.code)
        elif timed_line:    # no assistant modifier: the units still come from whose minutes they are
            units = [u._replace(modifier=None) for u in A.timed(entries, uncapped, settings, payer.method.unit_minutes,
                                                               payer.method.first_unit_minutes)][:state.units]
        else:
            units = [A.Unit(None, line.minutes, tuple(dict(A.by_provider(entries))), "")] * state.units
        sets = [(A.role(e.provider, entries), e.minutes, e.modifiers) for e in line.entries]
        owners = A.documented(sets, units, timed_line, payer.method.unit_minutes)
        for e, (role, _, mods) in zip(line.entries, sets):
            if mods:            # kept as documented, placed by the payer's claim order
                where = next(i for i, s in enumerate(session.services) if s is e)
                n = owners.count((role, mods))
                trace.append({"rule": "engine.documented-modifier", "source": _order_source(payer),
                              "facts": [line.code], "effect": f"{line.code}: {' '.join(mods)} documented in the "
                                                              f"input (services[{where}].modifiers): on {n} of "
                                                              f"{len(units)} unit(s)"})
        groups: dict = {}
        keys: dict = {}         # (assistant modifier, documented) -> the unit's modifiers in claim order
        for unit, (_, mine) in zip(units, owners):
            key = keys.get((unit.modifier, mine))
            if key is None:
                mods = list(state.modifiers) + ([unit.modifier] if unit.modifier else []) + list(mine)
                key = keys[(unit.modifier, mine)] = tuple(A.claim_order(mods, payer.modifier_order))
            group = groups.setdefault(key, [0, 0])
            group[0] += 1
            group[1] += unit.minutes
        placed = {m for key in groups for m in key}
        for role, _, mods in sets:
            for m in mods:
                if m not in placed:
                    placed.add(m)
                    warnings.append({"severity": "warning", "rule": "engine.documented-modifier",
                                     "codes": [line.code],
                                     "message": f"{line.code}: {m} is documented on {role} minutes that make no "
                                                "billed unit (a unit carries the modifiers of the entries that "
                                                "furnished most of its minutes): it is on no line of the claim"})
        if len(groups) == 1:
            state.split = [(state.units, line.minutes, list(key)) for key in groups]
        else:
            state.split = [[n, minutes, list(key)] for key, (n, minutes) in groups.items()]
            state.split[0][1] += line.minutes - sum(g[1] for g in state.split)
        for _, _, mods in state.split:
            if len(mods) > 4:
                _limit(state, mods, payer, warnings, trace)
    if marked and settings.payment_note:
        warnings.append({"severity": "info", "rule": "engine.assistant-modifier", "codes": marked,
                         "message": settings.payment_note})


def _order_source(payer: Payer) -> str:
    """file:line of the payer's modifier_order (or of its `payer:` key when it has none)."""
    return payer.modifier_order_source or f"{payer.file}:{payer.line}"


def _limit(state: LineState, mods: list, payer: Payer, warnings: list, trace: list) -> None:
    """A claim line holds at most 4 modifiers (837P SV101): more is an error naming them all; none is dropped."""
    code = state.line.code
    warnings.append({"severity": "error", "rule": "engine.modifier-limit", "codes": [code],
                     "message": f"{code} {' '.join(mods)}: {len(mods)} modifiers, a claim line holds at most 4 "
                                "(837P): none was dropped; correct the documentation"})
    trace.append({"rule": "engine.modifier-limit", "source": _order_source(payer),
                  "facts": [code], "effect": f"{code}: {len(mods)} modifiers, at most 4"})


def _effect_text(firing, state: LineState) -> str:
    effects = firing.effects
    return describe(effects[0], state) if len(effects) == 1 else "; ".join(describe(e, state) for e in effects)


def _engine_error(state: LineState, rule: str, reason: str, warnings: list) -> None:
    """A line the engine itself refuses to bill, whatever the payer file says (rule id engine.*)."""
    state.reason = reason
    warnings.append({"severity": "error", "rule": rule, "message": reason, "codes": [state.line.code]})


def _services(states: list, payer: Payer, warnings: list) -> dict:
    """Billable lines grouped into services: key (code, or family id) -> (decision, member states).
    Held lines, lines no rule gives units to and conflicting decisions are left out, with a reason."""
    services, families = {}, {}
    for state in states:
        if state.holds:
            state.reason = "; ".join(reason for _, reason in state.holds)
            state.reason_rules = [r.id for r, _ in state.holds]
            continue
        decision = state.decision
        if decision is None:
            _engine_error(state, "engine.no-unit-rule",
                          f"no rule of payer {payer.id} decides the units of {state.line.code}", warnings)
        elif decision == "conflict":
            ids = ", ".join(sorted({r.id for r, _ in state.plan.decisions}))
            _engine_error(state, "engine.unit-conflict",
                          f"rules {ids} decide the units of {state.line.code} differently", warnings)
        elif state.family is None:
            services[state.line.code] = (decision, [state])     # merged lines: one state per code
        else:
            if state.family.id not in families:
                families[state.family.id] = []
                services[state.family.id] = None                # keeps the family's place in order
            families[state.family.id].append(state)
    for key, members in families.items():
        family = members[0].family
        if len(members) > 1 and len({repr(m.decision) for m in members}) > 1:
            for m in members:
                _engine_error(m, "engine.unit-conflict", f"the codes of family {key} are given different unit rules",
                              warnings)
            del services[key]
        elif family.addon and not any(m.line.code == family.primary for m in members):
            for m in members:
                _engine_error(m, "engine.addon-without-primary",
                              f"add-on {m.line.code} billed without its primary {family.primary}", warnings)
            del services[key]
        else:
            services[key] = (members[0].decision, members)
    return services


def _allocate(states: list, payer: Payer, warnings: list):
    """Apply the unit decisions: fixed units, blocks, and the payer's method over the timed services."""
    method = payer.method
    services = _services(states, payer, warnings)
    timed, extra_lines, notes = [], [], {}
    for key, ((kind, value), members) in services.items():
        if len(members) == 1:
            minutes, order = members[0].line.minutes, members[0].line.order
        else:
            minutes, order = sum(m.line.minutes for m in members), min(m.line.order for m in members)
        if kind == "timed_units":
            timed.append((key, minutes, order))
        elif kind == "units":
            for m in members:
                m.units = value
        else:
            n = U.blocks(minutes, value["first_minutes"], value["first_min_minutes"], value["next_minutes"],
                         value["next_min_minutes"])
            notes[key] = ("blocks", minutes, n, value)
            _share(key, n, members, payer, extra_lines)

    if method.pooled:
        allocation = U.pooled(timed, method.unit_minutes, method.first_unit_minutes, method.tie_break,
                              payer.family)
    else:
        allocation = U.per_code(timed, method.unit_minutes, method.first_unit_minutes)
    units = allocation.units
    for key, minutes, _ in timed:
        notes[key] = ("timed", minutes, units[key], allocation)
        members = services[key][1]
        if members[0].family is None:           # a code on its own (the common case) takes its units
            members[0].units = units[key]
        else:
            _share(key, units[key], members, payer, extra_lines)
    if allocation.tie:
        _tie_warning(allocation, services, payer, warnings)
    for state in states:
        if state.units == 0 and not state.reason:
            state.reason = _zero_reason(state, payer, notes, allocation)
            state.reason_rules = [r.id for r, _ in state.plan.decisions] or list(state.rules)
    return extra_lines, {"allocation": allocation, "notes": notes}


def _apply_caps(states: list, warnings: list) -> int:
    """Per-code unit limits (max_units): units above the lowest limit are not billed, and said so.
    The units are not given to another code: a limit takes units away, it does not move them.
    Returns how many timed units the limits took away."""
    taken = 0
    for state in states:
        if not state.plan.caps or state.units == 0:
            continue
        rule, limit = min(state.plan.caps, key=lambda cap: (cap[1], cap[0].index))
        if state.units > limit:
            warnings.append({"severity": "warning", "rule": rule.id, "codes": [state.line.code],
                             "message": f"{state.line.code}: {state.units} units earned, at most {limit} billed "
                                        f"({rule.description})"})
            state.capped_from = state.units
            if state.decision[0] == "timed_units":
                taken += state.units - limit
            state.units = limit
            if limit == 0:
                state.reason = f"limited to 0 units by {rule.id}"
                state.reason_rules = [rule.id]
    return taken


def _share(key: str, n: int, members: list, payer: Payer, extra_lines: list) -> None:
    """Give a service's n units to its line(s): a single code takes them all; a family is split
    primary x1 and add-on x(n-1), creating the add-on line when only the primary was entered."""
    family = members[0].family
    if family is None or family.addon is None:
        for m in members:
            m.units = n
        return
    primary = next(m for m in members if m.line.code == family.primary)
    addon = next((m for m in members if m.line.code == family.addon), None)
    first, rest = U.split_family(n)
    primary.units = first
    if addon is not None:
        addon.units = rest
    elif rest:
        generated = LineState(Line(f"{primary.line.fact_id}+", family.addon, 0, primary.line.order))
        generated.units = rest
        generated.modifiers = list(primary.modifiers)
        generated.rules = list(primary.rules)
        extra_lines.append((primary, generated))


def _tie_warning(allocation, services, payer, warnings):
    """CMS lets the clinician choose between equal leftovers (§20.2 Examples 2 and 5): say which
    alternatives are acceptable and which one the configured tie-break picked."""
    tied, wins, winners = allocation.tie
    codes = {key: [m.line.code for m in services[key][1]] for key in tied}
    units = "unit" if wins == 1 else "units"
    winner = services[winners[0]][1][0]
    warnings.append({
        "severity": "info",
        "rule": winner.plan.decisions[0][0].id,
        "message": (f"equal leftover minutes ({allocation.leftover[tied[0]]} each): CMS accepts the {wins} "
                    f"remaining {units} on any {wins} of {', '.join('+'.join(codes[k]) for k in tied)}; "
                    f"billed on {', '.join('+'.join(codes[k]) for k in winners)} "
                    f"(tie-break: {', '.join(payer.method.tie_break)})"),
        "codes": [c for k in tied for c in codes[k]],
    })


def _zero_reason(state: LineState, payer: Payer, notes: dict, allocation) -> str:
    code = state.line.code
    family, _ = payer.family_of(code)
    key = family.id if family else code
    note = notes.get(key)
    if note is None:
        return f"{code}: 0 units"
    kind, minutes, n = note[0], note[1], note[2]
    if kind == "blocks":
        value = note[3]
        return (f"{minutes} min is under the {value['first_min_minutes']} min that earn the first unit"
                if n == 0 else f"{code}: 0 units")
    method = payer.method
    if method.pooled and allocation.tie and key in allocation.tie[0]:
        tied, _, winners = allocation.tie
        return (f"{minutes} min ({allocation.leftover[key]} leftover): equal leftover minutes with "
                f"{', '.join(k for k in tied if k != key)}; the tie-break ({', '.join(method.tie_break)}) gave the "
                f"unit to {', '.join(winners)} (CMS accepts any of them)")
    if method.pooled:
        if allocation.total_units == 0:
            return (f"total timed minutes {allocation.total_minutes} are under the "
                    f"{method.first_unit_minutes} min that earn a unit")
        return (f"{minutes} min ({allocation.leftover[key]} leftover) did not earn one of the "
                f"{allocation.remaining} leftover unit(s) of the timed pool: total {allocation.total_minutes} min = "
                f"{allocation.total_units} units, given to services with more leftover minutes")
    return f"{minutes} min is under the {method.first_unit_minutes} min that earn a unit"


def _result(session, payer, states, extra_lines, warnings, trace, method_notes) -> dict:
    billed, unbilled, total_units = [], [], 0
    ordered = states
    if extra_lines:         # a generated add-on line follows its primary
        extras = {}
        for parent, generated in extra_lines:
            extras.setdefault(id(parent), []).append(generated)
            if parent.split:        # an add-on made from its primary's minutes: the primary's modifiers
                generated.split = [(generated.units, 0, list(parent.split[0][2]))]
        ordered = []
        for state in states:
            ordered.append(state)
            ordered.extend(extras.get(id(state), []))
    for state in ordered:
        if state.units > 0:
            total_units += state.units
            if state.split is None:         # one line (the common case)
                mods = state.modifiers
                billed.append({"code": state.line.code, "units": state.units, "minutes": state.line.minutes,
                               "modifiers": A.claim_order(mods, payer.modifier_order) if len(mods) > 1 else [*mods],
                               "rules": [*state.rules]})
                continue
            for units, minutes, mods in state.split:
                billed.append({"code": state.line.code, "units": units, "minutes": minutes, "modifiers": mods,
                               "rules": [*state.rules]})
        else:
            unbilled.append({"code": state.line.code, "minutes": state.line.minutes, "reason": state.reason,
                             "rules": state.reason_rules or list(state.rules)})
    allocation = method_notes["allocation"]
    return {
        "session_id": session.session_id,
        "payer": payer.id,
        "method": payer.method.name,
        "lines": billed,
        "unbilled": unbilled,
        "total_timed_minutes": allocation.total_minutes,
        "total_timed_units": allocation.total_units - method_notes["timed_units_capped"],
        "total_units": total_units,
        "warnings": warnings,
        "trace": trace,
    }
