"""JSON Schema validation with file:line errors (the most useful message first)."""
from __future__ import annotations

import json
from functools import lru_cache

from .errors import suggest
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


def schema_errors(name: str, located: Located, error_class, data=None, base_path=(), echo_values=True) -> list:
    """Every schema error in `data` (default: the whole located document) as `error_class` instances,
    unknown keys first (a typo explains a "missing" key better than the missing key does), then by line.
    `echo_values=False` keeps the offending values out of messages (sessions: no patient data). `base_path` is where `data` sits inside the located document; paths in messages are relative to `data`."""
    data = located.data if data is None else data
    out = []
    for error in validator(name).iter_errors(data):
        for path, message in _explain(error, echo_values):
            full = tuple(base_path) + tuple(path)
            out.append(error_class(message, located.file, located.line_of(full), format_path(path)))
    out.sort(key=lambda e: (not e.message.startswith("unknown key"), e.line or 0, e.path))
    return out


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
        from jsonschema.exceptions import best_match
        # the branch whose type fits says more than "is not of type object"
        fitting = [e for e in error.context if e.validator != "type"] or error.context
        deepest = best_match(fitting)
        for inner_path, message in _explain(deepest, echo):
            yield (inner_path if len(inner_path) >= len(path) else path), message
        return
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        yield path, f"missing required key {missing!r}"
        return
    if error.validator == "maxProperties" and error.validator_value == 1:
        yield path, f"one action per list item, found {len(error.instance)}: {', '.join(sorted(error.instance))}"
        return
    yield path, _message(error, echo)


CODE_PATTERN = "^([0-9]{4}[0-9A-Z]|[A-Z][0-9]{4})$"
_TYPE_NAMES = {str: "a string", int: "a number", float: "a number", bool: "true/false", dict: "a mapping",
               list: "a list", type(None): "null"}


def _message(error, echo=True) -> str:
    value = error.instance
    shown = repr(value) if echo and not isinstance(value, (dict, list)) else _TYPE_NAMES.get(type(value), "value")
    if len(shown) > 60:
        shown = shown[:57] + "..."
    v = error.validator
    if error.schema.get("pattern") == CODE_PATTERN and v in ("pattern", "minimum", "maximum"):
        return f"{shown if echo else 'value'} is not a CPT/HCPCS code (five characters, like 97110 or G0283)"
    if v == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return f"{shown} is not of type {expected}"
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
