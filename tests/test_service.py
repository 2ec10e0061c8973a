"""`payrules serve` (design.md §8, issue 14): every endpoint and status through Starlette's TestClient, each
answer equal to the library API's (RuleBook) and to the command's for the same input; limits (413, 408,
503), bearer token, malformed JSON, never a traceback, logs without session data; the page's fragments;
and the real command: a broken rule file or a public address without a token stops start-up (exit 2),
a started server answers as the command does and is always stopped.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
import urllib.request
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from starlette.requests import Request

with warnings.catch_warnings():     # Starlette 1.x suggests httpx2 for its TestClient; httpx still works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from engine.api import RuleBook
from engine.paths import SCHEMAS_DIR
from engine.service import Refused, Service, create_app, is_loopback, openapi_document

REPO = Path(__file__).resolve().parent.parent
OT = {"session_id": "OT-1", "payer": "medicare", "date_of_service": "2026-03-02", "discipline": "OT",
      "services": [{"code": "97110", "minutes": 33}, {"code": "97140", "minutes": 7},
                   {"code": "97535", "minutes": 20}]}


@pytest.fixture(scope="module")
def book():
    with RuleBook() as made:
        yield made


@pytest.fixture(scope="module")
def client(book):
    return TestClient(create_app(book), raise_server_exceptions=False)


def cli_json(*args, stdin: str | None = None):
    run = subprocess.run([sys.executable, "-m", "engine", *args], cwd=REPO, capture_output=True, text=True,
                         input=stdin, timeout=120)
    assert run.returncode in (0, 1), run.stderr
    return json.loads(run.stdout)


# --- POST /v1/bill ----------------------------------------------------------------------------------
def test_bill_one_session_is_the_api_and_the_command_answer(client, book):
    answer = client.post("/v1/bill", json=OT)
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    # Medicare pools the day's timed minutes (8-minute rule): 33 + 7 + 20 = 60 min is in the band 53-67,
    # 4 units; full units first 97110 2 (3 left), 97140 0 (7 left), 97535 1 (5 left) = 3, and the 4th
    # goes to the largest leftover, 97140's 7 min.
    units = {line["code"]: line["units"] for line in answer.json()["lines"]}
    assert units == {"97110": 2, "97140": 1, "97535": 1}
    assert answer.json() == book.bill(OT) == cli_json("bill", "-", "--format", "json", stdin=json.dumps(OT))


def test_bill_list_keeps_order_and_puts_error_records_in_place(client, book):
    sessions = [OT, {"session_id": "bad", "services": []}, {**OT, "session_id": "OT-2", "payer": "nope"}, 7]
    answer = client.post("/v1/bill", json=sessions)
    assert answer.status_code == 200
    records = answer.json()
    assert [r["session_id"] for r in records] == ["OT-1", "bad", "OT-2", "session-4"]
    assert ["error" in r for r in records] == [False, True, True, True]
    assert records == list(book.bill_many(sessions))
    # the command's messages name the input and line (`<stdin>:1: `); the API's have no file
    command = cli_json("bill", "-", "--format", "json", stdin=json.dumps(sessions[:3]))
    for record in command:
        if "error" in record:
            record["error"] = re.sub(r"^<stdin>:\d+: ", "", record["error"])
    assert records[:3] == command


@pytest.mark.parametrize("body", [{"session_id": "S-9", "services": []},
                                  {"session_id": "S-9", "payer": "nope", "services": [{"code": "97110", "minutes": 9}]},
                                  {"services": [{"code": "97110", "minutes": -1}]}, 5, "text", False])
def test_bill_one_session_that_cannot_be_billed_is_422_with_its_error_record(client, book, body):
    answer = client.post("/v1/bill", json=body)
    assert answer.status_code == 422
    assert set(answer.json()) == {"session_id", "error"} and answer.json() == book.bill(body)


def test_bill_payer_and_date_options_are_the_commands(client, book):
    answer = client.post("/v1/bill", params={"payer": "example-midpoint", "date": "2026-03-02"}, json=OT)
    assert answer.status_code == 200 and answer.json()["payer"] == "example-midpoint"
    assert answer.json() == book.bill(OT, payer="example-midpoint", date="2026-03-02")
    unknown = client.post("/v1/bill", params={"payer": "nope"}, json=OT)
    assert unknown.status_code == 400 and unknown.json()["error"].startswith("unknown payer 'nope'")
    bad_date = client.post("/v1/bill", params={"date": "2026-13-01"}, json=OT)
    assert bad_date.status_code == 400 and bad_date.json()["error"].startswith("date: ")


@pytest.mark.parametrize("raw", [b"{bad", b"", b'{"services": [', b"\xff\xfe{}", b"[" * 100_000 + b"]" * 100_000])
def test_malformed_json_is_400_with_an_error(client, raw):
    answer = client.post("/v1/bill", content=raw, headers={"content-type": "application/json"})
    assert answer.status_code == 400
    assert list(answer.json()) == ["error"] and answer.json()["error"].startswith("malformed JSON")


def test_a_body_over_the_limit_is_413_declared_or_streamed(book):
    small = TestClient(create_app(book, max_body=200), raise_server_exceptions=False)
    body = json.dumps([OT, OT]).encode()
    assert len(body) > 200
    declared = small.post("/v1/bill", content=body, headers={"content-type": "application/json"})
    assert declared.status_code == 413 and "200 bytes" in declared.json()["error"]
    streamed = small.post("/v1/bill", content=iter([body[:150], body[150:]]))     # chunked: no length given
    assert streamed.status_code == 413
    assert small.post("/v1/bill", json={"payer": "medicare", "services": [{"code": "97110", "minutes": 8}]}).status_code == 200


def test_a_body_slower_than_the_time_limit_is_408(book):
    service = Service(book, time_limit=0.05)

    async def receive():
        await asyncio.sleep(1)
        return {"type": "http.request", "body": b"{}", "more_body": False}

    request = Request({"type": "http", "method": "POST", "path": "/v1/bill", "headers": []}, receive)
    with pytest.raises(Refused) as refused:
        asyncio.run(service.body(request))
    assert refused.value.status == 408


def test_a_list_that_outlasts_the_time_limit_is_503(book):
    service = Service(book, time_limit=0.0)
    with pytest.raises(Refused) as refused:
        asyncio.run(service.bill_list([OT] * 100, None, None))
    assert refused.value.status == 503 and "after 32 of 100 sessions" in refused.value.message


# --- the other endpoints ------------------------------------------------------------------------------
def test_compare_is_the_api_and_the_command_answer(client, book):
    answer = client.post("/v1/compare", json={"session": OT, "payers": ["medicare", "example-midpoint"]})
    assert answer.status_code == 200
    # example-midpoint bills each code alone, a unit from 8 min: 97140's 7 min gives none there, where
    # Medicare's pool gave it the 4th unit (test above).
    assert answer.json()["differs"] == ["97140"]
    assert answer.json() == book.compare(OT, ["medicare", "example-midpoint"])
    assert answer.json() == cli_json("compare", "-", "--payers", "medicare,example-midpoint", "--format", "json",
                                     stdin=json.dumps(OT))


def test_compare_with_a_base_payer(client, book):
    body = {"session": OT, "payers": ["medicare", "example-midpoint"], "base": "example-midpoint"}
    answer = client.post("/v1/compare", json=body)
    assert answer.status_code == 200 and answer.json()["base"] == "example-midpoint"
    assert answer.json() == book.compare(OT, ["medicare", "example-midpoint"], base="example-midpoint")
    other = client.post("/v1/compare", json={**body, "base": "example-full-unit"})
    assert other.status_code == 400 and "base payer 'example-full-unit'" in other.json()["error"]


@pytest.mark.parametrize("example", sorted(p.name for p in (REPO / "examples").glob("*.yaml")))
def test_every_example_is_billed_as_the_command_bills_it(client, example):
    import yaml
    session = yaml.safe_load((REPO / "examples" / example).read_text())
    answer = client.post("/v1/bill", content=json.dumps(session, default=str))
    assert answer.status_code == 200
    assert answer.json() == cli_json("bill", f"examples/{example}", "--format", "json")


@pytest.mark.parametrize("body, message", [({"payers": ["medicare"]}, "compare: give"),
                                           ([OT], "compare: give"),
                                           ({"session": OT, "payers": ["nope"]}, "unknown payer 'nope'"),
                                           ({"session": OT, "payers": []}, "payers: give at least one payer id"),
                                           ({"session": OT, "payers": 3}, "payers: give a list")])
def test_compare_bad_requests_are_400(client, body, message):
    answer = client.post("/v1/compare", json=body)
    assert answer.status_code == 400 and answer.json()["error"].startswith(message)


def test_explain_is_the_api_and_the_command_answer(client, book):
    answer = client.post("/v1/explain", json=OT)
    assert answer.status_code == 200
    assert answer.json() == book.explain(OT) == cli_json("explain", "-", "--format", "json", stdin=json.dumps(OT))
    assert {f["location"] for f in answer.json()["firings"]} >= {"rules/medicare.yaml:70"} or \
        all(re.fullmatch(r"rules/.+\.yaml:\d+", f["location"]) for f in answer.json()["firings"])
    why = client.post("/v1/explain", params={"why_not": "timed-pool", "payer": "medicare"}, json=OT)
    assert why.status_code == 200 and why.json() == book.explain(OT, payer="medicare", why_not=["timed-pool"])
    assert client.post("/v1/explain", params={"why_not": "no-such-rule"}, json=OT).status_code == 400
    bad = client.post("/v1/explain", json={"services": []})
    assert bad.status_code == 422 and bad.json() == book.explain({"services": []})


def test_payers_healthz_and_openapi(client, book):
    assert client.get("/v1/payers").json() == book.payers() == cli_json("payers", "--format", "json")
    assert client.get("/healthz").json() == {"status": "ok"}
    doc = client.get("/openapi.json").json()
    assert doc == openapi_document()
    for path, method in [("/v1/bill", "post"), ("/v1/compare", "post"), ("/v1/explain", "post"),
                         ("/v1/payers", "get"), ("/healthz", "get"), ("/openapi.json", "get"), ("/", "get")]:
        assert method in doc["paths"][path]
    schemas = doc["components"]["schemas"]
    session = json.loads((SCHEMAS_DIR / "session.schema.json").read_text())
    assert schemas["Session"]["properties"].keys() == session["properties"].keys()
    assert "Result" in schemas and doc["paths"]["/v1/bill"]["post"]["responses"]["422"]

    def refs(node):
        if isinstance(node, dict):
            yield from (v for k, v in node.items() if k == "$ref")
            for v in node.values():
                yield from refs(v)
        elif isinstance(node, list):
            for v in node:
                yield from refs(v)
    for ref in refs(doc):     # every reference resolves inside the document
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref


@pytest.mark.parametrize("method, path, status", [("GET", "/nope", 404), ("GET", "/v1/bill", 405),
                                                  ("POST", "/v1/payers", 405), ("GET", "/static/../service.py", 404)])
def test_unknown_paths_and_methods_are_json_errors(client, method, path, status):
    answer = client.request(method, path)
    assert answer.status_code == status and "error" in answer.json()


def test_an_unexpected_failure_is_500_without_a_traceback(book, monkeypatch, caplog):
    client = TestClient(create_app(book), raise_server_exceptions=False)
    monkeypatch.setattr(book, "_bill", lambda *a, **k: 1 / 0)
    with caplog.at_level(logging.INFO, "payrules.service"):
        answer = client.post("/v1/bill", json={**OT, "context": {"note": "PATIENT-SECRET"}})
    assert answer.status_code == 500 and answer.json() == {"error": "internal error"}
    assert "Traceback" not in answer.text and "ZeroDivision" not in answer.text
    assert "PATIENT-SECRET" not in caplog.text and "ZeroDivisionError" in caplog.text


def test_log_lines_hold_method_path_status_duration_and_session_ids_only(client, caplog):
    secret = {**OT, "session_id": "S-LOG", "context": {"name": "PATIENT-SECRET"}}
    with caplog.at_level(logging.INFO, "payrules.service"):
        client.post("/v1/bill", json=secret, params={"payer": "medicare"})
        client.post("/v1/bill", json=[secret, {"session_id": "S-BAD", "services": [], "x": "PATIENT-SECRET"}])
    lines = [r.getMessage() for r in caplog.records if r.name == "payrules.service"]
    assert len(lines) == 2
    assert re.fullmatch(r"POST /v1/bill 200 \d+\.\dms sessions=S-LOG", lines[0])
    assert re.fullmatch(r"POST /v1/bill 200 \d+\.\dms sessions=S-LOG,S-BAD", lines[1])
    assert "PATIENT-SECRET" not in caplog.text


def test_a_bearer_token_guards_the_api_when_set(book):
    guarded = TestClient(create_app(book, token="s3cret"), raise_server_exceptions=False)
    assert guarded.post("/v1/bill", json=OT).status_code == 401
    wrong = guarded.post("/v1/bill", json=OT, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer" and "error" in wrong.json()
    assert guarded.get("/v1/payers").status_code == 401
    assert guarded.post("/ui/check", json={"session": OT, "payers": ["medicare"]}).status_code == 401
    ok = guarded.post("/v1/bill", json=OT, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200 and ok.json() == book.bill(OT)
    assert guarded.get("/healthz").status_code == 200 and guarded.get("/").status_code == 200


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.5.0.1", True), ("::1", True),
                                            ("localhost", True), ("0.0.0.0", False), ("::", False),
                                            ("192.168.1.4", False), ("example.org", False)])
def test_loopback_addresses(host, loopback):
    assert is_loopback(host) is loopback


def test_every_endpoint_runs_in_the_event_loop_thread_never_a_threadpool(book, monkeypatch):
    """A rule network must never be driven from two threads (durable-rules-notes.md §1): Starlette runs a
    sync endpoint in its threadpool, so every endpoint is a coroutine, and the book is only ever called
    from one thread, the event loop's."""
    import inspect
    app = create_app(book)
    routes = app.app.routes
    assert routes and all(inspect.iscoroutinefunction(route.endpoint) for route in routes)
    threads = set()
    for name in ("bill", "compare", "explain"):
        real = getattr(book, name)
        monkeypatch.setattr(book, name, lambda *a, _real=real, **k: threads.add(threading.get_ident()) or _real(*a, **k))
    with TestClient(app) as client:     # one event loop (in its own thread) for all the requests
        client.post("/v1/bill", json=OT)
        client.post("/v1/bill", json=[OT, OT])
        client.post("/v1/compare", json={"session": OT, "payers": ["medicare"]})
        client.post("/v1/explain", json=OT)
        client.post("/ui/check", json={"session": OT, "payers": ["medicare"]})
    assert len(threads) == 1 and threading.get_ident() not in threads


# --- the page's fragments ------------------------------------------------------------------------------
def test_page_and_fragments(client, book):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<label for="date_of_service">' in page.text and 'src="/static/app.js"' in page.text
    assert "http://" not in page.text and "https://" not in page.text       # nothing from another site
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    check = client.post("/ui/check", json={"session": OT, "payers": ["medicare", "example-midpoint"]})
    assert check.status_code == 200 and 'class="differs"><th scope="row">97140' in check.text
    pasted = client.post("/ui/check", json={"text": "services:\n  - code: 97110\n    minutes: 23\n",
                                            "payers": ["medicare"]})
    assert '<td data-col="units">2</td>' in pasted.text     # 23 min: 15 + 8, two units
    # pasted YAML with who furnished which minutes and documented modifiers: every line of the result,
    # one per code and modifier set, is on the page with its modifiers
    text = (REPO / "examples" / "pt-assistant.yaml").read_text()
    assistant = client.post("/ui/check", json={"text": text, "payers": ["medicare"]})
    import yaml
    for line in book.bill(json.loads(json.dumps(yaml.safe_load(text), default=str)))["lines"]:
        assert (f'<td data-col="code">{line["code"]}</td><td data-col="units">{line["units"]}</td>'
                f'<td data-col="minutes">{line["minutes"]}</td>'
                f'<td data-col="modifiers">{", ".join(line["modifiers"])}</td>') in assistant.text
    explained = client.post("/ui/explain", json={"session": OT, "payer": "medicare"})
    assert "60 min is in the band 53-67, which gives 4 units" in explained.text
    assert "rules/medicare.yaml:" in explained.text
    batch = client.post("/ui/batch", json={"name": "day.jsonl", "text": json.dumps(OT) + "\n{bad\n"})
    assert "2 sessions: <b>1</b> billed, <b>0</b> with errors, <b>1</b> failed to parse" in batch.text
    assert 'download="day.results.jsonl"' in batch.text and "payrules-upload" not in batch.text
    invalid = client.post("/ui/validate", json={"text": "payer: mine\nname: 3\n"})
    assert "pasted.yaml:2: name: 3 is not of type string" in invalid.text
    no_payer = client.post("/ui/validate", json={"text": "id: x\n"})       # no payer: key: said, at its line
    assert no_payer.status_code == 200 and "pasted.yaml:1: missing required key" in no_payer.text
    assert client.post("/ui/check", json={"text": "a: [", "payers": ["medicare"]}).status_code == 422
    assert client.post("/ui/check", json={"session": OT, "payers": []}).status_code == 400


# --- differential: any session the schema allows, as the API bills it ------------------------------
CODES = ["97110", "97140", "97530", "97535", "97150", "97161", "92507", "97760", "G0283", "97116", "99999"]
service_st = st.fixed_dictionaries({"code": st.sampled_from(CODES), "minutes": st.integers(0, 90)},
                                   optional={"group_size": st.integers(0, 8),
                                             "provider": st.sampled_from(["PT", "PTA", "OT", "OTA", "SLP"])})
session_st = st.fixed_dictionaries(
    {"services": st.lists(service_st, min_size=1, max_size=5)},
    optional={"payer": st.sampled_from(["medicare", "example-midpoint", "example-full-unit", "nope"]),
              "discipline": st.sampled_from(["PT", "OT", "SLP"]),
              "date_of_service": st.sampled_from(["2025-06-01", "2026-03-02", "2026-02-30"])})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(session=session_st)
def test_any_session_is_billed_as_the_api_bills_it(client, book, session):
    answer = client.post("/v1/bill", json=session)
    expected = book.bill(session)
    assert answer.json() == expected
    assert answer.status_code == (422 if "error" in expected else 200)


# --- the command ---------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(*args, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "engine", "serve", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def wait_ready(proc: subprocess.Popen, port: int) -> None:
    for _ in range(300):
        assert proc.poll() is None, proc.communicate()[1]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the server did not start")


def stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    try:
        return proc.communicate(timeout=20)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()[1]


def post(port: int, path: str, body) -> tuple:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_answers_as_the_command_and_logs_no_session_data(book, workers):
    port = free_port()
    proc = serve("--port", str(port), "--workers", workers)
    try:
        wait_ready(proc, port)
        secret = {**OT, "session_id": "S-LIVE", "context": {"name": "PATIENT-SECRET"}}
        for _ in range(4):      # several requests: with 2 workers both answer some
            assert post(port, "/v1/bill", secret) == (200, book.bill(secret))
        sessions = [{**OT, "session_id": f"C-{n}", "services": [{"code": "97110", "minutes": n}]} for n in range(60)]
        with ThreadPoolExecutor(12) as pool:    # concurrent clients: each answer is its own session's
            answers = list(pool.map(lambda s: post(port, "/v1/bill", s), sessions))
        assert [a[1] for a in answers] == [book.bill(s) for s in sessions]
        assert post(port, "/v1/bill", {"services": []})[0] == 422
    finally:
        log = stop(proc)
    assert "PATIENT-SECRET" not in log and "Traceback" not in log
    assert re.search(r"POST /v1/bill 200 \d+\.\dms sessions=S-LIVE", log)
    assert "127.0.0.1:" not in log.replace(f"http://127.0.0.1:{port}", "")     # no client addresses


def test_serve_with_a_broken_rule_file_stops_with_the_commands_message(tmp_path):
    (tmp_path / "bad.yaml").write_text("payer: bad\nname: 3\nmethod: {name: cms_8_minute}\nrules: []\n")
    proc = serve("--rules", str(tmp_path), "--port", str(free_port()))
    out, err = proc.communicate(timeout=60)
    payers = subprocess.run([sys.executable, "-m", "engine", "bill", "--rules", str(tmp_path), "-"], cwd=REPO,
                            input=json.dumps(OT), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 == payers.returncode
    assert err == payers.stderr and re.match(rf"error: {re.escape(str(tmp_path))}/bad.yaml:2: name: ", err)


def test_serve_on_a_public_address_needs_a_token():
    proc = serve("--host", "0.0.0.0", "--port", str(free_port()), env={"PAYRULES_TOKEN": ""})
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and err.startswith("error: --host 0.0.0.0 is not a loopback address: set PAYRULES_TOKEN")


def test_the_readme_curl_example_works_as_printed(book):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    (command,) = [line for line in readme.splitlines() if line.startswith("curl ")]
    assert "http://127.0.0.1:8080/v1/bill" in command
    port = free_port()
    proc = serve("--port", str(port))
    try:
        wait_ready(proc, port)
        run = subprocess.run(["bash", "-c", command.replace("127.0.0.1:8080", f"127.0.0.1:{port}")],
                             capture_output=True, text=True, timeout=60)
    finally:
        stop(proc)
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout)
    # 23 min: one 15-minute unit and 8 minutes more, which earn a second unit under the 8-minute rule
    assert answer["lines"][0]["units"] == 2 and answer["session_id"] == "S-1"
    shown = re.search(r"answers `(\{.*?)\.\.\.`", readme).group(1)
    assert run.stdout.startswith(shown)


def test_serve_on_an_address_it_cannot_listen_on_is_one_error_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = serve("--port", str(port))
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and err == f"error: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    proc = serve("--host", "no-such-host.invalid", "--port", "8080", env={"PAYRULES_TOKEN": "t"})
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and err.startswith("error: cannot listen on no-such-host.invalid:8080: ")
    assert len(err.splitlines()) == 1


def test_the_page_shows_amounts_and_the_patients_year(client):
    """The page shows what the command's table shows of the patient's year (engine/render.py to_table):
    example-medicare-fees prices 97110 at 30.00 a unit (its SYNTHETIC schedule). 30 min = 2 units = 60.00;
    2,470.00 already this year + 60.00 = 2,530.00 > 2,480.00 (the 2026 KX threshold in rules/medicare.yaml)
    -> KX. In a batch of the same session the sessions table has its amount."""
    session = {"session_id": "K", "patient_id": "P1", "payer": "example-medicare-fees", "discipline": "PT",
               "date_of_service": "2026-03-02", "year_to_date": {"pt_slp": 2470},
               "services": [{"code": "97110", "minutes": 30}]}
    page = client.post("/ui/check", json={"session": session, "payers": ["example-medicare-fees", "medicare"]})
    assert page.status_code == 200
    text = page.text
    assert '<th scope="col">amount</th>' in text and '<td data-col="amount">60.00</td>' in text
    assert "amount: <b>60.00</b>" in text
    assert "Patient's year: kx-threshold: 2,470.00 + 97110 60.00 = 2,530.00 &gt; 2,480.00 (2026) → KX" in text
    # medicare has no fee schedule: no amount column or total, and KX cannot be decided (a warning says
    # so), so no step is shown for it
    medicare = text.split('aria-label="payer medicare"')[1]
    assert '<th scope="col">amount</th>' not in medicare and "amount: <b>" not in medicare
    assert "Patient's year" not in medicare and "kx-threshold, kx-medical-review cannot be decided" in medicare
    batch = client.post("/ui/batch", json={"name": "day.jsonl", "text": json.dumps(session) + "\n"})
    assert '<td data-col="amount">60.00</td>' in batch.text
