"""Unit arithmetic: pure functions of minutes and thresholds, no rules and no I/O.

References are to shared/domain.md: §3 (CMS pooled "8-minute rule"), §4 (CPT per-code midpoint),
§4.3 and §7 (hour-based codes and add-on families).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from operator import itemgetter
from typing import NamedTuple


def chart(minutes: int, unit_minutes: int = 15, first_unit_minutes: int = 8) -> int:
    """Units for `minutes` of timed service: the first unit at `first_unit_minutes`, one more for every
    further `unit_minutes`. With 15/8 this is the CMS chart: 8-22 = 1, 23-37 = 2, 38-52 = 3, ... (§3.1)."""
    if minutes < first_unit_minutes:
        return 0
    return 1 + (minutes - first_unit_minutes) // unit_minutes


def blocks(minutes: int, first_minutes: int, first_min_minutes: int, next_minutes: int, next_min_minutes: int) -> int:
    """Units for codes timed in blocks ("initial 2 hours + each additional hour"), CPT midpoint style:
    the first block counts from `first_min_minutes`; past the first block, each whole `next_minutes`
    counts and a last part counts once it reaches `next_min_minutes` (§4.3, §15)."""
    if minutes < first_min_minutes:
        return 0
    extra = max(0, minutes - first_minutes)
    whole, part = divmod(extra, next_minutes)
    return 1 + whole + (1 if part >= next_min_minutes else 0)


def split_family(units: int) -> tuple:
    """A primary/add-on family's units: primary x1, add-on x(n-1) (§7)."""
    return (1, units - 1) if units > 0 else (0, 0)


class Service(NamedTuple):
    """One service in the pool: a code, or an add-on family counted as one service."""
    key: str
    minutes: int
    order: int              # position of first appearance in the session


@dataclass(slots=True)
class Allocation:
    """The result of a unit method over the timed services, with the steps that explain it."""
    method: str
    total_minutes: int = 0
    total_units: int = 0
    units: dict = field(default_factory=dict)           # key -> units
    full_units: dict = field(default_factory=dict)      # key -> floor(minutes / unit)
    leftover: dict = field(default_factory=dict)        # key -> minutes % unit
    remaining: int = 0                                  # units shared out by leftover minutes
    extra: list = field(default_factory=list)           # keys that got a leftover unit, best first
    tie: tuple | None = None                            # (tied keys, how many of them win, winners)


_TIE_POSITION = {"minutes": 0, "order": 1, "code": 2}     # in (-minutes, order, code)
_tie_keys: dict = {}


def _tie_key(tie_break):
    """(-minutes, order, code) -> the configured tie-break, then order of appearance and code, so
    that the ranking is total."""
    key = _tie_keys.get(tie_break)
    if key is None:
        key = _tie_keys[tie_break] = itemgetter(*[_TIE_POSITION[rule] for rule in tie_break], 1, 2)
    return key


def pooled(services: list, unit_minutes: int = 15, first_unit_minutes: int = 8,
           tie_break=("minutes", "order", "code")) -> Allocation:
    """CMS total-time method (MCPM-5 §20.2, domain.md §3.3): units for the day = chart(total minutes);
    each service first gets its full units, the rest go one each to the largest leftover minutes."""
    out = Allocation("cms_8_minute")
    full, leftover, units = out.full_units, out.leftover, out.units
    total, ranked = 0, []
    for s in services:
        whole, part = divmod(s.minutes, unit_minutes)
        full[s.key] = units[s.key] = whole
        leftover[s.key] = part
        total += s.minutes
        if part:
            ranked.append(s)
    out.total_minutes = total
    out.total_units = chart(total, unit_minutes, first_unit_minutes)
    out.remaining = out.total_units - sum(full.values())
    if len(ranked) > 1 and out.remaining:
        tie_key = _tie_key(tuple(tie_break))
        # most leftover minutes first, then the tie-break
        ranked.sort(key=lambda s: (-leftover[s.key],) + tie_key((-s.minutes, s.order, s.key)))
    # remaining <= number of services with leftover minutes whenever first_unit_minutes <= unit_minutes
    winners = ranked[:out.remaining]
    for s in winners:
        units[s.key] += 1
        out.extra.append(s.key)
    if 0 < out.remaining < len(ranked):
        cut = out.leftover[winners[-1].key]
        tied = [s.key for s in ranked if out.leftover[s.key] == cut]
        if any(key not in out.extra for key in tied):
            won = [key for key in tied if key in out.extra]
            out.tie = (tuple(tied), len(won), tuple(won))
    return out


def per_code(services: list, unit_minutes: int = 15, first_unit_minutes: int = 8) -> Allocation:
    """CPT midpoint method (domain.md §4.1): each code on its own minutes, nothing pooled."""
    out = Allocation("midpoint_per_code")
    for s in services:
        out.full_units[s.key], out.leftover[s.key] = divmod(s.minutes, unit_minutes)
        out.units[s.key] = chart(s.minutes, unit_minutes, first_unit_minutes)
        if out.units[s.key] > out.full_units[s.key]:
            out.extra.append(s.key)
    out.total_minutes = sum(s.minutes for s in services)
    out.total_units = sum(out.units.values())
    return out
