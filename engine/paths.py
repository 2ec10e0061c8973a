"""Where the bundled rules and schemas live: inside the installed package, or beside it in a checkout."""
from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _data_dir(name: str) -> Path:
    installed = _PACKAGE / name
    return installed if installed.is_dir() else _PACKAGE.parent / name


RULES_DIR = _data_dir("rules")
SCHEMAS_DIR = _data_dir("schemas")
