"""A cache of rule files already parsed and schema-validated, so that a cold `payrules` run does not
parse and validate the same YAML again (issue 5: cold start).

An entry is the file's data and line numbers as JSON, named by the sha256 of the file's bytes, the
payer schema and the engine version: a changed file, schema or engine never meets an old entry.
The directory is $PAYRULES_CACHE, else $XDG_CACHE_HOME/payer-rules, else ~/.cache/payer-rules;
PAYRULES_CACHE=off turns the cache off. Any problem with the cache (unwritable, corrupt) only means
the file is parsed and validated again.
"""
from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

from . import __version__
from .yamlload import Located


@lru_cache(maxsize=None)
def _directory():
    setting = os.environ.get("PAYRULES_CACHE", "")
    if setting.lower() == "off":
        return None
    if setting:
        return Path(setting)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "payer-rules"


@lru_cache(maxsize=None)
def _salt() -> str:
    from .paths import SCHEMAS_DIR
    schema = (SCHEMAS_DIR / "payer.schema.json").read_bytes()
    return hashlib.sha256(schema + __version__.encode()).hexdigest()[:16]


def _entry(digest: str):
    directory = _directory()
    return None if directory is None else directory / f"rules-{_salt()}-{digest}.json"


def load(digest: str, display: str):
    """The validated Located document of a rule file with these bytes, or None."""
    path = _entry(digest)
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            entry = json.load(fh)
        body = json.dumps([entry["data"], entry["lines"]], sort_keys=True)
        if entry.get("check") != hashlib.sha256(body.encode()).hexdigest() or not isinstance(entry["data"], dict):
            return None                 # corrupt or not written by this code: parse the file again
        lines = {tuple(p): line for p, line in entry["lines"]}
        return Located(entry["data"], lines, display)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def store(digest: str, doc: Located) -> None:
    path = _entry(digest)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        lines = [[list(p), line] for p, line in doc.lines.items()]
        check = hashlib.sha256(json.dumps([doc.data, lines], sort_keys=True).encode()).hexdigest()
        with open(temporary, "w", encoding="utf-8") as fh:
            json.dump({"data": doc.data, "lines": lines, "check": check}, fh)
        os.replace(temporary, path)
    except OSError:
        pass
