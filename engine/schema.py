"""JSON Schema validation with file:line errors (the most useful message first)."""
from __future__ import annotations

import json
import re
from functools import lru_cache
from itertools import islice

from .errors import closest, date_problem, suggest
from .paths import SCHEMAS_DIR
from .yamlload import Located, format_path


@lru_cache(maxsize=None)
def validator(name: str):
    """The Draft 2020-12 validator of schemas/NAME.schema.json. jsonschema is imported here, on first
    use, because most runs never need it (valid sessions take the fast path; validated rule files come
    from the cache). The schemas themselves are checked against the meta-schema by the test suite."""
    from jsonschema import Draft202012Validator
    with open(SCHEMAS_DIR / f"{name}.schema.json", encoding="utf-8") as fh:
        return Draft202012Validator(json.load(fh))


MAX_GATHERED = 1000     # schema errors of one document explained; those beyond are only counted


def schema_errors(name: str, located: Located, error_class, data=None, base_path=(), echo_values=True,
                  counted: list | None = None) -> list:
    """Every schema error in `data` (default: the whole located document) as `error_class` instances, in
    order of position in the document (line, then place among its siblings), one for each place.
    `echo_values=False` keeps the offending values out of messages (sessions: no patient data).
    `base_path` is where `data` sits inside the located document; paths in messages are relative to
    `data`. At most MAX_GATHERED are explained; with `counted` (a list) the number of the others is
    appended to it."""
    data = located.data if data is None else data
    out, more, seen, places = [], 0, set(), {}
    for error in validator(name).iter_errors(data):         # lazy: a hostile document stops costing here
        room = MAX_GATHERED - len(out)
        if room <= 0:
            more += _count(error)
            continue
        made = 0
        for path, message in islice(_explain(error, echo_values), room):
            made += 1
            # one message per place, the first (a code of 5.5 is neither of the code's types nor >= 10000);
            # each missing key is a place of its own
            place = (tuple(path), message if message.startswith("missing required key") else "")
            if place in seen:
                continue
            seen.add(place)
            full = tuple(base_path) + tuple(path)
            out.append(error_class(message, located.file, located.line_of(full), format_path(path)))
            out[-1].position = (located.line_of(full) or 0, position(data, path, places))
            out[-1].at = tuple(path)
        if made == room:        # cut short: the rest of this error's messages are counted
            more += max(0, _count(error) - made)
    out.sort(key=lambda e: e.position)
    if counted is not None:
        counted.append(more)
    return out


def _count(error) -> int:
    """How many messages _explain would make of an error (without making them)."""
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        return sum(k not in error.schema.get("properties", {}) for k in error.instance)
    return 1


def position(data, path, places: dict | None = None) -> tuple:
    """Where `path` is in `data`, as the place of each step among its siblings (a key's place in its
    mapping, an item's index): the order of the text, also where every node is on one line (JSONL).
    `places` keeps the places of the keys of each mapping met, for the next calls."""
    out = []
    for part in path:
        if isinstance(data, dict):
            keys = places.get(id(data)) if places is not None else None
            if keys is None:
                keys = {key: i for i, key in enumerate(data)}
                if places is not None:
                    places[id(data)] = keys
            out.append(keys.get(part, len(keys)))
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int):
            out.append(part)
            data = data[part] if 0 <= part < len(data) else None
        else:
            break
    return tuple(out)


def _explain(error, echo=True):
    """(path, message) pairs for one jsonschema error, in words a rule author reads easily."""
    path = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        for key in sorted(k for k in error.instance if k not in allowed):
            hint = suggest(key, allowed) or f" (allowed: {', '.join(allowed)})"
            yield path + [key], f"unknown key {key!r}{hint}"
        return
    if error.validator in ("oneOf", "anyOf") and error.context:
        yield from _explain_alternatives(error, path, echo)
        return
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        allowed = error.schema.get("properties", {})
        if isinstance(error.instance, dict) and any(
                k not in allowed and closest(k, allowed) == missing for k in error.instance):
            return      # a misspelt key stands for it: its "unknown key ... did you mean" says it all
        yield path, f"missing required key {missing!r}"
        return
    if error.validator == "maxProperties" and error.validator_value == 1:
        yield path, f"one action per list item, found {len(error.instance)}: {', '.join(sorted(error.instance))}"
        return
    yield path, _message(error, echo)


def _explain_alternatives(error, path, echo):
    """A oneOf/anyOf error: the error of the alternative whose type the value has (`{gte: "8"}` is
    explained by the mapping alternative, at `gte`, not by "a mapping is not of type integer"). When no
    alternative takes a value of its type, that is said, with every type they take."""
    from jsonschema.exceptions import best_match
    branches: dict = {}
    for e in error.context:
        branches.setdefault(e.relative_schema_path[0], []).append(e)
    wrong_type = {i for i, errs in branches.items()
                  if any(e.validator == "type" and not e.relative_path for e in errs)}
    fitting = [e for i, errs in branches.items() if i not in wrong_type for e in errs]
    if not fitting:
        expected = []
        for e in error.context:
            if e.validator == "type" and not e.relative_path:
                value = e.validator_value
                expected += value if isinstance(value, list) else [value]
        yield path, _type_message(error.instance, list(dict.fromkeys(expected)), echo)
        return
    deepest = best_match(fitting)
    for inner_path, message in _explain(deepest, echo):
        yield (inner_path if len(inner_path) >= len(path) else path), message


CODE_PATTERN = "^([0-9]{4}[0-9A-Z]|[A-Z][0-9]{4})$"
DATE_PATTERN = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_TYPE_NAMES = {str: "a string", int: "a number", float: "a number", bool: "true/false", dict: "a mapping",
               list: "a list", type(None): "null"}


def _shown(value, echo: bool) -> str:
    shown = repr(value) if echo and not isinstance(value, (dict, list)) else _TYPE_NAMES.get(type(value), "value")
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _type_message(value, expected: list, echo: bool) -> str:
    """A value of the wrong type; a number written in quotes is named as such."""
    if isinstance(value, str) and ("integer" in expected or "number" in expected) and _NUMBER.fullmatch(value.strip()):
        if not echo:
            return "text in quotes; write the number without quotes"
        return f'"{value}" is text in quotes; write the number {value.strip()} without quotes'
    return f"{_shown(value, echo)} is not of type {' or '.join(expected)}"


_NUMBER = re.compile(r"-?[0-9]{1,20}(\.[0-9]{1,20})?")


def _message(error, echo=True) -> str:
    value = error.instance
    shown = _shown(value, echo)
    v = error.validator
    if error.schema.get("pattern") == CODE_PATTERN and v in ("pattern", "minimum", "maximum"):
        return f"{shown if echo else 'value'} is not a CPT/HCPCS code (five characters, like 97110 or G0283)"
    if error.schema.get("pattern") == DATE_PATTERN and v in ("pattern", "type"):
        return date_problem(value, echo) or "not a date like 2026-03-02"
    if v == "type":
        expected = error.validator_value
        return _type_message(value, expected if isinstance(expected, list) else [expected], echo)
    if v == "enum":
        choices = ", ".join(map(str, error.validator_value))
        hint = suggest(str(value), error.validator_value) if echo else ""
        return f"{shown} is not one of: {choices}{hint}"
    if v == "const":
        return f"must be {json.dumps(error.validator_value)}"
    if v == "pattern":
        return f"{shown if echo else 'value'} does not have the expected form ({error.validator_value})"
    if v in ("minimum", "maximum"):
        word = "at least" if v == "minimum" else "at most"
        return f"{shown + ' ' if echo else ''}must be {word} {error.validator_value}"
    if v == "minItems":
        return "must not be empty" if error.validator_value == 1 else f"needs at least {error.validator_value} items"
    if v == "maxItems":
        return f"has {len(value)} items, at most {error.validator_value} are allowed"
    if v == "minProperties":
        return "must not be empty"
    if v == "maxProperties":
        return f"has more than {error.validator_value} keys"
    if v == "minLength":
        return "must not be empty" if error.validator_value == 1 else f"is shorter than {error.validator_value} characters"
    if v == "maxLength":
        return f"is longer than {error.validator_value} characters"
    if not echo:        # never jsonschema's own message: it quotes the value
        return f"does not satisfy the schema's {v} rule"
    return error.message if len(error.message) <= 200 else error.message[:197] + "..."
