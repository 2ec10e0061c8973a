"""Property tests: random Medicare sessions against the CMS 8-minute rule (domain.md §3) and the
contracts of design.md §5, on both engines.

Every expected value is computed here from the session as entered, with the domain's own formulas
(domain.md §3.1 closed form of the chart, §3.1 rule 4 floor, §3.3 allocation bounds, §3.4 merging and
families); nothing is imported from the engine's unit arithmetic.
"""
from __future__ import annotations

import json
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from engine.paths import SCHEMAS_DIR

from conftest import ENGINES, session_from

PROPERTY = settings(max_examples=150, deadline=None)

# domain.md §5.1: the PT/OT 15-minute timed codes, without the cognitive family 97129/97130
# (which is an add-on family, §7) — the `timed_15` list of rules/medicare.yaml.
TIMED_15 = ("97032", "97033", "97034", "97035", "97036", "97110", "97112", "97113", "97116", "97124",
            "97140", "97530", "97533", "97535", "97537", "97542", "97750", "97755", "97760", "97761",
            "97763")
COGNITIVE = ("97129", "97130")                      # domain.md §7: primary, add-on
EVALUATIONS = ("97161", "97162", "97163", "97164", "97165", "97166", "97167", "97168", "92521", "92522",
               "92523", "92524", "92610")            # domain.md §8
UNTIMED = ("97010", "97012", "97014", "97016", "97018", "97022", "97024", "97026", "97028", "G0283",
           "92507", "92526")                          # domain.md §5.3, §5.4
WORK_HARDENING = ("97545", "97546")                  # domain.md §5.2
UNLISTED = "97139"                                   # domain.md §5.3
UNKNOWN = "97111"                                    # in no code table of domain.md
ADDON_OF = {"97129": "97130", "97545": "97546"}       # primary -> add-on (domain.md §7)

RESULT_VALIDATOR = Draft202012Validator(json.loads((SCHEMAS_DIR / "result.schema.json").read_text()))


# --- the oracle, from domain.md ---------------------------------------------------------------------

def chart(minutes: int) -> int:
    """domain.md §3.1 item 2, closed form: 0 below 8 minutes, else floor((m + 7) / 15)."""
    return 0 if minutes < 8 else (minutes + 7) // 15


def merged(services: list) -> dict:
    """code -> minutes, duplicates added (domain.md §3.4), in order of first appearance."""
    out: dict = {}
    for s in services:
        out[s["code"]] = out.get(s["code"], 0) + s["minutes"]
    return out


def family_minutes(minutes_by_code: dict):
    """Minutes of the cognitive family as one pooled service, or None when it does not take part
    (97130 without 97129 is an error, not billed: domain.md §7)."""
    if "97129" not in minutes_by_code:
        return None
    return minutes_by_code["97129"] + minutes_by_code.get("97130", 0)


def expected_timed_minutes(services: list) -> int:
    minutes_by_code = merged(services)
    total = sum(m for code, m in minutes_by_code.items() if code in TIMED_15)
    fam = family_minutes(minutes_by_code)
    return total + (fam or 0)


def billed_units(result: dict) -> dict:
    units: dict = {}
    for line in result["lines"]:
        units[line["code"]] = units.get(line["code"], 0) + line["units"]
    return units


def has_tie_info(result: dict) -> bool:
    return any(w["severity"] == "info" for w in result["warnings"])


# --- the generator ----------------------------------------------------------------------------------

minutes_st = st.integers(min_value=0, max_value=130)
code_st = st.one_of(
    st.sampled_from(TIMED_15),
    st.sampled_from(TIMED_15),                       # weighted: the pool is what most properties test
    st.sampled_from(COGNITIVE),
    st.sampled_from(EVALUATIONS + UNTIMED),
    st.just("97150"),
    st.sampled_from(WORK_HARDENING),
    st.just(UNLISTED),
    st.just(UNKNOWN),
)


@st.composite
def service_st(draw):
    code = draw(code_st)
    service = {"code": code, "minutes": draw(minutes_st)}
    if code == "97150":
        size = draw(st.none() | st.integers(min_value=0, max_value=6))
        if size is not None:
            service["group_size"] = size
    return service


def session_dict(services: list, discipline) -> dict:
    data = {"session_id": "P-1", "payer": "medicare", "services": services}
    if discipline is not None:
        data["discipline"] = discipline
    return data


discipline_st = st.sampled_from([None, "PT", "OT", "SLP"])
def one_group_size(services: list) -> list:
    # entries of one code that disagree on group_size are an error for the session (design.md §4): the
    # 97150 entries of a billable session share the first given size
    size = next((s["group_size"] for s in services if "group_size" in s), None)
    return [dict(s, group_size=size) if "group_size" in s else s for s in services]


sessions_st = st.builds(session_dict, st.lists(service_st(), min_size=1, max_size=6).map(one_group_size),
                        discipline_st)


def bill(billers, engine: str, data: dict) -> dict:
    result = billers[engine].bill(session_from(data), "medicare")
    assert "error" not in result, result
    return result


# --- properties -------------------------------------------------------------------------------------

def test_generator_timed_list_is_the_payer_timed_15_list(registry):
    # The properties below classify codes with the domain's §5.1 table; they are only meaningful if
    # the payer file's timed_15 list is that table.
    assert registry.resolve("medicare", None).codes["timed_15"] == frozenset(TIMED_15)


@pytest.mark.parametrize("engine", ENGINES)
@PROPERTY
@given(data=sessions_st)
def test_every_session_bills_and_matches_the_result_schema(billers, engine, data):
    result = bill(billers, engine, data)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in RESULT_VALIDATOR.iter_errors(result)]
    assert errors == []
    # design.md §5: lines hold billed lines only, one per code, in order of first appearance.
    codes = [line["code"] for line in result["lines"]]
    assert len(codes) == len(set(codes))
    first_seen = list(merged(data["services"]))
    assert [c for c in codes if c in first_seen] == [c for c in first_seen if c in codes]
    # A code that was not entered can only be an add-on line made from its primary's units
    # (domain.md §7 split), placed right after that primary.
    for i, code in enumerate(codes):
        if code not in first_seen:
            assert code in ADDON_OF.values(), code
            primary = next(p for p, a in ADDON_OF.items() if a == code)
            assert i > 0 and codes[i - 1] == primary, codes
    assert result["total_units"] == sum(line["units"] for line in result["lines"])


@pytest.mark.parametrize("engine", ENGINES)
@PROPERTY
@given(data=sessions_st)
def test_total_timed_units_follow_the_chart(billers, engine, data):
    result = bill(billers, engine, data)
    assert result["total_timed_units"] == chart(result["total_timed_minutes"])
    # §3.1 rule 3: the day's timed units are chart(total timed minutes), and the billed timed lines
    # (15-minute codes plus the cognitive family) carry exactly that many.
    units = billed_units(result)
    on_timed_lines = sum(n for code, n in units.items() if code in TIMED_15 or code in COGNITIVE)
    assert on_timed_lines == chart(expected_timed_minutes(data["services"]))


@pytest.mark.parametrize("engine", ENGINES)
@PROPERTY
@given(data=sessions_st)
def test_total_timed_minutes_are_the_pooled_minutes(billers, engine, data):
    result = bill(billers, engine, data)
    assert result["total_timed_minutes"] == expected_timed_minutes(data["services"])


@pytest.mark.parametrize("engine", ENGINES)
@PROPERTY
@given(data=sessions_st)
def test_each_full_15_minutes_earns_a_unit(billers, engine, data):
    # domain.md §3.1 rule 4: a service done >= 15 min gets at least 1 unit, >= 30 at least 2, ...
    result = bill(billers, engine, data)
    units = billed_units(result)
    minutes_by_code = merged(data["services"])
    for code, m in minutes_by_code.items():
        if code in TIMED_15 and m >= 15:
            assert units.get(code, 0) >= m // 15, (code, m, units)
    fam = family_minutes(minutes_by_code)
    if fam is not None and fam >= 15:
        assert units.get("97129", 0) + units.get("97130", 0) >= fam // 15, (fam, units)


@pytest.mark.parametrize("engine", ENGINES)
@PROPERTY
@given(data=sessions_st)
def test_never_more_units_than_the_chart_allows(billers, engine, data):
    # domain.md §3.1 rule 6 (cap) and §3.3 step 3 (at most one remainder unit per service).
    result = bill(billers, engine, data)
    units = billed_units(result)
    minutes_by_code = merged(data["services"])
    timed_total = sum(n for code, n in units.items() if code in TIMED_15 or code in COGNITIVE)
    assert timed_total <= chart(expected_timed_minutes(data["services"]))
    for code, m in minutes_by_code.items():
        if code in TIMED_15:
            assert units.get(code, 0) <= m // 15 + 1, (code, m, units)
    fam = family_minutes(minutes_by_code)
    family_units = units.get("97129", 0) + units.get("97130", 0)
    if fam is None:
        assert family_units == 0          # 97130 alone is not billed (domain.md §7)
    else:
        assert family_units <= fam // 15 + 1, (fam, units)
        assert units.get("97129", 0) <= 1 # the primary is billed once (domain.md §7 split)


@pytest.mark.parametrize("engine", ENGINES)
@PROPERTY
@given(data=sessions_st)
def test_leftover_units_go_to_the_largest_leftover_minutes(billers, engine, data):
    # domain.md §3.3 step 3 (Example 3): after the full 15-minute units, the remaining units go to the
    # services with the most leftover minutes, so no service that got a leftover unit has fewer
    # leftover minutes than one with leftover minutes that got none.
    result = bill(billers, engine, data)
    units = billed_units(result)
    minutes_by_code = merged(data["services"])
    services = {code: (m, units.get(code, 0)) for code, m in minutes_by_code.items() if code in TIMED_15}
    fam = family_minutes(minutes_by_code)
    if fam is not None:
        services["97129+97130"] = (fam, units.get("97129", 0) + units.get("97130", 0))
    winners = [m % 15 for m, n in services.values() if n > m // 15]
    losers = [m % 15 for m, n in services.values() if n == m // 15 and m % 15 > 0]
    if winners and losers:
        assert min(winners) >= max(losers), services


@pytest.mark.skipif("durable" not in ENGINES, reason="durable_rules is not installed on this Python")
@PROPERTY
@given(data=sessions_st)
def test_durable_and_python_engines_agree(billers, data):
    assert bill(billers, "durable", data) == bill(billers, "python", data)


@pytest.mark.parametrize("engine", ENGINES)
@PROPERTY
@given(data=sessions_st)
def test_billing_twice_gives_the_same_bytes(billers, engine, data):
    first = json.dumps(bill(billers, engine, data), sort_keys=False)
    second = json.dumps(bill(billers, engine, data), sort_keys=False)
    assert first == second


@pytest.mark.parametrize("engine", ENGINES)
@PROPERTY
@given(services=st.lists(service_st(), min_size=1, max_size=6, unique_by=lambda s: s["code"]),
       discipline=discipline_st, data=st.data())
def test_order_of_distinct_services_does_not_change_the_units(billers, engine, services, discipline, data):
    shuffled = data.draw(st.permutations(services), label="shuffled")
    a = bill(billers, engine, session_dict(services, discipline))
    b = bill(billers, engine, session_dict(shuffled, discipline))
    for total in ("total_timed_minutes", "total_timed_units", "total_units"):
        assert a[total] == b[total], total
    if not has_tie_info(a) and not has_tie_info(b):
        assert Counter((l["code"], l["units"]) for l in a["lines"]) == \
            Counter((l["code"], l["units"]) for l in b["lines"])


# --- JSONL encoding: orjson writes the same text as the json module ---------------------------------

JSON_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)    # any text but surrogates
JSON_VALUE = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | JSON_TEXT,
                          lambda inner: st.lists(inner, max_size=4) | st.dictionaries(JSON_TEXT, inner, max_size=4),
                          max_leaves=20)


@PROPERTY
@given(st.dictionaries(JSON_TEXT, JSON_VALUE, max_size=6))
def test_jsonl_encoding_is_the_json_modules_text(record):
    # `bill --format jsonl` is documented as compact JSON, one record per line: the faster encoder
    # must give exactly json.dumps' text in UTF-8 (control characters, non-ASCII, U+2028, nesting, big ints).
    from engine.batch import encode_jsonl
    assert encode_jsonl(record) == (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def test_jsonl_encoding_falls_back_for_what_orjson_refuses():
    from engine.batch import encode_jsonl
    record = {"big": 2**70, "text": "x\ud800"}          # beyond 64 bits; a lone surrogate
    # UTF-8 cannot hold a lone surrogate: it is written as its JSON escape, which reads back the same
    assert encode_jsonl(record) == b'{"big":1180591620717411303424,"text":"x\\ud800"}\n'
    assert json.loads(encode_jsonl(record)) == record
