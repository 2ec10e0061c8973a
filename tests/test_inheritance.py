"""Payer inheritance (extends / override / disable), payer versions and rule effective dates.

Semantics under test (README, engine/loader.py):
- a child (`extends: PARENT`) takes the parent's method (its own `method:` keys override key by key), code
  lists (a child list replaces the parent's list of that name), families (by id) and rules in the parent's
  order; `override:` replaces the parent rule of that id in place, `disable:` drops parent rules, `rules:`
  appends new rules after the inherited ones;
- several files may define one payer id for effective ranges that do not overlap; the date of service
  (or --date) chooses the version; rules may carry effective_from / effective_to;
- broken inheritance is `error: FILE:LINE: PATH: message`, exit 2.

Every expected unit count is worked by hand in a comment from shared/domain.md: the CMS chart
(§3.1: units = floor((m + 7) / 15) for m >= 8), the pooled leftover allocation (§3.3), the per-code
midpoint method (§4.1) and the hour blocks (§4.3). Every expected LINE is counted by hand in the YAML text
written here (the numbers are in the comments beside the texts) and, where a trace source is checked,
the file is also read at that line to see that it really holds `id: <rule>`.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ENGINES, session_from, units_of
from engine.billing import Biller
from engine.loader import Registry
from engine.model import Method

ROOT = Path(__file__).resolve().parent.parent

# rules/medicare.yaml, its rule ids in file order (read by hand from the file) and the lines of a few `id:`s
MEDICARE_IDS = [
    "unknown-code", "timed-pool", "cognitive-family-pool", "addon-without-primary", "evaluation-one-unit",
    "untimed-one-unit", "unattended-estim-g0283", "group-one-unit", "group-size", "group-size-missing",
    "unlisted-code", "work-hardening-hours", "work-hardening-restricted", "device-evaluation-hours",
    "implant-evaluation-hours", "per-hour-testing", "modifier-gp", "modifier-go", "modifier-gn",
    "discipline-missing",
]
MEDICARE_TIMED_POOL = "rules/medicare.yaml:70"
MEDICARE_MODIFIER_GP = "rules/medicare.yaml:193"
MEDICARE_FAMILY_IDS = ["cognitive", "work-hardening", "aac-device-evaluation", "sgd-evaluation",
                       "implant-evaluation"]


# --- helpers -------------------------------------------------------------------------------------------

def run_cli(*args) -> subprocess.CompletedProcess:
    """`python -m engine ARGS...` from the repository root (the package is not changed by any test)."""
    return subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def no_traceback(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr


def write_tree(parent: Path, files: dict, name: str = "extra") -> Path:
    """Write {file name: text} into parent/name/ and return that directory (a rules tree for --rules)."""
    directory = parent / name
    directory.mkdir()
    for filename, text in files.items():
        (directory / filename).write_text(text, encoding="utf-8")
    return directory


def write_session(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def pt(*pairs, discipline="PT", **extra) -> dict:
    """pt(("97110", 33), ...) -> a session dict."""
    session = {"services": [{"code": code, "minutes": minutes} for code, minutes in pairs], **extra}
    if discipline:
        session["discipline"] = discipline
    return session


def unbilled_codes(result: dict) -> list:
    return [line["code"] for line in result["unbilled"]]


def line_of(result: dict, code: str) -> dict:
    return next(line for line in result["lines"] if line["code"] == code)


def trace_sources(result: dict) -> dict:
    """{rule id: set of trace sources}."""
    out: dict = {}
    for entry in result["trace"]:
        out.setdefault(entry["rule"], set()).add(entry["source"])
    return out


def text_at(source: str, trees: dict) -> str:
    """The text at `path:line` of a trace source; trees maps the first path part to the directory that
    holds it (rules/... lives in the repository root, a tmp tree in its parent)."""
    display, line = source.rsplit(":", 1)
    base = trees[display.split("/", 1)[0]]
    return (base / display).read_text(encoding="utf-8").splitlines()[int(line) - 1]


def assert_source_holds_id(source: str, rule_id: str, trees: dict) -> None:
    text = text_at(source, trees)
    assert re.fullmatch(rf"\s*-?\s*id:\s*{re.escape(rule_id)}\s*(#.*)?", text), (source, text)


def error_record(result: dict) -> str:
    assert set(result) == {"session_id", "error"}, result
    return result["error"]


# --- 1. CMS §20.2 examples under the bundled example-midpoint payer ----------------------------------

# domain.md §4.1: per code, units = floor((m + 7) / 15) when m >= 8, else 0; nothing pooled.
MIDPOINT_CASES = {
    # Example 1: 97112 24 -> floor(31/15) = 2; 97110 23 -> floor(30/15) = 2; total 4 (Medicare: 3)
    "example-1": ([("97112", 24), ("97110", 23)], {"97112": 2, "97110": 2}, []),
    # Example 2: 20 min each -> floor(27/15) = 1 each; total 2 (Medicare: 3)
    "example-2": ([("97112", 20), ("97110", 20)], {"97112": 1, "97110": 1}, []),
    # Example 3: 97110 33 -> floor(40/15) = 2; 97140 7 < 8 -> 0; total 2 (Medicare: 3)
    "example-3": ([("97110", 33), ("97140", 7)], {"97110": 2}, ["97140"]),
    # Example 4: 18 -> 1, 13 -> 1, 10 -> 1, 8 -> 1 (each passes 7.5 on its own); total 4 (Medicare: 3)
    "example-4": ([("97110", 18), ("97140", 13), ("97116", 10), ("97035", 8)],
                  {"97110": 1, "97140": 1, "97116": 1, "97035": 1}, []),
    # Example 5: 7 min each < 8 -> 0 each; total 0 (Medicare: 1)
    "example-5": ([("97112", 7), ("97110", 7), ("97140", 7)], {}, ["97112", "97110", "97140"]),
    # 10 + 10 + 10 of three codes: 1 each; total 3 (Medicare: chart(30) = floor(37/15) = 2)
    "10+10+10": ([("97110", 10), ("97112", 10), ("97140", 10)], {"97110": 1, "97112": 1, "97140": 1}, []),
}


@pytest.mark.parametrize("name", list(MIDPOINT_CASES))
def test_cms_examples_under_example_midpoint(bill, name):
    pairs, expected, not_billed = MIDPOINT_CASES[name]
    result = bill(pt(*pairs), payer="example-midpoint")
    assert "error" not in result, result
    assert result["payer"] == "example-midpoint"
    assert result["method"] == "midpoint_per_code"           # the child's method name replaced Medicare's
    assert units_of(result) == expected
    assert sorted(unbilled_codes(result)) == sorted(not_billed)
    assert result["total_units"] == sum(expected.values())
    # everything else is inherited from Medicare: GP on a PT session, the rule is Medicare's timed-pool
    assert all(line["modifiers"] == ["GP"] for line in result["lines"])
    assert trace_sources(result)["timed-pool"] == {MEDICARE_TIMED_POOL}


def test_example_midpoint_bills_more_than_medicare_on_example_1(bill):
    session = pt(("97112", 24), ("97110", 23))
    medicare, midpoint = bill(session, payer="medicare"), bill(session, payer="example-midpoint")
    # Medicare §3.2 Example 1: chart(47) = floor(54/15) = 3; full units 1 + 1, leftovers 9 and 8 -> 97112
    assert units_of(medicare) == {"97112": 2, "97110": 1}
    assert units_of(midpoint) == {"97112": 2, "97110": 2}      # §4.1: 4 units
    assert midpoint["total_units"] == 4 > medicare["total_units"] == 3


def test_example_midpoint_bills_fewer_than_medicare_on_example_5(bill):
    session = pt(("97112", 7), ("97110", 7), ("97140", 7))
    medicare, midpoint = bill(session, payer="medicare"), bill(session, payer="example-midpoint")
    # Medicare: chart(21) = floor(28/15) = 1 unit; equal leftovers 7/7/7, equal minutes -> first entered
    assert units_of(medicare) == {"97112": 1}
    assert units_of(midpoint) == {}                            # §4.1: 0 units
    assert midpoint["total_units"] == 0 < medicare["total_units"] == 1


def test_example_midpoint_disables_two_medicare_rules(bill, registry):
    # example-midpoint.yaml disables unattended-estim-g0283: 97014 gets no "pays G0283" warning there
    session = pt(("97014", 10))
    medicare, midpoint = bill(session, payer="medicare"), bill(session, payer="example-midpoint")
    assert "unattended-estim-g0283" in [w["rule"] for w in medicare["warnings"]]
    assert "unattended-estim-g0283" not in [w["rule"] for w in midpoint["warnings"]]
    assert units_of(midpoint) == {"97014": 1}                  # untimed-one-unit, inherited
    ids = [r.id for r in registry.resolve("example-midpoint", None).rules]
    assert ids == [i for i in MEDICARE_IDS if i not in ("unattended-estim-g0283", "work-hardening-restricted")]


# --- 2. a payer in a tmp rules tree, through the CLI ------------------------------------------------------

CLINIC = """\
payer: tmp-clinic
name: "Tmp clinic: Medicare with three changes"
extends: medicare
disable:
  - modifier-gp
override:
  - id: group-one-unit
    description: Group therapy bills two units here.
    source: "test"
    when:
      line: {code_in: group}
    then:
      - units: 2
rules:
  - id: exercise-daily-limit
    description: At most one unit of 97110 per day.
    source: "test"
    when:
      line: {code: 97110}
    then:
      - max_units: 1
"""
# Lines of CLINIC: 1 payer, 3 extends, 5 - modifier-gp, 7 - id: group-one-unit, 15 - id: exercise-daily-limit

CLINIC_SESSION = {
    "session_id": "CLINIC-1", "payer": "tmp-clinic", "date_of_service": "2026-03-02", "discipline": "PT",
    "services": [{"code": "97110", "minutes": 33}, {"code": "97140", "minutes": 10},
                 {"code": "97150", "minutes": 45, "group_size": 3}],
}
# Medicare: pool 33 + 10 = 43 -> chart floor(50/15) = 3; full units 97110 2 (leftover 3), 97140 0 (leftover
# 10); the 1 remaining unit goes to the larger leftover, 97140 -> 97110 x2, 97140 x1; 97150 x1; all GP.
# tmp-clinic: the same pool, then 97110 limited to 1 (the unit is not moved), 97150 x2 (override), no GP.
MEDICARE_CLINIC_UNITS = {"97110": 2, "97140": 1, "97150": 1}
TMP_CLINIC_UNITS = {"97110": 1, "97140": 1, "97150": 2}


@pytest.fixture
def clinic_tree(tmp_path):
    tree = write_tree(tmp_path, {"clinic.yaml": CLINIC})
    session = write_session(tmp_path / "clinic-session.json", CLINIC_SESSION)
    return tree, session


@pytest.mark.parametrize("engine_name", ENGINES)
def test_cli_bill_with_a_tmp_child_payer(clinic_tree, tmp_path, engine_name):
    tree, session = clinic_tree
    proc = run_cli("bill", session, "--rules", tree, "--format", "json", "--engine", engine_name)
    no_traceback(proc)
    assert proc.returncode == 0, proc.stderr                  # a max_units warning is severity warning
    result = json.loads(proc.stdout)
    assert result["payer"] == "tmp-clinic" and result["method"] == "cms_8_minute"
    assert units_of(result) == TMP_CLINIC_UNITS
    assert all(line["modifiers"] == [] for line in result["lines"])       # modifier-gp disabled
    assert result["total_units"] == 4                                       # 1 + 1 + 2
    assert "exercise-daily-limit" in line_of(result, "97110")["rules"]
    limits = [w for w in result["warnings"] if w["rule"] == "exercise-daily-limit"]
    assert len(limits) == 1 and limits[0]["severity"] == "warning" and limits[0]["codes"] == ["97110"]
    assert re.search(r"\b2\b.*\b1\b", limits[0]["message"]), limits[0]     # 2 earned, 1 billed
    sources = trace_sources(result)
    trees = {"rules": ROOT, "extra": tmp_path}
    assert sources["group-one-unit"] == {"extra/clinic.yaml:7"}
    assert sources["exercise-daily-limit"] == {"extra/clinic.yaml:15"}
    assert sources["timed-pool"] == {MEDICARE_TIMED_POOL}
    assert "modifier-gp" not in sources
    for rule, found in sources.items():
        for source in found:
            assert_source_holds_id(source, rule, trees)


def test_cli_same_session_under_medicare_is_unchanged(clinic_tree):
    tree, session = clinic_tree
    proc = run_cli("bill", session, "--rules", tree, "--payer", "medicare", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert units_of(result) == MEDICARE_CLINIC_UNITS
    assert all(line["modifiers"] == ["GP"] for line in result["lines"])


def test_cli_compare_medicare_with_tmp_child(clinic_tree):
    tree, session = clinic_tree
    proc = run_cli("compare", session, "--rules", tree, "--payers", "medicare,tmp-clinic", "--format", "json")
    no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    comparison = json.loads(proc.stdout)
    rows = {row["code"]: row["units"] for row in comparison["rows"]}
    assert rows == {code: {"medicare": MEDICARE_CLINIC_UNITS[code], "tmp-clinic": TMP_CLINIC_UNITS[code]}
                    for code in ("97110", "97140", "97150")}
    assert sorted(comparison["differs"]) == ["97110", "97150"]
    assert comparison["totals"] == {"medicare": 4, "tmp-clinic": 4}
    table = run_cli("compare", session, "--rules", tree, "--payers", "medicare,tmp-clinic")
    assert table.returncode == 0, table.stderr
    # cells against the first payer: 97110 1 vs 2 -> "1 (-1)"; 97150 2 vs 1 -> "2 (+1)"
    assert re.search(r"97110\s.*\b2\s+1 \(-1\)", table.stdout), table.stdout
    assert re.search(r"97150\s.*\b1\s+2 \(\+1\)", table.stdout), table.stdout


def test_cli_validate_tmp_child_dir_and_file(clinic_tree):
    tree, _ = clinic_tree
    proc = run_cli("validate", tree)
    no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    assert f"ok   {(tree / 'clinic.yaml').as_posix()}" in proc.stdout.splitlines()
    proc = run_cli("validate", tree / "clinic.yaml")
    assert proc.returncode == 0, proc.stderr
    assert f"ok   {(tree / 'clinic.yaml').as_posix()}" in proc.stdout.splitlines()


def test_cli_tmp_payer_is_not_added_to_the_package(clinic_tree):
    tree, session = clinic_tree
    listed = json.loads(run_cli("payers", "--format", "json").stdout)
    assert "tmp-clinic" not in {p["id"] for p in listed}
    listed = json.loads(run_cli("payers", "--format", "json", "--rules", tree).stdout)
    entry = [p for p in listed if p["id"] == "tmp-clinic"]
    assert len(entry) == 1 and entry[0]["extends"] == "medicare" and entry[0]["file"] == "extra/clinic.yaml"
    proc = run_cli("bill", session, "--payer", "tmp-clinic")              # without --rules: unknown payer
    no_traceback(proc)
    assert proc.returncode == 2 and "tmp-clinic" in proc.stderr


# --- 3. inheritance in-process: Registry([tmp tree]) -------------------------------------------------------

TREE = {
    # tmp-method: one method key only; name, unit_minutes and tie_break come from Medicare
    "method.yaml": """\
payer: tmp-method
name: Medicare with a full 15 minutes for the first unit
extends: medicare
method:
  first_unit_minutes: 15
""",
    # tmp-codes: timed_15 replaced by a two-code list; every other list inherited
    "codes.yaml": """\
payer: tmp-codes
name: Medicare with a shorter timed list
extends: medicare
codes:
  timed_15: [97110, 97140]
""",
    # tmp-disable
    "disable.yaml": """\
payer: tmp-disable
name: Medicare without GP and without the G0283 warning
extends: medicare
disable:
  - modifier-gp
  - unattended-estim-g0283
""",
    # tmp-override: lines 8 (- id: group-one-unit) and 16 (- id: exercise-note)
    "override.yaml": """\
payer: tmp-override
name: Medicare with an overridden rule and a new one
extends: medicare
# group therapy bills 2 units here;
# a new informational rule follows
# the inherited ones
override:
  - id: group-one-unit
    description: Group therapy bills two units here.
    source: "test"
    when:
      line: {code_in: group}
    then:
      - units: 2
rules:
  - id: exercise-note
    description: A note on every 97110 line.
    source: "test"
    when:
      line: {code: 97110}
    then:
      - info: "{code}: {minutes} min of therapeutic exercise"
""",
    # tmp-grandchild: a child of tmp-override (itself a child of medicare) that drops the rule its parent added
    "grandchild.yaml": """\
payer: tmp-grandchild
name: Child of tmp-override without its note
extends: tmp-override
disable:
  - exercise-note
""",
    # tmp-families: implant-evaluation redefined by id without its add-on
    "families.yaml": """\
payer: tmp-families
name: Medicare with 92627 billed on its own
extends: medicare
families:
  - id: implant-evaluation
    primary: 92626
""",
    # tmp-versioned, two versions: 2025 (first unit at 8 min) and 2026 on (first unit at 15 min)
    "ver2025.yaml": """\
payer: tmp-versioned
name: Versioned payer (2025)
effective_from: 2025-01-01
effective_to: 2025-12-31
method:
  name: cms_8_minute
  first_unit_minutes: 8
codes:
  timed_15: [97110, 97140]
rules:
  - id: timed-pool
    description: Timed codes share the pool.
    source: "test"
    when:
      line: {code_in: timed_15}
    then:
      - timed_units: true
""",
    "ver2026.yaml": """\
payer: tmp-versioned
name: Versioned payer (2026)
effective_from: 2026-01-01
method:
  name: cms_8_minute
  first_unit_minutes: 15
codes:
  timed_15: [97110, 97140]
rules:
  - id: timed-pool
    description: Timed codes share the pool.
    source: "test"
    when:
      line: {code_in: timed_15}
    then:
      - timed_units: true
""",
    # a child of the two-version payer: takes whichever version is in effect
    "verchild.yaml": """\
payer: tmp-versioned-child
name: Child of the versioned payer
extends: tmp-versioned
""",
    # tmp-dated-rule: one rule id, two date ranges; `- id: per-hour` on lines 8 and 16
    "datedrule.yaml": """\
payer: tmp-dated-rule
name: Per-hour testing with thresholds that change in 2026
method:
  name: cms_8_minute
codes:
  per_hour: [96105]
rules:
  - id: per-hour
    description: One unit per hour, an hour from 31 minutes (through 2025).
    source: "test"
    effective_to: 2025-12-31
    when:
      line: {code_in: per_hour}
    then:
      - block_units: {first_minutes: 60, first_min_minutes: 31, next_minutes: 60, next_min_minutes: 31}
  - id: per-hour
    description: One unit per whole hour (from 2026).
    source: "test"
    effective_from: 2026-01-01
    when:
      line: {code_in: per_hour}
    then:
      - block_units: {first_minutes: 60, first_min_minutes: 60, next_minutes: 60, next_min_minutes: 60}
""",
}


@pytest.fixture(scope="module")
def inh_tree(tmp_path_factory):
    return write_tree(tmp_path_factory.mktemp("inheritance"), TREE, "inh")


@pytest.fixture(scope="module")
def inh_registry(inh_tree):
    return Registry([inh_tree])            # strict: raises on the first error of any file


@pytest.fixture(scope="module")
def inh_billers(inh_registry):
    made = {engine: Biller(inh_registry, engine) for engine in ENGINES}
    yield made
    for biller in made.values():
        biller.close()


@pytest.fixture
def ibill(inh_billers, engine):
    """ibill(session dict, payer, date=None) on the parametrised engine, against the tmp tree + bundled."""
    def run(data: dict, payer: str, date: str | None = None):
        return inh_billers[engine].bill(session_from(data), payer, date)
    return run


def inh_trees(inh_tree) -> dict:
    return {"rules": ROOT, "inh": inh_tree.parent}


def test_method_key_override_keeps_the_other_keys(inh_registry):
    payer = inh_registry.resolve("tmp-method", None)
    medicare = inh_registry.resolve("medicare", None)
    assert medicare.method == Method("cms_8_minute", 15, 8, ("minutes", "order", "code"))
    assert payer.method == Method("cms_8_minute", 15, 15, ("minutes", "order", "code"))


# tmp-method chart: units = 0 if m < 15 else 1 + (m - 15) // 15;  Medicare: floor((m + 7) / 15) for m >= 8
@pytest.mark.parametrize("minutes, child_units, medicare_units", [
    (14, 0, 1),     # 14 < 15                    | floor(21/15) = 1
    (15, 1, 1),     # 1 + 0                      | floor(22/15) = 1
    (22, 1, 1),     # 1 + 7 // 15 = 1            | floor(29/15) = 1
    (29, 1, 2),     # 1 + 14 // 15 = 1           | floor(36/15) = 2
    (30, 2, 2),     # 1 + 15 // 15 = 2           | floor(37/15) = 2
    (44, 2, 3),     # 1 + 29 // 15 = 2           | floor(51/15) = 3
    (45, 3, 3),     # 1 + 30 // 15 = 3           | floor(52/15) = 3
])
def test_method_key_override_chart(ibill, minutes, child_units, medicare_units):
    child, medicare = ibill(pt(("97110", minutes)), "tmp-method"), ibill(pt(("97110", minutes)), "medicare")
    assert units_of(child) == ({"97110": child_units} if child_units else {})
    assert units_of(medicare) == {"97110": medicare_units}
    assert child["method"] == "cms_8_minute"


def test_method_key_override_is_still_pooled(ibill):
    # 97110 10 + 97140 10: pooled, total 20 -> 1 + (20 - 15) // 15 = 1 unit; leftovers 10 and 10 tie, equal
    # minutes, 97110 entered first -> 97110 x1. Per code (15-min first unit) it would be 0 + 0.
    result = ibill(pt(("97110", 10), ("97140", 10)), "tmp-method")
    assert units_of(result) == {"97110": 1}
    assert unbilled_codes(result) == ["97140"]
    assert result["total_timed_minutes"] == 20 and result["total_timed_units"] == 1
    assert line_of(result, "97110")["modifiers"] == ["GP"]            # rules inherited
    # Medicare: chart(20) = floor(27/15) = 1 too, but 97110 7 + 97140 7 = 14 -> Medicare 1, tmp-method 0
    assert units_of(ibill(pt(("97110", 7), ("97140", 7)), "tmp-method")) == {}
    assert units_of(ibill(pt(("97110", 7), ("97140", 7)), "medicare")) == {"97110": 1}


def test_code_list_replaced_other_lists_inherited(inh_registry, ibill):
    payer, medicare = inh_registry.resolve("tmp-codes", None), inh_registry.resolve("medicare", None)
    assert payer.codes["timed_15"] == frozenset({"97110", "97140"})
    assert "97530" in medicare.codes["timed_15"]
    assert {name: codes for name, codes in payer.codes.items() if name != "timed_15"} == \
        {name: codes for name, codes in medicare.codes.items() if name != "timed_15"}
    # 97530 is in no list of tmp-codes -> unknown-code: error + hold, its minutes stay out of the pool;
    # pool = 97110 20 -> floor(27/15) = 1; the evaluation still bills 1 unit (list inherited).
    result = ibill(pt(("97110", 20), ("97530", 20), ("97161", 30)), "tmp-codes")
    assert units_of(result) == {"97110": 1, "97161": 1}
    assert unbilled_codes(result) == ["97530"]
    assert [w["rule"] for w in result["warnings"] if w["severity"] == "error"] == ["unknown-code"]
    assert result["total_timed_minutes"] == 20
    # Medicare: pool 40 -> floor(47/15) = 3; full 1 + 1, leftovers 5 and 5 -> 1 more (tie) -> 3 timed units
    medicare_result = ibill(pt(("97110", 20), ("97530", 20), ("97161", 30)), "medicare")
    assert medicare_result["total_timed_units"] == 3 and "97530" in units_of(medicare_result)


def test_disable_drops_parent_rules(inh_registry, ibill):
    ids = [r.id for r in inh_registry.resolve("tmp-disable", None).rules]
    assert ids == [i for i in MEDICARE_IDS if i not in ("modifier-gp", "unattended-estim-g0283")]
    # PT: no GP (disabled) and no G0283 warning on 97014; untimed 97014 still 1 unit; 97110 20 -> 1 unit
    result = ibill(pt(("97110", 20), ("97014", 10)), "tmp-disable")
    assert units_of(result) == {"97110": 1, "97014": 1}
    assert all(line["modifiers"] == [] for line in result["lines"])
    assert "unattended-estim-g0283" not in [w["rule"] for w in result["warnings"]]
    medicare = ibill(pt(("97110", 20), ("97014", 10)), "medicare")
    assert all(line["modifiers"] == ["GP"] for line in medicare["lines"])
    assert "unattended-estim-g0283" in [w["rule"] for w in medicare["warnings"]]
    # OT: modifier-go was not disabled
    ot = ibill(pt(("97110", 20), discipline="OT"), "tmp-disable")
    assert line_of(ot, "97110")["modifiers"] == ["GO"]


def test_override_in_place_and_new_rules_appended(inh_registry):
    payer = inh_registry.resolve("tmp-override", None)
    ids = [r.id for r in payer.rules]
    assert ids == MEDICARE_IDS + ["exercise-note"]
    medicare = inh_registry.resolve("medicare", None)
    parent_rule = next(r for r in medicare.rules if r.id == "group-one-unit")
    child_rule = next(r for r in payer.rules if r.id == "group-one-unit")
    assert child_rule.index == parent_rule.index == MEDICARE_IDS.index("group-one-unit") == 7
    assert [(a.kind, a.value) for a in child_rule.then] == [("units", 2)]
    assert (child_rule.file, child_rule.line) == ("inh/override.yaml", 8)
    assert (parent_rule.file, parent_rule.line) == ("rules/medicare.yaml", 119)
    new_rule = payer.rules[-1]
    assert (new_rule.id, new_rule.index, new_rule.file, new_rule.line) == \
        ("exercise-note", len(MEDICARE_IDS), "inh/override.yaml", 16)
    # every other rule is Medicare's own, from Medicare's file
    assert all(r.file == "rules/medicare.yaml" for r in payer.rules if r.id not in ("group-one-unit", "exercise-note"))


def test_override_and_new_rule_take_effect(ibill):
    # 97150 group of 3 -> 2 units (override); 97110 20 -> floor(27/15) = 1 unit plus the new info note
    session = pt(("97110", 20))
    session["services"].append({"code": "97150", "minutes": 45, "group_size": 3})
    result = ibill(session, "tmp-override")
    assert units_of(result) == {"97110": 1, "97150": 2}
    notes = [w for w in result["warnings"] if w["rule"] == "exercise-note"]
    assert [(w["severity"], w["message"], w["codes"]) for w in notes] == \
        [("info", "97110: 20 min of therapeutic exercise", ["97110"])]
    assert "exercise-note" in line_of(result, "97110")["rules"]
    assert units_of(ibill(session, "medicare")) == {"97110": 1, "97150": 1}
    # the trace is in rule order: the appended rule fires after every inherited one
    order = [entry["rule"] for entry in result["trace"]]
    assert order[-1] == "exercise-note"
    assert order.index("group-one-unit") > order.index("timed-pool")


def test_trace_sources_child_vs_parent_file(ibill, inh_tree):
    session = pt(("97110", 20))
    session["services"].append({"code": "97150", "minutes": 45, "group_size": 3})
    result = ibill(session, "tmp-override")
    sources = trace_sources(result)
    assert sources["group-one-unit"] == {"inh/override.yaml:8"}       # the child's override
    assert sources["exercise-note"] == {"inh/override.yaml:16"}       # the child's new rule
    assert sources["timed-pool"] == {MEDICARE_TIMED_POOL}             # inherited: Medicare's file and line
    assert sources["modifier-gp"] == {MEDICARE_MODIFIER_GP}
    for rule, found in sources.items():
        for source in found:
            assert_source_holds_id(source, rule, inh_trees(inh_tree))


def test_three_level_chain(inh_registry, ibill, inh_tree):
    payer = inh_registry.resolve("tmp-grandchild", None)
    assert [r.id for r in payer.rules] == MEDICARE_IDS             # exercise-note (from tmp-override) dropped
    where = {r.id: (r.file, r.line) for r in payer.rules}
    assert where["group-one-unit"] == ("inh/override.yaml", 8)      # the middle file's override, kept in place
    assert where["timed-pool"] == ("rules/medicare.yaml", 70)       # the grandparent's rule, its own file
    session = pt(("97110", 20))
    session["services"].append({"code": "97150", "minutes": 45, "group_size": 3})
    result = ibill(session, "tmp-grandchild")
    assert units_of(result) == {"97110": 1, "97150": 2}            # 97110: floor(27/15) = 1; 97150 override: 2
    assert "exercise-note" not in [w["rule"] for w in result["warnings"]]
    assert trace_sources(result)["group-one-unit"] == {"inh/override.yaml:8"}
    for rule, found in trace_sources(result).items():
        for source in found:
            assert_source_holds_id(source, rule, inh_trees(inh_tree))


def test_family_replaced_by_id(inh_registry, ibill):
    payer = inh_registry.resolve("tmp-families", None)
    assert [f.id for f in payer.families] == MEDICARE_FAMILY_IDS
    assert payer.family("implant-evaluation").addon is None
    assert payer.family("cognitive").addon == "97130"
    # 92627 alone: Medicare holds it (add-on without its primary 92626); in tmp-families it is no add-on,
    # so implant-evaluation-hours bills it: 45 >= 31 -> 1 unit, 45 - 60 < 0 -> no more
    medicare = ibill(pt(("92627", 45), discipline="SLP"), "medicare")
    assert units_of(medicare) == {} and unbilled_codes(medicare) == ["92627"]
    child = ibill(pt(("92627", 45), discipline="SLP"), "tmp-families")
    assert units_of(child) == {"92627": 1}
    assert line_of(child, "92627")["modifiers"] == ["GN"]


# --- 4. effective dates: payer versions and dated rules ----------------------------------------------------

def test_versions_resolved_by_date(inh_registry):
    early = inh_registry.resolve("tmp-versioned", "2025-12-31")
    late = inh_registry.resolve("tmp-versioned", "2026-01-01")
    assert (early.file, early.method.first_unit_minutes) == ("inh/ver2025.yaml", 8)
    assert (late.file, late.method.first_unit_minutes) == ("inh/ver2026.yaml", 15)


# 97110 alone. 2025 (first 8): 14 -> 1 + 6 // 15 = 1; 40 -> 1 + 32 // 15 = 3.
#              2026 (first 15): 14 -> 0;            40 -> 1 + 25 // 15 = 2.
@pytest.mark.parametrize("payer", ["tmp-versioned", "tmp-versioned-child"])
@pytest.mark.parametrize("date, minutes, units", [
    ("2025-01-01", 14, 1), ("2025-12-31", 14, 1), ("2026-01-01", 14, 0), ("2031-06-01", 14, 0),
    ("2025-06-01", 40, 3), ("2026-06-01", 40, 2),
])
def test_version_chosen_by_date_of_service(ibill, payer, date, minutes, units):
    result = ibill(pt(("97110", minutes), date_of_service=date), payer)
    assert "error" not in result, result
    assert units_of(result) == ({"97110": units} if units else {})
    # and by the date argument (--date), which wins over the session's own date
    result = ibill(pt(("97110", minutes), date_of_service="2025-06-01" if date >= "2026" else "2026-06-01"),
                   payer, date)
    assert units_of(result) == ({"97110": units} if units else {})


@pytest.mark.parametrize("payer", ["tmp-versioned", "tmp-versioned-child"])
def test_date_before_every_version_is_an_error_record(ibill, payer):
    result = ibill(pt(("97110", 40), date_of_service="2024-12-31", session_id="OLD"), payer)
    message = error_record(result)
    assert result["session_id"] == "OLD"
    assert "no version in effect on 2024-12-31" in message


@pytest.mark.parametrize("payer", ["tmp-versioned", "tmp-versioned-child"])
def test_no_date_with_two_versions_is_an_error_record(ibill, payer):
    result = ibill(pt(("97110", 40), session_id="NODATE"), payer)
    message = error_record(result)
    assert result["session_id"] == "NODATE"
    assert "date_of_service" in message


# 96105 under tmp-dated-rule. Through 2025 (hour from 31): 45 -> 1; 100 -> 1 + (40 // 60 = 0) + (40 >= 31) = 2.
# From 2026 (whole hours): 45 < 60 -> 0; 100 -> 1 + 0 + (40 >= 60: no) = 1.
@pytest.mark.parametrize("date, minutes, units, line", [
    ("2025-12-31", 45, 1, 8), ("2026-01-01", 45, 0, 16), ("2025-03-01", 100, 2, 8), ("2026-03-01", 100, 1, 16),
])
def test_rule_level_dates_choose_the_rule(ibill, inh_tree, date, minutes, units, line):
    result = ibill(pt(("96105", minutes), date_of_service=date), "tmp-dated-rule")
    assert "error" not in result, result
    assert units_of(result) == ({"96105": units} if units else {})
    assert trace_sources(result)["per-hour"] == {f"inh/datedrule.yaml:{line}"}
    assert_source_holds_id(f"inh/datedrule.yaml:{line}", "per-hour", inh_trees(inh_tree))


def test_rule_level_dates_need_a_date(ibill):
    result = ibill(pt(("96105", 45), session_id="ND"), "tmp-dated-rule")
    assert "date_of_service" in error_record(result)


# Bundled example-full-unit: 97545/97546 family, block_units first 120 (from 61), next 60; the next hour counts
# from 31 min through 2025 and only whole (60 min) from 2026.
@pytest.mark.parametrize("date, minutes, expected", [
    # 210: 210 - 120 = 90 = 1 whole hour + 30; 30 < 31 -> 97545 x1 + 97546 x1 (domain.md §4.3) both years
    ("2025-12-31", 210, {"97545": 1, "97546": 1}),
    ("2026-01-01", 210, {"97545": 1, "97546": 1}),
    # 211: 91 = 1 hour + 31; 2025: 31 >= 31 -> 97546 x2; 2026: 31 < 60 -> 97546 x1
    ("2025-12-31", 211, {"97545": 1, "97546": 2}),
    ("2026-01-01", 211, {"97545": 1, "97546": 1}),
    # 240: 120 = 2 whole hours -> 97546 x2 both years
    ("2026-06-01", 240, {"97545": 1, "97546": 2}),
])
def test_example_full_unit_work_hardening_by_date(bill, date, minutes, expected):
    result = bill(pt(("97545", minutes), discipline=None, date_of_service=date), payer="example-full-unit")
    assert "error" not in result, result
    assert units_of(result) == expected


def test_example_full_unit_without_a_date_is_an_error_record(bill):
    result = bill(pt(("97545", 210), discipline=None), payer="example-full-unit")
    assert "date_of_service" in error_record(result)


# Bundled example-unit-limits (extends medicare): 97140 50 min -> chart floor(57/15) = 3 units earned.
# Limit 3 through 2025 -> 3 billed, no limit warning; limit 2 from 2026 -> 2 billed with a warning.
@pytest.mark.parametrize("date, units, warned", [("2025-12-31", 3, False), ("2026-01-01", 2, True)])
def test_example_unit_limits_by_date(bill, date, units, warned):
    result = bill(pt(("97140", 50), date_of_service=date), payer="example-unit-limits")
    assert "error" not in result, result
    assert units_of(result) == {"97140": units}
    assert line_of(result, "97140")["modifiers"] == ["GP"]               # inherited from Medicare
    limits = [w for w in result["warnings"] if w["rule"] == "manual-therapy-daily-limit"]
    assert bool(limits) is warned
    if warned:
        assert limits[0]["severity"] == "warning" and limits[0]["codes"] == ["97140"]
        assert re.search(r"\b3\b.*\b2\b", limits[0]["message"]), limits[0]  # 3 earned, 2 billed
    assert bill(pt(("97140", 50), date_of_service=date), payer="medicare")["lines"][0]["units"] == 3


def test_example_unit_limits_without_a_date_is_an_error_record(bill):
    result = bill(pt(("97140", 50)), payer="example-unit-limits")
    assert "date_of_service" in error_record(result)


@pytest.fixture
def version_tree(tmp_path):
    return write_tree(tmp_path, {name: TREE[name] for name in ("ver2025.yaml", "ver2026.yaml")})


@pytest.mark.parametrize("session_date, option, units", [
    ("2025-06-01", None, 1),            # 2025 version: 97110 14 -> 1
    ("2026-06-01", None, 0),            # 2026 version: 14 < 15 -> 0
    ("2026-06-01", "2025-06-01", 1),    # --date wins over the session's date
    ("2025-06-01", "2026-06-01", 0),
])
def test_cli_version_chosen_by_date(version_tree, tmp_path, session_date, option, units):
    session = write_session(tmp_path / "s.json", pt(("97110", 14), session_id="V", payer="tmp-versioned",
                                                    date_of_service=session_date))
    args = ["bill", session, "--rules", version_tree, "--format", "json"] + (["--date", option] if option else [])
    proc = run_cli(*args)
    no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    assert units_of(json.loads(proc.stdout)) == ({"97110": 1} if units else {})


@pytest.mark.parametrize("date, fragment", [("2024-12-31", "no version in effect on 2024-12-31"),
                                            (None, "date_of_service")])
def test_cli_no_version_or_no_date_is_an_error_record(version_tree, tmp_path, date, fragment):
    data = pt(("97110", 14), session_id="V", payer="tmp-versioned")
    if date:
        data["date_of_service"] = date
    proc = run_cli("bill", write_session(tmp_path / "s.json", data), "--rules", version_tree, "--format", "json")
    no_traceback(proc)
    assert proc.returncode == 1, proc.stderr
    record = json.loads(proc.stdout)
    assert record["session_id"] == "V" and fragment in error_record(record)
    assert "session V" in proc.stderr


def test_cli_compare_with_date_option_across_versions(version_tree, tmp_path):
    # 97110 40: medicare floor(47/15) = 3; tmp-versioned 2026: 1 + 25 // 15 = 2
    session = write_session(tmp_path / "s.json", pt(("97110", 40), session_id="C"))
    proc = run_cli("compare", session, "--rules", version_tree, "--payers", "medicare,tmp-versioned",
                   "--date", "2026-02-01", "--format", "json")
    no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["totals"] == {"medicare": 3, "tmp-versioned": 2}


# A child may disable or override a parent rule that is only in effect for some dates. The file is valid
# (the parent has the rule); on a date when the parent's rule is not in effect the child is still billable.
DATED_PARENT = """\
payer: tmp-dated-parent
name: Parent with a rule that ends in 2025
method:
  name: cms_8_minute
codes:
  timed_15: [97110, 97140]
rules:
  - id: timed-pool
    description: Timed codes share the pool.
    source: "test"
    when:
      line: {code_in: timed_15}
    then:
      - timed_units: true
  - id: note-2025
    description: A note through 2025.
    source: "test"
    effective_to: 2025-12-31
    when:
      line: {code: 97110}
    then:
      - info: "{code} noted"
"""
DATED_CHILDREN = {
    "disable": """\
payer: tmp-dated-child
name: Child without the note
extends: tmp-dated-parent
disable:
  - note-2025
""",
    "override": """\
payer: tmp-dated-child
name: Child with its own note
extends: tmp-dated-parent
override:
  - id: note-2025
    description: The child's note.
    source: "test"
    when:
      line: {code: 97110}
    then:
      - info: "{code} noted by the child"
""",
}


@pytest.mark.parametrize("kind", list(DATED_CHILDREN))
@pytest.mark.parametrize("date", ["2025-06-01", "2026-06-01"])
def test_child_of_a_dated_parent_rule_is_billable_on_every_date(tmp_path, kind, date):
    tree = write_tree(tmp_path, {"parent.yaml": DATED_PARENT, "child.yaml": DATED_CHILDREN[kind]})
    assert run_cli("validate", tree).returncode == 0
    session = write_session(tmp_path / "s.json", pt(("97110", 20), session_id="D", payer="tmp-dated-child"))
    proc = run_cli("bill", session, "--rules", tree, "--date", date, "--format", "json")
    no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert units_of(result) == {"97110": 1}                # floor(27/15) = 1
    notes = [w["message"] for w in result["warnings"]]
    # disable: no note on any date. override (the child's rule has no dates): the child's note.
    assert notes == ([] if kind == "disable" else ["97110 noted by the child"])


# --- 5. inheritance and version errors: exit 2, FILE:LINE: PATH: message ----------------------------------

def error_lines(stderr: str, display: str, line: int, path: str | None) -> list:
    prefix = f"error: {re.escape(display)}:{line}: " + (re.escape(path) + ": " if path else "")
    return [m.group(1) for m in re.finditer(f"^{prefix}(.+)$", stderr, re.M)]


def check_refused(proc, display: str, line: int, path: str | None, *fragments: str) -> None:
    no_traceback(proc)
    assert proc.returncode == 2, (proc.args, proc.returncode, proc.stderr)
    messages = error_lines(proc.stderr, display, line, path)
    assert messages, f"no `error: {display}:{line}: {path or ''}` in stderr of {proc.args}:\n{proc.stderr}"
    assert any(all(f.lower() in m.lower() for f in fragments) for m in messages), (fragments, messages)


def check_both(tmp_path, files: dict, bad: str, line: int, path: str | None, *fragments, payer=None,
               validate_file=True) -> None:
    """validate (the bad FILE by name, or the DIR) and bill --rules DIR both refuse, at FILE:LINE."""
    tree = write_tree(tmp_path, files)
    if validate_file:
        proc = run_cli("validate", tree / bad)
        check_refused(proc, (tree / bad).as_posix(), line, path, *fragments)
    proc = run_cli("validate", tree)
    check_refused(proc, (tree / bad).as_posix(), line, path, *fragments)
    args = ["bill", "examples/ot-session.yaml", "--rules", tree] + (["--payer", payer] if payer else [])
    proc = run_cli(*args)
    check_refused(proc, (tree / bad).as_posix(), line, path, *fragments)
    assert proc.stdout == ""


def test_new_rule_with_a_parent_rule_id(tmp_path):
    text = """\
payer: tmp-bad
name: Bad child
extends: medicare
rules:
  - id: timed-pool
    description: Tries to add a second timed-pool.
    source: "test"
    when:
      line: {code_in: timed_15}
    then:
      - timed_units: true
"""
    # line 5: `- id: timed-pool` under rules:
    check_both(tmp_path, {"bad.yaml": text}, "bad.yaml", 5, "rules[0].id", "timed-pool", "override",
               payer="tmp-bad")


def test_override_of_an_id_the_parent_lacks(tmp_path):
    text = """\
payer: tmp-bad
name: Bad child
extends: medicare
override:
  - id: group-one-unit
    description: Group therapy bills two units.
    source: "test"
    when:
      line: {code_in: group}
    then:
      - units: 2
  - id: timed-pools
    description: Not a Medicare rule id.
    source: "test"
    when:
      line: {code_in: timed_15}
    then:
      - timed_units: true
"""
    # line 12: `- id: timed-pools` (override[1]); the first override is valid
    check_both(tmp_path, {"bad.yaml": text}, "bad.yaml", 12, "override[1].id", "timed-pools", "medicare",
               payer="tmp-bad")


def test_override_without_extends(tmp_path):
    text = """\
payer: tmp-bad
name: Bad stand-alone payer
method:
  name: cms_8_minute
codes:
  timed_15: [97110]
rules:
  - id: timed-pool
    description: Timed codes share the pool.
    source: "test"
    when:
      line: {code_in: timed_15}
    then:
      - timed_units: true
override:
  - id: group-one-unit
    description: There is no parent to override.
    source: "test"
    when:
      line: {code: 97110}
    then:
      - units: 2
"""
    # line 16: `- id: group-one-unit` under override:, and the payer has no extends:
    check_both(tmp_path, {"bad.yaml": text}, "bad.yaml", 16, "override[0].id", "group-one-unit",
               payer="tmp-bad")


def test_disable_of_an_id_the_parent_lacks(tmp_path):
    text = """\
payer: tmp-bad
name: Bad child
extends: medicare
disable:
  - modifier-gp
  - modifier-gx
"""
    # line 6: the second disable entry
    check_both(tmp_path, {"bad.yaml": text}, "bad.yaml", 6, "disable[1]", "modifier-gx", "medicare",
               payer="tmp-bad")


def test_extends_unknown_payer(tmp_path):
    text = """\
payer: tmp-bad
name: Bad child
description: extends a payer that does not exist
extends: medicar
"""
    # line 4: extends
    check_both(tmp_path, {"bad.yaml": text}, "bad.yaml", 4, "extends", "unknown payer", "medicar",
               payer="tmp-bad")


def test_extends_cycle(tmp_path):
    files = {
        "a.yaml": "payer: tmp-a\nname: A\nextends: tmp-b\n",                               # extends: line 3
        "b.yaml": "payer: tmp-b\nname: B\ndescription: B extends A\nextends: tmp-a\n",      # extends: line 4
    }
    check_both(tmp_path, files, "a.yaml", 3, "extends", "cycle", payer="tmp-a", validate_file=False)
    # validate names both files of the cycle, each at its own extends: line
    proc = run_cli("validate", tmp_path / "extra")
    check_refused(proc, (tmp_path / "extra/b.yaml").as_posix(), 4, "extends", "cycle")


def test_extends_itself(tmp_path):
    text = "# a payer that names itself as its parent\npayer: tmp-bad\nname: Bad\nextends: tmp-bad\n"
    # line 4: extends
    check_both(tmp_path, {"bad.yaml": text}, "bad.yaml", 4, "extends", "itself", payer="tmp-bad")


def test_overlapping_versions(tmp_path):
    files = {
        # open-ended from 2025: overlaps the 2026 version
        "v1.yaml": TREE["ver2025.yaml"].replace("effective_to: 2025-12-31\n", ""),
        "v2.yaml": "# the 2026 version\n" + TREE["ver2026.yaml"],
    }
    assert "effective_to" not in files["v1.yaml"]
    # the overlap is reported in both files, each at its payer: key (v1 line 1, v2 line 2); bill shows the
    # first error by file name (v1), validate lists both
    check_both(tmp_path, files, "v1.yaml", 1, "payer", "tmp-versioned", "overlap", payer="tmp-versioned",
               validate_file=False)
    proc = run_cli("validate", tmp_path / "extra")
    assert error_lines(proc.stderr, (tmp_path / "extra/v2.yaml").as_posix(), 2, "payer"), proc.stderr


def test_versions_that_touch_do_not_overlap(tmp_path):
    # 2025-01-01..2025-12-31 and 2026-01-01.. share no day: valid
    tree = write_tree(tmp_path, {name: TREE[name] for name in ("ver2025.yaml", "ver2026.yaml")})
    proc = run_cli("validate", tree)
    assert proc.returncode == 0, proc.stderr


def test_same_rule_id_with_overlapping_dates(tmp_path):
    text = TREE["datedrule.yaml"].replace("effective_from: 2026-01-01", "effective_from: 2025-07-01")
    assert text != TREE["datedrule.yaml"]
    # second `- id: per-hour` (line 16) overlaps the first (line 8) from 2025-07-01 to 2025-12-31
    check_both(tmp_path, {"bad.yaml": text}, "bad.yaml", 16, "rules[1].id", "duplicate rule id", "line 8",
               payer="tmp-dated-rule")


def test_same_id_disabled_and_overridden_is_refused_cleanly(tmp_path):
    # Contradictory: disable drops group-one-unit, override replaces it. Whatever the engine decides, it must
    # not crash: either a rule-file error at the disable entry (line 5) or the override entry (line 7), or
    # the file is accepted; never a traceback.
    text = """\
payer: tmp-both
name: Child that disables and overrides one rule
extends: medicare
disable:
  - group-one-unit
override:
  - id: group-one-unit
    description: Group therapy bills two units here.
    source: "test"
    when:
      line: {code_in: group}
    then:
      - units: 2
"""
    tree = write_tree(tmp_path, {"both.yaml": text})
    for proc in (run_cli("validate", tree), run_cli("bill", "examples/ot-session.yaml", "--rules", tree)):
        no_traceback(proc)
        assert proc.returncode in (0, 2), (proc.args, proc.returncode, proc.stderr)
        if proc.returncode == 2:
            assert error_lines(proc.stderr, (tree / "both.yaml").as_posix(), 5, "disable[0]") or \
                error_lines(proc.stderr, (tree / "both.yaml").as_posix(), 7, "override[0].id"), proc.stderr


def test_child_method_key_error_is_reported_in_the_child(tmp_path):
    # The child sets first_unit_minutes 20 > unit_minutes 15 (inherited): the offending key is the child's
    # (line 5, method.first_unit_minutes), not Medicare's `first_unit_minutes: 8`; validate refuses it too.
    text = """\
payer: tmp-method-bad
name: Child with a first unit longer than a unit
extends: medicare
method:
  first_unit_minutes: 20
"""
    check_both(tmp_path, {"bad.yaml": text}, "bad.yaml", 5, "method.first_unit_minutes", "first_unit_minutes",
               payer="tmp-method-bad")


def test_child_code_list_that_breaks_a_parent_family_fails_validate_as_it_fails_bill(tmp_path):
    # The child's cognitive list (line 5) drops 97130, the add-on of Medicare's cognitive family: the merged
    # payer is invalid. bill --rules refuses it (exit 2); validate of the same tree must refuse it as well,
    # and name the child's file, whose codes.cognitive entry is the offending one.
    text = """\
payer: tmp-codes-bad
name: Child that drops 97130 from the code lists
extends: medicare
codes:
  cognitive: [97129]
"""
    tree = write_tree(tmp_path, {"bad.yaml": text})
    bill_proc = run_cli("bill", "examples/ot-session.yaml", "--rules", tree)
    no_traceback(bill_proc)
    assert bill_proc.returncode == 2 and "97130" in bill_proc.stderr, bill_proc.stderr
    validate_proc = run_cli("validate", tree)
    no_traceback(validate_proc)
    assert validate_proc.returncode == 2, validate_proc.stdout + validate_proc.stderr
    for proc in (validate_proc, bill_proc):
        assert re.search(rf"^error: {re.escape((tree / 'bad.yaml').as_posix())}:5: codes\.cognitive: .*97130", proc.stderr,
                         re.M), proc.stderr


def test_tmp_version_overlapping_a_bundled_payer_fails_validate_as_it_fails_bill(tmp_path):
    # A tmp file defines medicare again from 1990-01-01 with no end: it overlaps rules/medicare.yaml
    # (2000-04-01 on). bill --rules refuses the tree (exit 2); validate of the same tree must too.
    text = TREE["ver2025.yaml"].replace("payer: tmp-versioned", "payer: medicare") \
        .replace("effective_from: 2025-01-01\neffective_to: 2025-12-31\n", "effective_from: 1990-01-01\n")
    assert "effective_to" not in text and "payer: medicare" in text
    tree = write_tree(tmp_path, {"old-medicare.yaml": text})
    bill_proc = run_cli("bill", "examples/ot-session.yaml", "--rules", tree)
    no_traceback(bill_proc)
    assert bill_proc.returncode == 2 and "overlap" in bill_proc.stderr, bill_proc.stderr
    validate_proc = run_cli("validate", tree)
    no_traceback(validate_proc)
    assert validate_proc.returncode == 2, validate_proc.stdout + validate_proc.stderr
    assert "overlap" in validate_proc.stderr


def test_dates_with_the_same_rules_share_one_compiled_network():
    # example-unit-limits has a rule whose version changes on 2026-01-01; every day of 2025 has the same
    # rules in effect, so a year of sessions must not compile 365 networks (each a durable ruleset).
    from engine.billing import Biller
    from engine.loader import Registry
    registry = Registry()
    days_2025 = [f"2025-{m:02d}-{d:02d}" for m in range(1, 13) for d in (1, 15, 28)]
    days_2026 = [f"2026-{m:02d}-{d:02d}" for m in range(1, 13) for d in (1, 15, 28)]
    assert len({id(registry.resolve("example-unit-limits", d)) for d in days_2025}) == 1
    assert len({id(registry.resolve("example-unit-limits", d)) for d in days_2026}) == 1
    assert registry.resolve("example-unit-limits", days_2025[0]) is not registry.resolve("example-unit-limits",
                                                                                        days_2026[0])
    biller = Biller(registry, "python")
    for day in days_2025 + days_2026:
        biller.bill(session_from({"date_of_service": day, "services": [{"code": "97140", "minutes": 50}]}),
                    "example-unit-limits")
    assert len(biller._planners) == 2          # one per version of the rules, not one per day


def test_tie_break_by_code_compares_a_family_by_its_primary_code(tmp_path):
    # A Medicare child that breaks ties by code alone. 97530 10 min (entered first) and 97129 10 min (the
    # cognitive family's primary): total 20 -> 1 unit (§3.1, 8-22 min); no full units, leftovers 10 and 10:
    # a tie. By code, 97129 < 97530, so the family gets the unit: 97129 x1, 97530 unbilled. (The family's id,
    # "cognitive", sorts after "97530": comparing ids gave the unit to 97530.)
    tree = write_tree(tmp_path, {"code.yaml": "payer: tmp-code-tie\nname: Ties by code\nextends: medicare\n"
                                              "method:\n  tie_break: [code]\n"})
    registry = Registry([tree])
    biller = Biller(registry, "python")
    try:
        result = biller.bill(session_from(pt(("97530", 10), ("97129", 10))), "tmp-code-tie")
    finally:
        biller.close()
    assert units_of(result) == {"97129": 1}
    assert [line["code"] for line in result["unbilled"]] == ["97530"]


def test_too_long_extends_chain_blames_the_file_that_made_it_too_long(tmp_path):
    # c0 (no extends) <- c1 <- ... <- c16: 17 files, so c16's chain has 17 payers, one more than the 16
    # allowed; c15's has 16. The error is c16's, at its extends: (line 3), and names no other file (it
    # used to point at c00.yaml:1, the root, which has no extends: at all).
    files = {"c00.yaml": "payer: tmp-c0\nname: C0\nmethod:\n  name: cms_8_minute\nrules: []\n"}
    for i in range(1, 17):
        files[f"c{i:02d}.yaml"] = f"payer: tmp-c{i}\nname: C{i}\nextends: tmp-c{i - 1}\n"
    tree = write_tree(tmp_path, files)
    proc = run_cli("validate", tree)
    check_refused(proc, (tree / "c16.yaml").as_posix(), 3, "extends", "longer than 16")
    assert "c00.yaml" not in proc.stderr, proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.startswith("error:")] == \
        [line for line in proc.stderr.splitlines() if line.startswith(f"error: {(tree / 'c16.yaml').as_posix()}:3: extends: ")]
    proc = run_cli("bill", "examples/ot-session.yaml", "--rules", tree)
    check_refused(proc, (tree / "c16.yaml").as_posix(), 3, "extends", "longer than 16")
    assert "c00.yaml" not in proc.stderr, proc.stderr
