"""Every command the README prints works exactly as printed.

The README's commands are collected from the text itself (code blocks and inline code), so a command
added to the README is run here without anyone listing it. A command is run by `bash` in a folder that
holds what the README's commands name (the bundled examples, the guide's payer and session, a day's
JSONL and CSV, an audit log), with `payrules` on the PATH as the README's set-up puts it there (an
activated venv; `.venv/bin/payrules` works too). The `payrules` found there runs this checkout's code,
so the test checks the README against the code beside it. A block that starts with `$ command` shows
that command's output, which must be exactly what it prints; a comment after it, `# exit status N`, is the
exit status it must end with (0 otherwise).
"""
from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")

# Commands that take minutes (the benchmark) or install packages (the set-up's pip). The test fails if
# the README's list of such commands changes, so none is skipped unseen.
# `payrules serve` runs until it is stopped: tests/test_service.py starts it on a free port and runs the
# README's curl example against it instead.
NOT_RUN = {
    "payrules serve",
    ".venv/bin/python benchmarks/service_bench.py",
    ".venv/bin/python benchmarks/bench.py",
    ".venv/bin/python benchmarks/bench.py --million",
    ".venv/bin/python -m pytest",
}

PLACEHOLDER = re.compile(r"\.\.\.|\[|\||\b(INPUT|ID|DIR|PATH|FILE|RULE_ID|DATE|N|COMMAND)\b")


def _code_blocks(text: str):
    """(info string, body) of every fenced block, indented ones (inside list items) included."""
    for match in re.finditer(r"^( *)```(\w*)\n(.*?)^\1```", text, re.S | re.M):
        yield match.group(2), textwrap.dedent(match.group(3))


def _strip_comment(line: str) -> str:
    return re.sub(r"\s+#\s.*$", "", line).strip()


def readme_commands() -> list[str]:
    """Every runnable command the README prints, in order of appearance (set-up chains split on &&)."""
    found: list[str] = []
    for info, body in _code_blocks(README):
        lines = body.splitlines()
        if lines and lines[0].startswith("$ "):
            found.append(_strip_comment(lines[0][2:]))
        elif info == "sh":
            for line in lines:
                line = _strip_comment(line)
                if line:
                    found.extend(part.strip() for part in line.split("&&"))
    for match in re.finditer(r"`((?:\.venv/bin/)?payrules [^`]*)`", README):
        if len(match.group(1).split()) > 2:      # `payrules bill` in a sentence names the command
            found.append(match.group(1))
    commands = []
    for command in found:
        if command.startswith(("python3 -m venv", ".venv/bin/pip ")) or PLACEHOLDER.search(command):
            continue
        if command.split()[0] in ("payrules", ".venv/bin/payrules", ".venv/bin/python") and command not in commands:
            commands.append(command)
    return commands


def shown_outputs() -> dict[str, str]:
    """Command -> the output the README shows for it (a block whose first line is `$ command`)."""
    shown = {}
    for _info, body in _code_blocks(README):
        lines = body.splitlines()
        if lines and lines[0].startswith("$ "):
            shown[_strip_comment(lines[0][2:])] = "\n".join(lines[1:]) + "\n"
    return shown


def exit_statuses() -> dict[str, int]:
    """Command -> the exit status its `$` line's comment `# exit status N` gives."""
    found = {}
    for _info, body in _code_blocks(README):
        first = body.split("\n", 1)[0]
        match = re.fullmatch(r"\$ (.*?)\s+# exit status (\d+)\b.*", first)
        if match:
            found[match.group(1).strip()] = int(match.group(2))
    return found


def readme_files() -> dict[str, str]:
    """The files the README shows: a yaml block whose first line is `# PATH` is the file PATH."""
    files = {}
    for info, body in _code_blocks(README):
        first = body.split("\n", 1)[0]
        if info == "yaml" and re.fullmatch(r"# [\w./-]+\.yaml", first):
            files[first[2:]] = body
    return files


def _shim(path: Path) -> None:
    """A `payrules` that runs this checkout, as the installed console script would."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\nPYTHONPATH="{ROOT}" exec "{sys.executable}" -m engine "$@"\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A folder holding what the README's commands name, with payrules on the PATH."""
    work = tmp_path_factory.mktemp("readme")
    shutil.copytree(ROOT / "examples", work / "examples")
    for name, text in readme_files().items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text)
    shutil.copy(ROOT / "examples" / "batch.jsonl", work / "day.jsonl")
    (work / "services.csv").write_text(
        "session_id,payer,date_of_service,discipline,code,minutes\n"
        "C-1,medicare,2026-03-02,PT,97110,23\n"
        "C-1,medicare,2026-03-02,PT,97140,10\n")
    bin_dir = work / "bin"
    _shim(bin_dir / "payrules")
    _shim(work / ".venv" / "bin" / "payrules")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "COLUMNS": "100"}
    env.pop("PAYRULES_RULES", None)
    subprocess.run(["payrules", "bill", "examples/ot-session.yaml", "--audit-db", "audit.sqlite"],
                   cwd=work, env=env, capture_output=True, check=True)
    return work, env


def test_the_readme_commands_are_found():
    commands = readme_commands()
    # The guide's three steps and the set-up's first command are among them, so the extraction works.
    assert ".venv/bin/payrules bill examples/*.yaml examples/batch.jsonl --format table" in commands
    assert "payrules validate my-rules" in commands
    assert "payrules compare session.yaml --payers medicare,acme-health --rules my-rules" in commands
    assert set(readme_files()) == {"my-rules/acme-health.yaml", "my-rules/acme-health.tests.yaml", "session.yaml",
                                   "patient-year.yaml", "pair-session.yaml"}
    assert exit_statuses() == {"payrules explain pair-session.yaml --why-not ncci-ptp": 1}
    long_ones = {c for c in commands if c.startswith((".venv/bin/python", "payrules serve"))}
    assert long_ones == NOT_RUN


@pytest.mark.parametrize("command", [c for c in readme_commands() if c not in NOT_RUN])
def test_readme_command_works_as_printed(command, workspace):
    work, env = workspace
    proc = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True,
                          timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == exit_statuses().get(command, 0), f"{command}\n{proc.stderr}"
    expected = shown_outputs().get(command)
    if expected is not None:
        assert_shows(proc.stdout, expected)


def assert_shows(output: str, shown: str) -> None:
    """The README shows the output exactly; a line `...` stands for lines left out there."""
    parts = re.split(r"^\.\.\.\n", shown, flags=re.M)
    if len(parts) == 1:
        assert output == shown
        return
    position = 0
    for index, part in enumerate(parts):
        found = output.find(part, position)
        assert found >= 0, f"not in the output (in this order):\n{part}"
        assert index > 0 or found == 0, "the output does not start as the README shows"
        position = found + len(part)
    assert not parts[-1] or position == len(output), "the output does not end as the README shows"


def test_assert_shows_checks_order_gaps_and_ends():
    assert_shows("a\nb\nc\nd\n", "a\n...\nc\nd\n")
    for wrong in ("b\n...\nd\n", "a\n...\nc\n", "a\n...\nz\n", "c\nd\n"):
        with pytest.raises(AssertionError):
            assert_shows("a\nb\nc\nd\n", wrong)


def test_the_guides_export_works_from_any_directory(workspace):
    """Every `export PAYRULES_RULES=...` the README prints, run as printed in the folder that holds
    my-rules, lets payrules find the guide's payer from another directory too (issue 11 item 2: the same
    payers from any working directory)."""
    work, env = workspace
    exports = sorted(set(re.findall(r"`(export PAYRULES_RULES=[^`]*)`", README)))
    assert any("my-rules" in e for e in exports), exports
    (work / "elsewhere").mkdir(exist_ok=True)
    for export in exports:
        if "my-rules" not in export or "~" in export:
            continue
        script = f"{export} && cd elsewhere && payrules bill ../session.yaml --payer acme-health --format json"
        proc = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, f"{export}\n{proc.stderr}"
        assert '"acme-manual-therapy-limit"' in proc.stdout
