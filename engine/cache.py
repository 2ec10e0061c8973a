"""A cache of rule files already parsed and schema-validated, so that a cold `payrules` run does not
parse and validate the same YAML again (issue 5: cold start).

An entry is the file's data and line numbers as JSON, named by the sha256 of the file's bytes, the
payer schema, the engine version and the source of the modules that parse and validate rule files: a
changed file, schema or validating code never meets an old entry.
The directory is $PAYRULES_CACHE, else $XDG_CACHE_HOME/payer-rules, else ~/.cache/payer-rules;
PAYRULES_CACHE=off turns the cache off. An entry decides how sessions bill, so a directory that another
user owns or others may write is not used (with one warning on stderr), nor is such an entry. Any other
problem with the cache (unwritable, corrupt) only means the file is parsed and validated again.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from functools import lru_cache
from pathlib import Path

from . import __version__
from .yamlload import Located

# the modules whose code decides what an entry holds (the data and the line of every node)
VALIDATING_MODULES = ("yamlload.py", "loader.py", "schema.py", "cache.py", "errors.py")


@lru_cache(maxsize=None)
def _directory():
    setting = os.environ.get("PAYRULES_CACHE", "")
    if setting.lower() == "off":
        return None
    if setting:
        path = Path(setting)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        path = Path(base) / "payer-rules"
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.stat()
    except OSError:
        return None
    problem = _untrusted(info)
    if problem:
        print(f"payrules: warning: not using cache {path}: it is {problem}", file=sys.stderr)
        return None
    return path if stat.S_ISDIR(info.st_mode) else None


def _untrusted(info) -> str | None:
    """Why a cache file or directory cannot be trusted: someone else could have written it."""
    if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
        return "owned by another user"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "writable by others"
    return None


@lru_cache(maxsize=None)
def _salt() -> str:
    from .paths import SCHEMAS_DIR
    digest = hashlib.sha256((SCHEMAS_DIR / "payer.schema.json").read_bytes() + __version__.encode())
    here = Path(__file__).resolve().parent
    for name in VALIDATING_MODULES:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()[:16]


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
            if _untrusted(os.fstat(fh.fileno())):
                return None
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
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        lines = [[list(p), line] for p, line in doc.lines.items()]
        check = hashlib.sha256(json.dumps([doc.data, lines], sort_keys=True).encode()).hexdigest()
        with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as fh:
            json.dump({"data": doc.data, "lines": lines, "check": check}, fh)
        os.replace(temporary, path)
    except OSError:
        pass
