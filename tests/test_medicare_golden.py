"""End-to-end Medicare billing through the `bill` fixture (both engines), checked against shared/domain.md.

Every expected value comes from domain.md (section named next to it) or is worked by hand in a comment.
"""
from __future__ import annotations

import re

import pytest

from conftest import units_of

# domain.md §5.1: 15-minute timed codes, and the 97129/97130 family that joins the same pool (§3.4)
TIMED_POOL_CODES = {"97032", "97033", "97034", "97035", "97036", "97110", "97112", "97113", "97116", "97124",
                    "97140", "97530", "97533", "97535", "97537", "97542", "97750", "97755", "97760", "97761",
                    "97763", "97129", "97130"}
# domain.md §7: primary -> add-on
ADDONS = {"97129": "97130", "97545": "97546"}


def cms_chart(minutes: int) -> int:
    """domain.md §3.1: 0 under 8 minutes, else floor((minutes + 7) / 15)."""
    return (minutes + 7) // 15 if minutes >= 8 else 0


def pt(*pairs, discipline="PT"):
    """pt(("97110", 33), ...) -> a session dict."""
    session = {"services": [{"code": code, "minutes": minutes} for code, minutes in pairs]}
    if discipline:
        session["discipline"] = discipline
    return session


def check_invariants(session: dict, result: dict) -> None:
    """Invariants that hold for every Medicare result."""
    assert "error" not in result, result
    lines = result["lines"]
    # §3.1 rules 3 and 6: the day's timed units are chart(total timed minutes) ...
    assert result["total_timed_units"] == cms_chart(result["total_timed_minutes"])
    # ... and every one of them is given to a pooled line (§3.3 steps 2-3)
    assert sum(l["units"] for l in lines if l["code"] in TIMED_POOL_CODES) == result["total_timed_units"]
    assert result["total_units"] == sum(l["units"] for l in lines)
    # billed lines hold units >= 1, one line per code (§3.1 rule 8)
    assert all(l["units"] >= 1 for l in lines)
    codes = [l["code"] for l in lines]
    assert len(codes) == len(set(codes))
    # lines in order of first appearance; a generated add-on line follows its primary
    order = []
    for service in session["services"]:
        code = str(service["code"])
        if code not in order:
            order.append(code)
    for primary, addon in ADDONS.items():
        if primary in order and addon not in order:
            order.insert(order.index(primary) + 1, addon)
    assert codes == [c for c in order if c in codes]


def warnings_from(result: dict, rule: str) -> list:
    return [w for w in result["warnings"] if w["rule"] == rule]


def unbilled_codes(result: dict) -> list:
    return [u["code"] for u in result["unbilled"]]


# ---------------------------------------------------------------------------------------------------
# Golden table: session -> {code: units}
# ---------------------------------------------------------------------------------------------------

GOLDEN = [
    # CMS §20.2 examples (domain.md §3.2)
    pytest.param(pt(("97112", 24), ("97110", 23)), {"97112": 2, "97110": 1},
                 id="cms-example-1"),             # 47 -> 3; full 1+1, leftovers 9 vs 8 -> 97112
    pytest.param(pt(("97110", 33), ("97140", 7)), {"97110": 2, "97140": 1},
                 id="cms-example-3"),             # 40 -> 3; full 2+0, leftovers 3 vs 7 -> 97140
    pytest.param(pt(("97110", 18), ("97140", 13), ("97116", 10), ("97035", 8)),
                 {"97110": 1, "97140": 1, "97116": 1},
                 id="cms-example-4"),             # 49 -> 3; full 1, leftovers 3/13/10/8 -> 97140, 97116
    pytest.param(pt(("97530", 60)), {"97530": 4}, id="cms-example-B"),      # 53-67 = 4
    # §3.3 step 6: 22+10 = 32 -> 2; full 1+0, leftovers 7 vs 10 -> 97140
    pytest.param(pt(("97110", 22), ("97140", 10)), {"97110": 1, "97140": 1}, id="discriminating-22-10"),
    # several codes each under 8 minutes (§3.1 rule 5)
    pytest.param(pt(("97110", 5), ("97140", 5)), {"97110": 1},
                 id="5+5"),                        # 10 -> 1; tie 5/5, minutes equal -> first entered
    pytest.param(pt(("97110", 4), ("97140", 6)), {"97140": 1},
                 id="4+6"),                        # 10 -> 1; to the one with more minutes
    pytest.param(pt(("97116", 7), ("97530", 7), ("97535", 7)), {"97116": 1},
                 id="7+7+7"),                      # 21 -> 1; three-way tie -> first entered
    pytest.param(pt(("97110", 4), ("97140", 3)), {}, id="4+3"),              # 7 -> 0
    # eval + timed: eval 1 unit, its minutes out of the pool (§2, §8): 20 -> 1
    pytest.param(pt(("97162", 30), ("97110", 20)), {"97162": 1, "97110": 1}, id="eval+timed"),
    # 97129 family (§7)
    pytest.param(pt(("97129", 40)), {"97129": 1, "97130": 2}, id="97129-40"),   # 40 -> 3 = 1 + 2
    pytest.param(pt(("97129", 20)), {"97129": 1}, id="97129-20"),               # 20 -> 1 (20 < 23)
    pytest.param(pt(("97129", 7)), {}, id="97129-7"),                           # 7 -> 0
    pytest.param(pt(("97129", 10), ("97130", 30)), {"97129": 1, "97130": 2},
                 id="97129-10+97130-30"),          # family 40 -> 3 = 1 + 2
    # family in the pool: 20 + 20 = 40 -> 3; full 1+1; leftovers 5 vs 5 tie; minutes 20 vs 20 equal;
    # order entered decides
    pytest.param(pt(("97129", 20), ("97110", 20)), {"97129": 1, "97130": 1, "97110": 1},
                 id="family-first-wins-tie"),      # family 2 units -> 97129 x1 + 97130 x1; 97110 x1
    pytest.param(pt(("97110", 20), ("97129", 20)), {"97110": 2, "97129": 1},
                 id="family-second-loses-tie"),    # 97110 x2; family 1 unit -> 97129 x1 only
    # family wins by leftover: 97129 25 + 97110 16 = 41 -> 3; full 1+1, leftovers 10 vs 1 -> family
    pytest.param(pt(("97110", 16), ("97129", 25)), {"97110": 1, "97129": 1, "97130": 1},
                 id="family-larger-leftover"),
    # 97545/97546 (§4.3): hour blocks, not in the 15-minute pool
    pytest.param(pt(("97545", 210)), {"97545": 1, "97546": 1}, id="97545-210"),   # 120 + 60 + 30
    pytest.param(pt(("97545", 120), ("97546", 91)), {"97545": 1, "97546": 2},
                 id="97545-120+97546-91"),         # 211 = 120 + 60 + 31 -> 1 + 2
    # duplicate lines merged (§3.4): 15 + 8 = 23 -> 2
    pytest.param(pt(("97110", 15), ("97110", 8)), {"97110": 2}, id="duplicate-merged"),
    # untimed: 1 unit whatever the minutes (§2)
    pytest.param(pt(("92507", 5), discipline="SLP"), {"92507": 1}, id="untimed-92507-5"),
    # untimed + timed: 97012 is 1 unit, its 30 min stay out of the pool; 97140 10 -> 1
    pytest.param(pt(("97012", 30), ("97140", 10)), {"97012": 1, "97140": 1}, id="untimed+timed"),
]


@pytest.mark.parametrize("session, expected", GOLDEN)
def test_golden(bill, session, expected):
    result = bill(session)
    assert units_of(result) == expected
    check_invariants(session, result)


# every chart row boundary with one timed code (domain.md §3.1 rule 2)
@pytest.mark.parametrize("minutes, units", [
    (0, 0), (7, 0), (8, 1), (22, 1), (23, 2), (37, 2), (38, 3), (52, 3), (53, 4), (67, 4), (68, 5),
    (112, 7), (113, 8), (127, 8), (128, 9), (142, 9), (143, 10),
])
def test_chart_boundary_single_code(bill, minutes, units):
    session = pt(("97110", minutes))
    result = bill(session)
    assert units_of(result) == ({"97110": units} if units else {})
    assert result["total_timed_minutes"] == minutes
    assert result["total_timed_units"] == units
    if not units:
        assert unbilled_codes(result) == ["97110"]
    check_invariants(session, result)


# ---------------------------------------------------------------------------------------------------
# Ties: CMS Examples 2 and 5 (domain.md §3.2, §3.3 step 5)
# tie-break: larger total minutes, then order entered, then code
# ---------------------------------------------------------------------------------------------------

def tie_warnings(result: dict) -> list:
    return [w for w in result["warnings"] if w["severity"] == "info"]


def test_cms_example_2_tie(bill):
    # 20+20 = 40 -> 3 units; full 1+1, leftovers 5 and 5 tie; minutes equal -> order: 97112 entered first
    session = pt(("97112", 20), ("97110", 20))
    result = bill(session)
    assert result["total_timed_units"] == 3
    assert result["total_units"] == 3
    assert units_of(result) == {"97112": 2, "97110": 1}
    infos = tie_warnings(result)
    assert len(infos) == 1
    assert "97112" in infos[0]["message"] and "97110" in infos[0]["message"]
    check_invariants(session, result)


def test_cms_example_2_tie_follows_entry_order(bill):
    # the same session entered the other way round: 97110 first, so 97110 x2 (never 3 units on one code)
    session = pt(("97110", 20), ("97112", 20))
    result = bill(session)
    assert units_of(result) == {"97110": 2, "97112": 1}
    check_invariants(session, result)


def test_cms_example_2_tie_larger_minutes_first(bill):
    # tie on leftovers but not on minutes: 97110 35 + 97112 20 = 55 -> 4; full 2+1, leftovers 5 and 5;
    # 97112 entered first but 97110 has more total minutes -> 97110 gets the last unit
    session = pt(("97112", 20), ("97110", 35))
    result = bill(session)
    assert units_of(result) == {"97112": 1, "97110": 3}
    check_invariants(session, result)


def test_cms_example_5_tie(bill):
    # 7+7+7 = 21 -> 1 unit; leftovers 7/7/7 tie; minutes equal -> order: 97112 entered first
    session = pt(("97112", 7), ("97110", 7), ("97140", 7))
    result = bill(session)
    assert result["total_timed_units"] == 1
    assert result["total_units"] == 1
    assert units_of(result) == {"97112": 1}
    assert set(unbilled_codes(result)) == {"97110", "97140"}
    infos = tie_warnings(result)
    assert len(infos) == 1
    for code in ("97112", "97110", "97140"):
        assert code in infos[0]["message"]
    check_invariants(session, result)


def test_no_tie_warning_without_a_tie(bill):
    # Example 1: leftovers 9 vs 8, no tie -> no info warning
    result = bill(pt(("97112", 24), ("97110", 23)))
    assert tie_warnings(result) == []


def test_small_pieces_4_plus_3_unbilled(bill):
    # 4+3 = 7 min -> 0 units; both lines reported unbilled
    result = bill(pt(("97110", 4), ("97140", 3)))
    assert result["lines"] == []
    assert unbilled_codes(result) == ["97110", "97140"]
    assert result["total_timed_minutes"] == 7
    assert result["total_timed_units"] == 0


# ---------------------------------------------------------------------------------------------------
# Evaluations, group therapy (domain.md §6, §8)
# ---------------------------------------------------------------------------------------------------

def test_eval_minutes_stay_out_of_pool(bill):
    # 97162 30 min: 1 unit; 97110 20 -> 1. If the eval's 30 min were pooled, 50 -> 3 units.
    result = bill(pt(("97162", 30), ("97110", 20)))
    assert units_of(result) == {"97162": 1, "97110": 1}
    assert result["total_timed_minutes"] == 20
    assert result["total_timed_units"] == 1


def test_group_plus_timed(bill):
    # 97150 group (size 3): 1 unit, its 45 min outside the pool; 97110 25 -> 2
    session = {"discipline": "PT", "services": [{"code": "97150", "minutes": 45, "group_size": 3},
                                                {"code": "97110", "minutes": 25}]}
    result = bill(session)
    assert units_of(result) == {"97150": 1, "97110": 2}
    assert result["total_timed_minutes"] == 25
    assert warnings_from(result, "group-size") == []
    assert warnings_from(result, "group-size-missing") == []
    check_invariants(session, result)


def test_group_size_one_is_not_group_therapy(bill):
    # group_size < 2 -> error, not billed (§6 engine checks); the timed line is still billed (20 -> 1)
    session = {"discipline": "PT", "services": [{"code": "97150", "minutes": 30, "group_size": 1},
                                                {"code": "97110", "minutes": 20}]}
    result = bill(session)
    assert units_of(result) == {"97110": 1}
    assert "97150" in unbilled_codes(result)
    found = warnings_from(result, "group-size")
    assert len(found) == 1
    assert found[0]["severity"] == "error"
    check_invariants(session, result)


def test_group_without_size_is_billed_with_warning(bill):
    session = {"discipline": "PT", "services": [{"code": "97150", "minutes": 30}]}
    result = bill(session)
    assert units_of(result) == {"97150": 1}
    found = warnings_from(result, "group-size-missing")
    assert len(found) == 1
    assert found[0]["severity"] == "warning"
    check_invariants(session, result)


# ---------------------------------------------------------------------------------------------------
# Add-on families (domain.md §4.3, §7)
# ---------------------------------------------------------------------------------------------------

def test_97130_without_primary(bill):
    # an add-on without its primary -> error, not billed (§7)
    result = bill(pt(("97130", 30)))
    assert result["lines"] == []
    assert unbilled_codes(result) == ["97130"]
    found = warnings_from(result, "addon-without-primary")
    assert len(found) == 1
    assert found[0]["severity"] == "error"
    assert result["total_timed_units"] == 0


def test_97546_without_primary(bill):
    result = bill(pt(("97546", 90)))
    assert result["lines"] == []
    assert unbilled_codes(result) == ["97546"]
    found = warnings_from(result, "addon-without-primary")
    assert len(found) == 1
    assert found[0]["severity"] == "error"


def test_addon_without_primary_leaves_other_lines(bill):
    # 97130 held; 97110 20 alone -> 1 unit (97130's 30 min are not counted: 50 would give 3)
    session = pt(("97110", 20), ("97130", 30))
    result = bill(session)
    assert units_of(result) == {"97110": 1}
    assert warnings_from(result, "addon-without-primary")
    check_invariants(session, result)


def test_family_tie_names_both_services(bill):
    # 97129 20 + 97110 20: leftovers 5 vs 5, tie reported as info naming both
    result = bill(pt(("97129", 20), ("97110", 20)))
    infos = tie_warnings(result)
    assert len(infos) == 1
    assert "97129" in infos[0]["message"] and "97110" in infos[0]["message"]


def test_work_hardening_restricted_warning(bill):
    # 97545 210 min -> 97545 x1 + 97546 x1 (§4.3); Medicare status R -> warning (§4.3, §12)
    session = pt(("97545", 210))
    result = bill(session)
    assert units_of(result) == {"97545": 1, "97546": 1}
    assert warnings_from(result, "work-hardening-restricted")
    assert all(w["severity"] == "warning" for w in warnings_from(result, "work-hardening-restricted"))
    # hour codes are not 15-minute codes: nothing enters the timed pool (§3.4)
    assert result["total_timed_minutes"] == 0
    check_invariants(session, result)


@pytest.mark.parametrize("minutes, expected", [
    (60, {}),                                   # not past the midpoint of the 2-hour block
    (61, {"97545": 1}),
    (150, {"97545": 1}),                        # 120 + 30: 30 does not pass the hour's midpoint
    (151, {"97545": 1, "97546": 1}),            # 120 + 31
    (211, {"97545": 1, "97546": 2}),            # 120 + 60 + 31
])
def test_work_hardening_hours(bill, minutes, expected):
    session = pt(("97545", minutes))
    result = bill(session)
    assert units_of(result) == expected
    check_invariants(session, result)


# ---------------------------------------------------------------------------------------------------
# Unlisted, unknown codes, modifiers
# ---------------------------------------------------------------------------------------------------

def test_unlisted_97139(bill):
    # §5.3: default 1 unit + a warning that the unlisted code needs a description
    session = pt(("97139", 30))
    result = bill(session)
    assert units_of(result) == {"97139": 1}
    found = [w for w in result["warnings"] if "97139" in w["codes"]]
    assert len(found) == 1
    assert "description" in found[0]["message"]
    check_invariants(session, result)


def test_duplicate_code_is_one_line(bill):
    # §3.4: same code twice -> minutes added, one line: 15 + 8 = 23 -> 2 units
    result = bill(pt(("97110", 15), ("97110", 8)))
    assert len(result["lines"]) == 1
    line = result["lines"][0]
    assert (line["code"], line["minutes"], line["units"]) == ("97110", 23, 2)


@pytest.mark.parametrize("discipline, modifier", [("PT", "GP"), ("OT", "GO"), ("SLP", "GN")])
def test_discipline_modifier(bill, discipline, modifier):
    # §9.1: every line of the plan of care carries its discipline modifier
    session = pt(("97110", 20), ("97530", 25), ("92507", 30), discipline=discipline)
    result = bill(session)
    assert units_of(result) == {"97110": 1, "97530": 2, "92507": 1}     # 45 -> 3; full 1+1, leftovers 5 vs 10
    for line in result["lines"]:
        assert line["modifiers"] == [modifier]
    assert warnings_from(result, "discipline-missing") == []
    check_invariants(session, result)


def test_no_discipline(bill):
    session = pt(("97110", 20), discipline=None)
    result = bill(session)
    assert units_of(result) == {"97110": 1}
    assert result["lines"][0]["modifiers"] == []
    found = warnings_from(result, "discipline-missing")
    assert len(found) == 1
    assert found[0]["severity"] == "warning"


def test_unknown_code(bill):
    # 97111 is not a therapy code: error, not billed, and never swapped for a near code (97110 and 97112
    # are one keystroke away and billable: suggesting either would invite billing a service not given);
    # 97140 20 -> 1 unit; the unknown code's 30 min are not pooled (50 would give 3)
    session = pt(("97111", 30), ("97140", 20))
    result = bill(session)
    assert units_of(result) == {"97140": 1}
    assert unbilled_codes(result) == ["97111"]
    found = warnings_from(result, "unknown-code")
    assert len(found) == 1
    assert found[0]["severity"] == "error"
    assert "97111 is not covered" in found[0]["message"]
    assert not re.search(r"did you mean|97110|97112", found[0]["message"]), found[0]["message"]
    check_invariants(session, result)
