"""One session under several payers, side by side (design.md §3, §5 `compare`)."""
from __future__ import annotations

from .render import clean, table


def compare_session(session, payer_ids: list, biller, date=None) -> dict:
    """{"session_id", "payers", "results", "rows", "totals", "differs"} for one session."""
    results = {pid: biller.bill(session, pid, date) for pid in payer_ids}
    session_id = next(iter(results.values()))["session_id"]
    codes = _row_codes(session, results)
    rows = []
    for code, minutes in codes:
        units = {}
        for pid, result in results.items():
            if "error" in result:
                units[pid] = None
            else:
                units[pid] = next((l["units"] for l in result["lines"] if l["code"] == code), 0)
        rows.append({"code": code, "minutes": minutes, "units": units})
    totals = {pid: (None if "error" in r else r["total_units"]) for pid, r in results.items()}
    differs = [row["code"] for row in rows if len(set(row["units"].values())) > 1]
    return {"session_id": session_id, "payers": list(payer_ids), "results": results, "rows": rows,
            "totals": totals, "differs": differs}


def _row_codes(session, results) -> list:
    """(code, minutes): the session's codes (duplicates merged) in order of first appearance, then any
    line a payer created (an add-on from its primary's minutes) right after the code before it."""
    minutes: dict = {}
    for service in getattr(session, "services", ()):
        minutes[service.code] = minutes.get(service.code, 0) + service.minutes
    order = list(minutes)
    for result in results.values():
        previous = None
        for line in result.get("lines", []) + result.get("unbilled", []):
            if line["code"] not in order:
                order.insert(order.index(previous) + 1 if previous in order else len(order), line["code"])
            previous = line["code"]
    return [(code, minutes.get(code, 0)) for code in order]


def _cell(value, base) -> str:
    if value is None:
        return "error"
    if base is None or value == base:
        return str(value)
    return f"{value} ({value - base:+d})"


def to_table(comparisons: list) -> str:
    """Rows: codes with minutes; columns: payers; cells: units, with the difference from the first payer."""
    blocks = []
    for c in comparisons:
        payers = c["payers"]
        base = payers[0]
        rows = [[r["code"], r["minutes"]] + [_cell(r["units"][p], r["units"][base]) for p in payers]
                for r in c["rows"]]
        rows.append(["Total", ""] + [_cell(c["totals"][p], c["totals"][base]) for p in payers])
        lines = [f"Session {clean(c['session_id'])}"]
        lines += ["  " + l for l in table(rows, ["Code", "Min"] + payers, "lr" + "r" * len(payers))]
        if c["differs"]:
            lines.append(f"  Payers differ on {', '.join(c['differs'])}; (+n)/(-n) = units more/fewer than {base}")
        for pid in payers:
            result = c["results"][pid]
            if "error" in result:
                lines.append(f"  {pid}: not billed: {clean(result['error'])}")
                continue
            for w in result["warnings"]:
                if w["severity"] != "info":
                    lines.append(f"  {pid}: {w['severity']}: {clean(w['message'])}")
        blocks.append("\n".join(lines))
    if len(comparisons) > 1:
        blocks.append(summary(comparisons))
    return "\n\n".join(blocks) + "\n"


def summary(comparisons: list) -> str:
    """Where payers differ across sessions, each payer against the first."""
    payers = comparisons[0]["payers"]
    base = payers[0]
    differ = sum(1 for c in comparisons if len({v for v in c["totals"].values()}) > 1 or c["differs"])
    lines = [f"Summary: {len(comparisons)} sessions, payers differ on {differ}"]
    for pid in payers[1:]:
        more = fewer = same = errors = 0
        delta = 0
        for c in comparisons:
            a, b = c["totals"][base], c["totals"][pid]
            if a is None or b is None:
                errors += 1
            elif b > a:
                more, delta = more + 1, delta + b - a
            elif b < a:
                fewer, delta = fewer + 1, delta + b - a
            else:
                same += 1
        text = f"  {pid} vs {base}: more units in {more}, fewer in {fewer}, same in {same} (net {delta:+d} units)"
        lines.append(text + (f", {errors} not comparable (error)" if errors else ""))
    return "\n".join(lines)
