"""The session readers (engine/sessions.py) under issue 10: every format through --jobs N, the streaming
JSON-list reader at every read-buffer size, CSV rows that are broken on their own line, a day's minutes,
duplicate keys, and group sizes that disagree.

Expected values are worked by hand from design.md §3-§5 and domain.md (CMS 8-minute chart: 8-22 min = 1
unit, 23-37 = 2, 38-52 = 3, 53-67 = 4), or come from an independent reference (json.loads of the whole
document, the csv module on one line, a session billed alone).
"""
from __future__ import annotations

import io
import json
import pickle
import random
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from engine.errors import SessionError, UsageError
from engine.model import NO_CONTEXT, Session
from engine.sessions import ParseError, SessionInput, parse_session
from engine.yamlload import Located
from test_batch import run_cli

ROOT = Path(__file__).resolve().parent.parent
DATE = "2026-03-02"


def summary(proc) -> tuple:
    """(read, billed, with errors, failed to parse) from the last stderr line; the counts must add up."""
    last = proc.stderr.decode().rstrip("\n").rsplit("\n", 1)[-1]
    words = last.replace(",", "").split()
    assert last.startswith("payrules: ") and len(words) >= 10, proc.stderr.decode()[-2000:]
    read, billed, errors, failed = int(words[1]), int(words[4]), int(words[6]), int(words[9])
    assert read == billed + errors + failed, last
    return read, billed, errors, failed


def jsonl(proc) -> list:
    return [json.loads(line) for line in proc.stdout.decode().splitlines()]


def units_of(record: dict) -> dict:
    return {line["code"]: line["units"] for line in record["lines"]}


def read_all(path, fmt="auto", **kw) -> list:
    return list(SessionInput(str(path), fmt, **kw))


# --- 1. --jobs N on every input format ------------------------------------------------------------------

CODES = ["97110", "97112", "97140", "97530", "97535", "97116", "97150", "97161", "92507", "97111"]
PAYERS = ["medicare", "medicare", "example-midpoint", "example-full-unit"]


def mixed_sessions(n: int, seed: int = 10) -> list:
    """n session dicts, good and bad (wrong type, unknown payer, no services, not an object), seeded."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        services = []
        for _ in range(rng.randint(1, 4)):
            s = {"code": rng.choice(CODES), "minutes": rng.randint(0, 70)}
            if s["code"] == "97150":
                s["group_size"] = rng.randint(1, 6)
            services.append(s)
        session = {"session_id": f"S-{i:04d}", "payer": rng.choice(PAYERS), "date_of_service": DATE,
                   "discipline": rng.choice(["PT", "OT", "SLP"]), "services": services}
        kind = rng.random()
        if kind < 0.04:
            session = [1, 2]
        elif kind < 0.08:
            session["payer"] = "nobody"
        elif kind < 0.12:
            services[0]["minutes"] = "ten"
        elif kind < 0.15:
            del session["services"]
        elif kind < 0.2:
            session["context"] = {"referral": "x", "visit": i}
        out.append(session)
    return out


def as_csv(sessions: list) -> str:
    rows = ["session_id,payer,date_of_service,discipline,code,minutes,group_size"]
    for s in sessions:
        if not isinstance(s, dict) or "services" not in s:
            continue
        for v in s["services"]:
            rows.append(f"{s['session_id']},{s['payer']},{s['date_of_service']},{s['discipline']},{v['code']},"
                        f"{v['minutes']},{v.get('group_size', '')}")
    return "\n".join(rows) + "\n"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("jobs")
    sessions = mixed_sessions(600)      # more than CHUNK (256) x 2 jobs: several chunks per worker
    files = {
        "yaml": d / "batch.yaml", "json": d / "batch.json", "single": d / "one.json", "jsonl": d / "batch.jsonl",
        "csv": d / "batch.csv"}
    files["yaml"].write_text(json.dumps(sessions[:300], indent=1), encoding="utf-8")   # JSON is YAML
    files["json"].write_text(json.dumps(sessions, indent=1), encoding="utf-8")
    files["single"].write_text(json.dumps(sessions[1]), encoding="utf-8")
    files["jsonl"].write_text("".join(json.dumps(s) + "\n" for s in sessions), encoding="utf-8")
    files["csv"].write_text(as_csv(sessions), encoding="utf-8")
    return files


@pytest.mark.parametrize("kind, fmt", [("yaml", "json"), ("json", "jsonl"), ("single", "json"), ("jsonl", "csv"),
                                       ("csv", "jsonl")])
def test_jobs_2_gives_the_same_bytes_as_jobs_1_for_every_input_format(inputs, kind, fmt):
    one = run_cli("bill", inputs[kind], "--format", fmt, "--jobs", "1")
    two = run_cli("bill", inputs[kind], "--format", fmt, "--jobs", "2")
    assert one.returncode == two.returncode and one.returncode in (0, 1), two.stderr.decode()[-2000:]
    assert one.stdout == two.stdout and one.stdout
    assert summary(one) == summary(two)


def test_jobs_2_with_yaml_and_jsonl_inputs_together():
    # the command of issue 10
    args = ["bill", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "examples").glob("*.yaml")),
            "examples/batch.jsonl", "--format", "jsonl"]
    one, two = run_cli(*args, "--jobs", "1"), run_cli(*args, "--jobs", "2")
    assert one.returncode == two.returncode == 0
    assert one.stdout == two.stdout and len(jsonl(one)) == 6      # 4 YAML files + 2 JSONL lines


def _same_item(a, b) -> bool:
    if isinstance(a, Session):
        return type(b) is Session and a == b and (a.context is not NO_CONTEXT or b.context is NO_CONTEXT)
    return (type(a) is type(b) and str(a) == str(b) and a.session_id == b.session_id and a.line == b.line
            and a.path == b.path and a.file == b.file)


json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-5, 2000), st.text(max_size=6))
json_value = st.recursive(json_scalar, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=8)
service = st.fixed_dictionaries(
    {"code": st.sampled_from(CODES + [97110, "9711"]), "minutes": st.one_of(st.integers(0, 90), json_scalar)},
    optional={"group_size": st.integers(0, 6), "provider": st.sampled_from(["PT", "OTA"])})
session_dict = st.fixed_dictionaries(
    {"services": st.lists(service, min_size=0, max_size=4)},
    optional={"session_id": st.one_of(st.text(min_size=1, max_size=8), st.integers(0, 99)),
              "payer": st.sampled_from(["medicare", "x"]), "date_of_service": st.sampled_from([DATE, "2026-02-30"]),
              "discipline": st.sampled_from(["PT", "OT", "XX"]),
              "context": st.dictionaries(st.text(max_size=3), json_value, max_size=3)})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(session_dict, json_value))
def test_every_parsed_item_survives_a_pickle_round_trip(data):
    # what --jobs sends to a worker: a Session, or a SessionError / ParseError in its place
    item = parse_session(data, Located(data, {(): 1}, "<test>"), (), 1)
    assert isinstance(item, (Session, SessionError))
    assert _same_item(item, pickle.loads(pickle.dumps(item)))


def test_items_of_every_reader_survive_a_pickle_round_trip(inputs):
    for kind, path in inputs.items():
        items = read_all(path)
        assert items and any(isinstance(i, Session) for i in items), kind
        assert any(isinstance(i, SessionError) for i in items) or kind == "single", kind
        for item in items:
            assert _same_item(item, pickle.loads(pickle.dumps(item))), (kind, item)
    assert pickle.loads(pickle.dumps(NO_CONTEXT)) is NO_CONTEXT


# --- 4. a day holds at most 1,440 minutes ------------------------------------------------------------------

def parse(data: dict, number: int = 1):
    data = json.loads(json.dumps(data))
    return parse_session(data, Located(data, {(): 1}, "<test>"), (), number)


def test_services_adding_up_to_more_than_a_day_are_an_error():
    # 200 services of 1,440 minutes each: 288,000 minutes in one day (issue 10 billed 19,200 units)
    item = parse({"session_id": "DAY", "payer": "medicare", "services": [{"code": "97110", "minutes": 1440}] * 200})
    assert isinstance(item, SessionError) and not isinstance(item, ParseError)
    assert item.session_id == "DAY" and item.path == "services"
    assert item.message == "services add up to 288000 minutes; a day has at most 1,440"
    # 1,440 in all is a full day and allowed; one minute more is not (also through the slow path: 30.0)
    assert isinstance(parse({"services": [{"code": "97110", "minutes": 720}, {"code": "97112", "minutes": 720}]}),
                      Session)
    over = parse({"services": [{"code": "97110", "minutes": 720.0}, {"code": "97112", "minutes": 721}]})
    assert isinstance(over, SessionError) and "1441 minutes" in over.message


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 1440), min_size=1, max_size=12), st.booleans())
def test_day_limit_is_the_sum_of_all_services(minutes, slow):
    services = [{"code": CODES[i % 6], "minutes": float(m) if slow and i == 0 else m} for i, m in enumerate(minutes)]
    item = parse({"services": services})
    if sum(minutes) > 1440:
        assert isinstance(item, SessionError) and f"add up to {sum(minutes)} minutes" in item.message
    else:
        assert isinstance(item, Session) and sum(s.minutes for s in item.services) == sum(minutes)


def test_day_limit_through_the_cli(tmp_path):
    path = tmp_path / "day.jsonl"
    good = {"session_id": "OK", "payer": "medicare", "discipline": "PT",
            "services": [{"code": "97110", "minutes": 20}]}
    huge = {"session_id": "HUGE", "payer": "medicare", "discipline": "PT",
            "services": [{"code": "97110", "minutes": 1440}] * 200}
    path.write_text(json.dumps(good) + "\n" + json.dumps(huge) + "\n", encoding="utf-8")
    proc = run_cli("bill", path, "--format", "jsonl")
    assert proc.returncode == 1
    ok, bad = jsonl(proc)
    assert units_of(ok) == {"97110": 1}                 # 20 min -> 1 unit
    assert set(bad) == {"session_id", "error"} and "a day has at most 1,440" in bad["error"]
    assert summary(proc) == (2, 1, 1, 0)


# --- 6. entries of one code that disagree on group_size ----------------------------------------------------

def test_entries_of_one_code_with_different_group_sizes_are_an_error():
    # design.md §4: "Entries of one code that disagree on group_size are an error for that session"
    item = parse({"session_id": "G", "services": [{"code": "97150", "minutes": 30, "group_size": 3},
                                                  {"code": "97110", "minutes": 10},
                                                  {"code": "97150", "minutes": 15, "group_size": 4}]})
    assert isinstance(item, SessionError) and item.session_id == "G"
    assert item.path == "services[2].group_size"
    assert "97150" in item.message and "services[0]" in item.message
    # the same in the other order: an error too, never "the first one wins"
    swapped = parse({"services": [{"code": "97150", "minutes": 15, "group_size": 4},
                                  {"code": "97150", "minutes": 30, "group_size": 3}]})
    assert isinstance(swapped, SessionError) and swapped.path == "services[1].group_size"


def test_group_sizes_that_agree_or_are_missing_are_no_error():
    # equal sizes agree; different codes are separate groups. An entry without group_size beside one with
    # it is not a disagreement (only two sizes both given can disagree): the given size is the group's.
    agree = parse({"services": [{"code": "97150", "minutes": 30, "group_size": 3},
                                {"code": "97150", "minutes": 15, "group_size": 3},
                                {"code": "92508", "minutes": 15, "group_size": 5}]})
    assert isinstance(agree, Session)
    missing = parse({"services": [{"code": "97150", "minutes": 30},
                                  {"code": "97150", "minutes": 15, "group_size": 3}]})
    assert isinstance(missing, Session) and [s.group_size for s in missing.services] == [None, 3]


def test_group_size_disagreement_through_the_cli_in_either_order(tmp_path):
    rows = ["session_id,payer,discipline,code,minutes,group_size",
            "A,medicare,PT,97150,30,3", "A,medicare,PT,97150,15,4",
            "B,medicare,PT,97150,15,4", "B,medicare,PT,97150,30,3"]
    path = tmp_path / "groups.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    proc = run_cli("bill", path, "--format", "jsonl")
    a, b = jsonl(proc)
    assert set(a) == set(b) == {"session_id", "error"}
    assert "groups.csv:3: services[1].group_size" in a["error"] and "groups.csv:5" in b["error"]
    assert summary(proc) == (2, 0, 2, 0)


# --- 5. duplicate keys in JSON and JSONL -------------------------------------------------------------------

def raw_line(text: str, lineno: int = 1):
    from engine.sessions import RawLine
    return RawLine((text.encode(), "x.jsonl", lineno, lineno)).parse()


SERVICES = '"services": [{"code": "97110", "minutes": 20}]'


@pytest.mark.parametrize("text, key, path", [
    ('{"session_id": "D", "payer": "medicare", "payer": "x", ' + SERVICES + '}', "payer", ""),
    ('{"session_id": "D", "services": [{"code": "97110", "minutes": 10, "minutes": 50}]}', "minutes", "services[0]"),
    ('{"session_id": "D", ' + SERVICES + ', "context": {"a": {"b": 1, "b" : 2}}}', "b", "context.a"),
    ('{"session_id": "D", ' + SERVICES + ', ' + SERVICES + '}', "services", ""),
])
def test_a_duplicate_key_in_a_jsonl_line_is_an_error_record(text, key, path):
    item = raw_line(text, 7)
    # the same key twice in one object: which one was meant is unknown (YAML refuses it too)
    assert isinstance(item, ParseError), item
    assert item.message == f"duplicate key {key!r}" and item.path == path and item.line == 7
    assert item.session_id == "D"


@pytest.mark.parametrize("text", [
    '{"session_id": "T", "context": {"time": "10:30", "note": "a\\":b"}, ' + SERVICES + '}',   # colons in strings
    '{"session_id" : "T" ,\t"services":[{"code":"97110" ,"minutes" :20}]}',                    # space before ':'
    '{"session_id": "T", ' + SERVICES + ', "context": {"a": {"a": {"a": 1}}}}',                 # same key, nested
])
def test_keys_that_only_look_repeated_are_no_error(text):
    item = raw_line(text)
    assert isinstance(item, Session) and item.session_id == "T"
    assert item.services[0].minutes == 20


def test_a_session_without_repeated_keys_is_parsed_once(monkeypatch):
    # the common case costs a count, never a second parse (benchmarks: the JSONL hot path)
    from engine import sessions

    def second_parse(text):
        raise AssertionError("parsed again")

    monkeypatch.setattr(sessions, "_duplicate_key", second_parse)
    for text in ['{"session_id": "T", ' + SERVICES + '}',
                 '{"session_id": "T", "payer": "medicare", "discipline": "PT", "date_of_service": "2026-03-02", '
                 '"services": [{"code": "97150", "minutes": 20, "group_size": 3, "provider": "PTA"}, '
                 '{"provider": "PT", "minutes": 20, "code": 97110}], "context": {"a": [{"b": 1}], "c": {}}}']:
        assert isinstance(raw_line(text), Session)


def pairs_text(draw, depth: int) -> tuple:
    """(JSON text of an object written from a list of pairs, whether some object in it repeats a key)."""
    keys = st.sampled_from(["a", "b", "a:", 'b"', "\u00e9", "services"])
    dup = False
    parts = []
    seen = set()
    for _ in range(draw(st.integers(0, 4))):
        key = draw(keys)
        dup = dup or key in seen
        seen.add(key)
        if depth > 0 and draw(st.booleans()):
            value, inner = pairs_text(draw, depth - 1)
            dup = dup or inner
            if draw(st.booleans()):
                value = f"[{value}, 1]"
        else:
            value = json.dumps(draw(st.one_of(json_scalar, st.just("x\":y"))))
        parts.append(json.dumps(key) + draw(st.sampled_from(["", " ", "\n "])) + ":" + draw(st.sampled_from(["", " "]))
                     + value)
    return "{" + ", ".join(parts) + "}", dup


EXTRA_PAIRS = [("group_size", 3), ("provider", "PT"), ("minutes", 25), ("code", "97112"), ("group_size", 3)]


def services_text(draw) -> tuple:
    """(JSON text of a services list written from pairs, whether a service repeats a key): services the
    fast path accepts, with group_size and provider or not, some with a key written twice."""
    parts, dup = [], False
    for _ in range(draw(st.integers(1, 3))):
        pairs = [("code", "97110"), ("minutes", 20)] + draw(st.lists(st.sampled_from(EXTRA_PAIRS), max_size=2))
        names = [k for k, _ in pairs]
        dup = dup or len(set(names)) < len(names)
        parts.append("{" + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in draw(st.permutations(pairs)))
                     + "}")
    return '"services": [' + ", ".join(parts) + "]", dup


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_duplicate_keys_are_found_exactly_when_an_object_repeats_a_key(data):
    body, dup = pairs_text(data.draw, 2)
    services, in_services = services_text(data.draw)
    text = '{"session_id": "P", ' + services + ', "context": ' + body + '}'
    item = raw_line(text.replace("\n", " "))
    found = isinstance(item, ParseError) and item.message.startswith("duplicate key")
    assert found == (dup or in_services), (text, item)
    if not found:
        assert isinstance(item, Session) and item.context == json.loads(body)


def test_a_duplicate_key_in_a_json_list_or_object(tmp_path):
    good = {"session_id": "G", "payer": "medicare", "discipline": "PT", "services": [{"code": "97110", "minutes": 20}]}
    path = tmp_path / "dup.json"
    twice = json.dumps(good, indent=1).replace('"payer"', '"payer": "x", "payer"', 1)
    path.write_text("[\n" + json.dumps(good) + ",\n" + twice + ",\n" + json.dumps(good) + "\n]\n", encoding="utf-8")
    items = read_all(path)
    assert [type(i) for i in items] == [Session, ParseError, Session]
    assert items[1].line == 3 and items[1].message == "duplicate key 'payer'"
    single = tmp_path / "one.json"
    single.write_text('{"session_id": "S", "services": [], "services": [{"code": "97110", "minutes": 20}]}')
    proc = run_cli("bill", single, "--format", "json", "--payer", "medicare")
    assert proc.returncode == 1
    assert json.loads(proc.stdout) == {"session_id": "S", "error": f"{single}:1: duplicate key 'services'"}


# --- 2. the streaming JSON-list reader ----------------------------------------------------------------------

def json_texts(doc: bytes, chunk: int) -> list:
    """(kind, line, value) of every top-level value the reader cuts from `doc`, read `chunk` bytes at a
    time, decoded as the reader decodes them; an element it cannot decode gives the exception instead."""
    from engine.sessions import _JsonScanner
    out = []
    for kind, line, raw in _JsonScanner(io.BytesIO(doc), "<t>", chunk).values():
        try:
            out.append((kind, line, json.loads(bytes(raw).decode("utf-8"))))
        except (ValueError, TypeError) as exc:
            out.append((kind, line, exc))
    return out


json_number = st.one_of(st.integers(-10**20, 10**20), st.floats(allow_nan=False, allow_infinity=False))
json_text = st.text(st.characters(codec="utf-8"), max_size=8) | st.sampled_from(
    ["\"", "\\", "\\\"", "\n\t", "a,b]", "{[", "\u00e9\u4e2d\U0001f600"])
any_json = st.recursive(st.none() | st.booleans() | json_number | json_text,
                        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(json_text, inner, max_size=4),
                        max_leaves=12)
SPACE = st.sampled_from(["", " ", "\n", "\r\n", "\t", " \n  "])
STYLE = st.sampled_from([dict(), dict(indent=1), dict(separators=(",", ":")), dict(separators=(" ,\n", " :\t")),
                         dict(ensure_ascii=False), dict(indent="\t", ensure_ascii=False)])


@st.composite
def json_list_document(draw) -> tuple:
    """(document bytes, [(line of the element's first byte, element)]): a JSON list written with white
    space of every kind around and inside its elements."""
    values = draw(st.lists(any_json, max_size=5))
    doc, lines = draw(SPACE) + "[", []
    for n, value in enumerate(values):
        doc += draw(SPACE)
        lines.append(doc.count("\n") + 1)
        doc += json.dumps(value, **draw(STYLE)) + draw(SPACE) + ("," if n < len(values) - 1 else "")
    doc += draw(SPACE) + "]" + draw(SPACE)
    return doc.encode("utf-8"), list(zip(lines, values))


def same_json(a, b) -> bool:
    """Equal, and of the same types all the way down (1 and 1.0 differ; so do key orders)."""
    return json.dumps(a) == json.dumps(b) and a == b


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(json_list_document())
def test_json_list_reader_gives_json_loads_values_at_every_buffer_size(case):
    doc, expected = case
    reference = json.loads(doc)
    assert same_json([v for _, v in expected], reference)        # the generator writes what it means
    for chunk in range(1, len(doc) + 1):
        got = json_texts(doc, chunk)
        assert [(kind, line) for kind, line, _ in got] == [("item", line) for line, _ in expected], chunk
        assert same_json([v for _, _, v in got], reference), chunk


CORRUPTIONS = st.sampled_from(list(b'[]{},:"\\ \n0e.-tn') + [None])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(json_list_document(), st.integers(0, 10**6), CORRUPTIONS)
def test_json_list_reader_accepts_exactly_what_json_loads_accepts(case, where, byte):
    # one byte of a valid document replaced (or deleted: None): either json.loads of the whole document
    # accepts it, and the reader gives the same values, or it does not, and the reader reports a problem
    from engine.errors import UsageError
    doc = bytearray(case[0])
    i = where % len(doc)
    doc[i:i + 1] = b"" if byte is None else bytes([byte])
    doc = bytes(doc)
    try:
        reference = json.loads(doc.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        reference = ValueError
    for chunk in sorted({1, 2, 3, 7, len(doc) // 2 + 1, len(doc) + 1}):
        try:
            got = json_texts(doc, chunk)
        except UsageError:
            assert reference is ValueError or not isinstance(reference, (list, dict)), (doc, chunk)
            continue
        values = [v for _, _, v in got]
        if reference is ValueError:
            assert any(isinstance(v, Exception) for v in values), (doc, chunk, values)
        elif isinstance(reference, dict):
            assert [kind for kind, _, _ in got] == ["single"] and same_json(values[0], reference)
        else:
            assert same_json(values, reference), (doc, chunk)


def test_literals_straddling_the_read_buffer(tmp_path):
    # issue 10: a `true` cut by the buffer boundary was "malformed" and the rest of the list was dropped
    session = {"session_id": "T", "payer": "medicare", "discipline": "PT", "context": {"flag": True, "x": None},
               "services": [{"code": "97110", "minutes": 20}]}
    text = json.dumps([session] * 3, indent=1).encode()
    at = text.index(b"true") + 2
    for chunk in (at, at - 1, at + 1, 1, 5):
        path = tmp_path / "t.json"
        path.write_bytes(text)
        items = read_all(path, chunk=chunk)
        assert [type(i) for i in items] == [Session] * 3, chunk
        assert items[0].context == {"flag": True, "x": None}


def test_a_20000_session_json_list_is_read_whole(tmp_path):
    # issue 10: a 20,000-session list lost 18,769 sessions. Every session is read, in order, with the
    # line of its first byte (json.dumps(indent=1): "[" on line 1, then 13 lines per session below)
    sessions = [{"session_id": f"S{n}", "payer": "medicare", "discipline": "PT", "context": {"ok": n % 2 == 0},
                 "services": [{"code": "97110", "minutes": n % 60}, {"code": "97140", "minutes": 8}]}
                for n in range(20000)]
    path = tmp_path / "big.json"
    path.write_text(json.dumps(sessions, indent=1), encoding="utf-8")
    per = json.dumps(sessions[0], indent=1).count("\n") + 1
    items = read_all(path)
    assert len(items) == 20000 and all(type(i) is Session for i in items)
    assert [i.session_id for i in items] == [f"S{n}" for n in range(20000)]
    assert [i.line for i in items[:3]] == [2, 2 + per, 2 + 2 * per]
    assert items[-1].line == 2 + 19999 * per
    assert items[123].services[0].minutes == 123 % 60 and items[123].context == {"ok": False}


def test_json_list_errors_keep_their_lines_and_stop_cleanly(tmp_path):
    from engine.errors import UsageError
    good = json.dumps({"session_id": "G", "services": [{"code": "97110", "minutes": 20}]})
    path = tmp_path / "bad.json"
    path.write_text("[\n" + good + ",\n[1, 2],\n" + '{"session_id": "M", "services": [tru]}' + ",\n" + good + "\n]\n")
    source = SessionInput(str(path))
    items = []
    with pytest.raises(UsageError) as raised:
        for item in source:
            items.append(item)
    # a list element that is not an object: its error record (line 3); then the malformed one (line 4),
    # after which where the next session starts cannot be known: the run stops, saying so
    assert [type(i) for i in items] == [Session, ParseError, type(items[2])] and isinstance(items[2], ParseError)
    assert [i.line for i in items] == [2, 3, 4]
    assert items[2].message.startswith("malformed JSON: Expecting value (line 4")
    assert "the rest of the JSON list cannot be read" in str(raised.value) and ":4:" in str(raised.value)
    # through the CLI: the records so far, one error line, exit 2
    proc = run_cli("bill", path, "--format", "jsonl", "--payer", "medicare")
    assert proc.returncode == 2 and len(jsonl(proc)) == 3


def test_a_json_list_element_that_is_not_utf8_is_a_record_and_the_list_goes_on(tmp_path):
    # well-formed JSON but for a byte that is not UTF-8 (a Latin-1 name): where it ends is known, so it
    # is its error record and the rest of the list is read, as a JSONL line would be (before, the run
    # stopped there and the sessions after it were lost). Malformed as well, it still stops the run.
    good = json.dumps({"session_id": "G", "payer": "medicare", "services": [{"code": "97110", "minutes": 20}]})
    latin1 = b'{"session_id": "L", "services": [], "context": {"name": "M\xfcller"}}'
    path = tmp_path / "list.json"
    path.write_bytes(b"[\n" + latin1 + b",\n" + good.encode() + b',\n{"session_id": "\xff"},\n'
                     + good.encode() + b"\n]\n")
    items = read_all(path, chunk=16)
    assert [type(i) for i in items] == [ParseError, Session, ParseError, Session]
    assert [i.line for i in items] == [2, 3, 4, 5]
    assert items[0].message == items[2].message == "not UTF-8 text"
    proc = run_cli("bill", path, "--format", "jsonl")
    assert proc.returncode == 1 and summary(proc) == (4, 2, 0, 2)
    # 20 min of 97110 -> 1 unit (CMS chart: 8-22 min)
    assert [units_of(r) for r in jsonl(proc) if "error" not in r] == [{"97110": 1}, {"97110": 1}]
    path.write_bytes(b'[{"session_id": "\xff, "services": []},\n' + good.encode() + b"]")
    with pytest.raises(UsageError):
        read_all(path)


@pytest.mark.parametrize("text, message", [
    ('[{"services": []}] x', "unexpected text after the JSON list"),
    ('{"services": []} x', "unexpected text after the JSON session"),
    ('{"services": 1} x', "unexpected text after the JSON session"),            # an object with no list in it
    ('[{"services": []}}', "expected ',' or ']'"),
    ('[{"services": []}', "expected ',' or ']'"),
    ('[{"services": []} {"services": []}]', "Extra data"),        # one element's text, and not JSON
    ('"just a string"', "must be a session object or a list"),
])
def test_json_punctuation_errors_are_usage_errors(tmp_path, text, message):
    path = tmp_path / "p.json"
    path.write_text(text)
    proc = run_cli("bill", path, "--format", "jsonl", "--payer", "medicare")
    assert proc.returncode == 2 and message in proc.stderr.decode()


def test_a_single_json_object_and_a_bom(tmp_path):
    path = tmp_path / "one.json"
    one = {"session_id": "ONE", "services": [{"code": "97110", "minutes": 20}]}
    path.write_bytes(b"\xef\xbb\xbf\n  " + json.dumps(one).encode())
    source = SessionInput(str(path), chunk=3)
    items = list(source)
    assert source.single and [i.session_id for i in items] == ["ONE"] and items[0].line == 2


@pytest.mark.parametrize("lead", [b"\xef\xbb\xbf\n", b"\xef\xbb\xbf\r\n", b"\xef\xbb\xbf  \n"])
def test_a_jsonl_first_line_of_only_a_bom_is_a_blank_line(tmp_path, lead):
    # a blank line is no session, with a BOM before it too: 2 sessions, not a third "malformed JSON" one
    path = tmp_path / "bom.jsonl"
    good = {"session_id": "G", "payer": "medicare", "services": [{"code": "97110", "minutes": 20}]}
    path.write_bytes(lead + (json.dumps(good) + "\n").encode() * 2)
    assert [type(i) for i in read_all(path)] == [Session, Session]
    path.write_bytes(lead)
    assert read_all(path) == []


def test_an_over_long_json_list_element_stops_the_run(tmp_path, monkeypatch):
    from engine import sessions
    from engine.errors import UsageError
    monkeypatch.setattr(sessions, "MAX_RECORD_BYTES", 1000)
    path = tmp_path / "long.json"
    path.write_text(json.dumps([{"services": [], "context": {"note": "x" * 2000}}, {"services": []}]))
    items = []
    with pytest.raises(UsageError):
        for item in SessionInput(str(path), chunk=64):
            items.append(item)
    assert len(items) == 1 and "longer than 1000 bytes" in items[0].message


# --- 3. CSV: a broken row is that row's problem alone ----------------------------------------------------------

HEADER = "session_id,payer,date_of_service,discipline,code,minutes,group_size"


def csv_file(tmp_path, text: str, name="s.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_stray_quote_spoils_only_its_own_row(tmp_path):
    # issue 10: one '"' swallowed the 3,776 sessions after it into one error
    rows = [f"S{n},medicare,{DATE},PT,97110,{8 + n % 30}," for n in range(3777)]
    rows[5] = f'S5,medicare,{DATE},PT,"97110,20,'          # a quoted field that runs past its line (line 7)
    items = read_all(csv_file(tmp_path, HEADER + "\n" + "\n".join(rows) + "\n"))
    assert len(items) == 3777
    assert [i.session_id for i in items] == [f"S{n}" for n in range(3777)]
    bad = items[5]
    assert isinstance(bad, ParseError) and bad.line == 7 and "quoted field" in bad.message
    assert all(type(i) is Session for n, i in enumerate(items) if n != 5)
    assert items[6].line == 8 and items[6].services[0].minutes == 8 + 6 % 30


def test_a_broken_row_makes_its_whole_session_an_error(tmp_path):
    # a session billed without one of its rows would be billed wrong (its minutes are pooled): the row's
    # session is the error record, and the next session is read as usual
    text = (HEADER + "\n" + f"A,medicare,{DATE},PT,97110,10,\n" + f'A,medicare,{DATE},PT,"97112,10,\n'
            + f"A,medicare,{DATE},PT,97140,10,\n" + f"B,medicare,{DATE},PT,97110,20,\n")
    items = read_all(csv_file(tmp_path, text))
    assert [(type(i), i.session_id) for i in items] == [(ParseError, "A"), (Session, "B")]
    assert items[0].line == 3


def test_a_cell_longer_than_the_csv_modules_limit_spoils_only_its_own_session(tmp_path):
    # the csv module refuses a cell over 128 KB by default: each of A's three rows became an error record
    # of its own (session-1, session-2, ...). A long cell is the schema's business, in one record for A.
    long = "x" * 200_000
    text = (HEADER + "\n" + f"A,medicare,{DATE},PT,97110,10,\n" + f"A,medicare,{DATE},PT,97112,10,{long}\n"
            + f"A,medicare,{DATE},PT,97140,10,\n" + f"B,medicare,{DATE},PT,97110,20,\n")
    items = read_all(csv_file(tmp_path, text))
    assert [(type(i), i.session_id) for i in items] == [(SessionError, "A"), (Session, "B")]


def test_a_row_without_session_id_is_an_error_of_its_own(tmp_path):
    # issue 10: rows with an empty session_id were merged into one session, pooling different patients'
    # minutes (two 10-minute services of different patients billed as 20 minutes -> 1 unit)
    text = (HEADER + "\n" + f",medicare,{DATE},PT,97110,10,\n" + f",medicare,{DATE},PT,97112,10,\n"
            + f"C,medicare,{DATE},PT,97110,20,\n" + f" ,medicare,{DATE},PT,97110,20,\n")
    path = csv_file(tmp_path, text)
    items = read_all(path)
    assert [type(i) for i in items] == [SessionError, SessionError, Session, SessionError]
    assert [i.line for i in items] == [2, 3, 4, 5]
    assert items[0].path == "session_id" and items[0].session_id == "session-1"
    proc = run_cli("bill", path, "--format", "jsonl")
    assert proc.returncode == 1 and summary(proc) == (4, 1, 3, 0)


def test_one_session_of_many_csv_rows_is_an_error_read_in_flat_memory(tmp_path):
    # a session holds at most 200 services (schema maxItems); 60,000 rows naming one session are its
    # error record, and reading them does not keep them all (each row kept costs some 600 bytes)
    import tracemalloc
    path = csv_file(tmp_path, HEADER + "\n" + f"A,medicare,{DATE},PT,97110,1,\n" * 60000
                    + f"B,medicare,{DATE},PT,97110,20,\n")
    tracemalloc.start()
    try:
        items = read_all(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [(type(i), i.session_id) for i in items] == [(SessionError, "A"), (Session, "B")]
    assert items[0].path == "services" and items[0].message == "has 60000 items, at most 200 are allowed"
    assert peak < 4_000_000, peak


def test_a_csv_session_with_a_byte_that_is_not_utf8_is_named_by_its_id(tmp_path):
    # the error record names the session by its id when the id itself is readable (it said session-2)
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"session_id,payer,code,minutes,provider\nA,medicare,97110,20,\nB,medicare,97110,2\xff,\n"
                     b"\xffC,medicare,97110,20,\n")
    items = read_all(path)
    assert [(type(i), i.session_id, i.line) for i in items] == [(Session, "A", 2), (ParseError, "B", 3),
                                                                 (ParseError, "session-3", 4)]
    assert items[1].message == items[2].message == "not UTF-8 text"


def test_a_repeated_csv_column_is_refused_at_the_header(tmp_path):
    path = csv_file(tmp_path, "session_id,code,minutes,minutes\nA,97110,20,30\nB,97110,20,30\n")
    proc = run_cli("bill", path, "--format", "jsonl", "--payer", "medicare")
    assert proc.returncode == 2 and proc.stdout == b""
    err = proc.stderr.decode()
    assert err.count("\n") == 1 and f"{path}:1:" in err and "'minutes'" in err and "more than once" in err


def test_csv_on_standard_input_is_sniffed(tmp_path):
    text = "session_id,payer,discipline,code,minutes\nA,medicare,PT,97110,33\nA,medicare,PT,97140,7\n"
    from_file = run_cli("bill", csv_file(tmp_path, text), "--format", "jsonl")
    proc = run_cli("bill", "-", "--format", "jsonl", stdin=text.encode())
    assert proc.returncode == 0 and proc.stdout == from_file.stdout
    # 97110 33 + 97140 7 = 40 min -> 3 units; 97110 2 full units (3 left), 97140 7 left -> the third
    assert units_of(jsonl(proc)[0]) == {"97110": 2, "97140": 1}
    # with a BOM and CRLF line ends, columns in another order
    crlf = "\ufeffminutes,code,session_id,payer\r\n20,97110,B,medicare\r\n"
    assert units_of(jsonl(run_cli("bill", "-", "--format", "jsonl", stdin=crlf.encode()))[0]) == {"97110": 1}


@pytest.mark.parametrize("first", [
    b'{"session_id": "broken", "services": [\n',                 # a malformed first line
    json.dumps({"session_id": "long", "payer": "medicare", "services": [{"code": "97110", "minutes": 20}],
                "context": {"note": "x" * 70_000}}).encode() + b"\n",   # a first line longer than a read
])
def test_jsonl_on_standard_input_is_sniffed_whatever_its_first_line(first):
    # JSONL on standard input is JSONL, as in a .jsonl file, whatever its first line: read as one JSON
    # session instead, the lines after it were lost (1 session read instead of 3) or refused
    good = [{"session_id": f"G{i}", "payer": "medicare", "date_of_service": DATE, "discipline": "PT",
             "services": [{"code": "97110", "minutes": 20}]} for i in range(2)]
    data = first + b"".join(json.dumps(g).encode() + b"\n" for g in good)
    proc = run_cli("bill", "-", "--format", "jsonl", stdin=data)
    explicit = run_cli("bill", "-", "--input-format", "jsonl", "--format", "jsonl", stdin=data)
    assert proc.stdout == explicit.stdout and summary(proc) == summary(explicit)
    records = jsonl(proc)
    assert len(records) == 3 and summary(proc)[0] == 3
    # 20 min of 97110 -> 1 unit (CMS chart: 8-22 min)
    assert [units_of(r) for r in records[1:]] == [{"97110": 1}, {"97110": 1}]
    # one JSON session written over several lines is still one session
    one = json.dumps(good[0], indent=2).encode()
    assert summary(run_cli("bill", "-", "--format", "json", stdin=one)) == (1, 1, 0, 0)
    inner = b'{"session_id": "P", "payer": "medicare",\n "services": [\n{"code": "97110", "minutes": 20}\n]}\n'
    assert summary(run_cli("bill", "-", "--format", "json", stdin=inner)) == (1, 1, 0, 0)


_SNIFF_SESSION = st.fixed_dictionaries({"session_id": st.text(min_size=1, max_size=8), "services": st.lists(
    st.fixed_dictionaries({"code": st.sampled_from(["97110", "97140"]), "minutes": st.integers(0, 60)}),
    min_size=1, max_size=3)}, optional={"context": st.dictionaries(st.text(max_size=5), st.integers(), max_size=3)})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sessions=st.lists(_SNIFF_SESSION, min_size=2, max_size=4), cut=st.integers(1, 30),
       indent=st.sampled_from([None, 0, 1, 2]), monkeypatch=st.just(None))
def test_sniffing_standard_input_tells_jsonl_from_one_json_session(sessions, cut, indent, monkeypatch):
    # JSONL whose first line is cut short (a broken record) is JSONL; one session written over several
    # lines, however indented, is one JSON session
    def sniff(data: bytes) -> str:
        stdin, sys.stdin = sys.stdin, io.TextIOWrapper(io.BytesIO(data))
        try:
            return SessionInput("-").format
        finally:
            sys.stdin = stdin
    lines = [json.dumps(s) for s in sessions]
    lines[0] = lines[0][:max(1, len(lines[0]) - cut)]
    assert sniff(("\n".join(lines) + "\n").encode()) == "jsonl"
    assert sniff(json.dumps(sessions[0], indent=indent).encode()) == "json"


def test_one_json_session_longer_than_the_sniffed_head_is_not_taken_for_jsonl():
    # the head read to sniff the format can end inside a string of a long session written over several
    # lines, one of its services on a line of its own: that is no sign of JSONL
    from engine.sessions import _breaks_at_a_record
    head = b'{\n"services": [\n{"code": "97110", "minutes": 20}\n], "context": {"note": "xxxx'
    assert not _breaks_at_a_record(head, whole=False)
    assert not _breaks_at_a_record(head + b'x"}}', whole=False)
    broken_first = b'{"session_id": "A", "services": [\n{"session_id": "B", "services": []}\n{"session_id": "C'
    assert _breaks_at_a_record(broken_first, whole=False)


def test_what_is_not_a_csv_header_is_not_sniffed_as_csv():
    from engine.sessions import _looks_like_csv
    assert _looks_like_csv(b"session_id,code,minutes\n1,97110,20\n")
    assert _looks_like_csv(b"\xef\xbb\xbf code , minutes,session_id,provider\r\nx")
    assert not _looks_like_csv(b"code,minutes\n")                          # no session_id
    assert not _looks_like_csv(b"session_id,code,minutes,patient\n")       # an unknown column
    assert not _looks_like_csv(b"session_id: A\nservices: []\n")           # YAML
    assert not _looks_like_csv(b'{"session_id": "A"}\n')


CSV_CODES = ["97110", "97112", "97140", "97530", "97150", "97161", "92507"]


@st.composite
def csv_document(draw):
    """(CSV text, what each record must be): valid sessions of 1-3 rows with unique ids (as the session
    dicts they mean), and broken rows between them, each its own error record ("row", line)."""
    columns = draw(st.permutations(["session_id", "payer", "date_of_service", "discipline", "code", "minutes",
                                    "group_size", "provider"]))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    lines, expected = [",".join(columns)], []
    for n in range(draw(st.integers(1, 8))):
        if draw(st.integers(0, 3)) == 0:
            kind = draw(st.sampled_from(["quote", "quote-id", "no-id"]))
            cells = {"session_id": f"X{n}", "payer": "medicare", "code": "97110", "minutes": "20"}
            if kind == "no-id":
                cells["session_id"] = draw(st.sampled_from(["", "  "]))
            line = ",".join(cells.get(c, "") for c in columns)
            if kind == "quote":
                line = line.replace("97110", '"97110', 1)
            elif kind == "quote-id":
                line = '"' + line
            lines.append(line)
            expected.append(("row", len(lines)))
            continue
        sid = f"S{n}"
        session = {"session_id": sid, "payer": draw(st.sampled_from(["medicare", "example-midpoint"])),
                   "date_of_service": DATE, "discipline": draw(st.sampled_from(["PT", "OT", "SLP"])), "services": []}
        size = draw(st.integers(2, 6))
        for r in range(draw(st.integers(1, 3))):
            service = {"code": draw(st.sampled_from(CSV_CODES)), "minutes": draw(st.integers(0, 75))}
            if service["code"] == "97150":
                service["group_size"] = size
            if draw(st.booleans()):
                service["provider"] = draw(st.sampled_from(["PT", "PTA", "OT"]))
            session["services"].append(service)
            cells = {k: ("" if r and draw(st.booleans()) else str(v)) for k, v in session.items()
                     if k in ("payer", "date_of_service", "discipline")}
            cells.update({k: str(v) for k, v in service.items()}, session_id=sid)
            lines.append(",".join(cells.get(c, "") for c in columns))
        expected.append(("session", session))
    return newline.join(lines) + newline, expected


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(csv_document())
def test_csv_reader_against_each_session_billed_alone(billers, tmp_path, case):
    # reference: each valid session's rows mean the session dict it was written from, billed alone; each
    # broken row is one error record at its own line; nothing else is read
    text, expected = case
    path = csv_file(tmp_path, text, "fuzz.csv")
    items = read_all(path)
    assert len(items) == len(expected), (text, items)
    biller = billers["python"]
    for item, (kind, want) in zip(items, expected):
        if kind == "row":
            assert isinstance(item, SessionError) and item.line == want, (text, item)
        else:
            assert isinstance(item, Session), (text, item)
            assert biller.bill(item, None, None) == biller.bill(parse(want), None, None)
