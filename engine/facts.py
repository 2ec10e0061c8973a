"""Session → facts for the rule network, with everything a flat condition cannot compute done here:
duplicate codes merged, code-list membership flattened to `in_<list>: true`, add-on families and
"add-on without its primary" resolved (durable's `$not` is unreliable, notes §4 #8), and the session's
fields copied onto each line as `s_<field>` so that no rule needs a join.

Facts come out in canonical order (the session, then lines in order of first appearance), each with a
unique id, so the network's firings do not depend on how the input was written.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass

from .compiler import SESSION_ON_LINE, list_field
from .model import Payer, Session


@dataclass
class Line:
    """One code of the session after merging duplicates."""
    fact_id: str
    code: str
    minutes: int
    order: int
    group_size: int | None = None
    provider: str | None = None     # the one provider of all its entries, else None
    entries: tuple = ()             # Service of each entry, as entered: who furnished which minutes


def merge_services(session: Session) -> list:
    """One Line per code, minutes added, in order of first appearance (domain.md §3.4, §3.1 rule 8);
    each entry kept (its provider and documented modifiers decide the line's modifiers, billing.py)."""
    lines: dict = {}
    for service in session.services:
        line = lines.get(service.code)
        if line is None:
            order = len(lines)
            lines[service.code] = Line(_line_id(order), service.code, service.minutes, order,
                                       service.group_size, service.provider, (service,))
            continue
        line.minutes += service.minutes
        line.entries += (service,)
        if line.group_size is None:
            line.group_size = service.group_size
        if line.provider != service.provider:
            line.provider = None        # several providers: no single value to test
    return list(lines.values())


_LINE_IDS = [f"line-{n:04d}" for n in range(1, 201)]       # a session has at most 200 services


def _line_id(order: int) -> str:
    return _LINE_IDS[order] if order < len(_LINE_IDS) else f"line-{order + 1:04d}"


def build_facts(session: Session, lines: list, payer: Payer) -> list:
    codes_present = {line.code for line in lines}
    session_fact = {"t": "session", "id": "session", "line_count": len(lines)}
    if session.discipline:
        session_fact["discipline"] = session.discipline
    if session.date_of_service:
        session_fact["date_of_service"] = session.date_of_service
    facts = [session_fact]
    on_line = {SESSION_ON_LINE + k: v for k, v in session_fact.items() if k not in ("t", "id")}
    known = payer.known_codes
    for line in lines:
        fact = {"t": "line", "id": line.fact_id, "code": line.code, "minutes": line.minutes,
                "known": line.code in known, **on_line}
        if line.group_size is not None:
            fact["group_size"] = line.group_size
        if line.provider is not None:
            fact["provider"] = line.provider
        for name in payer.code_lists.get(line.code, ()):
            fact[list_field(name)] = True
        family, role = payer.family_of(line.code)
        if family is not None:
            fact["family"] = family.id
            fact["family_role"] = role
            fact["has_primary"] = family.primary in codes_present
        facts.append(fact)
    return facts


_DERIVE = {"in": lambda value, values: value in values, "lt": operator.lt, "lte": operator.le,
           "gt": operator.gt, "gte": operator.ge}


def derive(facts: list, derived: tuple) -> list:
    """The facts with the attributes of compiler.Derived tests added: `name: true` where the test holds
    (compared as Python strings, not as durable's escaped text). Each follows from one field of the fact."""
    if not derived:
        return facts
    out = []
    for fact in facts:
        flags = {d.name: True for d in derived if d.field in fact and _DERIVE[d.op](fact[d.field], d.value)}
        out.append({**fact, **flags} if flags else fact)
    return out
