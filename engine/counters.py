"""The patient's year (docs/domain.md §18): line amounts from the payer's fee schedule, and the payer's
counters across a patient's sessions (KX threshold, visit limits, authorizations), as payer data.

Pure Python over billed results, after the rule network: both engines give the same output by
construction. Money is `decimal.Decimal` throughout (never float); a line's `amount` is written as a JSON
number rounded to cents (60.0 is $60.00), a running total in a state snapshot as a string ("2495.00").

- `price(result, date, payer)`: each billed line's `amount` = units × the schedule's amount for its code
  (a row of one of its modifiers, e.g. CQ, wins over the blank row); a CQ/CO line priced from the blank
  row is taken at the payer's `amounts.assistant_percent` (Medicare: 85, from 2022; whether the KX accrual
  counts the reduced amount is UNCONFIRMED). A line whose code has no amount gets a warning, no amount.
- `PatientYear`: one patient's accumulators. `apply(session, result)` takes the patient's sessions in
  date-of-service order (then input order; the caller guarantees it) and walks each session's lines in
  claim order: running total before + the line = after; each threshold's value for the period's year
  fires `past` actions when after > value (every such line, the crossing one included) and `reached`
  actions on the line where after first reaches the value (`every`: each multiple of it, past the first
  block). Actions: add_modifier (in the payer's claim order; more than 4 is an error), warn, error, hold
  (an error: the claim is held until resolved; the line is not removed).
- Periods: calendar_year, or plan_year from the payer's `plan_year_starts` (MM-DD). `year_to_date`
  seeds the period of the patient's first session (by bucket name, or by counter id for a counter
  without buckets); a later period starts at zero.
- `snapshot()` / `PatientYear.restore(...)`: the accumulators as JSON, for the audit log's before/after
  and `--replay` (a session replayed alone from its logged "before" gives the same decision).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, ROUND_HALF_UP

from . import assistants as A

CENT = Decimal("0.01")
NOT_SEEDED = object()


def money(value) -> Decimal:
    return Decimal(str(value)).quantize(CENT, ROUND_HALF_UP)


def dollars(value: Decimal) -> str:
    """2435 -> '2,435.00' (as explain and messages write money)."""
    return f"{value:,.2f}"


@dataclass(frozen=True)
class Amounts:
    """The payer's `amounts:` settings."""
    assistant_percent: int | None = None
    assistant_modifiers: tuple = ("CQ", "CO")
    effective_from: str | None = None
    source: str = ""


@dataclass(frozen=True)
class Value:
    year: int | None            # None: every year
    value: Decimal
    every: bool
    confidence: str
    where: str                  # file:line of the row


@dataclass(frozen=True)
class Threshold:
    id: str
    values: tuple               # of Value
    reached: tuple              # (action, argument)
    past: tuple
    where: str

    def value_for(self, year: int) -> Value | None:
        return next((v for v in self.values if v.year == year), None) or \
            next((v for v in self.values if v.year is None), None)


@dataclass(frozen=True)
class Counter:
    id: str
    counts: str                 # amount | units | visits
    codes: frozenset | None     # only these codes count (None: every code)
    buckets: tuple              # (name, (disciplines)) ; () : one total
    period: str                 # calendar_year | plan_year
    plan_year_starts: str       # MM-DD
    thresholds: tuple
    where: str

    def bucket(self, discipline) -> str | None:
        if not self.buckets:
            return self.id
        return next((name for name, members in self.buckets if discipline in members), None)

    def period_of(self, date: str) -> str:
        """The period a date falls in, named by its first day's year (and start, for a plan year)."""
        if self.period == "plan_year":
            start = self.plan_year_starts
            year = int(date[:4]) - (date[5:] < start)
            return f"{year}-{start}"
        return date[:4]


def build(spec, index: int, data: dict, codes: dict) -> Counter:
    """The Counter of `counters[index]` of a payer file."""
    def where(*path):
        return f"{spec.file}:{spec.line('counters', index, *path)}"
    thresholds = []
    for t, item in enumerate(data["thresholds"]):
        values = tuple(Value(row.get("year"), money(row["value"]) if data["counts"] == "amount"
                             else Decimal(int(Decimal(str(row["value"])))), bool(row.get("every")),
                             row.get("confidence", ""), where("thresholds", t, "values", k))
                       for k, row in enumerate(item["values"]))
        thresholds.append(Threshold(item["id"], values, tuple(_actions(item.get("reached"))),
                                    tuple(_actions(item.get("past"))), where("thresholds", t, "id")))
    return Counter(data["id"], data["counts"], codes.get(data["codes"]) if "codes" in data else None,
                   tuple((name, tuple(members)) for name, members in (data.get("buckets") or {}).items()),
                   data.get("period", "calendar_year"), data.get("plan_year_starts", "01-01"), tuple(thresholds),
                   where("id"))


def _actions(items):
    for action in items or ():
        yield next(iter(action.items()))


def price(result: dict, date: str | None, payer) -> list:
    """Set `amount` on each billed line from the payer's fee schedules (in place); warnings for lines
    without one. Returns (line, Fee row, percent) of each priced line, for explain."""
    tables = payer.edits.fees
    source = payer.edits.sources.get("fees", "")
    settings = payer.amounts
    priced = []
    for line in result["lines"]:
        code, mods = line["code"], line["modifiers"]
        fee = next((f for t in tables if (f := t.lookup(code, mods, date)) is not None), None)
        if fee is None:
            result["warnings"].append({"severity": "warning", "rule": "fee-schedule", "codes": [code],
                                       "message": f"{code}: no amount in the fee schedule"
                                                  f"{'' if date else ' without a date of service'}: the line has "
                                                  "no amount (none is guessed), and counts toward no dollar total"})
            result["trace"].append({"rule": "fee-schedule", "source": source, "facts": [code],
                                    "effect": f"{code}: no amount"})
            continue
        percent = None
        assisted = [m for m in mods if m in settings.assistant_modifiers]
        if (assisted and not fee.modifier and settings.assistant_percent
                and (date is None or settings.effective_from is None or date >= settings.effective_from)):
            percent = settings.assistant_percent
        amount = fee.amount * line["units"]
        if percent is not None:
            amount = amount * percent / 100
        amount = amount.quantize(CENT, ROUND_HALF_UP)
        line["amount"] = float(amount)
        effect = f"{code} {line['units']} × {fee.amount:.2f}" + (f" × {percent}% ({assisted[0]})" if percent else "") \
            + f" = {amount:.2f}"
        result["trace"].append({"rule": "fee-schedule", "source": settings.source if percent else source,
                                "facts": [code], "effect": effect, "table": fee.where})
        priced.append((line, fee, percent))
    return priced


@dataclass
class Step:
    """One line's (or visit's) arithmetic against one threshold, for explain: "2,435.00 + 97110 60.00 =
    2,495.00 > 2,480.00 (2026) → KX", or "... <= 2,480.00 (2026) → no KX" when it sets nothing off."""
    threshold: str
    source: str                 # file:line of the threshold's value row
    text: str
    confidence: str = ""        # the value row's label when not CERTAIN (UNCONFIRMED, SECONDARY, EXAMPLE)


def _said(action: str, argument) -> str:
    """What an action is called in a step: the modifier it adds (KX), else warning / error / hold."""
    return argument if action == "add_modifier" else {"warn": "warning"}.get(action, action)


@dataclass
class PatientYear:
    """One patient's running totals: (payer, counter, period, bucket) -> Decimal."""
    resolve: object                         # (payer id, date) -> Payer
    patient_id: str | None = None
    year_to_date: dict | None = None
    totals: dict = field(default_factory=dict)
    first: dict = field(default_factory=dict)       # (payer, counter) -> the period year_to_date seeds
    steps: list = field(default_factory=list)       # the last session's Steps
    explain: bool = False                           # also the Steps of lines that set nothing off

    def snapshot(self) -> dict:
        """The accumulators as JSON: keys 'payer/counter/period/bucket', totals as strings."""
        return {"patient_id": self.patient_id,
                "year_to_date": dict(self.year_to_date) if self.year_to_date is not None else None,
                "seeded": {f"{p}/{c}": period for (p, c), period in sorted(self.first.items())},
                "totals": {"/".join(key): f"{value:.2f}" for key, value in sorted(self.totals.items())}}

    state = snapshot

    @classmethod
    def restore(cls, resolve, snap: dict) -> "PatientYear":
        year = cls(resolve, snap.get("patient_id"), snap.get("year_to_date"))
        year.first = {tuple(k.split("/", 1)): v for k, v in (snap.get("seeded") or {}).items()}
        year.totals = {tuple(k.split("/", 3)): Decimal(v) for k, v in (snap.get("totals") or {}).items()}
        return year

    def _total(self, payer_id: str, counter: Counter, period: str, bucket: str) -> Decimal:
        key = (payer_id, counter.id, period, bucket)
        total = self.totals.get(key)
        if total is None:
            seeded = self.first.setdefault((payer_id, counter.id), period)
            given = (self.year_to_date or {}).get(bucket) if seeded == period else None
            total = money(given) if given is not None and counter.counts == "amount" else \
                Decimal(int(given)) if given is not None else Decimal(0)
            self.totals[key] = total
        return total

    def apply(self, session, result: dict, date: str | None = None) -> dict:
        """The result with this patient's counters applied (in place), the accumulators updated. `date`:
        the date of service the session was billed under (--date), when not its own."""
        self.steps = []
        if "error" in result:
            return result
        if self.year_to_date is None and session.year_to_date is not None:
            self.year_to_date = dict(session.year_to_date)
        date = date or session.date_of_service
        payer = self.resolve(result["payer"], date)
        if not payer.counters:
            return result
        if date is None:
            _warn(result, "warning", payer.counters[0].thresholds[0].id, [],
                  "no date_of_service: the patient's counters (" + ", ".join(c.id for c in payer.counters)
                  + ") need it to place the session in its year; none was applied")
            return result
        for counter in payer.counters:
            self._count(counter, payer, session, result, date)
        return result

    def _count(self, counter: Counter, payer, session, result: dict, date: str) -> None:
        bucket = counter.bucket(session.discipline)
        lines = [line for line in result["lines"] if counter.codes is None or line["code"] in counter.codes]
        if bucket is None or not lines:
            if bucket is None and lines and session.discipline is None:
                _warn(result, "warning", counter.thresholds[0].id, [],
                      f"no discipline: counter {counter.id} has a total per discipline "
                      f"({', '.join(n for n, _ in counter.buckets)}); none was applied")
            return
        if counter.counts == "amount" and not payer.edits.fees:
            names = [name for name, _ in counter.buckets] or [counter.id]
            if not any(name in (self.year_to_date or {}) for name in names):
                return      # no amount given for this counter: as before the patient's year, nothing to say
            _warn(result, "warning", counter.thresholds[0].id, [line["code"] for line in lines],
                  f"the payer has no fee schedule: the running total of {counter.id} cannot be worked, so "
                  f"{', '.join(t.id for t in counter.thresholds)} cannot be decided (name one under tables: fees)")
            return
        period = counter.period_of(date)
        year = int(period[:4])
        key = (payer.id, counter.id, period, bucket)
        total = self._total(payer.id, counter, period, bucket)
        if counter.counts == "visits":
            steps = [(lines, Decimal(1), "visit")]
        elif counter.counts == "units":
            steps = [([line], Decimal(line["units"]), f"{line['code']} {line['units']}") for line in lines]
        else:
            steps = [([line], Decimal(str(line["amount"])), f"{line['code']} {dollars(Decimal(str(line['amount'])))}")
                     for line in lines if "amount" in line]
        missing = [t.id for t in counter.thresholds if t.value_for(year) is None]
        if missing:
            _warn(result, "warning", missing[0], [line["code"] for line in lines],
                  f"no value of {', '.join(missing)} for {year} in the payer's rules: not decided")
        for group, add, what in steps:
            before, total = total, total + add
            for threshold in counter.thresholds:
                value = threshold.value_for(year)
                if value is None:
                    continue
                self._fire(counter, threshold, value, before, total, group, what, year, payer, result)
        self.totals[key] = total

    def _fire(self, counter, threshold, value, before, after, group, what, year, payer, result) -> None:
        v = value.value
        show = (lambda d: dollars(d)) if counter.counts == "amount" else (lambda d: f"{d:,}")
        if value.every:
            past = int((after - 1) // v) > int((before - 1) // v) and after > v if v else False
            reached = int(after // v) > int(before // v) and after >= v if v else False
        else:
            past, reached = after > v, before < v <= after
        if not (past and threshold.past or reached and threshold.reached or self.explain):
            return      # nothing to do or say (explain shows every line's arithmetic)
        confidence = "" if value.confidence in ("", "CERTAIN") else value.confidence
        label = f" ({year})"
        arithmetic = f"{show(before)} + {what} = {show(after)}"
        acted = False
        for fired, actions, compare in ((reached, threshold.reached, ">="), (past, threshold.past, ">")):
            if not fired or not actions:
                continue
            acted = True
            if value.every:     # the multiple of the value just reached or passed
                multiple = (int((after - 1) // v) if compare == ">" else int(after // v)) * v
                relation = f"{compare} {show(multiple)} (every {show(v)})"
            else:
                relation = f"{compare} {show(v)}"
            done = []
            for action, argument in actions:
                if action == "add_modifier":
                    for line in group:
                        if argument not in line["modifiers"]:
                            line["modifiers"] = A.claim_order(line["modifiers"] + [argument], payer.modifier_order)
                            if len(line["modifiers"]) > 4:
                                _warn(result, "error", "engine.modifier-limit", [line["code"]],
                                      f"{line['code']} {' '.join(line['modifiers'])}: {len(line['modifiers'])} "
                                      "modifiers, a claim line holds at most 4 (837P): none was dropped; correct "
                                      "the documentation")
                    done.append(_said(action, argument))
                else:
                    severity = "warning" if action == "warn" else "error"
                    text = argument.format(value=show(v), total=show(after), year=year, counter=counter.id)
                    _warn(result, severity, threshold.id, [line["code"] for line in group],
                          ("held: " if action == "hold" else "") + text, once=True)
                    done.append(_said(action, argument))
            step = f"{arithmetic} {relation}{label} → {', '.join(done)}"
            self.steps.append(Step(threshold.id, value.where, step, confidence))
            result["trace"].append({"rule": threshold.id, "source": value.where,
                                    "facts": [line["code"] for line in group],
                                    "effect": step + (f" [value {confidence}]" if confidence else "")})
        if not acted:
            if value.every:     # the next multiple of the value, which this total has not passed
                whole, part = divmod(after, v) if v else (0, 0)
                relation = f"<= {show((whole + (1 if part else 0)) * v)} (every {show(v)})"
            else:
                relation = f"{'<=' if after <= v else '>'} {show(v)}"
            said = dict.fromkeys(_said(a, arg) for a, arg in threshold.reached + threshold.past)
            self.steps.append(Step(threshold.id, value.where,
                                   f"{arithmetic} {relation}{label} → no {' or '.join(said)}", confidence))


def _warn(result, severity, rule, codes, message, once=False) -> None:
    if once:
        for w in result["warnings"]:
            if w["rule"] == rule and w["message"] == message:
                w["codes"] += [c for c in codes if c not in w["codes"]]
                return
    result["warnings"].append({"severity": severity, "rule": rule, "message": message, "codes": codes})


def patient_key(session):
    """Whose year a session counts in: its patient_id; a session without one but with year_to_date is a
    patient of its own (None: the session is independent, as without counters)."""
    patient = getattr(session, "patient_id", None)
    if patient is not None:
        return ("patient", patient)
    if getattr(session, "year_to_date", None) is not None:
        return ("session", id(session))
    return None


def apply_all(resolve, sessions, results, date: str | None = None, explain: bool = False) -> list:
    """The counters over a whole input held in memory (explain's sessions without a patient_id, which have
    their own year_to_date; tests): each patient's sessions in the order `payrules bill` takes them (engine/patients.py: by date of service, the undated last, then by
    session id, then input order), whatever the input order; results changed in place, in input order.
    Returns each session's Steps (explain shows them). The edits across a patient's sessions of one date
    are not applied here (engine/patients.bill_shard applies them)."""
    steps = [[] for _ in results]
    keyed = [(key, date or session.date_of_service, session.session_id, i) for i, session in enumerate(sessions)
             if not isinstance(session, Exception) and (key := patient_key(session)) is not None]
    keyed.sort(key=lambda k: (str(k[0]), k[1] is None, k[1] or "", k[2], k[3]))
    years: dict = {}
    for key, _, _, i in keyed:
        year = years.get(key)
        if year is None:
            year = years[key] = PatientYear(resolve, key[1] if key[0] == "patient" else None, explain=explain)
        year.apply(sessions[i], results[i], date)
        steps[i] = year.steps
    return steps

