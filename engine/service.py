"""`payrules serve`: the HTTP service and the web page (shared/design.md §8), a Starlette app over one
RuleBook (design.md §7) per worker process.

Answers are the library API's: POST /v1/bill is RuleBook.bill (or bill_many for a list), /v1/compare
RuleBook.compare, /v1/explain RuleBook.explain, GET /v1/payers RuleBook.payers. Billing runs in the
worker's event-loop thread, so each process's rule networks are only ever driven from that one thread
(durable-rules-notes.md §1): there is no thread hop per request and no threadpool contention on the book's
lock. One session is bounded by the session limits the command has (services, minutes, record size); a
list of sessions (and the page's batch upload) is billed as `payrules bill` bills a file (engine/patients.py:
each patient's sessions in date order, the edits across a patient's sessions of one date), checked against
the time limit as it goes, and yields the loop to other requests every 32 steps (a session read and spooled,
a record, or a shard of patients' sessions billed). The page's own endpoints (/ui/...) answer HTML fragments rendered here from the same JSON.
"""
from __future__ import annotations

import asyncio
import base64
import gc
import hmac
import html
import ipaddress
import json
import logging
import os
import re
import signal
import socket
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from string import Template
from typing import Any

import orjson
import uvicorn
from uvicorn.supervisors import multiprocess
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from . import __version__
from .api import RuleBook, _Turns, _id_of, _parse
from .batch import Counts
from .errors import PayrulesError
from .paths import SCHEMAS_DIR
from .render import clean, money
from .sessions import MAX_INPUT_BYTES, ParseError, load_sessions
from .yamlload import format_path

LOG = logging.getLogger("payrules.service")
WEB_DIR = Path(__file__).resolve().parent / "web"
MAX_BODY = MAX_INPUT_BYTES            # bytes of one request body (the command's limit on a whole YAML input)
TIME_LIMIT = 30.0                     # seconds for one request: reading its body, billing a list
YIELD_EVERY = 32                      # sessions of a list billed between turns given to other requests
MAX_LOGGED_IDS = 20                   # session ids in one log line; the rest are counted
CONFIG_ENV = "PAYRULES_SERVE_CONFIG"  # rules and engine for worker processes (--workers N > 1)
TOKEN_ENV = "PAYRULES_TOKEN"


class Refused(Exception):
    """An answer other than 200: the status and the `{"error"}` message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _Repeated(dict):
    """A JSON object of the body in which a key was repeated (json keeps the last value): `key`."""
    key = ""


def _object(pairs: list) -> dict:
    made = dict(pairs)
    if len(made) == len(pairs):
        return made
    seen: set = set()
    repeated = _Repeated(made)
    repeated.key = next(k for k, _ in pairs if k in seen or seen.add(k))
    return repeated


def _repeated(value: Any, path: tuple = ()) -> tuple | None:
    """(path, key) of the first object in `value` with a repeated key, or None."""
    if isinstance(value, _Repeated):
        return path, value.key
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(item, (dict, list)):
            found = _repeated(item, path + (key,))
            if found:
                return found
    return None


def _refuse_repeated(value: Any) -> Any:
    """`value` when no key of it was repeated; else 400: a repeated key is never read as its last value."""
    found = _repeated(value)
    if found:
        where = format_path(found[0])
        raise Refused(400, f"malformed JSON: {where + ': ' if where else ''}duplicate key {found[1]!r}")
    return value


def dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:       # an integer beyond 64 bits (a session id echoed): the json module writes it
        return json.dumps(value, ensure_ascii=False).encode()


def _json(value: Any, status: int = 200) -> Response:
    return Response(dumps(value), status, media_type="application/json")


def _error(status: int, message: str) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return Response(dumps({"error": message}), status, headers, media_type="application/json")


class Service:
    """The app's state: its RuleBook, the bearer token (None: none required) and the limits."""

    def __init__(self, book: RuleBook, token: str | None = None, max_body: int = MAX_BODY,
                 time_limit: float = TIME_LIMIT) -> None:
        self.book, self.token, self.max_body, self.time_limit = book, token or None, max_body, time_limit
        self.page = Template((WEB_DIR / "page.html").read_text(encoding="utf-8"))
        self.openapi = dumps(openapi_document())
        self.year = counter_rules(book)

    # --- request plumbing ------------------------------------------------------------------------------
    async def body(self, request: Request) -> Any:
        """The request's JSON body: 413 over the size limit, 408 when it takes longer than the time limit to
        arrive, 400 when it is not JSON."""
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            raise Refused(413, f"request body over the limit of {self.max_body} bytes")

        async def read() -> bytes:
            chunks, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > self.max_body:
                    raise Refused(413, f"request body over the limit of {self.max_body} bytes")
                chunks.append(chunk)
            return b"".join(chunks)

        try:
            raw = await asyncio.wait_for(read(), self.time_limit)
        except asyncio.TimeoutError:
            raise Refused(408, f"request body not received within {self.time_limit:g} s") from None
        try:
            return json.loads(raw.decode("utf-8-sig"), object_pairs_hook=_object)
        except UnicodeDecodeError:
            raise Refused(400, "malformed JSON: the body is not UTF-8 text") from None
        except ValueError as exc:
            raise Refused(400, f"malformed JSON: {exc}") from None
        except RecursionError:
            raise Refused(400, "malformed JSON: nested too deeply") from None

    def authorised(self, request: Request) -> bool:
        if self.token is None:
            return True
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token.encode())

    def record(self, item: Any, number: int, payer: str | None, date: str | None) -> dict:
        """The result or error record of session `number` (payer and date checked), billed alone:
        RuleBook.bill's, and for a key repeated in the session the command's error record."""
        if _repeated(item) is None:
            return self.book._bill(item, number, payer, date)
        return next(self.book._records([parsed(item, number)], payer, date))[1]

    async def bill_list(self, items: list, payer: str | None, date: str | None) -> list:
        """Every session of a list billed as RuleBook.bill_many bills it (each patient's sessions in date
        order, as `payrules bill`), in input order; the time limit is checked between sessions."""
        payer, date = self.book._options(payer, date)
        sessions = (parsed(item, number) for number, item in enumerate(items, 1))
        billed = await self.billed(sessions, payer, date, lambda n: f" after {n} of {len(items)} sessions: send "
                                                                    "fewer sessions per request")
        return [record for _, record in billed]

    async def billed(self, sessions: Any, payer: str | None, date: str | None, refusal: Any) -> list:
        """(category, record) of each parsed session, billed by engine/patients.bill_records with the book's
        networks, in input order. Past the time limit: 503, `refusal(n)` saying after how many sessions.
        Other requests get the event loop every YIELD_EVERY records (or shard of a patient's sessions)."""
        turns = _Timed(self.book, time.monotonic() + self.time_limit,
                       lambda n: Refused(503, f"time limit of {self.time_limit:g} s reached{refusal(n)}"))
        out = []
        for step, (category, record) in enumerate(self.book._records(sessions, payer, date, turns, pace=True), 1):
            if record is not None:
                out.append((category, record))
            if step % YIELD_EVERY == 0:
                turns.check()       # also while patients' sessions are read and spooled, before any is billed
                await asyncio.sleep(0)
        return out


class _Timed(_Turns):
    """The book's networks for one request: past `deadline`, the next session billed raises `refused(n)`
    (n: the sessions billed so far), checked every YIELD_EVERY sessions."""

    def __init__(self, book: RuleBook, deadline: float, refused: Any) -> None:
        super().__init__(book)
        self.deadline, self.refused, self.count = deadline, refused, 0

    def evaluate(self, session: Any, payer_id: str | None = None, date: str | None = None) -> Any:
        if self.count and self.count % YIELD_EVERY == 0:
            self.check()
        self.count += 1
        return super().evaluate(session, payer_id, date)

    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise self.refused(self.count)


def parsed(item: Any, number: int) -> Any:
    """Session `number` of a body as the library reads it, and for a key repeated in it the command's
    error (`payrules bill` refuses it)."""
    found = _repeated(item)
    if found is None:
        return _parse(item, number)
    return ParseError(f"duplicate key {found[1]!r}", "", None, format_path(found[0]), session_id=_id_of(item, number))


def _ids(request: Request, *records: Any) -> None:
    """Note the session ids of the answer for the log line (and nothing else of the session)."""
    ids = request.scope.setdefault("payrules.ids", [])
    for record in records:
        if isinstance(record, dict) and "session_id" in record:
            ids.append(record["session_id"])


def _query(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    return value if value else None


# --- the API (design.md §8) ---------------------------------------------------------------------------
async def bill(request: Request, service: Service) -> Response:
    body = await service.body(request)
    payer, date = _query(request, "payer"), _query(request, "date")
    if isinstance(body, list):
        records = await service.bill_list(body, payer, date)
        _ids(request, *records)
        return _json(records)
    record = service.record(body, 1, *service.book._options(payer, date))
    _ids(request, record)
    return _json(record, 422 if "error" in record else 200)


def _compare_args(body: Any) -> tuple:
    if not isinstance(body, dict) or "session" not in body or "payers" not in body:
        raise Refused(400, 'compare: give {"session": {...}, "payers": ["medicare", ...]}')
    return body["session"], body["payers"], body.get("base"), body.get("date")


async def compare(request: Request, service: Service) -> Response:
    session, payers, base, date = _compare_args(_refuse_repeated(await service.body(request)))
    result = service.book.compare(session, payers, base=base, date=date)
    _ids(request, result)
    return _json(result)


async def explain(request: Request, service: Service) -> Response:
    body = _refuse_repeated(await service.body(request))
    doc = service.book.explain(body, payer=_query(request, "payer"), date=_query(request, "date"),
                               why_not=request.query_params.getlist("why_not"))
    _ids(request, doc)
    return _json(doc, 422 if "error" in doc else 200)


async def payers(request: Request, service: Service) -> Response:
    return _json(service.book.payers())


async def healthz(request: Request, service: Service) -> Response:
    return _json({"status": "ok"})


async def openapi(request: Request, service: Service) -> Response:
    return Response(service.openapi, media_type="application/json")


# --- the web page --------------------------------------------------------------------------------------
async def page(request: Request, service: Service) -> Response:
    listing = service.book.payers()
    ids = list(dict.fromkeys(p["id"] for p in listing))
    names = {p["id"]: p["name"] for p in listing}
    checks = "\n".join(
        f'<label class="check"><input type="checkbox" name="payers" value="{_e(pid)}"'
        f'{" checked" if pid == "medicare" or (i == 0 and "medicare" not in ids) else ""}> '
        f'{_e(pid)} <span class="muted">{_e(names[pid])}</span></label>' for i, pid in enumerate(ids))
    text = service.page.substitute(version=_e(__version__), payer_checks=checks,
                                   payer_options="".join(f'<option value="{_e(p)}">{_e(p)}</option>' for p in ids),
                                   token_needed="true" if service.token else "false")
    return _html(text)


def _html(text: str) -> HTMLResponse:
    """The page or one of its fragments: nothing from another site, no inline script (pasted text cannot
    run even where a fragment is opened as a document), never framed."""
    return HTMLResponse(text, headers={"Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
                                       "X-Content-Type-Options": "nosniff"})


async def static(request: Request, service: Service) -> Response:
    name = request.path_params["name"]
    types = {"app.js": "text/javascript", "style.css": "text/css"}
    if name not in types:
        raise Refused(404, "not found")
    return Response((WEB_DIR / name).read_bytes(), media_type=types[name],
                    headers={"Cache-Control": "no-cache"})


def _session_of(body: dict) -> Any:
    """The page sends a session as fields ("session") or as pasted JSON/YAML ("text")."""
    if "text" in body:
        return _pasted(body["text"])
    return body.get("session")


def _pasted(text: Any) -> Any:
    if not isinstance(text, str):
        raise Refused(400, "text: give the session as JSON or YAML text")
    from .yamlload import load_text
    try:
        return load_text(text, "pasted session").data
    except PayrulesError as exc:
        raise Refused(422, str(exc)) from None


async def ui_check(request: Request, service: Service) -> Response:
    body = _refuse_repeated(await service.body(request))
    if not isinstance(body, dict):
        raise Refused(400, 'give {"session": {...} or "text": "...", "payers": [...]}')
    session = _session_of(body)
    payer_ids = body.get("payers") or []
    if not payer_ids:
        raise Refused(400, "choose at least one payer")
    result = service.book.compare(session, payer_ids, date=body.get("date") or None)
    _ids(request, result)
    return _html(render_compare(result, service.year))


async def ui_explain(request: Request, service: Service) -> Response:
    body = _refuse_repeated(await service.body(request))
    if not isinstance(body, dict) or not isinstance(body.get("payer"), str):
        raise Refused(400, 'give {"session": {...} or "text": "...", "payer": "id"}')
    session = _session_of(body)
    doc = service.book.explain(session, payer=body["payer"], date=body.get("date") or None)
    _ids(request, doc)
    return _html(render_explain(doc, explain_text(service.book, session, body["payer"], body.get("date"))))


async def ui_batch(request: Request, service: Service) -> Response:
    body = _refuse_repeated(await service.body(request))
    if not isinstance(body, dict) or not isinstance(body.get("text"), str):
        raise Refused(400, 'give {"name": "day.csv", "text": "..."}')
    name = _file_name(body.get("name"), "upload.jsonl")
    with tempfile.TemporaryDirectory(prefix="payrules-upload-") as folder:
        path = Path(folder) / name
        path.write_text(body["text"], encoding="utf-8")
        try:
            sessions, _ = load_sessions(str(path))
        except PayrulesError as exc:
            raise Refused(422, str(exc).replace(str(path), name)) from None
    counts, records = Counts(), []
    # billed as `payrules bill` bills the file (each patient's sessions in date order)
    for category, record in await service.billed(sessions, None, None, lambda n: ": upload fewer sessions"):
        counts.add(category)
        text = dumps(record)
        records.append(orjson.loads(text.replace(str(path).encode(), name.encode())) if str(path).encode() in text
                       else record)
    _ids(request, *records)
    return _html(render_batch(records, counts, name))


def _file_name(value: Any, default: str) -> str:
    """An uploaded file's name as a plain file name (its extension chooses the format), else `default`."""
    name = Path(value).name if isinstance(value, str) and "\0" not in value else ""
    return name if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._ -]{0,99}", name) else default


async def ui_validate(request: Request, service: Service) -> Response:
    body = _refuse_repeated(await service.body(request))
    if not isinstance(body, dict) or not isinstance(body.get("text"), str):
        raise Refused(400, 'give {"text": "payer YAML"}')
    name = _file_name(body.get("name"), "pasted.yaml")
    if not name.endswith((".yaml", ".yml")):
        name += ".yaml"
    errors = validate_text(service.book, body["text"], name)
    return _html(render_validate(errors, name))


def validate_text(book: RuleBook, text: str, name: str) -> list[str]:
    """`payrules validate` of one payer file with this text, beside the service's rules trees (so that
    what it extends is found): its error lines, FILE:LINE: first."""
    from .loader import PayerFile, Registry
    with tempfile.TemporaryDirectory(prefix="payrules-validate-") as folder:
        path = Path(folder) / name
        path.write_text(text, encoding="utf-8")
        registry = Registry(list(book.rules), strict=False, extra_files=[PayerFile(path, name)])
        return [str(e) for e in registry.errors() if e.file == name]


def explain_text(book: RuleBook, session: Any, payer: str, date: str | None) -> str | None:
    """`payrules explain` text of one session (the arithmetic step by step, the patient's year), or None when
    it cannot be billed: billed as RuleBook.explain bills it (engine/patients.explain_in_order)."""
    from .explain import explain_text as text_of
    from .patients import explain_in_order
    parsed = _parse(session, 1)
    with book._lock:
        outcome, steps = explain_in_order([parsed], book._biller, payer, date or None)[0]
    return None if isinstance(outcome, dict) else text_of(outcome, [], steps)


# --- rendering (HTML fragments from the JSON answers, generic over their fields) --------------------
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_text(v)}" for k, v in value.items())
    return str(value)


def _table(rows: list, first: tuple, caption: str, last: tuple = ("rules",)) -> str:
    """A table of dicts: the `first` columns, then every other key in order of appearance, then `last`."""
    if not rows:
        return ""
    keys = [k for k in first if any(k in r for r in rows)]
    tail = [k for k in last if any(k in r for r in rows)]
    for row in rows:
        keys += [k for k in row if k not in keys and k not in tail]
    keys += tail
    head = "".join(f'<th scope="col">{_e(k)}</th>' for k in keys)
    body = "".join("<tr>" + "".join(f'<td data-col="{_e(k)}">{_e(_text(r.get(k)))}</td>' for k in keys) + "</tr>"
                   for r in rows)
    return f'<table><caption>{_e(caption)}</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def counter_rules(book: RuleBook) -> dict:
    """Payer id -> the ids of its counter thresholds (KX, visit limits) in any of its versions: the trace
    entries the page shows as the patient's year, as the command's table does."""
    year: dict = {}
    for payer in book._registry.all_payers():
        year.setdefault(payer.id, set()).update(t.id for c in payer.counters for t in c.thresholds)
    return year


def session_amount(result: dict) -> str | None:
    """The sum of the lines' amounts (exact, from their decimal text), or None when none is priced."""
    amounts = [Decimal(str(line["amount"])) for line in result.get("lines", ()) if "amount" in line]
    return money(sum(amounts)) if amounts else None


def render_result(result: dict, year: Any = ()) -> str:
    """A result as the page shows it; `year`: the ids of the payer's counter thresholds (counter_rules)."""
    if "error" in result:
        return f'<p class="error" role="alert">Not billed: {_e(result["error"])}</p>'
    lines = [{**line, "amount": money(Decimal(str(line["amount"])))} if "amount" in line else line
             for line in result.get("lines", [])]
    parts = [_table(lines, ("code", "units", "minutes", "modifiers", "amount"), "Claim lines")]
    if not result.get("lines"):
        parts.append("<p>No billable lines.</p>")
    parts.append(_table(result.get("unbilled", []), ("code", "minutes", "reason"), "Not billed"))
    totals = {k: v for k, v in result.items() if k.startswith("total_")}
    if session_amount(result) is not None:
        totals["amount"] = session_amount(result)
    parts.append('<p class="totals">' + " · ".join(f"{_e(k.replace('_', ' '))}: <b>{_e(v)}</b>"
                                                 for k, v in totals.items()) + "</p>")
    steps = [t for t in result.get("trace", ()) if t.get("rule") in year]
    if steps:       # the running totals of the patient's year that acted on this session (KX, limits)
        parts.append('<ul class="year" aria-label="the patient\'s year">' + "".join(
            f'<li>Patient\'s year: {_e(t["rule"])}: {_e(t.get("effect", ""))} <span class="muted">'
            f'{_e(t.get("source", ""))}</span></li>' for t in steps) + "</ul>")
    warnings = result.get("warnings", [])
    for severity in ("error", "warning", "info"):
        group = [w for w in warnings if w.get("severity") == severity]
        if group:
            items = "".join(f'<li><span class="badge {severity}">{severity}</span> {_e(w.get("message", ""))}'
                            + "".join(f' <span class="muted">{_e(k)}: {_e(_text(w[k]))}</span>'
                                      for k in w if k not in ("severity", "message")) + "</li>" for w in group)
            parts.append(f'<ul class="warnings {severity}" aria-label="{severity}s">{items}</ul>')
    trace = result.get("trace", [])
    if trace:
        parts.append(f"<details><summary>Trace ({len(trace)} steps)</summary>"
                     f"{_table(trace, ('rule', 'source', 'facts', 'effect'), 'Rules applied', ())}</details>")
    return "".join(parts)


def render_compare(c: dict, year_of: dict | None = None) -> str:
    """The compare table (units by payer, with each payer's modifier sets when the rows carry them; a
    cell that differs from the base payer's highlighted) above each payer's result, side by side."""
    payer_ids, base = c["payers"], c.get("base", c["payers"][0])
    differs = set(c.get("differs", [])) | set(c.get("modifiers_differ", []))
    head = "".join(f'<th scope="col">{_e(p)}{" (base)" if p == base else ""}</th>' for p in payer_ids)
    rows = []
    for row in c["rows"]:
        cells = []
        for p in payer_ids:
            units = row["units"].get(p)
            sets = (row.get("modifiers") or {}).get(p) or []
            other = units != row["units"].get(base) or sets != (row.get("modifiers") or {}).get(base, sets)
            detail = ", ".join(f'{" ".join(s["modifiers"]) or "no modifier"} x{s["units"]}' for s in sets
                               if isinstance(s, dict) and "modifiers" in s and "units" in s)
            cells.append(f'<td class="{"diff" if other else ""}" data-payer="{_e(p)}">'
                         f'{"—" if units is None else _e(units)}'
                         f'{f" <span class=muted>({_e(detail)})</span>" if detail else ""}</td>')
        cls = ' class="differs"' if row["code"] in differs else ""
        rows.append(f'<tr{cls}><th scope="row">{_e(row["code"])}</th><td>{_e(row["minutes"])}</td>{"".join(cells)}</tr>')
    totals = "".join(f'<td class="{"diff" if c["totals"].get(p) != c["totals"].get(base) else ""}" '
                     f'data-payer="{_e(p)}" data-total="1"><b>{"—" if c["totals"].get(p) is None else _e(c["totals"][p])}</b></td>'
                     for p in payer_ids)
    summary = (f'<table class="compare"><caption>Session {_e(c["session_id"])}: units by payer'
               f'{"; differences highlighted" if differs else "; all payers agree"}</caption>'
               f'<thead><tr><th scope="col">code</th><th scope="col">minutes</th>{head}</tr></thead>'
               f'<tbody>{"".join(rows)}<tr class="total"><th scope="row">total units</th><td></td>{totals}</tr></tbody></table>')
    cards = "".join(
        f'<section class="payer" aria-label="payer {_e(p)}"><h3>{_e(p)}</h3>{render_result(c["results"][p], (year_of or {}).get(p, ()))}'
        f'<button type="button" class="explain" data-payer="{_e(p)}">Explain {_e(p)}</button></section>'
        for p in payer_ids)
    return f'{summary}<div class="side-by-side">{cards}</div>'


def render_explain(doc: dict, text: str | None) -> str:
    if "error" in doc:
        return f'<p class="error" role="alert">Not billed: {_e(doc["error"])}</p>'
    parts = [f'<h3>Why {_e(doc["payer"])} billed session {_e(doc["session_id"])} this way</h3>']
    if text:
        parts.append(f'<pre class="explain-text" tabindex="0">{_e(text)}</pre>')
    parts.append(_table(doc.get("firings", []), ("rule", "description", "source", "location", "effect"),
                        "Rules that fired, with their source and file:line", ("facts",)))
    return "".join(parts)


def render_batch(records: list, counts: Counts, name: str) -> str:
    data = b"".join(dumps(r) + b"\n" for r in records)
    href = "data:application/x-ndjson;base64," + base64.b64encode(data).decode()
    download = Path(name).stem + ".results.jsonl"
    rows = []
    for r in records:
        if "error" in r:
            rows.append({"session_id": r["session_id"], "status": "not billed", "message": r["error"]})
        else:
            errors = [w["message"] for w in r["warnings"] if w["severity"] == "error"]
            rows.append({"session_id": r["session_id"], "payer": r["payer"], "status": "error" if errors else "billed",
                         "total_units": r["total_units"],
                         **({"amount": session_amount(r)} if session_amount(r) is not None else {}),
                         "lines": " ".join(f'{l["code"]}x{l["units"]}' for l in r["lines"]), "message": "; ".join(errors)})
    return (f'<p class="summary" role="status">{_e(name)}: {counts.read} sessions: <b>{counts.billed}</b> billed, '
            f'<b>{counts.with_errors}</b> with errors, <b>{counts.failed_to_parse}</b> failed to parse</p>'
            f'<p><a class="download" href="{href}" download="{_e(download)}">Download the results ({_e(download)})</a></p>'
            + _table(rows, ("session_id", "payer", "status", "total_units", "amount", "lines", "message"), "Sessions",
                     ()))


def render_validate(errors: list, name: str) -> str:
    if not errors:
        return f'<p class="ok" role="status">ok   {_e(name)}: no mistakes found</p>'
    items = "".join(f"<li><code>{_e(line)}</code></li>" for line in errors)
    return f'<p class="error" role="alert">{len(errors)} mistake(s) in {_e(name)}:</p><ul class="errors">{items}</ul>'


# --- OpenAPI -----------------------------------------------------------------------------------------
def _schema(name: str, prefix: str, components: dict) -> dict:
    """A JSON schema of schemas/ as OpenAPI 3.1 components: its $defs become `Prefix_def` and every
    "#/$defs/..." reference points there."""
    schema = json.loads((SCHEMAS_DIR / name).read_text(encoding="utf-8"))

    def fix(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if key in ("$schema", "$id", "$defs"):
                    continue
                if key == "$ref" and isinstance(value, str):
                    out[key] = ("#/components/schemas/" + prefix if value == "#"
                                else value.replace("#/$defs/", f"#/components/schemas/{prefix}_"))
                else:
                    out[key] = fix(value)
            return out
        if isinstance(node, list):
            return [fix(v) for v in node]
        return node

    for key, value in schema.get("$defs", {}).items():
        components[f"{prefix}_{key}"] = fix(value)
    components[prefix] = fix(schema)
    return schema


def openapi_document() -> dict:
    components: dict = {}
    _schema("session.schema.json", "Session", components)
    _schema("result.schema.json", "Result", components)
    components["Error"] = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
    components["CompareRequest"] = {
        "type": "object", "required": ["session", "payers"],
        "properties": {"session": {"$ref": "#/components/schemas/Session"},
                       "payers": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                       "base": {"type": "string", "description": "the payer the others are measured against"},
                       "date": {"type": "string", "format": "date"}}}
    components["PageRequest"] = {"type": "object", "description": "what the web page sends",
                                 "properties": {"session": {"$ref": "#/components/schemas/Session"},
                                                "text": {"type": "string"}, "payers": {"type": "array", "items": {"type": "string"}},
                                                "payer": {"type": "string"}, "name": {"type": "string"}}}

    def ref(name: str) -> dict:
        return {"$ref": f"#/components/schemas/{name}"}

    def answer(description: str, schema: dict | None = None, media: str = "application/json") -> dict:
        out: dict = {"description": description}
        if schema is not None:
            out["content"] = {media: {"schema": schema}}
        return out

    errors = {"400": answer("malformed JSON or a bad request", ref("Error")),
              "401": answer("a bearer token is required (PAYRULES_TOKEN) and was missing or wrong", ref("Error")),
              "403": answer("refused: a POST from another site's page (Origin), or a Host that is not the "
                            "loopback address the service is bound to", ref("Error")),
              "408": answer("the body did not arrive within the time limit", ref("Error")),
              "413": answer("the body is over the size limit", ref("Error"))}
    query = [{"name": "payer", "in": "query", "required": False, "schema": {"type": "string"},
              "description": "bill under this payer whatever the session's own (--payer)"},
             {"name": "date", "in": "query", "required": False, "schema": {"type": "string"},
              "description": "date of service for the session(s) (--date), YYYY-MM-DD"}]
    json_body = lambda schema: {"required": True, "content": {"application/json": {"schema": schema}}}  # noqa: E731
    any_json = {"type": "object"}
    by_payer = lambda schema: {"type": "object", "additionalProperties": schema}  # noqa: E731
    components["CompareResult"] = {
        "type": "object", "required": ["session_id", "payers", "base", "results", "rows", "totals", "differs"],
        "properties": {"session_id": {"type": "string"}, "payers": {"type": "array", "items": {"type": "string"}},
                       "base": {"type": "string"}, "results": by_payer(ref("Result")),
                       "rows": {"type": "array", "items": {
                           "type": "object", "required": ["code", "units"],
                           "properties": {"code": {"type": "string"}, "minutes": {"type": "integer"},
                                          "units": by_payer({"type": ["integer", "null"]}),
                                          "modifiers": by_payer({"type": "array"})}}},
                       "totals": by_payer({"type": ["integer", "null"]}),
                       "differs": {"type": "array", "items": {"type": "string"}},
                       "modifiers_differ": {"type": "array", "items": {"type": "string"}}}}
    components["Explanation"] = {
        "type": "object", "required": ["session_id", "payer", "firings", "result"],
        "properties": {"session_id": {"type": "string"}, "payer": {"type": "string"},
                       "payer_name": {"type": "string"}, "method": {"type": "object"},
                       "firings": {"type": "array", "items": {"type": "object"}},
                       "modifiers": {"type": "array"}, "unbilled": {"type": "array"}, "edits": {"type": "array"},
                       "why_not": {"type": "array"}, "result": ref("Result")}}
    paths = {
        "/v1/bill": {"post": {
            "summary": "Bill a session, or a list of sessions (payrules bill --format json)",
            "description": "A list is billed as `payrules bill` bills a file of it: each patient's sessions "
                           "(patient_id) in date-of-service order, with the patient's year and the edits across "
                           "its sessions of one date, whatever the list's order; the records in input order.",
            "parameters": query,
            "requestBody": json_body({"oneOf": [ref("Session"), {"type": "array", "items": ref("Session")}]}),
            "responses": {"200": answer("the result, or a list of results and error records",
                                        {"oneOf": [ref("Result"), {"type": "array", "items": ref("Result")}]}),
                          "422": answer("the one session could not be billed: its error record", ref("Result")),
                          "503": answer("the time limit was reached billing a list", ref("Error")), **errors}}},
        "/v1/compare": {"post": {
            "summary": "One session under several payers (payrules compare --format json)",
            "requestBody": json_body(ref("CompareRequest")),
            "responses": {"200": answer("the compare JSON", ref("CompareResult")), **errors}}},
        "/v1/explain": {"post": {
            "summary": "How one session was billed (payrules explain --format json)",
            "parameters": query + [{"name": "why_not", "in": "query", "required": False,
                                    "schema": {"type": "array", "items": {"type": "string"}},
                                    "description": "rule ids: say which condition of each failed (--why-not)"}],
            "requestBody": json_body(ref("Session")),
            "responses": {"200": answer("the explain JSON", ref("Explanation")),
                          "422": answer("the session could not be billed: its error record", ref("Result")), **errors}}},
        "/v1/payers": {"get": {"summary": "The known payers (payrules payers --format json)",
                               "responses": {"200": answer("every version of every payer",
                                                           {"type": "array", "items": any_json}),
                                             "401": errors["401"], "403": errors["403"]}}},
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": answer(
            "ok", {"type": "object", "properties": {"status": {"const": "ok"}}}), "403": errors["403"]}}},
        "/openapi.json": {"get": {"summary": "This document", "responses": {"200": answer("OpenAPI 3.1", any_json),
                                                                             "403": errors["403"]}}},
        "/": {"get": {"summary": "The web page for billing staff",
                      "responses": {"200": answer("HTML", {"type": "string"}, "text/html"), "403": errors["403"]}}},
    }
    for path, summary in (("/ui/check", "page: results per payer side by side (HTML)"),
                          ("/ui/explain", "page: the explanation for one payer (HTML)"),
                          ("/ui/batch", "page: a CSV or JSONL batch billed, with its summary (HTML)"),
                          ("/ui/validate", "page: validate's errors for a pasted payer YAML (HTML)")):
        paths[path] = {"post": {"summary": summary, "requestBody": json_body(ref("PageRequest")),
                                "responses": {"200": answer("an HTML fragment", {"type": "string"}, "text/html"),
                                              "422": answer("the input could not be read", ref("Error")), **errors}}}
        if path == "/ui/batch":
            paths[path]["post"]["responses"]["503"] = answer("the time limit was reached billing the file", ref("Error"))
    for operations in paths.values():       # those the token guards (401) take it, when the service has one
        for operation in operations.values():
            if "401" in operation["responses"]:
                operation["security"] = [{"bearer": []}, {}]
    return {"openapi": "3.1.0",
            "info": {"title": "payer-rules", "version": __version__,
                     "description": "Payer rules engine for outpatient therapy billing (design.md §8)."},
            "paths": paths, "components": {"schemas": components,
                                           "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}}


# --- the app -------------------------------------------------------------------------------------------
def _foreign(request: Request, local_only: bool) -> str | None:
    """Why a request that a web page of another site may have made is refused, or None. A browser sends
    Origin with a cross-site POST (a form, or fetch() with text/plain that needs no preflight): it must be
    this service's own. Bound to loopback (`local_only`), the Host must be a loopback name: otherwise
    evil.example resolved to 127.0.0.1 (DNS rebinding) would be the same origin as the service."""
    host = request.headers.get("host", "")
    if local_only and not is_loopback(host.rpartition(":")[0] if host.rpartition(":")[2].isdigit() else host):
        return f"host {clean(host)[:100]!r} refused: this service answers only on its loopback address"
    origin = request.headers.get("origin")
    if request.method == "POST" and origin is not None and origin != f"{request.url.scheme}://{host}":
        return f"cross-site request refused: Origin {clean(origin)[:100]!r} is not this service"
    return None


def create_app(book: RuleBook, token: str | None = None, local_only: bool = False, **limits: Any) -> Starlette:
    """The app over `book`: every request answered by this one book, in the event-loop thread. `local_only`:
    the service is bound to a loopback address, and answers only requests addressed to it."""
    service = Service(book, token, **limits)

    def endpoint(handler, guarded: bool = True):
        async def run(request: Request) -> Response:
            refused = _foreign(request, local_only)
            if refused:
                return _error(403, refused)
            if guarded and not service.authorised(request):
                return _error(401, "a bearer token is required: Authorization: Bearer $PAYRULES_TOKEN")
            try:
                return await handler(request, service)
            except Refused as exc:
                return _error(exc.status, exc.message)
            except PayrulesError as exc:        # what the command reports as `error: ...` with exit code 2
                return _error(400, clean(str(exc)))
            except RecursionError:
                return _error(400, "input nested too deeply")
        return run

    routes = [Route("/v1/bill", endpoint(bill), methods=["POST"]),
              Route("/v1/compare", endpoint(compare), methods=["POST"]),
              Route("/v1/explain", endpoint(explain), methods=["POST"]),
              Route("/v1/payers", endpoint(payers), methods=["GET"]),
              Route("/healthz", endpoint(healthz, False), methods=["GET"]),
              Route("/openapi.json", endpoint(openapi, False), methods=["GET"]),
              Route("/", endpoint(page, False), methods=["GET"]),
              Route("/static/{name}", endpoint(static, False), methods=["GET"]),
              Route("/ui/check", endpoint(ui_check), methods=["POST"]),
              Route("/ui/explain", endpoint(ui_explain), methods=["POST"]),
              Route("/ui/batch", endpoint(ui_batch), methods=["POST"]),
              Route("/ui/validate", endpoint(ui_validate), methods=["POST"])]

    async def http_error(request: Request, exc: HTTPException) -> Response:
        return _error(exc.status_code, exc.detail if isinstance(exc.detail, str) else "error")

    async def internal_error(request: Request, exc: Exception) -> Response:
        return _error(500, "internal error")

    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: internal_error})
    app.state.service = service
    return _Guard(app)


class _Guard:
    """Outermost ASGI layer: one log line per request (method, path, status, duration, session ids) and
    `{"error": "internal error"}` 500 for anything unexpected, never a traceback."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.state = app.state

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), [0]

        async def sending(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:        # noqa: BLE001 - the answer must never be a traceback
            LOG.error("%s %s internal error: %s", scope["method"], clean(scope["path"])[:200], type(exc).__name__)
            if not status[0]:
                status[0] = 500
                body = dumps({"error": "internal error"})
                await send({"type": "http.response.start", "status": 500,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
        ids = scope.get("payrules.ids", [])
        shown = ",".join(clean(str(i))[:128] for i in ids[:MAX_LOGGED_IDS])
        more = f" (+{len(ids) - MAX_LOGGED_IDS} more)" if len(ids) > MAX_LOGGED_IDS else ""
        LOG.info("%s %s %d %.1fms%s", scope["method"], clean(scope["path"])[:200], status[0],
                 (time.perf_counter() - started) * 1000, f" sessions={shown}{more}" if ids else "")


def worker_app() -> Any:
    """The app of one worker process (uvicorn --workers N > 1 calls this in each): its own RuleBook."""
    config = json.loads(os.environ[CONFIG_ENV])
    _configure_logging()
    app = create_app(RuleBook(config["rules"], config["engine"]), os.environ.get(TOKEN_ENV), config["local_only"])
    _settle()
    return app


def _settle() -> None:
    """The rules just loaded, compiled and built stay for the process's life: out of the garbage
    collector's sight (gc.freeze), so that its full collections do not walk them again under load."""
    gc.collect()
    gc.freeze()


def _configure_logging() -> None:
    if not LOG.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        LOG.addHandler(handler)
        LOG.setLevel(logging.INFO)
        LOG.propagate = False


def serve(host: str, port: int, rules: list, engine: str | None, workers: int) -> int:
    """Check the rules (a broken file raises PayrulesError before anything listens), then serve."""
    from .errors import UsageError
    token = os.environ.get(TOKEN_ENV) or None
    if token and not re.fullmatch(r"[A-Za-z0-9._~+/=-]+", token):
        raise UsageError(f"{TOKEN_ENV}: use letters, digits and - . _ ~ + / = only (it is sent in an HTTP "
                         "header, Authorization: Bearer ...)")
    if not is_loopback(host) and not token:
        raise UsageError(f"--host {host} is not a loopback address: set {TOKEN_ENV} to the bearer token "
                         "that clients must send (Authorization: Bearer ...)")
    book = RuleBook(rules, engine)          # every rule file read, checked and compiled here
    _check_address(host, port)
    _configure_logging()
    options = dict(host=host, port=port, access_log=False, log_level="info", timeout_keep_alive=30,
                   server_header=False)
    if workers == 1:
        app = create_app(book, token, is_loopback(host))
        _settle()
        uvicorn.run(app, **options)
        return 0
    book.close()                            # each worker builds its own
    os.environ[CONFIG_ENV] = json.dumps({"rules": list(book.rules), "engine": book.engine,
                                         "local_only": is_loopback(host)})
    multiprocess.Process = _Worker          # this process only serves: its workers start with Ctrl-C ignored
    config = _TcpConfig(f"{__name__}:worker_app", factory=True, workers=workers, **options)
    multiprocess.Multiprocess(config, sockets=[config.bind_socket()]).run()
    return 0


def _check_address(host: str, port: int) -> None:
    """An address that cannot be listened on (in use, not this machine's, not a host name) is the one
    line of a usage error, exit 2, before uvicorn starts (it would log and exit 3)."""
    from .errors import UsageError
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


class _Worker(multiprocess.Process):
    """A worker process started with SIGINT ignored (inherited through exec): Ctrl-C signals the whole
    process group, and a worker still importing the engine died of KeyboardInterrupt with a traceback.
    The parent stops its workers itself (SIGTERM); a serving worker's uvicorn handles SIGINT and SIGTERM
    as before, and re-raises SIGINT, ignored, after its graceful shutdown."""

    def start(self) -> None:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            super().start()
        finally:
            signal.signal(signal.SIGINT, previous)


class _TcpConfig(uvicorn.Config):
    """uvicorn's Config whose shared listening socket (--workers N > 1) says it is TCP. uvicorn makes it
    with protocol 0, the connections accepted from it inherit that, and asyncio then leaves Nagle's
    algorithm on for them (it sets TCP_NODELAY only on sockets whose protocol is TCP): the response's body,
    written after its head, waited for the client's delayed ACK, 40 ms a request (benchmarks/service_bench.py
    measured p50 44 ms at 1 client with --workers 2, 0.3 ms with 1)."""

    def bind_socket(self) -> socket.socket:
        sock = super().bind_socket()
        if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.proto != socket.IPPROTO_TCP:
            sock = socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())
            sock.set_inheritable(True)
        return sock
