"""One session under several payers, side by side (design.md §3, §5 `compare`)."""
from __future__ import annotations

from .errors import UsageError
from .render import DEFAULT_WIDTH, plural, table, wrap

BASE_DEFAULT = "medicare"


def choose_base(payer_ids: list, base: str | None = None) -> str:
    """The payer the others are measured against: `base` if given (it must be one of `payer_ids`), else
    medicare when compared, else the first of `payer_ids`."""
    if base is not None:
        if base not in payer_ids:
            raise UsageError(f"base payer {base!r} is not one of the compared payers: {', '.join(payer_ids)}")
        return base
    return BASE_DEFAULT if BASE_DEFAULT in payer_ids else payer_ids[0]


def compare_sessions(sessions: list, payer_ids: list, biller, date=None, base: str | None = None) -> list:
    """compare_session of each session of a whole input, each payer's results those `payrules bill --payer
    ID` gives for the input (engine/patients.py: each patient's sessions in date order, with its counters
    and the edits across its sessions of one date, under that payer)."""
    from .patients import bill_records
    billed = [{} for _ in sessions]
    for pid in payer_ids:
        for results, (_, record) in zip(billed, bill_records(sessions, biller, pid, date)):
            results[pid] = record
    return [compare_session(session, payer_ids, biller, date, base, results)
            for session, results in zip(sessions, billed)]


def compare_session(session, payer_ids: list, biller, date=None, base: str | None = None, results=None) -> dict:
    """{"session_id", "payers", "base", "results", "rows", "totals", "differs", "modifiers_differ",
    "counters_differ"} for one session; `base` as choose_base picks it; `results`: each payer's result, when
    billed already."""
    base = choose_base(payer_ids, base)
    results = results or {pid: biller.bill(session, pid, date) for pid in payer_ids}
    session_id = next(iter(results.values()))["session_id"]
    codes = _row_codes(session, results)
    rows = []
    for code, minutes in codes:
        units, modifiers = {}, {}
        for pid, result in results.items():
            if "error" in result:
                units[pid] = modifiers[pid] = None
            else:
                # a code's units over all its lines; its lines' modifier sets (a line per set, design.md §5)
                lines = [l for l in result["lines"] if l["code"] == code]
                units[pid] = sum(l["units"] for l in lines)
                modifiers[pid] = [{"modifiers": l["modifiers"], "units": l["units"]} for l in lines]
        rows.append({"code": code, "minutes": minutes, "units": units, "modifiers": modifiers})
    totals = {pid: (None if "error" in r else r["total_units"]) for pid, r in results.items()}
    differs = [row["code"] for row in rows if len(set(row["units"].values())) > 1]
    # payers that bill a code with different modifier sets (not merely different units)
    modifiers_differ = [row["code"] for row in rows
                        if len({frozenset(tuple(l["modifiers"]) for l in m)
                                for m in row["modifiers"].values() if m}) > 1]
    return {"session_id": session_id, "payers": list(payer_ids), "base": base, "results": results, "rows": rows,
            "totals": totals, "differs": differs, "modifiers_differ": modifiers_differ,
            "counters_differ": _counters_differ(results, biller, date or getattr(session, "date_of_service", None))}


def _counters_differ(results: dict, biller, date) -> list:
    """Ids of the counter thresholds (KX, visit limits; docs/domain.md §18) that act on this session under
    some payers and not others, or act differently (another line, another action)."""
    acted: dict = {}
    for pid, result in results.items():
        if "error" in result:
            continue
        payer = biller.registry.resolve(pid, date)        # as billed: it resolves
        ids = {t.id for c in payer.counters for t in c.thresholds}
        acted[pid] = {(e["rule"], tuple(e["facts"]), e["effect"].rpartition("→")[2].strip())
                      for e in result["trace"] if e["rule"] in ids}
    rules = {entry[0] for done in acted.values() for entry in done}
    return sorted(r for r in rules if len({frozenset(e for e in done if e[0] == r) for done in acted.values()}) > 1)


def _edits_differ(comparison: dict) -> list:
    """Codes whose claim edits (NCCI PTP/MUE warnings: rule, severity, message) differ between payers."""
    out, results = [], comparison["results"]
    for code in (row["code"] for row in comparison["rows"]):
        seen = {pid: sorted((w["rule"], w["severity"], w["message"]) for w in r["warnings"]
                            if "table" in w and w["codes"][:1] == [code])
                for pid, r in results.items() if "error" not in r}
        if len({repr(v) for v in seen.values()}) > 1:
            out.append(code)
    return out


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


def to_table(comparisons: list, width: int = DEFAULT_WIDTH) -> str:
    """Rows: codes with minutes; columns: payers, the base marked; cells: units, with the difference from
    the base payer. Warnings wrapped to `width` columns."""
    blocks = []
    for c in comparisons:
        payers, base = c["payers"], c["base"]
        rows = [[r["code"], r["minutes"]] + [_cell(r["units"][p], r["units"][base]) for p in payers]
                for r in c["rows"]]
        rows.append(["Total", ""] + [_cell(c["totals"][p], c["totals"][base]) for p in payers])
        headers = ["Code", "Min"] + [f"{p} (base)" if p == base else p for p in payers]
        lines = wrap(f"Session {c['session_id']}", width, "", "  ")
        lines += ["  " + l for l in table(rows, headers, "lr" + "r" * len(payers))]
        if c["differs"]:
            lines += wrap(f"Payers differ on {', '.join(c['differs'])}; (+n)/(-n) = units more/fewer than {base}",
                          width, "  ", "    ")
        for row in c["rows"]:
            if row["code"] in c.get("modifiers_differ", ()):
                shown = "; ".join(f"{p} " + (" + ".join(f"x{m['units']} {' '.join(m['modifiers']) or '-'}"
                                                        for m in row["modifiers"][p]) or "not billed")
                                  for p in payers if row["modifiers"][p] is not None)
                lines += wrap(f"Modifiers differ on {row['code']}: {shown}", width, "  ", "    ")
        if c.get("counters_differ"):
            lines += wrap(f"Payers' counters differ on this session (the patient's year): "
                          f"{', '.join(c['counters_differ'])}; see the modifiers and warnings", width, "  ", "    ")
            for pid in payers:      # each payer's steps of those counters (none: it did not act)
                for entry in c["results"][pid].get("trace", ()):
                    if entry["rule"] in c["counters_differ"]:
                        lines += wrap(f"{pid}: {entry['rule']}: {entry['effect']}", width, "    ", "      ")
        edits = _edits_differ(c)
        if edits:
            lines += wrap(f"Payers differ on the claim edits (NCCI tables) of {', '.join(edits)}: see the warnings",
                          width, "  ", "    ")
        for pid in payers:
            result = c["results"][pid]
            if "error" in result:
                lines += wrap(f"{pid}: not billed: {result['error']}", width, "  ", "    ")
                continue
            for w in result["warnings"]:
                if w["severity"] != "info":
                    lines += wrap(f"{pid}: {w['severity']}: {w['message']}", width, "  ", "    ")
        blocks.append("\n".join(lines))
    if len(comparisons) > 1:
        blocks.append(summary(comparisons))
    return "\n\n".join(blocks) + "\n"


def summary(comparisons: list) -> str:
    """Where payers differ across sessions, each payer against the base."""
    payers, base = comparisons[0]["payers"], comparisons[0]["base"]
    differ = sum(1 for c in comparisons if len({v for v in c["totals"].values()}) > 1 or c["differs"])
    counters = sum(1 for c in comparisons if c.get("counters_differ"))
    lines = [f"Summary: {plural(len(comparisons), 'session')}, payers differ on {differ}"
             + (f"; their counters (the patient's year) differ on {counters}" if counters else "")]
    for pid in payers:
        if pid == base:
            continue
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
        text = (f"  {pid} vs {base}: more units in {more}, fewer in {fewer}, same in {same} "
                f"(net {delta:+d} {'unit' if abs(delta) == 1 else 'units'})")
        lines.append(text + (f", {errors} not comparable (error)" if errors else ""))
    return "\n".join(lines)
