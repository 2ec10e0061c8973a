"""Payer rule files → validated Payer models, with file:line for every error.

Stages: read (bounded size) → YAML with line numbers → JSON Schema → file checks (one file alone) →
Registry: versions of a payer by effective dates, `extends` chains → resolution for a date of service
(parent first, then the child's method keys, code lists, families, overrides, disables, new rules) →
checks of the merged payer (code lists, families, thresholds) → Payer.
"""
from __future__ import annotations

import datetime
import hashlib
import os
import posixpath
import string
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from . import cache, counters as C
from .compiler import compile_payer
from .edits import NONE as NO_EDITS, EditTables, load as load_table
from .errors import EvaluationError, RuleFileError, SessionError, UsageError, date_problem, is_date, suggest
from .model import Assistants, Action, Family, Method, Payer, Rule
from .paths import RULES_DIR, shown
from .schema import schema_errors
from .yamlload import Located, format_path, load_text

MAX_RULE_FILE_BYTES = 2 * 1024 * 1024
MAX_EXTENDS_DEPTH = 16

# What a message template may name; each is a field of the line or session fact it matched.
PLACEHOLDERS = {"code", "minutes", "group_size", "provider", "discipline", "family", "primary",
                "date_of_service"}
LINE_ACTIONS = {"timed_units", "units", "block_units", "max_units", "modifier", "hold"}
UNIT_ACTIONS = {"timed_units", "units", "block_units"}
METHOD_DEFAULTS = {"unit_minutes": 15, "first_unit_minutes": 8, "tie_break": ["minutes", "order", "code"]}


@dataclass(frozen=True)
class PayerFile:
    """A rule file as found on disk: where it is and how it is named in messages."""
    path: Path
    display: str            # relative to the rules tree's parent, e.g. rules/medicare.yaml (results, listings)
    shown: str = ""         # how messages name it: a path the user can open (paths.shown); default: display

    def __post_init__(self):
        if not self.shown:
            object.__setattr__(self, "shown", self.display)


@dataclass(frozen=True)
class Spec:
    """One schema-valid payer file: a whole payer, a version of one, or a child (`extends`)."""
    doc: Located            # its file is the name messages give (PayerFile.shown)
    digest: str
    raw: bytes = b""        # the file's bytes as read: what is billed with them is logged with them
    display: str = ""       # PayerFile.display: what results and listings name
    # parts with schema errors, as (section,) and (section, item) paths: left out of every check, so that
    # the rest of the file is checked too (such a file is never billed: it has errors)
    broken: frozenset = frozenset()
    path: Path | None = None    # the file on disk: its folder holds the tables it names

    def items(self, section: str) -> list:
        """(index, item) of a list section (rules, override, families, disable), its broken items left out."""
        value = self.data.get(section, [])
        if (section,) in self.broken or not isinstance(value, list):
            return []
        return [(i, item) for i, item in enumerate(value) if (section, i) not in self.broken]

    @property
    def data(self) -> dict:
        return self.doc.data

    @property
    def id(self) -> str:
        return self.data["payer"]

    @property
    def file(self) -> str:
        return self.display or self.doc.file

    @property
    def shown(self) -> str:
        return self.doc.file

    @property
    def extends(self):
        return self.data.get("extends")

    @property
    def effective(self) -> tuple:
        """(effective_from, effective_to), None where absent (or broken: never billed, checked without)."""
        return tuple(None if (key,) in self.broken else self.data.get(key)
                     for key in ("effective_from", "effective_to"))

    def line(self, *path) -> int:
        return self.doc.line_of(path)

    def err(self, path, message) -> RuleFileError:
        return RuleFileError(message, self.shown, self.doc.line_of(path), format_path(path))


def in_range(date, span) -> bool:
    start, end = span
    return date is None or ((start is None or start <= date) and (end is None or date <= end))


def _span(item: dict) -> tuple:
    return item.get("effective_from"), item.get("effective_to")


def overlaps(a, b) -> bool:
    return (a[0] is None or b[1] is None or a[0] <= b[1]) and (b[0] is None or a[1] is None or b[0] <= a[1])


def check_tree(directory: Path) -> None:
    """UsageError unless `directory` is a directory that can be read (rglob would skip it silently)."""
    if not directory.is_dir():
        raise UsageError(f"rules directory not found: {directory}")
    try:
        with os.scandir(directory):
            pass
    except OSError as exc:
        raise UsageError(f"cannot read rules directory {directory}: {exc.strerror}") from None


def rule_files(directory: Path, below: bool = True) -> list:
    """Every *.yaml / *.yml file below a rules tree (`below` False: only those in the folder itself), in a
    stable order."""
    directory = Path(directory)
    check_tree(directory)
    base = directory.resolve().parent
    found = directory.rglob("*") if below else directory.glob("*")
    return [PayerFile(path, _display(path, base), shown(path)) for path in sorted(found)
            if path.suffix in (".yaml", ".yml") and path.is_file() and not path.name.endswith(".tests.yaml")]


def _display(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()


# a schema error in (or under) one of these, or in a section itself, leaves a file that cannot be merged
# with others or checked as a payer
_STRUCTURAL = {(), ("payer",), ("name",), ("extends",), ("method",)}
_SECTIONS = {("codes",), ("families",), ("rules",), ("override",), ("disable",)}


def read_spec(pfile: PayerFile):
    """(Spec or None, errors): the file as a Spec, and every error found in the file alone (sorted by
    line). A file with errors is still merged, so that `validate` lists at once the errors that depend
    on its parent too: with its schema errors too, their items (a rule, a family) left out, unless they
    are in its structure (the payer's id, dates, method, a section that is not a list)."""
    try:
        with open(pfile.path, "rb") as fh:
            raw = fh.read(MAX_RULE_FILE_BYTES + 1)      # never more: the file may be huge
            size = os.fstat(fh.fileno()).st_size
    except OSError as exc:
        return None, [RuleFileError(f"cannot read: {exc.strerror}", pfile.shown)]
    if len(raw) > MAX_RULE_FILE_BYTES:
        return None, [RuleFileError(f"file too large ({max(size, len(raw))} bytes; at most {MAX_RULE_FILE_BYTES})",
                                    pfile.shown)]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, [RuleFileError("not UTF-8 text", pfile.shown, raw[:exc.start].count(b"\n") + 1)]
    digest = hashlib.sha256(raw).hexdigest()
    doc = cache.load(digest, pfile.shown)
    if doc is None:
        try:
            doc = load_text(text, pfile.shown, RuleFileError)
        except RuleFileError as exc:
            return None, [exc]
        if not isinstance(doc.data, dict):
            return None, [RuleFileError("a payer file must be a mapping with payer, name, method and rules",
                                        pfile.shown, doc.line_of(()))]
        errors = schema_errors("payer", doc, RuleFileError)
        if errors:
            spec = Spec(doc, digest, raw, pfile.display, frozenset(e.at[:2] for e in errors), pfile.path)
            errors = sorted(errors + _file_errors(spec), key=_line_order)
            # (a misspelt key's error is at the misspelling: "nam" stands for the missing "name")
            structural = any(type(doc.data.get(key)) is not str for key in ("payer", "name")) or \
                any(e.at[:1] in _STRUCTURAL or e.at in _SECTIONS for e in errors if hasattr(e, "at"))
            return None if structural else spec, errors
        cache.store(digest, doc)
    spec = Spec(doc, digest, raw, pfile.display, path=pfile.path)
    return spec, sorted(_file_errors(spec), key=_line_order)


def _line_order(error) -> tuple:
    return error.line or 0, error.path


def _code(value) -> str:
    return str(value)


def _file_errors(spec: Spec) -> list:
    """Checks that need nothing but the file itself (its broken parts left out)."""
    data, errors, broken, items = spec.data, [], spec.broken, spec.items
    # every number of a payer file is a whole number (or a code); JSON Schema's "integer" lets 15.0 through
    for path, value in _floats(data, ()):
        if path[:1] in broken or path[:2] in broken:
            continue        # said by the schema (a fraction is no integer), or in a part left out
        errors.append(spec.err(path, f"{value!r} is not a whole number written without a decimal point "
                                     f"(write {int(value)})"))
    for key in ("effective_from", "effective_to"):
        if key in data and (key,) not in broken and not is_date(data[key]):
            errors.append(spec.err((key,), date_problem(data[key])))
    if _backwards(spec.effective):
        errors.append(spec.err(("effective_to",), "effective_to is before effective_from"))
    for kind, names in (data.get("tables") or {}).items() if ("tables",) not in broken else ():
        for i, name in enumerate(names if isinstance(names, list) else []):
            if isinstance(name, str) and _escapes(name):
                errors.append(spec.err(("tables", kind, i), f"{name!r}: a table's path is relative to this file's "
                                                            "folder and stays inside it (no absolute path, no ..)"))
    if not broken & {("payer",), ("extends",)} and "extends" in data and spec.extends == data.get("payer"):
        errors.append(spec.err(("extends",), "a payer cannot extend itself"))
    counter_ids: set = set()
    for i, counter in items("counters"):
        if counter["id"] in counter_ids:
            errors.append(spec.err(("counters", i, "id"), f"duplicate counter id {counter['id']!r}"))
        counter_ids.add(counter["id"])
        for t, threshold in enumerate(counter["thresholds"]):
            years: set = set()
            for k, row in enumerate(threshold["values"]):
                if row.get("year") in years:
                    errors.append(spec.err(("counters", i, "thresholds", t, "values", k, "year"),
                                           f"a second value for {row.get('year') or 'every year'}"))
                years.add(row.get("year"))
                if counter.get("counts") != "amount" and isinstance(row.get("value"), str) and \
                        row["value"].partition(".")[2].strip("0"):
                    errors.append(spec.err(("counters", i, "thresholds", t, "values", k, "value"),
                                           f"{row['value']!r}: a count of {counter['counts']} is a whole number"))
            if "reached" not in threshold and "past" not in threshold:
                errors.append(spec.err(("counters", i, "thresholds", t, "id"), "a threshold needs reached: or past: "
                                       "(what happens at and past its value)"))
        if counter.get("period") == "plan_year" and "plan_year_starts" not in counter:
            errors.append(spec.err(("counters", i, "period"), "period plan_year needs plan_year_starts (MM-DD)"))
        for key, period in (("plan_year_starts", "plan_year"), ("authorization_field", "authorization")):
            if key in counter and counter.get("period", "calendar_year") != period:
                errors.append(spec.err(("counters", i, key), f"{key} is for period: {period} (this counter's "
                                                             f"period is {counter.get('period', 'calendar_year')})"))
        for t, threshold in enumerate(counter["thresholds"]):
            for when in ("reached", "past"):
                for j, action in enumerate(threshold.get(when) or ()):
                    (kind, text), = action.items()
                    bad = _bad_placeholders(text, C.PLACEHOLDERS) if kind != "add_modifier" else None
                    if bad:
                        errors.append(spec.err(("counters", i, "thresholds", t, when, j, kind),
                                               f"unknown placeholder {{{bad}}}{suggest(bad, C.PLACEHOLDERS)}; "
                                               f"allowed: {', '.join(sorted(C.PLACEHOLDERS))}"))
    amounts = data.get("amounts") if ("amounts",) not in broken else None
    if isinstance(amounts, dict) and "effective_from" in amounts and not is_date(amounts["effective_from"]):
        errors.append(spec.err(("amounts", "effective_from"), date_problem(amounts["effective_from"])))
    family_ids = set()
    for i, fam in items("families"):
        if fam["id"] in family_ids:
            errors.append(spec.err(("families", i, "id"), f"duplicate family id {fam['id']!r}"))
        family_ids.add(fam["id"])
    seen: dict = {}
    for section in ("rules", "override"):
        for i, rule in items(section):
            path = (section, i)
            span = (rule.get("effective_from"), rule.get("effective_to"))
            for key in ("effective_from", "effective_to"):
                if key in rule and not is_date(rule[key]):
                    errors.append(spec.err(path + (key,), date_problem(rule[key])))
            if _backwards(span):
                errors.append(spec.err(path + ("effective_to",), "effective_to is before effective_from"))
            for other_span, other_line in seen.get(rule["id"], []):
                if overlaps(span, other_span):
                    errors.append(spec.err(path + ("id",), f"duplicate rule id {rule['id']!r} (first at line "
                                           f"{other_line}); two rules may share an id only with effective "
                                           "dates that do not overlap"))
                    break
            seen.setdefault(rule["id"], []).append((span, spec.line(*path, "id")))
            if rule["id"].startswith("engine."):
                errors.append(spec.err(path + ("id",), f"rule id {rule['id']!r} is reserved: ids starting with "
                                                       "'engine.' are the engine's own safety nets"))
            errors.extend(_rule_errors(spec, rule, path))
    return errors


def _escapes(name: str) -> bool:
    """Whether a table's path leaves the payer file's folder (absolute, or with a .. part)."""
    return (PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute()
            or ".." in PurePosixPath(name.replace("\\", "/")).parts)


def _floats(value, path):
    if isinstance(value, float):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _floats(item, path + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _floats(item, path + (i,))


def _rule_errors(spec: Spec, rule: dict, path: tuple) -> list:
    errors = []
    # a date the session's date is compared with: anything but YYYY-MM-DD would never (or wrongly) match
    test = rule["when"].get("session", {}).get("date_of_service")
    tpath = path + ("when", "session", "date_of_service")
    tests = [(tpath, test)] if isinstance(test, str) else [] if not isinstance(test, dict) else \
        [(tpath + ("in", i), v) for i, v in enumerate(test.get("in", []))] + \
        [(tpath + (op,), v) for op, v in test.items() if op not in ("in", "exists")]
    for where, value in tests:
        if not is_date(value):
            errors.append(spec.err(where, date_problem(value)))
    line_cond = rule["when"].get("line")
    if len([a for a in rule["then"] if next(iter(a)) in UNIT_ACTIONS]) > 1:
        errors.append(spec.err(path + ("then",), "a rule may decide units only once (timed_units, units or "
                                                 "block_units)"))
    for j, action in enumerate(rule["then"]):
        (kind, value), = action.items()
        apath = path + ("then", j, kind)
        if kind in LINE_ACTIONS and line_cond is None:
            errors.append(spec.err(apath, f"action {kind!r} acts on a service line: add a line: condition "
                                          "under when: (line: {} matches every line)"))
        if kind in ("info", "warn", "error", "hold"):
            bad = _bad_placeholders(value)
            if bad:
                errors.append(spec.err(apath, f"unknown placeholder {{{bad}}}{suggest(bad, PLACEHOLDERS)}; "
                                              f"allowed: {', '.join(sorted(PLACEHOLDERS))}"))
        if kind == "block_units":
            for first, whole in (("first_min_minutes", "first_minutes"), ("next_min_minutes", "next_minutes")):
                if value[first] > value[whole]:
                    errors.append(spec.err(apath + (first,), f"{first} must not be larger than {whole}"))
    return errors


def _backwards(span) -> bool:
    return bool(span[0] and span[1] and span[0] > span[1])


def _bad_placeholders(template: str, allowed=PLACEHOLDERS):
    try:
        for _, name, spec, conv in string.Formatter().parse(template):
            if name is not None and (name not in allowed or spec or conv):
                return name or "(empty)"
    except ValueError:
        return "(unbalanced braces: write {{ and }} for literal braces)"
    return None


@dataclass
class _Merged:
    """A payer's effective content, parent first, each rule with the file it came from."""
    spec: Spec
    method: dict = field(default_factory=dict)
    method_from: dict = field(default_factory=dict)     # method key -> the Spec that set it, for messages
    codes: dict = field(default_factory=dict)
    codes_from: dict = field(default_factory=dict)      # list name -> the Spec that wrote it last
    families: dict = field(default_factory=dict)
    rules: list = field(default_factory=list)       # (spec, path, rule dict)
    specs: list = field(default_factory=list)       # every file used, parent first
    errors: list = field(default_factory=list)      # what the files do wrong to what they extend
    unsure: frozenset = frozenset()                 # ids of rules left out for their schema errors
    tables: dict = field(default_factory=dict)      # kind -> the Spec whose `tables:` names them (kind by kind)
    ptp: Spec | None = None                         # the Spec whose `ptp:` settings apply
    claim: dict = field(default_factory=dict)   # (section, key) of assistant_modifiers/modifier_order -> (value, "file:line")
    counters: dict = field(default_factory=dict)    # counter id -> (Spec, index): a child's counter of an id replaces it
    amounts: Spec | None = None                     # the Spec whose `amounts:` settings apply


class Registry:
    """Every payer file found in the bundled rules tree plus extra trees; resolves a payer for a date."""

    def __init__(self, extra_dirs=(), include_bundled: bool = True, strict: bool = True, extra_files=()):
        dirs = ([RULES_DIR] if include_bundled else []) + [Path(d) for d in extra_dirs]
        found = [pfile for directory in dirs for pfile in rule_files(directory)] + list(extra_files)
        seen, self.files = set(), []
        for pfile in found:                      # a file named twice (a tree and by name) is read once
            if pfile.path.resolve() not in seen:
                seen.add(pfile.path.resolve())
                self.files.append(pfile)
        self.file_errors: dict = {}             # display -> [RuleFileError]
        self.versions: dict = {}                # payer id -> [Spec], by effective_from
        for pfile in self.files:
            spec, errors = read_spec(pfile)
            if errors:
                self.file_errors[pfile.shown] = errors
            if spec is not None:
                self.versions.setdefault(spec.id, []).append(spec)
        for specs in self.versions.values():
            specs.sort(key=lambda s: (s.effective[0] or "", s.file))
        self._resolved: dict = {}               # (payer id, date) -> Payer
        self._interned: dict = {}               # what is in effect (files, rules) -> its one Payer
        if strict:
            errors = self.errors()
            if errors:
                raise RuleFileError.gather(errors)

    def errors(self) -> list:
        """Every error of every file, alone and merged with its parents, sorted by file and line."""
        errors = [e for errs in self.file_errors.values() for e in errs]
        merged = {}                                 # file -> (spec, errors of it merged with its parents)
        for specs in self.versions.values():
            errors.extend(self._version_errors(specs))
            for spec in specs:
                found = []
                for date in self._check_dates(spec):
                    try:
                        merged_with = self._merge(spec, date, ())
                        found.extend(merged_with.errors)
                        payer = self._build(merged_with, date, check=True)
                        if not merged_with.errors and not any(s.shown in self.file_errors for s in merged_with.specs):
                            self._compile(payer)    # (a file's own errors, e.g. 15.0, would fail it again)
                    except RuleFileError as exc:
                        found.append(exc)
                    except _Errors as exc:
                        found.extend(exc.errors)
                merged[spec.shown] = (spec, found)
        key = lambda e: (e.file, e.line, e.path, e.message)     # noqa: E731
        own = {file: {key(e) for e in found} for file, (_, found) in merged.items()}
        for spec, found in merged.values():
            for e in found:
                if e.file == spec.shown or e.file not in own or key(e) in own[e.file]:   # (a table: as it is)
                    errors.append(e)
                else:   # the parent is fine alone: this file's changes (a list, a method key) broke it
                    errors.append(spec.err(("extends",), f"with this file's changes, {e.file}:{e.line}: "
                                                         f"{e.path}: {e.message}"))
        unique = {key(e): e for e in errors}
        return sorted(unique.values(), key=lambda e: (e.file or "", e.line or 0, e.path))

    def check_all(self, engine: str) -> None:
        """Compile every payer as any date of service resolves it and build (and close) its rule network for
        `engine`, so that a payer the compiler or the engine refuses stops a run before its first record
        (RuleFileError at the payer's file). Resolutions change only where a file or rule starts or ends."""
        from .network import make_network
        dates = {None, "0001-01-01"}
        for specs in self.versions.values():
            for spec in specs:
                items = [spec.data] + [r for section in ("rules", "override") for r in spec.data.get(section, [])]
                for start, end in map(_span, items):
                    dates.update(d for d in (start, end and _next_day(end)) if d)
        done = set()
        for payer_id in self.ids():
            for date in sorted(dates, key=lambda d: d or ""):
                try:
                    payer = self.resolve(payer_id, date)
                except SessionError:
                    continue
                if id(payer) not in done:
                    done.add(id(payer))
                    compiled = self._compile(payer)
                    try:
                        make_network(compiled, engine).close()
                    except EvaluationError:
                        raise
                    except Exception as exc:    # noqa: BLE001 - the engine's own errors name no file
                        raise RuleFileError(f"the {engine} engine cannot build this payer's rule network: "
                                            f"{type(exc).__name__}: {exc}", self._shown(payer.file, payer.files), payer.line) from None

    def _compile(self, payer: Payer):
        """The payer compiled for the engines; a compiler error that names no rule is the payer's file's.
        Its message names the file as messages do (Spec.shown), not as the payer's results do."""
        try:
            return compile_payer(payer)
        except RuleFileError as exc:
            file, line = (exc.file, exc.line) if exc.file else (payer.file, payer.line)
            raise RuleFileError(exc.message, self._shown(file, payer.files), line, exc.path) from None

    def _shown(self, display: str, files: tuple) -> str:
        """How messages name the file of a payer's `files` ((display, sha256), ...) that `display` names."""
        digests = {digest for file, digest in files if file == display}
        for specs in self.versions.values():
            for spec in specs:
                if spec.file == display and spec.digest in digests:
                    return spec.shown
        return display

    def _version_errors(self, specs) -> list:
        """Versions of one payer whose dates overlap: an error in each of the two files."""
        errors = []
        for i, later in enumerate(specs):
            for earlier in specs[:i]:
                if overlaps(earlier.effective, later.effective):
                    for this, other in ((later, earlier), (earlier, later)):
                        errors.append(this.err(("payer",), f"payer {this.id!r} is also defined in {other.shown} for "
                                                           "dates that overlap; give the versions effective_from/"
                                                           "effective_to ranges that do not overlap"))
        return errors

    def _check_dates(self, spec: Spec) -> list:
        """Dates at which to check a file: once with every rule (None), and at the start of each parent
        version that overlaps it, so that every parent it can be combined with is checked."""
        dates = [None]
        if spec.extends:
            for parent in self.versions.get(spec.extends, []):
                if overlaps(parent.effective, spec.effective) and len(self.versions[spec.extends]) > 1:
                    start = max(filter(None, [parent.effective[0], spec.effective[0]]), default=None)
                    dates.append(start)
        return dates

    def ids(self) -> list:
        return sorted(self.versions)

    def listing(self) -> list:
        """Every payer version as design.md §3 lists it (`payers --format json`)."""
        return [{"id": p.id, "name": p.name, "method": p.method.name, "file": p.file, "extends": p.extends,
                 "effective_from": p.effective_from, "effective_to": p.effective_to} for p in self.all_payers()]

    def has(self, payer_id: str) -> bool:
        return payer_id in self.versions

    def all_payers(self) -> list:
        """Every version of every payer, resolved on its first day."""
        return [self._build(self._merge(spec, spec.effective[0], ()), spec.effective[0], check=False)
                for payer_id in self.ids() for spec in self.versions[payer_id]]

    def rule_ids(self, payer_id: str, depth: int = 0) -> set:
        """Every rule id the payer has in any of its versions, on any date: its files' own rules and what
        they inherit from any version of the payer they extend (less what they disable)."""
        ids = set()
        for spec in self.versions.get(payer_id, []):
            if spec.extends and depth < MAX_EXTENDS_DEPTH:
                ids |= self.rule_ids(spec.extends, depth + 1) - set(spec.data.get("disable", []))
            ids |= {r["id"] for section in ("rules", "override") for r in spec.data.get(section, [])}
        return ids

    def unknown_message(self, payer_id: str) -> str:
        return f"unknown payer {payer_id!r}{suggest(payer_id, self.versions)}; known: {', '.join(self.ids())}"

    def resolve(self, payer_id: str, date: str | None) -> Payer:
        """The Payer in effect for a date of service; SessionError when none is (or a date is needed)."""
        try:
            return self._resolved[payer_id, date]
        except KeyError:
            pass
        payer = self._resolve(payer_id, date)
        if len(self._resolved) < 100_000:       # bounded: one entry per payer and day of service
            self._resolved[payer_id, date] = payer
        return payer

    def _resolve(self, payer_id: str, date: str | None) -> Payer:
        specs = self.versions.get(payer_id)
        if not specs:
            raise SessionError(self.unknown_message(payer_id))
        spec = self._select(payer_id, date)
        if date is None and self._dated(spec):
            raise SessionError(f"payer {payer_id!r} has rules that depend on the date of service: give "
                               "date_of_service (or --date)")
        merged = self._merge(spec, date, ())
        if merged.errors:                   # a registry built with strict=False can hold broken files
            raise merged.errors[0]
        # Dates with the same files and the same rules in effect share one Payer, hence one compiled
        # network. The key names each file and each rule by what it is (a rule by its file and its place
        # in it), never by its line: in a one-line JSON file every rule is on line 1.
        key = (tuple((s.file, s.digest) for s in merged.specs),
               tuple((source.file, path) for source, path, rule in merged.rules if in_range(date, _span(rule))))
        payer = self._interned.get(key)
        if payer is None:
            payer = self._interned[key] = self._build(merged, date, check=False)
        return payer

    def _select(self, payer_id: str, date, child: Spec | None = None) -> Spec:
        specs = self.versions.get(payer_id, [])
        if date is None:
            if len(specs) == 1:
                return specs[0]
            spans = ", ".join(f"{s.effective[0] or '...'} to {s.effective[1] or '...'}" for s in specs)
            raise SessionError(f"payer {payer_id!r} has {len(specs)} versions ({spans}): give date_of_service "
                               "(or --date) to choose one")
        for spec in specs:
            if in_range(date, spec.effective):
                return spec
        spans = ", ".join(f"{s.effective[0] or 'the beginning'} to {s.effective[1] or 'now'}" for s in specs)
        raise SessionError(f"payer {payer_id!r} has no version in effect on {date} (its rules apply from {spans})")

    def _dated(self, spec: Spec) -> bool:
        """Whether resolution depends on the date beyond the choice of this file."""
        merged_specs, current = [], spec
        while current is not None and len(merged_specs) < MAX_EXTENDS_DEPTH:
            merged_specs.append(current)
            parents = self.versions.get(current.extends, []) if current.extends else []
            if len(parents) > 1:
                return True
            current = parents[0] if parents else None
        return any("effective_from" in r or "effective_to" in r
                   for s in merged_specs for section in ("rules", "override") for r in s.data.get(section, []))

    def _merge(self, spec: Spec, date, chain: tuple) -> _Merged:
        """`chain`: the Specs being merged that extend this one, the payer resolved first."""
        ids = tuple(s.id for s in chain) + (spec.id,)
        if spec.id in ids[:-1]:
            raise spec.err(("extends",), f"extends forms a cycle: {' -> '.join(ids)}")
        if len(chain) >= MAX_EXTENDS_DEPTH:     # the payer whose chain it is made it too long
            raise chain[0].err(("extends",), f"extends chain longer than {MAX_EXTENDS_DEPTH} payers: "
                                             f"{' -> '.join(ids[:2])} -> ... -> {ids[-1]}")
        if spec.extends:
            if spec.extends not in self.versions:
                raise spec.err(("extends",), f"extends unknown payer {spec.extends!r}"
                                             f"{suggest(spec.extends, self.versions)}")
            try:
                parent = self._select(spec.extends, date) if date or len(self.versions[spec.extends]) == 1 \
                    else self._latest_overlapping(spec)
            except SessionError as exc:
                if date is not None:    # a session dated where the parent has no version: that session's error
                    raise SessionError(f"payer {spec.id!r} extends {spec.extends!r}: {exc.message}") from None
                raise spec.err(("extends",), exc.message) from None
            merged = self._merge(parent, date, chain + (spec,))
        else:
            merged = _Merged(spec)
        return self._apply(merged, spec, date)

    def _latest_overlapping(self, spec: Spec) -> Spec:
        candidates = [p for p in self.versions[spec.extends] if overlaps(p.effective, spec.effective)]
        if not candidates:
            raise SessionError(f"no version of {spec.extends!r} is in effect while {spec.id!r} is")
        return candidates[-1]

    def _apply(self, base: _Merged, spec: Spec, date) -> _Merged:
        data = spec.data
        out = _Merged(spec, dict(base.method), dict(base.method_from), dict(base.codes), dict(base.codes_from),
                      dict(base.families), list(base.rules), base.specs + [spec], list(base.errors),
                      base.unsure | {r.get("id") for section in ("rules", "override")
                                     for i, r in enumerate(data.get(section, [])) if (section, i) in spec.broken
                                     and isinstance(r, dict) and type(r.get("id")) is str},
                      dict(base.tables), base.ptp)
        if ("tables",) not in spec.broken:
            out.tables.update({kind: spec for kind in data.get("tables") or {}})
        if "ptp" in data and ("ptp",) not in spec.broken:
            out.ptp = spec
        out.counters = dict(base.counters)
        out.counters.update({c["id"]: (spec, i) for i, c in spec.items("counters")})
        out.amounts = spec if "amounts" in data and ("amounts",) not in spec.broken else base.amounts
        if "method" in data:
            out.method.update(data["method"])
            out.method_from.update({key: spec for key in data["method"]})
        out.claim = dict(base.claim)
        if "assistant_modifiers" in data:
            out.claim[("assistant_modifiers", "")] = (None, f"{spec.file}:{spec.line('assistant_modifiers')}")
        for key, value in (data.get("assistant_modifiers") or {}).items():
            out.claim[("assistant_modifiers", key)] = (value, f"{spec.file}:{spec.line('assistant_modifiers', key)}")
        if "modifier_order" in data:
            out.claim[("modifier_order", "")] = (data["modifier_order"], f"{spec.file}:{spec.line('modifier_order')}")
        for name, items in data.get("codes", {}).items():
            # a broken list keeps its good codes: the rules naming the list are not wrong
            out.codes[name] = frozenset(_code(c) for c in items if type(c) in (str, int)) \
                if isinstance(items, list) else frozenset()
            out.codes_from[name] = spec
        for i, fam in spec.items("families"):
            out.families[fam["id"]] = (spec, ("families", i), fam)
        errors = out.errors
        inherited = {r["id"] for _, _, r in base.rules}
        for i, rule_id in spec.items("disable"):
            if rule_id not in inherited | base.unsure:
                errors.append(spec.err(("disable", i), self._missing(rule_id, inherited, spec, "disable")))
            out.rules = [entry for entry in out.rules if entry[2]["id"] != rule_id]
        overrides: dict = {}
        disabled = {rule_id for _, rule_id in spec.items("disable")}
        for i, rule in spec.items("override"):
            if rule["id"] in disabled:
                errors.append(spec.err(("override", i, "id"), f"rule {rule['id']!r} is both disabled and overridden "
                                                              "here: keep one of the two"))
            elif rule["id"] not in inherited:
                if rule["id"] not in base.unsure:     # a parent's rule with schema errors: said there
                    errors.append(spec.err(("override", i, "id"), self._missing(rule["id"], inherited, spec,
                                                                                "override")))
            else:
                overrides.setdefault(rule["id"], []).append((spec, ("override", i), rule))
        for rule_id, replacements in overrides.items():
            # the replacement(s) take the place of the parent's first rule of that id
            at = next(k for k, entry in enumerate(out.rules) if entry[2]["id"] == rule_id)
            kept = [e for e in out.rules if e[2]["id"] != rule_id]
            out.rules = kept[:at] + replacements + kept[at:]
        for i, rule in spec.items("rules"):
            if rule["id"] in inherited:
                errors.append(spec.err(("rules", i, "id"), f"rule id {rule['id']!r} is already a rule of "
                                       f"{spec.extends}: list it under override: to replace it, or choose a new id"))
            out.rules.append((spec, ("rules", i), rule))
        return out

    @staticmethod
    def _missing(rule_id, inherited, spec, section) -> str:
        where = f"the rules of {spec.extends}" if spec.extends else "a parent (this payer has no extends:)"
        return f"{section}: no rule {rule_id!r} in {where}{suggest(rule_id, inherited)}"

    def _build(self, merged: _Merged, date, check: bool) -> Payer:
        errors = _merged_errors(merged) if check else []
        if errors:
            raise _Errors(errors)
        spec, m = merged.spec, {**METHOD_DEFAULTS, **merged.method}
        method = Method(name=m["name"], unit_minutes=m["unit_minutes"], first_unit_minutes=m["first_unit_minutes"],
                        tie_break=tuple(m["tie_break"]))
        families = tuple(Family(fid, _code(f["primary"]), _code(f["addon"]) if "addon" in f else None)
                         for fid, (_, _, f) in merged.families.items())
        in_effect = [e for e in merged.rules if in_range(date, _span(e[2]))]
        rules = []
        for index, (source, path, r) in enumerate(in_effect):
            then = tuple(Action(*next(iter(a.items()))) for a in r["then"])
            rules.append(Rule(id=r["id"], description=r["description"], source=r["source"],
                              when=_normalise_when(r["when"]), then=then, file=source.file,
                              line=source.line(*path, "id"), index=index))
        edits = _edit_tables(merged)
        digest = hashlib.sha256("".join(s.digest for s in merged.specs).encode()
                                + "".join(d for _, _, d in edits.digests).encode()).hexdigest()
        order, order_source = merged.claim.get(("modifier_order", ""), ((), ""))
        return Payer(edits=edits,
                     id=spec.id, name=spec.data["name"], file=spec.file, method=method, codes=dict(merged.codes),
                     families=families, rules=tuple(rules), effective_from=spec.effective[0],
                     effective_to=spec.effective[1], description=spec.data.get("description", ""),
                     example=bool(spec.data.get("example", False)), extends=spec.extends, digest=digest,
                     line=spec.line("payer"), files=tuple((s.file, s.digest) for s in merged.specs),
                     assistants=_assistants(merged.claim), modifier_order=tuple(order),
                     modifier_order_source=order_source,
                     counters=tuple(C.build(s, i, s.data["counters"][i], merged.codes)
                                    for s, i in merged.counters.values()),
                     amounts=_amounts(merged.amounts))


def _amounts(spec) -> C.Amounts:
    if spec is None:
        return C.Amounts()
    data = spec.data["amounts"]
    return C.Amounts(data.get("assistant_percent"), tuple(data.get("assistant_modifiers", ("CQ", "CO"))),
                     data.get("effective_from"), f"{spec.file}:{spec.line('amounts')}",
                     data.get("assistant_accrual", "reduced"))




def _assistants(claim: dict) -> Assistants:
    """The payer's assistant_modifiers settings (docs/domain.md §16), each key inherited from the parent
    unless the child sets it."""
    given = {key: value for (section, key), value in claim.items() if section == "assistant_modifiers"}
    if not given:
        return Assistants()
    value = {key: v for key, (v, _) in given.items()}
    return Assistants(enabled=bool(value.get("enabled", False)),
                      modifiers=tuple(sorted((value.get("by_provider") or {}).items())),
                      de_minimis_percent=value.get("de_minimis_percent", 10),
                      both_ge_8_minutes=value.get("both_ge_8_minutes", "therapist"),
                      two_units_9_to_14=value.get("two_units_9_to_14", "one_each"),
                      evaluations=value.get("evaluation_codes", ""), payment_note=value.get("payment_note", ""),
                      sources=tuple(sorted((key, where) for key, (_, where) in given.items())))
def named_tables(spec: Spec, kind: str | None = None) -> list:
    """(kind, path as the user gave it, table) of each table the file names (of one kind), each read once
    per process; TableError for a table that cannot be read."""
    folder = (spec.path or Path(spec.shown)).parent
    base, shown_base = posixpath.dirname(spec.file), posixpath.dirname(spec.shown)
    out = []
    for k, names in (spec.data.get("tables") or {}).items():
        for i, name in enumerate(names if kind in (None, k) else ()):
            if _escapes(name):
                continue
            path = folder / name
            if not path.is_file():      # said at the line naming it
                raise spec.err(("tables", k, i), f"{name}: no such table file ({posixpath.join(shown_base, name)})")
            out.append((k, posixpath.join(shown_base, name),
                        load_table(k, path, posixpath.join(base, name), posixpath.join(shown_base, name))))
    return out


def _edit_tables(merged: _Merged) -> EditTables:
    """The payer's PTP and MUE tables, each read once per process (TableError: a broken table), and its
    PTP settings."""
    if not merged.tables:
        return NO_EDITS
    loaded, sources = {}, {}     # (a table a parent names is replaced only by a child naming that kind)
    for kind, spec in merged.tables.items():
        loaded[kind] = tuple(table for _, _, table in named_tables(spec, kind))
        sources[kind] = f"{spec.file}:{spec.line('tables', kind)}"
    not_honoured = {}
    if merged.ptp is not None:
        spec = merged.ptp
        for i, pair in enumerate(spec.data["ptp"].get("bypass_not_honoured", [])):
            not_honoured[frozenset(map(_code, pair))] = f"{spec.file}:{spec.line('ptp', 'bypass_not_honoured', i)}"
    sources.setdefault("ptp", sources.get("mue", ""))
    sources.setdefault("mue", sources["ptp"])
    # every table a file of the payer names, the replaced ones too: a replay rebuilds each of its files
    named = tuple(dict.fromkeys((t.path, t.digest) for spec in merged.specs for _, _, t in named_tables(spec)))
    return EditTables(loaded.get("ptp", ()), loaded.get("mue", ()), sources, not_honoured, named,
                      loaded.get("fees", ()))


def _next_day(text: str) -> str | None:
    try:
        return (datetime.date.fromisoformat(text) + datetime.timedelta(days=1)).isoformat()
    except (ValueError, OverflowError):
        return None


class _Errors(Exception):
    def __init__(self, errors):
        super().__init__(errors[0].message)
        self.errors = errors


def _merged_errors(merged: _Merged) -> list:
    """Checks of a payer with everything it inherits: code lists, families and method named."""
    errors = []
    codes, families = merged.codes, merged.families
    known = set().union(*codes.values()) if codes else set()
    method = {**METHOD_DEFAULTS, **merged.method}
    if "name" not in method:
        spec = merged.spec
        errors.append(spec.err(("method",) if "method" in spec.data else ("payer",),
                               "method: name is missing (cms_8_minute or midpoint_per_code)"))
    elif method["first_unit_minutes"] > method["unit_minutes"]:
        # blame the file that set the later of the two keys (the child, when it set either)
        setters = [(merged.specs.index(merged.method_from[k]), rank, k)
                   for rank, k in enumerate(("unit_minutes", "first_unit_minutes")) if k in merged.method_from]
        key = max(setters)[2]
        errors.append(merged.method_from[key].err(("method", key), "first_unit_minutes must not be larger than "
                                                                     "unit_minutes"))
    for fid, (spec, path, fam) in families.items():
        for role in ("primary", "addon"):
            code = _code(fam[role]) if role in fam else None
            if code is None or code in known:
                continue
            # a list written after the family (by a child) that dropped the code is the one to fix
            later = [(merged.specs.index(src), name) for name, src in merged.codes_from.items()
                     if merged.specs.index(src) > merged.specs.index(spec)]
            if later:
                _, name = max(later)
                errors.append(merged.codes_from[name].err(("codes", name), f"code {code}, the {role} of family "
                              f"{fid} ({spec.shown}:{spec.line(*path, role)}), is in none of the code lists now; "
                              "keep it in this list or in another"))
            else:
                errors.append(spec.err(path + (role,), f"code {code} is in none of the code lists"
                                                       f"{suggest(code, known)}; add it to one"))
    setter = next((spec for spec in reversed(merged.specs)
                   if "evaluation_codes" in (spec.data.get("assistant_modifiers") or {})), None)
    if setter is not None:
        ref = setter.data["assistant_modifiers"]["evaluation_codes"]
        if isinstance(ref, str) and ref not in codes:
            errors.append(setter.err(("assistant_modifiers", "evaluation_codes"), f"no code list named {ref!r}"
                                     f"{suggest(ref, codes) or '; define it under codes:'}"))
    for counter_id, (spec, i) in merged.counters.items():
        ref = spec.data["counters"][i].get("codes")
        if isinstance(ref, str) and ref not in codes:
            errors.append(spec.err(("counters", i, "codes"), f"no code list named {ref!r}"
                                   f"{suggest(ref, codes) or '; define it under codes:'}"))
    for spec, path, rule in merged.rules:
        line_cond = rule["when"].get("line") or {}
        for key in ("code_in", "code_not_in"):
            ref = line_cond.get(key)
            if isinstance(ref, str) and ref not in codes:
                errors.append(spec.err(path + ("when", "line", key), f"no code list named {ref!r}"
                                       f"{suggest(ref, codes) or '; define it under codes:'}"))
        for value in _test_values(line_cond.get("family")):
            if value not in families:
                errors.append(spec.err(path + ("when", "line", "family"),
                                       f"no family named {value!r}{suggest(value, families)}"))
    return errors


def _test_values(test):
    if isinstance(test, str):
        return [test]
    if isinstance(test, dict):
        return [v for k, v in test.items() if k == "ne"] + list(test.get("in", []))
    return []


def _normalise_when(when: dict) -> dict:
    """Codes written as YAML numbers become strings, so every comparison is string to string."""
    out = {}
    for kind, conds in when.items():
        conds = dict(conds)
        for key in ("code", "code_in", "code_not_in"):
            if key in conds:
                value = conds[key]
                if isinstance(value, list):
                    conds[key] = [_code(c) for c in value]
                elif isinstance(value, int):
                    conds[key] = _code(value)
                elif isinstance(value, dict) and "ne" in value:
                    conds[key] = {**value, "ne": _code(value["ne"])}
        out[kind] = conds
    return out


def load_payer(pfile: PayerFile) -> Payer:
    """One stand-alone payer file → Payer (RuleFileError naming each of its errors). For tests and tools."""
    spec, errors = read_spec(pfile)
    if errors:
        raise RuleFileError.gather(errors)
    registry = Registry.__new__(Registry)
    registry.files, registry.file_errors, registry._resolved, registry._interned = [pfile], {}, {}, {}
    registry.versions = {spec.id: [spec]}
    errors = registry.errors()
    if errors:
        raise RuleFileError.gather(errors)
    return registry._build(registry._merge(spec, None, ()), None, check=False)
