"""Random payer files, billed through both engines (issue 10: whatever `validate` accepts, both engines
bill identically and in bounded time).

Each example is a payer file written as YAML text into a tmp rules tree and loaded by loader.Registry,
as a user's file is. Its rules use every condition operator of schemas/payer.schema.json (value, lt,
lte, gt, gte, ne, in, exists; code, code_in with a named or inline list with duplicates, code_not_in,
minutes, group_size, provider, known, family, family_role, has_primary; session discipline,
date_of_service against real dates, line_count; string comparisons against nasty strings) and every action. Random
sessions are billed with `Biller(registry, engine, remember=False)` on durable and on the Python twin:
the results must be byte-identical JSON and the firings identical, and the firings must be the ones an
independent evaluator of the YAML conditions (below, written from the schema's descriptions) expects.
A remembering Biller must agree too (the plans memo key covers every field a condition reads).

The @example cases are the sizes past durable's limits: hundreds of per-code rules, 300 identical
conditions, a code in 300 lists, 70 comparisons one line matches at once.
"""
from __future__ import annotations

import datetime

import json
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine.billing import Biller
from engine.explain import why_not_json
from engine.loader import Registry
from conftest import ENGINES, session_from

CODES = [str(10000 + i) for i in range(8)]
UNLISTED = "10099"                       # in no list: known is false
PROVIDERS = ["PT", "PTA", "OT", "OTA", "SLP"]
DISCIPLINES = ["PT", "OT", "SLP"]
DATES = ["2025-12-31", "2026-01-01", "2026-06-15"]
# strings a rule may compare with: characters that durable's JSON escaping used to reorder
NASTY = st.text(alphabet=['a', 'P', 'T', 'c', 'o', 'g', '2', '0', '-', 'é', '日', '"', '\\', '\n', '\t', '\x01', ' ', '~'],
                min_size=0, max_size=4)
PLACEHOLDERS = ["code", "minutes", "group_size", "provider", "discipline", "family", "primary",
                "date_of_service"]


def sub_dict(draw, options: dict, min_size=1) -> dict:
    keys = draw(st.lists(st.sampled_from(sorted(options)), min_size=min_size, max_size=3, unique=True))
    return {k: draw(options[k]) for k in keys}


@st.composite
def int_test(draw):
    value = st.integers(-1, 130)
    if draw(st.booleans()):
        return draw(value)
    return sub_dict(draw, {"lt": value, "lte": value, "gt": value, "gte": value, "ne": value, "exists": st.booleans()})


# a date a condition compares with must be a real date (the loader refuses anything else)
ANY_DATE = st.dates(datetime.date(2025, 11, 1), datetime.date(2026, 8, 1)).map(datetime.date.isoformat)


@st.composite
def str_test(draw, values, named=False, others=NASTY):
    """`named`: equality, ne and in must name one of `values` (a family test names a family). `others`: the
    values compared besides `values`."""
    value = st.sampled_from(values) | others
    same = st.sampled_from(values) if named else value
    if draw(st.integers(0, 3)) == 0:
        return draw(same)
    return sub_dict(draw, {"lt": value, "lte": value, "gt": value, "gte": value, "ne": same,
                           "exists": st.booleans(), "in": st.lists(same, min_size=1, max_size=4)})


def code_list(draw, lists):
    if lists and draw(st.booleans()):
        return draw(st.sampled_from(sorted(lists)))
    items = draw(st.lists(st.sampled_from(CODES + [UNLISTED]), min_size=1, max_size=4))
    return items + items[:draw(st.integers(0, len(items)))]       # duplicates, as a user might write


@st.composite
def line_when(draw, lists, families):
    family_ids = [f["id"] for f in families] or ["fam"]
    options = {
        "code": st.sampled_from(CODES + [UNLISTED]) | st.fixed_dictionaries(
            {}, optional={"ne": st.sampled_from(CODES), "exists": st.booleans()}).filter(bool),
        "code_in": st.just(None), "code_not_in": st.just(None),
        "minutes": int_test(), "group_size": int_test(),
        "provider": str_test(PROVIDERS), "known": st.booleans(), "family": str_test(family_ids, named=True),
        "family_role": st.sampled_from(["primary", "addon"]), "has_primary": st.booleans(),
    }
    when = sub_dict(draw, options, min_size=0)
    for key in ("code_in", "code_not_in"):
        if key in when:
            when[key] = code_list(draw, lists)
    if "family" in when and not families:
        del when["family"]          # a family test must name a family of the payer (loader check)
    return when


@st.composite
def session_when(draw):
    return sub_dict(draw, {"discipline": str_test(DISCIPLINES), "date_of_service": str_test(DATES, others=ANY_DATE),
                           "line_count": int_test()}, min_size=0)


def message(draw) -> str:
    names = draw(st.lists(st.sampled_from(PLACEHOLDERS), max_size=3))
    text = draw(NASTY).replace("{", "").replace("}", "")
    return text + " " + " ".join("{" + n + "}" for n in names) + " end"


@st.composite
def actions(draw, on_line: bool):
    kinds = ["info", "warn", "error"] + (["timed_units", "units", "block_units", "max_units", "modifier", "hold"]
                                         if on_line else [])
    chosen = draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=3))
    units = [i for i, k in enumerate(chosen) if k in ("timed_units", "units", "block_units")]
    chosen = [k for i, k in enumerate(chosen) if i not in units[1:]]    # a rule decides units once
    out = []
    for kind in chosen:
        if kind == "timed_units":
            out.append({kind: True})
        elif kind in ("units", "max_units"):
            out.append({kind: draw(st.integers(0, 5))})
        elif kind == "block_units":
            first, nxt = draw(st.integers(1, 60)), draw(st.integers(1, 60))
            out.append({kind: {"first_minutes": first, "first_min_minutes": draw(st.integers(1, first)),
                               "next_minutes": nxt, "next_min_minutes": draw(st.integers(1, nxt))}})
        elif kind == "modifier":
            out.append({kind: draw(st.sampled_from(["GP", "GO", "59", "KX"]))})
        else:
            out.append({kind: message(draw)})
    return out


@st.composite
def payers(draw):
    lists = {}
    for n in range(draw(st.integers(1, 3))):
        lists[f"list_{n}"] = draw(st.lists(st.sampled_from(CODES), min_size=1, max_size=5, unique=True))
    listed = sorted({c for items in lists.values() for c in items})
    families = []
    if len(listed) >= 2 and draw(st.booleans()):
        primary, addon = draw(st.permutations(listed))[:2]
        families.append({"id": "fam", "primary": primary, "addon": addon})
    rules = []
    for n in range(draw(st.integers(1, 8))):
        kinds = draw(st.sampled_from([("line",), ("session",), ("line", "session")]))
        when = {}
        if "line" in kinds:
            when["line"] = draw(line_when(lists, families))
        if "session" in kinds:
            when["session"] = draw(session_when())
        rules.append({"id": f"rule-{n}", "description": "random rule", "source": "test", "when": when,
                      "then": draw(actions("line" in when))})
    method = draw(st.sampled_from(["cms_8_minute", "midpoint_per_code"]))
    out = {"payer": "rnd", "name": "Random payer", "method": {"name": method}, "codes": lists,
           "families": families, "rules": rules}
    if draw(st.booleans()):         # CQ/CO settings (docs/domain.md §16): the engine's, after the rules
        out["assistant_modifiers"] = {
            "enabled": draw(st.booleans()), "by_provider": {"PTA": "CQ", "OTA": "CO"},
            "both_ge_8_minutes": draw(st.sampled_from(["therapist", "assistant"])),
            "two_units_9_to_14": draw(st.sampled_from(["one_each", "both_assistant"])),
            "evaluation_codes": draw(st.sampled_from(sorted(lists)))}
    if draw(st.booleans()):
        out["modifier_order"] = draw(st.permutations(["59", "CQ", "GO", "GP", "KX", "XU"]))
    return out


@st.composite
def sessions(draw):
    out = []
    for n in range(draw(st.integers(1, 3))):
        services, group_sizes = [], {}
        for _ in range(draw(st.integers(1, 5))):
            service = {"code": draw(st.sampled_from(CODES + [UNLISTED])), "minutes": draw(st.integers(0, 130))}
            if draw(st.booleans()):     # entries of one code give one group size (design.md §4)
                service["group_size"] = group_sizes.setdefault(service["code"], draw(st.integers(0, 6)))
            if draw(st.booleans()):
                service["provider"] = draw(st.sampled_from(PROVIDERS))
            if draw(st.booleans()):     # documented modifiers (design.md §4)
                service["modifiers"] = draw(st.lists(st.sampled_from(["59", "XU", "76"]), max_size=3, unique=True))
            services.append(service)
        data = {"session_id": f"S{n}", "services": services}
        if draw(st.booleans()):
            data["discipline"] = draw(st.sampled_from(DISCIPLINES))
        if draw(st.booleans()):
            data["date_of_service"] = draw(st.sampled_from(DATES))
        out.append(data)
    return out


# --- the independent evaluator of a rule's YAML conditions ----------------------------------------------

def merged_lines(services: list) -> list:
    """One line per code in order of first appearance: minutes added, the first group size given,
    the provider when every entry names the same one (domain.md §3.4)."""
    lines: dict = {}
    for s in services:
        line = lines.get(s["code"])
        if line is None:
            lines[s["code"]] = {"code": s["code"], "minutes": s["minutes"], "group_size": s.get("group_size"),
                                "provider": s.get("provider")}
            continue
        line["minutes"] += s["minutes"]
        if line["group_size"] is None:
            line["group_size"] = s.get("group_size")
        if line["provider"] != s.get("provider"):
            line["provider"] = None
    return list(lines.values())


COMPARE = {"lt": lambda a, b: a < b, "lte": lambda a, b: a <= b, "gt": lambda a, b: a > b,
           "gte": lambda a, b: a >= b, "ne": lambda a, b: a != b}


def holds(test, value) -> bool:
    """One field's test; `value` None means the field is not given (then only `exists: false` holds)."""
    if not isinstance(test, dict):
        return value is not None and value == test
    for op, expected in test.items():
        if op == "exists":
            ok = (value is not None) == expected
        elif value is None:
            ok = False
        elif op == "in":
            ok = value in expected
        else:
            ok = COMPARE[op](value, expected)
        if not ok:
            return False
    return True


def expected_firings(payer: dict, data: dict) -> list:
    lists = {name: {str(c) for c in items} for name, items in payer["codes"].items()}
    known = set().union(*lists.values())
    roles = {}
    for fam in payer["families"]:
        roles[fam["primary"]] = (fam, "primary")
        roles[fam["addon"]] = (fam, "addon")
    lines = merged_lines(data["services"])
    present = {line["code"] for line in lines}
    session = {"discipline": data.get("discipline"), "date_of_service": data.get("date_of_service"),
               "line_count": len(lines)}
    fired = []
    for rule in payer["rules"]:
        session_ok = all(holds(t, session[f]) for f, t in rule["when"].get("session", {}).items())
        if "line" not in rule["when"]:
            if session_ok:
                fired.append((rule["id"], "session"))
            continue
        for line in lines:
            fam, role = roles.get(line["code"], (None, None))
            values = {**line, "known": line["code"] in known, "family": fam and fam["id"], "family_role": role,
                      "has_primary": fam and fam["primary"] in present}
            ok = session_ok
            for field, test in rule["when"]["line"].items():
                if field in ("code_in", "code_not_in"):
                    inside = line["code"] in (lists[test] if isinstance(test, str) else {str(c) for c in test})
                    ok = ok and inside == (field == "code_in")
                else:
                    ok = ok and holds(test, values[field])
            if ok:
                fired.append((rule["id"], line["code"]))
    return sorted(fired)


# --- billing the payer on both engines -------------------------------------------------------------------

def firings_of(outcome) -> list:
    codes = {line.fact_id: line.code for line in outcome.lines}
    return sorted((rule.id, codes[ids[-1]] if ids[-1] != "session" else "session") for rule, ids in outcome.firings)


def why_not_firings(outcome, payer: dict) -> list:
    """The firings `explain --why-not` implies: a rule fires on each fact all of whose conditions hold."""
    out = []
    for rule in payer["rules"]:
        why = why_not_json(outcome, rule["id"])
        session_ok = all(c["matches"] for c in why["candidates"] if c["fact"] == "session"
                         and "line" in rule["when"])
        out += [(rule["id"], c["fact"]) for c in why["candidates"] if c["matches"] and session_ok
                and (c["fact"] != "session" or "line" not in rule["when"])]
    return sorted(out)


def cross_check(payer: dict, session_list: list) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rules" / "rnd.yaml"
        path.parent.mkdir()
        path.write_text(yaml.safe_dump(payer, allow_unicode=True, sort_keys=False), encoding="utf-8")
        registry = Registry([path.parent], include_bundled=False)      # strict: the file is valid
        billers = {engine: Biller(registry, engine, remember=False) for engine in ENGINES}
        remembering = Biller(registry, ENGINES[-1])
        try:
            for data in session_list * 2:       # twice: the remembering Biller answers from its memo
                session = session_from(data)
                outcomes = {engine: b.evaluate(session, "rnd") for engine, b in billers.items()}
                texts = {engine: json.dumps(o if isinstance(o, dict) else o.result, ensure_ascii=False)
                         for engine, o in outcomes.items()}
                assert len(set(texts.values())) == 1, texts
                assert "error" not in outcomes["python"].result, texts["python"]
                assert json.dumps(remembering.bill(session, "rnd"), ensure_ascii=False) == texts["python"]
                firings = {engine: firings_of(o) for engine, o in outcomes.items()}
                assert firings["python"] == expected_firings(payer, data), data
                for engine in ENGINES:
                    assert firings[engine] == firings["python"], engine
                    assert why_not_firings(outcomes[engine], payer) == firings["python"], engine
        finally:
            for b in [*billers.values(), remembering]:
                b.close()


# --- large cases past durable's limits -------------------------------------------------------------------

def big_payer(rules: list, lists: dict) -> dict:
    return {"payer": "rnd", "name": "Large payer", "method": {"name": "midpoint_per_code"}, "codes": lists,
            "families": [], "rules": [{"id": f"big-{n}", "description": "d", "source": "s", "when": when,
                                       "then": then} for n, (when, then) in enumerate(rules)]}


MANY_CODES = [str(20000 + i) for i in range(600)]
PER_CODE = big_payer([({"line": {"code": c}}, [{"max_units": i % 4}]) for i, c in enumerate(MANY_CODES)]
                     + [({"line": {}}, [{"timed_units": True}])], {"all": MANY_CODES + CODES})
IDENTICAL = big_payer([({"line": {"code_in": "all", "minutes": {"gte": 8}}}, [{"info": f"n{i} {{code}}"}])
                       for i in range(300)], {"all": CODES})
IN_LISTS = big_payer([({"line": {"code_in": f"l{k}"}, "session": {"date_of_service": {"gt": "2025-12-31"}}},
                       [{"warn": f"{k}"}]) for k in range(300)]
                     + [({"line": {"code_in": [CODES[0], CODES[0], CODES[1]]}}, [{"hold": "dup {code}"}])],
                     {**{f"l{k}": [CODES[0], CODES[1 + k % 3]] for k in range(300)}})
COMPARISONS = big_payer([({"line": {"minutes": {"gt": k}}}, [{"info": "{minutes}"}]) for k in range(70)]
                        + [({"line": {"provider": {"lt": "é"}}}, [{"modifier": "GP"}])], {"all": CODES})
MIXED = [{"session_id": "B", "discipline": "PT", "date_of_service": "2026-01-01",
          "services": [{"code": CODES[0], "minutes": 100, "provider": "PT"}, {"code": CODES[2], "minutes": 9},
                       {"code": MANY_CODES[599], "minutes": 61}, {"code": MANY_CODES[3], "minutes": 40}]}]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(payer=payers(), session_list=sessions())
@example(payer=PER_CODE, session_list=MIXED)
@example(payer=IDENTICAL, session_list=MIXED)
@example(payer=IN_LISTS, session_list=MIXED)
@example(payer=COMPARISONS, session_list=MIXED)
def test_random_payers_bill_identically_on_both_engines(payer, session_list):
    cross_check(payer, session_list)
