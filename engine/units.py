"""Unit arithmetic: pure functions of minutes and thresholds, no rules and no I/O.

References are to shared/domain.md: §3 (CMS pooled "8-minute rule"), §4 (CPT per-code midpoint),
§4.3 and §7 (hour-based codes and add-on families).
"""
from __future__ import annotations

from dataclasses import dataclass
from operator import itemgetter


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


@dataclass(slots=True)
class Allocation:
    """The result of a unit method over the timed services, with the steps that explain it."""
    method: str
    total_minutes: int
    total_units: int
    units: dict             # key -> units
    full_units: dict        # key -> floor(minutes / unit)
    leftover: dict          # key -> minutes % unit
    remaining: int          # units shared out by leftover minutes
    extra: list             # keys that got a leftover unit, best first
    tie: tuple | None = None    # (tied keys, how many of them win, winners)


# A service in the pool is a (key, minutes, order) triple: key is a code, or an add-on family counted
# as one service; order is its position of first appearance in the session.
# Pooled services are ranked by (-leftover, -minutes, order, code, key), code being a family's primary
# code; the tie-break picks among minutes, order and code.
_TIE_POSITION = {"minutes": 1, "order": 2, "code": 3}
_rank_keys: dict = {}


def _rank_key(tie_break):
    """Most leftover minutes first, then the configured tie-break, then order of appearance and code, so
    that the ranking is total."""
    key = _rank_keys.get(tie_break)
    if key is None:
        key = _rank_keys[tie_break] = itemgetter(0, *[_TIE_POSITION[rule] for rule in tie_break], 2, 3, 4)
    return key


def pooled(services: list, unit_minutes: int = 15, first_unit_minutes: int = 8,
           tie_break=("minutes", "order", "code"), family=None) -> Allocation:
    """CMS total-time method (MCPM-5 §20.2, domain.md §3.3): units for the day = chart(total minutes);
    each service first gets its full units, the rest go one each to the largest leftover minutes.
    `family(key)`: the Family a key names, or None for a plain code (a family is compared by its primary)."""
    full, leftover, units = {}, {}, {}
    total, ranked = 0, []
    for key, minutes, order in services:
        whole, part = divmod(minutes, unit_minutes)
        full[key] = units[key] = whole
        leftover[key] = part
        total += minutes
        if part:
            fam = family(key) if family else None
            ranked.append((-part, -minutes, order, key if fam is None else fam.primary, key))
    total_units = chart(total, unit_minutes, first_unit_minutes)
    remaining = total_units - sum(full.values())
    if len(ranked) > 1 and remaining:
        ranked.sort(key=_rank_key(tuple(tie_break)))
    # remaining <= number of services with leftover minutes whenever first_unit_minutes <= unit_minutes
    extra = []
    for rank in ranked[:remaining]:
        units[rank[4]] += 1
        extra.append(rank[4])
    tie = None
    # a tie: the first service left out has as many leftover minutes as the last one served
    if 0 < remaining < len(ranked) and ranked[remaining][0] == ranked[remaining - 1][0]:
        cut = ranked[remaining][0]
        tied = [rank[4] for rank in ranked if rank[0] == cut]
        won = [key for key in tied if key in extra]
        tie = (tuple(tied), len(won), tuple(won))
    return Allocation("cms_8_minute", total, total_units, units, full, leftover, remaining, extra, tie)


def per_code(services: list, unit_minutes: int = 15, first_unit_minutes: int = 8) -> Allocation:
    """CPT midpoint method (domain.md §4.1): each code on its own minutes, nothing pooled."""
    full, leftover, units, extra = {}, {}, {}, []
    total = 0
    for key, minutes, _ in services:
        full[key], leftover[key] = divmod(minutes, unit_minutes)
        units[key] = chart(minutes, unit_minutes, first_unit_minutes)
        total += minutes
        if units[key] > full[key]:
            extra.append(key)
    return Allocation("midpoint_per_code", total, sum(units.values()), units, full, leftover, 0, extra)
