"""The patient's year (docs/domain.md §18): line amounts from the payer's fee schedule, and the payer's
counters across a patient's sessions (KX threshold, visit limits, authorizations), as payer data.

Pure Python over billed results, after the rule network: both engines give the same output by
construction. Money is `decimal.Decimal` throughout (never float); a line's `amount` is written as a JSON
number rounded to cents (60.0 is $60.00), a running total in a state snapshot as a string ("2495.00").

- `price(result, date, payer)`: each billed line's `amount` = units × the schedule's amount for its code
  (a row of one of its modifiers, e.g. CQ, wins over the blank row); a CQ/CO line priced from a row that is
  not the assistant modifier's own (the blank row, or e.g. a GP row) is taken at the payer's
  `amounts.assistant_percent` (Medicare: 85, from 2022; whether the KX accrual
  counts the reduced amount is UNCONFIRMED). A line whose code has no amount gets a warning, no amount.
- `PatientYear`: one patient's accumulators. `apply(session, result)` takes the patient's sessions in
  date-of-service order (then input order; the caller guarantees it) and walks each session's lines in
  claim order: running total before + the line = after; each threshold's value for the period's year
  fires `past` actions when after > value (every such line, the crossing one included) and `reached`
  actions on the line where after first reaches the value (`every`: each multiple of it, past the first
  block). Actions: add_modifier (in the payer's claim order; more than 4 is an error), warn, error, hold
  (an error: the claim is held until resolved; the line is not removed).
- Periods: calendar_year, plan_year from the payer's `plan_year_starts` (MM-DD), or authorization: the
  visits under each authorization (the session's context value named by `authorization_field`; a session
  without one is not counted and gets a warning; year_to_date does not seed it). The patient's
  `year_to_date` has each key (bucket or counter id) from the first of its sessions in the walk that gives
  it (`begin`, whatever session carries it); it seeds each counter's period of the patient's first dated
  session, whatever the payer; a later period starts at zero. A session giving another value of a key is
  told that it was not used (rule engine.year-to-date).
- `snapshot()` / `PatientYear.restore(...)`: the accumulators as JSON, for the audit log's before/after
  and `--replay` (a session replayed alone from its logged "before" gives the same decision).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from decimal import Decimal, ROUND_CEILING, ROUND_HALF_UP
from operator import itemgetter

from . import assistants as A

CENT = Decimal("0.01")
# what a counter's warn/error/hold message may name (the loader refuses any other)
PLACEHOLDERS = frozenset(("value", "total", "year", "counter", "authorization"))
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
    assistant_accrual: str = "reduced"      # what an amount counter adds for such a line: reduced | full


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
    period: str                 # calendar_year | plan_year | authorization
    plan_year_starts: str       # MM-DD
    thresholds: tuple
    where: str
    authorization_field: str = "authorization"      # period authorization: the session's context key

    def bucket(self, discipline) -> str | None:
        if not self.buckets:
            return self.id
        return next((name for name, members in self.buckets if discipline in members), None)

    def authorization(self, session) -> tuple:
        """period: authorization: (the authorization the session is billed under, None) or (None, why it names
        none). The number is its context value, a text or a whole number, its spaces made single (' PA  7 ' is
        'PA 7', 7 is '7'); a value over 64 characters, with a control character, or of another type is no
        authorization number: never cut short (two long values would be one authorization) nor guessed."""
        context = getattr(session, "context", None) or {}
        key = self.authorization_field
        if key not in context:
            return None, f"the session's context has no {key}"
        value = context[key]
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            kind = "true" if value is True else "false" if value is False else \
                "a number that is not whole" if isinstance(value, float) else \
                {list: "a list", dict: "an object"}.get(type(value), "not a text")
            return None, f"the session's context {key} is {kind}, not an authorization number"
        text = " ".join(str(value).split())
        if not text:
            return None, f"the session's context {key} is empty"
        if len(text) > 64:
            return None, f"the session's context {key} is over 64 characters, not an authorization number"
        if not text.isprintable():
            return None, f"the session's context {key} has a control character, not an authorization number"
        return text, None

    def period_of(self, date: str) -> str:
        """The period of a year a date falls in, named by its first day's year (and start, for a plan
        year)."""
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
                   where("id"), data.get("authorization_field", "authorization"))


def _actions(items):
    for action in items or ():
        yield next(iter(action.items()))


def price(result: dict, date: str | None, payer) -> list:
    """Set `amount` on each billed line from the payer's fee schedules (in place); warnings for lines
    without one. Returns (line, Fee row, percent) of each priced line, for explain."""
    source = payer.edits.sources.get("fees", "")
    settings = payer.amounts
    priced = []
    for line in result["lines"]:
        code = line["code"]
        fee, percent, assisted = _fee(line, date, payer)
        if fee is None:
            result["warnings"].append({"severity": "warning", "rule": "fee-schedule", "codes": [code],
                                       "message": f"{code}: no amount in the fee schedule"
                                                  f"{'' if date else ' without a date of service'}: the line has "
                                                  "no amount (none is guessed), and counts toward no dollar total"})
            result["trace"].append({"rule": "fee-schedule", "source": source, "facts": [code],
                                    "effect": f"{code}: no amount"})
            continue
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


def _fee(line: dict, date: str | None, payer) -> tuple:
    """(the fee row pricing the line or None, the assistant percent it is taken at or None, the line's
    assistant modifiers)."""
    settings = payer.amounts
    fee = next((f for t in payer.edits.fees if (f := t.lookup(line["code"], line["modifiers"], date)) is not None),
               None)
    assisted = [m for m in line["modifiers"] if m in settings.assistant_modifiers]
    percent = None
    if (fee is not None and assisted and fee.modifier not in settings.assistant_modifiers
            and settings.assistant_percent
            and (date is None or settings.effective_from is None or date >= settings.effective_from)):
        percent = settings.assistant_percent
    return fee, percent, assisted


def accrued(line: dict, date: str, payer) -> tuple:
    """(what an amount counter adds for a priced line, how explain names it): the line's amount, or with
    the payer's `amounts.assistant_accrual: full` the amount before the assistant percent [UNCONFIRMED
    which one the KX threshold accrues, docs/domain.md §18.1]."""
    amount = Decimal(str(line["amount"]))
    if payer.amounts.assistant_accrual == "full":
        fee, percent, assisted = _fee(line, date, payer)
        if percent is not None:
            full = (fee.amount * line["units"]).quantize(CENT, ROUND_HALF_UP)
            return full, f"{line['code']} {assisted[0]} {dollars(full)} (in full, not {dollars(amount)}: " \
                         "assistant_accrual full)"
    return amount, f"{line['code']} {dollars(amount)}"


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
    given_by: dict = field(default_factory=dict)    # year_to_date key -> the session id that gave it
    start: str | None = None                        # the date of the patient's first session counted
    steps: list = field(default_factory=list)       # the last session's Steps
    explain: bool = False                           # also the Steps of lines that set nothing off

    def begin(self, sessions) -> "PatientYear":
        """The patient's year_to_date from its sessions as they will be walked (any order of the input gives
        the same walk): each key (bucket or counter id) from the first session that gives it."""
        for session in sessions:
            for key, value in sorted((getattr(session, "year_to_date", None) or {}).items()):
                if key not in self.given_by:
                    self.year_to_date = {**(self.year_to_date or {}), key: value}
                    self.given_by[key] = session.session_id
        return self

    def snapshot(self) -> dict:
        """The accumulators as JSON: keys 'payer/counter/period/bucket', totals as strings."""
        return {"patient_id": self.patient_id,
                "year_to_date": dict(self.year_to_date) if self.year_to_date is not None else None,
                "given_by": dict(self.given_by), "start": self.start,
                "totals": {"/".join(key): f"{value:.2f}" for key, value in sorted(self.totals.items())}}

    state = snapshot

    @classmethod
    def restore(cls, resolve, snap: dict) -> "PatientYear":
        year = cls(resolve, snap.get("patient_id"), snap.get("year_to_date"))
        given_by = snap.get("given_by")
        year.given_by, year.start = dict(given_by) if isinstance(given_by, dict) else {}, snap.get("start")
        year.totals = {_key(k): Decimal(v) for k, v in (snap.get("totals") or {}).items()}
        return year

    def _given(self, session, result: dict) -> None:
        """Takes each key of the session's year_to_date the patient has none of yet, while no total it would
        start has been worked; a key given another value or too late is said not to be used."""
        unused, mine = [], self.year_to_date or {}
        for key, value in sorted(session.year_to_date.items()):      # in one order, whatever the input's
            if key in mine:
                if mine[key] != value:
                    unused.append(f"{key} (the patient's is that of session {self.given_by.get(key, '?')})")
            elif any(total[3] == key for total in self.totals):
                unused.append(f"{key} (the patient's year began without it)")
            else:
                self.year_to_date = {**(self.year_to_date or {}), key: value}
                self.given_by[key] = session.session_id
        if unused:
            _warn(result, "warning", "engine.year-to-date", [],
                  f"this session's year_to_date is not used for {'; '.join(unused)}: a patient's year starts from "
                  "one value of each; give the patient's sessions one year_to_date")

    def _total(self, payer_id: str, counter: Counter, period: str, bucket: str, result: dict) -> Decimal:
        key = (payer_id, counter.id, period, bucket)
        total = self.totals.get(key)
        if total is None:
            # year_to_date is the year's: it seeds the period of the patient's first session, not an authorization
            given = (self.year_to_date or {}).get(bucket) \
                if counter.period != "authorization" and period == counter.period_of(self.start) else None
            if given is not None and counter.counts != "amount" and Decimal(str(given)) % 1:
                _warn(result, "warning", "engine.year-to-date", [],
                      f"year_to_date {bucket} {given} is not a whole number of {counter.counts}: not used, the "
                      f"{counter.id} total of {period} starts at 0")
                given = None
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
        if session.year_to_date:
            self._given(session, result)
        date = date or session.date_of_service
        if date is not None and self.start is None:
            self.start = date
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
        authorization = None
        if counter.period == "authorization":
            authorization, why = counter.authorization(session)
            if authorization is None:
                _warn(result, "warning", counter.thresholds[0].id, [line["code"] for line in lines],
                      f"no authorization: counter {counter.id} counts the visits of each authorization (the "
                      f"session's context {counter.authorization_field}: its prior authorization number); this "
                      f"session was not counted: {why}")
                return
            period, year = f"authorization {authorization}", int(date[:4])
        else:
            period = counter.period_of(date)
            year = int(period[:4])
        key = (payer.id, counter.id, period, bucket)
        total = self._total(payer.id, counter, period, bucket, result)
        if counter.counts == "visits":
            steps = [(lines, Decimal(1), "visit")]
        elif counter.counts == "units":
            steps = [([line], Decimal(line["units"]), f"{line['code']} {line['units']}") for line in lines]
        else:
            steps = [([line], *accrued(line, date, payer)) for line in lines if "amount" in line]
        for threshold in counter.thresholds:
            if threshold.value_for(year) is None:       # a year the data does not reach yet (2027): said
                gives = [arg if a == "add_modifier" else a for a, arg in threshold.reached + threshold.past]
                _warn(result, "warning", threshold.id, [line["code"] for line in lines],
                      f"no value of {threshold.id} for {year} in the payer's rules ({threshold.where}): not decided, "
                      f"{', '.join(dict.fromkeys(gives))} not applied; add the {year} value once it is known")
        for group, add, what in steps:
            before, total = total, total + add
            for threshold in counter.thresholds:
                value = threshold.value_for(year)
                if value is None:
                    continue
                self._fire(counter, threshold, value, before, total, group, what, year, payer, result,
                           authorization)
        self.totals[key] = total

    def _fire(self, counter, threshold, value, before, after, group, what, year, payer, result,
              authorization=None) -> None:
        v = value.value
        # visits and units are whole (a restored snapshot holds them as "12.00")
        show = (lambda d: dollars(d)) if counter.counts == "amount" else (lambda d: f"{int(d):,}")
        if value.every:
            past = _below(after, v) > _below(before, v) and after > v if v else False
            reached = int(after // v) > int(before // v) and after >= v if v else False
        else:
            past, reached = after > v, before < v <= after
        if not (past and threshold.past or reached and threshold.reached or self.explain):
            return      # nothing to do or say (explain shows every line's arithmetic)
        confidence = "" if value.confidence in ("", "CERTAIN") else value.confidence
        label = f" (authorization {authorization}, {year})" if authorization is not None else f" ({year})"
        arithmetic = f"{show(before)} + {what} = {show(after)}"
        acted = False
        for fired, actions, compare in ((reached, threshold.reached, ">="), (past, threshold.past, ">")):
            if not fired or not actions:
                continue
            acted = True
            if value.every:     # the multiple of the value just reached or passed
                multiple = (_below(after, v) if compare == ">" else int(after // v)) * v
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
                    text = argument.format(value=show(v), total=show(after), year=year, counter=counter.id,
                                           authorization=authorization or "")
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


def _key(text: str) -> tuple:
    """A snapshot's 'payer/counter/period/bucket' as the totals' key: ids and buckets hold no '/', a period
    (an authorization number) may."""
    payer, counter, rest = text.split("/", 2)
    period, bucket = rest.rsplit("/", 1)
    return payer, counter, period, bucket


def _below(total: Decimal, value: Decimal) -> int:
    """How many multiples of `value` lie strictly below `total` (visits 13 of 12: 1; $100.50 of $100: 1)."""
    return int((total / value).to_integral_value(ROUND_CEILING)) - 1


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


def content(session) -> str:
    """What of a session its billing reads, as text: orders two sessions of one patient, date and session id
    whatever their order in the input (two equal ones give equal results in either order)."""
    if getattr(session, "services", None) is None:
        return ""
    ytd = sorted(session.year_to_date.items()) if session.year_to_date is not None else None
    context = sorted((str(k), repr(v)) for k, v in (getattr(session, "context", None) or {}).items())
    return repr((session.payer, session.discipline, session.services, ytd, context))


def walk_key(session, date: str | None = None) -> tuple:
    """Where a session comes in its patient's walk: dated sessions by date, then those without one; on one
    date by session id, then content(), then input order (the caller's tie-break). engine/patients.py
    sorts the command's sessions by the same key."""
    day = date or session.date_of_service
    return day is None, day or "", session.session_id, content(session)


def apply_all(resolve, sessions, results, date: str | None = None, explain: bool = False) -> list:
    """The counters over a whole input held in memory (explain, compare, scenarios): each patient's
    sessions in walk_key order, whatever the input order, as `payrules bill` takes them; results changed in
    place, in input order. Returns each session's Steps (explain shows them). The edits across a patient's
    sessions of one date are not applied here (engine/patients.bill_shard applies them)."""
    steps = [[] for _ in results]
    keyed = sorted((str(key), walk_key(session, date), i) for i, session in enumerate(sessions)
                   if not isinstance(session, Exception) and (key := patient_key(session)) is not None)
    for key, group in itertools.groupby(keyed, itemgetter(0)):
        group = [i for *_, i in group]
        patient = sessions[group[0]].patient_id
        year = PatientYear(resolve, patient, explain=explain).begin(sessions[i] for i in group)
        for i in group:
            year.apply(sessions[i], results[i], date)
            steps[i] = year.steps
    return steps

