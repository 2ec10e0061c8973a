"""Who furnished which minutes: the assistant modifier (CQ/CO) of each billed unit, by the CY2022
per-unit method (shared domain.md §17.1, docs/domain.md §16). Pure functions of minutes and a payer's
`assistant_modifiers` settings (model.Assistants); no rules and no I/O.

A code's minutes come as (provider, minutes) pairs, provider PT | PTA | OT | OTA | SLP or None (not given:
the therapist's). Minutes furnished jointly are given as the therapist's (design.md §4).
"""
from __future__ import annotations

from typing import NamedTuple

ASSISTANTS = frozenset(("PTA", "OTA"))


class Unit(NamedTuple):
    """One billed unit of a code: its assistant modifier (or None), the minutes it stands for, the
    providers whose minutes make it up, why, and the setting key that decided it ("" for the method)."""
    modifier: str | None
    minutes: int
    providers: tuple
    why: str
    setting: str = ""


def by_provider(entries) -> list:
    """[(provider, minutes)] with each provider's minutes added, in order of first appearance. Every
    therapist entry of the code counts as one therapist's (no provider given: the therapist's), named by
    the first therapist named (PT, OT, SLP), else "therapist"."""
    out: dict = {}
    for provider, minutes in entries:
        key = role(provider, entries)
        out[key] = out.get(key, 0) + minutes
    return list(out.items())


def role(provider, entries) -> str:
    """How by_provider names the provider of an entry of `entries` (an assistant, or the therapist)."""
    if provider in ASSISTANTS:
        return provider
    return next((p for p, _ in entries if p and p not in ASSISTANTS), "therapist")


def plain(services) -> bool:
    """No entry names an assistant or documents a modifier (the common case: nothing to decide here)."""
    for service in services:
        if service.modifiers or service.provider in ASSISTANTS:
            return False
    return True


def has_assistant(entries) -> bool:
    return any(provider in ASSISTANTS for provider, _ in entries)


def _modifier(settings, provider) -> str | None:
    return dict(settings.modifiers).get(provider)


def timed(entries, units: int, settings, unit_minutes: int = 15, first_unit_minutes: int = 8) -> list:
    """The `units` units of a timed code, each with its assistant modifier (§17.1 steps 2-5):
    whole units per provider first (an assistant's carries the modifier, a therapist's does not), then
    the remaining units from the remaining minutes. Units past `units` (a limit took them) are dropped
    from the end."""
    providers = by_provider(entries)
    out = []
    for provider, minutes in providers:
        mod = _modifier(settings, provider) if provider in ASSISTANTS else None
        for _ in range(minutes // unit_minutes):
            out.append(Unit(mod, unit_minutes, (provider,),
                            f"{provider} {unit_minutes} min alone, a whole unit → {mod or 'no assistant modifier'}"))
    left = [(p, m % unit_minutes) for p, m in providers if m % unit_minutes]
    remaining = units - len(out)
    if remaining == 1:
        out.append(_last_unit(left, settings, first_unit_minutes))
    elif remaining >= 2:
        out += _two_units(left, settings, remaining)
    return out[:units]


def _split(left):
    """(therapist minutes, assistant minutes, the assistant with the most minutes) of remaining minutes."""
    therapist = sum(m for p, m in left if p not in ASSISTANTS)
    assistants = [(m, p) for p, m in left if p in ASSISTANTS]
    top = max(assistants, key=lambda a: a[0])[1] if assistants else None
    return therapist, sum(m for m, _ in assistants), top


def _last_unit(left, settings, first_unit_minutes) -> Unit:
    """One remaining unit made of every provider's remaining minutes (§17.1 steps 3-5)."""
    t, a, who = _split(left)
    mod = _modifier(settings, who) if who else None
    total = t + a
    providers = tuple(p for p, _ in left)
    shown = ", ".join(f"{'therapist' if p == 'therapist' else p} {m} min" for p, m in left)
    if a and t >= first_unit_minutes and a >= first_unit_minutes:
        choice = settings.both_ge_8_minutes
        return Unit(mod if choice == "assistant" else None, total, providers,
                    f"{shown}: both ≥ {first_unit_minutes} → {mod if choice == 'assistant' else 'no ' + mod} "
                    f"(both_ge_8_minutes: {choice})", "both_ge_8_minutes")
    if t >= first_unit_minutes:
        return Unit(None, total, providers, f"{shown}: therapist {t} min ≥ {first_unit_minutes} → "
                                            f"{'no ' + mod if mod else 'no assistant modifier'}")
    if a and 100 * a > settings.de_minimis_percent * total:
        return Unit(mod, total, providers, f"{shown}: therapist {t} min < {first_unit_minutes}, assistant {a} of "
                                           f"{total} min > {settings.de_minimis_percent}% → {mod}",
                    "de_minimis_percent")
    if a:
        return Unit(None, total, providers, f"{shown}: assistant {a} of {total} min ≤ "
                                            f"{settings.de_minimis_percent}% → no {mod}", "de_minimis_percent")
    return Unit(None, total, providers, f"{shown}: therapist only → no assistant modifier")


def _two_units(left, settings, remaining) -> list:
    """Two remaining units: one from each provider's remaining minutes, the larger first; when therapist
    and assistant each furnished 9-14 of them, the two_units_9_to_14 setting decides (§17.1 step 5)."""
    t, a, who = _split(left)
    mod = _modifier(settings, who) if who else None
    ranked = sorted(left, key=lambda pm: -pm[1])[:remaining]
    both = bool(a) and 9 <= t <= 14 and 9 <= a <= 14
    out = []
    for provider, minutes in ranked:
        if provider in ASSISTANTS or (both and settings.two_units_9_to_14 == "both_assistant"):
            m = mod if provider not in ASSISTANTS else _modifier(settings, provider)
        else:
            m = None
        setting = "two_units_9_to_14" if both else ""
        why = f"{provider} {minutes} remaining min → {m or 'no assistant modifier'}"
        if both:
            why += f" (therapist {t} and assistant {a} min, two_units_9_to_14: {settings.two_units_9_to_14})"
        out.append(Unit(m, minutes, (provider,), why, setting))
    return out


def untimed(entries, units: int, settings) -> list:
    """The units of an untimed (or block-timed) service: each carries the modifier when the assistant
    furnished more than the de minimis share of its minutes (§17.1 step 6); a service of 0 minutes,
    when only an assistant gave it."""
    providers = by_provider(entries)
    total = sum(m for _, m in providers)
    assistants = [(m, p) for p, m in providers if p in ASSISTANTS]
    if not assistants:
        return [Unit(None, total, tuple(p for p, _ in providers), "therapist only → no assistant modifier")] * units
    who = max(assistants, key=lambda a: a[0])[1]
    mod = _modifier(settings, who)
    a = sum(m for m, _ in assistants)
    shown = ", ".join(f"{p} {m} min" for p, m in providers)
    if total == 0:
        hit = len(assistants) == len(providers)
    else:
        hit = 100 * a > settings.de_minimis_percent * total
    why = (f"{shown}: assistant {a} of {total} min {'>' if hit else '<='} {settings.de_minimis_percent}% → "
           f"{mod if hit else 'no ' + str(mod)}")
    return [Unit(mod if hit else None, total, tuple(p for p, _ in providers), why, "de_minimis_percent")] * units


def documented(entries, units, timed_code: bool, unit_minutes: int = 15) -> list:
    """The modifier set (role, documented modifiers) of each of `units`: every unit goes to one modifier set
    of the entries (a provider's entries documenting the same modifiers), whose modifiers it carries
    (docs/domain.md §16). `entries` are (role, minutes, modifiers) per entry, role as by_provider names it.
    A timed code's whole unit of one provider goes to a set of that provider with 15 minutes left, in
    entry order; any other unit to the set of its providers with the most minutes left (a tie: the set with
    fewer documented modifiers, then the one entered first); the unit's minutes are then taken from that
    set first, then from the others with the most left. An untimed code's units all go to the set with
    the most minutes. So a modifier is never on a unit none of its minutes are in."""
    sets: dict = {}
    for role, minutes, modifiers in entries:
        key = (role, tuple(modifiers))
        sets[key] = sets.get(key, 0) + minutes
    left = dict(sets)
    rank = {key: (len(key[1]), n) for n, key in enumerate(sets)}

    def most(keys):
        return min(keys, key=lambda k: (-left[k], rank[k]))
    out = []
    for unit in units:
        keys = [k for k in sets if k[0] in unit.providers] or list(sets)
        if not timed_code:
            out.append(most(keys))
            continue
        whole = len(unit.providers) == 1 and unit.minutes == unit_minutes
        chosen = next((k for k in keys if left[k] >= unit_minutes), None) if whole else None
        chosen = chosen or most(keys)
        need = unit.minutes
        for k in [chosen] + sorted((k for k in keys if k != chosen), key=lambda k: (-left[k], rank[k])):
            took = min(need, left[k])
            left[k] -= took
            need -= took
        out.append(chosen)
    return out


def claim_order(modifiers, order: tuple) -> list:
    """Modifiers without repeats in claim order: those the payer's modifier_order lists, in its order, then
    the others in the order they came (docs/domain.md §16)."""
    if len(modifiers) < 2:
        return list(modifiers)
    seen = list(dict.fromkeys(modifiers))
    rank = {m: i for i, m in enumerate(order)}
    return sorted(seen, key=lambda m: (rank.get(m, len(rank)), seen.index(m)))
