"""`payrules explain`: a readable account of how a session was billed — every rule that fired, with its
description, source citation, file:line, matched facts and effect; the unit method's arithmetic step by
step; why each unbilled code got nothing; and, on request, why a rule did not fire."""
from __future__ import annotations

from .billing import Outcome
from .compiler import Derived, condition_tests
from .edits import NONE as NO_EDITS, RULES as EDIT_RULES, row_text, why_not as edit_why_not
from .errors import suggest
from .facts import derive
from .network import predicate
from .render import clean, plural


def explain_json(outcome: Outcome, why_not: list = (), steps=()) -> dict:
    payer, result = outcome.payer, outcome.result
    facts = {f["id"]: f for f in outcome.facts}
    return {
        "session_id": result["session_id"],
        "payer": payer.id,
        "payer_name": payer.name,
        "method": method_json(outcome),
        "firings": [{"rule": rule.id, "description": rule.description, "source": rule.source,
                     "location": rule.location, "facts": [_fact_view(facts[f]) for f in fact_ids],
                     "effect": entry["effect"]}
                    for (rule, fact_ids), entry in zip(outcome.firings, result["trace"])],
        "modifiers": claim_trace(outcome),
        "unbilled": result["unbilled"],
        "edits": [{**entry, "row": row_text(row) if row else None} for entry, row in outcome.edits],
        "amounts": year_trace(outcome),
        "patient_year": [{"threshold": s.threshold, "source": s.source, "step": s.text,
                          "confidence": s.confidence or "CERTAIN"} for s in steps],
        "why_not": [why_not_json(outcome, rule_id) for rule_id in why_not],
        "result": result,
    }


def _fact_view(fact: dict) -> dict:
    """A fact as a reader sees it: no internal keys."""
    hidden = {"t", "id", "sid"}
    view = {"fact": "session" if fact["t"] == "session" else fact["code"]}
    view.update({k: v for k, v in fact.items() if k not in hidden and not k.startswith("in_") and k != "code"})
    lists = sorted(k[3:] for k in fact if k.startswith("in_"))
    if lists:
        view["code_lists"] = lists
    return view


def _services(outcome: Outcome) -> dict:
    """Service key -> its codes (a family's codes joined), for naming services in the arithmetic."""
    names: dict = {}
    for state in outcome.states:
        family, _ = outcome.payer.family_of(state.line.code)
        names.setdefault(family.id if family else state.line.code, []).append(state.line.code)
    return {key: "+".join(codes) for key, codes in names.items()}


def method_json(outcome: Outcome) -> dict:
    method, a = outcome.payer.method, outcome.allocation
    names = _services(outcome)
    timed = [k for k, note in outcome.notes.items() if note[0] == "timed"]
    out = {"name": method.name, "unit_minutes": method.unit_minutes,
           "first_unit_minutes": method.first_unit_minutes, "pooled": method.pooled,
           "timed_services": [{"service": names.get(k, k), "minutes": outcome.notes[k][1],
                               "full_units": a.full_units[k], "leftover_minutes": a.leftover[k],
                               "units": a.units[k], "got_leftover_unit": k in a.extra} for k in timed],
           "total_timed_minutes": a.total_minutes, "total_timed_units": a.total_units,
           "remaining_units": a.remaining if method.pooled else None,
           "tie": None, "blocks": []}
    if a.tie:
        tied, wins, winners = a.tie
        out["tie"] = {"tied": [names[k] for k in tied], "units": wins, "billed_on": [names[k] for k in winners],
                      "tie_break": list(method.tie_break)}
    for key, note in outcome.notes.items():
        if note[0] == "blocks":
            _, minutes, n, value = note
            out["blocks"].append({"service": names.get(key, key), "minutes": minutes, "units": n, **value})
    return out


def band(units: int, unit_minutes: int, first: int) -> str:
    """The minutes that give `units` on the chart: 3 -> '38-52' for 15/8."""
    if units == 0:
        return f"0-{first - 1}"
    low = first + (units - 1) * unit_minutes
    return f"{low}-{low + unit_minutes - 1}"


def explain_text(outcome: Outcome, why_not: list = (), steps=()) -> str:
    payer, result, session = outcome.payer, outcome.result, outcome.session
    facts = {f["id"]: f for f in outcome.facts}
    out = [f"Session {clean(result['session_id'])}: payer {payer.id} ({payer.name}), method {payer.method.name}"
           + (f", date of service {session.date_of_service}" if session.date_of_service else "")
           + (f", discipline {session.discipline}" if session.discipline else "")]
    out += ["", "Rules that fired (in rule order, then line order):"]
    for n, ((rule, fact_ids), entry) in enumerate(zip(outcome.firings, result["trace"]), 1):
        matched = ", ".join(_fact_text(facts[f]) for f in fact_ids)
        out += [f"{n:3}. {rule.id} — {rule.description}",
                f"     source: {rule.source}",
                f"     at {rule.location}; matched {matched}",
                f"     effect: {entry['effect']}"]
    if outcome.edits:
        out += ["", "Claim edits from data tables (after the lines were final):"]
        for n, (entry, row) in enumerate(outcome.edits, 1):
            out += [f"{n:3}. {entry['rule']} — {entry['effect']}", f"     named at {entry['source']}"]
            if row is not None:
                out.append(f"     table {row.where}: {row_text(row)}")
    out += ["", *method_text(outcome)]
    decided = claim_trace(outcome)
    if decided:
        out += ["", "Who furnished it, and the documented modifiers (unit by unit, in line order):"]
        out += [f"  {entry['effect']}  [{entry['source']}]" for entry in decided]
    out += year_text(outcome, steps)
    lines = result["lines"]
    out += ["", "Billed: " + (", ".join(f"{l['code']} x{l['units']}" + (f" {' '.join(l['modifiers'])}"
                                                                       if l["modifiers"] else "") for l in lines)
                              or "nothing") + f" (total {plural(result['total_units'], 'unit')})"]
    if result["unbilled"]:
        out.append("Not billed:")
        out += [f"  {u['code']} ({u['minutes']} min): {clean(u['reason'])}"
                + (f" [{', '.join(u['rules'])}]" if u["rules"] else "") for u in result["unbilled"]]
    if result["warnings"]:
        out.append("Warnings:")
        out += [f"  {w['severity']}: {clean(w['message'])} [{w['rule']}]" for w in result["warnings"]]
    for rule_id in why_not:
        out += ["", *why_not_text(outcome, rule_id)]
    return "\n".join(out) + "\n"


def claim_trace(outcome: Outcome) -> list:
    """The trace entries of the modifiers the engine decided after the rules (CQ/CO per unit, documented
    modifiers, the 4-modifier limit): each with the payer setting's file:line, or the input's place. The
    patient's year (amounts, counters) is shown apart: year_trace."""
    year = _year_rules(outcome.payer)
    return [e for e in outcome.result["trace"][len(outcome.fired):] if e["rule"] not in year]


def _year_rules(payer) -> set:
    return {"fee-schedule"} | {t.id for c in payer.counters for t in c.thresholds}


def year_trace(outcome: Outcome) -> list:
    """The fee-schedule entries of the session's lines (docs/domain.md §18.1)."""
    return [e for e in outcome.result["trace"][len(outcome.fired):] if e["rule"] == "fee-schedule"]


def year_text(outcome: Outcome, steps) -> list:
    """The amounts and the running totals, line by line (docs/domain.md §18)."""
    amounts, out = year_trace(outcome), []
    if amounts:
        out += ["", "Amounts from the fee schedule:"]
        out += [f"  {e['effect']}" + (f"  [table {e['table']}]" if "table" in e else f"  [{e['source']}]")
                for e in amounts]
    if steps:
        out += ["", "The patient's year (running totals in date order, then line order):"]
        out += [f"  {step.threshold}: {step.text}  [{step.source}"
                + (f", value {step.confidence}]" if step.confidence else "]") for step in steps]
    return out


def _fact_text(fact: dict) -> str:
    if fact["t"] == "session":
        return "the session" + (f" (discipline {fact['discipline']})" if "discipline" in fact else "")
    return f"{fact['code']} ({fact['minutes']} min)"


def method_text(outcome: Outcome) -> list:
    method, a = outcome.payer.method, outcome.allocation
    names = _services(outcome)
    timed = [k for k, note in outcome.notes.items() if note[0] == "timed"]
    u, first = method.unit_minutes, method.first_unit_minutes
    out = []
    if method.pooled:
        out.append(f"Unit method {method.name}: all timed minutes of the day are pooled; a unit is {u} min, "
                   f"the first needs {first} min.")
        if not timed:
            out.append("  No timed minutes.")
        else:
            parts = " + ".join(f"{names[k]} {a.full_units[k] * u + a.leftover[k]}" for k in timed)
            out.append(f"  1. Total timed minutes: {parts} = {a.total_minutes} min")
            out.append(f"  2. Chart: {a.total_minutes} min is in the band {band(a.total_units, u, first)}, "
                       f"which gives {plural(a.total_units, 'unit')}")
            full = "; ".join(f"{names[k]} {a.full_units[k]} full ({a.leftover[k]} min left over)" for k in timed)
            out.append(f"  3. Full {u}-minute units first: {full}: "
                       f"{plural(sum(a.full_units.values()), 'full unit')} in all")
            ranked = sorted((k for k in timed if a.leftover[k] > 0), key=lambda k: -a.leftover[k])
            if a.remaining > 0:
                winners = ", ".join(f"{names[k]} ({a.leftover[k]} min)" for k in a.extra)
                losers = [k for k in ranked if k not in a.extra]
                out.append(f"  4. Remaining {a.total_units} - {sum(a.full_units.values())} = "
                           f"{plural(a.remaining, 'unit')}, "
                           f"one each to the largest leftover minutes: {winners}")
                if losers:
                    out.append("     Not reached: " + ", ".join(f"{names[k]} ({a.leftover[k]} min)" for k in losers))
            else:
                out.append("  4. No unit remains for leftover minutes.")
            if a.tie:
                tied, wins, winners = a.tie
                out.append(f"  5. Tie: {', '.join(names[k] for k in tied)} have equal leftover minutes; CMS accepts "
                           f"the {'unit' if wins == 1 else 'units'} on any {wins}; the tie-break ({', '.join(method.tie_break)}) chose "
                           f"{', '.join(names[k] for k in winners)}")
            out.append("  Timed units: " + ", ".join(f"{names[k]} x{a.units[k]}" for k in timed)
                       + f" (total {a.total_units})")
    else:
        out.append(f"Unit method {method.name}: each code on its own minutes, nothing pooled; a unit is {u} min, "
                   f"the first needs {first} min.")
        for k in timed:
            minutes = a.full_units[k] * u + a.leftover[k]
            out.append(f"  {names[k]} {minutes} min is in the band {band(a.units[k], u, first)}, which gives "
                       f"{plural(a.units[k], 'unit')}")
        if not timed:
            out.append("  No timed minutes.")
    for key, note in outcome.notes.items():
        if note[0] == "blocks":
            _, minutes, n, v = note
            extra = max(0, minutes - v["first_minutes"])
            whole, part = divmod(extra, v["next_minutes"])
            out.append(f"  {names.get(key, key)} {minutes} min by blocks: the first {v['first_minutes']} min "
                       f"(from {v['first_min_minutes']}): {plural(1 if n else 0, 'unit')}; {extra} min beyond = "
                       f"{plural(whole, 'whole block')} of {v['next_minutes']} + {part} min "
                       f"({'counts' if part >= v['next_min_minutes'] else 'under'} {v['next_min_minutes']}); "
                       f"{plural(n, 'unit')} in all")
    for state in outcome.states:
        if outcome.notes.get(state.line.code) is None and state.plan.decisions and not state.holds:
            rule, action = state.plan.decisions[0]
            if action.kind == "units":
                out.append(f"  {state.line.code}: {plural(action.value, 'unit')} whatever the minutes ({rule.id})")
    return out


# --- why a rule did not fire ---------------------------------------------------------------------------

def why_not_json(outcome: Outcome, rule_id: str) -> dict:
    if rule_id in EDIT_RULES:
        return {"rule": rule_id, "in_effect": True, "table_edit": True,
                "fired": sum(entry["rule"] == rule_id for entry, _ in outcome.edits),
                "checks": [c.strip() for c in edit_why_not(outcome.result, outcome.session.date_of_service,
                                                           outcome.payer.edits or NO_EDITS, rule_id)]}
    rule = next((r for r in outcome.payer.rules if r.id == rule_id), None)
    if rule is None:
        ids = sorted({r.id for r in outcome.payer.rules})
        return {"rule": rule_id, "in_effect": False,
                "reason": f"payer {outcome.payer.id} has no rule {rule_id!r} in effect for this session"
                          f"{suggest(rule_id, ids)}", "candidates": []}
    fired = [ids for r, ids in outcome.firings if r is rule]
    candidates = []
    for kind in ("session", "line"):
        if kind not in rule.when:
            continue
        for fact in outcome.facts:
            if fact["t"] != kind:
                continue
            checks = check_conditions(rule.when[kind], fact)
            candidates.append({"fact": "session" if kind == "session" else fact["code"],
                               "matches": all(ok for _, ok, _ in checks),
                               "conditions": [{"condition": c, "ok": ok, "actual": actual} for c, ok, actual in checks]})
    return {"rule": rule.id, "location": rule.location, "in_effect": True, "fired": len(fired),
            "candidates": candidates}


def why_not_text(outcome: Outcome, rule_id: str) -> list:
    info = why_not_json(outcome, rule_id)
    if not info["in_effect"]:
        return [f"Why not {rule_id}: {info['reason']}"]
    if info.get("table_edit"):
        return [f"Why not {rule_id} (claim edit from the payer's tables): "
                + (f"it applied {plural(info['fired'], 'time')}." if info["fired"] else "it did not apply."),
                *(f"  {c}" for c in info["checks"])]
    out = [f"Why not {rule_id} ({info['location']}): "
           + (f"it fired {plural(info['fired'], 'time')}." if info["fired"] else "it did not fire.")]
    if not info["candidates"]:
        out.append("  (it has no conditions to test)")
    for cand in info["candidates"]:
        verdict = "all conditions hold" if cand["matches"] else "fails"
        out.append(f"  {cand['fact']}: {verdict}")
        for c in cand["conditions"]:
            out.append(f"    [{'ok' if c['ok'] else 'NO'}] {c['condition']} (actual: {clean(c['actual'])})")
    return out


def check_conditions(conditions: dict, fact: dict) -> list:
    """(condition text, holds, actual value text) for every condition of one fact, in the rule's order.
    Each holds or not by the very test the network runs: compiled by compiler.condition_tests, its
    derived attributes added by facts.derive, evaluated by network.predicate (the Python twin's code)."""
    derived: dict = {}
    tests = condition_tests(conditions, "", derived)
    fact, = derive([fact], tuple(Derived(name, *spec) for spec, name in derived.items()))
    out = []
    for name, op, expr in tests:
        ok = predicate(expr)(fact)
        test = conditions[name]
        if name in ("code_in", "code_not_in"):
            inside = ok == (name == "code_in")
            label = f"list {test}" if isinstance(test, str) else "[" + ", ".join(test) + "]"
            out.append((f"{name} {label}", ok, f"{fact.get('code')} is {'in' if inside else 'not in'} it"))
            continue
        if op is None:
            text = f"{name} = {test}"
        elif op == "exists":
            text = f"{name} {'is given' if test[op] else 'is not given'}"
        else:
            text = f"{name} {op} {test[op]}"
        out.append((text, ok, fact.get(name, "(absent)")))
    return out
