"""`payrules --version` and the help text (issue 11 items 4 and 8): the version of pyproject.toml, a
description for every command and help text for every option of every command."""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]


def run(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize("argv", [["-m", "engine", "--version"],
                                  # what the installed `payrules` script does: engine:run with argv[1:]
                                  ["-c", "import sys; from engine import run; sys.exit(run())", "--version"]],
                         ids=["python-m-engine", "entry-point"])
def test_version_prints_the_version_of_pyproject(argv):
    proc = run(*argv)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"payrules {VERSION}\n" and proc.stderr == ""


def _subcommands(parser: argparse.ArgumentParser) -> dict:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {choice.dest: choice.help for choice in action._choices_actions}
    return {name: (sub, helps.get(name)) for name, sub in action.choices.items()}


def test_every_option_of_every_command_has_help_text():
    from engine.cli import _parser
    parser = _parser()
    missing = [f"payrules {a.option_strings or a.dest}" for a in parser._actions
               if not isinstance(a, argparse._SubParsersAction) and not (a.help or "").strip()]
    commands = _subcommands(parser)
    assert set(commands) >= {"bill", "compare", "explain", "audit", "validate", "test", "payers"}
    for name, (sub, line) in commands.items():
        if not (line or "").strip():
            missing.append(f"payrules {name}: no line in payrules --help")
        if not (sub.description or "").strip():
            missing.append(f"payrules {name}: no description")
        missing += [f"payrules {name} {'/'.join(a.option_strings) or a.dest}" for a in sub._actions
                    if not (a.help or "").strip() or a.help == argparse.SUPPRESS]
    assert missing == []


def test_help_lists_every_command_with_a_line_each():
    from engine.cli import _parser
    proc = run("-m", "engine", "--help")
    assert proc.returncode == 0
    for name, (_, line) in _subcommands(_parser()).items():
        assert re.search(rf"^\s+{name}\s+{re.escape(line)}$", proc.stdout, re.M), (name, proc.stdout)
    assert "--version" in proc.stdout and "PAYRULES_RULES" in proc.stdout


def test_usage_names_values_as_the_readme_does():
    """Each command's usage line names an option's value as the README's command table does (`--from
    DATE`, `--session ID`, `--payers ID,ID,...`), not by argparse's default, the option's dest in capitals
    (`--from DATE_FROM`, `--session SESSION`)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for command in ("bill", "compare", "explain", "audit"):
        proc = run("-m", "engine", command, "--help")
        usage = proc.stdout.split("\n\n", 1)[0]
        shown = re.findall(r"\[?(--[\w-]+) ([A-Z][\w,.-]*)", usage)
        assert shown, usage
        for option, value in shown:
            documented = re.search(rf"`payrules {command} [^`]*?{re.escape(option)} ([^\]|`\s]+)", readme)
            assert documented and documented.group(1).replace("\\", "") == value, (command, option, value)
