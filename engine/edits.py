"""Claim edits from data tables: NCCI procedure-to-procedure (PTP) pairs and medically unlikely edits (MUE).

A pass over a session's billed lines once their units and modifiers are final (billing.evaluate_session
calls `apply` on the result): it adds warnings and trace entries, each with `"table": "path:line"` of the
table row that decided it and the `source` of the payer file's `tables:` (or `ptp:` setting) that named the
table. It reads only the result's lines (code, units, modifiers), the date of service and the payer's tables,
after the rule network and its plans memo, so both engines give the same edits by construction. A PTP
row's warning is made once per documented modifier (EditTables.texts) and copied into each result.

Rule ids (what a scenario's `expect` names): `ncci-ptp` for a PTP edit, `ncci-mue` for an MUE.

- PTP (docs/domain.md §17): for each ordered pair of distinct billed codes with an edit in force on the date
  of service (effective <= date < deletion), on each line of the column 2 code: indicator 0, an error
  (never payable with column 1); indicator 1, an info when the line carries a documented 59, XE, XS, XP or
  XU (and the payer honours it for the pair), else an error saying which documentation would allow it (the
  engine never adds 59 itself); indicator 9, nothing. Without a date of service the PTP edits cannot be
  chosen: a warning says so and none is applied (a date is not guessed).
- MUE: MAI 1 compares each line's units with the value; MAI 2 and 3 compare the units of all the
  session's lines of the code (one date of service). Units above the value deny the whole line: an error
  on the line naming the value and the MAI. The line stays in `lines` (it is what the claim as entered
  would carry), flagged by the error, like every error warning of the engine.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import tables as T
from .fees import load_fees

BYPASS = ("59", "XE", "XS", "XP", "XU")
_BYPASS = frozenset(BYPASS)
MAI_TEXT = {1: "MAI 1, per line", 2: "MAI 2, per date of service, policy: not appealable",
            3: "MAI 3, per date of service, clinical: appealable with documentation"}
# CMS's own example of distinct services for one pair (docs/domain.md §17)
DISTINCT = {frozenset(("97140", "97530")): "in distinct 15-minute time blocks"}
LOADERS = {"ptp": T.load_ptp, "mue": T.load_mue, "fees": load_fees}

_loaded: dict = {}      # (kind, real path, display) -> table: each file read once per process


def load(kind: str, path, display: str, shown: str):
    """A table, read once per process (and by its content hash from the disk cache); TableError naming the
    file as the user gave it (`shown`)."""
    key = (kind, str(path.resolve()), display)
    table = _loaded.get(key)
    if table is None:
        try:
            table = LOADERS[kind](path, display)
        except T.TableError as exc:
            raise T.TableError(exc.message, shown if exc.file == display else exc.file, exc.line, exc.path) from None
        table.file = path                   # where its bytes are (the audit log stores them)
        _loaded[key] = table
    return table


def loaded_tables() -> list:
    return list(_loaded.values())


@dataclass(frozen=True)
class EditTables:
    """A resolved payer's tables and PTP settings."""
    ptp: tuple = ()                 # PtpTable, ...
    mue: tuple = ()                 # MueTable, ...
    sources: dict = field(default_factory=dict)         # kind -> path:line of the `tables:` entry naming it
    not_honoured: dict = field(default_factory=dict)    # frozenset({code, code}) -> path:line of the setting
    named: tuple = ()           # (display path, sha256) of every table the payer's files name, replaced ones too
    fees: tuple = ()            # fees.FeeTable, ... (priced by engine/counters.py, not an edit)
    texts: dict = field(default_factory=dict, compare=False, repr=False)    # a PTP row's edit: _ptp_edit
    codes: dict = field(default_factory=dict, compare=False, repr=False)    # a code's rows: _code_rows

    def __bool__(self) -> bool:
        return bool(self.ptp or self.mue)

    @property
    def digests(self) -> tuple:
        """(kind, display path, sha256) of every table: what the audit log and a memo key on."""
        return tuple((kind, t.path, t.digest) for kind in ("ptp", "mue", "fees") for t in getattr(self, kind))


NONE = EditTables()


def apply(result: dict, date: str | None, edits: EditTables) -> list:
    """Add the edits of `edits` to a result's warnings and trace (in place). Returns (trace entry, table
    row: PtpEdit, MueValue or None) of each, for explain."""
    lines = result["lines"]
    if not lines:
        return []
    known, codes, limited = edits.codes, {}, []     # the billed codes in line order -> their rows (_code_rows)
    for line in lines:
        code = line["code"]
        rows = codes.get(code)
        if rows is None:
            rows = codes[code] = known.get(code) or _code_rows(edits, code)
        if rows[0] is not None:
            limited.append((line, rows[0]))
    found: list = []
    if len(codes) > 1 and edits.ptp:
        if date is None:
            _ptp_undated(codes, edits, found)
        else:
            _ptp(lines, codes, T._day(date), edits, found)
    if limited:
        _mue(lines, limited, edits, found)
    if not found:
        return found
    warnings, trace, made = result["warnings"], result["trace"], []
    for warning, entry, row in found:       # fresh dicts: the templates are shared (EditTables.texts)
        warnings.append({**warning, "codes": [*warning["codes"]]})
        trace.append({**entry, "facts": ["session"]})
        made.append((trace[-1], row))
    return made


def _code_rows(edits: EditTables, code: str) -> tuple:
    """(MUE value or None, {column 2: [(effective, deletion, PTP table, row)]} of the PTP rows with `code` in
    column 1 and an indicator other than 9, or None) of a code, worked out once per code and payer
    (EditTables.codes): a session's pairs are then found by a lookup per pair of its codes."""
    mue = next((v for table in edits.mue if (v := table.lookup(code)) is not None), None)
    pairs: dict = {}
    for table in edits.ptp:
        for column2, rows in table.group(code).items():
            for effective, deletion, row in rows:
                if column2 != code and row[4] != 9:         # row[4]: the modifier indicator
                    pairs.setdefault(column2, []).append((effective, deletion, table, row))
    for candidates in pairs.values():       # by table (its path) and line: the order of the output
        candidates.sort(key=lambda c: (c[2].path, c[3][1]))
    edits.codes[code] = found = (mue, pairs or None)
    return found


def _add(found, severity, rule, message, codes, source, row, effect):
    found.append(({"severity": severity, "rule": rule, "message": message, "codes": codes, "table": row.where},
                  {"rule": rule, "source": source, "facts": ["session"], "effect": effect, "table": row.where}, row))


def _say(made, warnings, trace, *edit) -> None:
    """_add's edit put straight on a result (apply_across: one session's edits across the day)."""
    found: list = []
    _add(found, *edit)
    (warning, entry, row), = found
    warnings.append(warning)
    trace.append(entry)
    made.append((entry, row))


def _ptp_undated(codes, edits, made):
    """Which edits are in force depends on the date: not guessed, said for the pairs with rows."""
    rows = [r for table in edits.ptp for a in codes for b in codes if a != b
            for r in table.pair_rows(a, b) if r.modifier != 9]
    if rows:
        pairs = ", ".join(dict.fromkeys(f"{r.column1}/{r.column2}" for r in rows))
        _add(made, "warning", "ncci-ptp",
             f"no date_of_service: the NCCI PTP edits of {pairs} depend on it and were not checked (give "
             "date_of_service or --date)", [rows[0].column2, rows[0].column1], edits.sources["ptp"], rows[0],
             "not checked: no date of service")


def _ptp(lines, codes, day, edits, made):
    # in the order of the output: by the column 2 code's place among the billed codes, then column 1's, then
    # the row's table and line (_code_rows keeps each pair's rows so)
    found = []
    for column2 in codes:
        for rows in codes.values():
            pairs = rows[1]
            if pairs is not None:
                candidates = pairs.get(column2)     # a dict lookup per pair: cheaper than set operations here
                if candidates is not None:
                    for effective, deletion, table, row in candidates:
                        if effective <= day < deletion:
                            found.append(table.edit(column2, row))
    if not found:
        return
    texts = edits.texts
    for edit in found:
        col2 = edit.column2
        for line in lines:
            if line["code"] != col2:
                continue
            documented = ""             # the line's first documented 59/X modifier, when the edit allows one
            if edit.modifier:
                for modifier in line["modifiers"]:
                    if modifier in _BYPASS:
                        documented = modifier
                        break
            key = (edit.path, edit.line, documented)
            made.append(texts.get(key) or _ptp_edit(edit, documented, edits, edits.sources["ptp"], key))


def _ptp_edit(edit, documented: str, edits, source: str, key) -> tuple:
    """The (warning, trace entry, row) of a PTP edit on a column 2 line whose first documented 59/X modifier
    is `documented` ("" none), made once per row and modifier (EditTables.texts): apply copies it."""
    col1, col2 = edit.column1, edit.column2
    pair = frozenset((col1, col2))
    refused = edits.not_honoured.get(pair)
    made: list = []
    if edit.modifier == 0:
        _add(made, "error", "ncci-ptp",
             f"{col2} is never payable with {col1} on one date of service (NCCI PTP edit, modifier "
             f"indicator 0; {edit.rationale or 'no rationale given'})", [col2, col1], source, edit,
             f"{col2} denied with {col1}: indicator 0")
    elif documented and refused is None:
        _add(made, "info", "ncci-ptp",
             f"{col2} with {col1}: NCCI PTP edit bypassed by the documented modifier {documented} "
             "(modifier indicator 1)", [col2, col1], source, edit, f"{col2} billed with {col1}: {documented} documented")
    elif documented:
        _add(made, "error", "ncci-ptp",
             f"{col2} with {col1}: this payer does not honour {documented} for this pair (NCCI PTP "
             f"edit, modifier indicator 1); expect a denial and appeal with the documentation",
             [col2, col1], refused, edit, f"{col2} denied with {col1}: bypass not honoured")
    else:
        distinct = DISTINCT.get(pair, "as distinct services")
        _add(made, "error", "ncci-ptp",
             f"{col2} with {col1}: not payable together unless documented {distinct}, with modifier 59 "
             f"or XE/XS/XP/XU on {col2} (NCCI PTP edit, modifier indicator 1); the engine does not add "
             "it", [col2, col1], source, edit, f"{col2} denied with {col1}: no 59/X modifier documented")
    edits.texts[key] = made[0]
    return made[0]


def _mue(lines, limited, edits, made):
    """`limited`: (line, its code's MUE) of each line whose code has one."""
    totals = None
    for line, mue in limited:
        code = line["code"]
        if mue.mai == 1:
            units = line["units"]
        else:                           # MAI 2 and 3: the units of the code on the date of service
            if totals is None:
                totals = {}
                for other in lines:
                    totals[other["code"]] = totals.get(other["code"], 0) + other["units"]
            units = totals[code]
        if units <= mue.value:
            continue
        counted = f"{units} units on the line" if mue.mai == 1 else f"{units} units on the date of service"
        _add(made, "error", "ncci-mue",
             f"{code}: {counted} exceed the MUE of {mue.value} ({MAI_TEXT[mue.mai]}); the whole line is denied, "
             "not only the excess", [code], edits.sources["mue"], mue,
             f"{code} line of {line['units']} units denied: {units} > MUE {mue.value} (MAI {mue.mai})")


# --- one date of service, several sessions (engine/patients.py) ---------------------------------------

def apply_across(result: dict, date: str | None, edits: EditTables, others: list, beyond: int = 0) -> list:
    """The edits between a session's lines and those of the patient's other sessions on the same date of
    service, billed to the same payer, that come before it (`others`: (session id, its result lines), in
    the order engine/patients.py takes them): two sessions of one day are one date of service (docs/domain.md
    §17). Only what the sessions give together: a PTP pair with one code in this session and the other in
    another, an MUE MAI 2/3 total over the sessions' lines that this session's lines alone stay within
    (apply() has checked each session alone). Every such edit is on this, the later, session and names the
    other one. `beyond`: how many earlier sessions of the day there are past `others` (engine/patients.py
    looks at the first SAME_DAY), which a warning names. Returns what apply() does."""
    lines, made = result["lines"], []
    if not edits or not lines or not others or date is None:
        return made
    warnings, trace = result["warnings"], result["trace"]
    if beyond:
        warnings.append({"severity": "warning", "rule": "engine.same-day", "codes": [], "message":
                         f"{len(others) + beyond} earlier sessions of this patient on this date under this payer "
                         f"(a placeholder patient_id?): the edits across sessions were checked against the first "
                         f"{len(others)} only"})
    here = {line["code"] for line in lines}
    if edits.ptp:
        source = edits.sources["ptp"]
        for other_id, other_lines in others:
            there = {line["code"] for line in other_lines}
            if there == here:
                continue        # the same codes: each session alone had every pair
            found = sorted((e for table in edits.ptp for e in table.edits(here | there, date) if e.modifier != 9),
                           key=lambda e: (e.column2, e.column1, e.path, e.line))
            for edit in found:
                col1, col2 = edit.column1, edit.column2
                # a column 2 line of one session whose column 1 code only the other session has
                for col2_here, side, col1_side in ((True, here, there), (False, there, here)):
                    if col2 in side and col1 in col1_side and col1 not in side:
                        for line in lines if col2_here else other_lines:
                            if line["code"] == col2:
                                _ptp_across(edit, line, col2_here, other_id, edits, source, warnings, trace, made)
    if edits.mue:
        source = edits.sources["mue"]
        own: dict = {}
        for line in lines:
            own[line["code"]] = own.get(line["code"], 0) + line["units"]
        for code, units in own.items():
            mue = next((v for table in edits.mue if (v := table.lookup(code)) is not None), None)
            if mue is None or mue.mai == 1 or units > mue.value:
                continue        # MAI 1 is per line; over the value alone: apply() has said so
            with_code = [(sid, sum(x["units"] for x in other if x["code"] == code)) for sid, other in others]
            with_code = [(sid, n) for sid, n in with_code if n]
            total = units + sum(n for _, n in with_code)
            if total <= mue.value:
                continue
            named = ", ".join(f"session {sid} ({n})" for sid, n in with_code)
            for line in lines:
                if line["code"] == code:
                    _say(made, warnings, trace, "error", "ncci-mue",
                         f"{code}: {total} units on the date of service with {named} exceed the MUE of "
                         f"{mue.value} ({MAI_TEXT[mue.mai]}); the whole line is denied, not only the excess",
                         [code], source, mue, f"{code} line of {line['units']} units denied: {total} units on "
                         f"the date with {named} > MUE {mue.value} (MAI {mue.mai})")
    return made


def _ptp_across(edit, line, col2_here, other_id, edits, source, warnings, trace, made):
    """One PTP edit between this session and `other_id`, on the column 2 `line` (of this session when
    `col2_here`, else of the other)."""
    col1, col2 = edit.column1, edit.column2
    pair = f"{col2} of {'this session' if col2_here else f'session {other_id}'} with {col1} of " \
           f"{f'session {other_id}' if col2_here else 'this session'} (the same date of service)"
    denied = f"{col2} denied with {col1} of {'session ' + other_id if col2_here else 'this session'}"
    if edit.modifier == 0:
        _say(made, warnings, trace, "error", "ncci-ptp",
             f"{pair}: never payable together on one date of service (NCCI PTP edit, modifier indicator 0; "
             f"{edit.rationale or 'no rationale given'})", [col2, col1], source, edit, f"{denied}: indicator 0")
        return
    documented = [m for m in line["modifiers"] if m in BYPASS]
    refused = edits.not_honoured.get(frozenset((col1, col2)))
    if documented and refused is None:
        _say(made, warnings, trace, "info", "ncci-ptp",
             f"{pair}: NCCI PTP edit bypassed by the documented modifier {documented[0]} (modifier indicator 1)",
             [col2, col1], source, edit, f"{col2} billed with {col1}: {documented[0]} documented")
    elif documented:
        _say(made, warnings, trace, "error", "ncci-ptp",
             f"{pair}: this payer does not honour {documented[0]} for this pair (NCCI PTP edit, modifier "
             "indicator 1); expect a denial and appeal with the documentation", [col2, col1], refused, edit,
             f"{denied}: bypass not honoured")
    else:
        distinct = DISTINCT.get(frozenset((col1, col2)), "as distinct services")
        _say(made, warnings, trace, "error", "ncci-ptp",
             f"{pair}: not payable together unless documented {distinct}, with modifier 59 or XE/XS/XP/XU on "
             f"{col2} (NCCI PTP edit, modifier indicator 1); the engine does not add it", [col2, col1], source,
             edit, f"{denied}: no 59/X modifier documented")


RULES = ("ncci-ptp", "ncci-mue")


def row_text(row) -> str:
    """A table row as explain shows it."""
    if isinstance(row, T.PtpEdit):
        return (f"column 1 {row.column1}, column 2 {row.column2}, effective {row.effective}, deletion "
                f"{row.deletion or '* (in force)'}, modifier indicator {row.modifier}"
                + (f": {row.rationale}" if row.rationale else ""))
    return f"{row.code}: MUE {row.value}, MAI {row.mai}" + (f": {row.rationale}" if row.rationale else "")


def why_not(result: dict, date: str | None, edits: EditTables, rule_id: str) -> list:
    """Lines saying, for `ncci-ptp` each ordered pair of the billed codes and for `ncci-mue` each billed
    code, which table rows there are and why each did or did not apply."""
    codes = list(dict.fromkeys(line["code"] for line in result["lines"]))
    tables = edits.ptp if rule_id == "ncci-ptp" else edits.mue
    if not tables:
        return [f"  the payer names no {rule_id[5:].upper()} table"]
    out = []
    if rule_id == "ncci-mue":
        for code in codes:
            mue = next((v for t in tables if (v := t.lookup(code)) is not None), None)
            units = [line["units"] for line in result["lines"] if line["code"] == code]
            if mue is None:
                out.append(f"  {code}: no row in the MUE table(s)")
                continue
            counted = max(units) if mue.mai == 1 else sum(units)
            out.append(f"  {code}: {counted} units {'on a line' if mue.mai == 1 else 'on the date'} "
                       f"{'>' if counted > mue.value else '<='} MUE {mue.value} (MAI {mue.mai}) "
                       f"[table {mue.where}]")
        return out
    day = date and T._day(date)
    for col1 in codes:
        for col2 in codes:
            if col1 == col2:
                continue
            rows = [r for t in tables for r in t.pair_rows(col1, col2)]
            if not rows:
                out.append(f"  {col1} / {col2}: no row in the PTP table(s)")
            for r in rows:
                if day is None:
                    why = "not checked: no date of service"
                elif T._day(r.effective) > day:
                    why = f"not yet in effect on {date}"
                elif r.deletion and T._day(r.deletion) <= day:
                    why = f"deleted before {date}"
                elif r.modifier == 9:
                    why = "indicator 9: no edit"
                else:
                    why = "in force: applied"
                out.append(f"  {col1} / {col2}: {why} [table {r.where}: {row_text(r)}]")
    return out or ["  fewer than two billed codes: no pair to check"]
