"""Payer rule files → validated Payer models, with file:line for every error.

Stages: read (bounded size) → YAML with line numbers → JSON Schema → semantic checks (duplicate rule ids,
unknown code lists, families, message placeholders, thresholds) → Payer.
"""
from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass
from pathlib import Path

from .errors import RuleFileError, UsageError, suggest
from .model import Action, Family, Method, Payer, Rule
from .paths import RULES_DIR
from .schema import schema_errors
from .yamlload import Located, format_path, load_text

MAX_RULE_FILE_BYTES = 2 * 1024 * 1024

# What a message template may name; each is a field of the line or session fact it matched.
PLACEHOLDERS = {"code", "minutes", "group_size", "provider", "suggestion", "discipline", "family", "primary",
                "date_of_service"}
LINE_ACTIONS = {"timed_units", "units", "block_units", "modifier", "hold"}


@dataclass(frozen=True)
class PayerFile:
    """A rule file as found on disk: where it is and how it is named in messages."""
    path: Path
    display: str            # relative to the rules tree's parent, e.g. rules/medicare.yaml


def rule_files(directory: Path) -> list:
    """Every *.yaml / *.yml file below a rules tree, in a stable order."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UsageError(f"rules directory not found: {directory}")
    base = directory.resolve().parent
    found = []
    for path in sorted(directory.rglob("*")):
        if path.suffix in (".yaml", ".yml") and path.is_file() and not path.name.endswith(".tests.yaml"):
            found.append(PayerFile(path, _display(path, base)))
    return found


def _display(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()


def load_payer(pfile: PayerFile) -> Payer:
    """Load one payer file; raises RuleFileError (the first error by line) when anything is wrong."""
    errors = check_payer(pfile)
    if isinstance(errors, Payer):
        return errors
    raise errors[0]


def check_payer(pfile: PayerFile):
    """The Payer, or the list of every error found in the file (sorted by line)."""
    try:
        raw = pfile.path.read_bytes()
    except OSError as exc:
        return [RuleFileError(f"cannot read: {exc.strerror}", pfile.display)]
    if len(raw) > MAX_RULE_FILE_BYTES:
        return [RuleFileError(f"file too large ({len(raw)} bytes; at most {MAX_RULE_FILE_BYTES})", pfile.display)]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        return [RuleFileError("not UTF-8 text", pfile.display, line)]
    try:
        doc = load_text(text, pfile.display, RuleFileError)
    except RuleFileError as exc:
        return [exc]
    if not isinstance(doc.data, dict):
        return [RuleFileError("a payer file must be a mapping with payer, name, method and rules",
                              pfile.display, doc.line_of(()))]
    errors = schema_errors("payer", doc, RuleFileError)
    if errors:
        return errors
    errors = _semantic_errors(doc)
    if errors:
        return sorted(errors, key=lambda e: (e.line or 0, e.path))
    return _build(doc, hashlib.sha256(raw).hexdigest())


def _err(doc: Located, path, message) -> RuleFileError:
    return RuleFileError(message, doc.file, doc.line_of(path), format_path(path))


def _code(value) -> str:
    return str(value)


def _semantic_errors(doc: Located) -> list:
    data = doc.data
    errors = []
    codes = {name: {_code(c) for c in items} for name, items in data.get("codes", {}).items()}
    known = set().union(*codes.values()) if codes else set()
    method = data["method"]
    if method.get("first_unit_minutes", 8) > method.get("unit_minutes", 15):
        errors.append(_err(doc, ("method", "first_unit_minutes"),
                           "first_unit_minutes must not be larger than unit_minutes"))
    for key in ("effective_from", "effective_to"):
        if key in data and not _valid_date(data[key]):
            errors.append(_err(doc, (key,), f"{data[key]!r} is not a calendar date"))
    if data.get("effective_from") and data.get("effective_to") and data["effective_from"] > data["effective_to"]:
        errors.append(_err(doc, ("effective_to",), "effective_to is before effective_from"))

    family_ids = set()
    for i, fam in enumerate(data.get("families", [])):
        if fam["id"] in family_ids:
            errors.append(_err(doc, ("families", i, "id"), f"duplicate family id {fam['id']!r}"))
        family_ids.add(fam["id"])
        for role in ("primary", "addon"):
            if role in fam and _code(fam[role]) not in known:
                errors.append(_err(doc, ("families", i, role),
                                   f"code {_code(fam[role])} is in none of the code lists{suggest(_code(fam[role]), known)}"))

    seen = {}
    for i, rule in enumerate(data["rules"]):
        path = ("rules", i)
        if rule["id"] in seen:
            errors.append(_err(doc, path + ("id",), f"duplicate rule id {rule['id']!r} (first at line {seen[rule['id']]})"))
        else:
            seen[rule["id"]] = doc.line_of(path + ("id",))
        line_cond = rule["when"].get("line")
        for key in ("code_in", "code_not_in"):
            ref = (line_cond or {}).get(key)
            if isinstance(ref, str) and ref not in codes:
                errors.append(_err(doc, path + ("when", "line", key),
                                   f"no code list named {ref!r}{suggest(ref, codes) or ' under codes:'}"))
        fam_test = (line_cond or {}).get("family")
        for value in _test_values(fam_test):
            if value not in family_ids:
                errors.append(_err(doc, path + ("when", "line", "family"),
                                   f"no family named {value!r}{suggest(value, family_ids)}"))
        unit_actions = [a for a in rule["then"] if next(iter(a)) in ("timed_units", "units", "block_units")]
        if len(unit_actions) > 1:
            errors.append(_err(doc, path + ("then",), "a rule may decide units only once"))
        for j, action in enumerate(rule["then"]):
            (kind, value), = action.items()
            apath = path + ("then", j, kind)
            if kind in LINE_ACTIONS and line_cond is None:
                errors.append(_err(doc, apath, f"action {kind!r} needs a line: condition under when:"))
            if kind in ("info", "warn", "error", "hold"):
                bad = _bad_placeholders(value)
                if bad:
                    errors.append(_err(doc, apath, f"unknown placeholder {{{bad}}}{suggest(bad, PLACEHOLDERS)}; "
                                                   f"allowed: {', '.join(sorted(PLACEHOLDERS))}"))
            if kind == "block_units":
                for first, whole in (("first_min_minutes", "first_minutes"), ("next_min_minutes", "next_minutes")):
                    if value[first] > value[whole]:
                        errors.append(_err(doc, apath + (first,), f"{first} must not be larger than {whole}"))
    return errors


def _test_values(test):
    if isinstance(test, str):
        return [test]
    if isinstance(test, dict):
        return [v for k, v in test.items() if k == "ne"] + list(test.get("in", []))
    return []


def _bad_placeholders(template: str):
    try:
        for _, name, spec, conv in string.Formatter().parse(template):
            if name is not None and (name not in PLACEHOLDERS or spec or conv):
                return name or "(empty)"
    except ValueError:
        return "(unbalanced braces: write {{ and }} for literal braces)"
    return None


def _valid_date(text: str) -> bool:
    import datetime
    try:
        datetime.date.fromisoformat(text)
        return True
    except ValueError:
        return False


def _build(doc: Located, digest: str) -> Payer:
    data = doc.data
    m = data["method"]
    method = Method(name=m["name"], unit_minutes=m.get("unit_minutes", 15),
                    first_unit_minutes=m.get("first_unit_minutes", 8),
                    tie_break=tuple(m.get("tie_break", ("minutes", "order", "code"))))
    codes = {name: frozenset(_code(c) for c in items) for name, items in data.get("codes", {}).items()}
    families = tuple(Family(f["id"], _code(f["primary"]), _code(f["addon"]) if "addon" in f else None)
                     for f in data.get("families", []))
    rules = []
    for i, r in enumerate(data["rules"]):
        then = tuple(Action(*next(iter(a.items()))) for a in r["then"])
        rules.append(Rule(id=r["id"], description=r["description"], source=r["source"], when=_normalise_when(r["when"]),
                          then=then, file=doc.file, line=doc.line_of(("rules", i, "id")), index=i))
    return Payer(id=data["payer"], name=data["name"], file=doc.file, method=method, codes=codes,
                 families=families, rules=tuple(rules), effective_from=data.get("effective_from"),
                 effective_to=data.get("effective_to"), description=data.get("description", ""),
                 example=bool(data.get("example", False)), digest=digest, line=doc.line_of(("payer",)))


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


class Registry:
    """Every payer found in the bundled rules tree plus extra trees, loaded once."""

    def __init__(self, extra_dirs=(), include_bundled: bool = True):
        dirs = ([RULES_DIR] if include_bundled else []) + [Path(d) for d in extra_dirs]
        self.payers: dict = {}
        for directory in dirs:
            for pfile in rule_files(directory):
                payer = load_payer(pfile)
                if payer.id in self.payers:
                    first = self.payers[payer.id]
                    raise RuleFileError(f"payer id {payer.id!r} is already defined in {first.file}", pfile.display,
                                        payer.line, "payer")
                self.payers[payer.id] = payer

    def get(self, payer_id: str) -> Payer | None:
        return self.payers.get(payer_id)

    def unknown_message(self, payer_id: str) -> str:
        return f"unknown payer {payer_id!r}{suggest(payer_id, self.payers)}; known: {', '.join(sorted(self.payers))}"
