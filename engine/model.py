"""Small immutable types shared by every stage. They know nothing of YAML or durable_rules."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple


class _NoContext(Mapping):
    """The context of a session that gives none: empty, read-only, one object shared by all. It pickles
    as a reference to NO_CONTEXT (with --jobs, sessions are sent to worker processes; a MappingProxyType
    cannot be pickled)."""

    __slots__ = ()

    def __getitem__(self, key):
        raise KeyError(key)

    def __iter__(self):
        return iter(())

    def __len__(self):
        return 0

    def __repr__(self):
        return "NO_CONTEXT"

    def __reduce__(self):
        return "NO_CONTEXT"


NO_CONTEXT = _NoContext()


@dataclass(frozen=True)
class Method:
    """A payer's unit method for 15-minute timed codes, as data."""
    name: str = "cms_8_minute"          # cms_8_minute (pooled) | midpoint_per_code
    unit_minutes: int = 15
    first_unit_minutes: int = 8
    tie_break: tuple = ("minutes", "order", "code")

    @property
    def pooled(self) -> bool:
        return self.name == "cms_8_minute"


@dataclass(frozen=True)
class Assistants:
    """How a payer marks units furnished by an assistant (CQ/CO, docs/domain.md §16): the payer file's
    `assistant_modifiers` settings, each with the file:line that set it (for traces)."""
    enabled: bool = False
    modifiers: tuple = ()                   # (provider, modifier) pairs, e.g. ("PTA", "CQ")
    de_minimis_percent: int = 10
    both_ge_8_minutes: str = "therapist"    # therapist | assistant
    two_units_9_to_14: str = "one_each"     # one_each | both_assistant
    evaluations: str = ""                   # the code list of therapist-only codes
    payment_note: str = ""
    sources: tuple = ()                     # (setting key, "file:line") pairs

    def source(self, key: str) -> str:
        return dict(self.sources).get(key) or dict(self.sources).get("", "")


@dataclass(frozen=True)
class Family:
    """A primary code and its add-on: units are split primary x1 and add-on x(n-1)."""
    id: str
    primary: str
    addon: str | None = None


@dataclass(frozen=True)
class Action:
    kind: str           # one of ACTIONS
    value: object


@dataclass(frozen=True)
class Rule:
    id: str
    description: str
    source: str
    when: dict
    then: tuple         # of Action
    file: str           # path relative to the rules tree's parent
    line: int           # line of the rule's `id:`
    index: int          # position in the payer's effective rule list

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Payer:
    id: str
    name: str
    file: str
    method: Method
    codes: dict                     # list name -> frozenset of codes
    families: tuple                 # of Family
    rules: tuple                    # of Rule
    effective_from: str | None = None
    effective_to: str | None = None
    description: str = ""
    example: bool = False
    extends: str | None = None
    digest: str = ""                # sha256 of the rule file(s) the payer was built from
    line: int = 1                   # line of the `payer:` key
    files: tuple = ()               # (file, sha256) of every rule file used, parent first
    assistants: Assistants = Assistants()
    modifier_order: tuple = ()      # claim order of modifiers; others follow in the order they came
    modifier_order_source: str = ""
    edits: object = field(default=None, compare=False)     # edits.EditTables: the PTP/MUE tables and settings
    counters: tuple = ()            # counters.Counter: what the payer counts across a patient's sessions
    amounts: object = field(default=None, compare=False)   # counters.Amounts: how a line's amount is worked

    def __post_init__(self):
        # lookups made for every line of every session, computed once
        roles = {}
        for fam in self.families:
            roles[fam.primary] = (fam, "primary")
            if fam.addon:
                roles[fam.addon] = (fam, "addon")
        lists = {}
        for name in sorted(self.codes):
            for code in self.codes[name]:
                lists.setdefault(code, []).append(name)
        object.__setattr__(self, "_roles", roles)
        object.__setattr__(self, "_families", {f.id: f for f in self.families})
        object.__setattr__(self, "code_lists", {code: tuple(names) for code, names in lists.items()})
        object.__setattr__(self, "known_codes", frozenset(lists))

    def family(self, family_id: str):
        return self._families.get(family_id)

    def family_of(self, code: str):
        """(Family, "primary" | "addon") of a code, or (None, None)."""
        return self._roles.get(code, (None, None))


class Service(NamedTuple):
    """One service line as entered (a tuple: one is made for every line of every session; sessions.py
    builds it from a tuple of all its fields, in this order)."""
    code: str
    minutes: int
    group_size: int | None = None
    provider: str | None = None
    modifiers: tuple = ()            # documented modifiers (59, XE, 76, ...), as entered


class Session(NamedTuple):
    """One session to bill (a tuple: one is made for every session of a batch; sessions.py builds it
    from a tuple of all its fields, in this order)."""
    session_id: str
    services: tuple                  # of Service, as entered
    payer: str | None = None
    date_of_service: str | None = None
    discipline: str | None = None
    context: Mapping = NO_CONTEXT
    file: str | None = None          # where the session came from, for messages
    line: int | None = None
    patient_id: str | None = None    # sessions of one patient share counters (engine/counters.py)
    year_to_date: Mapping | None = None     # bucket or counter id -> amount/count before this input
