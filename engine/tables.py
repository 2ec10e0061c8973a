"""CMS NCCI tables: practitioner PTP edits (tab-delimited .txt) and MUE values (CSV), read as CMS publishes
them into an index cached by content hash (design.md §6; domain.md §10 and §17.3).

Layouts, as downloaded: preamble lines before the header (the AMA notice), a header found by its column
names, `*` (or a blank, as some quarters have it) for no deletion date, dates YYYYMMDD, CRLF or LF, a
UTF-8 BOM, blank lines anywhere (trailing ones too). A header cell is matched in lower case on its
letters and digits only, by prefix, so the names that vary between quarters ('Deletion Date *=no data',
'Modifier 0=not allowed 1=allowed 9=not applicable', 'Practitioner Services MUE Values') are found; a
required column that is absent is an error naming it. A PTP header is a block: its first line has two
cells starting 'Column', and it goes on until the first line with a code under them, each column's
cells joined ('Column' over '1', 'Deletion Date' over '*=no data': the CMS text file's header block of
several lines); the MUE header's first cell may hold a line break inside its quotes. Text that is not
UTF-8 is read as Windows-1252 (CMS's notice holds a raw ®). Codes are checked like a session's codes
(five characters: 97110, 0001U, G0283).

Every row keeps the physical line it starts on, counting the preamble and every header line, so an edit
is traced to `path:line`.

A table is rule data: a malformed row stops the load with one TableError `FILE:LINE: column: message`, a
RuleFileError (exit 2), so a broken table stops the run before anything is billed, like a broken rule
file. The first bad row is reported (a table of a million rows with a systematic fault would otherwise
print a million lines).

The index: rows grouped by code (PTP: column 1; MUE: the code), each group's rows packed as fixed-size
records in file order, behind a directory of the codes. Opening it builds one small object per code,
never one per row; a lookup decodes the group of a code the first time it is asked for and keeps it (a
batch meets the same few therapy codes again and again), so its cost does not grow with the file. Measured on a synthetic 2,000,000-row file (benchmarks/tables_bench.py; CPU
seconds): this index loads from the cache in 0.1 s (hashing the 125 MB table is most of it), 71 MB peak
RSS, ~2 us per 6-code session; sqlite opens at once but takes 50 us a session and 178 MB of disk; a
pickled dict of every row takes 3 s and 1 GB to load; a marshalled dict of packed groups loads in
0.05 s but is private memory in every process and has no check of its bytes.

The cache: the index is written to the rule cache's directory (engine/cache.py: $PAYRULES_CACHE, `off`,
the same refusal of a directory another user owns or others may write), one 0600 file named by the
sha256 of the table's bytes and of this module's source and the engine version (a new reader never meets
an old entry), and read back through mmap, so processes share its pages. An entry is used only if its
owner and mode pass the same checks and the sha256 it carries matches its bytes; anything else (corrupt,
truncated, unreadable) means the table is read again and the entry rewritten.
"""
from __future__ import annotations

import csv
import datetime
import hashlib
import io
import json
import mmap
import os
import re
import struct
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from . import __version__, cache
from .errors import RuleFileError, is_date

CODE = re.compile(r"[0-9]{4}[0-9A-Z]|[A-Z][0-9]{4}")      # as the session schema's `code`
MAI = re.compile(r"([123])(?:\D.*)?", re.S)                # '1 Line Edit', '2 Date of Service Edit: Policy', '3'
IN_FORCE = 99999999                                        # the deletion date of a row with `*`
HEADER_WITHIN = 200                                        # physical lines a header must start within
HEADER_LINES = 8                                           # physical lines a PTP header may go on over
MAGIC = b"PRTABLE1"
PTP_RECORD = struct.Struct(">5sIIIBI")      # column 2, effective, line, deletion, modifier, rationale
MUE_RECORD = struct.Struct(">IBII")         # value, MAI, rationale, line
CHUNK = 1 << 22


class TableError(RuleFileError):
    """A data table that cannot be read: like a broken rule file, it stops the run (exit 2)."""


@dataclass(frozen=True)
class PtpEdit:
    column1: str
    column2: str
    effective: str              # YYYY-MM-DD, in force from this day
    deletion: str | None        # YYYY-MM-DD, no longer in force on this day; None while in force (`*`)
    modifier: int               # 0 never payable together, 1 payable with 59/X{EPSU} on column 2, 9 no edit
    rationale: str
    path: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class MueValue:
    code: str
    value: int                  # most units per line (MAI 1) or per date of service (MAI 2, 3)
    mai: int                    # 1 line edit, 2 date of service (policy), 3 date of service (clinical)
    rationale: str
    path: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def _norm(cell: str) -> str:
    return re.sub(r"[^a-z0-9]", "", cell.lower())


# (name in messages, required, test of a normalised header cell); the first two find the header row
PTP_COLUMNS = (
    ("Column 1", True, lambda n: n.startswith("column1") and "column2" not in n),
    ("Column 2", True, lambda n: n.startswith("column2")),
    ("Effective Date", True, lambda n: n.startswith("effective")),
    ("Deletion Date", True, lambda n: n.startswith("deletion")),
    ("Modifier", True, lambda n: n.startswith("modifier")),
    ("PTP Edit Rationale", False, lambda n: n.startswith("ptpedit") or "rationale" in n),
)
MUE_COLUMNS = (
    ("HCPCS/CPT Code", True, lambda n: n.startswith(("hcpcs", "cpt")) and n.endswith(("code", "codes"))),
    ("MUE Values", True, lambda n: "muevalue" in n),
    ("MUE Adjudication Indicator", True, lambda n: "adjudicationindicator" in n or n == "mai"),
    ("MUE Rationale", False, lambda n: "rationale" in n),
)


def _header(cells: list[str], specs, display: str, line: int) -> list[int | None] | None:
    """The column index of each spec when `cells` are the header row, else None; a missing required
    column is an error."""
    names = [_norm(cell) if len(cell) <= 100 else "" for cell in cells]
    found = [next((i for i, n in enumerate(names) if test(n)), None) for _, _, test in specs]
    if found[0] is None or found[1] is None:
        return None
    for (name, required, _), index in zip(specs, found):
        if required and index is None:
            named = [_shown(" ".join(c.split())) for c in cells if c.strip()]     # each cell quoted short
            seen = ", ".join(named[:10]) + (f" and {len(named) - 10} more" if len(named) > 10 else "")
            raise TableError(f"no {name!r} column in the header (found {seen})", display, line, "header")
    return found


def _block_header(block: list[list[bytes]], display: str, line: int) -> list[int | None]:
    """The columns of a PTP header whose names may go on over several lines ('Column' over '1', 'Deletion
    Date' over '*=no data'): each column's cells joined, top to bottom."""
    width = max(map(len, block))
    merged = [" ".join(cells[i].decode("latin-1").strip() for cells in block if i < len(cells)) for i in range(width)]
    columns = _header(merged, PTP_COLUMNS, display, line)
    if columns is None:
        raise TableError("the header names no 'Column 1' and 'Column 2'", display, line, "header")
    return columns


def _shown(raw) -> str:
    text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def _yyyymmdd(raw: bytes) -> int | None:
    if len(raw) != 8 or not raw.isdigit():
        return None
    try:
        datetime.date(int(raw[:4]), int(raw[4:6]), int(raw[6:]))
    except ValueError:
        return None
    return int(raw)


def _iso(day: int) -> str:
    return f"{day // 10000:04d}-{day // 100 % 100:02d}-{day % 100:02d}"


@lru_cache(maxsize=4096)
def _day(date) -> int:
    """A date of service (datetime.date or YYYY-MM-DD) as the number YYYYMMDD."""
    if isinstance(date, datetime.date):
        return date.year * 10000 + date.month * 100 + date.day
    if isinstance(date, str) and is_date(date):
        return int(date[:4] + date[5:7] + date[8:])
    raise ValueError(f"not a date YYYY-MM-DD: {date!r}")


def _lines(fh, hasher, display: str):
    """(physical line number, line without its LF) of a binary file, read in chunks and hashed."""
    rest, number = b"", 0
    while chunk := fh.read(CHUNK):
        hasher.update(chunk)
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        if len(rest) > CHUNK:
            raise TableError(f"a line longer than {CHUNK} bytes: not a text table", display, number + len(lines) + 1)
        for line in lines:
            number += 1
            yield number, line
    if rest:
        yield number + 1, rest


def _read_ptp(fh, display: str):
    """(index body, sha256 of the bytes read) of a CMS practitioner PTP file. The loop looks each cell up
    in a dict of the values already seen (codes, dates, indicators, rationales repeat over a million rows)
    and checks a value only the first time."""
    hasher = hashlib.sha256()
    columns = block = None
    groups: dict[bytes, bytearray] = defaultdict(bytearray)
    codes: set[bytes] = set()
    effectives: dict[bytes, int] = {}
    deletions: dict[bytes, int] = {}
    modifiers = {b"0": 0, b"1": 1, b"9": 9}
    rationales: dict[bytes, int] = {}                   # a cell as written -> index of its text
    texts: dict[bytes, int] = {}                        # a text (spaces collapsed) -> its index
    pack = PTP_RECORD.pack
    for number, line in _lines(fh, hasher, display):
        cells = line.split(b"\t")
        if columns is None:
            if block is None:                               # the preamble: look for the header's first line
                if number > HEADER_WITHIN:
                    break
                if number == 1 and line.startswith(b"\xef\xbb\xbf"):
                    cells = line[3:].split(b"\t")
                where = [i for i, cell in enumerate(cells) if _norm(cell.decode("latin-1")).startswith("column")]
                if len(where) >= 2:
                    block, start = [cells], number
                continue
            if len(block) < HEADER_LINES and not any(i < len(cells) and CODE.fullmatch(
                    cells[i].decode("latin-1").strip()) for i in where[:2]):
                block.append(cells)                         # the header goes on
                continue
            columns = _block_header(block, display, start)
            i1, i2, ie, idel, im, ir = columns
            width = max(i1, i2, ie, idel, im) + 1           # the rationale may be left off a row
        if len(cells) < width:
            if not line.strip():
                continue                                    # a blank line
            raise TableError(f"expected {width} tab-separated columns, found {len(cells)}", display, number, "row")
        c1, c2 = cells[i1], cells[i2]
        if c1 not in codes or c2 not in codes:
            if not line.strip():
                continue                                    # a blank line
            for name, code in (("Column 1", c1), ("Column 2", c2)):
                if not CODE.fullmatch(code.decode("latin-1").strip()):
                    raise TableError(f"{_shown(code.strip())} is not a HCPCS/CPT code", display, number, name)
            codes.update((c1, c2))
            c1, c2 = c1.strip(), c2.strip()
        raw = cells[ie]
        effective = effectives.get(raw)
        if effective is None:
            effective = _yyyymmdd(raw.strip())
            if effective is None:
                raise TableError(f"{_shown(raw.strip())} is not a date YYYYMMDD", display, number, "Effective Date")
            effectives[raw] = effective
        raw = cells[idel]
        deletion = deletions.get(raw)
        if deletion is None:
            deletion = IN_FORCE if raw.strip() in (b"*", b"") else _yyyymmdd(raw.strip())
            if deletion is None:
                raise TableError(f"{_shown(raw.strip())} is not a date YYYYMMDD, or * or blank (in force)", display,
                                 number, "Deletion Date")
            deletions[raw] = deletion
        if deletion < effective:
            raise TableError(f"{_iso(deletion)} is before the effective date {_iso(effective)}", display, number,
                             "Deletion Date")
        modifier = modifiers.get(cells[im])
        if modifier is None:
            modifier = modifiers.get(cells[im].strip())
            if modifier is None:
                raise TableError(f"{_shown(cells[im].strip())} is not 0 (not allowed), 1 (allowed) or 9 "
                                 "(not applicable)", display, number, "Modifier")
        raw = cells[ir] if ir is not None and ir < len(cells) else b""
        rationale = rationales.get(raw)
        if rationale is None:
            rationale = rationales[raw] = texts.setdefault(b" ".join(raw.split()), len(texts))
        groups[c1.strip() if len(c1) != 5 else c1] += pack(c2 if len(c2) == 5 else c2.strip(), effective, number,
                                                            deletion, modifier, rationale)
    if columns is None and block is not None:
        _block_header(block, display, start)                # a header and no rows: still checked
    elif columns is None:
        raise TableError(f"no PTP header (a line 'Column 1<TAB>Column 2<TAB>...') in its first {HEADER_WITHIN} "
                         "lines: not a CMS practitioner PTP .txt file?", display)
    rows = sum(len(group) for group in groups.values()) // PTP_RECORD.size
    used = effectives.values()
    meta = {"rows": rows, "first": min(used, default=None), "last": max(used, default=None)}
    return _body("ptp", groups, PTP_RECORD.size, [_text(t) for t in texts], meta), hasher.hexdigest()


def _read_mue(fh, display: str):
    """(index body, sha256 of the bytes read) of a CMS practitioner MUE CSV file."""
    raw = fh.read()
    digest = hashlib.sha256(raw).hexdigest()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    reader = csv.reader(io.StringIO(_text(raw), newline=""))
    columns = None
    groups: dict[bytes, bytearray] = {}
    lines: dict[bytes, int] = {}
    rationales: dict[str, int] = {}
    end = 0                                         # the physical line the previous record ended on
    try:
        for cells in reader:
            number, end = end + 1, reader.line_num
            if columns is None:
                if number > HEADER_WITHIN:
                    break
                columns = _header(cells, MUE_COLUMNS, display, number)
                if columns is not None:
                    ic, iv, im, ir = columns
                    width = max(ic, iv, im) + 1
                continue
            if not any(cell.strip() for cell in cells):
                continue                            # a blank line
            if len(cells) < width:
                raise TableError(f"expected {width} comma-separated columns, found {len(cells)}", display, number,
                                 "row")
            code, value, mai = cells[ic].strip(), cells[iv].strip(), cells[im].strip()
            if not CODE.fullmatch(code):
                raise TableError(f"{_shown(code)} is not a HCPCS/CPT code", display, number, "HCPCS/CPT Code")
            key = code.encode()
            if key in groups:
                raise TableError(f"{code} is also on line {lines[key]}", display, number, "HCPCS/CPT Code")
            if not (value.isascii() and value.isdigit() and int(value) < 1 << 32):
                raise TableError(f"{_shown(value)} is not a number of units", display, number, "MUE Values")
            matched = MAI.fullmatch(mai)
            if not matched:
                raise TableError(f"{_shown(mai)} is not '1 Line Edit', '2 Date of Service Edit: Policy' or "
                                 "'3 Date of Service Edit: Clinical'", display, number, "MUE Adjudication Indicator")
            rationale = " ".join(cells[ir].split()) if ir is not None and ir < len(cells) else ""
            index = rationales.setdefault(rationale, len(rationales))
            groups[key] = bytearray(MUE_RECORD.pack(int(value), int(matched.group(1)), index, number))
            lines[key] = number
    except csv.Error as exc:
        raise TableError(f"not CSV: {exc}", display, reader.line_num, "row") from None
    if columns is None:
        raise TableError(f"no MUE header (a row 'HCPCS/CPT Code,...MUE Values,...') in its first {HEADER_WITHIN} "
                         "lines: not a CMS practitioner MUE .csv file?", display)
    return _body("mue", groups, MUE_RECORD.size, list(rationales), {"rows": len(groups)}), digest


def _body(kind: str, groups, size: int, rationales: list[str], meta: dict) -> bytes:
    """An index: header length, header (JSON), the codes (5 bytes each, sorted), the end of each code's
    records (uint32, counted in records), the records (each code's in file order)."""
    keys = sorted(groups)
    ends, total, parts = [], 0, []
    for key in keys:
        group = groups.pop(key)
        parts.append(bytes(group))
        total += len(group) // size
        ends.append(total)
    header = json.dumps({"kind": kind, "size": size, "codes": len(keys), "rationales": rationales, **meta},
                        ensure_ascii=True).encode()
    return b"".join([struct.pack(">I", len(header)), header, *keys, struct.pack(f">{len(ends)}I", *ends), *parts])


def _seal(body: bytes) -> bytes:
    return MAGIC + hashlib.sha256(body).digest() + body


HEAD = len(MAGIC) + 32


def _sound(buffer) -> bool:
    """The entry starts with MAGIC and carries the sha256 of the rest of its bytes."""
    if len(buffer) < HEAD + 4 or buffer[:len(MAGIC)] != MAGIC:
        return False
    hasher = hashlib.sha256()
    for offset in range(HEAD, len(buffer), CHUNK):
        hasher.update(buffer[offset:offset + CHUNK])
    return hasher.digest() == buffer[len(MAGIC):HEAD]


@lru_cache(maxsize=None)
def _salt() -> str:
    """The reading code's hash: a new version of this module never uses an old entry."""
    return hashlib.sha256(Path(__file__).read_bytes() + __version__.encode() + MAGIC).hexdigest()[:16]


def _entry(kind: str, digest: str) -> Path | None:
    directory = cache._directory()
    return None if directory is None else directory / f"table-{kind}-{_salt()}-{digest}.bin"


def _cached(kind: str, digest: str):
    """The mapped entry of a table with these bytes, or None (absent, untrusted or corrupt)."""
    path = _entry(kind, digest)
    if path is None:
        return None
    try:
        with open(path, "rb") as fh:
            info = os.fstat(fh.fileno())
            if cache._untrusted(info) or info.st_size < HEAD + 4:
                return None
            buffer = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return None
    if not _sound(buffer):
        buffer.close()
        return None
    return buffer


def _store(kind: str, digest: str, entry: bytes) -> None:
    """Write the entry (0600, whole or not at all), and remove the entries of other versions of this
    reader: they are never read again, and a full PTP file's entry is tens of MB."""
    path = _entry(kind, digest)
    if path is None:
        return
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
            fh.write(entry)
        os.replace(temporary, path)
        for old in path.parent.glob("table-*.bin"):
            if f"-{_salt()}-" not in old.name:
                old.unlink()
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            pass


class _Table:
    """An index (mapped entry or bytes) with its directory of codes decoded; groups decoded when asked."""
    kind = ""
    record: struct.Struct

    def __init__(self, buffer, display: str, digest: str):
        (length,) = struct.unpack_from(">I", buffer, HEAD)
        header = json.loads(bytes(buffer[HEAD + 4:HEAD + 4 + length]))
        if header.get("kind") != self.kind or header.get("size") != self.record.size:
            raise ValueError("not an index of this kind")
        count = header["codes"]
        at = HEAD + 4 + length
        codes = bytes(buffer[at:at + 5 * count]).decode("ascii")
        ends = struct.unpack_from(f">{count}I", buffer, at + 5 * count)
        self._base = at + 9 * count
        if self._base + (ends[-1] if ends else 0) * self.record.size != len(buffer):
            raise ValueError("index size does not match its directory")
        starts = (0,) + ends
        self._directory = {codes[5 * i:5 * i + 5]: (starts[i], ends[i]) for i in range(count)}
        self._rationales = header["rationales"]
        self._buffer = buffer
        self._groups: dict = {}
        self._edits: dict = {}
        self.path = display
        self.digest = digest                # sha256 of the table's bytes: what a memo of results must key on
        self.rows = header["rows"]
        self.header = header

    def _records(self, code: str):
        start, end = self._directory.get(code, (0, 0))
        size = self.record.size
        return self.record.iter_unpack(self._buffer[self._base + start * size:self._base + end * size])


class PtpTable(_Table):
    """A practitioner PTP file's edits by column 1 code."""
    kind = "ptp"
    record = PTP_RECORD

    @property
    def first(self) -> str | None:
        """The earliest effective date of a row (the date range `validate` reports)."""
        return _iso(self.header["first"]) if self.header["first"] else None

    @property
    def last(self) -> str | None:
        """The latest effective date of a row."""
        return _iso(self.header["last"]) if self.header["last"] else None

    def _group(self, column1: str) -> dict:
        """{column 2: [(effective, deletion, row)]} of a column 1 code; a row becomes a PtpEdit when first
        found in force."""
        group = {}
        for column2, effective, line, deletion, modifier, rationale in self._records(column1):
            group.setdefault(column2.decode("ascii"), []).append(
                (effective, deletion, (column1, line, effective, deletion, modifier, rationale)))
        self._groups[column1] = group
        return group

    def _edit(self, column2: str, row) -> PtpEdit:
        column1, line, effective, deletion, modifier, rationale = row
        edit = PtpEdit(column1, column2, _iso(effective), None if deletion == IN_FORCE else _iso(deletion), modifier,
                       self._rationales[rationale], self.path, line)
        self._edits[line] = edit
        return edit

    def group(self, column1: str) -> dict:
        """{column 2: [(effective, deletion, row)]} of a column 1 code (rows in file order); edit() makes a
        row a PtpEdit."""
        group = self._groups.get(column1)
        return self._group(column1) if group is None else group

    def edit(self, column2: str, row) -> PtpEdit:
        return self._edits.get(row[1]) or self._edit(column2, row)

    def edits(self, codes, date) -> list[PtpEdit]:
        """The edits in force on `date` (effective <= date < deletion) for each ordered pair of distinct
        `codes`, whatever their modifier indicator, by column 1, column 2 and line."""
        day = _day(date)
        codes = sorted(set(codes))
        found = []
        for column1 in codes:
            group = self.group(column1)
            for column2 in codes if group else ():
                for effective, deletion, row in group.get(column2, ()):
                    if effective <= day < deletion and column1 != column2:
                        found.append(self.edit(column2, row))
        return found

    def pair_rows(self, column1: str, column2: str) -> list[PtpEdit]:
        """Every row of the pair (column 1, column 2), whatever its dates: for explaining why an edit did
        not apply (deleted, not yet in effect)."""
        return [self.edit(column2, row) for _, _, row in self.group(column1).get(column2, ())]


class MueTable(_Table):
    """A practitioner MUE file's values by code (a quarter's file: no dates)."""
    kind = "mue"
    record = MUE_RECORD

    def lookup(self, code: str) -> MueValue | None:
        """The MUE of `code`, or None when the file has none."""
        try:
            return self._groups[code]
        except KeyError:
            pass
        found = None
        for value, mai, rationale, line in self._records(code):
            found = MueValue(code, value, mai, self._rationales[rationale], self.path, line)
        self._groups[code] = found
        return found


READERS = {"ptp": (_read_ptp, PtpTable), "mue": (_read_mue, MueTable)}


def _load(kind: str, path, display: str | None):
    display = display or str(path)
    read, table = READERS[kind]
    try:
        with open(path, "rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
            buffer = _cached(kind, digest)
            if buffer is not None:
                try:
                    return table(buffer, display, digest)
                except (ValueError, KeyError, TypeError, struct.error, UnicodeDecodeError):
                    buffer.close()          # sound but not readable by this code: read the table again
            fh.seek(0)
            body, digest = read(fh, display)
    except OSError as exc:
        raise TableError(f"cannot read: {exc.strerror}", display) from None
    entry = _seal(body)
    _store(kind, digest, entry)
    return table(entry, display, digest)


def load_ptp(path, display: str | None = None) -> PtpTable:
    """A CMS practitioner PTP file (tab-delimited .txt), from the cache when its bytes were read before."""
    return _load("ptp", path, display)


def load_mue(path, display: str | None = None) -> MueTable:
    """A CMS practitioner MUE file (CSV), from the cache when its bytes were read before."""
    return _load("mue", path, display)
