"""Where the bundled rules and schemas live (inside the installed package, or beside it in a checkout),
the rules trees PAYRULES_RULES adds, and how a file is named in a message so that the user can open it."""
from __future__ import annotations

import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _data_dir(name: str) -> Path:
    installed = _PACKAGE / name
    return installed if installed.is_dir() else _PACKAGE.parent / name


RULES_DIR = _data_dir("rules")
SCHEMAS_DIR = _data_dir("schemas")

RULES_ENV = "PAYRULES_RULES"


def env_rules(environ=os.environ) -> list:
    """The rules trees PAYRULES_RULES names: directories separated by os.pathsep, in their order; an empty
    entry is ignored. One that is missing or cannot be read is a UsageError naming the variable."""
    from .errors import UsageError
    from .loader import check_tree      # (loader imports this module)
    trees = []
    for entry in environ.get(RULES_ENV, "").split(os.pathsep):
        if entry:
            try:
                check_tree(Path(entry))
            except UsageError as exc:
                raise UsageError(f"{RULES_ENV}: {exc.message}") from None
            trees.append(Path(entry))
    return trees


def shown(path: Path) -> str:
    """A file's name in messages, a path the user can open from the working directory: a path as it was
    given (relative to the working directory, or absolute); a bundled file relative to the working
    directory when it is below it, else absolute."""
    path = Path(path)
    if path.is_absolute() and path.is_relative_to(RULES_DIR):
        try:
            return path.relative_to(Path.cwd()).as_posix()
        except (ValueError, OSError):
            return path.as_posix()
    return path.as_posix()
