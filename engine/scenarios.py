"""Payer scenario tests in YAML (`payrules test`), like `opa test` or Drools test scenarios: a payer
author writes sessions and the lines, units and warnings the payer must give them in a `*.tests.yaml`
file beside the payer; each scenario passes or fails with a readable diff."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import RuleFileError, UsageError, date_problem, is_date
from .paths import shown
from .render import plural
from .schema import schema_errors
from .sessions import parse_session
from .yamlload import load_text

SUFFIX = ".tests.yaml"


@dataclass(frozen=True)
class Scenario:
    file: str
    line: int
    name: str
    payer: str
    date: str | None
    session: object         # Session or SessionError
    expect: dict
    patient: tuple = ()     # (Session or SessionError, expect) of a patient's sessions, instead of session


def scenario_files(paths) -> list:
    """(path, display) of every *.tests.yaml among the given files and below the given directories; the
    display is a path the user can open from the working directory (paths.shown)."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found += [(p, shown(p)) for p in sorted(path.rglob("*" + SUFFIX))]
        elif path.is_file():
            found.append((path, shown(path)))
        else:
            raise UsageError(f"no such file or directory: {path}")
    return found


def load_scenarios(path: Path, display: str) -> list:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleFileError(f"cannot read scenarios: {exc}", display) from None
    doc = load_text(text, display, RuleFileError)
    if not isinstance(doc.data, dict):
        raise RuleFileError("a scenario file must be a mapping with payer and scenarios", display, 1)
    errors = schema_errors("scenarios", doc, RuleFileError)
    if not errors:      # a date of the right form that is no day of the calendar (2026-02-30)
        errors = [RuleFileError(date_problem(item["date"]), display, doc.line_of(("scenarios", i, "date")),
                                f"scenarios[{i}].date")
                  for i, item in enumerate(doc.data["scenarios"]) if "date" in item and not is_date(item["date"])]
    if errors:
        raise RuleFileError.gather(errors)
    out = []
    for i, item in enumerate(doc.data["scenarios"]):
        path_ = ("scenarios", i)
        patient = tuple((parse_session({"patient_id": "scenario", **step["session"]}
                                       if isinstance(step["session"], dict) else step["session"],
                                       doc, path_ + ("patient", k, "session"), k + 1), step["expect"])
                        for k, step in enumerate(item.get("patient", ())))
        session = parse_session(item["session"], doc, path_ + ("session",), i + 1) if "session" in item else None
        out.append(Scenario(display, doc.line_of(path_ + ("name",)), item["name"],
                            item.get("payer", doc.data["payer"]), item.get("date"), session, item.get("expect", {}),
                            patient))
    return out


def run_scenario(scenario: Scenario, biller) -> list:
    """The differences between what the payer gave and what the scenario expects ([] = pass). A patient's
    sessions are billed in date order with their counters (engine/counters.py), each checked alone; one
    session as `payrules bill` bills it (its own year_to_date too)."""
    from .patients import bill_records      # as `payrules bill` bills them, the same-day edits too
    if not scenario.patient:
        [(_, result)] = bill_records([scenario.session], biller, scenario.payer, scenario.date)
        return _check(result, scenario.expect)
    sessions = [session for session, _ in scenario.patient]
    results = [record for _, record in bill_records(sessions, biller, scenario.payer, scenario.date)]
    return [f"patient[{k}]: {diff}" for k, ((_, expect), result) in enumerate(zip(scenario.patient, results))
            for diff in _check(result, expect)]


def _check(result: dict, expect: dict) -> list:
    if "error" in result:
        if "error" in expect and expect["error"] in result["error"]:
            return []
        wanted = f"an error containing {expect['error']!r}" if "error" in expect else "a billed session"
        return [f"expected {wanted}, got the error: {result['error']}"]
    if "error" in expect:
        return [f"expected an error containing {expect['error']!r}, but the session was billed"]
    diffs = []
    got: dict = {}          # code -> {modifiers as written ("GP CQ"): units}, its lines in order
    for line in result["lines"]:
        got.setdefault(line["code"], {})[" ".join(line["modifiers"])] = line["units"]
    reasons = {u["code"]: u["reason"] for u in result["unbilled"]}
    if "lines" in expect:
        # "97110": 2 -> the code's units over all its lines; "97110 GP CQ": 1 -> the code's lines exactly,
        # each by its modifiers in claim order (design.md §5)
        totals, sets = {}, {}
        for key, units in expect["lines"].items():
            code, *mods = str(key).split()
            if mods:
                sets.setdefault(code, {})[" ".join(mods)] = units
            else:
                totals[code] = units
        for code in [*totals, *sets] + [c for c in got if c not in totals and c not in sets]:
            have = got.get(code)
            if code in sets:
                if sets[code] != have:
                    diffs.append(f"lines.{code}: expected {_by_set(sets[code])}, got "
                                 + (_by_set(have) if have else "none" + _why(code, reasons)))
                continue
            want, n = totals.get(code), sum(have.values()) if have else None
            if want != n:
                diffs.append(f"lines.{code}: expected {_units(want, 'no billed line')}, "
                             f"got {_units(n, 'none' + _why(code, reasons))}")
    for code, mods in expect.get("modifiers", {}).items():
        have = got.get(str(code))
        have = None if have is None else [m.split() for m in have]
        if have is None or have != [mods]:
            shown = "no billed line" if have is None else have[0] if len(have) == 1 else f"several lines {have}"
            diffs.append(f"modifiers.{code}: expected {mods}, got {shown}")
    if "unbilled" in expect:
        wanted, have = sorted(map(str, expect["unbilled"])), sorted(reasons)
        if wanted != have:
            diffs.append(f"unbilled: expected {wanted}, got {have}")
    for code, dollars in expect.get("amounts", {}).items():
        have = [line.get("amount") for line in result["lines"] if line["code"] == str(code)]
        total = None if not have or None in have else round(sum(have), 2)
        if total != dollars:
            diffs.append(f"amounts.{code}: expected {dollars}, got {'no amount' if total is None else total}")
    for key in ("total_units", "total_timed_minutes", "total_timed_units"):
        if key in expect and expect[key] != result[key]:
            diffs.append(f"{key}: expected {expect[key]}, got {result[key]}")
    matched = set()
    for want in expect.get("warnings", []):
        hit = next((i for i, w in enumerate(result["warnings"]) if i not in matched and _matches(w, want)), None)
        if hit is None:
            diffs.append(f"warnings: expected {_describe(want)}, found none such; the warnings were: "
                         + ("; ".join(f"{w['severity']} {w['rule']}: {w['message']}" for w in result["warnings"])
                            or "none"))
        else:
            matched.add(hit)
    if expect.get("only_these_warnings"):
        for i, w in enumerate(result["warnings"]):
            if i not in matched:
                diffs.append(f"warnings: unexpected {w['severity']} {w['rule']}: {w['message']}")
    return diffs


def _why(code: str, reasons: dict) -> str:
    return f" (not billed: {reasons[code]})" if code in reasons else " (no such line)"


def _by_set(lines: dict) -> str:
    return "; ".join(f"x{units} {mods or '(no modifiers)'}" for mods, units in lines.items())


def _units(n, absent: str) -> str:
    return absent if n is None else plural(n, "unit")


def _matches(warning: dict, want: dict) -> bool:
    return all([
        "rule" not in want or warning["rule"] == want["rule"],
        "severity" not in want or warning["severity"] == want["severity"],
        "message" not in want or want["message"] in warning["message"],
        "codes" not in want or sorted(warning["codes"]) == sorted(map(str, want["codes"])),
        "table" not in want or warning.get("table") == want["table"],     # a claim edit's table row, path:line
    ])


def _describe(want: dict) -> str:
    return ", ".join(f"{k} {v!r}" for k, v in want.items())
