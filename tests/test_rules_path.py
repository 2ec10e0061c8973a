"""Where payrules finds payers (issue 11 item 2, design.md §3): the bundled rules, then the directories of
PAYRULES_RULES, then each --rules DIR, for every command that takes rules; rule-file messages name paths
the user can open from the working directory; `validate` says when what it checked is not in that path;
`python -m engine` finds the same payers from any working directory."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

ROOT = Path(__file__).resolve().parent.parent

# The README guide's payer: Medicare, but per-code midpoint and at most 2 units of 97140.
ACME = """\
payer: acme-health
name: "Acme Health (example)"
extends: medicare
method:
  name: midpoint_per_code
rules:
  - id: acme-manual-therapy-limit
    description: At most 2 units of manual therapy a day.
    source: "test"
    when:
      line: {code: 97140}
    then:
      - max_units: 2
"""
SESSION = """\
session_id: T-1
date_of_service: 2026-03-02
discipline: PT
services:
  - {code: "97112", minutes: 24}
  - {code: "97110", minutes: 23}
  - {code: "97140", minutes: 40}
"""
# Acme, per code: 24 min -> 1 unit + 9 left (>= 8) = 2; 23 -> 1 + 8 = 2; 40 -> 2 + 10 = 3, capped at 2.
# Medicare pools 87 min -> 6 units: full units 1+1+2, leftovers 9, 8, 10 -> the 2 extra to 97140 and 97112.
ACME_UNITS = {"97112": 2, "97110": 2, "97140": 2}
MEDICARE_UNITS = {"97112": 2, "97110": 1, "97140": 3}
SCENARIO = """\
payer: acme-health
scenarios:
  - name: capped
    session:
      date_of_service: 2026-03-02
      discipline: PT
      services: [{code: "97140", minutes: 40}]
    expect:
      lines: {"97140": 2}
"""


def run(*args, cwd=ROOT, rules_env=None) -> subprocess.CompletedProcess:
    """`python -m engine ARGS` with PAYRULES_RULES set to `rules_env` (unset when None)."""
    env = {k: v for k, v in os.environ.items() if k != "PAYRULES_RULES"}
    env["PYTHONPATH"] = str(ROOT)
    if rules_env is not None:
        env["PAYRULES_RULES"] = str(rules_env)
    proc = subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def tree(parent: Path, name: str = "my-rules", text: str = ACME, scenarios: bool = False) -> Path:
    directory = parent / name
    directory.mkdir(parents=True)
    (directory / "acme-health.yaml").write_text(text, encoding="utf-8")
    if scenarios:
        (directory / "acme-health.tests.yaml").write_text(SCENARIO, encoding="utf-8")
    return directory


def units(result: dict) -> dict:
    return {line["code"]: line["units"] for line in result["lines"]}


@pytest.fixture
def acme(tmp_path):
    rules = tree(tmp_path, scenarios=True)
    (tmp_path / "session.yaml").write_text(SESSION, encoding="utf-8")
    return rules, tmp_path / "session.yaml"


# --- every command that takes rules sees the trees of PAYRULES_RULES -------------------------------------

def check_bill(proc, rules):
    assert units(json.loads(proc.stdout)) == ACME_UNITS


def check_compare(proc, rules):
    rows = {row["code"]: row["units"] for row in json.loads(proc.stdout)["rows"]}
    assert rows == {code: {"medicare": MEDICARE_UNITS[code], "acme-health": ACME_UNITS[code]} for code in ACME_UNITS}


def check_explain(proc, rules):
    doc = json.loads(proc.stdout)
    assert doc["payer"] == "acme-health" and units(doc["result"]) == ACME_UNITS


def check_validate(proc, rules):
    assert f"ok   {(rules / 'acme-health.yaml').as_posix()}" in proc.stdout.splitlines()


def check_payers(proc, rules):
    entry = [p for p in json.loads(proc.stdout) if p["id"] == "acme-health"]
    # the contract's `file`: relative to the rules tree's parent
    assert [(p["file"], p["extends"]) for p in entry] == [("my-rules/acme-health.yaml", "medicare")]


def check_test(proc, rules):
    assert f"ok   {(rules / 'acme-health.tests.yaml').as_posix()}:3: acme-health: capped" in proc.stdout.splitlines()


COMMANDS = {
    "bill": (["bill", "{session}", "--payer", "acme-health", "--format", "json"], check_bill),
    "compare": (["compare", "{session}", "--payers", "medicare,acme-health", "--format", "json"], check_compare),
    "explain": (["explain", "{session}", "--payer", "acme-health", "--format", "json"], check_explain),
    "validate": (["validate"], check_validate),
    "payers": (["payers", "--format", "json"], check_payers),
    "test": (["test"], check_test),
}


@pytest.mark.parametrize("command", COMMANDS)
def test_payrules_rules_adds_a_tree_to_every_command(acme, command):
    rules, session = acme
    args, check = COMMANDS[command]
    args = [str(session) if a == "{session}" else a for a in args]
    proc = run(*args, rules_env=rules)
    assert proc.returncode == 0, proc.stderr
    check(proc, rules)
    # without it the payer is not found: the variable is what found it
    without = run(*args)
    assert without.returncode != 0 or "acme-health" not in without.stdout, without.stdout


def test_payrules_rules_with_audit_replay_current_rules(acme, tmp_path):
    rules, session = acme
    db = tmp_path / "audit.db"
    proc = run("bill", session, "--payer", "acme-health", "--audit-db", db, "--format", "json", rules_env=rules)
    assert proc.returncode == 0, proc.stderr
    # today's rules include PAYRULES_RULES: the session bills as it did
    proc = run("audit", db, "--replay", "--current-rules", rules_env=rules)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 unchanged, 0 would change" in proc.stdout
    # without it, today's rules have no acme-health: the session would change
    proc = run("audit", db, "--replay", "--current-rules")
    assert proc.returncode == 1 and "unknown payer 'acme-health'" in proc.stdout, proc.stdout
    # a query, or a replay with the logged rules, does not read PAYRULES_RULES: a bad entry does not matter
    for args in (["audit", db], ["audit", db, "--replay"]):
        proc = run(*args, rules_env=tmp_path / "missing")
        assert proc.returncode == 0, proc.stderr


def test_order_is_bundled_then_payrules_rules_then_rules_flag_and_empty_entries_are_ignored(tmp_path):
    first = tree(tmp_path / "a", text=ACME.replace("acme-health", "acme-one"))
    second = tree(tmp_path / "b", text=ACME.replace("acme-health", "acme-two"))
    flag = tree(tmp_path / "c", text=ACME.replace("acme-health", "acme-three"))
    # empty entries (leading, doubled, trailing separators) are ignored
    env = f"{os.pathsep}{first}{os.pathsep}{os.pathsep}{second}{os.pathsep}"
    proc = run("validate", "--rules", flag, rules_env=env)
    assert proc.returncode == 0, proc.stderr
    ok = [line.removeprefix("ok   ") for line in proc.stdout.splitlines()]
    bundled = [line for line in ok if line.startswith("rules/")]
    assert bundled and ok[:len(bundled)] == bundled         # from the repository root: relative to it
    assert ok[len(bundled):] == [(d / "acme-health.yaml").as_posix() for d in (first, second, flag)]
    assert f"{len(ok)} valid, 0 invalid" in proc.stderr


@pytest.mark.parametrize("entry", ["missing", "a-file"])
def test_a_payrules_rules_entry_that_is_no_directory_is_one_error_line(tmp_path, entry):
    (tmp_path / "a-file").write_text("x")
    bad = tmp_path / entry
    for args in (["payers"], ["bill", "examples/ot-session.yaml"], ["validate"], ["test"]):
        proc = run(*args, rules_env=f"{tree(tmp_path / args[0])}{os.pathsep}{bad}")
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stdout == ""
        hint = " (it is a file: list the directory that holds it)" if entry == "a-file" else ""
        assert proc.stderr == f"error: PAYRULES_RULES: rules directory not found: {bad}{hint}\n"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any directory")
def test_an_unreadable_payrules_rules_directory_is_one_error_line(tmp_path):
    rules = tree(tmp_path)
    rules.chmod(0)
    try:
        proc = run("payers", rules_env=rules)
    finally:
        rules.chmod(0o755)
    assert proc.returncode == 2
    assert proc.stderr == f"error: PAYRULES_RULES: cannot read rules directory {rules}: Permission denied\n"


def test_an_unreadable_rules_directory_is_an_error_not_an_empty_tree(tmp_path, monkeypatch):
    # as root chmod cannot make it unreadable: scandir fails as it would
    from engine import loader
    from engine.errors import UsageError
    rules = tree(tmp_path)

    def refuse(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(loader.os, "scandir", refuse)
    with pytest.raises(UsageError, match=re.escape(f"cannot read rules directory {rules}: Permission denied")):
        loader.rule_files(rules)
    monkeypatch.setenv("PAYRULES_RULES", str(rules))
    from engine.paths import env_rules
    with pytest.raises(UsageError, match=re.escape(f"PAYRULES_RULES: cannot read rules directory {rules}")):
        env_rules()


# --- a payer id defined twice across trees ---------------------------------------------------------------

def test_a_payer_defined_in_two_trees_is_an_error_naming_both_files(tmp_path, acme):
    rules, session = acme
    again = tree(tmp_path / "again")
    proc = run("bill", session, "--payer", "acme-health", "--rules", again, rules_env=rules)
    assert proc.returncode == 2 and proc.stdout == ""
    one, two = (rules / "acme-health.yaml").as_posix(), (again / "acme-health.yaml").as_posix()
    # a line for each file (every error is reported), naming the other: both paths open
    said = [re.fullmatch(r"error: (\S+):1: payer: payer 'acme-health' is also defined in (\S+) for dates "
                         r"that overlap; .*", line).groups() for line in proc.stderr.splitlines()]
    assert sorted(said) == sorted([(one, two), (two, one)])
    proc = run("validate", rules_env=f"{rules}{os.pathsep}{again}")
    assert proc.returncode == 2
    assert sorted(re.findall(r"^error: (\S+):1: payer: .* also defined in (\S+) for", proc.stderr, re.M)) == \
        sorted([(one, two), (two, one)])


def test_a_copy_of_a_bundled_payer_in_a_tree_named_rules_names_the_bundled_file_not_itself(tmp_path):
    # Both files are `rules/medicare.yaml` relative to their tree's parent: the message used to say the
    # copy was "also defined in rules/medicare.yaml", naming itself. From another directory it names both
    # files as they can be opened from there.
    copy = tmp_path / "rules"
    copy.mkdir()
    (copy / "medicare.yaml").write_bytes((ROOT / "rules/medicare.yaml").read_bytes())
    shutil.copytree(ROOT / "rules/ncci", copy / "ncci")     # the table medicare.yaml names
    proc = run("payers", cwd=tmp_path, rules_env="rules")
    assert proc.returncode == 2
    bundled = (ROOT / "rules/medicare.yaml").as_posix()
    assert sorted(proc.stderr.splitlines()) == sorted([
        f"error: rules/medicare.yaml:4: payer: payer 'medicare' is also defined in {bundled} for dates that "
        "overlap; give the versions effective_from/effective_to ranges that do not overlap",
        f"error: {bundled}:4: payer: payer 'medicare' is also defined in rules/medicare.yaml for dates that "
        "overlap; give the versions effective_from/effective_to ranges that do not overlap"]), proc.stderr


def test_the_same_tree_named_in_payrules_rules_and_by_rules_is_read_once(acme):
    # README's guide passes --rules my-rules; a user who also exported PAYRULES_RULES=my-rules has one
    # file found twice, not two definitions of acme-health
    rules, session = acme
    proc = run("bill", session.name, "--payer", "acme-health", "--rules", "my-rules", "--rules", f"./{rules.name}/",
               "--rules", rules, "--format", "json", cwd=rules.parent, rules_env=rules.name)
    assert proc.returncode == 0, proc.stderr
    assert units(json.loads(proc.stdout)) == ACME_UNITS


# --- paths the user can open -----------------------------------------------------------------------------

BAD = ACME.replace("    then:\n      - max_units: 2\n", "    then:\n      - max_unit: 2\n")    # line 13


def test_validate_a_nested_directory_from_another_directory_prints_paths_that_open(tmp_path):
    work = tmp_path / "work"
    nested = work / "bad" / "m2"
    nested.mkdir(parents=True)
    (nested / "acme-health.yaml").write_text(BAD, encoding="utf-8")
    (nested / "good.yaml").write_text(ACME.replace("acme-health", "good-health"), encoding="utf-8")
    proc = run("validate", "bad/m2", cwd=work)
    assert proc.returncode == 2
    errors = re.findall(r"^error: ([^:]+):(\d+): ", proc.stderr, re.M)
    oks = [line.removeprefix("ok   ") for line in proc.stdout.splitlines()]
    assert errors == [("bad/m2/acme-health.yaml", "13")] and oks == ["bad/m2/good.yaml"]   # was m2/...
    for name, line in errors:
        with open(work / name, encoding="utf-8") as fh:      # the path opens from the working directory
            assert "max_unit:" in fh.read().splitlines()[int(line) - 1]
    for name in oks:
        open(work / name).close()
    # given absolute, named absolute
    proc = run("validate", nested, cwd=tmp_path)
    assert re.findall(r"^error: ([^:]+):13: ", proc.stderr, re.M) == [(nested / "acme-health.yaml").as_posix()]
    assert proc.stdout == f"ok   {(nested / 'good.yaml').as_posix()}\n"


def test_bundled_files_are_named_so_they_open_from_any_directory(tmp_path):
    proc = run("validate", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    oks = [line.removeprefix("ok   ") for line in proc.stdout.splitlines()]
    assert oks and all(Path(name).is_absolute() and Path(name).is_file() for name in oks), oks
    assert (ROOT / "rules/medicare.yaml").as_posix() in oks


def test_rule_file_errors_of_bill_name_a_path_that_opens_but_sources_stay_relative_to_the_tree(tmp_path):
    work = tmp_path / "work"
    tree(work / "bad", "m2", BAD)
    proc = run("bill", ROOT / "examples/ot-session.yaml", "--rules", "bad/m2", cwd=work)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: bad/m2/acme-health.yaml:13: rules[0].then[0].max_unit: ")
    # a good tree: the trace's source and payers' file are relative to the rules tree's parent (§3, §5)
    tree(work / "good", "m2")
    (work / "session.yaml").write_text(SESSION, encoding="utf-8")
    proc = run("bill", "session.yaml", "--payer", "acme-health", "--rules", "good/m2", "--format", "json", cwd=work)
    assert proc.returncode == 0, proc.stderr
    sources = {t["rule"]: t["source"] for t in json.loads(proc.stdout)["trace"]}
    assert sources["acme-manual-therapy-limit"] == "m2/acme-health.yaml:7"      # its `- id:` is line 7 of ACME
    assert sources["timed-pool"].startswith("rules/medicare.yaml:")
    proc = run("payers", "--rules", "good/m2", "--format", "json", cwd=work)
    assert {p["id"]: p["file"] for p in json.loads(proc.stdout)}["acme-health"] == "m2/acme-health.yaml"


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(depth=st.integers(0, 3), absolute=st.booleans(), by_file=st.booleans(), bad=st.booleans(),
       dots=st.booleans())
def test_every_validate_line_names_a_path_that_opens(tmp_path_factory, monkeypatch, capsys, depth, absolute,
                                                     by_file, bad, dots):
    """Any nesting, relative or absolute, a directory or a file, `./` or not: each ok and error line's path
    opens from the working directory (in-process, so that many shapes stay fast)."""
    from engine.cli import main
    work = tmp_path_factory.mktemp("work")
    directory = work.joinpath(*[f"d{i}" for i in range(depth)], "payers")
    tree(directory.parent, directory.name, BAD if bad else ACME)
    target = directory / "acme-health.yaml" if by_file else directory
    name = str(target) if absolute else ("./" if dots else "") + target.relative_to(work).as_posix()
    monkeypatch.chdir(work)
    monkeypatch.delenv("PAYRULES_RULES", raising=False)
    code = main(["validate", name])
    out, err = capsys.readouterr()
    named = [line.removeprefix("ok   ") for line in out.splitlines()] + \
        re.findall(r"^error: (.+?):\d+: ", err, re.M)
    assert code == (2 if bad else 0) and len(named) == 1, (out, err)
    assert Path(named[0]).is_absolute() == absolute
    with open(named[0], encoding="utf-8") as fh:
        assert "payer: acme-health" in fh.read()


# --- validate says when bill and compare will not see what it checked ------------------------------------

NOTE = "note: bill and compare will not see the payers in {} unless the directory is passed with --rules or " \
       "listed in PAYRULES_RULES"


def test_validate_outside_the_rules_path_says_how_bill_will_see_it(tmp_path):
    tree(tmp_path, "my-rules")
    proc = run("validate", "my-rules", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout == "ok   my-rules/acme-health.yaml\n"
    assert proc.stderr.splitlines() == ["1 valid, 0 invalid", NOTE.format("my-rules")]
    # a file: the directory to pass is its own; two files of one directory name it once
    proc = run("validate", "my-rules/acme-health.yaml", cwd=tmp_path)
    assert proc.stderr.splitlines()[-1] == NOTE.format("my-rules")
    (tmp_path / "my-rules" / "other.yaml").write_text(ACME.replace("acme-health", "other"), encoding="utf-8")
    tree(tmp_path, "more-rules", ACME.replace("acme-health", "more-health"))
    proc = run("validate", "my-rules/acme-health.yaml", "my-rules/other.yaml", "more-rules", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines()[-1] == NOTE.format("my-rules, more-rules").replace(
        "the directory is", "each directory is")
    (tmp_path / "my-rules" / "other.yaml").unlink()
    # only invalid files outside: they cannot be billed anyway, the errors say what to do
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "acme-health.yaml").write_text(BAD, encoding="utf-8")
    proc = run("validate", "broken", cwd=tmp_path)
    assert proc.returncode == 2 and "note:" not in proc.stderr
    # in the rules path, by either means: nothing to say
    for proc in (run("validate", "my-rules", "--rules", "my-rules", cwd=tmp_path),
                 run("validate", "my-rules/acme-health.yaml", cwd=tmp_path, rules_env="my-rules"),
                 run("validate", ROOT / "rules", cwd=tmp_path)):
        assert proc.returncode == 0 and "note:" not in proc.stderr, proc.stderr
    # and what it says is so: bill sees the payer once the directory is passed
    (tmp_path / "session.yaml").write_text(SESSION, encoding="utf-8")
    assert run("bill", "session.yaml", "--payer", "acme-health", cwd=tmp_path).returncode == 2
    proc = run("bill", "session.yaml", "--payer", "acme-health", "--format", "json", cwd=tmp_path,
               rules_env="my-rules")
    assert proc.returncode == 0 and units(json.loads(proc.stdout)) == ACME_UNITS


# --- the same payers from any working directory ----------------------------------------------------------

def test_python_m_engine_finds_the_same_payers_from_any_directory(tmp_path):
    here = run("payers", "--format", "json")
    there = run("payers", "--format", "json", cwd=tmp_path)
    assert here.returncode == there.returncode == 0, there.stderr
    listing = json.loads(there.stdout)
    assert listing == json.loads(here.stdout)
    assert {"medicare", "example-midpoint"} <= {p["id"] for p in listing}
    # a `rules` folder in the working directory is not the bundled one
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "acme-health.yaml").write_text(ACME, encoding="utf-8")
    assert json.loads(run("payers", "--format", "json", cwd=tmp_path).stdout) == listing


def test_a_logged_rule_file_that_cannot_be_loaded_is_named_as_it_was_logged(tmp_path):
    # audit --replay recreates the logged files in a temporary directory that is gone when the message is
    # read: the message names the file as the log does (relative to its tree's parent), not that directory
    import hashlib
    from engine.audit import _logged_registry
    from engine.errors import RuleFileError
    content = BAD.encode()
    sha = hashlib.sha256(content).hexdigest()

    class Reader:
        class db:
            @staticmethod
            def execute(sql, args):
                class Rows:
                    def fetchone(self):
                        return (content,) if args == (sha,) else None
                return Rows()

        def rule_set(self, set_id):
            return None, [("my-rules/acme-health.yaml", sha)]

    with pytest.raises(RuleFileError) as caught:
        _logged_registry(Reader(), 1, tmp_path / "replay")
    # every mistake is named by the logged path (the log above holds no medicare, so extends fails too)
    assert caught.value.lines() == ["my-rules/acme-health.yaml:3: extends: extends unknown payer 'medicare'",
                                    "my-rules/acme-health.yaml:13: rules[0].then[0].max_unit: unknown key "
                                    "'max_unit' (did you mean 'max_units'?)"]


def test_a_relative_payrules_rules_entry_not_found_says_where_it_was_looked_up(tmp_path):
    """The guide's `export PAYRULES_RULES=my-rules` works in the folder that holds my-rules and in no other:
    the error says the entry was taken from the working directory and how to make it work everywhere."""
    tree(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert run("payers", cwd=tmp_path, rules_env="my-rules").returncode == 0
    proc = run("payers", cwd=elsewhere, rules_env="my-rules")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (f"error: PAYRULES_RULES: rules directory not found: my-rules (a relative entry is "
                           f"looked up from the working directory, {elsewhere}: write it as an absolute path)\n")
    proc = run("payers", cwd=elsewhere, rules_env=f"{tmp_path / 'my-rules'} ")
    assert proc.returncode == 2
    assert proc.stderr.endswith(f"(the entry '{tmp_path / 'my-rules'} ' has spaces around it)\n")


def test_a_payrules_rules_entry_starting_with_a_tilde_is_in_the_home_directory(tmp_path, monkeypatch):
    """`PAYRULES_RULES="~/my-rules"` (quoted, so the shell left the ~) names the home directory's tree."""
    from engine.paths import env_rules
    tree(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert env_rules({"PAYRULES_RULES": f"~/my-rules{os.pathsep}"}) == [tmp_path / "my-rules"]
