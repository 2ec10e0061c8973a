"""Fee schedules (design.md §6): `code,modifier,amount` with a header row, optional `effective_from` and
`effective_to` columns (YYYY-MM-DD, both days included), read into exact decimals (never float).

- `amount` is dollars per unit: digits with at most two decimals (`60`, `60.5`, `60.50`); a `$` or
  thousands separators are refused, so a misread column is never a price.
- A blank `modifier` applies to the code whatever the line's modifiers; a row with a modifier (`CQ`)
  applies to lines that carry it and wins over the blank row. Two rows of one code and modifier whose
  dates overlap are an error (which one prices a line would be a guess).
- Every row keeps its physical line: an amount is traced to `path:line`. A bad row stops the run like a
  broken rule file: TableError `FILE:LINE: column: message` (exit 2), the first bad row only.
- CRLF or LF, a UTF-8 BOM, blank lines and `#` comment lines anywhere; columns found by name (any order,
  any case), and no other column (an unquoted `1,234.00` would otherwise shift a cell into it silently).
"""
from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from decimal import Decimal
import re

from .errors import is_date
from .tables import CODE, TableError, _shown, _text

AMOUNT = re.compile(r"[0-9]{1,7}(?:\.[0-9]{1,2})?")
MODIFIER = re.compile(r"[0-9A-Z]{2}")
COLUMNS = ("code", "modifier", "amount", "effective_from", "effective_to")
CENT = Decimal("0.01")


@dataclass(frozen=True)
class Fee:
    code: str
    modifier: str               # "" for the row of the code whatever its modifiers
    amount: Decimal             # dollars per unit
    effective_from: str | None
    effective_to: str | None
    path: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def in_force(self, date: str | None) -> bool:
        """Whether the row prices a line on `date`; a dated row cannot price a session without a date."""
        if date is None:
            return self.effective_from is None and self.effective_to is None
        return (self.effective_from is None or self.effective_from <= date) and \
            (self.effective_to is None or date <= self.effective_to)


class FeeTable:
    kind = "fees"

    def __init__(self, rows: list, path: str, digest: str):
        self.path, self.digest, self.file = path, digest, None
        self._by_code: dict = {}
        for row in rows:
            self._by_code.setdefault(row.code, []).append(row)

    def __len__(self) -> int:
        return sum(map(len, self._by_code.values()))

    def lookup(self, code: str, modifiers, date: str | None) -> Fee | None:
        """The row pricing a line of `code` with `modifiers` on `date`: a row of one of its modifiers first
        (in the line's claim order), else the code's blank-modifier row; None when the table has none."""
        rows = [r for r in self._by_code.get(code, ()) if r.in_force(date)]
        for modifier in modifiers:
            for r in rows:
                if r.modifier == modifier:
                    return r
        return next((r for r in rows if not r.modifier), None)

    def rows(self, code: str) -> list:
        return list(self._by_code.get(code, ()))


def load_fees(path, display: str | None = None) -> FeeTable:
    display = display or str(path)
    try:
        raw = open(path, "rb").read()
    except OSError as exc:
        raise TableError(f"cannot read the fee schedule: {exc.strerror}", display, None, "") from None
    digest = hashlib.sha256(raw).hexdigest()
    text = _text(raw).lstrip("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        rows, header = _rows(reader, display)
    except csv.Error as exc:
        raise TableError(f"not CSV: {exc}", display, reader.line_num, "row") from None
    if header is None:
        raise TableError("empty fee schedule: no header row code,modifier,amount", display, 1, "header")
    return FeeTable(rows, display, digest)


def _rows(reader, display: str) -> tuple:
    """(the Fee rows, the header) of a fee schedule's CSV reader."""
    header, columns, rows, same, end = None, {}, [], {}, 0
    for record in reader:
        line, end = end + 1, reader.line_num        # where the row starts: after the last one's end
        if not any(cell.strip() for cell in record) or record[0].lstrip().startswith("#"):
            continue
        if header is None:
            header = [cell.strip().lower() for cell in record]
            for name in COLUMNS:
                if name in header:
                    columns[name] = header.index(name)
            missing = [name for name in COLUMNS[:3] if name not in columns]
            if missing:
                raise TableError(f"the header has no {', '.join(missing)} column (a fee schedule's header is "
                                 "code,modifier,amount[,effective_from,effective_to])", display, line, "header")
            # no other column: an unquoted 1,234.00 would shift into it and price the code at $1, silently
            other = [name for name in header if name not in COLUMNS]
            if other or len(set(header)) < len(header):
                named = ", ".join(_shown(name) for name in (other or header)[:5])
                raise TableError(f"{'columns other than' if other else 'a column named twice among'} code, "
                                 f"modifier, amount, effective_from, effective_to ({named}): remove them (an "
                                 "unquoted 1,234.00 would shift into another column)", display, line, "header")
            continue
        if len(record) > len(header):
            raise TableError(f"{len(record)} cells, the header has {len(header)} (a comma inside an amount? write "
                             "1234.00)", display, line, "row")
        cell = lambda name: (record[columns[name]].strip() if columns.get(name) is not None   # noqa: E731
                             and columns[name] < len(record) else "")
        code, modifier, amount = cell("code"), cell("modifier"), cell("amount")
        if not CODE.fullmatch(code):
            raise TableError(f"{_shown(code)} is not a CPT/HCPCS code (five characters: 97110, G0283)", display, line, "code")
        if modifier and not MODIFIER.fullmatch(modifier):
            raise TableError(f"{_shown(modifier)} is not a modifier (two capital letters or digits, or blank)", display,
                             line, "modifier")
        if not AMOUNT.fullmatch(amount):
            raise TableError(f"{_shown(amount)} is not an amount in dollars (digits, at most two decimals: 60.50)",
                             display, line, "amount")
        dates = []
        for name in ("effective_from", "effective_to"):
            value = cell(name) or None
            if value is not None and not is_date(value):
                raise TableError(f"{_shown(value)} is not a date YYYY-MM-DD", display, line, name)
            dates.append(value)
        if dates[0] and dates[1] and dates[1] < dates[0]:
            raise TableError("effective_to is before effective_from", display, line, "effective_to")
        fee = Fee(code, modifier, Decimal(amount), dates[0], dates[1], display, line)
        for other in same.setdefault((code, modifier), []):
            if _overlap(other, fee):
                raise TableError(f"a second row for {code} {modifier or '(blank modifier)'} in force on the same "
                                 f"days as line {other.line}: which one prices a line would be a guess",
                                 display, line, "code")
        rows.append(fee)
        same[code, modifier].append(fee)
    return rows, header


def _overlap(a: Fee, b: Fee) -> bool:
    return (a.effective_from is None or b.effective_to is None or a.effective_from <= b.effective_to) and \
        (b.effective_from is None or a.effective_to is None or b.effective_from <= a.effective_to)

