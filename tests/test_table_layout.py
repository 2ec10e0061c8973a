"""Tables people read (issue 11 item 8): `bill --format table` gives unbilled lines their own block and
wraps long text to the terminal width (COLUMNS; 100 for a pipe without it); counts agree with their
nouns ("1 session", "2 sessions"); scenario failures and explain arithmetic read as sentences."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml
from hypothesis import given, settings, strategies as st

from engine.render import DEFAULT_WIDTH, plural, to_table

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args, columns=None, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    if columns is not None:
        env["COLUMNS"] = str(columns)
    return subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=env, **kw)


def contains_run(tokens: list, words: list) -> bool:
    """`words` appear in `tokens` one after the other, whole."""
    return f" {' '.join(words)} " in f" {' '.join(tokens)} "


# ------------------------------------------------------------------------------------------- plural


def test_plural():
    assert plural(0, "session") == "0 sessions"
    assert plural(1, "session") == "1 session"
    assert plural(2, "unit") == "2 units"
    assert plural(1, "entry", "entries") == "1 entry"
    assert plural(3, "entry", "entries") == "3 entries"


# ------------------------------------------------------------------------------- bill --format table

# Medicare, 2025: 97112 24 + 97110 5 + 97035 3 = 32 timed min → chart 23-37 = 2 units (domain.md §3);
# full units 97112 1 (9 left over), the 1 unit left goes to 97112 (9 > 5 > 3): 97110 and 97035 get none
# and are listed under "Not billed" with the pool's reason. 97130 without 97129 is an error (§7);
# 97150 with group_size 1 is an error (group therapy needs 2 or more).
LONG = {"session_id": "W-1", "payer": "medicare", "date_of_service": "2025-06-01", "discipline": "PT",
        "services": [{"code": "97112", "minutes": 24}, {"code": "97110", "minutes": 5},
                     {"code": "97035", "minutes": 3}, {"code": "97130", "minutes": 20},
                     {"code": "97150", "minutes": 30, "group_size": 1}]}


def not_billed_rows(out: str) -> dict:
    """{code: reason} read back from the Not billed table: its Reason column, continuation rows joined."""
    lines = out.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("  Not billed"))
    dashes = lines[start + 1]
    reason_at = [m.start() for m in re.finditer(r"-+", dashes)][2]
    rows, code = {}, None
    for line in lines[start + 2:]:
        head = line[:reason_at]
        if re.fullmatch(r"  [0-9A-Z]{5} +\d+ +", head):
            code = head.split()[0]
            rows[code] = line[reason_at:]
        elif head.strip() == "" and line.strip():
            rows[code] += " " + line[reason_at:]
        else:
            break
    return rows


def test_unbilled_lines_have_their_own_block_and_lines_fit_80_columns(tmp_path):
    path = tmp_path / "w.json"
    path.write_text(json.dumps(LONG), encoding="utf-8")
    result = json.loads(run_cli("bill", path, "--format", "json").stdout)
    proc = run_cli("bill", path, "--format", "table", columns=80)
    assert proc.returncode == 1, proc.stderr        # the two error warnings
    lines = proc.stdout.splitlines()
    assert all(len(l) <= 80 for l in lines), [l for l in lines if len(l) > 80]
    # worked above: 97112 billed; 97110, 97035, 97130, 97150 not billed
    assert [u["code"] for u in result["unbilled"]] == ["97110", "97035", "97130", "97150"]
    rows = not_billed_rows(proc.stdout)
    assert list(rows) == ["97110", "97035", "97130", "97150"]
    for u in result["unbilled"]:
        assert rows[u["code"]].split() == u["reason"].split(), u["code"]
    # the billed table holds billed lines only: no reason text in its Rules column
    billed = lines[1:lines.index(next(l for l in lines if l.startswith("  Not billed")))]
    assert not any("not billed" in l for l in billed), billed
    # every warning's message, whole, in order
    tokens = proc.stdout.split()
    for w in result["warnings"]:
        assert contains_run(tokens, w["message"].split()), w["message"]


def test_piped_table_is_100_columns_without_COLUMNS_and_the_same_with_jobs(tmp_path):
    path = tmp_path / "w.jsonl"
    path.write_text("".join(json.dumps(dict(LONG, session_id=f"W-{i}")) + "\n" for i in range(6)), "utf-8")
    one = run_cli("bill", path, "--format", "table")
    assert one.returncode == 1, one.stderr
    widths = [len(l) for l in one.stdout.splitlines()]
    # the pool's reason (~120 characters with its row) wraps at 100, not at 80
    assert max(widths) <= DEFAULT_WIDTH and max(widths) > 80, max(widths)
    two = run_cli("bill", path, "--format", "table", "--jobs", "2")
    assert two.stdout == one.stdout
    narrow = [run_cli("bill", path, "--format", "table", "--jobs", jobs, columns=60) for jobs in ("1", "2")]
    assert narrow[0].stdout == narrow[1].stdout
    assert max(len(l) for l in narrow[0].stdout.splitlines()) <= 60


def test_a_word_longer_than_the_line_stays_whole():
    word = "x" * 150
    record = {"session_id": "S", "payer": "p", "method": "m", "lines": [], "total_timed_minutes": 0,
              "total_timed_units": 0, "total_units": 0,
              "unbilled": [{"code": "97110", "minutes": 5, "reason": f"see {word} here", "rules": ["r"]}],
              "warnings": [{"severity": "warning", "rule": "r", "message": f"a {word} b", "codes": []}]}
    out = to_table([record], 80)
    assert out.count(word) == 2
    assert all(len(l) <= 80 for l in out.splitlines() if word not in l)


# hypothesis: random results, every line within the width and no word lost

WORD = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-.:;'()/"), min_size=1, max_size=18)
SENTENCE = st.lists(WORD, min_size=0, max_size=40).map(" ".join)
CODE = st.sampled_from(["97110", "97112", "97140", "97530", "G0283", "97150", "97129"])
RULE = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz-"), min_size=1, max_size=20)
LINE = st.fixed_dictionaries({"code": CODE, "minutes": st.integers(0, 9999), "units": st.integers(0, 99),
                              "modifiers": st.lists(st.sampled_from(["GP", "GO", "GN", "59", "KX"]), max_size=3),
                              "rules": st.lists(RULE, max_size=6)})
UNBILLED = st.fixed_dictionaries({"code": CODE, "minutes": st.integers(0, 9999), "reason": SENTENCE,
                                  "rules": st.lists(RULE, max_size=3)})
WARNING = st.fixed_dictionaries({"severity": st.sampled_from(["info", "warning", "error"]), "rule": RULE,
                                 "message": SENTENCE, "codes": st.lists(CODE, max_size=3)})
RESULT = st.fixed_dictionaries({
    "session_id": st.lists(WORD, min_size=1, max_size=5).map(" ".join), "payer": RULE, "method": RULE,
    "lines": st.lists(LINE, max_size=5), "unbilled": st.lists(UNBILLED, max_size=5),
    "warnings": st.lists(WARNING, max_size=4), "total_timed_minutes": st.integers(0, 9999),
    "total_timed_units": st.integers(0, 99), "total_units": st.integers(0, 99)})
ERROR = st.fixed_dictionaries({"session_id": st.lists(WORD, min_size=1, max_size=5).map(" ".join),
                               "error": SENTENCE})


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(RESULT, ERROR), min_size=1, max_size=3), st.integers(60, 160))
def test_table_fits_the_width_and_keeps_every_word(records, width):
    # Words are at most 18 characters and rule ids 20: the fixed columns (code, minutes, units,
    # modifiers: at most 33 characters with their gaps) leave room for any of them from width 60 up.
    out = to_table(records, width)
    assert out.endswith("\n")
    lines = out.splitlines()
    assert all(len(l) <= width for l in lines), [l for l in lines if len(l) > width]
    tokens = out.split()
    for r in records:
        if "error" in r:
            assert contains_run(tokens, ["Session"] + f"{r['session_id']}: NOT BILLED error: {r['error']}".split())
            continue
        assert contains_run(tokens, ["Session"] + r["session_id"].split() + ["payer", r["payer"]])
        for l in r["lines"]:
            assert not l["rules"] or contains_run(tokens, ", ".join(l["rules"]).split())
        for u in r["unbilled"]:
            assert contains_run(tokens, [u["code"], str(u["minutes"])] + u["reason"].split())
        for w in r["warnings"]:
            codes = f" [{', '.join(w['codes'])}]" if w["codes"] else ""
            assert contains_run(tokens, f"{w['severity'].upper()} {w['rule']}{codes}: {w['message']}".split())
    assert to_table(records, width) == out           # deterministic


# --------------------------------------------------------------------------------------- wording


def test_one_session_read_is_singular(tmp_path):
    path = tmp_path / "one.json"
    path.write_text(json.dumps(dict(LONG, services=LONG["services"][:1])), "utf-8")
    proc = run_cli("bill", path, "--format", "table")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines()[-1] == "payrules: 1 session read: 1 billed, 0 with errors, 0 failed to parse"
    # 97112 24 min alone: chart 23-37 = 2 units (domain.md §3)
    assert "  Timed: 24 min billed as 2 units; total 2 units" in proc.stdout.splitlines()


def test_one_timed_unit_is_singular(tmp_path):
    path = tmp_path / "one.json"
    path.write_text(json.dumps(dict(LONG, services=[{"code": "97110", "minutes": 8}])), "utf-8")
    proc = run_cli("bill", path, "--format", "table")
    # 97110 8 min: chart 8-22 = 1 unit
    assert "  Timed: 8 min billed as 1 unit; total 1 unit" in proc.stdout.splitlines(), proc.stdout


SCENARIOS = """\
payer: medicare
scenarios:
  - name: "CMS Example 4 with 97035 expected and 97140 not"
    session:
      date_of_service: 2026-03-02
      discipline: PT
      services: [{code: "97110", minutes: 18}, {code: "97140", minutes: 13}, {code: "97116", minutes: 10},
                 {code: "97035", minutes: 8}]
    expect:
      lines: {"97110": 1, "97116": 1, "97035": 1, "97530": 2}
"""


def test_scenario_line_diffs_read_as_sentences(tmp_path):
    # CMS §20.2 Example 4 (domain.md §3.2): 49 min -> 3 units: 97110 x1, 97140 x1, 97116 x1; 97035 gets
    # none (8 leftover minutes, not reached). 97530 is not in the session at all.
    path = tmp_path / "s.tests.yaml"
    path.write_text(SCENARIOS, encoding="utf-8")
    proc = run_cli("test", path)
    assert proc.returncode == 1, proc.stderr
    diffs = [l.strip() for l in proc.stdout.splitlines() if l.startswith("     ")]
    reason = json.loads(run_cli("bill", "-", "--payer", "medicare", "--format", "json", input=json.dumps(
        dict(yaml.safe_load(SCENARIOS)["scenarios"][0]["session"], date_of_service="2026-03-02"))).stdout)
    [unbilled] = reason["unbilled"]
    assert diffs == [
        f"lines.97035: expected 1 unit, got none (not billed: {unbilled['reason']})",
        "lines.97530: expected 2 units, got none (no such line)",
        "lines.97140: expected no billed line, got 1 unit",
    ]
    assert not any("got not billed" in d or "1 units" in d for d in proc.stdout.splitlines())
