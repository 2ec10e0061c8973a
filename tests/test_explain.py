"""`payrules explain` (engine/explain.py): the rules that fired with their description, source and
file:line, the unit method's arithmetic step by step, the reasons for unbilled codes, and --why-not.

Every expected number below is worked by hand from shared/domain.md §3 (CMS chart: 8-22 min = 1 unit,
23-37 = 2, 38-52 = 3, 53-67 = 4; full 15-minute units per code first, the remaining units one each to
the largest leftover minutes) and §4 (per-code midpoint; hour blocks for 97545/97546). Nothing is copied
from program output.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
MEDICARE_FILE = "rules/medicare.yaml"
UNIT_LIMITS_FILE = "rules/private_payers/example-unit-limits.yaml"
FULL_UNIT_FILE = "rules/private_payers/example-full-unit.yaml"


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def write_session(tmp_path: Path, name: str, services: list, payer: str = "medicare",
                  date: str = "2026-03-02", discipline: str | None = "PT") -> Path:
    session = {"session_id": name, "payer": payer, "date_of_service": date}
    if discipline:
        session["discipline"] = discipline
    session["services"] = services
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(session, sort_keys=False), encoding="utf-8")
    return path


def svc(code: str, minutes: int, **extra) -> dict:
    return {"code": code, "minutes": minutes, **extra}


def explain(path: Path, *args) -> subprocess.CompletedProcess:
    proc = run_cli("explain", path, *args)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def method_lines(text: str) -> list:
    """The lines of the unit-method section (from 'Unit method' to the blank line before 'Billed:')."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Unit method"))
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("Billed:"))
    return [line.strip() for line in lines[start:end] if line.strip()]


def step(text: str, prefix: str) -> str:
    """The one method line that starts with `prefix` (e.g. '1. Total timed minutes')."""
    found = [line for line in method_lines(text) if line.startswith(prefix)]
    assert len(found) == 1, (prefix, method_lines(text))
    return found[0]


def not_billed(text: str) -> dict:
    """code -> reason line of the 'Not billed:' section."""
    lines = text.splitlines()
    if "Not billed:" not in lines:
        return {}
    out = {}
    for line in lines[lines.index("Not billed:") + 1:]:
        if not line.startswith("  "):
            break
        match = re.match(r"\s+(\S+) \((\d+) min\): (.+)$", line)
        assert match, line
        out[match.group(1)] = match.group(3)
    return out


def billed_line(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("Billed:"))


# --- the five CMS §20.2 examples (domain.md §3.2), Medicare, PT, 2026-03-02 ---------------------------

def test_example_1_more_units_to_the_larger_leftover(tmp_path):
    # 97112 24 + 97110 23 = 47 min -> band 38-52 -> 3 units.
    # Full units: 97112 24 = 1x15 + 9; 97110 23 = 1x15 + 8 -> 2 full. Remaining 3 - 2 = 1 -> 97112 (9 > 8).
    proc = explain(write_session(tmp_path, "EX1", [svc("97112", 24), svc("97110", 23)]))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert step(out, "1. Total timed minutes:").endswith("97112 24 + 97110 23 = 47 min")
    assert "47 min is in the band 38-52, which gives 3 units" in step(out, "2. Chart:")
    full = step(out, "3. Full")
    assert "97112 1 full (9 min left over)" in full
    assert "97110 1 full (8 min left over)" in full
    assert full.endswith(": 2 full units in all")
    remaining = step(out, "4. Remaining")
    assert remaining.startswith("4. Remaining 3 - 2 = 1 unit,")
    assert remaining.endswith(": 97112 (9 min)")
    assert step(out, "Not reached:") == "Not reached: 97110 (8 min)"
    assert not any(line.startswith("5. Tie") for line in method_lines(out))     # 9 != 8: no tie
    # published answer: 97112 x2, 97110 x1
    assert billed_line(out) == "Billed: 97112 x2 GP, 97110 x1 GP (total 3 units)"
    assert "Not billed:" not in out


def test_example_2_tie_and_the_accepted_alternatives(tmp_path):
    # 97112 20 + 97110 20 = 40 min -> band 38-52 -> 3 units. Each 1 full (5 left over) -> 2 full.
    # Remaining 3 - 2 = 1; leftovers 5 = 5 is a tie; CMS accepts either code x2 (the other x1).
    # Tie-break minutes (20 = 20), then order -> 97112 (entered first).
    proc = explain(write_session(tmp_path, "EX2", [svc("97112", 20), svc("97110", 20)]))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert step(out, "1. Total timed minutes:").endswith("97112 20 + 97110 20 = 40 min")
    assert "40 min is in the band 38-52, which gives 3 units" in step(out, "2. Chart:")
    full = step(out, "3. Full")
    assert "97112 1 full (5 min left over)" in full and "97110 1 full (5 min left over)" in full
    assert step(out, "4. Remaining").startswith("4. Remaining 3 - 2 = 1 unit,")
    assert step(out, "4. Remaining").endswith(": 97112 (5 min)")
    tie = step(out, "5. Tie:")
    assert "97112, 97110" in tie and "equal leftover minutes" in tie
    assert "any 1" in tie                           # CMS accepts the remaining unit on either code
    assert tie.endswith("chose 97112")
    assert billed_line(out) == "Billed: 97112 x2 GP, 97110 x1 GP (total 3 units)"
    # the alternatives, as a warning: 1 remaining unit on any 1 of the two codes
    warning = next(line for line in out.splitlines() if line.strip().startswith("info:"))
    assert "any 1 of 97112, 97110" in warning and "billed on 97112" in warning
    assert warning.rstrip().endswith("[timed-pool]")


def test_example_3_leftover_minutes_not_totals(tmp_path):
    # 97110 33 + 97140 7 = 40 min -> 3 units. 97110 2 full (3 left over), 97140 0 full (7 left over) -> 2.
    # Remaining 3 - 2 = 1 -> 97140 (7 > 3), although 97140 alone is under 8 minutes.
    proc = explain(write_session(tmp_path, "EX3", [svc("97110", 33), svc("97140", 7)]))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert step(out, "1. Total timed minutes:").endswith("97110 33 + 97140 7 = 40 min")
    assert "40 min is in the band 38-52, which gives 3 units" in step(out, "2. Chart:")
    full = step(out, "3. Full")
    assert "97110 2 full (3 min left over)" in full and "97140 0 full (7 min left over)" in full
    assert full.endswith(": 2 full units in all")
    assert step(out, "4. Remaining").startswith("4. Remaining 3 - 2 = 1 unit,")
    assert step(out, "4. Remaining").endswith(": 97140 (7 min)")
    assert step(out, "Not reached:") == "Not reached: 97110 (3 min)"
    assert billed_line(out) == "Billed: 97110 x2 GP, 97140 x1 GP (total 3 units)"


def test_example_4_four_codes_one_not_billed(tmp_path):
    # 97110 18 + 97140 13 + 97116 10 + 97035 8 = 49 min -> band 38-52 -> 3 units.
    # Full: 97110 1 (3 left), 97140 0 (13), 97116 0 (10), 97035 0 (8) -> 1 full.
    # Remaining 3 - 1 = 2 -> 97140 (13), 97116 (10); not reached 97035 (8), 97110 (3).
    proc = explain(write_session(tmp_path, "EX4", [svc("97110", 18), svc("97140", 13), svc("97116", 10),
                                                    svc("97035", 8)]))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert step(out, "1. Total timed minutes:") == \
        "1. Total timed minutes: 97110 18 + 97140 13 + 97116 10 + 97035 8 = 49 min"
    assert step(out, "2. Chart:") == "2. Chart: 49 min is in the band 38-52, which gives 3 units"
    full = step(out, "3. Full")
    for part in ("97110 1 full (3 min left over)", "97140 0 full (13 min left over)",
                 "97116 0 full (10 min left over)", "97035 0 full (8 min left over)"):
        assert part in full
    assert full.endswith(": 1 full unit in all")
    remaining = step(out, "4. Remaining")
    assert remaining.startswith("4. Remaining 3 - 1 = 2 units,")
    assert remaining.endswith(": 97140 (13 min), 97116 (10 min)")
    assert step(out, "Not reached:") == "Not reached: 97035 (8 min), 97110 (3 min)"
    assert not any(line.startswith("5. Tie") for line in method_lines(out))
    # published answer: 97110 x1, 97140 x1, 97116 x1; 97035 not billed (but documented)
    assert billed_line(out) == "Billed: 97110 x1 GP, 97140 x1 GP, 97116 x1 GP (total 3 units)"
    reasons = not_billed(out)
    assert list(reasons) == ["97035"]
    assert "8 leftover" in reasons["97035"] and "49 min" in reasons["97035"]
    assert reasons["97035"].endswith("[timed-pool]")


def test_example_5_three_small_pieces_add_up(tmp_path):
    # 97112 7 + 97110 7 + 97140 7 = 21 min -> band 8-22 -> 1 unit. No full units (7 left over each).
    # Remaining 1 - 0 = 1; three-way tie at 7; CMS accepts the unit on any one; tie-break order -> 97112.
    proc = explain(write_session(tmp_path, "EX5", [svc("97112", 7), svc("97110", 7), svc("97140", 7)]))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert step(out, "1. Total timed minutes:").endswith("97112 7 + 97110 7 + 97140 7 = 21 min")
    assert step(out, "2. Chart:") == "2. Chart: 21 min is in the band 8-22, which gives 1 unit"
    full = step(out, "3. Full")
    for code in ("97112", "97110", "97140"):
        assert f"{code} 0 full (7 min left over)" in full
    assert full.endswith(": 0 full units in all")
    assert step(out, "4. Remaining").startswith("4. Remaining 1 - 0 = 1 unit,")
    assert step(out, "4. Remaining").endswith(": 97112 (7 min)")
    assert step(out, "Not reached:") == "Not reached: 97110 (7 min), 97140 (7 min)"
    tie = step(out, "5. Tie:")
    assert "97112, 97110, 97140" in tie and "any 1" in tie and tie.endswith("chose 97112")
    assert billed_line(out).startswith("Billed: 97112 x1 GP (total 1 unit")
    assert set(not_billed(out)) == {"97110", "97140"}
    warning = next(line for line in out.splitlines() if line.strip().startswith("info:"))
    assert "any 1 of 97112, 97110, 97140" in warning


def test_example_5_unbilled_reason_does_not_claim_more_leftover_minutes(tmp_path):
    # In Example 5 the unit went to 97112 by the tie-break: its 7 leftover minutes EQUAL those of
    # 97110 and 97140. A reason saying the unit was "given to services with more leftover minutes" is
    # false for a tie; the reason should say the leftovers were equal / the tie-break chose another code.
    proc = explain(write_session(tmp_path, "EX5R", [svc("97112", 7), svc("97110", 7), svc("97140", 7)]))
    reasons = not_billed(proc.stdout)
    for code in ("97110", "97140"):
        assert "more leftover minutes" not in reasons[code], reasons[code]
        assert re.search(r"tie|equal", reasons[code]), reasons[code]


# --- other methods ---------------------------------------------------------------------------------

def test_midpoint_payer_shows_a_band_per_code(tmp_path):
    # Per code, nothing pooled (domain.md §4.1): 97112 24 -> 23-37 -> 2; 97110 23 -> 23-37 -> 2;
    # 97140 7 -> 0-7 -> 0 (Medicare would pool 54 min -> 4 units). Total 4.
    path = write_session(tmp_path, "MID", [svc("97112", 24), svc("97110", 23), svc("97140", 7)])
    proc = explain(path, "--payer", "example-midpoint")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    lines = method_lines(out)
    assert lines[0].startswith("Unit method midpoint_per_code")
    assert "97112 24 min is in the band 23-37, which gives 2 units" in lines
    assert "97110 23 min is in the band 23-37, which gives 2 units" in lines
    assert "97140 7 min is in the band 0-7, which gives 0 units" in lines
    assert not any("Total timed minutes" in line or "Remaining" in line for line in lines)   # no pool
    assert billed_line(out) == "Billed: 97112 x2 GP, 97110 x2 GP (total 4 units)"
    reasons = not_billed(out)
    assert list(reasons) == ["97140"] and "7 min" in reasons["97140"] and "8 min" in reasons["97140"]


def test_work_hardening_shows_the_block_arithmetic(tmp_path):
    # 97545 210 min (domain.md §4.3): the first 120 min -> 97545 x1; 90 min beyond = 1 whole hour of 60
    # + 30 min, which does not reach the 31-minute midpoint -> 2 units = 97545 x1 + 97546 x1.
    proc = explain(write_session(tmp_path, "WH", [svc("97545", 210)]))
    assert proc.returncode == 0, proc.stderr       # a warning (status R) only, no error
    out = proc.stdout
    block = step(out, "97545 210 min by blocks")
    for part in ("the first 120 min (from 61): 1 unit;", "90 min beyond = 1 whole block of 60",
                 "+ 30 min (under 31); 2 units in all"):
        assert part in block, block
    assert billed_line(out) == "Billed: 97545 x1 GP, 97546 x1 GP (total 2 units)"
    assert "No timed minutes." in method_lines(out)     # nothing in the 15-minute pool


# --- every fired rule: id, description, source, file:line ------------------------------------------

FIRING = re.compile(r"^\s*\d+\. (?P<id>\S+) — (?P<description>.*)\n"
                    r"\s+source: (?P<source>.*)\n"
                    r"\s+at (?P<file>[^\s:]+):(?P<line>\d+); matched (?P<matched>.*)\n"
                    r"\s+effect: (?P<effect>.*)$", re.M)


def rules_by_line(relpath: str) -> dict:
    """line of each rule's `id:` -> the rule as written in the file, read independently of the engine
    (rules: and override: sections)."""
    text = (ROOT / relpath).read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    node = yaml.compose(text)
    out = {}
    for key, value in node.value:
        if key.value not in ("rules", "override"):
            continue
        for i, item in enumerate(value.value):
            id_key = next(k for k, _ in item.value if k.value == "id")
            out[id_key.start_mark.line + 1] = data[key.value][i]
    return out


def check_location(file: str, line: int, rule_id: str, description: str, source: str) -> None:
    """file:line holds `id: <rule_id>`, and the rule written there has this description and source."""
    raw = (ROOT / file).read_text(encoding="utf-8").splitlines()[line - 1]
    assert re.search(rf"\bid:\s*['\"]?{re.escape(rule_id)}['\"]?\s*$", raw), (file, line, raw)
    rule = rules_by_line(file)[line]
    assert rule["id"] == rule_id
    assert rule["description"] == description, (file, line)
    assert rule["source"] == source, (file, line)


PAYER_SESSIONS = {
    # medicare, PT: 97150 45 min group of 3 -> group-one-unit; 97110 25 -> timed-pool (25 -> 2);
    # 97014 10 -> untimed-one-unit + the G0283 warning; modifier-gp on all 3 lines -> 7 firings.
    "medicare": dict(
        services=[svc("97150", 45, group_size=3), svc("97110", 25), svc("97014", 10)], date="2026-03-02",
        discipline="PT",
        fired={("timed-pool", MEDICARE_FILE), ("untimed-one-unit", MEDICARE_FILE),
               ("unattended-estim-g0283", MEDICARE_FILE), ("group-one-unit", MEDICARE_FILE),
               ("modifier-gp", MEDICARE_FILE)},
        count=7, billed="Billed: 97150 x1 GP, 97110 x2 GP, 97014 x1 GP (total 4 units)"),
    # example-midpoint extends medicare and disables unattended-estim-g0283: the same session fires the
    # inherited rules, every one of them written in rules/medicare.yaml -> 6 firings.
    "example-midpoint": dict(
        services=[svc("97150", 45, group_size=3), svc("97110", 25), svc("97014", 10)], date="2026-03-02",
        discipline="PT",
        fired={("timed-pool", MEDICARE_FILE), ("untimed-one-unit", MEDICARE_FILE),
               ("group-one-unit", MEDICARE_FILE), ("modifier-gp", MEDICARE_FILE)},
        count=6, billed="Billed: 97150 x1 GP, 97110 x2 GP, 97014 x1 GP (total 4 units)"),
    # example-unit-limits on 2026-06-01: 97140 50 -> chart 3, capped at 2 by the 2026 version of
    # manual-therapy-daily-limit (its own file); 97139 held by its override of unlisted-code (its own
    # file); timed-pool and modifier-gp inherited from medicare -> 5 firings.
    "example-unit-limits": dict(
        services=[svc("97140", 50), svc("97139", 20)], date="2026-06-01", discipline="PT",
        fired={("timed-pool", MEDICARE_FILE), ("manual-therapy-daily-limit", UNIT_LIMITS_FILE),
               ("unlisted-code", UNIT_LIMITS_FILE), ("modifier-gp", MEDICARE_FILE)},
        count=5, billed="Billed: 97140 x2 GP (total 2 units)"),
    # example-full-unit (no extends, no modifier rules): 97112 24 -> 1 (a full 15 min per unit);
    # 97545 211 in 2026 -> 120 + 60 + 31 (31 < 60, whole hours only) -> 97545 x1 + 97546 x1;
    # 97150 is in none of its lists -> unknown-code -> 3 firings.
    "example-full-unit": dict(
        services=[svc("97112", 24), svc("97545", 211), svc("97150", 30, group_size=3)], date="2026-03-02",
        discipline=None,
        fired={("timed-per-code", FULL_UNIT_FILE), ("work-hardening-hours", FULL_UNIT_FILE),
               ("unknown-code", FULL_UNIT_FILE)},
        count=3, billed="Billed: 97112 x1, 97545 x1, 97546 x1 (total 3 units)"),
}


@pytest.mark.parametrize("payer", sorted(PAYER_SESSIONS))
def test_every_fired_rule_is_listed_with_its_source_and_a_true_location(tmp_path, payer):
    case = PAYER_SESSIONS[payer]
    path = write_session(tmp_path, f"LOC-{payer}", case["services"], payer, case["date"], case["discipline"])
    proc = explain(path)
    out = proc.stdout
    firings = [m.groupdict() for m in FIRING.finditer(out)]
    numbered = re.findall(r"^\s*\d+\. \S+ — ", out, re.M)
    assert len(firings) == len(numbered) == case["count"], out
    assert {(f["id"], f["file"]) for f in firings} == case["fired"]
    for f in firings:
        check_location(f["file"], int(f["line"]), f["id"], f["description"], f["source"])
    assert billed_line(out) == case["billed"]


def test_dated_rule_versions_point_at_the_version_in_effect(tmp_path):
    # example-unit-limits has two rules with id manual-therapy-daily-limit: 3 units through 2025, 2 from
    # 2026. Each date must point at its own version's `id:` line: 2025 -> the first, 2026 -> the second.
    lines = sorted(line for line, rule in rules_by_line(UNIT_LIMITS_FILE).items()
                   if rule["id"] == "manual-therapy-daily-limit")
    assert len(lines) == 2
    for date, line, units in (("2025-06-01", lines[0], 3), ("2026-06-01", lines[1], 2)):
        path = write_session(tmp_path, f"DATED-{date}", [svc("97140", 50)], "example-unit-limits", date)
        doc = json.loads(explain(path, "--format", "json").stdout)
        limit = [f for f in doc["firings"] if f["rule"] == "manual-therapy-daily-limit"]
        assert [f["location"] for f in limit] == [f"{UNIT_LIMITS_FILE}:{line}"]
        assert limit[0]["description"].startswith(f"At most {units} units")
        assert [(l["code"], l["units"]) for l in doc["result"]["lines"]] == [("97140", units)]  # 50 min -> 3


def test_every_rule_of_every_payer_has_a_true_location():
    # Registry().all_payers(): every version of every payer; each rule's location is "path:line" of its id
    from engine.loader import Registry
    payers = Registry().all_payers()
    assert {p.id for p in payers} >= {"medicare", "example-midpoint", "example-unit-limits", "example-full-unit"}
    inherited = 0
    for payer in payers:
        for rule in payer.rules:
            file, line = rule.location.rsplit(":", 1)
            check_location(file, int(line), rule.id, rule.description, rule.source)
            if payer.id != "medicare" and file == MEDICARE_FILE:
                inherited += 1
    assert inherited > 0        # the children's inherited rules point into rules/medicare.yaml


# --- JSON ------------------------------------------------------------------------------------------

def test_json_has_firings_and_the_method_arithmetic(tmp_path):
    path = write_session(tmp_path, "EX4J", [svc("97110", 18), svc("97140", 13), svc("97116", 10), svc("97035", 8)])
    proc = explain(path, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["session_id"] == "EX4J" and doc["payer"] == "medicare"
    # firings: timed-pool on each of the 4 timed lines, modifier-gp on each line -> 8
    assert len(doc["firings"]) == 8
    for f in doc["firings"]:
        assert set(f) == {"rule", "description", "source", "location", "facts", "effect"}
        file, line = f["location"].rsplit(":", 1)
        check_location(file, int(line), f["rule"], f["description"], f["source"])
    pool = [f for f in doc["firings"] if f["rule"] == "timed-pool"]
    assert [f["facts"][0]["fact"] for f in pool] == ["97110", "97140", "97116", "97035"]
    assert [f["facts"][0]["minutes"] for f in pool] == [18, 13, 10, 8]
    gp = [f for f in doc["firings"] if f["rule"] == "modifier-gp"]
    assert len(gp) == 4 and all(f["facts"][0]["fact"] == "session" for f in gp)
    assert all("GP" in f["effect"] for f in gp)

    m = doc["method"]
    assert m["name"] == "cms_8_minute"
    assert m["total_timed_minutes"] == 49          # 18 + 13 + 10 + 8
    assert m["total_timed_units"] == 3             # 49 in 38-52
    assert m["remaining_units"] == 2               # 3 - 1 full
    services = {s["service"]: (s["full_units"], s["leftover_minutes"], s["units"]) for s in m["timed_services"]}
    assert services == {"97110": (1, 3, 1), "97140": (0, 13, 1), "97116": (0, 10, 1), "97035": (0, 8, 0)}
    assert m["tie"] is None
    assert [u["code"] for u in doc["unbilled"]] == ["97035"]


def test_json_tie_names_the_alternatives(tmp_path):
    # Example 2: 5 = 5 leftover minutes, 1 remaining unit, either code; the tie-break picks 97112.
    path = write_session(tmp_path, "EX2J", [svc("97112", 20), svc("97110", 20)])
    m = json.loads(explain(path, "--format", "json").stdout)["method"]
    assert m["tie"]["tied"] == ["97112", "97110"]
    assert m["tie"]["units"] == 1
    assert m["tie"]["billed_on"] == ["97112"]


@pytest.mark.parametrize("services,payer,date", [
    ([svc("97110", 18), svc("97140", 13), svc("97116", 10), svc("97035", 8)], "medicare", "2026-03-02"),
    ([svc("97150", 30, group_size=1), svc("97110", 20)], "medicare", "2026-03-02"),
    ([svc("97140", 50), svc("97139", 20)], "example-unit-limits", "2026-06-01"),
    ([svc("97545", 210)], "example-full-unit", "2025-06-01"),
])
def test_json_result_equals_bill_json(tmp_path, services, payer, date):
    path = write_session(tmp_path, "SAME", services, payer, date)
    explained = explain(path, "--format", "json")
    billed = run_cli("bill", path, "--format", "json")
    assert explained.returncode == billed.returncode
    assert json.loads(explained.stdout)["result"] == json.loads(billed.stdout)


# --- --why-not ---------------------------------------------------------------------------------------

def test_why_not_names_the_failing_condition(tmp_path):
    # group-size: when line {code_in: group, group_size: {lt: 2}}. The 97150 line is in the group list
    # but its group_size 3 is not < 2; the 97110 line is not in the group list at all.
    path = write_session(tmp_path, "WHY", [svc("97150", 45, group_size=3), svc("97110", 25)])
    out = explain(path, "--why-not", "group-size").stdout
    section = out[out.index("Why not group-size"):]
    head = section.splitlines()[0]
    assert "did not fire" in head
    assert "rules/medicare.yaml:" in head
    lines = [line.strip() for line in section.splitlines()[1:]]
    i = lines.index("97150: fails")
    assert lines[i + 1].startswith("[ok] code_in list group")
    assert lines[i + 2] == "[NO] group_size lt 2 (actual: 3)"
    j = lines.index("97110: fails")
    assert lines[j + 1].startswith("[NO] code_in list group")

    doc = json.loads(explain(path, "--why-not", "group-size", "--format", "json").stdout)
    why = doc["why_not"][0]
    assert why["rule"] == "group-size" and why["in_effect"] is True and why["fired"] == 0
    cand = next(c for c in why["candidates"] if c["fact"] == "97150")
    assert cand["matches"] is False
    assert {"condition": "group_size lt 2", "ok": False, "actual": 3} in cand["conditions"]


def test_why_not_on_a_rule_that_fired_says_so(tmp_path):
    # timed-pool fires once: on 97110 (97150 is not a 15-minute timed code).
    path = write_session(tmp_path, "WHYF", [svc("97150", 45, group_size=3), svc("97110", 25)])
    out = explain(path, "--why-not", "timed-pool").stdout
    head = next(line for line in out.splitlines() if line.startswith("Why not timed-pool"))
    assert head.endswith(": it fired 1 time.")
    section = [line.strip() for line in out[out.index(head):].splitlines()]
    assert "97110: all conditions hold" in section


def test_why_not_unknown_rule_is_a_usage_error(tmp_path):
    # a rule id that is no rule of the payer, in any version, is a mistake on the command line: exit 2,
    # one error line, nothing explained
    path = write_session(tmp_path, "WHYU", [svc("97110", 25)])
    proc = explain(path, "--why-not", "no-such-rule")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: ") and len(proc.stderr.splitlines()) == 1
    assert "payer medicare has no rule 'no-such-rule'" in proc.stderr
    # a near miss gets a suggestion
    near = explain(path, "--why-not", "group-siz")
    assert near.returncode == 2 and "did you mean 'group-size'" in near.stderr


# --- --why-not evaluates every operator as the network does ------------------------------------------------

# The session: PT on 2026-03-02; 97110 9 min group of 2 by a PTA; 97129 15 min and 97130 10 min by a PT
# (family cog: 97129 primary, 97130 add-on, so both have their primary present); 3 lines.
WHY_SESSION = {"session_id": "OPS", "payer": "ops", "discipline": "PT", "date_of_service": "2026-03-02",
               "services": [svc("97110", 9, group_size=2, provider="PTA"), svc("97129", 15, provider="PT"),
                            svc("97130", 10, provider="PT")]}
L = ("97110", "97129", "97130")
# name: (conditions of a rule that fires, the facts it fires on (worked by hand from WHY_SESSION),
#        conditions of a rule that does not, the fact to look at, the text of its failing condition)
WHY_CASES = {
    "equal": ({"line": {"minutes": 9}}, ["97110"], {"line": {"minutes": 8}}, "97110", "minutes = 8"),
    "lt": ({"line": {"minutes": {"lt": 10}}}, ["97110"], {"line": {"minutes": {"lt": 9}}}, "97110", "minutes lt 9"),
    "lte": ({"line": {"minutes": {"lte": 9}}}, ["97110"], {"line": {"minutes": {"lte": 8}}}, "97110", "minutes lte 8"),
    "gt": ({"line": {"minutes": {"gt": 14}}}, ["97129"], {"line": {"minutes": {"gt": 15}}}, "97129", "minutes gt 15"),
    "gte": ({"line": {"minutes": {"gte": 15}}}, ["97129"], {"line": {"minutes": {"gte": 16}}}, "97129",
            "minutes gte 16"),
    "ne": ({"line": {"minutes": {"ne": 9}}}, ["97129", "97130"], {"line": {"code": "97110", "minutes": {"ne": 9}}},
           "97110", "minutes ne 9"),
    "exists": ({"line": {"group_size": {"exists": True}}}, ["97110"],
               {"line": {"code": "97110", "group_size": {"exists": False}}}, "97110", "group_size is not given"),
    "group_size": ({"line": {"group_size": 2}}, ["97110"], {"line": {"group_size": 3}}, "97110", "group_size = 3"),
    "provider-in": ({"line": {"provider": {"in": ["PTA", "OT"]}}}, ["97110"],
                    {"line": {"code": "97110", "provider": {"in": ["PT"]}}}, "97110", "provider in ['PT']"),
    "provider-str-lt": ({"line": {"provider": {"lt": "PTB"}}}, list(L),
                        {"line": {"code": "97110", "provider": {"lt": "PTA"}}}, "97110", "provider lt PTA"),
    "provider-str-gt": ({"line": {"provider": {"gt": "PT"}}}, ["97110"],
                        {"line": {"code": "97110", "provider": {"gt": "PTA"}}}, "97110", "provider gt PTA"),
    "provider-str-gte": ({"line": {"provider": {"gte": "PTA"}}}, ["97110"],
                         {"line": {"code": "97110", "provider": {"gte": "PTB"}}}, "97110", "provider gte PTB"),
    "provider-str-lte": ({"line": {"provider": {"lte": "PT"}}}, ["97129", "97130"],
                         {"line": {"code": "97110", "provider": {"lte": "PT"}}}, "97110", "provider lte PT"),
    "provider-ne": ({"line": {"provider": {"ne": "PT"}}}, ["97110"],
                    {"line": {"code": "97110", "provider": {"ne": "PTA"}}}, "97110", "provider ne PTA"),
    "code": ({"line": {"code": "97110"}}, ["97110"], {"line": {"code": "97112"}}, "97110", "code = 97112"),
    "code-ne": ({"line": {"code": {"ne": "97110"}}}, ["97129", "97130"],
                {"line": {"code": {"ne": "97110"}, "minutes": 9}}, "97110", "code ne 97110"),
    "code-exists": ({"line": {"code": {"exists": True}}}, list(L), {"line": {"code": {"exists": False}}}, "97110",
                    "code is not given"),
    "code_in-list": ({"line": {"code_in": "timed"}}, ["97110"], {"line": {"code_in": "group"}}, "97110",
                     "code_in list group"),
    "code_in-inline": ({"line": {"code_in": ["97110", "97110"]}}, ["97110"], {"line": {"code_in": ["97112"]}},
                       "97110", "code_in [97112]"),
    "code_not_in-list": ({"line": {"code_not_in": "timed"}}, ["97129", "97130"],
                         {"line": {"code": "97110", "code_not_in": "timed"}}, "97110", "code_not_in list timed"),
    "code_not_in-inline": ({"line": {"code_not_in": ["97129", "97130"]}}, ["97110"],
                           {"line": {"code": "97110", "code_not_in": ["97110"]}}, "97110", "code_not_in [97110]"),
    "known": ({"line": {"known": True}}, list(L), {"line": {"known": False}}, "97110", "known = False"),
    "family": ({"line": {"family": "cog"}}, ["97129", "97130"], {"line": {"code": "97129", "family": {"ne": "cog"}}},
               "97129", "family ne cog"),
    "family_role": ({"line": {"family_role": "addon"}}, ["97130"],
                    {"line": {"code": "97130", "family_role": "primary"}}, "97130", "family_role = primary"),
    "has_primary": ({"line": {"has_primary": True}}, ["97129", "97130"],
                    {"line": {"code": "97130", "has_primary": False}}, "97130", "has_primary = False"),
    "discipline": ({"session": {"discipline": "PT"}}, ["session"], {"session": {"discipline": "OT"}}, "session",
                   "discipline = OT"),
    "discipline-in": ({"session": {"discipline": {"in": ["PT", "OT"]}}}, ["session"],
                      {"session": {"discipline": {"in": ["SLP"]}}}, "session", "discipline in ['SLP']"),
    "date-gte": ({"session": {"date_of_service": {"gte": "2026-03-02"}}}, ["session"],
                 {"session": {"date_of_service": {"gt": "2026-03-02"}}}, "session", "date_of_service gt 2026-03-02"),
    "date-lt": ({"session": {"date_of_service": {"lt": "2026-03-03"}}}, ["session"],
                {"session": {"date_of_service": {"lte": "2026-03-01"}}}, "session", "date_of_service lte 2026-03-01"),
    "line_count": ({"session": {"line_count": {"gt": 2}}}, ["session"], {"session": {"line_count": {"gt": 3}}},
                   "session", "line_count gt 3"),
    "session-and-line": ({"line": {"code": "97110"}, "session": {"discipline": {"ne": "OT"}}}, ["97110"],
                         {"line": {"code": "97110"}, "session": {"discipline": {"ne": "PT"}}}, "session",
                         "discipline ne PT"),
}


@pytest.fixture(scope="module")
def why_outcomes(tmp_path_factory):
    from engine.billing import Biller
    from engine.loader import Registry
    from conftest import ENGINES, session_from
    rules = []
    for name, (fires, _, fails, _, _) in WHY_CASES.items():
        for prefix, when in (("f", fires), ("n", fails)):
            rules.append({"id": f"{prefix}-{name}", "description": name, "source": "test", "when": when,
                          "then": [{"info": name}]})
    payer = {"payer": "ops", "name": "Operators", "method": {"name": "cms_8_minute"},
             "codes": {"timed": ["97110"], "group": ["97150"], "cognitive": ["97129", "97130"]},
             "families": [{"id": "cog", "primary": "97129", "addon": "97130"}], "rules": rules}
    tree = tmp_path_factory.mktemp("why")
    (tree / "ops.yaml").write_text(yaml.safe_dump(payer, sort_keys=False), encoding="utf-8")
    registry = Registry([tree], include_bundled=False)
    outcomes = {}
    for engine in ENGINES:
        biller = Biller(registry, engine, remember=False)
        outcomes[engine] = biller.evaluate(session_from(WHY_SESSION), "ops")
        biller.close()
    return outcomes


@pytest.mark.parametrize("name", sorted(WHY_CASES))
def test_why_not_agrees_with_the_network_for_every_operator(why_outcomes, name):
    from engine.explain import why_not_json, why_not_text
    _, fires_on, _, fact, failing = WHY_CASES[name]
    for engine, outcome in why_outcomes.items():
        codes = {line.fact_id: line.code for line in outcome.lines}
        fired = sorted(codes.get(ids[-1], "session") for rule, ids in outcome.firings if rule.id == f"f-{name}")
        assert fired == fires_on, engine
        why = why_not_json(outcome, f"f-{name}")
        assert why["fired"] == len(fires_on)
        for cand in why["candidates"]:
            if cand["fact"] in fires_on:
                assert cand["matches"] and all(c["ok"] for c in cand["conditions"]), (engine, cand)
        assert f"  {fires_on[0]}: all conditions hold" in why_not_text(outcome, f"f-{name}")
        why = why_not_json(outcome, f"n-{name}")
        assert why["fired"] == 0
        cand = next(c for c in why["candidates"] if c["fact"] == fact)
        assert not cand["matches"]
        assert [c["condition"] for c in cand["conditions"] if not c["ok"]] == [failing], (engine, cand)
        assert any(line.startswith(f"    [NO] {failing} (actual: ") for line in why_not_text(outcome, f"n-{name}"))
