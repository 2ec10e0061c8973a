"""The engine's own safety nets (rule ids engine.*), which no bundled payer triggers but a new payer
file can: a known code no rule gives units to, two rules giving one line different unit bases, and an
add-on family without its primary when the payer file has no rule for it."""
from __future__ import annotations

import textwrap

import pytest

from engine.billing import Biller
from engine.loader import Registry
from conftest import ENGINES, session_from, units_of

PAYER = textwrap.dedent("""\
    payer: safety
    name: Safety-net test payer
    method: {name: cms_8_minute}
    codes:
      timed_15: [97110, 97140]
      cognitive: [97129, 97130]
      untimed: [97010]
    families:
      - {id: cognitive, primary: 97129, addon: 97130}
    rules:
      - id: timed
        description: timed codes by the 8-minute rule
        source: test
        when: {line: {code_in: timed_15}}
        then: [{timed_units: true}]
      - id: family
        description: the family is timed
        source: test
        when: {line: {family: cognitive}}
        then: [{timed_units: true}]
      - id: fixed-97140
        description: a second, different unit basis for 97140
        source: test
        when: {line: {code: 97140}}
        then: [{units: 1}]
""")


@pytest.fixture(scope="module")
def biller(tmp_path_factory):
    rules = tmp_path_factory.mktemp("rules")
    (rules / "safety.yaml").write_text(PAYER)
    made = {engine: Biller(Registry([rules], include_bundled=False), engine) for engine in ENGINES}
    yield made
    for b in made.values():
        b.close()


def bill(biller, engine, services):
    return biller[engine].bill(session_from({"services": services}), "safety")


def rules_of_errors(result):
    return sorted(w["rule"] for w in result["warnings"] if w["severity"] == "error")


@pytest.mark.parametrize("engine", ENGINES)
def test_known_code_without_a_unit_rule_is_an_error(biller, engine):
    # 97010 is in a code list (known) but no rule decides its units.
    result = bill(biller, engine, [{"code": "97010", "minutes": 10}, {"code": "97110", "minutes": 20}])
    assert units_of(result) == {"97110": 1}                      # 20 min -> 1 unit
    assert rules_of_errors(result) == ["engine.no-unit-rule"]
    assert [u["code"] for u in result["unbilled"]] == ["97010"]


@pytest.mark.parametrize("engine", ENGINES)
def test_two_unit_bases_for_one_line_is_an_error(biller, engine):
    # 97140 is matched by `timed` (pool) and by `fixed-97140` (1 unit): neither wins silently.
    result = bill(biller, engine, [{"code": "97140", "minutes": 30}])
    assert result["lines"] == []
    assert rules_of_errors(result) == ["engine.unit-conflict"]
    assert "fixed-97140" in result["unbilled"][0]["reason"] and "timed" in result["unbilled"][0]["reason"]


@pytest.mark.parametrize("engine", ENGINES)
def test_addon_alone_stays_out_of_the_pool(biller, engine):
    # No payer rule refuses 97130 alone, so the engine does; its 20 minutes must not take a unit from
    # the pool: 97110 20 min alone -> chart(20) = 1 unit (with 97130's minutes it would be chart(40) = 3).
    result = bill(biller, engine, [{"code": "97130", "minutes": 20}, {"code": "97110", "minutes": 20}])
    assert units_of(result) == {"97110": 1}
    assert result["total_timed_minutes"] == 20
    assert rules_of_errors(result) == ["engine.addon-without-primary"]
