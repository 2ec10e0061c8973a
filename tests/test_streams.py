"""Standard streams that are closed or full, Ctrl-C in the middle of a batch, and text from a session
(its id) that would forge lines on stderr or formulas in a spreadsheet.

Expected behaviour (README, exit codes and Output): an input that cannot be read and an output that
cannot be written are one `error:` line and exit 2; SIGINT ends the run with exit 130, the output
well-formed up to the last whole record and a summary line that says the run was interrupted.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from engine import render

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60
DATE = "2026-03-02"
SUMMARY = re.compile(r"^payrules: (interrupted: )?(\d+) sessions? read: (\d+) billed, (\d+) with errors, "
                     r"(\d+) failed to parse$")
GOOD = {"session_id": "S-1", "payer": "medicare", "date_of_service": DATE, "discipline": "PT",
        "services": [{"code": "97110", "minutes": 33}]}
PY = [sys.executable, "-m", "engine"]


def shell(command: str, **kw) -> subprocess.CompletedProcess:
    """`python -m engine ...` under bash, so that a test can close or redirect a standard stream."""
    return subprocess.run(["bash", "-c", command, "payrules", *PY], cwd=ROOT, capture_output=True,
                          timeout=TIMEOUT, **kw)


def one_error_line(stderr: bytes) -> str:
    text = stderr.decode("utf-8", "replace")
    assert "Traceback" not in text, text[-3000:]
    lines = text.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), text[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("streams") / "small.jsonl"
    path.write_text("".join(json.dumps(dict(GOOD, session_id=f"S-{i}")) + "\n" for i in range(3)), "utf-8")
    return path


# --- closed and full standard streams -----------------------------------------------------------------

def test_closed_stdin_is_one_error_line_and_exit_2():
    proc = shell('exec "$@" bill - <&-')
    assert proc.returncode == 2
    assert "standard input" in one_error_line(proc.stderr)
    assert proc.stdout == b""


@pytest.mark.parametrize("command", ["bill {path} --format {fmt}", "payers", "explain {path}"])
@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_closed_stdout_is_one_error_line_and_exit_2(small, command, fmt):
    proc = shell(f'exec "$@" {command.format(path=small, fmt=fmt)} >&-')
    assert proc.returncode == 2
    assert "standard output" in one_error_line(proc.stderr)


@pytest.mark.parametrize("command", ["bill {path} --format json", "bill {path} --format jsonl",
                                     "bill {path} --format csv", "bill {path} --format table --jobs 2",
                                     "payers", "explain {path}", "compare {path} --all-payers", "validate",
                                     "test rules/medicare.tests.yaml"])
def test_full_stdout_is_one_error_line_and_exit_2(small, command):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    proc = shell(f'exec "$@" {command.format(path=small)} > /dev/full')
    assert proc.returncode == 2
    line = one_error_line(proc.stderr)
    assert "standard output" in line and "No space left" in line


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_closed_stderr_still_bills(small, fmt):
    # nothing can be said on stderr; the output and the exit code are what they would be
    proc = shell(f'exec "$@" bill {small} --format {fmt} 2>&-')
    expected = subprocess.run([*PY, "bill", str(small), "--format", fmt], cwd=ROOT, capture_output=True,
                              timeout=TIMEOUT)
    assert proc.returncode == expected.returncode == 0
    assert proc.stdout == expected.stdout and proc.stdout


def test_closed_stderr_with_errors_exits_1(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"session_id": "X", "services": [\n' + json.dumps(GOOD) + "\n", "utf-8")
    proc = shell(f'exec "$@" bill {path} --format jsonl 2>&-')
    assert proc.returncode == 1
    assert [json.loads(line)["session_id"] for line in proc.stdout.splitlines()] == ["session-1", "S-1"]


def test_full_stderr_does_not_crash(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"session_id": "X", "services": [\n' + json.dumps(GOOD) + "\n", "utf-8")
    proc = shell(f'exec "$@" bill {path} --format jsonl 2>/dev/full')
    assert proc.returncode == 1
    assert len(proc.stdout.splitlines()) == 2


# --- Ctrl-C ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def huge(tmp_path_factory) -> Path:
    """200,000 sessions, every 50th one failing to parse: far more than a test lets finish."""
    path = tmp_path_factory.mktemp("sigint") / "huge.jsonl"
    good = [json.dumps(dict(GOOD, session_id=f"S-{i:06d}")) for i in range(50)]
    lines = []
    for i in range(200_000):
        lines.append('{"session_id": "broken", "services": [' if i % 50 == 49
                     else good[i % 50].replace(f"S-{i % 50:06d}", f"S-{i:06d}"))
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


def interrupted(path: Path, fmt: str, jobs: int, group: bool = True) -> tuple:
    """Bill `path`, send SIGINT once some output has been written, return (exit code, stdout, stderr).
    To its process group (and so to its workers too), as Ctrl-C on a terminal does; or to it alone."""
    proc = subprocess.Popen([*PY, "bill", str(path), "--format", fmt, "--jobs", str(jobs)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0, start_new_session=True)
    head = b""
    while len(head) < 200_000:                # the run is under way: 200 kB written, with more to come
        head += proc.stdout.read(200_000 - len(head))   # unbuffered: communicate() gets every later byte
    time.sleep(0.2)
    if group:
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=TIMEOUT)
    return proc.returncode, head + rest, err.decode("utf-8", "replace")


def interrupted_summary(err: str) -> tuple:
    assert "Traceback" not in err, err[-3000:]
    lines = err.splitlines()
    match = SUMMARY.match(lines[-1])
    assert match and match.group(1), f"no 'interrupted' summary line: {err[-2000:]!r}"
    read, billed, errors, failed = map(int, match.groups()[1:])
    assert read == billed + errors + failed
    assert all(line.startswith(("error: ", "payrules: ")) for line in lines), err[-2000:]
    return read, billed, errors, failed


def check_prefix(ids: list, read: int, failed: int) -> None:
    """The records are the first `read` sessions of the input, in order (every 50th failed to parse)."""
    assert 0 < read < 200_000
    assert len(ids) == read
    assert ids == [(f"session-{i + 1}" if i % 50 == 49 else f"S-{i:06d}") for i in range(read)]
    assert failed == read // 50


@pytest.mark.parametrize("jobs,group", [(1, True), (2, True), (2, False)])
def test_sigint_json_output_is_closed_and_summarised(huge, jobs, group):
    code, out, err = interrupted(huge, "json", jobs, group)
    assert code == 130
    records = json.loads(out)                 # the list is closed: whole records only
    read, billed, errors, failed = interrupted_summary(err)
    check_prefix([r["session_id"] for r in records], read, failed)


@pytest.mark.parametrize("jobs", [1, 2])
def test_sigint_jsonl_and_csv_end_on_a_whole_line(huge, jobs):
    code, out, err = interrupted(huge, "jsonl", jobs)
    assert code == 130 and out.endswith(b"\n")
    read, _, _, failed = interrupted_summary(err)
    check_prefix([json.loads(line)["session_id"] for line in out.splitlines()], read, failed)

    code, out, err = interrupted(huge, "csv", jobs)
    assert code == 130 and out.endswith(b"\n")
    read, _, _, failed = interrupted_summary(err)
    rows = list(csv.reader(io.StringIO(out.decode("utf-8"))))
    assert rows[0][0] == "session_id" and all(len(row) == 10 for row in rows)
    # a good session is one billed row (97110 33 min -> 2 units); a broken one is one error row
    check_prefix([row[0] for row in rows[1:]], read, failed)


# Ctrl-C pressed again (or first) while the run is closing: the output is written out, the log is closed
# and the summary printed all the same. It raised KeyboardInterrupt in the middle of that clean-up: the
# json list was left without its ']', no summary, exit -2 (killed by SIGINT), and, inside the audit log's
# close, a segmentation fault (the database closed under its writer thread). Made deterministic: the
# signal is sent from the clean-up itself, at the start of the log's close and of the output's.
_CLEANUP_DRIVER = """
import os, signal, sys
from engine import audit, batch
from engine.cli import main
for cls in (audit.AuditLog, batch.Writer):
    def close(self, _close=cls.close):
        os.kill(os.getpid(), signal.SIGINT)
        return _close(self)
    cls.close = close
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("jobs", [1, 2])
def test_ctrl_c_during_the_clean_up_does_not_cut_it_short(small, tmp_path, jobs):
    db = tmp_path / "log.sqlite"
    proc = subprocess.run([sys.executable, "-c", _CLEANUP_DRIVER, "bill", str(small), "--format", "json",
                           "--jobs", str(jobs), "--audit-db", str(db)], cwd=ROOT, capture_output=True,
                          timeout=TIMEOUT)
    err = proc.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err and proc.returncode == 0, (proc.returncode, err[-2000:])
    assert [r["session_id"] for r in json.loads(proc.stdout)] == ["S-0", "S-1", "S-2"]
    assert err.splitlines() == ["payrules: 3 sessions read: 3 billed, 0 with errors, 0 failed to parse"]
    logged = subprocess.run([*PY, "audit", str(db), "--format", "json"], cwd=ROOT, capture_output=True,
                            timeout=TIMEOUT)
    assert [r["session_id"] for r in json.loads(logged.stdout)] == ["S-0", "S-1", "S-2"]


def test_workers_ignore_sigint():
    from engine import batch
    handlers = []
    batch._init_worker([], "python", batch.Job())
    try:
        handlers.append(signal.getsignal(signal.SIGINT))
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        batch._worker.clear()
    assert handlers == [signal.SIG_IGN]


def test_interruptible_holds_sigint_back_while_the_caller_handles_an_item():
    from engine import batch
    closed = []

    def stream(kill_at=None):
        try:
            for i in range(1, 4):
                if i == kill_at:
                    os.kill(os.getpid(), signal.SIGINT)     # while reading or billing: raised at once
                    seen.append("not reached")
                yield i
        finally:
            closed.append(True)

    seen = []
    with pytest.raises(KeyboardInterrupt):
        for item in batch.interruptible(stream()):
            os.kill(os.getpid(), signal.SIGINT)             # while the caller writes: held back
            seen.append(item)                              # ... so the record is handled whole
    assert seen == [1] and closed == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

    seen = []
    with pytest.raises(KeyboardInterrupt):
        for item in batch.interruptible(stream(kill_at=2)):
            seen.append(item)
    assert seen == [1] and closed == [True, True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_interruptible_outside_the_main_thread_passes_items_through():
    import threading
    from engine import batch
    got = []
    thread = threading.Thread(target=lambda: got.extend(batch.interruptible(x for x in range(5))))
    thread.start()
    thread.join()
    assert got == [0, 1, 2, 3, 4]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# a sitecustomize that raises KeyboardInterrupt on `import yaml`, which engine.cli's imports make: a Ctrl-C
# while the modules load, made deterministic
CTRL_C_ON_IMPORT_YAML = """\
import builtins
_real = builtins.__import__
def _import(name, *args, **kwargs):
    if name == 'yaml':
        builtins.__import__ = _real
        raise KeyboardInterrupt
    return _real(name, *args, **kwargs)
builtins.__import__ = _import
"""


def test_ctrl_c_while_the_program_starts_is_exit_130_without_a_traceback(tmp_path, small):
    # Ctrl-C while the modules are still being imported (the first ~0.1 s of every run) reached the
    # import as a KeyboardInterrupt traceback. Made deterministic: a sitecustomize raises it on `import
    # yaml`, which engine.cli's imports make.
    (tmp_path / "sitecustomize.py").write_text(CTRL_C_ON_IMPORT_YAML)
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    proc = subprocess.run([*PY, "bill", str(small)], cwd=ROOT, capture_output=True, timeout=TIMEOUT, env=env)
    assert proc.returncode == 130 and proc.stdout == b"" and proc.stderr == b"", proc.stderr.decode()[-2000:]


def test_ctrl_c_while_the_installed_command_starts_is_exit_130_without_a_traceback(tmp_path, small):
    # the installed `payrules` is a script pip writes from pyproject's entry point: `from MODULE import FUNC`,
    # then `sys.exit(FUNC())`. With engine.cli as the module, the script's own import (before any of our
    # code runs) took the KeyboardInterrupt as a traceback; the entry point must import little and catch it.
    import tomllib
    entry = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["payrules"]
    module, func = entry.split(":")
    (tmp_path / "payrules_script.py").write_text(f"import sys\nfrom {module} import {func}\nsys.exit({func}())\n")
    (tmp_path / "sitecustomize.py").write_text(CTRL_C_ON_IMPORT_YAML)
    # installed, the source folder engine/ is the package the entry point names (payer_rules)
    (tmp_path / module.split(".")[0]).symlink_to(ROOT / "engine", target_is_directory=True)
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    proc = subprocess.run([sys.executable, str(tmp_path / "payrules_script.py"), "bill", str(small)], cwd=tmp_path,
                          capture_output=True, timeout=TIMEOUT, env=env)
    assert proc.returncode == 130 and proc.stdout == b"" and proc.stderr == b"", proc.stderr.decode()[-2000:]


# --- text from a session: control characters and spreadsheet formulas -----------------------------------

NASTY = ["x\npayrules: 999 sessions read: 999 billed, 0 with errors, 0 failed to parse",
         "\x1b[2J\x1b[31mred", "a\rerror: forged", "line\u2028sep\u2029para", "bidi\u202eevil\u202c",
         "nel\x85c1\x9b", "del\x7f", "tab\there", "vt\x0bff\x0cfs\x1c"]


def test_clean_escapes_every_control_character():
    for text in NASTY:
        cleaned = render.clean(text)
        assert cleaned.isprintable() and len(cleaned.splitlines()) == 1, repr(cleaned)
    assert render.clean("x\ny\x1b\u2028") == "x\\ny\\x1b\\u2028"
    assert render.clean("OT-2026 naïve 日本") == "OT-2026 naïve 日本"


CONTROL = st.characters(codec="utf-8", categories=["Cc", "Zl", "Zp", "Cf"])


@settings(max_examples=300, deadline=None)
@given(st.text(st.one_of(CONTROL, st.characters(codec="utf-8"))))
def test_clean_property(text):
    cleaned = render.clean(text)
    assert len(cleaned.splitlines()) <= 1
    assert not any(c in cleaned for c in "\x1b\r\n\x85\u2028\u2029\u202e\u2066")
    assert cleaned.isprintable()
    if text.isprintable():
        assert cleaned == text


def bill_ids(tmp_path: Path, ids: list, *args) -> subprocess.CompletedProcess:
    """Each id twice: a session with an unknown code (an error warning) and one that fails validation."""
    path = tmp_path / "ids.jsonl"
    lines = []
    for sid in ids:
        lines.append(json.dumps(dict(GOOD, session_id=sid, services=[{"code": "97999", "minutes": 20}])))
        lines.append(json.dumps(dict(GOOD, session_id=sid, services=[{"code": "97110", "minutes": "ten"}])))
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return subprocess.run([*PY, "bill", str(path), *args], cwd=ROOT, capture_output=True, timeout=TIMEOUT)


def assert_stderr_lines_are_ours(proc, sessions: int) -> None:
    err = proc.stderr.decode("utf-8", "replace")
    lines = err.splitlines()          # splits on \r, \x0b, \x1c, \x85, \u2028 ... as a terminal might
    assert all(line.startswith(("error: ", "payrules: ")) for line in lines), err
    assert all(line.isprintable() for line in lines), err
    summaries = [line for line in lines if SUMMARY.match(line)]
    assert len(summaries) == 1 and lines[-1] == summaries[0], err
    assert SUMMARY.match(summaries[0]).group(2) == str(sessions)


def test_forged_lines_on_stderr_are_escaped(tmp_path):
    proc = bill_ids(tmp_path, NASTY, "--format", "jsonl")
    assert proc.returncode == 1
    assert_stderr_lines_are_ours(proc, 2 * len(NASTY))
    # the output itself keeps the id exactly (JSON escapes it)
    assert [json.loads(line)["session_id"] for line in proc.stdout.splitlines()][::2] == NASTY


@settings(max_examples=8, deadline=None)
@given(st.lists(st.text(st.one_of(CONTROL, st.sampled_from("ab:- ")), min_size=1, max_size=20),
                min_size=1, max_size=4))
def test_stderr_lines_property(tmp_path_factory, ids):
    proc = bill_ids(tmp_path_factory.mktemp("ids"), ids, "--format", "jsonl")
    assert_stderr_lines_are_ours(proc, 2 * len(ids))


def test_table_and_explain_text_escape_control_characters(tmp_path):
    proc = bill_ids(tmp_path, NASTY[:3], "--format", "table")
    out = proc.stdout.decode("utf-8")
    assert "\x1b" not in out and "\r" not in out
    assert not any(line.startswith("payrules:") for line in out.splitlines())
    assert "Session x\\npayrules: 999" in out
    path = tmp_path / "one.json"
    path.write_text(json.dumps(dict(GOOD, session_id=NASTY[0])), "utf-8")
    proc = subprocess.run([*PY, "explain", str(path)], cwd=ROOT, capture_output=True, timeout=TIMEOUT)
    assert proc.returncode == 0
    out = proc.stdout.decode("utf-8")
    assert "Session x\\npayrules: 999" in out
    assert not any(line.startswith("payrules:") for line in out.splitlines())


def test_audit_and_payers_tables_escape_control_characters():
    # the audit log holds session ids (and a refused session's payer) as they came; a payer's name is
    # free text in its rule file
    row = {"billed_at": "2026-03-02T10:00:00Z", "run_id": 1, "session_id": NASTY[0], "payer": "acme\x1b[2J",
           "date_of_service": None, "status": "error", "rules_hash": None, "firings": [],
           "result": {"session_id": NASTY[0], "error": "unknown payer"}}
    payer = {"id": "p", "method": "cms_8_minute", "file": "rules/p.yaml", "extends": None,
             "effective_from": None, "effective_to": None, "name": "Name\r\nerror: forged"}
    for text in (render.audit_table([row]), render.payers_table([payer])):
        assert all(line.isprintable() for line in text.splitlines()), text
        assert not any(line.startswith(("payrules:", "error:")) for line in text.splitlines()), text


FORMULAS = ['=HYPERLINK("http://x","y")', "+1+2", "-3+4", "@SUM(A1)", "\tTAB", "\rCR"]


def test_csv_cells_that_start_a_formula_are_quoted_and_prefixed(tmp_path):
    proc = bill_ids(tmp_path, FORMULAS, "--format", "csv")
    text = proc.stdout.decode("utf-8")
    # OWASP CSV injection: the cell is "'" + the text, in double quotes
    assert '"\'=HYPERLINK(""http://x"",""y"")",' in text
    assert "\n\"'+1+2\"," in text and "\n\"'@SUM(A1)\"," in text
    rows = list(csv.reader(io.StringIO(text)))[1:]
    assert list(dict.fromkeys(row[0] for row in rows)) == ["'" + sid for sid in FORMULAS]
    for row in rows:
        assert not any(cell[:1] in ("=", "+", "-", "@", "\t", "\r") for cell in row), row


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 10**6), st.text(st.characters(codec="utf-8"))), min_size=2, max_size=9))
def test_csv_row_matches_the_csv_module(cells):
    # a row reads back as its cells, a text cell that would start a formula with "'" before it; and it
    # is written byte for byte as the csv module writes it (which leaves a lone \r unquoted: not ours)
    ours = render.csv_row(cells)
    safe = [str(c) if isinstance(c, int) or c[:1] not in render.FORMULA_START else "'" + c for c in cells]
    assert list(csv.reader(io.StringIO(ours, newline=""))) == [safe]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(safe)
    if safe == [str(c) for c in cells] and not any("\r" in c for c in safe):
        assert ours == out.getvalue()


TEXT = st.text(st.one_of(st.sampled_from(',"\r\n=+-@\t\' '), st.characters(codec="utf-8")), max_size=12)


@settings(max_examples=300, deadline=None)
@given(TEXT, TEXT, TEXT, st.booleans())
def test_csv_lines_read_back_as_their_cells(sid, reason, message, error):
    # a record's rows, whatever its free text holds, read back as their cells; a free-text cell that
    # starts a formula reads back with "'" before it. (The plain fast path and the per-cell path agree.)
    if error:
        record = {"session_id": sid, "error": message}
        cells = [[sid, "", "error", "", "", "", "", "", message, ""]]
    else:
        record = {"session_id": sid, "payer": "medicare",
                  "lines": [{"code": "97110", "minutes": 33, "units": 2, "modifiers": ["GP"],
                             "rules": ["timed-pool", "modifier-gp"]}],
                  "unbilled": [{"code": "97035", "minutes": 7, "reason": reason, "rules": ["timed-pool"]}],
                  "warnings": [{"severity": "info", "rule": "timed-pool", "message": message,
                                "codes": ["97110", "97035"]}]}
        cells = [[sid, "medicare", "billed", "97110", "33", "2", "GP", "timed-pool modifier-gp", "", ""],
                 [sid, "medicare", "unbilled", "97035", "7", "0", "", "timed-pool", reason, ""],
                 [sid, "medicare", "info", "97110 97035", "", "", "", "timed-pool", message, ""]]
    expected = [["'" + c if c[:1] in render.FORMULA_START else c for c in row] for row in cells]
    assert list(csv.reader(io.StringIO(render.csv_lines(record), newline=""))) == expected
