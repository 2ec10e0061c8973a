"""`payrules test`: YAML scenario tests beside each payer file (engine/scenarios.py,
schemas/scenarios.schema.json). Expected units are worked by hand from shared/domain.md §3 and §4.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def name_line(path: Path, name: str) -> int:
    """The line of a scenario's `name:` key, found by reading the file."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if re.match(r"\s*-?\s*name:\s*", line) and yaml.safe_load(line.strip().lstrip("- "))["name"] == name:
            return number
    raise AssertionError(f"no scenario {name!r} in {path}")


def report(stdout: str) -> dict:
    """'ok'/'FAIL' line -> the indented diff lines under it."""
    out, current = {}, None
    for line in stdout.splitlines():
        if line.startswith(("ok ", "FAIL ")):
            current = line
            out[current] = []
        elif line.startswith(" ") and current:
            out[current].append(line.strip())
        else:
            current = None
    return out


def test_bundled_scenarios_all_pass():
    files = sorted((ROOT / "rules").rglob("*.tests.yaml"))
    assert {f.relative_to(ROOT).as_posix() for f in files} >= {
        "rules/medicare.tests.yaml", "rules/private_payers/example-midpoint.tests.yaml",
        "rules/private_payers/example-unit-limits.tests.yaml", "rules/private_payers/example-full-unit.tests.yaml"}
    expected = []
    for f in files:
        doc = yaml.safe_load(f.read_text(encoding="utf-8"))
        for scenario in doc["scenarios"]:
            expected.append((f.relative_to(ROOT).as_posix(), scenario.get("payer", doc["payer"]), scenario["name"]))
    n = len(expected)
    assert n > 0

    proc = run_cli("test")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == f"scenarios: {n} passed, 0 failed"
    body = lines[:-1]
    assert len(body) == n
    assert all(line.startswith("ok") for line in body), body
    # each line names its scenario: "ok   FILE:LINE: PAYER: NAME", LINE being the name: line
    got = []
    for line in body:
        match = re.match(r"ok\s+(\S+?):(\d+): (\S+): (.+)$", line)
        assert match, line
        file, number, payer, name = match.groups()
        assert int(number) == name_line(ROOT / file, name)
        got.append((file, payer, name))
    assert sorted(got) == sorted(expected)


WRONG = """\
payer: medicare
scenarios:
  - name: "CMS Example 1 as published"
    session:
      date_of_service: 2026-03-02
      discipline: PT
      services: [{code: "97112", minutes: 24}, {code: "97110", minutes: 23}]
    expect:
      lines: {"97112": 2, "97110": 1}
      total_units: 3

  - name: "CMS Example 1 with wrong answers"
    session:
      date_of_service: 2026-03-02
      discipline: PT
      services: [{code: "97112", minutes: 24}, {code: "97110", minutes: 23}]
    expect:
      lines: {"97112": 2, "97110": 2}
      modifiers: {"97110": [GO]}
      total_units: 4
      warnings:
        - {rule: timed-pool, severity: info}

  - name: "CMS Example 4 unbilled listed wrongly"
    session:
      date_of_service: 2026-03-02
      discipline: PT
      services: [{code: "97110", minutes: 18}, {code: "97140", minutes: 13}, {code: "97116", minutes: 10},
                 {code: "97035", minutes: 8}]
    expect:
      lines: {"97110": 1, "97140": 1, "97116": 1}
      unbilled: ["97116"]

  - name: "Before the total-time method"
    session:
      date_of_service: 1999-12-31
      discipline: PT
      services: [{code: "97110", minutes: 30}]
    expect:
      error: "no version in effect"

  - name: "Expects an error but the session bills"
    session:
      date_of_service: 2026-03-02
      discipline: PT
      services: [{code: "97110", minutes: 30}]
    expect:
      error: "no version in effect"
"""


def test_wrong_scenarios_fail_with_a_readable_diff(tmp_path):
    path = tmp_path / "wrong.tests.yaml"
    path.write_text(WRONG, encoding="utf-8")
    proc = run_cli("test", path)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    # 2 pass (Example 1 as published; the error before 2000-04-01), 3 fail
    assert lines[-1] == "scenarios: 2 passed, 3 failed"
    results = report(proc.stdout)
    where = lambda name: f"{path}:{name_line(path, name)}: medicare: {name}"    # noqa: E731

    assert f"ok   {where('CMS Example 1 as published')}" in results
    assert f"ok   {where('Before the total-time method')}" in results

    # Example 1: 47 min -> 3 units; 97112 9 leftover beats 97110 8 -> 97112 x2, 97110 x1, GP (PT), no tie
    diffs = results[f"FAIL {where('CMS Example 1 with wrong answers')}"]
    assert "lines.97110: expected 2 units, got 1 unit" in diffs
    assert not any(d.startswith("lines.97112") for d in diffs)          # 97112 x2 was right
    assert "modifiers.97110: expected ['GO'], got ['GP']" in diffs
    assert "total_units: expected 4, got 3" in diffs
    missing = [d for d in diffs if d.startswith("warnings:")]
    assert len(missing) == 1 and "timed-pool" in missing[0] and "info" in missing[0]
    assert len(diffs) == 4

    # Example 4: 97035 is the code not billed, not 97116
    diffs = results[f"FAIL {where('CMS Example 4 unbilled listed wrongly')}"]
    assert diffs == ["unbilled: expected ['97116'], got ['97035']"]

    diffs = results[f"FAIL {where('Expects an error but the session bills')}"]
    assert len(diffs) == 1
    assert "expected an error containing 'no version in effect'" in diffs[0] and "was billed" in diffs[0]


def test_error_scenario_passes_on_its_own(tmp_path):
    path = tmp_path / "early.tests.yaml"
    path.write_text("""\
payer: medicare
scenarios:
  - name: "No Medicare version before 2000-04-01"
    session:
      date_of_service: 2000-03-31
      services: [{code: "97110", minutes: 30}]
    expect:
      error: "no version in effect"
""", encoding="utf-8")
    proc = run_cli("test", path)
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.splitlines() == [f"ok   {path}:3: medicare: No Medicare version before 2000-04-01",
                                        "scenarios: 1 passed, 0 failed"]


def test_schema_mistake_is_a_usage_error(tmp_path):
    path = tmp_path / "typo.tests.yaml"
    path.write_text("""\
payer: medicare
scenarios:
  - name: "typo under expect"
    session:
      date_of_service: 2026-03-02
      services: [{code: "97110", minutes: 30}]
    expect:
      line: {"97110": 2}
""", encoding="utf-8")
    proc = run_cli("test", path)
    assert proc.returncode == 2
    assert "ok " not in proc.stdout and "scenarios:" not in proc.stdout
    first = proc.stderr.splitlines()[0]
    # line 8 holds `line:`
    assert first.startswith(f"error: {path}:8: ")
    assert "'line'" in first
    assert "lines" in first                 # the suggestion names the right key


def test_own_payer_directory(tmp_path):
    rules = tmp_path / "my-rules"
    rules.mkdir()
    (rules / "acme-health.yaml").write_text("""\
payer: acme-health
name: "Acme Health (example)"
extends: medicare
method:
  name: midpoint_per_code
rules:
  - id: acme-manual-therapy-limit
    description: At most 2 units of manual therapy a day.
    source: "Acme provider manual 4.2"
    when:
      line: {code: 97140}
    then:
      - max_units: 2
""", encoding="utf-8")
    # Per code: 97112 24 -> 2, 97110 23 -> 2, 97140 40 -> 3 capped at 2 (Medicare would pool 87 min ->
    # 6 units: 97112 2 (9), 97110 1 (8), 97140 3 (10) - so these answers can only come from acme-health).
    (rules / "acme-health.tests.yaml").write_text("""\
payer: acme-health
scenarios:
  - name: "Per code, manual therapy capped"
    session:
      date_of_service: 2026-03-02
      discipline: PT
      services: [{code: "97112", minutes: 24}, {code: "97110", minutes: 23}, {code: "97140", minutes: 40}]
    expect:
      lines: {"97112": 2, "97110": 2, "97140": 2}
      modifiers: {"97140": [GP]}
      warnings:
        - {rule: acme-manual-therapy-limit, severity: warning, codes: ["97140"]}
  - name: "Still Medicare underneath: a group of one"
    session:
      date_of_service: 2026-03-02
      discipline: PT
      services: [{code: "97150", minutes: 30, group_size: 1}]
    expect:
      unbilled: ["97150"]
      warnings:
        - {rule: group-size, severity: error}
""", encoding="utf-8")
    proc = run_cli("test", rules)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    shown = (rules / "acme-health.tests.yaml").as_posix()     # as the directory was given: absolute
    assert lines == [f"ok   {shown}:3: acme-health: Per code, manual therapy capped",
                     f"ok   {shown}:13: acme-health: Still Medicare underneath: a group of one",
                     "scenarios: 2 passed, 0 failed"]
    # and a wrong expectation for the same payer fails: the payer really is the one in the directory
    (rules / "acme-health.tests.yaml").write_text("""\
payer: acme-health
scenarios:
  - name: "Medicare's answer is not acme's"
    session:
      date_of_service: 2026-03-02
      discipline: PT
      services: [{code: "97112", minutes: 24}, {code: "97110", minutes: 23}, {code: "97140", minutes: 40}]
    expect:
      lines: {"97112": 2, "97110": 1, "97140": 3}
""", encoding="utf-8")
    proc = run_cli("test", rules)
    assert proc.returncode == 1
    diffs = report(proc.stdout)[f"FAIL {shown}:3: acme-health: Medicare's answer is not acme's"]
    assert sorted(diffs) == ["lines.97110: expected 1 unit, got 2 units", "lines.97140: expected 3 units, got 2 units"]


def test_payers_are_found_beside_the_scenario_file_not_below_its_folder(tmp_path):
    """A scenario file in a folder with other projects below it (here a broken YAML file and a second
    medicare in sub/): `payrules test FILE` reads the payer files beside it only. Before, it read every YAML
    file under the folder and stopped with their errors."""
    (tmp_path / "acme.yaml").write_text("payer: acme\nname: Acme\nextends: medicare\n", encoding="utf-8")
    (tmp_path / "acme.tests.yaml").write_text(
        "payer: acme\nscenarios:\n  - name: one unit\n    session:\n      date_of_service: 2026-03-02\n"
        "      discipline: PT\n      services: [{code: \"97110\", minutes: 15}]\n    expect:\n"
        "      lines: {\"97110\": 1}\n", encoding="utf-8")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "broken.yaml").write_text("payer: [\n", encoding="utf-8")
    (sub / "medicare.yaml").write_text((ROOT / "rules" / "medicare.yaml").read_text(), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "engine", "test", str(tmp_path / "acme.tests.yaml")], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "scenarios: 1 passed, 0 failed" in proc.stdout
