"""Fuzzing the session readers and the session checks (engine/sessions.py), and the Medicare unit
invariants (domain.md §3.1, §3.3) on generated sessions.

- Random bytes as a .jsonl and as a .yaml file through `python -m engine bill` (a subprocess, so a crash
  shows as what a user would see): never a traceback, exit code 0, 1 or 2, and for JSONL one record per
  non-empty input line.
- Random JSON-ish session dicts through engine.sessions.parse_session and the billers (in process): never
  an exception, always a result or an error record; and `fast_services` never accepts what
  schemas/session.schema.json rejects.
- Generated valid Medicare sessions: total_timed_units == chart(total_timed_minutes); each 15-minute timed
  code gets at least its full units, and no code more than one unit above them.

Hypothesis runs derandomized (the same examples every run), with modest example counts.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from engine.sessions import fast_services, parse_session
from engine.yamlload import Located

from conftest import ENGINES

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60
SESSION_SCHEMA = Draft202012Validator(json.loads((ROOT / "schemas" / "session.schema.json").read_text("utf-8")))

CLI_FUZZ = settings(max_examples=20, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
IN_PROCESS = settings(max_examples=250, deadline=None, derandomize=True,
                      suppress_health_check=[HealthCheck.too_slow])

# domain.md §5.1: the 15-minute timed codes (rules/medicare.yaml `timed_15`)
TIMED_15 = ("97032", "97033", "97034", "97035", "97036", "97110", "97112", "97113", "97116", "97124",
            "97140", "97530", "97533", "97535", "97537", "97542", "97750", "97755", "97760", "97761",
            "97763")
# one unit whatever the minutes, outside the pool (domain.md §5.3, §5.4, §8)
ONE_UNIT = ("97010", "97012", "97016", "G0283", "92507", "97161", "97162", "97163", "92521")
GROUP = "97150"                                          # one unit, outside the pool (domain.md §6)
SAMPLE_GOOD = {"session_id": "F-1", "payer": "medicare", "date_of_service": "2026-03-02", "discipline": "PT",
               "services": [{"code": "97110", "minutes": 20}]}


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=ROOT, capture_output=True,
                          timeout=TIMEOUT)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def check_records(stdout: bytes) -> list:
    """Every jsonl output line is a result or an error record."""
    records = [json.loads(line) for line in stdout.decode("utf-8").splitlines()]
    for r in records:
        assert isinstance(r, dict) and "session_id" in r
        assert set(r) == {"session_id", "error"} or ("lines" in r and "warnings" in r), r
    return records


# --- random bytes through the CLI ----------------------------------------------------------------------

jsonl_line = st.one_of(
    st.binary(max_size=60),
    st.just(json.dumps(SAMPLE_GOOD).encode()),
    st.just(json.dumps(SAMPLE_GOOD).encode()[:37]),                      # cut off mid-record
    st.sampled_from([b"", b"   ", b"\r", b"\t", b"\xef\xbb\xbf", b"{}", b"[]", b"null", b"0", b'"x"',
                     b'{"services": []}', b'{"services": [{"code": "97110", "minutes": -1}]}',
                     b"\xff\xfe\xfd", b"{\"payer\": \"medicare\"", b"\x00", b"\x1b[2J", b"\\u0000"]),
)
jsonl_bytes = st.one_of(st.binary(max_size=400), st.lists(jsonl_line, max_size=8).map(b"\n".join))


@CLI_FUZZ
@given(data=jsonl_bytes)
def test_random_bytes_as_jsonl(fuzz_dir, data):
    path = fuzz_dir / "random.jsonl"
    path.write_bytes(data)
    proc = run_cli("bill", path, "--format", "jsonl")
    assert b"Traceback" not in proc.stderr, proc.stderr.decode("utf-8", "replace")[-3000:]
    assert proc.returncode in (0, 1, 2), proc.returncode
    if proc.returncode != 2:
        records = check_records(proc.stdout)
        # the reader splits on b"\n" and skips lines that are only ASCII whitespace (bytes.strip)
        non_empty = [line for line in data.split(b"\n") if line.strip()]
        assert len(records) == len(non_empty)


yaml_line = st.one_of(
    st.binary(max_size=30),
    st.sampled_from([b"payer: medicare", b"session_id: Y-1", b"services:", b"  - code: '97110'",
                     b"    minutes: 20", b"  - code: 97140", b"    minutes: 7", b"discipline: OT",
                     b"date_of_service: 2026-03-02", b"date_of_service: 2026-02-30", b"- payer: medicare",
                     b"  services: [{code: '97110', minutes: 30}]", b"&a x", b"*a", b"<<: *a", b"? [a]",
                     b"!!python/name:os.system", b"!!binary aGVsbG8=", b"!custom x", b"%YAML 1.1", b"---",
                     b"...", b"- ", b"{", b"[", b"\t", b"key: value", b"key: value", b"minutes: .nan",
                     b"minutes: 1e400", b"\xff", b"'unterminated", b"context: {a: {b: {c: 1}}}"]),
)
yaml_bytes = st.one_of(st.binary(max_size=300), st.lists(yaml_line, max_size=10).map(b"\n".join))


@CLI_FUZZ
@given(data=yaml_bytes)
def test_random_bytes_as_yaml(fuzz_dir, data):
    path = fuzz_dir / "random.yaml"
    path.write_bytes(data)
    proc = run_cli("bill", path, "--format", "jsonl")
    assert b"Traceback" not in proc.stderr, proc.stderr.decode("utf-8", "replace")[-3000:]
    assert proc.returncode in (0, 1, 2), proc.returncode
    if proc.returncode == 2:
        # an input that cannot be read at all: a one-line error, nothing billed
        assert proc.stderr.decode("utf-8", "replace").startswith("error: ")
        assert proc.stdout == b""
    else:
        assert len(check_records(proc.stdout)) >= 1


# --- random JSON-ish session dicts, in process --------------------------------------------------------

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 70), 2 ** 70),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
json_any = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)


# Schema-valid values of every field (schemas/session.schema.json) ...
CODE_RE = r"([0-9]{4}[0-9A-Z]|[A-Z][0-9]{4})"
valid_code = st.one_of(st.sampled_from(TIMED_15 + ONE_UNIT + (GROUP, "97129", "97130", "97545", "97111")),
                       st.integers(10000, 99999), st.from_regex(CODE_RE, fullmatch=True))
valid_service = st.fixed_dictionaries(
    {"code": valid_code, "minutes": st.one_of(st.integers(0, 90), st.integers(0, 90), st.integers(0, 1440))},
    optional={"group_size": st.integers(0, 1000), "provider": st.sampled_from(["PT", "PTA", "OT", "OTA", "SLP"])})
valid_session = st.fixed_dictionaries(
    {"services": st.lists(valid_service, min_size=1, max_size=4),
     "payer": st.sampled_from(["medicare", "medicare", "medicare", "example-midpoint", "example-full-unit",
                               "example-unit-limits", "nobody", "../../etc/passwd", "m" * 64])},
    optional={"session_id": st.one_of(st.text(min_size=1, max_size=128), st.integers()),
              # pattern-valid; 2026-02-30 is no calendar date (a check after the schema)
              "date_of_service": st.one_of(st.dates().map(str), st.just("2026-02-30")),
              "discipline": st.sampled_from(["PT", "OT", "SLP"]),
              "context": st.dictionaries(st.text(max_size=4), json_any, max_size=3)})

# ... and values each field must refuse (or that sit on a boundary), used to break one field at a time.
BAD = {
    "session_id": st.one_of(st.just(""), st.just("x" * 129), st.just("x" * 128), json_any),
    "payer": st.one_of(st.just(""), st.just("m" * 65), json_any),
    "date_of_service": st.one_of(st.sampled_from(["2026-3-2", "2026-03-02\n", "2026-03-02T10:00", "２０２６-03-02",
                                                  "20260302"]), json_any),
    "discipline": st.one_of(st.sampled_from(["pt", "", "ST", "PT ", ["PT"], {"PT": 1}]), json_any),
    "context": st.one_of(json_any, st.just({f"k{i}": i for i in range(101)}), st.just({f"k{i}": i for i in range(100)})),
    "services": st.one_of(st.just([]), json_any,
                          st.builds(lambda s, n: [s] * n, valid_service, st.integers(199, 201))),   # maxItems 200
}
BAD_SERVICE = {
    "code": st.one_of(st.sampled_from(["9711", "971100", "97110\n", "x1234", "９７１１０", "G028", 9999, 100000, True,
                                       97110.0, -97110]), json_any),
    "minutes": st.one_of(st.sampled_from([-1, 1441, 1440, 20.0, 20.5, "20", True, False, None]), json_any),
    "group_size": st.one_of(st.sampled_from([-1, 1001, 1000, 2.0, "3", True]), json_any),
    "provider": st.one_of(st.sampled_from(["pt", "MD", "", "PT ", ["PT"], {"PT": 1}]), json_any),
    "modifiers": st.one_of(st.sampled_from([["59"], ["GP"], ["CQ"], ["5"], ["59x"], ["xe"], [59], [5], ["59", "59"],
                                            ["59", "XE", "XS", "XP", "XU"], [["59"]], [{"59": 1}], "59", None]),
                           json_any),
}


@st.composite
def session_dicts(draw):
    """A valid session with none, one or two fields broken (dropped, retyped, out of range, unknown key)."""
    data = draw(valid_session)
    for _ in range(draw(st.integers(0, 2))):
        where = draw(st.sampled_from(["session", "session", "service", "service", "extra", "drop"]))
        if where == "drop":
            data.pop(draw(st.sampled_from(["services", "payer", "session_id", "date_of_service"])), None)
        elif where == "session":
            key = draw(st.sampled_from(sorted(BAD)))
            data[key] = draw(BAD[key])
        elif where == "service" and isinstance(data.get("services"), list) and data["services"] \
                and isinstance(data["services"][0], dict):
            service = dict(draw(st.sampled_from(data["services"])))
            key = draw(st.sampled_from(sorted(BAD_SERVICE) + ["drop"]))
            if key == "drop":
                service.pop(draw(st.sampled_from(["code", "minutes"])), None)
            else:
                service[key] = draw(BAD_SERVICE[key])
            data["services"] = data["services"] + [service]
        elif where == "extra":
            target = data
            if draw(st.booleans()) and isinstance(data.get("services"), list) and data["services"] \
                    and isinstance(data["services"][0], dict):
                target = data["services"][0] = dict(data["services"][0])
            target[draw(st.text(min_size=1, max_size=8))] = draw(json_any)
    return data


session_st = st.one_of(session_dicts(), session_dicts(), session_dicts(), json_any)


def expected_id(data) -> str:
    sid = data.get("session_id") if isinstance(data, dict) else None
    if (type(sid) is str and 1 <= len(sid) <= 128) or type(sid) is int:
        return str(sid)
    return "session-1"


@pytest.mark.parametrize("engine", ENGINES)
@IN_PROCESS
@given(data=session_st)
@example(data={"payer": "medicare", "discipline": ["PT"], "services": [{"code": "97110", "minutes": 20}]})
@example(data={"payer": "medicare", "services": [{"code": "97110", "minutes": 20, "provider": {"PT": 1}}]})
def test_parse_and_bill_never_raise(billers, engine, data):
    """Any JSON value as a session: parse_session and Biller.bill return, never raise; the outcome is a
    result or an error record, under the session's own id (or session-1 when it has no usable id)."""
    session = parse_session(data, Located(data, {(): 1}, "<fuzz>"), (), 1)
    record = billers[engine].bill(session, None, None)
    assert isinstance(record, dict)
    if "error" in record:
        assert set(record) == {"session_id", "error"} and isinstance(record["error"], str) and record["error"]
    else:
        assert {"payer", "method", "lines", "unbilled", "total_timed_minutes", "total_timed_units",
                "total_units", "warnings", "trace"} <= set(record)
        assert SESSION_SCHEMA.is_valid(data), "billed a session the schema rejects"
    assert record["session_id"] == expected_id(data)


def hashable_enums(data) -> bool:
    """discipline/provider values that can be looked up in a set (see test_parse_and_bill_never_raise for
    the others): keeps this property about looseness, not crashes."""
    if not isinstance(data, dict):
        return True
    values = [data.get("discipline")]
    services = data.get("services")
    if isinstance(services, list):
        values += [s.get("provider") for s in services if isinstance(s, dict)]
    return not any(isinstance(v, (list, dict)) for v in values)


@IN_PROCESS
@given(data=session_st.filter(hashable_enums))
def test_fast_path_is_never_looser_than_the_schema(data):
    if fast_services(data) is not None:
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"[:200] for e in SESSION_SCHEMA.iter_errors(data)]
        assert errors == [], "fast_services accepted a session the schema rejects"


def test_fast_path_accepts_the_common_case():
    # the fast path is worth having only if it takes ordinary sessions (and is then checked above)
    assert fast_services(SAMPLE_GOOD) is not None
    assert fast_services({"services": [{"code": 97110, "minutes": 0, "group_size": 3, "provider": "PTA"}]}) is not None
    assert fast_services({"services": [{"code": "97110", "minutes": 1441}]}) is None      # schema maximum 1440
    assert fast_services({"services": []}) is None                                         # schema minItems 1


# --- Medicare invariants on valid sessions ------------------------------------------------------------

def chart(minutes: int) -> int:
    """domain.md §3.1 item 2, closed form: 0 below 8 minutes, else floor((m + 7) / 15)."""
    return 0 if minutes < 8 else (minutes + 7) // 15


@st.composite
def medicare_service(draw):
    kind = draw(st.sampled_from(["timed", "timed", "timed", "one", "group"]))
    if kind == "timed":
        # a few codes often, so that duplicates (merged into one line) are common
        code = draw(st.sampled_from(TIMED_15[:4]) | st.sampled_from(TIMED_15))
    elif kind == "one":
        code = draw(st.sampled_from(ONE_UNIT))
    else:
        code = GROUP
    service = {"code": code, "minutes": draw(st.integers(0, 130))}
    if code == GROUP:
        service["group_size"] = draw(st.integers(2, 8))
    if draw(st.booleans()):
        service["provider"] = draw(st.sampled_from(["PT", "PTA", "OT", "OTA", "SLP"]))
    return service


def _one_group_size(services: list) -> list:
    # entries of one code that disagree on group_size are an error for the session (design.md §4): the
    # group entries of a valid session share the first one's size
    size = next((s["group_size"] for s in services if "group_size" in s), None)
    return [dict(s, group_size=size) if "group_size" in s else s for s in services]


medicare_session = st.fixed_dictionaries(
    {"session_id": st.just("M-1"), "payer": st.just("medicare"),
     "services": st.lists(medicare_service(), min_size=1, max_size=8).map(_one_group_size)},
    optional={"discipline": st.sampled_from(["PT", "OT", "SLP"]), "date_of_service": st.just("2026-03-02")})


@pytest.mark.parametrize("engine", ENGINES)
@settings(max_examples=150, deadline=None, derandomize=True)
@given(data=medicare_session)
def test_medicare_invariants(billers, engine, data):
    session = parse_session(data, Located(data, {(): 1}, "<fuzz>"), (), 1)
    result = billers[engine].bill(session, None, None)
    assert "error" not in result, result
    merged: dict = {}
    for s in data["services"]:
        merged[s["code"]] = merged.get(s["code"], 0) + s["minutes"]          # duplicates merged (§3.4)
    units: dict = {}
    sets: dict = {}
    for line in result["lines"]:
        units[line["code"]] = units.get(line["code"], 0) + line["units"]
        sets.setdefault(line["code"], []).append(tuple(line["modifiers"]))
    # one line per code, or one per code and modifier set (design.md §5): a code's lines differ in modifiers
    assert all(len(set(mods)) == len(mods) for mods in sets.values()), sets
    timed_minutes = sum(m for code, m in merged.items() if code in TIMED_15)
    assert result["total_timed_minutes"] == timed_minutes
    assert result["total_timed_units"] == chart(timed_minutes)                 # §3.1 items 2-3, 6
    assert sum(units.get(code, 0) for code in merged if code in TIMED_15) == result["total_timed_units"]
    for code, m in merged.items():
        if code in TIMED_15 and m >= 15:
            assert units.get(code, 0) >= m // 15, (code, m, units)             # §3.1 item 4: floor per code
        assert units.get(code, 0) <= m // 15 + 1, (code, m, units)             # §3.3 step 3: at most one more
    for code in merged:
        if code in ONE_UNIT or code == GROUP:
            assert units.get(code) == 1, (code, units)                          # untimed / group: one unit
    assert set(units) <= set(merged)
