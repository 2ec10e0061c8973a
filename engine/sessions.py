"""Session input → Session models, streamed: YAML or JSON (one session or a list), JSONL, and CSV of
service lines (one row per service, grouped into sessions by consecutive session_id), from files or
standard input.

Every session read yields exactly one item — a Session, or a SessionError in its place — so counts
always add up. JSONL, JSON lists and CSV are read record by record, so memory stays flat however long
the input; YAML is read whole (up to MAX_INPUT_BYTES). Only an input that cannot be read at all raises
(UsageError, exit 2).
"""
from __future__ import annotations

import codecs
import csv
import io
import json
import os
import re
import stat
import sys
from operator import itemgetter

from .errors import SessionError, UsageError, date_problem, is_date, suggest
from .model import NO_CONTEXT, Service, Session
from .schema import position, schema_errors
from .yamlload import Located, format_path, load_text

MAX_INPUT_BYTES = 8 * 1024 * 1024           # a YAML input, read whole (PyYAML takes ~80x its size in memory)
MAX_RECORD_BYTES = 16 * 1024 * 1024         # one JSONL line, JSON list element or CSV session
# a CSV cell may be as long as a record (the csv module's own limit, 128 KB, would make each row of a session
# with a long cell an error of its own)
csv.field_size_limit(MAX_RECORD_BYTES)
MAX_SERVICES = 200                          # services of one session (schemas/session.schema.json)
MAX_DAY_MINUTES = 1440                      # all services of a session together (a patient's day)
FORMATS = ("auto", "yaml", "json", "jsonl", "csv")
CSV_COLUMNS = ("session_id", "payer", "date_of_service", "discipline", "patient_id", "code", "minutes", "group_size",
               "provider", "modifiers")
CSV_SESSION_FIELDS = ("payer", "date_of_service", "discipline", "patient_id")
_CHUNK = 1 << 16


class ParseError(SessionError):
    """A record that could not be read as a session at all (malformed JSON, not UTF-8, ...)."""


class RawLine(tuple):
    """A JSONL line not parsed yet: with --jobs, the workers parse it, not the reading process.
    RawLine((raw bytes, file name shown in messages, line number, session number)): a plain tuple
    underneath, so that sending thousands to a worker costs no Python call each."""

    __slots__ = ()
    raw, display, lineno, number = (property(itemgetter(i)) for i in range(4))

    def parse(self):
        number, lineno, display = self.number, self.lineno, self.display
        try:
            text = self.raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            data = json.loads(text)
        except UnicodeDecodeError:
            return ParseError("not UTF-8 text", display, lineno, session_id=f"session-{number}")
        except ValueError as exc:
            return ParseError(f"malformed JSON: {exc}", display, lineno, session_id=f"session-{number}")
        except RecursionError:
            return ParseError("JSON nested too deeply", display, lineno, session_id=f"session-{number}")
        return parse_session(data, Located(data, {(): lineno}, display), (), number, text)


class _Unreadable(ParseError):
    """Malformed JSON inside a JSON list: where the next session starts cannot be known."""


MAX_CONTEXT_DEPTH = 8


def _depth(value, limit: int) -> int:
    """Nesting depth of plain data, counted up to `limit` + 1 (no deeper walk)."""
    if limit < 0 or not isinstance(value, (dict, list)):
        return 0
    items = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(v, limit - 1) for v in items), default=0)


def open_input(name: str):
    """The byte stream of an input file, or of standard input for '-'; UsageError when it cannot be read."""
    try:
        return sys.stdin.buffer if name == "-" else open(name, "rb")
    except OSError as exc:
        raise UsageError(f"cannot read input: {exc.strerror}", name) from None


def check_input(name: str) -> None:
    """UsageError now for an input file that cannot be read. A pipe (a FIFO, `<(...)`) is not opened
    before its turn: opened and closed, it could lose its writer."""
    try:
        if name == "-" or stat.S_ISFIFO(os.stat(name).st_mode):
            return
    except OSError:
        pass                # open_input says why
    open_input(name).close()


class SessionInput:
    """One input (file or '-'), iterated as Session / SessionError items. `single` is true when the
    input is one session object (then `bill --format json` writes an object, not a list)."""

    def __init__(self, name: str, fmt: str = "auto", start: int = 1, defer: bool = False, chunk: int = _CHUNK):
        self.name = name
        self.chunk = chunk          # bytes read at a time (tests read with every size)
        self.defer = defer          # JSONL and JSON lists: yield RawLine items, parsed where they are billed
        self.display = "<stdin>" if name == "-" else name
        self.start = start
        self.count = 0
        self.stream = open_input(name)
        self.head = self.stream.read(chunk)
        self.format = fmt if fmt != "auto" else self._detect()
        self.single = False

    def _detect(self) -> str:
        lower = self.display.lower()
        for ext, fmt in ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".csv", "csv"), (".json", "json"),
                         (".yaml", "yaml"), (".yml", "yaml")):
            if lower.endswith(ext):
                return fmt
        if _looks_like_csv(self.head):
            return "csv"
        text = self.head.lstrip(codecs.BOM_UTF8).lstrip()
        if not text and len(self.head) < self.chunk:     # an input of nothing (or white space): no session
            return "jsonl"
        if text.startswith(b"["):
            return "json"
        if text.startswith(b"{"):
            whole = len(self.head) < self.chunk         # a read gives less only at the end of the input
            while b"\n" not in text and not whole and len(text) <= MAX_RECORD_BYTES:    # the whole first line
                more = self.stream.read(self.chunk)
                whole = len(more) < self.chunk
                self.head += more
                text += more
            first, _, rest = text.partition(b"\n")
            try:
                json.loads(first)
                return "jsonl" if rest.strip() else "json"
            except (ValueError, RecursionError):
                return "jsonl" if _breaks_at_a_record(text, whole) else "json"
        return "yaml"

    def close(self):
        if self.stream is not sys.stdin.buffer:
            self.stream.close()

    def __iter__(self):
        try:
            reader = {"yaml": self._yaml, "json": self._json, "jsonl": self._jsonl, "csv": self._csv}[self.format]
            for item in reader():
                self.count += 1
                yield item
        finally:
            self.close()

    def _number(self) -> int:
        return self.start + self.count

    # --- YAML (whole document) ------------------------------------------------------------------------
    def _yaml(self):
        data = self.head + self.stream.read(MAX_INPUT_BYTES + 1 - len(self.head))
        if len(data) > MAX_INPUT_BYTES:
            raise UsageError(f"YAML input larger than {MAX_INPUT_BYTES} bytes: use JSONL or CSV for large batches",
                             self.display)
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise UsageError("input is not UTF-8 text", self.display, data[:exc.start].count(b"\n") + 1) from None
        doc = load_text(text, self.display, UsageError)
        if isinstance(doc.data, dict):
            self.single = True
            yield parse_session(doc.data, doc, (), self._number())
        elif isinstance(doc.data, list):
            for i, item in enumerate(doc.data):
                yield parse_session(item, doc, (i,), self._number())
        else:
            raise UsageError("input must hold a session (a mapping) or a list of sessions", self.display,
                             doc.line_of(()))

    # --- JSON: one object, or a list streamed element by element --------------------------------------
    def _json(self):
        scanner = _JsonScanner(_Prefixed(self.head, self.stream), self.display, self.chunk)
        for kind, line, raw in scanner.values():
            self.single = kind == "single"
            item = self._json_item(line, raw, kind == "item")
            yield item
            if isinstance(item, _Unreadable):
                if not self.single:
                    raise UsageError(f"the rest of the JSON list cannot be read after the malformed session at "
                                     f"line {item.line}", self.display, item.line)
                return

    def _json_item(self, line: int, raw, element: bool = False):
        number = self._number()
        sid = f"session-{number}"
        if raw is None:
            return _Unreadable(f"session longer than {MAX_RECORD_BYTES} bytes", self.display, line, session_id=sid)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        try:
            data = json.loads(raw.decode("utf-8", "replace") if text is None else text)
        except json.JSONDecodeError as exc:
            return _Unreadable(f"malformed JSON: {exc.msg} (line {line + exc.lineno - 1})", self.display, line,
                               session_id=sid)
        except RecursionError:
            return _Unreadable("JSON nested too deeply", self.display, line, session_id=sid)
        if text is None:    # well-formed JSON but for bytes that are not UTF-8: where it ends is known
            return ParseError("not UTF-8 text", self.display, line, session_id=sid)
        if element and self.defer:  # known to be JSON: parsed again where it is billed, only its bytes sent
            return RawLine((bytes(raw), self.display, line, number))
        return parse_session(data, Located(data, {(): line}, self.display), (), number, text)

    # --- JSONL: one session per line ------------------------------------------------------------------
    def _jsonl(self):
        for lineno, raw in _lines(_Prefixed(self.head, self.stream)):
            if raw is None:
                yield ParseError(f"line longer than {MAX_RECORD_BYTES} bytes", self.display, lineno,
                                 session_id=f"session-{self._number()}")
            elif (raw.removeprefix(codecs.BOM_UTF8) if lineno == 1 else raw).strip():     # not a blank line
                record = RawLine((raw, self.display, lineno, self._number()))
                yield record if self.defer else record.parse()

    # --- CSV of service lines: one row per line -------------------------------------------------------
    def _csv(self):
        """Service-line fields never hold a line break, so each line is parsed on its own: a quoted field
        that runs past its line spoils its row's session alone. A session holds at most MAX_SERVICES + 1
        rows; the rest are counted, so memory stays flat however many rows name one session."""
        lines = _lines(_Prefixed(self.head, self.stream))
        header = next(lines, None)
        if header is None:
            return
        columns = self._csv_header(header[1])
        group = []
        for lineno, raw in lines:
            cells, error = _csv_cells(raw, first=False)
            if error:
                # its session is known when its session_id cell comes before the broken one
                where = columns.index("session_id")
                record = {"session_id": cells[where].strip() if where < len(cells) else None, "_error": error}
            elif not any(cell.strip() for cell in cells):
                continue
            else:
                record = dict(zip(columns, (cell.strip() for cell in cells)))
                record["_width"] = len(cells)
            record["_line"] = lineno
            sid = record.get("session_id")
            if group and sid != group[0]["session_id"]:
                yield self._csv_session(group)
                group = []
            if sid:
                if len(group) <= MAX_SERVICES:
                    group.append(record)
                group[0]["_rows"] = group[0].get("_rows", 0) + 1
                continue
            # a row that names no session is an error of its own: joined to a session, it would pool
            # another patient's minutes
            number = self._number()
            if error:
                yield ParseError(error, self.display, lineno, session_id=f"session-{number}")
            else:
                yield SessionError("a row must name its session", self.display, lineno, "session_id",
                                   session_id=f"session-{number}")
        if group:
            yield self._csv_session(group)

    def _csv_header(self, raw) -> list:
        cells, error = _csv_cells(raw, first=True)
        if error:
            raise UsageError(f"malformed CSV header: {error.removeprefix('malformed CSV: ')}", self.display, 1)
        columns = [c.strip() for c in cells]
        for i, name in enumerate(columns):
            if name not in CSV_COLUMNS:
                raise UsageError(f"unknown CSV column {name!r}{suggest(name, CSV_COLUMNS)}; columns: "
                                 f"{', '.join(CSV_COLUMNS)}", self.display, 1)
            if name in columns[:i]:
                raise UsageError(f"CSV column {name!r} given more than once", self.display, 1)
        missing = [c for c in ("session_id", "code", "minutes") if c not in columns]
        if missing:
            raise UsageError(f"CSV needs the columns {', '.join(missing)}", self.display, 1)
        return columns

    def _csv_session(self, rows: list):
        number = self._number()
        line = rows[0]["_line"]
        sid = rows[0]["session_id"]
        if rows[0]["_rows"] > MAX_SERVICES:          # the schema's maxItems, with the rows not kept counted
            return SessionError(f"has {rows[0]['_rows']} items, at most {MAX_SERVICES} are allowed", self.display,
                                line, "services", session_id=sid)
        for r in rows:
            if "_error" in r:
                return ParseError(r["_error"], self.display, r["_line"], session_id=sid)
        if any("\udc80" <= ch <= "\udcff" for r in rows for v in r.values() if isinstance(v, str) for ch in v):
            readable = not any("\udc80" <= ch <= "\udcff" for ch in sid)
            return ParseError("not UTF-8 text", self.display, line, session_id=sid if readable else f"session-{number}")
        width = len(CSV_COLUMNS)
        for r in rows:
            if r["_width"] != len([c for c in r if not c.startswith("_")]) or r["_width"] > width:
                return ParseError("row has a different number of cells than the header", self.display, r["_line"],
                                  session_id=sid)
        data = {"session_id": sid}
        for key in CSV_SESSION_FIELDS:
            values = {r.get(key) for r in rows if r.get(key)}
            if len(values) > 1:
                bad = next(r for r in rows if r.get(key) and r.get(key) != rows[0].get(key))
                return SessionError(f"{key} differs between rows of the same session", self.display, bad["_line"],
                                    key, session_id=sid)
            if values:
                data[key] = values.pop()
        data["services"] = [{k: _csv_number(r[k]) if k in ("minutes", "group_size") else
                             r[k].replace(",", " ").split() if k == "modifiers" else r[k]
                             for k in ("code", "minutes", "group_size", "provider", "modifiers") if r.get(k)}
                            for r in rows]
        lines = {(): line}
        lines.update({("services", i): r["_line"] for i, r in enumerate(rows)})
        return parse_session(data, Located(data, lines, self.display), (), number)


def _lines(stream):
    """(line number, bytes with the line end) of each line of a byte stream; (number, None) for a line
    longer than MAX_RECORD_BYTES, which is skipped without being held."""
    stream = io.BufferedReader(stream, buffer_size=_CHUNK)
    lineno = 0
    while True:
        raw = stream.readline(MAX_RECORD_BYTES + 1)
        if not raw:
            return
        lineno += 1
        if len(raw) > MAX_RECORD_BYTES and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):          # skip the rest of the over-long line
                raw = stream.readline(MAX_RECORD_BYTES)
            raw = None
        yield lineno, raw


def _csv_cells(raw, first: bool) -> tuple:
    """(cells, error message or None) of one CSV line; with an error, the cells before the broken one."""
    if raw is None:
        return [], f"line longer than {MAX_RECORD_BYTES} bytes"
    text = raw.decode("utf-8-sig" if first else "utf-8", "surrogateescape").rstrip("\r\n")
    try:
        return next(csv.reader([text], strict=True), []), None
    except csv.Error as exc:
        quote = text.find('"')
        before = text[:quote].split(",")[:-1] if quote >= 0 else []
        if "unexpected end of data" in str(exc):
            return before, "malformed CSV: a quoted field runs past the end of its line"
        return before, f"malformed CSV: {exc}"


def _looks_like_csv(head: bytes) -> bool:
    """A first line that is a CSV header of service lines: comma-separated known columns, with
    session_id, code and minutes among them (how CSV on standard input is recognised)."""
    cells, error = _csv_cells(head.split(b"\n", 1)[0], first=True)
    names = {c.strip() for c in cells}
    return not error and names <= set(CSV_COLUMNS) and {"session_id", "code", "minutes"} <= names


def _breaks_at_a_record(head: bytes, whole: bool) -> bool:
    """Whether an input whose first line is no JSON value by itself is JSONL (with a broken first line)
    rather than one session over several lines: it is not one JSON value (nor, when `head` is not the
    `whole` input, the start of one) and a later line is a JSON object by itself."""
    text = head.decode("utf-8", "replace")
    try:
        json.loads(text)
        return False
    except RecursionError:
        return False
    except ValueError as exc:
        # it may go on past what was read: an error at its end, or a string that runs to its end
        if not whole and (exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string")):
            return False
    for line in text.split("\n")[1:] if whole else text.split("\n")[1:-1]:
        try:
            if line.startswith("{") and type(json.loads(line)) is dict:
                return True
        except (ValueError, RecursionError):
            pass
    return False


def _csv_number(text: str):
    return int(text) if re.fullmatch(r"-?[0-9]{1,9}", text) else text


class _Prefixed(io.RawIOBase):
    """A byte stream that first gives back the bytes already read to detect the format."""

    def __init__(self, head: bytes, stream):
        self.head, self.stream = head, stream

    def readable(self):
        return True

    def readinto(self, buffer):
        if self.head:
            n = min(len(buffer), len(self.head))
            buffer[:n], self.head = self.head[:n], self.head[n:]
            return n
        data = self.stream.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


_SPACE = re.compile(rb"[ \t\r\n]*+")
# a run of bytes up to the next bracket, brace or (at the outer level: _RUN_OUTER) comma, whole strings
# and whole innermost lists and objects (a service) included; it stops at the '"' of a string, or at the
# bracket of a list or object, that goes on past the end of the buffer
_STRING = rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"'
_LEAF = rb'[\[{](?:[^"\[\]{}]++|' + _STRING + rb')*+[\]}]'
_RUN_OUTER = re.compile(rb'(?:[^"\[\]{},]++|' + _STRING + rb'|' + _LEAF + rb')*+', re.S)
_RUN_INNER = re.compile(rb'(?:[^"\[\]{}]++|' + _STRING + rb'|' + _LEAF + rb')*+', re.S)
# the rest of a string: it stops at its closing '"', or at a '\\' that is the last byte of the buffer
_STRING_REST = re.compile(rb'[^"\\]*+(?:\\.[^"\\]*+)*+', re.S)
_QUOTE, _OPEN, _COMMA = 0x22, b"[{", 0x2C


class _JsonScanner:
    """A JSON document read `chunk` bytes at a time and cut into the texts of its sessions: the one
    object, or each element of the list. Only strings, brackets, braces and commas are followed; each
    text is then decoded by json.loads, so values and errors are json's own. Memory: one session's text
    (up to MAX_RECORD_BYTES) and one chunk."""

    def __init__(self, stream, display: str, chunk: int = _CHUNK):
        self.stream, self.display, self.chunk = stream, display, chunk
        self.buf = bytearray()
        self.pos = 0                # the next byte to look at
        self.line = 1               # line of buf[0]
        self.eof = False

    def _more(self) -> bool:
        data = b"" if self.eof else self.stream.read(self.chunk)
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _next(self):
        """The next byte that is not white space (pos is put on it, the bytes before are let go), or
        None at the end of the input."""
        while True:
            self.pos = _SPACE.match(self.buf, self.pos).end()
            self.line += self.buf.count(b"\n", 0, self.pos)
            del self.buf[:self.pos]
            self.pos = 0
            if self.buf or not self._more():
                return self.buf[0] if self.buf else None

    def _fail(self, message: str):
        raise UsageError(message, self.display, self.line + self.buf.count(b"\n", 0, self.pos))

    def _value(self, whole: bool):
        """The text of the value at pos (bytes): up to the ']', '}' or ',' that ends it at its outer
        level (pos is left on that byte), or with `whole` up to and with the bracket that closes it (pos
        after it), or up to the end of the input. None when it is longer than MAX_RECORD_BYTES."""
        # with `whole`, the value is an object: its '{' is stepped over first, so that the run of
        # _RUN_OUTER (which takes in whole innermost objects) cannot go on past its end
        buf, i, depth, in_string = self.buf, int(whole), int(whole), False
        while True:
            if in_string:
                i = _STRING_REST.match(buf, i).end()
                if i < len(buf) and buf[i] == _QUOTE:
                    in_string, i = False, i + 1
                    continue
            else:
                i = (_RUN_INNER if depth else _RUN_OUTER).match(buf, i).end()
                if i < len(buf):
                    mark = buf[i]
                    if mark == _QUOTE:
                        in_string, i = True, i + 1
                    elif mark in _OPEN:
                        depth, i = depth + 1, i + 1
                    elif depth:               # a closing bracket inside the value
                        depth, i = depth - 1, i + 1
                        if whole and not depth:
                            self.pos = i
                            return buf[:i]
                    else:               # ',' ']' or '}' at the outer level: the end of this value
                        self.pos = i
                        return buf[:i]
                    continue
            if len(buf) > MAX_RECORD_BYTES:
                return None
            if not self._more():
                self.pos = len(buf)
                return buf[:]

    def values(self):
        """("single" | "item", line, text or None) for each session: see _value. Raises UsageError where
        the document's own punctuation is wrong."""
        while len(self.buf) < len(codecs.BOM_UTF8) and self._more():
            pass
        if self.buf.startswith(codecs.BOM_UTF8):
            del self.buf[:len(codecs.BOM_UTF8)]
        first = self._next()
        if first == ord("{"):
            yield "single", self.line, self._value(whole=True)
            if self._next() is not None:
                self._fail("unexpected text after the JSON session")
            return
        if first != ord("["):
            self._fail("JSON input must be a session object or a list of sessions")
        self.pos = 1
        if self._next() == ord("]"):
            self.pos = 1
        else:
            while True:
                line = self.line
                text = self._value(whole=False)
                yield "item", line, text
                if text is None:
                    return
                end = self._next()
                self.pos = 1
                if end == ord("]"):
                    break
                if end != _COMMA:
                    self.pos = 0
                    self._fail("expected ',' or ']' in the JSON list")
                self._next()
        if self._next() is not None:
            self._fail("unexpected text after the JSON list")


def load_sessions(name: str, start: int = 1, fmt: str = "auto") -> tuple:
    """(sessions, single) of one whole input, for commands that need them all (compare, explain)."""
    source = SessionInput(name, fmt, start)
    sessions = list(source)
    return sessions, source.single


_CODE = re.compile(r"^([0-9]{4}[0-9A-Z]|[A-Z][0-9]{4})$")
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_SESSION_KEYS = frozenset(("session_id", "payer", "date_of_service", "discipline", "services", "context",
                           "patient_id", "year_to_date"))
_YTD_KEY = re.compile(r"[a-z][a-z0-9_-]{0,63}")     # a bucket name or a counter id
_SERVICE_KEYS = frozenset(("code", "minutes", "group_size", "provider", "modifiers"))
_MODIFIER = re.compile(r"[0-9A-Z]{2}")      # fullmatch: "59\n" is not a modifier
# modifiers the engine itself decides from the payer's rules: never taken as documented input
ENGINE_MODIFIERS = {"GP": "the plan of care's discipline", "GO": "the plan of care's discipline",
                    "GN": "the plan of care's discipline", "CQ": "who furnished the minutes (provider)",
                    "CO": "who furnished the minutes (provider)", "KX": "the payer's threshold rules"}
_DISCIPLINES = frozenset(("PT", "OT", "SLP"))
_PROVIDERS = frozenset(("PT", "PTA", "OT", "OTA", "SLP"))


def fast_services(data):
    """(the session's services as Service tuples, the number of keys of their objects) when the schema
    certainly accepts the session and _services_errors finds nothing (the common case, checked in plain
    Python, in one pass); None sends it to the full JSON Schema validation and _services_errors, which
    give the message. Never looser than schemas/session.schema.json (a property test checks it)."""
    if type(data) is not dict or not data.keys() <= _SESSION_KEYS:
        return None
    sid = data.get("session_id", "x")
    if not ((type(sid) is str and 1 <= len(sid) <= 128) or type(sid) is int):
        return None
    payer = data.get("payer", "x")
    if type(payer) is not str or not 1 <= len(payer) <= 64:
        return None
    date = data.get("date_of_service", "2000-01-01")
    if type(date) is not str or not _DATE.match(date) or len(date) != 10:
        return None
    if "discipline" in data and (type(data["discipline"]) is not str or data["discipline"] not in _DISCIPLINES):
        return None
    if "context" in data and (type(data["context"]) is not dict or len(data["context"]) > 100):
        return None
    if "patient_id" in data:
        patient = data["patient_id"]
        if not ((type(patient) is str and 1 <= len(patient) <= 128) or type(patient) is int):
            return None
    if "year_to_date" in data:
        ytd = data["year_to_date"]
        if type(ytd) is not dict or len(ytd) > 20 or not all(
                type(k) is str and _YTD_KEY.fullmatch(k) and type(v) in (int, float) and 0 <= v <= 100_000_000
                for k, v in ytd.items()):
            return None
    services = data.get("services")
    if type(services) is not list or not 1 <= len(services) <= 200:
        return None
    out = []
    total = 0
    sizes = None
    keys = 2 * len(services)        # code and minutes; other keys are counted below (for duplicate keys)
    for s in services:
        if type(s) is not dict:
            return None
        code, minutes = s.get("code"), s.get("minutes")
        if type(code) is int and 10000 <= code <= 99999:
            code = str(code)
        elif type(code) is not str or (code not in _GOOD_CODES and not _good_code(code)):
            return None
        if type(minutes) is not int or not 0 <= minutes <= 1440:
            return None
        total += minutes
        if len(s) == 2:         # code and minutes (both found above), nothing else: the common case
            out.append(_tuple_new(Service, (code, minutes, None, None, ())))
            continue
        if not s.keys() <= _SERVICE_KEYS:
            return None
        keys += len(s) - 2
        group_size, provider = s.get("group_size"), s.get("provider")
        if "group_size" in s:
            if type(group_size) is not int or not 0 <= group_size <= 1000:
                return None
            sizes = sizes or {}
            if sizes.setdefault(code, group_size) != group_size:
                return None     # entries of one code disagree on group_size: _services_errors says so
        if "provider" in s and (type(provider) is not str or provider not in _PROVIDERS):
            return None
        modifiers = ()
        if "modifiers" in s:
            modifiers = s["modifiers"]
            if type(modifiers) is not list or len(modifiers) > 4 or \
                    any(type(m) is not str or not _MODIFIER.fullmatch(m) or m in ENGINE_MODIFIERS for m in modifiers) \
                    or len(set(modifiers)) != len(modifiers):
                return None
            modifiers = tuple(modifiers)
        out.append(_tuple_new(Service, (code, minutes, group_size, provider, modifiers)))
    return (tuple(out), keys) if total <= MAX_DAY_MINUTES else None


# NamedTuples made straight from a tuple of all their fields: their own __new__ is a Python function
# that costs three times as much, for every service and session of a batch
_tuple_new = tuple.__new__


_GOOD_CODES: set = set()        # code strings seen to match the schema's pattern


def _good_code(code: str) -> bool:
    if len(code) != 5 or not _CODE.match(code):
        return False
    if len(_GOOD_CODES) < 10_000:
        _GOOD_CODES.add(code)
    return True


def _writable(text: str) -> bool:
    """Text that can be written out as UTF-8 (JSON's \\ud800 escape gives a lone surrogate that cannot)."""
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _error(message: str, data, doc: Located, path: tuple, rel: tuple) -> SessionError:
    """The SessionError at `rel` inside the session `data` (which is at `path` in `doc`), with its position."""
    error = SessionError(message, doc.file, doc.line_of(path + rel), format_path(rel))
    error.position = (error.line or 0, position(data, rel))
    return error


def _services_errors(services: tuple, data, doc: Located, path: tuple) -> list:
    """What is wrong with a session's services taken together (the schema checks each one alone): more
    minutes than a day has, or entries of one code that disagree on group_size (design.md §4; an entry
    without group_size disagrees with none)."""
    errors = []
    total = sum(s.minutes for s in services)
    if total > MAX_DAY_MINUTES:
        errors.append(_error(f"services add up to {total} minutes; a day has at most 1,440", data, doc, path,
                             ("services",)))
    for i, s in enumerate(services):
        for k, m in enumerate(s.modifiers):
            if not _MODIFIER.fullmatch(m):
                errors.append(_error(f"modifier {m!r} is not two capital letters or digits", data, doc, path,
                                     ("services", i, "modifiers", k)))
            elif m in ENGINE_MODIFIERS:
                errors.append(_error(f"modifier {m} is not documented input: the engine decides it from "
                                     f"{ENGINE_MODIFIERS[m]}", data, doc, path, ("services", i, "modifiers", k)))
    first = {}
    for i, s in enumerate(services):
        if s.group_size is None:
            continue
        j = first.setdefault(s.code, i)
        if services[j].group_size != s.group_size:
            errors.append(_error(f"entries of code {s.code} disagree on group_size (see services[{j}])", data, doc,
                                 path, ("services", i, "group_size")))
    return errors


class _Pairs(list):
    """A JSON object as the list of its (key, value) pairs, in order, duplicates kept."""


def _duplicate_key(text: str):
    """(path of the object, key) of the first key repeated within one object of the JSON text, or None.
    Raises RecursionError for a text nested too deeply to walk."""
    return _first_repeat(json.loads(text, object_pairs_hook=_Pairs), ())


def _first_repeat(value, path):
    if type(value) is _Pairs:
        seen = set()
        for key, _ in value:
            if key in seen:
                return path, key
            seen.add(key)
    elif type(value) is not list:
        return None
    for key, item in value if type(value) is _Pairs else enumerate(value):
        found = _first_repeat(item, path + (key,))
        if found:
            return found
    return None


def _keys(value) -> int:
    """Number of keys of every object in parsed JSON."""
    if type(value) is dict:
        n, value = len(value), value.values()
    elif type(value) is list:
        n = 0
    else:
        return 0
    for item in value:
        if type(item) is dict or type(item) is list:
            n += _keys(item)
    return n


def parse_session(data, doc: Located, path: tuple, number: int, text: str | None = None):
    """One session object → Session, or one SessionError naming each of its mistakes. `text` is the JSON the
    data was parsed from, if it was: a key repeated in one object of it is an error (json keeps the
    last value)."""
    if not isinstance(data, dict):
        return ParseError("a session must be a mapping", doc.file, doc.line_of(path), session_id=f"session-{number}")
    raw_id, payer = data.get("session_id"), data.get("payer")
    # the two free texts a result or error record echoes must be writable
    id_writable = type(raw_id) is not str or raw_id.isascii() or _writable(raw_id)
    payer_writable = type(payer) is not str or payer.isascii() or _writable(payer)
    session_id = raw_id if type(raw_id) is str and 1 <= len(raw_id) <= 128 and id_writable \
        else str(raw_id) if type(raw_id) is int else f"session-{number}"
    if not (id_writable and payer_writable):
        name = "session_id" if not id_writable else "payer"
        return SessionError("not valid Unicode text (a lone surrogate escape)", doc.file,
                            doc.line_of(path + (name,)), name, session_id=session_id)
    fast = fast_services(data)
    services = None if fast is None else fast[0]
    if text is not None:
        # Every key of the text is followed by a ':' (colons inside strings only add to the count), so
        # as many keys parsed as there are colons proves that no key was repeated. The common case
        # costs a count of the text and, when the fast path vouched for the session (its services
        # hold plain values, their keys counted there), the session's size.
        try:
            if services is not None:
                keys = len(data) + fast[1]
                if "context" in data:
                    keys += _keys(data["context"])
                if "year_to_date" in data:
                    keys += len(data["year_to_date"])
            else:
                keys = _keys(data)
        except RecursionError:
            keys = -1
        if keys != text.count(":"):
            try:
                found = _duplicate_key(text)
            except RecursionError:
                return ParseError("JSON nested too deeply", doc.file, doc.line_of(path), session_id=session_id)
            if found:
                return ParseError(f"duplicate key {found[1]!r}", doc.file, doc.line_of(path), format_path(found[0]),
                                  session_id=session_id)
    if services is None:
        counted: list = []
        errors = schema_errors("session", doc, SessionError, data=data, base_path=path, echo_values=False,
                               counted=counted)
        if "services" in data and not any(e.path == "services" or e.path.startswith("services[") for e in errors):
            # the schema also lets through what the fast path does not vouch for, e.g. integral floats (30.0)
            services = tuple(Service(code=str(int(s["code"]) if isinstance(s["code"], float) else s["code"]),
                                     minutes=int(s["minutes"]),
                                     group_size=None if s.get("group_size") is None else int(s["group_size"]),
                                     provider=s.get("provider"),
                                     modifiers=tuple(str(m) for m in s.get("modifiers", ())))
                             for s in data["services"])
            errors += _services_errors(services, data, doc, path)
    else:
        errors, counted = [], [0]
    if "context" in data and _depth(data["context"], MAX_CONTEXT_DEPTH) > MAX_CONTEXT_DEPTH:
        errors.append(_error(f"context nested more than {MAX_CONTEXT_DEPTH} levels deep", data, doc, path,
                             ("context",)))
    date = data.get("date_of_service")
    if date is not None and not is_date(date) and not any(e.path == "date_of_service" for e in errors):
        # the form the schema asks for, but no day of the calendar: 2026-02-30
        errors.append(_error(date_problem(date, echo=False), data, doc, path, ("date_of_service",)))
    if errors:
        errors.sort(key=lambda e: e.position)
        return SessionError.gather(errors, session_id, counted[0])
    patient = data.get("patient_id")
    return _tuple_new(Session, (session_id, services, payer, date, data.get("discipline"),
                                data.get("context", NO_CONTEXT), doc.file, doc.line_of(path),
                                None if patient is None else str(patient), data.get("year_to_date")))
