"""Rule-file problems are found by `validate` (and before billing), not at first use.

Same method as test_rule_file_errors.py: a one-edit copy of its GOOD payer, refused by `validate FILE` and by
`bill --rules DIR` at the FILE:LINE (counted by hand from GOOD's line table) and field path expected.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from test_rule_file_errors import GOOD, check, edit, run_cli, write

ROOT = Path(__file__).resolve().parent.parent

# --- whole numbers: JSON Schema's "integer" accepts 15.0; the engine does not ---------------------------

FLOATS = {
    # name: (old text of GOOD, new text, line, path, the value as the message shows it)
    "unit_minutes": ("unit_minutes: 15", "unit_minutes: 15.0", 6, "method.unit_minutes", "15.0"),
    "first_unit_minutes": ("first_unit_minutes: 8", "first_unit_minutes: 8.0", 7, "method.first_unit_minutes",
                           "8.0"),
    "units": ("- timed_units: true", "- units: 1.0", 17, "rules[0].then[0].units", "1.0"),
    "max_units": ('- info: "{code} noted"', "- max_units: 2.0", 24, "rules[1].then[0].max_units", "2.0"),
    "minutes test": ("line: {code: 97110}", "line: {code: 97110, minutes: {lt: 30.0}}", 22,
                     "rules[1].when.line.minutes.lt", "30.0"),
    "group_size test": ("line: {code: 97110}", "line: {code: 97110, group_size: 2.0}", 22,
                        "rules[1].when.line.group_size", "2.0"),
    "line_count test": ("line: {code: 97110}", "line: {code: 97110}\n      session: {line_count: {gte: 2.0}}", 23,
                        "rules[1].when.session.line_count.gte", "2.0"),
    "block_units": ("- timed_units: true", "- block_units: {first_minutes: 60, first_min_minutes: 31.0, "
                    "next_minutes: 60, next_min_minutes: 31}", 17, "rules[0].then[0].block_units.first_min_minutes",
                    "31.0"),
    "code in a list": ("timed_15: [97110, 97140, 97535]", "timed_15: [97110, 97140.0, 97535]", 9,
                       "codes.timed_15[1]", "97140.0"),
}


@pytest.mark.parametrize("name", list(FLOATS))
def test_whole_number_written_as_a_float_is_refused(tmp_path, name):
    old, new, line, path, shown = FLOATS[name]
    check(tmp_path, edit(old, new), line, path, shown, "whole number", "decimal point")


def test_float_in_a_one_line_json_file_is_refused(tmp_path):
    data = yaml.safe_load(GOOD)
    data["effective_from"] = "2020-01-01"
    data["method"]["unit_minutes"] = 15.0
    check(tmp_path, json.dumps(data), 1, "method.unit_minutes", "15.0", "whole number")


def test_a_fraction_is_still_a_type_error(tmp_path):
    check(tmp_path, edit("unit_minutes: 15", "unit_minutes: 15.5"), 6, "method.unit_minutes", "integer")


# --- dates in conditions: a date that is not YYYY-MM-DD never matches ---------------------------------------

# In words, never a regex: a value not written YYYY-MM-DD "is not a date like 2026-03-02"; one written so
# that names no day of the calendar (February 30, month 13) "is not a real date".
DATES = {
    # the second rule tests the session's date instead of the line; its condition is on line 22
    "gte": ('{gte: "2026-1-1"}', "rules[1].when.session.date_of_service.gte",
            "'2026-1-1' is not a date like 2026-03-02"),
    "equality": ('"2026-02-30"', "rules[1].when.session.date_of_service", "'2026-02-30' is not a real date"),
    "in": ('{in: ["2026-01-01", "20260102"]}', "rules[1].when.session.date_of_service.in[1]",
           "'20260102' is not a date like 2026-03-02"),
    "ne": ('{ne: "2026-13-01"}', "rules[1].when.session.date_of_service.ne", "'2026-13-01' is not a real date"),
    "lt": ("{lt: 2026-01-01T10:00:00}", "rules[1].when.session.date_of_service.lt",
           "'2026-01-01T10:00:00' is not a date like 2026-03-02"),
}


@pytest.mark.parametrize("name", list(DATES))
def test_date_in_a_condition_must_be_a_calendar_date(tmp_path, name):
    test, path, message = DATES[name]
    text = edit("line: {code: 97110}", f"session: {{date_of_service: {test}}}")
    check(tmp_path, text, 22, path, pattern=f"^{re.escape(message)}$")


def test_real_dates_in_conditions_are_accepted(tmp_path):
    text = edit("line: {code: 97110}", 'session: {date_of_service: {gte: 2026-01-01, in: ["2026-02-28", 2026-03-01], '
                                       'ne: "2026-01-02"}}')
    path = write(tmp_path, text)
    proc = run_cli("validate", path)
    assert proc.returncode == 0, proc.stderr


# --- every payer is compiled for the engine before the first record is written ------------------------------

WIDE = "payer: tmp-wide\nname: A payer the compiler is made to refuse\nmethod:\n  name: cms_8_minute\n" \
       "codes:\n  untimed: [90001]\nrules:\n" \
       "  - id: refused\n    description: One unit.\n    source: test\n" \
       "    when:\n      line: {code: 90001}\n    then:\n      - units: 1\n"
# Every payer that validate accepts compiles today (the compiler splits what durable cannot take,
# test_engine_limits.py), so the compiler is made to refuse this one: any payer with a rule 'refused' in effect.
# What is tested is the order of the run: the refusal stops it before the first record, whichever session
# comes first.
REFUSING = """\
import sys
from engine import billing, compiler, loader
from engine.errors import RuleFileError
real = compiler.compile_payer
def refusing(payer):
    compiled = real(payer)
    if any(rule.id == "refused" for rule in payer.rules):
        raise RuleFileError("cannot compile rule: refused by the test")
    return compiled
loader.compile_payer = billing.compile_payer = refusing
from engine.cli import main
sys.exit(main(sys.argv[1:]))
"""


def wide_tree(tmp_path):
    directory = tmp_path / "extra"
    directory.mkdir()
    (directory / "wide.yaml").write_text(WIDE, encoding="utf-8")
    sessions = [{"session_id": f"M{i}", "payer": "medicare", "discipline": "PT",
                 "services": [{"code": "97110", "minutes": 30}]} for i in range(3)]
    sessions.append({"session_id": "W", "payer": "tmp-wide", "services": [{"code": "90001", "minutes": 30}]})
    (tmp_path / "sessions.json").write_text(json.dumps(sessions), encoding="utf-8")
    (tmp_path / "refusing.py").write_text(REFUSING, encoding="utf-8")
    return directory


def run_refusing(tmp_path, *args):
    return subprocess.run([sys.executable, str(tmp_path / "refusing.py"), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize("command", [["bill", "--format", "json"], ["bill", "--format", "jsonl", "--jobs", "2"],
                                     ["compare", "--payers", "medicare,tmp-wide", "--format", "json"],
                                     ["explain", "--format", "json"]])
@pytest.mark.parametrize("engine", ["python", "durable"])
def test_a_payer_the_compiler_refuses_stops_the_run_before_any_output(tmp_path, command, engine):
    from engine.network import durable_available
    if engine == "durable" and not durable_available():
        pytest.skip("durable-rules is not installed")
    directory = wide_tree(tmp_path)
    proc = run_refusing(tmp_path, command[0], tmp_path / "sessions.json", "--rules", directory, "--engine", engine,
                        *command[1:])
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""        # the three Medicare sessions come first: none of them is written
    # the compiler's error names no file: it is the payer's, at its `payer:` key (line 1)
    assert f"error: {directory.as_posix()}/wide.yaml:1: " in proc.stderr and "refused by the test" in proc.stderr, \
        proc.stderr


def test_validate_refuses_a_payer_the_compiler_refuses(tmp_path):
    directory = wide_tree(tmp_path)
    proc = run_refusing(tmp_path, "validate", directory)
    assert proc.returncode == 2, proc.stderr
    assert f"error: {directory.as_posix()}/wide.yaml:1: " in proc.stderr and "refused by the test" in proc.stderr, \
        proc.stderr


def test_check_all_compiles_every_dated_resolution(tmp_path, monkeypatch):
    # the refused rule is in effect only from 2027: the payer as a 2026 session resolves it compiles, the
    # payer as it is from 2027 does not; check_all finds it without any session dated 2027
    from engine import loader
    from engine.errors import RuleFileError
    from engine.loader import Registry
    real = loader.compile_payer

    def refusing(payer):
        if any(rule.id == "refused" for rule in payer.rules):
            raise RuleFileError("cannot compile rule: refused by the test")
        return real(payer)

    monkeypatch.setattr(loader, "compile_payer", refusing)
    directory = tmp_path / "extra"
    directory.mkdir()
    text = WIDE.replace("    source: test\n", "    source: test\n    effective_from: 2027-01-01\n")
    (directory / "wide.yaml").write_text(text, encoding="utf-8")
    registry = Registry([directory], include_bundled=False, strict=False)
    assert registry.resolve("tmp-wide", "2026-05-01").rules == ()
    with pytest.raises(RuleFileError, match="refused by the test"):
        registry.check_all("python")


# --- the rule cache (engine/cache.py) -------------------------------------------------------------------------

import shutil      # noqa: E402

FIXED = """\
payer: tmp-fixed
name: One fixed unit
method:
  name: cms_8_minute
codes:
  untimed: [97750]
rules:
  - id: fixed
    description: 97750 is one unit.
    source: test
    when:
      line: {code: 97750}
    then:
      - units: 1
"""


def run_with_cache(cache_dir, *args, cwd=ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PAYRULES_CACHE": str(cache_dir)}
    return subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)


def test_the_suite_does_not_write_to_the_users_cache():
    folder = os.environ.get("PAYRULES_CACHE", "")
    assert folder and Path(folder).is_dir()
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "payer-rules"
    assert Path(folder).resolve() != default.resolve()


def test_a_change_to_the_validating_code_misses_the_cache(tmp_path):
    # a copy of the program whose line tracker (yamlload.py) differs by one comment: it must not trust
    # entries the original wrote (and the original must still find its own)
    copy = tmp_path / "copy"
    for name in ("engine", "schemas", "rules"):
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / "engine" / "yamlload.py", "a", encoding="utf-8") as fh:
        fh.write("# a changed line tracker\n")
    rules = tmp_path / "extra"
    rules.mkdir()
    (rules / "fixed.yaml").write_text(FIXED, encoding="utf-8")
    cache_dir = tmp_path / "cache"

    def entries():
        # rule entries (the bundled medicare.yaml's NCCI table has an index entry of its own, tables.py)
        return sorted(p.name for p in cache_dir.iterdir() if not p.name.startswith("table-"))

    assert run_with_cache(cache_dir, "validate", rules / "fixed.yaml").returncode == 0
    first = entries()
    assert first and all(name.startswith("rules-") for name in first)
    assert run_with_cache(cache_dir, "validate", rules / "fixed.yaml").returncode == 0
    assert entries() == first                           # the same code: every file a hit
    assert run_with_cache(cache_dir, "validate", rules / "fixed.yaml", cwd=copy).returncode == 0
    assert len(entries()) == 2 * len(first)             # the changed code: every file a miss


def doctored_entry(cache_dir: Path) -> None:
    """Write, as cache.store would name it, an entry for FIXED whose data bills 97750 as 7 units."""
    import hashlib
    from engine import cache
    from engine.yamlload import load_text
    doc = load_text(FIXED, "extra/fixed.yaml")
    doc.data["rules"][0]["then"][0]["units"] = 7
    lines = [[list(p), line] for p, line in doc.lines.items()]
    check = hashlib.sha256(json.dumps([doc.data, lines], sort_keys=True).encode()).hexdigest()
    name = f"rules-{cache._salt()}-{hashlib.sha256(FIXED.encode()).hexdigest()}.json"
    path = cache_dir / name
    path.write_text(json.dumps({"data": doc.data, "lines": lines, "check": check}), encoding="utf-8")
    path.chmod(0o600)


def bill_fixed(tmp_path, cache_dir) -> tuple:
    rules = tmp_path / "extra"
    rules.mkdir(exist_ok=True)
    (rules / "fixed.yaml").write_text(FIXED, encoding="utf-8")
    session = tmp_path / "s.json"
    session.write_text(json.dumps({"payer": "tmp-fixed", "services": [{"code": "97750", "minutes": 30}]}))
    proc = run_with_cache(cache_dir, "bill", session, "--rules", rules, "--format", "json")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout)["lines"][0]["units"], proc.stderr


WARNING = "payrules: warning: not using cache {}: it is {}"


def test_a_private_cache_entry_is_used(tmp_path):
    # the control for the tests below: in a directory only its owner can write, the doctored entry is
    # trusted (so they prove that the entry would have been used)
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir(mode=0o700)
    doctored_entry(cache_dir)
    units, stderr = bill_fixed(tmp_path, cache_dir)
    assert units == 7 and "warning" not in stderr


def test_a_cache_directory_others_can_write_is_not_used(tmp_path):
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    doctored_entry(cache_dir)
    cache_dir.chmod(0o777)
    units, stderr = bill_fixed(tmp_path, cache_dir)
    assert units == 1                                   # the file's own rule, not the entry's 7
    assert stderr.count(WARNING.format(cache_dir, "writable by others")) == 1, stderr
    assert stderr.count("warning") == 1


def test_a_cache_entry_others_can_write_is_not_used(tmp_path):
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir(mode=0o700)
    doctored_entry(cache_dir)
    for entry in cache_dir.iterdir():
        entry.chmod(0o666)
    units, stderr = bill_fixed(tmp_path, cache_dir)
    assert units == 1 and "warning" not in stderr


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to give files away")
def test_a_cache_directory_of_another_user_is_not_used(tmp_path):
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir(mode=0o700)
    doctored_entry(cache_dir)
    os.chown(cache_dir, 65534, 65534)
    units, stderr = bill_fixed(tmp_path, cache_dir)
    assert units == 1
    assert stderr.count(WARNING.format(cache_dir, "owned by another user")) == 1, stderr
