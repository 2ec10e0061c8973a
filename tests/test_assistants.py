"""Who furnished which minutes (issue 12 items 1, 2, 5): CQ/CO by the CY2022 per-unit method (shared
domain.md §17.1, docs/domain.md §16), lines split by modifier set (design.md §5), documented modifiers
kept and put in the payer's claim order, at most 4 per line. Expected values are worked by hand from
§17.1 in each test's comment, never copied from the program's output."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from engine import assistants as A
from engine.model import Assistants

from conftest import ENGINES, bill, session_from  # noqa: F401  (bill is a fixture)

MEDICARE = Assistants(enabled=True, modifiers=(("OTA", "CO"), ("PTA", "CQ")))


RESULT_SCHEMA = __import__("json").loads((__import__("pathlib").Path(__file__).resolve().parents[1]
                                          / "schemas" / "result.schema.json").read_text())


def lines_of(result) -> list:
    assert "error" not in result, result
    __import__("jsonschema").validate(result, RESULT_SCHEMA)     # the result contract (design.md §5)
    return [(line["code"], line["units"], " ".join(line["modifiers"])) for line in result["lines"]]


def pt(*services, discipline="PT"):
    return {"discipline": discipline, "services": [
        {"code": code, "minutes": minutes, **({"provider": who} if who else {})} for code, who, minutes in services]}


# --- domain.md §17.1 cases A-F, on both engines ---------------------------------------------------

def test_case_a_assistant_10_therapist_5_one_unit_with_cq(bill):
    # confidence: SECONDARY (CMS CY2022 proposed-rule example via therapycomply).
    # 15 min -> 1 unit; no whole unit per provider; remaining unit: PT 5 < 8, PTA 10 of 15 > 10% -> CQ
    assert lines_of(bill(pt(("97110", "PTA", 10), ("97110", "PT", 5)))) == [("97110", 1, "GP CQ")]


def test_case_b_joint_time_given_as_the_therapists(bill):
    # confidence: SECONDARY (APTA: joint time is the therapist's). PT 30 -> 2 whole units, no CQ
    assert lines_of(bill(pt(("97112", "PT", 30)))) == [("97112", 2, "GP")]


def test_case_c_assistant_7_minutes_not_billed(bill):
    # confidence: CERTAIN for the allocation (§3.3). 22 min -> 1 unit: 97140 15 full unit; 97110 7 min
    # has no full unit and no leftover unit remains -> not billed, so no CQ anywhere
    result = bill(pt(("97140", "PT", 15), ("97110", "PTA", 7)))
    assert lines_of(result) == [("97140", 1, "GP")]
    assert [u["code"] for u in result["unbilled"]] == ["97110"]


def test_case_d_split_line_whole_assistant_unit_and_therapist_remaining_unit(bill):
    # confidence: SECONDARY (CMS March-2021 scenario inputs; answer per step 4).
    # 66 min -> 4 units; 97110 36 min -> 2 units, 97140 30 -> 2. 97110: PTA 23 = 1 whole unit (CQ) + 8
    # left, PT 13 left; one remaining unit: both >= 8 -> both_ge_8_minutes default `therapist` -> no CQ
    assert lines_of(bill(pt(("97110", "PTA", 23), ("97110", "PT", 13), ("97140", "PT", 30)))) == [
        ("97110", 1, "GP CQ"), ("97110", 1, "GP"), ("97140", 2, "GP")]


def test_case_e_de_minimis_one_assistant_minute(bill):
    # confidence: SECONDARY. 15 min -> 1 unit; PT 14 >= 8 -> no CQ (and 1 min <= 10% of 15 anyway)
    assert lines_of(bill(pt(("97110", "PTA", 1), ("97110", "PT", 14)))) == [("97110", 1, "GP")]


def test_case_f_group_by_ota_alone_carries_co(bill):
    # confidence: SECONDARY (untimed, §17.1 step 6). OT plan -> GO; OTA furnished all 30 min -> CO
    data = {"discipline": "OT", "services": [{"code": "97150", "minutes": 30, "group_size": 3, "provider": "OTA"}]}
    assert lines_of(bill(data)) == [("97150", 1, "GO CO")]


# --- the other steps -------------------------------------------------------------------------------

def test_an_assistant_on_an_evaluation_is_an_error_and_gets_no_modifier(bill):
    # §17.1 step 6: evaluations are therapist-only
    result = bill(pt(("97161", "PTA", 30)))
    assert lines_of(result) == [("97161", 1, "GP")]
    assert [(w["severity"], w["rule"]) for w in result["warnings"]] == [("error", "engine.assistant-evaluation")]


def test_slp_has_no_assistant_modifier(bill):
    # §17.1 step 7 [CERTAIN]: even an assistant entry on an SLP plan gets no CQ/CO
    result = bill(pt(("92507", "PTA", 30), discipline="SLP"))
    assert lines_of(result) == [("92507", 1, "GN")]


def test_every_assistant_modifier_is_traced_to_its_setting_line(bill):
    result = bill(pt(("97110", "PTA", 23), ("97110", "PT", 13)))
    entries = [t for t in result["trace"] if t["rule"] == "engine.assistant-modifier"]
    assert [t["effect"].split(":")[0] for t in entries] == ["97110 unit 1", "97110 unit 2"]
    from pathlib import Path
    for t in entries:
        path, line = t["source"].rsplit(":", 1)
        text = Path(__file__).resolve().parents[1].joinpath(path).read_text().splitlines()[int(line) - 1]
        assert text.strip().startswith(("by_provider:", "both_ge_8_minutes:")), (t, text)
    assert "both ≥ 8" in entries[1]["effect"] and "no CQ" in entries[1]["effect"]
    # a documented modifier's entry cites the claim order that placed it
    result = bill({"discipline": "PT", "services": [{"code": "97140", "minutes": 30, "modifiers": ["59"]}]})
    (entry,) = [t for t in result["trace"] if t["rule"] == "engine.documented-modifier"]
    path, line = entry["source"].rsplit(":", 1)
    text = Path(__file__).resolve().parents[1].joinpath(path).read_text().splitlines()[int(line) - 1]
    assert text.startswith("modifier_order:") and "services[0].modifiers" in entry["effect"]


def test_a_private_payer_can_turn_cq_co_off(tmp_path, registry):
    from engine.billing import Biller
    from engine.loader import PayerFile, Registry
    (tmp_path / "nocq.yaml").write_text("payer: nocq\nname: no CQ\nextends: medicare\n"
                                        "assistant_modifiers:\n  enabled: false\n")
    reg = Registry(extra_files=[PayerFile(tmp_path / "nocq.yaml", "nocq.yaml", "nocq.yaml")])
    for engine in ENGINES:
        biller = Biller(reg, engine, remember=False)
        result = biller.bill(session_from(pt(("97110", "PTA", 30))), "nocq")
        assert lines_of(result) == [("97110", 2, "GP")]
        biller.close()


# --- documented modifiers and the claim order ------------------------------------------------------

def test_documented_modifiers_go_on_the_lines_of_their_entries(bill):
    # 97110: PTA 15 (documented 59) -> 1 whole unit GP CQ 59; PT 15 -> 1 whole unit GP
    data = {"discipline": "PT", "services": [
        {"code": "97110", "minutes": 15, "provider": "PTA", "modifiers": ["59"]},
        {"code": "97110", "minutes": 15, "provider": "PT"}]}
    assert lines_of(bill(data)) == [("97110", 1, "GP CQ 59"), ("97110", 1, "GP")]


def test_a_fifth_modifier_is_an_error_naming_them_all_and_none_is_dropped(bill):
    # GP (discipline) + CQ (PTA) + 59 XU 76 documented = 5 > 4 (837P SV101)
    data = {"discipline": "PT", "services": [
        {"code": "97110", "minutes": 30, "provider": "PTA", "modifiers": ["76", "XU", "59"]}]}
    result = bill(data)
    assert lines_of(result) == [("97110", 2, "GP CQ 59 XU 76")]
    errors = [w for w in result["warnings"] if w["rule"] == "engine.modifier-limit"]
    assert len(errors) == 1 and errors[0]["severity"] == "error"
    assert all(m in errors[0]["message"] for m in ("GP", "CQ", "59", "XU", "76"))


def test_claim_order_follows_the_list_then_the_order_given():
    assert A.claim_order(["76", "CQ", "GP", "ZZ", "59"], ("GP", "CQ", "59")) == ["GP", "CQ", "59", "76", "ZZ"]
    assert A.claim_order(["GP", "GP", "59"], ()) == ["GP", "59"]


@pytest.mark.parametrize("modifier", ["GP", "CQ", "KX"])
def test_engine_decided_modifiers_are_refused_as_input(modifier):
    from engine.errors import SessionError
    session = session_from({"services": [{"code": "97110", "minutes": 30, "modifiers": [modifier]}]})
    assert isinstance(session, SessionError)
    assert f"modifier {modifier} is not documented input" in str(session)


@pytest.mark.parametrize("bad", [["5"], ["59x"], ["gp"], ["59\n"], [5], ["59", "59"], ["59", "XE", "XS", "XP", "XU"]])
def test_malformed_modifiers_are_refused(bad):
    from engine.errors import SessionError
    assert isinstance(session_from({"services": [{"code": "97110", "minutes": 30, "modifiers": bad}]}),
                      SessionError)


# --- the arithmetic alone, and its properties ------------------------------------------------------

def test_two_remaining_units_9_to_14_each_default_one_each_or_both():
    # PT 12, PTA 11: no whole unit; 23 min -> 2 units (chart); remaining: one each (default), the larger
    # (PT 12) first -> [None, CQ]; both_assistant -> [CQ, CQ]
    entries = [("PTA", 11), ("PT", 12)]
    assert [u.modifier for u in A.timed(entries, 2, MEDICARE)] == [None, "CQ"]
    both = Assistants(enabled=True, modifiers=(("PTA", "CQ"),), two_units_9_to_14="both_assistant")
    assert [u.modifier for u in A.timed(entries, 2, both)] == ["CQ", "CQ"]


def test_both_ge_8_setting_assistant():
    # PT 8, PTA 9 -> one remaining unit (17 min, 1 unit), both >= 8 -> the setting decides
    setting = Assistants(enabled=True, modifiers=(("PTA", "CQ"),), both_ge_8_minutes="assistant")
    assert [u.modifier for u in A.timed([("PT", 8), ("PTA", 9)], 1, setting)] == ["CQ"]
    assert [u.modifier for u in A.timed([("PT", 8), ("PTA", 9)], 1, MEDICARE)] == [None]


def test_untimed_ten_percent_test():
    # 97150 30 min: OTA 3 = 10% -> not more than 10% -> no CO; OTA 4 > 10% -> CO
    assert [u.modifier for u in A.untimed([("OT", 27), ("OTA", 3)], 1, MEDICARE)] == [None]
    assert [u.modifier for u in A.untimed([("OT", 26), ("OTA", 4)], 1, MEDICARE)] == ["CO"]


providers = st.sampled_from([None, "PT", "PTA"])
entries_st = st.lists(st.tuples(providers, st.integers(0, 60)), min_size=1, max_size=4)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(entries=entries_st, extra=st.integers(0, 1))
def test_properties_of_the_per_unit_method(entries, extra):
    total = sum(m for _, m in entries)
    units = total // 15 + (extra if total % 15 else 0)      # what a unit method can give the code
    out = A.timed(entries, units, MEDICARE)
    assert len(out) == units                                  # every unit gets a decision
    if not A.has_assistant(entries):
        assert all(u.modifier is None for u in out)          # an all-therapist code has no CQ
    if all(p == "PTA" for p, _ in entries):
        assert all(u.modifier == "CQ" for u in out)          # an all-assistant code has CQ on every unit
    whole = sum(m // 15 for p, m in A.by_provider(entries) if p == "PTA")
    assert sum(u.modifier == "CQ" for u in out) >= min(whole, units)   # an assistant's whole units carry CQ


@pytest.mark.parametrize("engine", ENGINES)
@settings(max_examples=60, deadline=None, derandomize=True)
@given(data=st.lists(st.tuples(st.sampled_from(["97110", "97140", "97530", "97150"]), providers,
                               st.integers(1, 40)), min_size=1, max_size=5))
def test_providers_never_change_units_per_code(billers, engine, data):
    """Lines' units per code are the same with and without providers (units per code unchanged), and a
    code's lines differ in modifiers."""
    with_p = {"discipline": "PT", "services": [
        {"code": c, "minutes": m, **({"provider": p} if p else {}), **({"group_size": 3} if c == "97150" else {})}
        for c, p, m in data]}
    without = {"discipline": "PT", "services": [{k: v for k, v in s.items() if k != "provider"}
                                                for s in with_p["services"]]}

    def per_code(result):
        out: dict = {}
        for line in result["lines"]:
            out[line["code"]] = out.get(line["code"], 0) + line["units"]
        return out
    a = billers[engine].bill(session_from(with_p), "medicare")
    b = billers[engine].bill(session_from(without), "medicare")
    assert per_code(a) == per_code(b)
    assert a["total_units"] == b["total_units"] == sum(line["units"] for line in a["lines"])
    minutes: dict = {}
    for line in a["lines"]:
        minutes[line["code"]] = minutes.get(line["code"], 0) + line["minutes"]
    assert minutes == {c: m for c, m in ((line["code"], line["minutes"]) for line in b["lines"])}


def test_audit_log_stores_providers_and_modifiers_and_replay_reproduces(tmp_path):
    import json
    import sqlite3
    import subprocess
    import sys
    import zlib
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    session = {"session_id": "Q1", "payer": "medicare", "discipline": "PT", "services": [
        {"code": "97110", "minutes": 23, "provider": "PTA"}, {"code": "97110", "minutes": 13, "provider": "PT"},
        {"code": "97140", "minutes": 30, "provider": "PT", "modifiers": ["59"]}]}
    (tmp_path / "s.json").write_text(json.dumps(session))
    db = tmp_path / "a.sqlite"
    run = lambda *a: subprocess.run([sys.executable, "-m", "engine", *map(str, a)], cwd=root,  # noqa: E731
                                    capture_output=True, text=True, timeout=120)
    assert run("bill", tmp_path / "s.json", "--audit-db", db).returncode == 0
    with sqlite3.connect(db) as con:
        (data,) = con.execute("SELECT data FROM batches").fetchone()
    stored = json.loads(zlib.decompress(data).split(b"\n")[0])
    assert stored["services"] == session["services"]        # who furnished which minutes, and the 59
    replay = run("audit", db, "--replay")
    assert replay.returncode == 0 and "1 reproduced, 0 differ" in replay.stdout + replay.stderr, replay


@pytest.mark.parametrize("engine", ENGINES)
def test_scenario_expect_names_modifiers_per_unit_line(billers, engine):
    from engine.scenarios import Scenario, run_scenario
    session = session_from(pt(("97110", "PTA", 23), ("97110", "PT", 13), ("97140", "PT", 30)))

    def diffs(lines):
        return run_scenario(Scenario("t", 1, "t", "medicare", None, session, {"lines": lines}), billers[engine])
    # worked by hand (case D): 97110 x1 GP CQ, 97110 x1 GP, 97140 x2 GP
    assert diffs({"97110 GP CQ": 1, "97110 GP": 1, "97140": 2}) == []
    assert diffs({"97110": 2, "97140 GP": 2}) == []                 # the old form: a code's units over its lines
    assert diffs({"97110 GP": 2, "97140": 2}) == ["lines.97110: expected x2 GP, got x1 GP CQ; x1 GP"]
    assert diffs({"97110": 2, "97140 GP 59": 2}) == ["lines.97140: expected x2 GP 59, got x2 GP"]


def test_a_yaml_number_is_a_modifier_and_a_csv_cell_splits_on_spaces_or_commas(tmp_path):
    from engine.sessions import load_sessions
    assert session_from({"services": [{"code": "97110", "minutes": 30, "modifiers": [59]}]}).services[0].modifiers \
        == ("59",)
    (tmp_path / "s.csv").write_text("session_id,code,minutes,provider,modifiers\n"
                                    'A,97110,20,PTA,"59 XU"\nB,97110,20,,"59,XU"\nC,97110,20,,\n')
    sessions, _ = load_sessions(str(tmp_path / "s.csv"))
    assert [s.services[0].modifiers for s in sessions] == [("59", "XU"), ("59", "XU"), ()]
    assert sessions[0].services[0].provider == "PTA"


def _child(tmp_path, body: str):
    from engine.loader import PayerFile, Registry
    (tmp_path / "child.yaml").write_text("payer: child\nname: child\nextends: medicare\n" + body)
    return Registry(extra_files=[PayerFile(tmp_path / "child.yaml", "r/child.yaml", "r/child.yaml")])


def test_a_child_changes_one_setting_inherits_the_rest_and_the_trace_cites_each_file(tmp_path):
    from engine.billing import Biller
    reg = _child(tmp_path, "assistant_modifiers:\n  both_ge_8_minutes: assistant\n"
                           "  payment_note: \"Acme pays assistants' units at 80%\"\n")
    for engine in ENGINES:
        biller = Biller(reg, engine, remember=False)
        # case D under both_ge_8_minutes: assistant -> the remaining unit (PTA 8, PT 13) carries CQ too
        result = biller.bill(session_from(pt(("97110", "PTA", 23), ("97110", "PT", 13))), "child")
        assert lines_of(result) == [("97110", 2, "GP CQ")]
        sources = [t["source"] for t in result["trace"] if t["rule"] == "engine.assistant-modifier"]
        assert sources[0].startswith("rules/medicare.yaml:") and sources[1] == "r/child.yaml:5"
        assert [w["message"] for w in result["warnings"]] == ["Acme pays assistants' units at 80%"]
        biller.close()


def test_evaluation_codes_must_name_a_code_list(tmp_path):
    with pytest.raises(Exception, match=r"child.yaml:5: assistant_modifiers.evaluation_codes: no code list named "
                                        r"'evaluation' \(did you mean 'evaluations'\?\)"):
        _child(tmp_path, "assistant_modifiers:\n  evaluation_codes: evaluation\n")


def test_an_assistant_of_the_other_discipline_is_a_warning(bill):
    # CQ pairs with GP and CO with GO (docs/domain.md §16): an OTA on a PT plan is worth a question
    result = bill(pt(("97110", "OTA", 30)))
    assert lines_of(result) == [("97110", 2, "GP CO")]
    assert [(w["severity"], w["message"].split(":")[0]) for w in result["warnings"]
            if w["severity"] == "warning"] == [("warning", "97110")]
    assert all(w["severity"] != "warning" for w in bill(pt(("97110", "PTA", 30)))["warnings"])


def test_the_library_api_takes_providers_and_modifiers():
    from engine.api import RuleBook
    with RuleBook(engine="python") as book:
        result = book.bill({"payer": "medicare", "discipline": "PT", "services": [
            {"code": "97110", "minutes": 10, "provider": "PTA", "modifiers": ["XU"]},
            {"code": "97110", "minutes": 5, "provider": "PT"}]})
        other = book.bill({"payer": "medicare", "discipline": "PT", "services": [
            {"code": "97110", "minutes": 10, "provider": "PTA"},
            {"code": "97110", "minutes": 5, "provider": "PT", "modifiers": ["XU"]}]})
    # case A (15 min -> 1 unit, CQ); the unit is the PTA's 10 min + the PT's 5: it carries the documented
    # modifiers of the entry that furnished most of its minutes (docs/domain.md §16): XU on the PTA's -> on
    # the line; XU on the PT's 5 min -> on no line, and a warning says so
    assert [(l["code"], l["units"], l["modifiers"]) for l in result["lines"]] == [("97110", 1, ["GP", "CQ", "XU"])]
    assert [(l["code"], l["units"], l["modifiers"]) for l in other["lines"]] == [("97110", 1, ["GP", "CQ"])]
    assert [w["rule"] for w in other["warnings"] if "XU" in w["message"]] == ["engine.documented-modifier"]


def test_a_documented_modifier_whose_minutes_earned_no_unit_is_said_not_dropped(bill):
    # 97110 PT 30 (2 whole units) + PTA 5 (documented 59): 35 min -> 2 units, both the PT's whole units;
    # the PTA's 5 min make no unit (remaining units 0), so the 59 is on no line: a warning says so
    data = {"discipline": "PT", "services": [
        {"code": "97110", "minutes": 30, "provider": "PT"},
        {"code": "97110", "minutes": 5, "provider": "PTA", "modifiers": ["59"]}]}
    result = bill(data)
    assert lines_of(result) == [("97110", 2, "GP")]
    assert [w["rule"] for w in result["warnings"] if "59" in w["message"]] == ["engine.documented-modifier"]


def test_a_generated_addon_line_takes_its_primarys_assistant_modifier(bill):
    # 97129 45 min by an OTA on an OT plan: the cognitive family pools 45 min -> 3 units, 97129 x1 and the
    # generated 97130 x2; a family takes the 10% test: OTA 45 of 45 > 10% -> CO on both lines
    result = bill({"discipline": "OT", "services": [{"code": "97129", "minutes": 45, "provider": "OTA"}]})
    assert lines_of(result) == [("97129", 1, "GO CO"), ("97130", 2, "GO CO")]


def test_therapist_entries_with_and_without_a_provider_are_one_therapists_minutes():
    # 97110: PT 10 + (no provider) 5 + PTA 15 -> the therapist's 15 is a whole unit, the PTA's 15 another
    out = A.timed([("PT", 10), (None, 5), ("PTA", 15)], 2, MEDICARE)
    assert [(u.modifier, u.providers) for u in out] == [(None, ("PT",)), ("CQ", ("PTA",))]


def test_a_modifier_documented_on_an_entry_without_a_provider_goes_on_the_therapists_line(bill):
    # 97110 (no provider, 59) 15 + PTA 15: 2 units, the therapist's whole unit GP 59, the PTA's GP CQ
    data = {"discipline": "PT", "services": [
        {"code": "97110", "minutes": 15, "modifiers": ["59"]}, {"code": "97110", "minutes": 15, "provider": "PTA"}]}
    result = bill(data)
    assert lines_of(result) == [("97110", 1, "GP 59"), ("97110", 1, "GP CQ")]
    assert not any(w["rule"] == "engine.documented-modifier" for w in result["warnings"])


# --- documented modifiers go only on the units their entry furnished (review of issue 12, leftover A) ---

def test_a_documented_modifier_goes_only_on_the_units_of_its_entry(billers):
    # 97530 PT 15 min XS + PT 15 min: 30 min -> 2 units (per code: 2 whole). Whole units per modifier set
    # first: the XS entry's 15 min are one whole unit (GP XS), the other entry's 15 another (GP). XS clears
    # the 97140/97530 PTP edit (indicator 1) only on its own unit's line: an info there, an error on the
    # plain line (docs/domain.md §16, §17.1)
    for name in ENGINES:
        data = {"discipline": "PT", "date_of_service": "2024-03-01", "services": [
            {"code": "97140", "minutes": 15},
            {"code": "97530", "minutes": 15, "modifiers": ["XS"]}, {"code": "97530", "minutes": 15}]}
        result = billers[name].bill(session_from(data), "medicare")
        assert lines_of(result) == [("97140", 1, "GP"), ("97530", 1, "GP XS"), ("97530", 1, "GP")]
        ptp = [(w["severity"], w["codes"]) for w in result["warnings"] if w["rule"] == "ncci-ptp"]
        assert ptp == [("info", ["97530", "97140"]), ("error", ["97530", "97140"])]
        # the trace (and so explain) says on how many of the code's units the documented modifier is
        (effect,) = [t["effect"] for t in result["trace"] if t["rule"] == "engine.documented-modifier"]
        assert effect == "97530: XS documented in the input (services[1].modifiers): on 1 of 2 unit(s)"


def test_a_remaining_unit_goes_to_the_set_that_furnished_most_of_its_minutes(bill):
    # 97530 PT 20 min XS + PT 5 min: 25 min -> 2 units. The XS set's 20 min make a whole unit (GP XS), 5 left;
    # the remaining unit is made of XS 5 + plain 5: a tie goes to the set with fewer documented modifiers
    # -> GP. XS is on 1 unit, not 2
    data = {"discipline": "PT", "services": [{"code": "97530", "minutes": 20, "modifiers": ["XS"]},
                                             {"code": "97530", "minutes": 5}]}
    assert lines_of(bill(data)) == [("97530", 1, "GP XS"), ("97530", 1, "GP")]
    # XS 8 + plain 7 = 15 min -> 1 unit, of which XS furnished 8 of 15 -> GP XS
    data["services"] = [{"code": "97530", "minutes": 7}, {"code": "97530", "minutes": 8, "modifiers": ["XS"]}]
    assert lines_of(bill(data)) == [("97530", 1, "GP XS")]
    # XS on an entry of 0 minutes beside 30 plain minutes: its entry furnished no minute of any unit
    data["services"] = [{"code": "97530", "minutes": 30}, {"code": "97530", "minutes": 0, "modifiers": ["XS"]}]
    result = bill(data)
    assert lines_of(result) == [("97530", 2, "GP")]
    assert [w["rule"] for w in result["warnings"] if "XS" in w["message"]] == ["engine.documented-modifier"]


_mods = st.lists(st.sampled_from(["XS", "59", "76", "XU"]), max_size=2, unique=True)


@pytest.mark.parametrize("engine", ENGINES)
@settings(max_examples=80, deadline=None, derandomize=True)
@given(data=st.lists(st.tuples(st.sampled_from(["97110", "97530", "97140"]), providers, st.integers(0, 40), _mods),
                     min_size=1, max_size=5))
def test_a_documented_modifier_is_on_no_more_units_than_its_entries_minutes_can_earn(billers, engine, data):
    """Per code, a documented modifier is on at most ceil(m/15) units for each entry of m minutes that
    documents it (a unit holds at least one minute of its entry), so never on units made only of other
    entries' minutes (an entry of 0 minutes: on none); and the code's units all stay on its lines."""
    session = {"discipline": "PT", "services": [
        {"code": c, "minutes": m, **({"provider": p} if p else {}), **({"modifiers": mods} if mods else {})}
        for c, p, m, mods in data]}
    result = billers[engine].bill(session_from(session), "medicare")
    for code in {c for c, *_ in data}:
        for mod in ("XS", "59", "76", "XU"):
            earnable = sum(-(-m // 15) for c, _, m, mods in data if c == code and mod in mods)
            on = sum(line["units"] for line in result["lines"] if line["code"] == code and mod in line["modifiers"])
            assert on <= earnable, (code, mod, result["lines"])


def test_a_documented_modifier_on_a_code_that_is_not_billed_is_said(bill):
    # 97110 30 + 97140 5 (59 documented): 35 min -> 2 units, both 97110's whole units; 97140's 5 min earn
    # none, so 97140 is unbilled and its 59 on no line: a warning says so (docs/domain.md §16: never dropped
    # silently)
    data = {"discipline": "PT", "services": [{"code": "97110", "minutes": 30},
                                             {"code": "97140", "minutes": 5, "modifiers": ["59"]}]}
    result = bill(data)
    assert lines_of(result) == [("97110", 2, "GP")]
    assert [(w["severity"], w["rule"], w["codes"]) for w in result["warnings"] if "59" in w["message"]] == [
        ("warning", "engine.documented-modifier", ["97140"])]
