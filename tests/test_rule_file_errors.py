"""Broken payer files: exit 2, `error: FILE:LINE: PATH: message` on stderr, no traceback (design.md §3).

Each test writes a broken copy of GOOD (a small valid payer) into tmp_path and runs it two ways:
`validate FILE` and `bill examples/ot-session.yaml --rules DIR --payer testpayer`; both name FILE as a
path the user can open (here absolute, as tmp_path is). The expected LINE is
counted by hand in the text written; GOOD's line numbers are in the comment beside it.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

GOOD = """\
payer: testpayer
name: Test payer
effective_from: 2020-01-01
method:
  name: cms_8_minute
  unit_minutes: 15
  first_unit_minutes: 8
codes:
  timed_15: [97110, 97140, 97535]
rules:
  - id: timed-pool
    description: Timed codes share the pool.
    source: "test"
    when:
      line: {code_in: timed_15}
    then:
      - timed_units: true
  - id: note
    description: A note on 97110.
    source: "test"
    when:
      line: {code: 97110}
    then:
      - info: "{code} noted"
"""
# Lines of GOOD:
#  1 payer            9 timed_15            17 - timed_units: true
#  2 name            10 rules:              18 - id: note
#  3 effective_from  11 - id: timed-pool    19 description
#  4 method:         12 description         20 source
#  5 name            13 source              21 when:
#  6 unit_minutes    14 when:               22 line: {code: 97110}
#  7 first_unit_min  15 line: {code_in: ..} 23 then:
#  8 codes:          16 then:               24 - info: "{code} noted"


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def edit(old: str, new: str, text: str = GOOD) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def write(tmp_path: Path, content) -> Path:
    directory = tmp_path / "extra"
    directory.mkdir()
    path = directory / "testpayer.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def error_messages(stderr: str, display: str, line: int, field: str | None) -> list:
    """Messages of the stderr lines `error: DISPLAY:LINE: FIELD: message` (no FIELD part when None)."""
    prefix = f"error: {re.escape(display)}:{line}: "
    if field is not None:
        prefix += re.escape(field) + ": "
    return [m.group(1) for m in re.finditer(f"^{prefix}(.+)$", stderr, re.M)]


def check(tmp_path: Path, content, line: int, field: str | None, *fragments: str, pattern: str | None = None) -> list:
    """Both commands refuse the file: exit 2, no traceback, an error line at LINE naming FIELD, whose
    message contains every fragment (case-insensitive) and matches `pattern` when given."""
    path = write(tmp_path, content)
    runs = [
        (run_cli("validate", path), path.as_posix()),
        (run_cli("bill", "examples/ot-session.yaml", "--rules", path.parent, "--payer", "testpayer"),
         path.as_posix()),
    ]
    found = []
    for proc, display in runs:
        assert "Traceback" not in proc.stderr, proc.stderr
        assert proc.returncode == 2, (proc.args, proc.returncode, proc.stderr)
        messages = error_messages(proc.stderr, display, line, field)
        assert messages, f"no line `error: {display}:{line}: {field or ''}...` in stderr of {proc.args}:\n{proc.stderr}"
        good = [m for m in messages if all(f.lower() in m.lower() for f in fragments)
                and (pattern is None or re.search(pattern, m))]
        assert good, (fragments, pattern, messages)
        found.extend(good)
        if proc.args[3] == "bill":
            assert proc.stdout == ""
    return found


def test_good_file_is_valid_and_bills(tmp_path):
    """The base case: every failure below is caused by the one edit it makes."""
    path = write(tmp_path, GOOD)
    proc = run_cli("validate", path)
    assert proc.returncode == 0, proc.stderr
    assert "error:" not in proc.stderr
    proc = run_cli("bill", "examples/ot-session.yaml", "--rules", path.parent, "--payer", "testpayer")
    assert proc.returncode == 0, proc.stderr
    assert '"payer": "testpayer"' in proc.stdout


def test_invalid_yaml_syntax(tmp_path):
    # line 19: a second ": " inside a plain scalar
    check(tmp_path, edit("description: A note on 97110.", "description: A note: on 97110."), 19, None, "yaml")


def test_unclosed_flow_sequence(tmp_path):
    # line 9 opens a flow sequence that is never closed; the parser meets line 10 (`rules:`) inside it
    text = edit("timed_15: [97110, 97140, 97535]", "timed_15: [97110, 97140, 97535")
    path = write(tmp_path, text)
    proc = run_cli("validate", path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert re.search(rf"^error: {re.escape(path.as_posix())}:(9|10): .*yaml", proc.stderr, re.M | re.I), proc.stderr


def test_duplicate_yaml_key(tmp_path):
    # `name:` again on line 3; the first is on line 2
    messages = check(tmp_path, edit("name: Test payer\n", "name: Test payer\nname: Other\n"), 3, "name", "duplicate")
    assert all("line 2" in m for m in messages), messages


def test_unknown_top_level_key_suggests_the_right_one(tmp_path):
    # line 10: `rulez:` instead of `rules:`
    check(tmp_path, edit("rules:\n", "rulez:\n"), 10, "rulez", pattern=r"\brules\b")


def test_wrong_type(tmp_path):
    check(tmp_path, edit("- timed_units: true", '- units: "one"'), 17, "rules[0].then[0].units", "integer")


def test_missing_required_key(tmp_path):
    # the second rule (line 18) without its `source:` line
    text = edit('    source: "test"\n    when:\n      line: {code: 97110}',
                "    when:\n      line: {code: 97110}")
    check(tmp_path, text, 18, "rules[1]", "source", "required")


def test_negative_units(tmp_path):
    check(tmp_path, edit("- timed_units: true", "- units: -1"), 17, "rules[0].then[0].units", "-1",
          pattern=r"(at least|minimum|>=)\s*0")


def test_zero_unit_minutes(tmp_path):
    check(tmp_path, edit("unit_minutes: 15", "unit_minutes: 0"), 6, "method.unit_minutes",
          pattern=r"(at least|minimum|>=)\s*1")


def test_unknown_action(tmp_path):
    check(tmp_path, edit("- timed_units: true", "- bil: 1"), 17, "rules[0].then[0].bil", "unknown key")


def test_duplicate_rule_id_gives_first_line(tmp_path):
    # rule 2 (line 18) reuses the id of rule 1, defined on line 11
    check(tmp_path, edit("- id: note", "- id: timed-pool"), 18, "rules[1].id", "duplicate", "line 11")


@pytest.mark.parametrize("rule_id", ["engine.no-unit-rule", "engine.anything"])
def test_rule_ids_starting_with_engine_are_reserved(tmp_path, rule_id):
    # README: ids starting with `engine.` come from the engine's own safety nets, never from a payer
    # file; a payer rule named so passed validate and its warnings read as the engine's
    check(tmp_path, edit("- id: note", f"- id: {rule_id}"), 18, "rules[1].id", "reserved", "engine.")


def test_unknown_code_list_suggests_nearest(tmp_path):
    check(tmp_path, edit("code_in: timed_15", "code_in: timed_16"), 15, "rules[0].when.line.code_in",
          "timed_16", "timed_15")


def test_unknown_message_placeholder(tmp_path):
    check(tmp_path, edit('"{code} noted"', '"{cod} noted"'), 24, "rules[1].then[0].info", "{cod}", "placeholder")


def test_yaml_anchor_and_alias_refused(tmp_path):
    # anchor on line 9, alias on a new line 10
    text = edit("  timed_15: [97110, 97140, 97535]\n",
                "  timed_15: &timed [97110, 97140, 97535]\n  also_timed: *timed\n")
    path = write(tmp_path, text)
    for proc, display in [(run_cli("validate", path), path.as_posix()),
                          (run_cli("bill", "examples/ot-session.yaml", "--rules", path.parent, "--payer", "testpayer"),
                           path.as_posix())]:
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert re.search(rf"^error: {re.escape(display)}:(9|10): .*(anchor|alias)", proc.stderr, re.M | re.I), \
            proc.stderr


def test_yaml_alias_of_a_scalar_refused(tmp_path):
    # anchor on line 2 (name), alias on line 19 (description)
    text = edit("name: Test payer", "name: &n Test payer")
    text = edit("description: A note on 97110.", "description: *n", text)
    path = write(tmp_path, text)
    proc = run_cli("validate", path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert re.search(rf"^error: {re.escape(path.as_posix())}:(2|19): .*(anchor|alias)", proc.stderr, re.M | re.I), \
        proc.stderr


PYTHON_TAGS = {
    # the classic exploit form: a sequence of arguments for os.system
    "apply-sequence": 'name: !!python/object/apply:os.system ["touch {marker}"]',
    # an object built from a mapping of attributes
    "object-mapping": 'name: !!python/object:argparse.Namespace {{cmd: "touch {marker}"}}',
    # a tag on a plain scalar
    "object-scalar": 'name: !!python/object/apply:os.system "touch {marker}"',
}


@pytest.mark.parametrize("form", sorted(PYTHON_TAGS))
def test_python_object_tag_refused_and_not_executed(tmp_path, form):
    marker = tmp_path / "executed"
    line = PYTHON_TAGS[form].format(marker=marker.as_posix())
    # the tag is on line 2 (`name:`)
    messages = check(tmp_path, edit("name: Test payer", line), 2, None, "tag")
    assert all("python/object" in m for m in messages), messages
    assert not marker.exists()


def test_python_tag_on_a_list_refused_even_where_a_list_is_valid(tmp_path):
    # `!!python/tuple` on the code list (line 9): the file is otherwise valid, so only the tag is wrong
    check(tmp_path, edit("timed_15: [97110, 97140, 97535]", "timed_15: !!python/tuple [97110, 97140, 97535]"),
          9, None, "tag")


def test_non_utf8_file(tmp_path):
    # a Latin-1 byte (0xE9, "é") on line 19
    content = edit("description: A note on 97110.", "description: A note on 97110 (caf\xe9).").encode("latin-1")
    check(tmp_path, content, 19, None, "utf-8")


def test_empty_then_list(tmp_path):
    text = edit("    then:\n      - timed_units: true\n", "    then: []\n")
    check(tmp_path, text, 16, "rules[0].then", "empty")


def test_first_unit_minutes_larger_than_unit_minutes(tmp_path):
    check(tmp_path, edit("first_unit_minutes: 8", "first_unit_minutes: 20"), 7, "method.first_unit_minutes",
          "unit_minutes")


def test_effective_to_before_effective_from(tmp_path):
    # effective_to inserted as line 4
    text = edit("effective_from: 2020-01-01\n", "effective_from: 2020-01-01\neffective_to: 2019-12-31\n")
    check(tmp_path, text, 4, "effective_to", "effective_from")


def test_line_action_on_a_session_only_rule(tmp_path):
    # rule 2 tests only the session but adds a modifier, which needs a line; the action is on line 24
    text = edit('      line: {code: 97110}\n    then:\n      - info: "{code} noted"\n',
                "      session: {discipline: OT}\n    then:\n      - modifier: GO\n")
    check(tmp_path, text, 24, "rules[1].then[0].modifier", "line")


def test_every_error_of_a_file_is_listed_by_validate(tmp_path):
    # two independent semantic errors: unknown code list (line 15) and unknown placeholder (line 24)
    text = edit("code_in: timed_15", "code_in: timed_16")
    text = edit('"{code} noted"', '"{cod} noted"', text)
    path = write(tmp_path, text)
    proc = run_cli("validate", path)
    assert proc.returncode == 2
    assert error_messages(proc.stderr, path.as_posix(), 15, "rules[0].when.line.code_in")
    assert error_messages(proc.stderr, path.as_posix(), 24, "rules[1].then[0].info")


def test_invalid_file_among_valid_ones_fails_validate(tmp_path):
    bad = write(tmp_path, edit("- timed_units: true", "- units: -1"))
    proc = run_cli("validate", "rules/medicare.yaml", bad)
    assert proc.returncode == 2
    assert "rules/medicare.yaml" in proc.stdout          # the good file is still reported valid
    assert error_messages(proc.stderr, bad.as_posix(), 17, "rules[0].then[0].units")


def test_duplicate_payer_id_across_trees(tmp_path):
    # a second file claiming `payer: medicare` (line 1)
    path = write(tmp_path, edit("payer: testpayer", "payer: medicare"))
    proc = run_cli("bill", "examples/ot-session.yaml", "--rules", tmp_path / "extra")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert re.search(rf"^error: {re.escape(path.as_posix())}:1: payer: .*medicare", proc.stderr, re.M), proc.stderr


def test_huge_file_is_refused_without_reading_it(tmp_path):
    # a 3 GB sparse file (no disk used): refused by its size, and at most the limit + 1 bytes are read
    import tracemalloc
    from engine.loader import MAX_RULE_FILE_BYTES, PayerFile, read_spec
    path = write(tmp_path, "")
    with open(path, "r+b") as fh:
        fh.truncate(3 * 1024 ** 3)
    tracemalloc.start()
    try:
        spec, errors = read_spec(PayerFile(path, "extra/testpayer.yaml"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert spec is None and len(errors) == 1 and "too large" in errors[0].message
    assert peak < 2 * MAX_RULE_FILE_BYTES + 1024 ** 2, peak
    proc = run_cli("validate", path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert error_messages(proc.stderr, path.as_posix(), None, None) == [] and "too large" in proc.stderr


# --- clearer messages, and every error of a file at once (issue 11 §6) --------------------------------------

def test_a_tab_is_named_as_a_tab(tmp_path):
    # line 5 indented with a tab: PyYAML says "found character '\t' that cannot start any token"
    check(tmp_path, edit("  name: cms_8_minute", "\tname: cms_8_minute"), 5, None,
          pattern=r"^a tab character; indent YAML with spaces$")


@pytest.mark.parametrize("old, new, field", [
    # a test mapping: the mapping alternative of the test is the one that says what is wrong, at `gte`
    ("line: {code: 97110}", 'line: {code: 97110, minutes: {gte: "8"}}', "rules[1].when.line.minutes.gte"),
    # a number test written as text: neither alternative (a number, a mapping) takes text
    ("line: {code: 97110}", 'session: {line_count: "8"}', "rules[1].when.session.line_count"),
    ("line: {code: 97110}", 'line: {code: 97110, minutes: "8"}', "rules[1].when.line.minutes"),
])
def test_a_quoted_number_is_named_as_such(tmp_path, old, new, field):
    messages = check(tmp_path, edit(old, new), 22, field,
                     pattern=r'^"8" is text in quotes; write the number 8 without quotes$')
    assert not any("mapping" in m for m in messages)


def test_a_wrong_type_with_no_fitting_alternative_names_the_types(tmp_path):
    # a list where a number test (a number, or a mapping of tests) belongs
    check(tmp_path, edit("line: {code: 97110}", "line: {code: 97110, minutes: [8]}"), 22,
          "rules[1].when.line.minutes", pattern=r"^a list is not of type integer or object$")


@pytest.mark.parametrize("old, new, message", [
    ("effective_from: 2020-01-01", "effective_from: 2020-1-01", "'2020-1-01' is not a date like 2026-03-02"),
    ("effective_from: 2020-01-01", "effective_from: 2020-02-30", "'2020-02-30' is not a real date"),
    ("effective_from: 2020-01-01", "effective_from: 20200101", "20200101 is not a date like 2026-03-02"),
])
def test_a_bad_effective_date_is_said_in_words(tmp_path, old, new, message):
    check(tmp_path, edit(old, new), 3, "effective_from", pattern=f"^{re.escape(message)}$")


def all_errors(proc, display: str) -> list:
    """(line, field) of every `error:` line of stderr, in order; each must be about `display`."""
    found = []
    for line in proc.stderr.splitlines():
        if line == "0 valid, 1 invalid":       # validate's summary
            continue
        m = re.match(rf"^error: {re.escape(display)}:(\d+): ([^:]+): ", line)
        assert m, (line, proc.stderr)
        found.append((int(m.group(1)), m.group(2)))
    return found


def test_three_errors_of_three_kinds_are_all_reported_in_line_order(tmp_path):
    # line 3 a bad date (a check of the file), line 15 an unknown code list (a check of the merged payer),
    # line 22 a quoted number (the schema): the schema error does not hide the other two
    text = edit("effective_from: 2020-01-01", "effective_from: 2020-1-01")
    text = edit("code_in: timed_15", "code_in: timed_16", text)
    text = edit("line: {code: 97110}", 'line: {code: 97110, minutes: {gte: "8"}}', text)
    path = write(tmp_path, text)
    expected = [(3, "effective_from"), (15, "rules[0].when.line.code_in"), (22, "rules[1].when.line.minutes.gte")]
    proc = run_cli("validate", path)
    assert proc.returncode == 2 and all_errors(proc, path.as_posix()) == expected
    proc = run_cli("bill", "examples/ot-session.yaml", "--rules", path.parent, "--payer", "testpayer")
    assert proc.returncode == 2 and proc.stdout == ""
    assert all_errors(proc, path.as_posix()) == expected


def test_each_kind_of_check_reports_every_error_it_finds(tmp_path):
    # two of each: unknown code lists (lines 15, 22), duplicate rule ids (lines 18, 25), bad codes in a list
    # (line 9, items 1 and 2), unknown placeholders (lines 24, 31)
    text = edit("timed_15: [97110, 97140, 97535]", "timed_15: [97110, 9714, 975350]")
    text = edit("code_in: timed_15", "code_in: timed_16", text)
    text = edit("- id: note", "- id: timed-pool", text)
    text = edit('line: {code: 97110}\n    then:\n      - info: "{code} noted"\n',
                'line: {code_in: timd_15}\n    then:\n      - info: "{cod} noted"\n'
                '  - id: timed-pool\n    description: Again.\n    source: "test"\n    when:\n'
                '      line: {code: 97110}\n    then:\n      - info: "{cod} again"\n', text)
    path = write(tmp_path, text)
    proc = run_cli("validate", path)
    assert proc.returncode == 2
    assert all_errors(proc, path.as_posix()) == [
        (9, "codes.timed_15[1]"), (9, "codes.timed_15[2]"), (15, "rules[0].when.line.code_in"),
        (18, "rules[1].id"), (22, "rules[1].when.line.code_in"), (24, "rules[1].then[0].info"),
        (25, "rules[2].id"), (31, "rules[2].then[0].info")]


def test_errors_of_several_files_are_all_reported(tmp_path):
    # a.yaml: unknown code list (line 15) and unknown placeholder (line 24); b.yaml (payer other):
    # 15.0 (line 6) and a duplicate rule id (line 18). bill stops before billing, with all four
    directory = tmp_path / "extra"
    directory.mkdir()
    (directory / "a.yaml").write_text(edit('"{code} noted"', '"{cod} noted"',
                                           edit("code_in: timed_15", "code_in: timed_16")))
    (directory / "b.yaml").write_text(edit("- id: note", "- id: timed-pool",
                                           edit("unit_minutes: 15", "unit_minutes: 15.0",
                                                edit("payer: testpayer", "payer: other"))))
    proc = run_cli("bill", "examples/ot-session.yaml", "--rules", directory)
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    shown = re.escape(tmp_path.as_posix())      # files are named as given: under tmp_path
    said = [re.match(rf"^error: {shown}/(extra/[ab]\.yaml):(\d+): ([^:]+): ", l).groups()
            for l in proc.stderr.splitlines()]
    assert said == [("extra/a.yaml", "15", "rules[0].when.line.code_in"),
                    ("extra/a.yaml", "24", "rules[1].then[0].info"),
                    ("extra/b.yaml", "6", "method.unit_minutes"), ("extra/b.yaml", "18", "rules[1].id")]


# --- harness: k independent mistakes in a rule file are k errors, each at its line and path ----------------

from hypothesis import given, settings, strategies as st  # noqa: E402

N_RULES = 4
# A valid payer, one field a line. Rule 0 (`base`) is never edited: a duplicate id repeats it.
HEAD = ["payer: hyp", "name: Hyp payer", "description: made by the harness", "method:", "  name: cms_8_minute",
        "codes:"] + [f"  list_{i}: [97110, 97140]" for i in range(N_RULES)] + \
       ["rules:", "  - id: base", "    description: b", '    source: "test"', "    when:",
        "      line: {code_in: list_0}", "    then:", "      - timed_units: true"]
RULE_AT = len(HEAD)         # rule i (1..N_RULES) takes 8 lines from RULE_AT + 8 (i - 1)


def rule_lines(i: int) -> list:
    return [f"  - id: r{i}", "    description: r", '    source: "test"', "    effective_from: 2020-01-01",
            "    when:", f"      line: {{code_in: list_{i % N_RULES}, minutes: {{gte: 8}}}}", "    then:",
            '      - info: "{code} seen"']


RULE_MISTAKES = [   # (line within the rule, the line with the mistake, field of the path): one each kind of check
    (0, "  - id: base", "id"),                                                                  # duplicate id
    (0, "  - id: Bad Id", "id"),                                                                # schema pattern
    (1, "    descriptio: r", "descriptio"),                                                     # misspelt key
    (3, "    effective_from: 2020-1-01", "effective_from"),                                     # date form
    (3, "    effective_from: 2020-02-30", "effective_from"),                                    # no such day
    (5, "      line: {code_in: lst_1, minutes: {gte: 8}}", "when.line.code_in"),                # unknown list
    (5, '      line: {code_in: list_1, minutes: {gte: "8"}}', "when.line.minutes.gte"),         # quoted number
    (5, "      line: {code_in: list_1, minutes: {gte: 8}, cod: 97110}", "when.line.cod"),       # misspelt key
    (7, '      - info: "{cod} seen"', "then[0].info"),                                          # placeholder
    (7, '      - inf: "{code} seen"', "then[0].inf"),                                           # unknown action
    (7, "      - units: -1", "then[0].units"),                                                  # out of range
]
CODE_MISTAKES = [("[97110, 9714]", "[1]"), ("[97110, 97140.5]", "[1]"), ("[97110, abc]", "[1]")]
PLACES_IN_FILE = ["description"] + [f"codes.list_{i}" for i in range(1, N_RULES)] + \
                 [f"rules[{i}]" for i in range(1, N_RULES + 1)]


def file_mistake(place: str, choice: int):
    """(index of the line in the file, the line with the mistake, path of its error)."""
    if place == "description":
        return 2, "descripton: made by the harness", "descripton"
    if place.startswith("codes."):
        i = int(place.rsplit("_", 1)[1])
        written, item = CODE_MISTAKES[choice % len(CODE_MISTAKES)]
        return 6 + i, f"  list_{i}: {written}", place + item
    i = int(place[len("rules["):-1])
    offset, line, field = RULE_MISTAKES[choice % len(RULE_MISTAKES)]
    return RULE_AT + 8 * (i - 1) + offset, line, f"{place}.{field}"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(PLACES_IN_FILE), st.integers(0, 99)), min_size=1, max_size=4,
                unique_by=lambda m: m[0]))
def test_k_mistakes_in_a_rule_file_are_k_errors(tmp_path_factory, mistakes):
    from engine.loader import Registry
    lines = HEAD + [line for i in range(1, N_RULES + 1) for line in rule_lines(i)]
    expected = []
    for place, choice in mistakes:
        index, text, path = file_mistake(place, choice)
        lines[index] = text
        expected.append((index + 1, path))
    folder = tmp_path_factory.mktemp("rules") / "extra"
    folder.mkdir()
    (folder / "hyp.yaml").write_text("\n".join(lines) + "\n")
    errors = Registry([folder], include_bundled=False, strict=False).errors()
    want = [((folder / "hyp.yaml").as_posix(), line, path) for line, path in sorted(expected)]   # as given
    assert [(e.file, e.line, e.path) for e in errors] == want, [str(e) for e in errors]
    assert all(e.message and "\n" not in e.message for e in errors)


def test_the_readme_guides_error_examples_are_what_validate_says(tmp_path, monkeypatch):
    """README "Adding a payer", step 2: each example line is what one mistake in the guide's file gives,
    word for word (the guide's file without its first comment line, so that lines count from `payer:`)."""
    from engine.loader import Registry
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    guide = re.search(r"```yaml\n\s*# my-rules/acme-health\.yaml\n(.*?)```", readme, re.S).group(1)
    guide = "\n".join(line[3:] for line in guide.splitlines()) + "\n"
    examples = re.search(r"```\n((?: *error: my-rules/.*\n)+) *```", readme).group(1).splitlines()
    mistakes = {    # README line (its start) -> the edit that makes it
        "max_unit": ("- max_units: 2", "- max_unit: 2"),
        "no code list named 'manual'": ("line: {code: 97140}", "line: {code_in: manual}"),
        "already a rule of medicare": ("- id: acme-manual-therapy-limit", "- id: timed-pool"),
        "missing required key 'source'": ('    source: "Acme provider manual §4.2 (write where the policy is '
                                          'published)"\n', ""),
        "medicar'": ("extends: medicare ", "extends: medicar "),
        "'midpoint' is not one of": ("name: midpoint_per_code", "name: midpoint"),
        "9714 is not a CPT/HCPCS code": ("line: {code: 97140}", "line: {code: 9714}"),
    }
    assert len(examples) == len(mistakes)
    for n, example in enumerate(examples):
        (old, new), = [edit_ for key, edit_ in mistakes.items() if key in example]
        rules = tmp_path / str(n) / "my-rules"
        rules.mkdir(parents=True)
        (rules / "acme-health.yaml").write_text(edit(old, new, guide), encoding="utf-8")
        monkeypatch.chdir(rules.parent)     # the guide's commands run beside my-rules/; messages name it so
        said = [f"error: {e}" for e in Registry(["my-rules"], strict=False).errors()]
        assert said == [example.strip()], (example, said)


@pytest.mark.parametrize("written, message", [("2026-02-30", "'2026-02-30' is not a real date"),
                                              ('"2026-2-3"', "'2026-2-3' is not a date like 2026-03-02")])
def test_a_scenario_date_is_checked_in_words(tmp_path, written, message):
    # line 4: the scenario's date (a well-formed impossible date used to be billed as it was)
    path = tmp_path / "x.tests.yaml"
    path.write_text(f'payer: medicare\nscenarios:\n  - name: a\n    date: {written}\n'
                    '    session: {services: [{code: "97110", minutes: 20}]}\n    expect: {total_units: 1}\n')
    proc = run_cli("test", path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert re.search(rf"^error: \S*x\.tests\.yaml:4: scenarios\[0\]\.date: {re.escape(message)}$", proc.stderr, re.M), \
        proc.stderr
