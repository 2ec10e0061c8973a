"""Results → json, jsonl, csv and a table a billing specialist can read."""
from __future__ import annotations

import json
from decimal import Decimal


def to_json(records: list, single: bool) -> str:
    """One object for an input that held one session object (design.md §5), else a list."""
    payload = records[0] if single else records
    return json.dumps(payload, indent=2, ensure_ascii=False) + "\n"


# `amount` (last, added by issue 13): a billed line's amount from the payer's fee schedule, dollars with
# two decimals and no thousands separator (2469.00); empty for a line without one and for other rows.
CSV_COLUMNS = ["session_id", "payer", "status", "code", "minutes", "units", "modifiers", "rules", "message",
               "amount"]
CSV_HEADER = ",".join(CSV_COLUMNS) + "\n"
# A text cell starting with one of these is a formula to a spreadsheet (OWASP "CSV injection"): it is
# written as "'" + the text, in double quotes.
FORMULA_START = frozenset("=+-@\t\r")


def _cell(value) -> str:
    if type(value) is not str:
        return str(value)
    if value[:1] in FORMULA_START:
        return "\"'" + value.replace('"', '""') + '"'
    if "," in value or '"' in value or "\n" in value or "\r" in value:
        return '"' + value.replace('"', '""') + '"'
    return value


def csv_row(cells: list) -> str:
    """One CSV line as the csv module writes it (quoting only where needed), except that a cell holding
    \r is quoted too and a text cell that would start a formula is escaped."""
    return ",".join([_cell(c) for c in cells]) + "\n"


def csv_lines(r: dict) -> str:
    """One row per billed line, per unbilled line and per warning; an error record is one row.

    The rows are first written plainly and checked once, as a whole, for anything to quote or escape: a
    comma, quote or line break inside a cell, or a formula start in a free-text cell (the session id, the
    message). Every other text cell is an id or code whose schema pattern starts with a letter or digit."""
    sid = r["session_id"]
    if "error" in r:
        rows = [(sid, "", "error", "", "", "", "", "", r["error"], "")]
    else:
        payer = r["payer"]
        rows = [(sid, payer, "billed", line["code"], line["minutes"], line["units"], " ".join(line["modifiers"]),
                 " ".join(line["rules"]), "", f"{line['amount']:.2f}" if "amount" in line else "")
                for line in r["lines"]]
        rows += [(sid, payer, "unbilled", line["code"], line["minutes"], 0, "", " ".join(line["rules"]),
                  line["reason"], "") for line in r["unbilled"]]
        rows += [(sid, payer, w["severity"], " ".join(w["codes"]), "", "", "", w["rule"], w["message"], "")
                 for w in r["warnings"]]
    text = "".join([f"{a},{b},{c},{d},{e},{f},{g},{h},{i},{j}\n" for a, b, c, d, e, f, g, h, i, j in rows])
    if (text.count(",") == 9 * len(rows) and text.count("\n") == len(rows) and '"' not in text
            and "\r" not in text and str(sid)[:1] not in FORMULA_START
            and FORMULA_START.isdisjoint([row[8][:1] for row in rows])):
        return text
    return "".join([csv_row(row) for row in rows])


def to_csv(records: list) -> str:
    return CSV_HEADER + "".join(csv_lines(r) for r in records)


def clean(text) -> str:
    """Text from a session (its id, a message quoting it) as one printable line for a terminal: every
    character that is not printable — C0 and C1 controls, DEL, line and paragraph separators, bidi
    overrides, ... — written as its escape (\\n, \\x1b, \\u2028). Printable text is returned as is."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def plural(n: int, word: str, words: str | None = None) -> str:
    """'1 session', '0 sessions', '2 sessions'; `words` for a plural that is not word + 's'."""
    return f"{n} {word if n == 1 else (words or word + 's')}"


DEFAULT_WIDTH = 100     # text written to a pipe or a file, when COLUMNS is not set
MIN_WIDTH = 40


def text_width() -> int:
    """Columns to wrap table text to: the terminal's width (COLUMNS first, as shutil reads it); for a
    pipe or a file, COLUMNS if set, else DEFAULT_WIDTH, so that piped output is the same on every run."""
    import shutil
    return max(MIN_WIDTH, shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns)


def wrap(text: str, width: int, indent: str = "", more: str | None = None) -> list:
    """`text` (clean()ed) in lines of at most `width` characters, the first starting with `indent`, the
    others with `more` (default: `indent`). Breaks only at spaces: a word longer than a line stays whole."""
    import textwrap
    more = indent if more is None else more
    return textwrap.wrap(clean(text), width, initial_indent=indent, subsequent_indent=more,
                         break_long_words=False, break_on_hyphens=False) or [indent.rstrip()]


def table(rows: list, headers: list, align: str, width: int | None = None) -> list:
    """Plain text table; `align` has one 'l' or 'r' per column; every cell clean()ed. With `width`, the
    last column's text is wrapped onto continuation rows so that a line fits in `width` characters
    (a single word longer than the room left stays whole)."""
    cells = [[clean(c) for c in row] for row in rows]
    if width is not None and cells:
        room = width - sum(max([len(headers[i])] + [len(r[i]) for r in cells]) + 2 for i in range(len(headers) - 1))
        room = max(room, len(headers[-1]), 12)
        wrapped = []
        for row in cells:
            parts = wrap(row[-1], room)
            wrapped.append(row[:-1] + [parts[0]])
            wrapped += [[""] * (len(row) - 1) + [part] for part in parts[1:]]
        cells = wrapped
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    if width is not None and cells:
        widths[-1] = min(widths[-1], room)      # a longer single word overflows; the rule under it does not

    def fmt(row):
        return "  ".join(c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(row, widths, align)).rstrip()
    return [fmt(headers), fmt(["-" * w for w in widths])] + [fmt(r) for r in cells]


def money(amount: float) -> str:
    """A line's amount as a person reads it: 2469.0 -> '2,469.00'."""
    return f"{amount:,.2f}"


def to_table(records: list, width: int = DEFAULT_WIDTH, year_rules=frozenset()) -> str:
    """Each session: its billed lines (with their amounts when the payer has a fee schedule), then the
    lines not billed with their reasons, the totals, the patient's year (the trace entries of the
    counter thresholds named in `year_rules` that acted on the session: KX, visit limits) and the
    warnings; text wrapped to `width` columns. Text from the session (its id; messages and reasons that
    may quote it) is clean()ed."""
    blocks = []
    for r in records:
        if "error" in r:
            out = wrap(f"Session {r['session_id']}: NOT BILLED", width, "", "  ")
            out += wrap(f"error: {r['error']}", width, "  ", "    ")
            blocks.append("\n".join(out))
            continue
        out = wrap(f"Session {r['session_id']}  payer {r['payer']}  method {r['method']}", width, "", "  ")
        priced = [l["amount"] for l in r["lines"] if "amount" in l]
        if r["lines"] and priced:
            rows = [(l["code"], l["minutes"], l["units"], " ".join(l["modifiers"]) or "-",
                     money(l["amount"]) if "amount" in l else "-", ", ".join(l["rules"])) for l in r["lines"]]
            out += ["  " + line for line in table(rows, ["Code", "Min", "Units", "Modifiers", "Amount", "Rules"],
                                                  "lrrlrl", width - 2)]
        elif r["lines"]:
            rows = [(l["code"], l["minutes"], l["units"], " ".join(l["modifiers"]) or "-", ", ".join(l["rules"]))
                    for l in r["lines"]]
            out += ["  " + line for line in table(rows, ["Code", "Min", "Units", "Modifiers", "Rules"], "lrrll",
                                                  width - 2)]
        else:
            out.append("  No line billed.")
        if r["unbilled"]:
            rows = [(u["code"], u["minutes"], u["reason"]) for u in r["unbilled"]]
            out += ["  " + line for line in table(rows, ["Not billed", "Min", "Reason"], "lrl", width - 2)]
        amount = f"; amount {money(sum(Decimal(str(a)) for a in priced))}" if priced else ""
        out += wrap(f"Timed: {r['total_timed_minutes']} min billed as {plural(r['total_timed_units'], 'unit')}; "
                    f"total {plural(r['total_units'], 'unit')}{amount}", width, "  ", "    ")
        for entry in r.get("trace", ()) if year_rules else ():
            if entry["rule"] in year_rules:
                out += wrap(f"Patient's year: {entry['rule']}: {entry['effect']}", width, "  ", "    ")
        for w in r["warnings"]:
            codes = f" [{', '.join(w['codes'])}]" if w["codes"] else ""
            out += wrap(f"{w['severity'].upper():7} {w['rule']}{codes}: {w['message']}", width, "  ", "          ")
        blocks.append("\n".join(out))
    return "\n\n".join(blocks) + "\n"


def payers_table(payers: list) -> str:
    rows = [(p["id"], p["method"], p["file"], p["extends"] or "-",
             f"{p['effective_from'] or '...'} to {p['effective_to'] or '...'}", p["name"]) for p in payers]
    return "\n".join(table(rows, ["Payer", "Method", "File", "Extends", "Effective", "Name"], "llllll")) + "\n"


def audit_table(rows: list, rule: str | None = None) -> str:
    body = []
    for r in rows:
        result = r["result"]
        units = "-" if "error" in result else str(result["total_units"])
        touched = plural(len(r["firings"]), "firing") if rule else ""
        body.append((r["billed_at"], r["run_id"], r["session_id"], r["payer"] or "-", r["date_of_service"] or "-",
                     r["status"], units, (r["rules_hash"] or "-")[:12], touched))
    headers = ["Billed at", "Run", "Session", "Payer", "Date", "Status", "Units", "Rules hash", rule or ""]
    return "\n".join(table(body, headers, "lrllllrll")) + f"\n{plural(len(rows), 'session')}\n"
