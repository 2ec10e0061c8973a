"""Hostile input: session and rule files built to exhaust memory, recurse without end, construct Python
objects, read files outside the rules trees, or smuggle data into messages.

Each case must end with a clear one-line `error: ...` on stderr (exit 2) or an error record in place of
the session (exit 1), within a bounded time (well inside the subprocess timeout), and never with a
traceback. Every test runs `python -m engine` as a subprocess from the repository root.
"""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from engine.loader import MAX_RULE_FILE_BYTES

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60
FAST = 20                       # seconds: "well within" the timeout
SUMMARY = re.compile(r"^payrules: (\d+) sessions read: (\d+) billed, (\d+) with errors, (\d+) failed to parse$")
VALIDATE_SUMMARY = re.compile(r"^\d+ valid, \d+ invalid$")

GOOD_SESSION = {"session_id": "OK-1", "payer": "medicare", "date_of_service": "2026-03-02", "discipline": "PT",
                "services": [{"code": "97110", "minutes": 20}]}


@pytest.fixture(autouse=True)
def private_rule_cache(tmp_path, monkeypatch):
    """Each test gets its own, empty cache of validated rule files (engine/cache.py), so that hostile
    files are always met cold and nothing is written to the user's ~/.cache."""
    monkeypatch.setenv("PAYRULES_CACHE", str(tmp_path / "rule-cache"))
    return tmp_path / "rule-cache"


def run_cli(*args, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """`python -m engine ARGS...` from the repository root: no traceback, finished well within time."""
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=ROOT, capture_output=True,
                          input=stdin, timeout=TIMEOUT)
    elapsed = time.monotonic() - start
    err = proc.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err, err[-3000:]
    assert elapsed < FAST, f"took {elapsed:.1f}s"
    proc.err = err
    return proc


def assert_clean_error(proc, *words) -> str:
    """Exit 2, nothing on stdout from `bill`, and stderr made only of one-line `error: ...` messages (plus
    the summary lines); the first error names every one of `words`. Returns the first error line."""
    assert proc.returncode == 2, proc.err[-2000:]
    lines = [line for line in proc.err.split("\n") if line]
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors, proc.err[-2000:]
    for line in lines:
        assert line.startswith("error: ") or SUMMARY.match(line) or VALIDATE_SUMMARY.match(line), line[:300]
    for word in words:
        assert word.lower() in errors[0].lower(), (word, errors[0][:500])
    assert len(errors[0]) < 1000, errors[0][:300]
    return errors[0]


def jsonl_records(proc) -> list:
    return [json.loads(line) for line in proc.stdout.decode("utf-8").splitlines()]


def summary(proc) -> tuple:
    match = SUMMARY.match(proc.err.rstrip("\n").rsplit("\n", 1)[-1])
    assert match, proc.err[-2000:]
    return tuple(map(int, match.groups()))


def payer_dir(tmp_path: Path, text: str | bytes, name: str = "hostile.yaml") -> Path:
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    path = rules / name
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return rules


def check_rule_file_refused(tmp_path, content, *words):
    """A hostile payer file: `bill --rules DIR` stops before billing (exit 2, empty stdout), and
    `validate FILE` and `validate DIR` report it (exit 2)."""
    rules = payer_dir(tmp_path, content)
    session = tmp_path / "ok.json"
    session.write_text(json.dumps(GOOD_SESSION), encoding="utf-8")
    proc = run_cli("bill", session, "--rules", rules, "--format", "jsonl")
    assert_clean_error(proc, "hostile.yaml", *words)
    assert proc.stdout == b""
    for target in (rules / "hostile.yaml", rules):
        proc = run_cli("validate", target)
        assert_clean_error(proc, "hostile.yaml", *words)
        assert "ok " not in proc.stdout.decode("utf-8", "replace")


# --- "billion laughs" -----------------------------------------------------------------------------------

def billion_laughs(top_key: str) -> str:
    """Nine levels of nine aliases: 9**9 = 387,420,489 strings if expanded."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 9):
        refs = ", ".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    lines.append(f"{top_key}: *a8")
    return "\n".join(lines) + "\n"


def test_billion_laughs_session_file(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text("payer: medicare\n" + billion_laughs("services"), encoding="utf-8")
    proc = run_cli("bill", path)
    line = assert_clean_error(proc, "bomb.yaml")
    assert "anchor" in line or "alias" in line
    assert proc.stdout == b""


def test_billion_laughs_session_on_stdin():
    proc = run_cli("bill", "-", stdin=("payer: medicare\n" + billion_laughs("services")).encode())
    line = assert_clean_error(proc, "<stdin>")
    assert "anchor" in line or "alias" in line


def test_alias_without_anchor_in_session_file(tmp_path):
    # an alias to an anchor that was never defined still must not get further than the parser
    path = tmp_path / "alias.yaml"
    path.write_text("payer: medicare\nservices: *nothing\n", encoding="utf-8")
    proc = run_cli("bill", path)
    assert_clean_error(proc, "alias.yaml")


def test_billion_laughs_rule_file(tmp_path):
    content = "payer: bomb\nname: Bomb\nmethod: {name: cms_8_minute}\n" + billion_laughs("rules")
    check_rule_file_refused(tmp_path, content)
    proc = run_cli("validate", tmp_path / "rules" / "hostile.yaml")
    line = assert_clean_error(proc)
    assert "anchor" in line or "alias" in line


# --- deep nesting ---------------------------------------------------------------------------------------

DEPTH = 10_000


def test_deeply_nested_yaml_session_file(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("payer: medicare\nservices: " + "[" * DEPTH + "]" * DEPTH + "\n", encoding="utf-8")
    proc = run_cli("bill", path)
    assert_clean_error(proc, "deep.yaml", "nest")           # "nested too deeply" or "nesting depth"
    assert proc.stdout == b""


def test_moderately_nested_yaml_session_file(tmp_path):
    # 60 levels: under Python's recursion limit, over the loader's bound (40)
    path = tmp_path / "deep60.yaml"
    path.write_text("payer: medicare\ncontext: " + "[" * 60 + "]" * 60 + "\nservices: [{code: '97110', minutes: 20}]\n",
                    encoding="utf-8")
    proc = run_cli("bill", path)
    assert_clean_error(proc, "deep60.yaml", "nest")


def test_deeply_nested_jsonl_line(tmp_path):
    path = tmp_path / "deep.jsonl"
    deep = '{"session_id": "D", "payer": "medicare", "services": ' + "[" * DEPTH + "]" * DEPTH + "}"
    path.write_text(json.dumps(GOOD_SESSION) + "\n" + deep + "\n" + json.dumps(GOOD_SESSION) + "\n",
                    encoding="utf-8")
    proc = run_cli("bill", path, "--format", "jsonl")
    assert proc.returncode == 1
    records = jsonl_records(proc)
    # one record per line: the deep line is an error record in its place, the others are billed
    assert [r["session_id"] for r in records] == ["OK-1", "session-2", "OK-1"]
    assert set(records[1]) == {"session_id", "error"} and "nest" in records[1]["error"]
    assert "error" not in records[0] and "error" not in records[2]
    # 3 read = 2 billed + 0 with errors + 1 failed to parse
    assert summary(proc) == (3, 2, 0, 1)


def test_deeply_nested_single_json_file(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"payer": "medicare", "services": ' + "[" * DEPTH + "]" * DEPTH + "}", encoding="utf-8")
    proc = run_cli("bill", path, "--format", "jsonl")
    assert proc.returncode in (1, 2)
    if proc.returncode == 2:
        assert_clean_error(proc, "deep.json")
    else:
        (record,) = jsonl_records(proc)
        assert set(record) == {"session_id", "error"} and "nest" in record["error"]


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_nested_context_in_jsonl_with_jobs(tmp_path, jobs):
    """A context nested 600 deep: readable by json (under the recursion limit), but it must not break the
    hand-over to worker processes (pickling recurses too). Whatever the engine decides — bill it, or
    refuse it as nested too deeply — --jobs 2 must give the same records as --jobs 1, with no traceback."""
    deep = {"payer": "medicare", "discipline": "PT", "services": [{"code": "97110", "minutes": 20}]}
    context: dict = {"leaf": 1}
    for _ in range(600):
        context = {"a": context}
    deep["context"] = context
    path = tmp_path / "ctx.jsonl"
    path.write_text(json.dumps(GOOD_SESSION) + "\n" + json.dumps(deep) + "\n", encoding="utf-8")
    proc = run_cli("bill", path, "--format", "jsonl", "--jobs", jobs)
    assert proc.returncode in (0, 1), proc.err[-2000:]
    records = jsonl_records(proc)
    assert [r["session_id"] for r in records] == ["OK-1", "session-2"]
    assert summary(proc)[0] == 2
    reference = run_cli("bill", path, "--format", "jsonl", "--jobs", "1")
    assert proc.stdout == reference.stdout


def test_deeply_nested_rule_file(tmp_path):
    content = "payer: deep\nname: Deep\nmethod: {name: cms_8_minute}\nrules: " + "[" * DEPTH + "]" * DEPTH + "\n"
    check_rule_file_refused(tmp_path, content, "nest")


# --- size -----------------------------------------------------------------------------------------------

def test_rule_file_over_the_size_limit(tmp_path):
    head = "payer: big\nname: Big\nmethod: {name: cms_8_minute}\nrules: []\n"
    padding = "# " + "x" * 1000 + "\n"
    body = head + padding * (MAX_RULE_FILE_BYTES // len(padding) + 1)
    assert len(body.encode()) > MAX_RULE_FILE_BYTES
    check_rule_file_refused(tmp_path, body, "too large", str(MAX_RULE_FILE_BYTES))


def test_rule_file_at_the_size_limit_is_read(tmp_path):
    # the limit is on size alone: the same valid file padded to exactly MAX_RULE_FILE_BYTES is accepted
    head = ("payer: padded\nname: Padded\nmethod: {name: cms_8_minute}\ncodes:\n  timed_15: [97110]\nrules:\n"
            "  - id: timed\n    description: timed codes\n    source: test\n"
            "    when: {line: {code_in: timed_15}}\n    then: [{timed_units: true}]\n")
    filler = MAX_RULE_FILE_BYTES - len(head)          # '#', filler - 2 x's, newline
    body = head + "#" + "x" * (filler - 2) + "\n"
    assert len(body.encode()) == MAX_RULE_FILE_BYTES
    rules = payer_dir(tmp_path, body)
    proc = run_cli("validate", rules / "hostile.yaml")
    assert proc.returncode == 0, proc.err


def test_yaml_session_file_over_8_mb_is_refused_before_it_is_parsed(tmp_path):
    # PyYAML takes about 80 times a document's size in memory (measured: 8 MB of YAML sessions, 634 MB
    # peak and 12 s; its own CSafeLoader alone 500 MB), so the 64 MB that was allowed meant some 5 GB: an
    # out-of-memory kill, not an error. YAML is for hand-written files: over 8 MB it is refused, unparsed.
    from engine.sessions import MAX_INPUT_BYTES
    assert MAX_INPUT_BYTES == 8 * 1024 * 1024
    path = tmp_path / "big.yaml"
    padding = "# " + "x" * 1000 + "\n"
    path.write_text(yaml.safe_dump([GOOD_SESSION]) + padding * (MAX_INPUT_BYTES // len(padding) + 1), "utf-8")
    proc = run_cli("bill", path, "--format", "jsonl")
    assert_clean_error(proc, "larger than", "JSONL")
    assert proc.stdout == b""


def test_jsonl_line_over_the_record_limit(tmp_path):
    from engine.sessions import MAX_RECORD_BYTES
    path = tmp_path / "long.jsonl"
    filler = "x" * (MAX_RECORD_BYTES + 10)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(json.dumps({"session_id": "LONG", "payer": "medicare", "note": filler}) + "\n")
        fh.write(json.dumps(GOOD_SESSION) + "\n")
    proc = run_cli("bill", path, "--format", "jsonl")
    assert proc.returncode == 1
    records = jsonl_records(proc)
    assert [r["session_id"] for r in records] == ["session-1", "OK-1"]
    assert "longer than" in records[0]["error"]
    assert "error" not in records[1]
    assert summary(proc) == (2, 1, 0, 1)
    assert len(proc.stdout) + len(proc.stderr) < 100_000


def test_huge_values_are_not_echoed_into_messages(tmp_path):
    """Session error messages keep the offending values out (engine/schema.py: `echo_values=False`, "no
    patient data"): a 10 MB session_id, a 1 MB payer and an over-full context must give short messages
    that do not contain them."""
    secret = "S3CRET"
    sessions = [
        {"session_id": secret * (10 * 1024 * 1024 // len(secret)), "payer": "medicare",
         "services": [{"code": "97110", "minutes": 10}]},
        {"session_id": "P", "payer": secret * (1024 * 1024 // len(secret)),
         "services": [{"code": "97110", "minutes": 10}]},
        {"session_id": "C", "payer": "medicare", "context": {f"k{i}": f"{secret}-{i}" for i in range(101)},
         "services": [{"code": "97110", "minutes": 10}]},
        {"session_id": "K", "payer": "medicare", "services": [{"code": secret * 1000, "minutes": 10}]},
    ]
    path = tmp_path / "echo.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in sessions), encoding="utf-8")
    proc = run_cli("bill", path, "--format", "jsonl")
    assert proc.returncode == 1
    records = jsonl_records(proc)
    assert [r["session_id"] for r in records] == ["session-1", "P", "C", "K"]
    for record in records:
        assert set(record) == {"session_id", "error"}
        assert secret not in record["error"], record["error"][:300]
        assert len(record["error"]) < 500, record["error"][:300]
    assert secret not in proc.err
    # what each message is about is still said
    assert "session_id" in records[0]["error"] and "payer" in records[1]["error"]
    assert "context" in records[2]["error"] and "code" in records[3]["error"]


# --- encodings ------------------------------------------------------------------------------------------

def test_non_utf8_yaml_session_file(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"payer: medicare\nservices:\n  - code: '97110'\n    minutes: 20\n# caf\xe9 \xff\xfe\n")
    proc = run_cli("bill", path)
    assert_clean_error(proc, "latin1.yaml:5", "UTF-8")
    assert proc.stdout == b""


def test_non_utf8_rule_file(tmp_path):
    content = b"payer: latin\nname: \"Caf\xe9\"\nmethod: {name: cms_8_minute}\nrules: []\n"
    check_rule_file_refused(tmp_path, content, "UTF-8")
    proc = run_cli("validate", tmp_path / "rules" / "hostile.yaml")
    assert_clean_error(proc, "hostile.yaml:2")


# --- YAML tags that construct Python objects --------------------------------------------------------------

def python_tags(marker: Path) -> list:
    return [f'!!python/object/apply:os.system ["touch {marker}"]',
            "!!python/name:os.system",
            f'!!python/object/new:subprocess.Popen [["touch", "{marker}"]]',
            f"!include {marker}"]


@pytest.mark.parametrize("which", range(4))
def test_python_tags_in_session_file(tmp_path, which):
    marker = tmp_path / "PWNED"
    tag = python_tags(marker)[which]
    path = tmp_path / "tagged.yaml"
    path.write_text(f"payer: medicare\nservices:\n  - code: {tag}\n    minutes: 20\n", encoding="utf-8")
    proc = run_cli("bill", path)
    assert_clean_error(proc, "tagged.yaml:3", "not allowed")
    assert not marker.exists() and not (ROOT / "PWNED").exists()
    path.write_text(f"payer: medicare\nservices: {tag}\n", encoding="utf-8")
    proc = run_cli("bill", path)
    assert_clean_error(proc, "tagged.yaml:2", "not allowed")
    assert not marker.exists() and not (ROOT / "PWNED").exists()


@pytest.mark.parametrize("which", range(4))
def test_python_tags_in_rule_file(tmp_path, which):
    marker = tmp_path / "PWNED"
    tag = python_tags(marker)[which]
    content = f"payer: tagged\nname: {tag}\nmethod: {{name: cms_8_minute}}\nrules: []\n"
    check_rule_file_refused(tmp_path, content, "not allowed")
    assert not marker.exists() and not (ROOT / "PWNED").exists()


# --- payer ids that look like paths -----------------------------------------------------------------------

@pytest.mark.parametrize("payer", ["../../etc/passwd", "/etc/passwd", "../rules/medicare", "rules/medicare.yaml"])
def test_session_payer_that_looks_like_a_path(tmp_path, payer):
    path = tmp_path / "trav.jsonl"
    path.write_text(json.dumps({**GOOD_SESSION, "session_id": "T", "payer": payer}) + "\n"
                    + json.dumps(GOOD_SESSION) + "\n", encoding="utf-8")
    proc = run_cli("bill", path, "--format", "jsonl")
    assert proc.returncode == 1
    records = jsonl_records(proc)
    assert [r["session_id"] for r in records] == ["T", "OK-1"]
    assert set(records[0]) == {"session_id", "error"}
    assert "unknown payer" in records[0]["error"]
    out = proc.stdout.decode("utf-8") + proc.err
    assert "root:" not in out and "/bin/" not in out        # nothing of /etc/passwd
    assert "timed-pool" not in json.dumps(records[0])           # not billed as medicare either
    assert summary(proc) == (2, 1, 1, 0)


def test_payer_option_that_looks_like_a_path(tmp_path):
    session = tmp_path / "ok.json"
    session.write_text(json.dumps(GOOD_SESSION), encoding="utf-8")
    proc = run_cli("bill", session, "--payer", "../../etc/passwd")
    line = assert_clean_error(proc, "unknown payer")
    assert proc.stdout == b""
    assert "root:" not in line


def test_rule_file_payer_id_that_looks_like_a_path(tmp_path):
    content = ("payer: ../../x\nname: Traversal\nmethod: {name: cms_8_minute}\ncodes:\n  timed_15: [97110]\n"
               "rules:\n  - id: timed\n    description: timed codes\n    source: test\n"
               "    when: {line: {code_in: timed_15}}\n    then: [{timed_units: true}]\n")
    check_rule_file_refused(tmp_path, content, "hostile.yaml:1", "payer", "expected form")


# --- values plain YAML/JSON can hold but the engine must refuse cleanly ------------------------------------

def test_yaml_integer_with_too_many_digits_in_session_file(tmp_path):
    """Python refuses int("1" + 5000 zeros) (the 4300-digit limit): the loader must turn that into a clean
    error, not a ValueError traceback."""
    path = tmp_path / "bigint.yaml"
    path.write_text("payer: medicare\nservices:\n  - code: '97110'\n    minutes: 1" + "0" * 5000 + "\n",
                    encoding="utf-8")
    proc = run_cli("bill", path, "--format", "jsonl")
    if proc.returncode == 2:
        assert_clean_error(proc, "bigint.yaml")
    else:
        assert proc.returncode == 1
        (record,) = jsonl_records(proc)
        assert set(record) == {"session_id", "error"}


def test_yaml_integer_with_too_many_digits_in_rule_file(tmp_path):
    content = "payer: bigint\nname: Big\nmethod: {name: cms_8_minute, unit_minutes: 1" + "0" * 5000 + "}\nrules: []\n"
    check_rule_file_refused(tmp_path, content)


def test_json_integer_with_too_many_digits(tmp_path):
    path = tmp_path / "bigint.jsonl"
    path.write_text('{"payer": "medicare", "services": [{"code": "97110", "minutes": 1' + "0" * 5000 + "}]}\n"
                    + json.dumps(GOOD_SESSION) + "\n", encoding="utf-8")
    proc = run_cli("bill", path, "--format", "jsonl")
    assert proc.returncode == 1
    records = jsonl_records(proc)
    assert [r["session_id"] for r in records] == ["session-1", "OK-1"]
    assert set(records[0]) == {"session_id", "error"}


@pytest.mark.parametrize("field,value", [("discipline", ["PT"]), ("discipline", {"PT": 1}),
                                         ("provider", ["PT"]), ("provider", {"a": 1})])
def test_unhashable_enum_values_are_error_records(tmp_path, field, value):
    """discipline/provider given as a list or mapping: the schema says 'not one of PT, OT, SLP'; the fast
    path in front of it must not crash on a value it cannot look up in a set."""
    session = {"session_id": "U", "payer": "medicare", "services": [{"code": "97110", "minutes": 20}]}
    if field == "discipline":
        session["discipline"] = value
    else:
        session["services"][0]["provider"] = value
    path = tmp_path / "unhashable.jsonl"
    path.write_text(json.dumps(session) + "\n" + json.dumps(GOOD_SESSION) + "\n", encoding="utf-8")
    proc = run_cli("bill", path, "--format", "jsonl")
    assert proc.returncode == 1
    records = jsonl_records(proc)
    assert [r["session_id"] for r in records] == ["U", "OK-1"]
    assert set(records[0]) == {"session_id", "error"} and field in records[0]["error"]
    assert summary(proc) == (2, 1, 1, 0)


@pytest.mark.parametrize("field", ["session_id", "payer"])
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_lone_surrogate_escape_is_an_error_record(tmp_path, field, jobs):
    """JSON's \\ud800 escape is valid JSON but no Unicode text: echoed into the output it cannot be
    written as UTF-8 (it once stopped the whole run with a traceback). It is that session's error."""
    bad = dict(GOOD_SESSION, session_id="B-1")
    bad[field] = "x\ud800y"
    path = tmp_path / "surrogate.jsonl"
    path.write_text(json.dumps(bad) + "\n" + json.dumps(GOOD_SESSION) + "\n", encoding="ascii")
    assert "\\ud800" in path.read_text()
    proc = run_cli("bill", path, "--format", "jsonl", "--jobs", jobs)
    assert proc.returncode == 1
    records = jsonl_records(proc)
    assert records[0]["session_id"] == ("session-1" if field == "session_id" else "B-1")
    assert set(records[0]) == {"session_id", "error"} and field in records[0]["error"]
    assert records[1]["session_id"] == GOOD_SESSION["session_id"] and records[1]["lines"]
    assert summary(proc) == (2, 1, 1, 0)


# --- the cache of validated rule files ---------------------------------------------------------------------

CACHED_PAYER = """\
payer: cached
name: Cached payer
method: {name: cms_8_minute}
codes:
  timed_15: [97110]
rules:
  - id: timed
    description: timed codes
    source: test
    when: {line: {code_in: timed_15}}
    then: [{timed_units: true}]
"""


@pytest.mark.parametrize("entry", [b"garbage{", b"", b"[1, 2]", b'{"data": [1], "lines": []}',
                                   b'{"data": {"payer": "cached"}, "lines": 7}'])
def test_corrupt_rule_cache_entry_means_parsing_again(tmp_path, private_rule_cache, entry):
    """engine/cache.py: "Any problem with the cache (unwritable, corrupt) only means the file is parsed and
    validated again." An entry is named by the sha256 of the file's bytes; overwrite it with junk."""
    rules = payer_dir(tmp_path, CACHED_PAYER)
    session = tmp_path / "s.json"
    session.write_text(json.dumps({**GOOD_SESSION, "payer": "cached"}), encoding="utf-8")
    first = run_cli("bill", session, "--rules", rules, "--format", "jsonl")
    assert first.returncode == 0, first.err
    # 97110 20 min alone -> 1 unit (8-22 min)
    assert jsonl_records(first)[0]["lines"][0]["units"] == 1
    digest = hashlib.sha256(CACHED_PAYER.encode()).hexdigest()
    entries = [p for p in private_rule_cache.iterdir() if digest in p.name]
    assert len(entries) == 1, sorted(p.name for p in private_rule_cache.iterdir())
    entries[0].write_bytes(entry)
    again = run_cli("bill", session, "--rules", rules, "--format", "jsonl")
    assert again.returncode == 0, again.err
    assert again.stdout == first.stdout
    proc = run_cli("validate", rules / "hostile.yaml")
    assert proc.returncode == 0, proc.err


def test_unwritable_rule_cache(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    monkeypatch.setenv("PAYRULES_CACHE", str(blocker / "cache"))
    rules = payer_dir(tmp_path, CACHED_PAYER)
    proc = run_cli("validate", rules / "hostile.yaml")
    assert proc.returncode == 0, proc.err
