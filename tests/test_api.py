"""The library API (design.md §7) against the command: every example, golden and scenario session billed
through RuleBook equals, as data, what `python -m engine ... --format json` prints for it, on both
engines; compare, explain and payers too; usage errors raise PayrulesError with the command's message,
sessions it cannot bill are the command's error records; bill_many keeps order and counts and reads its
input lazily; a RuleBook shared by threads never drives one rule network from two threads at once.

Installed, the package is payer_rules (tests/test_install.py checks that); in a checkout it is the
folder engine/, so the same code is imported here as `engine`.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import engine as payer_rules
from conftest import ENGINES
from engine import api
from engine.network import DurableNetwork, PythonNetwork
from engine.yamlload import load_text
from test_medicare_golden import GOLDEN

REPO = Path(__file__).resolve().parent.parent


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def cli_json(*args: str):
    run = cli(*args)
    assert run.returncode in (0, 1), run.stderr
    return json.loads(run.stdout)


def cli_error(*args: str) -> str:
    """The one `error: ` line of a command that stops with exit code 2, without the `error: `."""
    run = cli(*args)
    assert run.returncode == 2 and run.stdout == "", (run.returncode, run.stdout, run.stderr)
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    return lines[0].removeprefix("error: ")


def without_location(records: list, path: Path) -> list:
    """The command's records with the `FILE:LINE: ` before each mistake of a session it could not read
    taken off (the API's sessions come from no file)."""
    prefix = re.compile(re.escape(str(path)) + r":\d+: ")
    return [{**r, "error": prefix.sub("", r["error"])} if "error" in r else r for r in records]


def yaml_data(path: Path):
    return load_text(path.read_text(encoding="utf-8"), str(path)).data


def example_sessions() -> list:
    """examples/: three one-session YAML files and a JSONL batch, in the order the command reads them."""
    sessions = [yaml_data(p) for p in sorted((REPO / "examples").glob("*.yaml"))]
    lines = (REPO / "examples" / "batch.jsonl").read_text(encoding="utf-8").splitlines()
    return sessions + [json.loads(line) for line in lines if line.strip()]


def scenario_sessions() -> list:
    """The session of every scenario of the bundled *.tests.yaml, with the scenario's payer and date
    written into it (what `payrules test` bills it with)."""
    out = []
    for path in sorted((REPO / "rules").rglob("*.tests.yaml")):
        doc = yaml_data(path)
        for item in doc["scenarios"]:
            for given in [item["session"]] if "session" in item else [step["session"] for step in item["patient"]]:
                session = dict(given, payer=item.get("payer", doc["payer"]))    # (a patient's: each alone)
                if item.get("date"):
                    session["date_of_service"] = item["date"]
                out.append(session)
    return out


GOLDEN_SESSIONS = [param.values[0] for param in GOLDEN]
# sessions the command cannot bill, each an error record in its place: not a mapping, schema errors,
# an unknown payer of its own, no payer at all, a bad date
BAD = [5, "97110", None, [], {"payer": "medicare", "services": []},
       {"payer": "medicare", "disipline": "PT", "services": [{"code": "97110", "minuts": 30}]},
       {"session_id": "S-bad", "payer": "acme", "services": [{"code": "97110", "minutes": 30}]},
       {"services": [{"code": "97110", "minutes": 30}]},
       {"payer": "medicare", "date_of_service": "2026-02-30", "services": [{"code": "97110", "minutes": 30}]}]


def corpus() -> list:
    """Every example and scenario session (each has its payer), the bad ones mixed in, and the golden
    sessions with Medicare written in: most without a session_id, so default ids are compared too."""
    good = example_sessions() + scenario_sessions() + [dict(s, payer="medicare") for s in GOLDEN_SESSIONS]
    out = []
    for i, session in enumerate(good):
        out.append(session)
        if i % 7 == 3 and BAD[len(out) % len(BAD)] is not None:
            out.append(BAD[len(out) % len(BAD)])
    return out + BAD


@pytest.fixture(scope="module")
def books():
    made = {engine: payer_rules.RuleBook(engine=engine) for engine in ENGINES}
    yield made
    for book in made.values():
        book.close()


@pytest.fixture(params=ENGINES)
def engine_name(request):
    return request.param


# --- results equal the command's ------------------------------------------------------------------------

def test_corpus_holds_every_kind():
    sessions = corpus()
    # 29 scenario sessions + example-medicare-fees's 8, example-visit-limits's 10 and example-authorizations's 15
    # (their patients' sessions)
    assert len(example_sessions()) == 6 and len(scenario_sessions()) == 29 + 8 + 10 + 15 and len(GOLDEN_SESSIONS) >= 20
    assert all(bad in sessions for bad in BAD)


def test_bill_many_equals_the_command(books, engine_name, tmp_path):
    sessions = corpus()
    path = tmp_path / "sessions.json"
    path.write_text(json.dumps(sessions), encoding="utf-8")
    expected = without_location(cli_json("bill", path, "--format", "json", "--engine", engine_name), path)
    got = list(books[engine_name].bill_many(sessions))
    assert len(got) == len(sessions) == len(expected)
    for number, (want, have) in enumerate(zip(expected, got), 1):
        assert have == want, number
    # the default ids are by position, as the command numbers the sessions of a list
    assert got[len(sessions) - 1]["session_id"] == f"session-{len(sessions)}"
    assert sum("error" in r for r in got) >= len(BAD)


def test_bill_each_equals_the_command(books, engine_name, tmp_path):
    """bill() of one session is the command's record of it; a session with no session_id is session-1,
    as the command names the session of a file that holds one session."""
    sessions = corpus()
    path = tmp_path / "sessions.json"
    path.write_text(json.dumps(sessions), encoding="utf-8")
    expected = without_location(cli_json("bill", path, "--format", "json", "--engine", engine_name), path)
    for number, (session, want) in enumerate(zip(sessions, expected), 1):
        have = books[engine_name].bill(session)
        if want["session_id"] == f"session-{number}":
            assert have["session_id"] == "session-1"
            want = {**want, "session_id": "session-1"}
        assert have == want, number


@pytest.mark.parametrize("name", ["pt-evaluation.yaml", "group-session.yaml", "ot-session.yaml"])
def test_bill_of_an_example_file(books, engine_name, name):
    """A file of one session prints one object: the API's result of that session."""
    path = REPO / "examples" / name
    assert books[engine_name].bill(yaml_data(path)) == cli_json("bill", path, "--engine", engine_name)


def test_session_without_id_is_session_1_as_in_a_one_session_file(books, tmp_path):
    session = {"payer": "medicare", "discipline": "PT", "services": [{"code": "97110", "minutes": 38}]}
    path = tmp_path / "one.json"
    path.write_text(json.dumps(session), encoding="utf-8")
    result = books[ENGINES[0]].bill(session)
    assert result["session_id"] == "session-1"
    assert result == cli_json("bill", path, "--engine", ENGINES[0])
    assert result["lines"][0]["units"] == 3                 # 38 min: 38-52 is 3 units (domain.md §3.1)


def test_payer_and_date_options_equal_the_command(books, engine_name, tmp_path):
    """payer= and date= are --payer and --date: golden sessions (no payer of their own) under Medicare,
    and the scenario sessions under example-midpoint on one date."""
    path = tmp_path / "golden.json"
    path.write_text(json.dumps(GOLDEN_SESSIONS), encoding="utf-8")
    book = books[engine_name]
    assert list(book.bill_many(GOLDEN_SESSIONS, payer="medicare")) == cli_json(
        "bill", path, "--payer", "medicare", "--engine", engine_name)
    sessions = scenario_sessions()
    path.write_text(json.dumps(sessions), encoding="utf-8")
    got = list(book.bill_many(sessions, payer="example-midpoint", date="2026-03-02"))
    assert got == without_location(cli_json("bill", path, "--payer", "example-midpoint", "--date", "2026-03-02",
                                             "--engine", engine_name), path)
    assert {r.get("payer") for r in got} <= {"example-midpoint", None}


def with_ids(sessions: list) -> list:
    """compare() and explain() take one session, numbered 1: give every session an id of its own."""
    return [dict(s, session_id=s.get("session_id", f"S-{i}")) if isinstance(s, dict) else s
            for i, s in enumerate(sessions)]


def test_compare_equals_the_command(books, engine_name, tmp_path):
    sessions = [s for s in with_ids(corpus()) if isinstance(s, dict)]
    path = tmp_path / "sessions.json"
    path.write_text(json.dumps(sessions), encoding="utf-8")
    payers = ["medicare", "example-midpoint", "example-full-unit"]
    expected = cli_json("compare", path, "--payers", ",".join(payers), "--format", "json", "--engine", engine_name)
    got = [books[engine_name].compare(s, payers) for s in sessions]
    assert len(got) == len(expected)
    for want, have in zip(expected, got):
        for result in want["results"].values():
            if "error" in result:
                result["error"] = re.sub(re.escape(str(path)) + r":\d+: ", "", result["error"])
        assert have == want
    assert any(c["differs"] for c in got)       # the payers do bill differently somewhere


def test_explain_equals_the_command(books, engine_name, tmp_path):
    sessions = [s for s in with_ids(corpus()) if isinstance(s, dict)]
    path = tmp_path / "sessions.json"
    path.write_text(json.dumps(sessions), encoding="utf-8")
    expected = without_location(cli_json("explain", path, "--format", "json", "--engine", engine_name), path)
    got = [books[engine_name].explain(s) for s in sessions]
    assert got == expected
    assert sum("firings" in doc for doc in got) > 30


def test_explain_why_not_equals_the_command(books, engine_name):
    path = REPO / "examples" / "pt-evaluation.yaml"
    want = cli_json("explain", path, "--format", "json", "--why-not", "group-size", "--why-not", "modifier-go",
                    "--engine", engine_name)
    have = books[engine_name].explain(yaml_data(path), why_not=["group-size", "modifier-go"])
    assert have == want
    assert [w["rule"] for w in have["why_not"]] == ["group-size", "modifier-go"]


def test_payers_equal_the_command(books):
    assert books[ENGINES[0]].payers() == cli_json("payers", "--format", "json")


def acme(tmp_path: Path, body: str = "") -> Path:
    tree = tmp_path / "my-rules"
    tree.mkdir()
    (tree / "acme.yaml").write_text(
        "payer: acme\nname: Acme\nextends: medicare\n" + body, encoding="utf-8")
    return tree


def test_extra_rules_tree(tmp_path):
    tree = acme(tmp_path)
    book = payer_rules.RuleBook(rules=(tree,))
    assert book.payers() == cli_json("payers", "--format", "json", "--rules", tree)
    assert "acme" in [p["id"] for p in book.payers()]
    session = {"payer": "acme", "discipline": "PT", "services": [{"code": "97110", "minutes": 38}]}
    assert book.bill(session)["lines"][0]["units"] == 3     # Medicare's method, inherited: 38 min = 3 units
    assert payer_rules.RuleBook(rules=str(tree)).payers() == book.payers()     # one path alone


# --- errors: raised with the command's message, or the command's error record ----------------------------

def test_broken_rule_file_raises_at_construction_with_the_commands_message(tmp_path):
    tree = acme(tmp_path, "method: {name: cms_8_minute, unit_minutes: \"15\"}\n")
    message = cli_error("payers", "--rules", tree)
    with pytest.raises(payer_rules.PayrulesError) as caught:
        payer_rules.RuleBook(rules=[tree])
    assert str(caught.value) == message
    assert "acme.yaml:4" in message         # the line of unit_minutes


def test_missing_rules_tree_raises(tmp_path):
    with pytest.raises(payer_rules.PayrulesError) as caught:
        payer_rules.RuleBook(rules=[tmp_path / "nowhere"])
    assert str(caught.value) == cli_error("payers", "--rules", tmp_path / "nowhere")


def test_unknown_payer_option_raises_with_the_commands_message(books):
    message = cli_error("bill", "examples/pt-evaluation.yaml", "--payer", "medicar")
    assert "did you mean 'medicare'" in message
    for call in (lambda b: b.bill({}, payer="medicar"), lambda b: b.bill_many([], payer="medicar"),
                 lambda b: b.explain({}, payer="medicar")):
        with pytest.raises(payer_rules.PayrulesError) as caught:
            call(books[ENGINES[0]])
        assert str(caught.value) == message


def test_unknown_compare_payer_raises_with_the_commands_message(books):
    message = cli_error("compare", "examples/pt-evaluation.yaml", "--payers", "medicare,acme")
    with pytest.raises(payer_rules.PayrulesError) as caught:
        books[ENGINES[0]].compare({}, ["medicare", "acme"])
    assert str(caught.value) == message


def test_unknown_why_not_rule_raises_with_the_commands_message(books):
    message = cli_error("explain", "examples/pt-evaluation.yaml", "--why-not", "timed-pol")
    with pytest.raises(payer_rules.PayrulesError) as caught:
        books[ENGINES[0]].explain(yaml_data(REPO / "examples" / "pt-evaluation.yaml"), why_not=["timed-pol"])
    assert str(caught.value) == message


# An argument the command's parser refuses is `error: payrules CMD: argument --NAME: MESSAGE (see ...)`;
# the API's message for the same value of the keyword NAME is `NAME: MESSAGE`.
@pytest.mark.parametrize("option, value", [("date", "2026-13-01"), ("date", "March 2"), ("engine", "drools")])
def test_bad_argument_raises_with_the_parsers_message(books, option, value):
    line = cli_error("bill", "examples/pt-evaluation.yaml", f"--{option}", value)
    with pytest.raises(payer_rules.PayrulesError) as caught:
        if option == "engine":
            payer_rules.RuleBook(engine=value)
        else:
            books[ENGINES[0]].bill({}, date=value)
    name, _, message = str(caught.value).partition(": ")
    assert name == option
    assert line == f"payrules bill: argument --{option}: {message} (see payrules bill --help)"


def test_a_date_object_is_its_iso_text(books):
    import datetime
    session = {"payer": "medicare", "discipline": "PT", "services": [{"code": "97110", "minutes": 20}]}
    book = books[ENGINES[0]]
    assert book.bill(session, date=datetime.date(2026, 3, 2)) == book.bill(session, date="2026-03-02")
    dated = dict(session, date_of_service=datetime.date(2026, 3, 2))
    assert book.bill(dated) == book.bill(dict(session, date_of_service="2026-03-02"))


def test_error_records_are_the_commands(books, tmp_path):
    """An invalid session and an unknown payer of the session's own: the record, with the command's
    message (less its FILE:LINE:), never an exception. All of a record's text is the command's."""
    book = books[ENGINES[0]]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(BAD), encoding="utf-8")
    expected = without_location(cli_json("bill", path, "--format", "json"), path)
    got = [book.bill(s) for s in BAD]
    assert [{**r, "session_id": None} for r in got] == [{**r, "session_id": None} for r in expected]
    assert all(set(r) == {"session_id", "error"} for r in got)
    assert got[0] == {"session_id": "session-1", "error": "a session must be a mapping"}
    assert got[6] == {"session_id": "S-bad", "error": "unknown payer 'acme'; known: example-authorizations, "
                                                      "example-full-unit, "
                                                      "example-medicare-fees, example-midpoint, example-ncci-bypass, "
                                                      "example-unit-limits, example-visit-limits, medicare"}


def test_values_json_cannot_write_are_error_records(books):
    book = books[ENGINES[0]]
    assert book.bill({"session_id": "S-1", "payer": "medicare", "services": {("97110",)}}) == {
        "session_id": "S-1", "error": "not JSON data: set is not a JSON value"}
    loop: list = []
    loop.append(loop)
    assert book.bill(loop)["error"] == "not JSON data: Circular reference detected"
    # keys that are numbers are their text, as in JSON; one that is then repeated is the command's error
    record = book.bill({"payer": "medicare", "services": [{"code": "97110", "minutes": 30, 5: 1, "5": 2}]})
    assert record == {"session_id": "session-1", "error": "services[0]: duplicate key '5'"}


# --- bill_many: order, counts, laziness ---------------------------------------------------------------------

def test_bill_many_keeps_order_and_counts_with_bad_elements(books):
    good = {"payer": "medicare", "discipline": "PT", "services": [{"code": "97110", "minutes": 38}]}
    items = [good, 7, dict(good, session_id="B"), None, "x", {"payer": "medicare"}, dict(good, session_id="E")]
    got = list(books[ENGINES[0]].bill_many(items))
    assert [r["session_id"] for r in got] == ["session-1", "session-2", "B", "session-4", "session-5",
                                              "session-6", "E"]
    assert ["error" in r for r in got] == [False, True, False, True, True, True, False]
    assert got[5]["error"] == "missing required key 'services'"


def test_bill_many_reads_a_generator_lazily(books):
    pulled = []

    def sessions():
        for minutes in (8, 23, 38, 53):
            pulled.append(minutes)
            yield {"payer": "medicare", "discipline": "PT", "services": [{"code": "97110", "minutes": minutes}]}
    results = books[ENGINES[0]].bill_many(sessions())
    assert pulled == []                         # nothing read before the first result is asked for
    first = next(results)
    assert pulled == [8] and first["total_units"] == 1
    # chart rows (domain.md §3.1): 23-37 = 2, 38-52 = 3, 53-67 = 4
    assert [r["total_units"] for r in results] == [2, 3, 4] and pulled == [8, 23, 38, 53]


@pytest.mark.parametrize("value", [{"payer": "medicare"}, "sessions.json", b"x", 5, None])
def test_bill_many_refuses_what_is_not_an_iterable_of_sessions_at_once(books, value):
    with pytest.raises(payer_rules.PayrulesError, match="^sessions: "):
        books[ENGINES[0]].bill_many(value)


def test_options_are_checked_before_the_first_result(books):
    with pytest.raises(payer_rules.PayrulesError):
        books[ENGINES[0]].bill_many(iter([]), date="never")


# --- results are the caller's; the module-level bill ---------------------------------------------------------

def test_results_and_inputs_are_not_shared(books):
    book = books[ENGINES[0]]
    session = {"payer": "medicare", "discipline": "PT", "context": {"k": [1]},
               "services": [{"code": "97110", "minutes": 38}, {"code": "97140", "minutes": 8}]}
    snapshot = json.loads(json.dumps(session))
    first = book.bill(session)
    kept = json.loads(json.dumps(first))
    first["lines"][0]["modifiers"].append("XX")
    first["lines"][0]["rules"].clear()
    first["warnings"].append({})
    first["trace"][0]["facts"].append("y")
    assert book.bill(session) == kept
    assert session == snapshot


def test_module_bill_is_a_cached_default_rulebook(books):
    session = {"payer": "medicare", "discipline": "OT", "services": [{"code": "97110", "minutes": 22},
                                                                    {"code": "97140", "minutes": 10}]}
    result = payer_rules.bill(session)
    assert result == books[ENGINES[0]].bill(session)
    # CMS: 32 min -> 2 units; 97110 one full unit (7 left), 97140 10 left gets the other (domain.md §3.3)
    assert [(l["code"], l["units"], l["modifiers"]) for l in result["lines"]] == [("97110", 1, ["GO"]),
                                                                                 ("97140", 1, ["GO"])]
    before = api._book.cache_info().hits
    payer_rules.bill(session, payer="medicare")
    assert api._book.cache_info().hits == before + 1
    with pytest.raises(payer_rules.PayrulesError, match="^engine: invalid choice"):
        payer_rules.bill(session, engine=["durable"])


def test_close_and_reuse(engine_name):
    session = {"payer": "medicare", "discipline": "PT", "services": [{"code": "97110", "minutes": 38}]}
    with payer_rules.RuleBook(engine=engine_name) as book:
        first = book.bill(session)
    assert book.bill(session) == first          # closed: its networks are built again


def test_public_api_is_typed_and_documented():
    assert (REPO / "engine" / "py.typed").is_file()
    assert payer_rules.PayrulesError.__doc__ and issubclass(payer_rules.PayrulesError, Exception)
    for name in ("RuleBook", "bill", "PayrulesError"):
        assert name in payer_rules.__all__ and getattr(payer_rules, name) is getattr(api, name)
    functions = [payer_rules.bill] + [getattr(payer_rules.RuleBook, n) for n in
                                      ("__init__", "bill", "bill_many", "compare", "explain", "payers", "close")]
    for function in functions:
        assert function.__doc__ or function.__name__ == "__init__", function
        assert "return" in function.__annotations__, function
    assert payer_rules.RuleBook.__doc__


# --- threads ------------------------------------------------------------------------------------------------

def test_threads_share_a_rulebook_one_network_call_at_a_time(monkeypatch, engine_name):
    """Eight threads bill through one RuleBook: every result is the one-thread result, and no rule network
    (a durable handle) is ever run by two threads at once (shared/durable-rules-notes.md §7.2)."""
    active, most = [0], [0]
    guard = threading.Lock()
    for cls in (DurableNetwork, PythonNetwork):
        original = cls.run

        def run(self, facts, original=original):
            with guard:
                active[0] += 1
                most[0] = max(most[0], active[0])
            time.sleep(0.0005)          # holds the network long enough for another thread to try
            try:
                return original(self, facts)
            finally:
                with guard:
                    active[0] -= 1
        monkeypatch.setattr(cls, "run", run)
    book = payer_rules.RuleBook(engine=engine_name)
    book._biller.remember = False       # every session through the network, not the per-line memo
    sessions = [{"session_id": f"T{t}-{m}", "payer": "medicare", "discipline": "PT",
                 "services": [{"code": "97110", "minutes": m}, {"code": "97140", "minutes": 60 - m}]}
                for t in range(8) for m in range(5, 25)]
    alone = [book.bill(s) for s in sessions]
    results: dict = {}

    def worker(t):
        mine = sessions[t::8]
        results[t] = list(book.bill_many(mine)) + [book.compare(s, ["medicare", "example-midpoint"])["results"]
                                                   ["medicare"] for s in mine[:3]]
    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for t in range(8):
        assert results[t] == alone[t::8] + alone[t::8][:3]
    assert most[0] == 1
    book.close()


# --- any JSON-like value: only the documented outcomes --------------------------------------------------------

KEYS = st.sampled_from(["session_id", "payer", "date_of_service", "discipline", "services", "context", "code",
                        "minutes", "group_size", "provider"])
SCALARS = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)
           | st.sampled_from(["97110", "97140", "medicare", "PT", "2026-03-02", "example-midpoint"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(KEYS | st.text(max_size=3) | st.integers(), inner, max_size=5),
                      max_leaves=25)


def is_record(value) -> bool:
    if not isinstance(value, dict) or "session_id" not in value:
        return False
    return set(value) == {"session_id", "error"} and isinstance(value["error"], str) or "lines" in value


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=VALUES)
def test_any_json_like_value_gives_a_record_or_a_payrules_error(books, value):
    book = books[ENGINES[-1]]
    assert is_record(book.bill(value))
    records = list(book.bill_many([value, value]))
    assert len(records) == 2 and all(map(is_record, records))
    comparison = book.compare(value, ["medicare", "example-midpoint"])
    assert set(comparison["results"]) == {"medicare", "example-midpoint"}
    assert all(map(is_record, comparison["results"].values()))
    explained = book.explain(value)
    assert is_record(explained) or is_record(explained["result"])
    # the same value where an option is meant: it works or raises PayrulesError, nothing else
    session = {"payer": "medicare", "services": [{"code": "97110", "minutes": 30}]}
    for call in (lambda: book.bill(session, payer=value), lambda: book.bill(session, date=value),
                 lambda: list(book.bill_many(value)), lambda: book.compare(session, value),
                 lambda: book.explain(session, why_not=value), lambda: book.explain(session, payer=value),
                 lambda: payer_rules.RuleBook(engine=value), lambda: payer_rules.bill(value, engine=value)):
        try:
            call()
        except payer_rules.PayrulesError as exc:
            assert str(exc)


# --- review of issue 11: compare's base and the date type --------------------------------------------------

def test_compare_base_equals_the_commands_base(books, engine_name):
    """`--base ID` has its API twin: compare(..., base=ID) is what `compare --base ID --format json` prints
    (item 7). Without base, medicare is the base when compared (README, compare)."""
    path = REPO / "examples" / "ot-session.yaml"
    payers = ["example-midpoint", "medicare", "example-full-unit"]
    book = books[engine_name]
    for base in ("example-full-unit", "example-midpoint"):
        want = cli_json("compare", path, "--payers", ",".join(payers), "--base", base, "--format", "json",
                        "--engine", engine_name)
        have = book.compare(yaml_data(path), payers, base=base)
        assert have == want and have["base"] == base
    assert book.compare(yaml_data(path), payers)["base"] == "medicare"


def test_compare_base_that_is_not_compared_raises_the_commands_message(books):
    line = cli_error("compare", "examples/ot-session.yaml", "--payers", "example-midpoint,medicare", "--base", "acme")
    with pytest.raises(payer_rules.PayrulesError) as caught:
        books[ENGINES[0]].compare({}, ["example-midpoint", "medicare"], base="acme")
    assert str(caught.value) == line
    with pytest.raises(payer_rules.PayrulesError):
        books[ENGINES[0]].compare({}, ["medicare"], base=5)


def test_date_parameters_are_typed_to_take_a_date_object():
    """A datetime.date is accepted at run time (test_a_date_object_is_its_iso_text), so the annotations say
    so: a typed caller passing date=datetime.date(...) is not told by mypy that it is wrong."""
    import datetime
    import typing
    for function in (payer_rules.bill, payer_rules.RuleBook.bill, payer_rules.RuleBook.bill_many,
                     payer_rules.RuleBook.compare, payer_rules.RuleBook.explain):
        hint = typing.get_type_hints(function, vars(api))["date"]
        assert datetime.date in typing.get_args(hint) and str in typing.get_args(hint), (function, hint)


def test_a_rulebook_does_not_read_payrules_rules(tmp_path, monkeypatch):
    """As the README says: the trees a RuleBook reads are the bundled one and its `rules=`, whatever the
    environment of the program that uses it."""
    tree = acme(tmp_path)
    monkeypatch.setenv("PAYRULES_RULES", str(tree))
    with payer_rules.RuleBook(engine="python") as book:
        assert "acme" not in {p["id"] for p in book.payers()}
    with payer_rules.RuleBook(rules=[tree], engine="python") as book:
        assert "acme" in {p["id"] for p in book.payers()}


def test_a_rule_file_with_several_mistakes_raises_all_of_them(tmp_path):
    """Three mistakes, three `error:` lines from the command; the exception's text is those lines joined
    by "; " (as the README says), each with its file and line."""
    tree = acme(tmp_path, "method: {name: midpoint}\nrules:\n  - id: x\n    description: d\n"
                          "    when: {line: {code: 9714}}\n    then: [{max_unit: 2}]\n")
    run = cli("payers", "--rules", tree)
    assert run.returncode == 2
    lines = [line.removeprefix("error: ") for line in run.stderr.splitlines()]
    # method.name 'midpoint' (line 4), rules[0] without source (line 6), code 9714 (line 8), max_unit (line 9)
    assert len(lines) == 4 and all(line.startswith(f"{tree / 'acme.yaml'}:") for line in lines), lines
    with pytest.raises(payer_rules.PayrulesError) as caught:
        payer_rules.RuleBook(rules=[tree], engine="python")
    assert str(caught.value) == "; ".join(lines)


def test_durable_asked_for_where_it_is_not_installed_says_what_to_pass(monkeypatch):
    """On Python 3.13+ durable-rules is not installed: RuleBook(engine="durable") says so in the API's own
    words (engine="python"), not the command's (--engine python)."""
    from engine import network
    monkeypatch.setattr(network, "_durable", None)
    with pytest.raises(payer_rules.PayrulesError) as caught:
        payer_rules.RuleBook(engine="durable")
    assert str(caught.value) == ("engine: the durable engine is not installed on this Python; "
                                 "use engine=\"python\" (or None, the default)")
    assert payer_rules.RuleBook().engine == "python"


def test_dir_of_the_package_lists_the_api():
    # RuleBook, bill and PayrulesError load on first use; dir() (and so an editor's completion) lists them
    import engine
    assert {"RuleBook", "bill", "PayrulesError", "run", "__version__"} <= set(dir(engine))
