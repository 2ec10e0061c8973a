"""Review of `payrules serve` (issue 14): what a hostile EHR integrator and a billing specialist found.

- A key repeated in one JSON object is the command's error record (`payrules bill` refuses it), never
  the last value taken silently: `{"minutes": 8, "minutes": 53}` is not a session anyone can bill.
- A web page on another site, open in the user's browser, cannot drive the service on 127.0.0.1: a POST
  whose Origin is not the service's is 403 (cross-site request forgery), and a service bound to loopback
  answers only requests addressed to a loopback name (DNS rebinding: evil.example resolved to 127.0.0.1
  would otherwise be "same origin" and read the answers).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from engine.api import RuleBook
from test_service import OT, REPO, book, client, free_port, serve, stop, wait_ready  # noqa: F401 - fixtures

DUP = b'{"session_id":"D-1","payer":"medicare","services":[{"code":"97110","minutes":8,"minutes":53}]}'


def test_a_repeated_key_is_the_commands_error_record(client):
    command = subprocess.run([sys.executable, "-m", "engine", "bill", "-", "--format", "json"], cwd=REPO,
                             input=DUP.decode(), capture_output=True, text=True, timeout=120)
    expected = json.loads(command.stdout)
    # the command's record, less its "<stdin>:1: " (a service body is no file)
    assert expected == {"session_id": "D-1", "error": "<stdin>:1: services[0]: duplicate key 'minutes'"}
    answer = client.post("/v1/bill", content=DUP, headers={"content-type": "application/json"})
    assert (answer.status_code, answer.json()) == (422, {"session_id": "D-1",
                                                         "error": "services[0]: duplicate key 'minutes'"})


def test_a_repeated_key_in_a_list_is_an_error_record_in_its_place(client, book):
    body = b"[" + json.dumps(OT).encode() + b"," + DUP + b',{"session_id":"D-2","session_id":"D-3"}]'
    answer = client.post("/v1/bill", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 200
    assert answer.json() == [book.bill(OT), {"session_id": "D-1", "error": "services[0]: duplicate key 'minutes'"},
                             {"session_id": "D-3", "error": "duplicate key 'session_id'"}]


@pytest.mark.parametrize("path, wrap", [
    ("/v1/compare", lambda s: b'{"session":' + s + b',"payers":["medicare"]}'),
    ("/v1/explain", lambda s: s),
    ("/ui/check", lambda s: b'{"session":' + s + b',"payers":["medicare"]}'),
    ("/ui/explain", lambda s: b'{"session":' + s + b',"payer":"medicare"}'),
    ("/v1/compare", lambda s: b'{"session":' + json.dumps(OT).encode() + b',"payers":["medicare"],"payers":["x"]}'),
])
def test_a_repeated_key_elsewhere_is_refused_not_read_as_its_last_value(client, path, wrap):
    answer = client.post(path, content=wrap(DUP), headers={"content-type": "application/json"})
    assert answer.status_code == 400 and "duplicate key" in answer.json()["error"]


POSTS = [("/v1/bill", OT), ("/v1/compare", {"session": OT, "payers": ["medicare"]}), ("/v1/explain", OT),
         ("/ui/check", {"session": OT, "payers": ["medicare"]}), ("/ui/explain", {"session": OT, "payer": "medicare"}),
         ("/ui/batch", {"name": "a.jsonl", "text": json.dumps(OT)}), ("/ui/validate", {"text": "payer: x\n"})]


@pytest.mark.parametrize("path, body", POSTS)
def test_a_post_from_another_site_is_refused(client, path, body):
    # a form or fetch() of evil.example's page: the browser sends its Origin, and text/plain needs no preflight
    hostile = client.post(path, content=json.dumps(body), headers={"content-type": "text/plain",
                                                                    "origin": "http://evil.example"})
    assert hostile.status_code == 403 and "cross-site" in hostile.json()["error"]
    for origin in ("null", "http://testserver.evil.example", "https://testserver"):
        assert client.post(path, json=body, headers={"origin": origin}).status_code == 403, origin
    # the page itself (same origin) and a client that sends no Origin (curl, an EHR) are served
    assert client.post(path, json=body, headers={"origin": "http://testserver"}).status_code == 200
    assert client.post(path, json=body).status_code == 200


def test_bound_to_loopback_only_loopback_host_names_are_answered(book):
    from engine.service import create_app
    local = TestClient(create_app(book, local_only=True), base_url="http://127.0.0.1:8080",
                       raise_server_exceptions=False)
    for host in ("127.0.0.1:8080", "localhost:8080", "[::1]:8080", "localhost"):
        assert local.get("/healthz", headers={"host": host}).status_code == 200, host
    for host in ("evil.example:8080", "evil.example", "127.0.0.1.evil.example:8080", ""):
        for method, path in (("GET", "/"), ("GET", "/v1/payers"), ("POST", "/v1/bill")):
            answer = local.request(method, path, json=OT, headers={"host": host})
            assert answer.status_code == 403 and "host" in answer.json()["error"], (host, path)


def test_the_served_service_refuses_a_rebound_host_with_two_workers():
    port = free_port()
    proc = serve("--port", str(port), "--workers", "2")
    try:
        wait_ready(proc, port)
        curl = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}/v1/payers"]
        codes = [subprocess.run(curl + extra, capture_output=True, text=True, timeout=30).stdout
                 for extra in ([], ["-H", f"Host: evil.example:{port}"])]
    finally:
        stop(proc)
    assert codes == ["200", "403"]


def test_every_status_the_guard_answers_is_documented(book):
    # each operation of /openapi.json, asked from a rebound host and from another site's page: the answer's
    # status is one the document lists for that operation (schemathesis sends neither header)
    from engine.service import create_app, openapi_document
    local = TestClient(create_app(book, local_only=True), base_url="http://127.0.0.1:8080",
                       raise_server_exceptions=False)
    for path, operations in openapi_document()["paths"].items():
        for method, operation in operations.items():
            for headers in ({"host": "evil.example:8080"}, {"origin": "http://evil.example"}):
                answer = local.request(method.upper(), path, json=OT, headers=headers)
                if answer.status_code != 200:
                    assert str(answer.status_code) in operation["responses"], (method, path, headers)


MARK = "<zz-x>"     # a tag no fragment of ours has: found unescaped, text of the input became markup
payloads = st.sampled_from([MARK, f'"{MARK}', f"'{MARK}", f"</td>{MARK}", f"{MARK}&amp;", f"`{MARK}"])


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(payload=payloads, where=st.sampled_from(["session_id", "code", "modifiers", "provider", "minutes",
                                                 "discipline", "date_of_service", "context", "key", "text"]),
       endpoint=st.sampled_from(["/ui/check", "/ui/explain", "/ui/batch", "/ui/validate"]))
def test_no_text_of_the_input_becomes_markup_in_a_fragment(client, payload, where, endpoint):
    service = {"code": "97110", "minutes": 23}
    session = {"session_id": "S-1", "payer": "medicare", "discipline": "PT", "services": [service]}
    if where in ("session_id", "discipline", "date_of_service"):
        session[where] = payload
    elif where == "context":
        session["context"] = {"note": payload}
    elif where == "key":
        service[payload] = 1
    elif where in ("code", "provider", "minutes"):
        service[where] = payload
    elif where == "modifiers":
        service["modifiers"] = [payload]
    if endpoint == "/ui/batch":     # the session as a JSONL line, and the payload as the file's name too
        body = {"name": payload + ".jsonl", "text": json.dumps(session) + "\n" + payload + "\n"}
    elif endpoint == "/ui/validate":
        body = {"name": payload + ".yaml", "text": f"payer: '{payload}'\n{payload}: 1\nname: [{payload}\n"}
    elif where == "text":
        body = {"text": f"session_id: '{payload}'\nservices: [{payload}", "payers": ["medicare"], "payer": "medicare"}
    else:
        body = {"session": session, "payers": ["medicare"], "payer": "medicare"}
    answer = client.post(endpoint, json=body)
    assert answer.status_code < 500
    assert MARK not in answer.text.replace("\\u003c", "<") or answer.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("signal_name, to_group", [("SIGTERM", False), ("SIGINT", True)])
def test_workers_2_stop_on_ctrl_c_and_sigterm_leaving_no_process(signal_name, to_group):
    # Ctrl-C signals the terminal's whole process group; a service manager sends SIGTERM to the parent
    import os
    import signal
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "engine", "serve", "--port", str(port), "--workers", "2"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        wait_ready(proc, port)
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert len(children) >= 2     # the two workers (and multiprocessing's resource tracker)
        sig = getattr(signal, signal_name)
        os.killpg(proc.pid, sig) if to_group else proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0 and "Traceback" not in err, err

    def running() -> list:      # not reaped yet, and no zombie about to be
        alive = []
        for pid in children:
            try:
                if Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z":
                    alive.append(Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " "))
            except OSError:
                pass
        return alive
    for _ in range(50):         # multiprocessing's resource tracker leaves when its pipe closes
        if not running():
            break
        time.sleep(0.1)
    assert running() == []


@pytest.mark.parametrize("token", ["t\u00f6ken-1234", "two words", "tab\there"])
def test_a_token_no_client_can_send_stops_start_up(token):
    # HTTP headers carry ASCII (a browser's fetch() refuses anything else; Starlette reads the bytes as
    # Latin-1, so a UTF-8 "ö" never matched): such a token would lock every client out, silently
    proc = serve("--host", "0.0.0.0", "--port", str(free_port()), env={"PAYRULES_TOKEN": token})
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and err.startswith("error: PAYRULES_TOKEN: ") and "Traceback" not in err


@pytest.mark.parametrize("path, body", [
    ("/v1/bill", [OT] * 100),
    ("/ui/batch", {"name": "day.jsonl", "text": "\n".join(json.dumps({**OT, "session_id": f"B-{n}"})
                                                          for n in range(100))})])
def test_a_batch_that_outlasts_the_time_limit_is_a_documented_503(book, path, body):
    from engine.service import create_app, openapi_document
    app = create_app(book, time_limit=0.0)
    service, read = app.state.service, app.state.service.body

    async def arrives(request):     # the body arrives in time; the billing then outlasts the limit
        service.time_limit = 30.0
        try:
            return await read(request)
        finally:
            service.time_limit = 0.0
    service.body = arrives
    slow = TestClient(app, raise_server_exceptions=False)
    answer = slow.post(path, json=body)
    assert answer.status_code == 503 and "time limit" in answer.json()["error"]
    assert "503" in openapi_document()["paths"][path]["post"]["responses"]


@pytest.mark.parametrize("path, body", [p for p in POSTS if p[0].startswith("/ui/")])
def test_every_html_answer_forbids_scripts_and_framing(client, path, body):
    # a fragment opened as a document (a form posted to it) runs no script and cannot be framed
    answer = client.post(path, json=body)
    assert answer.headers["content-type"].startswith("text/html")
    assert answer.headers["content-security-policy"] == "default-src 'self'; frame-ancestors 'none'"
    assert answer.headers["x-content-type-options"] == "nosniff"


def test_a_payer_name_from_a_rule_file_is_text_on_the_page(tmp_path):
    from engine.service import create_app
    (tmp_path / "odd.yaml").write_text(f'payer: odd-payer\nname: "{MARK} &amp; \\"quoted\\""\nextends: medicare\n',
                                       encoding="utf-8")
    with RuleBook([str(tmp_path)]) as book:
        page = TestClient(create_app(book)).get("/").text
    assert MARK not in page and "&lt;zz-x&gt; &amp;amp; &quot;quoted&quot;" in page


def test_the_document_says_which_operations_take_the_bearer_token(book):
    from engine.service import create_app, openapi_document
    guarded = TestClient(create_app(book, token="s3cret"), raise_server_exceptions=False)
    for path, operations in openapi_document()["paths"].items():
        for method, operation in operations.items():
            refused = guarded.request(method.upper(), path, json=OT).status_code == 401
            # {"bearer": []} when the service has a token, {} (none) when it has not (loopback)
            assert (operation.get("security") == [{"bearer": []}, {}]) == refused, (method, path)
            assert ("401" in operation["responses"]) == refused, (method, path)


def test_ctrl_c_while_the_workers_start_is_no_traceback():
    # Ctrl-C as soon as the parent says it started: the worker processes are still importing the engine
    import os
    import signal
    proc = subprocess.Popen([sys.executable, "-m", "engine", "serve", "--port", str(free_port()), "--workers", "2"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if "Started parent process" in line:
                time.sleep(0.2)     # the workers are importing (the engine takes ~1 s to import and load)
                os.killpg(proc.pid, signal.SIGINT)
                break
        err = "".join(seen) + proc.communicate(timeout=30)[1]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert "Started parent process" in err and "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert proc.returncode == 0
