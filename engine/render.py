"""Results → json, jsonl, csv and a table a billing specialist can read."""
from __future__ import annotations

import json


def to_json(records: list, single: bool) -> str:
    """One object for an input that held one session object (design.md §5), else a list."""
    payload = records[0] if single else records
    return json.dumps(payload, indent=2, ensure_ascii=False) + "\n"


CSV_COLUMNS = ["session_id", "payer", "status", "code", "minutes", "units", "modifiers", "rules", "message"]
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
        rows = [(sid, "", "error", "", "", "", "", "", r["error"])]
    else:
        payer = r["payer"]
        rows = [(sid, payer, "billed", line["code"], line["minutes"], line["units"], " ".join(line["modifiers"]),
                 " ".join(line["rules"]), "") for line in r["lines"]]
        rows += [(sid, payer, "unbilled", line["code"], line["minutes"], 0, "", " ".join(line["rules"]),
                  line["reason"]) for line in r["unbilled"]]
        rows += [(sid, payer, w["severity"], " ".join(w["codes"]), "", "", "", w["rule"], w["message"])
                 for w in r["warnings"]]
    text = "".join([f"{a},{b},{c},{d},{e},{f},{g},{h},{i}\n" for a, b, c, d, e, f, g, h, i in rows])
    if (text.count(",") == 8 * len(rows) and text.count("\n") == len(rows) and '"' not in text
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


def table(rows: list, headers: list, align: str) -> list:
    """Plain text table; `align` has one 'l' or 'r' per column; every cell clean()ed."""
    cells = [[clean(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def fmt(row):
        return "  ".join(c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(row, widths, align)).rstrip()
    return [fmt(headers), fmt(["-" * w for w in widths])] + [fmt(r) for r in cells]


def to_table(records: list) -> str:
    """Text from the session (its id; messages and reasons that may quote it) is clean()ed."""
    blocks = []
    for r in records:
        if "error" in r:
            blocks.append(f"Session {clean(r['session_id'])}: NOT BILLED\n  error: {clean(r['error'])}")
            continue
        out = [f"Session {clean(r['session_id'])}  payer {r['payer']}  method {r['method']}"]
        rows = [(l["code"], l["minutes"], l["units"], " ".join(l["modifiers"]) or "-", ", ".join(l["rules"]))
                for l in r["lines"]]
        rows += [(u["code"], u["minutes"], 0, "-", "not billed: " + clean(u["reason"])) for u in r["unbilled"]]
        out += ["  " + line for line in table(rows, ["Code", "Min", "Units", "Modifiers", "Rules"], "lrrll")]
        out.append(f"  Timed minutes {r['total_timed_minutes']} -> {r['total_timed_units']} timed units; "
                   f"total units {r['total_units']}")
        for w in r["warnings"]:
            codes = f" [{', '.join(w['codes'])}]" if w["codes"] else ""
            out.append(f"  {w['severity'].upper():7} {w['rule']}{codes}: {clean(w['message'])}")
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
        touched = f"{len(r['firings'])} firing(s)" if rule else ""
        body.append((r["billed_at"], r["run_id"], r["session_id"], r["payer"] or "-", r["date_of_service"] or "-",
                     r["status"], units, (r["rules_hash"] or "-")[:12], touched))
    headers = ["Billed at", "Run", "Session", "Payer", "Date", "Status", "Units", "Rules hash", rule or ""]
    return "\n".join(table(body, headers, "lrllllrll")) + f"\n{len(rows)} session(s)\n"
