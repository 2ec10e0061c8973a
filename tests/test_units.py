"""Unit arithmetic of engine/units.py, checked against shared/domain.md.

Every expected value comes from domain.md (section named next to it) or is worked by hand in a comment.
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from engine.units import blocks, chart, per_code, pooled, split_family


def services(*pairs):
    """services(("97112", 24), ("97110", 23)) -> [(key, minutes, order)], `order` = position entered."""
    return [(code, minutes, i) for i, (code, minutes) in enumerate(pairs)]


# ---------------------------------------------------------------------------------------------------
# chart(): the CMS chart, domain.md §3.1 rule 2
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("minutes, units", [
    (0, 0),
    (7, 0),      # 0-7 = 0 units
    (8, 1),      # 8-22 = 1
    (22, 1),
    (23, 2),     # 23-37 = 2
    (37, 2),
    (38, 3),     # 38-52 = 3
    (52, 3),
    (53, 4),     # 53-67 = 4 (not "53-57", domain.md §13)
    (67, 4),
    (68, 5),     # 68-82 = 5
    (112, 7),    # 98-112 = 7
    (113, 8),    # 113-127 = 8
    (127, 8),
    (128, 9),    # "pattern remains the same": 128-142 = 9
    (142, 9),
    (143, 10),   # 143-157 = 10
])
def test_chart_boundaries(minutes, units):
    assert chart(minutes) == units


def test_chart_is_zero_below_eight_minutes():
    # domain.md §3.1 rule 1: a timed service under 8 minutes is not billed
    for minutes in range(0, 8):
        assert chart(minutes) == 0, minutes


def test_chart_closed_form():
    # domain.md §3.1: units = floor((minutes + 7) / 15) for minutes >= 8
    for minutes in range(8, 24 * 60 + 1):
        assert chart(minutes) == (minutes + 7) // 15, minutes


@pytest.mark.parametrize("minutes, units", [
    (14, 0),     # under the 15 minutes that earn the first unit
    (15, 1),     # first unit at 15
    (29, 1),     # 15 + 14: the second unit needs another full 15
    (30, 2),     # 15 + 15
])
def test_chart_full_fifteen_minute_threshold(minutes, units):
    # domain.md §4.2: some payers want a full 15 minutes per unit
    assert chart(minutes, unit_minutes=15, first_unit_minutes=15) == units


# ---------------------------------------------------------------------------------------------------
# blocks(): 97545 (first 2 h, from 61 min) + 97546 (each further hour, from 31 min), domain.md §4.3, §15
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("minutes, units", [
    (0, 0),
    (60, 0),     # not past the midpoint of the 2-hour block
    (61, 1),     # past the midpoint: 97545 x1
    (120, 1),    # exactly the 2-hour block
    (150, 1),    # 30 min beyond: does not pass the 30-min midpoint of an hour
    (151, 2),    # 31 min beyond: an hour is attained at 31 min
    (180, 2),    # one whole extra hour
    (210, 2),    # 3.5 h: 120 + 60 + 30 -> 97545 x1 + 97546 x1 (domain.md §4.3 worked example)
    (211, 3),    # 120 + 60 + 31 -> 97545 x1 + 97546 x2
])
def test_blocks_work_hardening(minutes, units):
    assert blocks(minutes, first_minutes=120, first_min_minutes=61, next_minutes=60, next_min_minutes=31) == units


# ---------------------------------------------------------------------------------------------------
# split_family(): primary x1, add-on x(n-1), domain.md §7
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("units, split", [
    (0, (0, 0)),     # 7 min of 97129 -> nothing
    (1, (1, 0)),     # 20 min -> 97129 x1 only
    (3, (1, 2)),     # 40 min -> 97129 x1 + 97130 x2
    (5, (1, 4)),
])
def test_split_family(units, split):
    assert split_family(units) == split


# ---------------------------------------------------------------------------------------------------
# pooled(): CMS total-time method, domain.md §3.2 examples and §3.3 algorithm
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pairs, expected", [
    # Example 1: 24+23 = 47 min -> 3 units; full units 1+1, leftovers 9 vs 8 -> 97112 gets the third
    ([("97112", 24), ("97110", 23)], {"97112": 2, "97110": 1}),
    # Example 3: 33+7 = 40 -> 3; full 2+0, leftovers 3 vs 7 -> 97140
    ([("97110", 33), ("97140", 7)], {"97110": 2, "97140": 1}),
    # Example 4: 18+13+10+8 = 49 -> 3; full 1+0+0+0, 2 left, leftovers 3/13/10/8 -> 97140 and 97116
    ([("97110", 18), ("97140", 13), ("97116", 10), ("97035", 8)],
     {"97110": 1, "97140": 1, "97116": 1, "97035": 0}),
    # Example B: 60 min -> 4
    ([("97530", 60)], {"97530": 4}),
    # §3.3 step 6: 22+10 = 32 -> 2; full 1+0, leftovers 7 vs 10 -> 97140 (not 97110 x2)
    ([("97110", 22), ("97140", 10)], {"97110": 1, "97140": 1}),
])
def test_pooled_published_examples(pairs, expected):
    result = pooled(services(*pairs))
    assert result.units == expected
    assert result.tie is None       # no equal leftovers at the cut-off in these cases


def test_pooled_example_2_tie():
    # Example 2: 20+20 = 40 -> 3; full 1+1, leftovers 5 and 5: tie. Minutes equal (20/20),
    # so order entered decides: 97112 (first) x2, 97110 x1
    result = pooled(services(("97112", 20), ("97110", 20)))
    assert result.total_minutes == 40
    assert result.total_units == 3
    assert result.units == {"97112": 2, "97110": 1}
    tied, wins, winners = result.tie
    assert set(tied) == {"97112", "97110"}
    assert wins == 1
    assert winners == ("97112",)


def test_pooled_example_5_tie():
    # Example 5: 7+7+7 = 21 -> 1 unit; no full units, leftovers 7/7/7: three-way tie.
    # Minutes equal, so order entered decides: 97112 (first) x1
    result = pooled(services(("97112", 7), ("97110", 7), ("97140", 7)))
    assert result.total_minutes == 21
    assert result.total_units == 1
    assert result.units == {"97112": 1, "97110": 0, "97140": 0}
    tied, wins, winners = result.tie
    assert set(tied) == {"97112", "97110", "97140"}
    assert wins == 1
    assert winners == ("97112",)


def test_pooled_example_3_steps():
    # Example 3 in the terms of §3.3: T = 40, N = 3, full units 2 and 0 (F = 2), leftovers 3 and 7,
    # N - F = 1 unit goes to the larger leftover
    result = pooled(services(("97110", 33), ("97140", 7)))
    assert result.total_minutes == 40
    assert result.total_units == 3
    assert result.full_units == {"97110": 2, "97140": 0}
    assert result.leftover == {"97110": 3, "97140": 7}
    assert result.remaining == 1
    assert result.extra == ["97140"]


def test_pooled_under_eight_minutes_total():
    # 4+3 = 7 min -> chart(7) = 0: nothing billed (§3.1 rule 1)
    result = pooled(services(("97110", 4), ("97140", 3)))
    assert result.total_units == 0
    assert result.units == {"97110": 0, "97140": 0}


def test_pooled_small_pieces_go_to_the_larger():
    # §3.1 rule 5: 4+6 = 10 -> 1 unit, to the one with more minutes (97140)
    result = pooled(services(("97110", 4), ("97140", 6)))
    assert result.units == {"97110": 0, "97140": 1}


def test_pooled_empty():
    result = pooled([])
    assert result.total_minutes == 0
    assert result.total_units == 0
    assert result.units == {}


# Tie-break options. Three services with equal leftovers (5 each):
#   97140 20 min (entered 1st), 97112 35 min (2nd), 97110 5 min (3rd)
#   total 60 -> 4 units; full units 1+2+0 = 3; 1 unit left for a three-way tie at 5 leftover minutes.
#   "minutes" first -> 97112 (35 is the largest total); "order" first -> 97140 (entered first);
#   "code" first -> 97110 (smallest code).
TIE_PAIRS = [("97140", 20), ("97112", 35), ("97110", 5)]


@pytest.mark.parametrize("tie_break, winner", [
    (("minutes", "order", "code"), "97112"),
    (("order", "minutes", "code"), "97140"),
    (("code", "minutes", "order"), "97110"),
])
def test_pooled_tie_break_options(tie_break, winner):
    result = pooled(services(*TIE_PAIRS), tie_break=tie_break)
    full = {"97140": 1, "97112": 2, "97110": 0}
    expected = {code: full[code] + (1 if code == winner else 0) for code in full}
    assert result.total_units == 4
    assert result.units == expected
    tied, wins, winners = result.tie
    assert set(tied) == {"97140", "97112", "97110"}
    assert (wins, winners) == (1, (winner,))


@pytest.mark.parametrize("pairs", [
    [("97112", 24), ("97110", 23)],
    [("97110", 18), ("97140", 13), ("97116", 10), ("97035", 8)],
    [("97110", 7), ("97140", 7), ("97112", 7), ("97116", 7), ("97530", 7)],   # 35 -> 2
    [("97110", 14), ("97140", 14), ("97112", 14)],                            # 42 -> 3
    [("97110", 59), ("97140", 1)],                                            # 60 -> 4
])
def test_pooled_gives_out_exactly_the_chart_total(pairs):
    # §3.1 rules 3 and 6: the day's units = chart(total minutes), never more
    total = sum(m for _, m in pairs)
    result = pooled(services(*pairs))
    assert result.total_units == (total + 7) // 15
    assert sum(result.units.values()) == (total + 7) // 15


def test_pooled_floor_per_code():
    # §3.1 rule 4: 15+ min of a code earns at least one unit, 30+ at least two.
    # 97110 30 + 97140 15 + 97112 2 = 47 -> 3 units: full units 2+1+0 = 3, nothing left for 97112
    result = pooled(services(("97110", 30), ("97140", 15), ("97112", 2)))
    assert result.units == {"97110": 2, "97140": 1, "97112": 0}


@settings(max_examples=400, deadline=None)
@given(st.lists(st.integers(0, 60), max_size=6))
def test_pooled_tie_is_reported_exactly_when_a_leftover_unit_could_have_gone_elsewhere(minutes):
    # §3.3 step 4 and Examples 2 and 5: a tie is when a service left without a leftover unit has as many
    # leftover minutes as the one that got the last unit; tied = every service with those leftover minutes.
    pairs = [(f"9711{i}", m) for i, m in enumerate(minutes)]
    result = pooled(services(*pairs))
    leftover = {code: m % 15 for code, m in pairs}
    served = result.extra
    assert len(served) == result.remaining
    left_out = [code for code, m in leftover.items() if m and code not in served]
    cut = min((leftover[code] for code in served), default=None)
    if cut is not None and any(leftover[code] == cut for code in left_out):
        tied, wins, winners = result.tie
        assert set(tied) == {code for code, m in leftover.items() if m == cut}
        assert set(winners) == {code for code in served if leftover[code] == cut} and wins == len(winners)
    else:
        assert result.tie is None


# ---------------------------------------------------------------------------------------------------
# per_code(): CPT midpoint per code, domain.md §4.1 (the examples' per-code totals)
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pairs, expected, total", [
    # Example 1: 24 -> 2, 23 -> 2 = 4 (vs 3 pooled)
    ([("97112", 24), ("97110", 23)], {"97112": 2, "97110": 2}, 4),
    # Example 2: 20 -> 1, 20 -> 1 = 2
    ([("97112", 20), ("97110", 20)], {"97112": 1, "97110": 1}, 2),
    # Example 3: 33 -> 2, 7 -> 0 = 2
    ([("97110", 33), ("97140", 7)], {"97110": 2, "97140": 0}, 2),
    # Example 4: 18, 13, 10, 8 -> 1 each = 4
    ([("97110", 18), ("97140", 13), ("97116", 10), ("97035", 8)],
     {"97110": 1, "97140": 1, "97116": 1, "97035": 1}, 4),
    # Example 5: 7, 7, 7 -> 0
    ([("97112", 7), ("97110", 7), ("97140", 7)], {"97112": 0, "97110": 0, "97140": 0}, 0),
    # 10 + 10 + 10 -> 3 (Gawenda discussion)
    ([("97110", 10), ("97140", 10), ("97112", 10)], {"97110": 1, "97140": 1, "97112": 1}, 3),
])
def test_per_code_examples(pairs, expected, total):
    result = per_code(services(*pairs))
    assert result.units == expected
    assert result.total_units == total
