"""Results → json, jsonl, csv and a table a billing specialist can read."""
from __future__ import annotations

import csv
import io
import json


def to_json(records: list, single: bool) -> str:
    """One object for an input that held one session object (design.md §5), else a list."""
    payload = records[0] if single else records
    return json.dumps(payload, indent=2, ensure_ascii=False) + "\n"


CSV_COLUMNS = ["session_id", "payer", "status", "code", "minutes", "units", "modifiers", "rules", "message"]


def to_csv(records: list) -> str:
    """One row per billed line, per unbilled line and per warning; an error record is one row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in records:
        if "error" in r:
            writer.writerow([r["session_id"], "", "error", "", "", "", "", "", r["error"]])
            continue
        for line in r["lines"]:
            writer.writerow([r["session_id"], r["payer"], "billed", line["code"], line["minutes"], line["units"],
                             " ".join(line["modifiers"]), " ".join(line["rules"]), ""])
        for line in r["unbilled"]:
            writer.writerow([r["session_id"], r["payer"], "unbilled", line["code"], line["minutes"], 0, "",
                             " ".join(line["rules"]), line["reason"]])
        for w in r["warnings"]:
            writer.writerow([r["session_id"], r["payer"], w["severity"], " ".join(w["codes"]), "", "", "", w["rule"],
                             w["message"]])
    return out.getvalue()


def table(rows: list, headers: list, align: str) -> list:
    """Plain text table; `align` has one 'l' or 'r' per column."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def fmt(row):
        return "  ".join(c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(row, widths, align)).rstrip()
    return [fmt(headers), fmt(["-" * w for w in widths])] + [fmt(r) for r in cells]


def to_table(records: list) -> str:
    blocks = []
    for r in records:
        if "error" in r:
            blocks.append(f"Session {r['session_id']}: NOT BILLED\n  error: {r['error']}")
            continue
        out = [f"Session {r['session_id']}  payer {r['payer']}  method {r['method']}"]
        rows = [(l["code"], l["minutes"], l["units"], " ".join(l["modifiers"]) or "-", ", ".join(l["rules"]))
                for l in r["lines"]]
        rows += [(u["code"], u["minutes"], 0, "-", "not billed: " + u["reason"]) for u in r["unbilled"]]
        out += ["  " + line for line in table(rows, ["Code", "Min", "Units", "Modifiers", "Rules"], "lrrll")]
        out.append(f"  Timed minutes {r['total_timed_minutes']} -> {r['total_timed_units']} timed units; "
                   f"total units {r['total_units']}")
        for w in r["warnings"]:
            codes = f" [{', '.join(w['codes'])}]" if w["codes"] else ""
            out.append(f"  {w['severity'].upper():7} {w['rule']}{codes}: {w['message']}")
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
