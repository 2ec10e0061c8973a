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
    entry is ignored and a leading ~ is the home directory (as a shell expands it, also when the value was
    quoted). One that is missing or cannot be read is a UsageError naming the variable, with what is
    likely wrong: a relative entry is looked up from the working directory, so it is found from one
    directory and not from another; a file is not a tree; spaces around an entry are part of its name."""
    from .errors import UsageError
    from .loader import check_tree      # (loader imports this module)
    trees = []
    for entry in environ.get(RULES_ENV, "").split(os.pathsep):
        if entry:
            path = Path(os.path.expanduser(entry))
            try:
                check_tree(path)
            except UsageError as exc:
                raise UsageError(f"{RULES_ENV}: {exc.message}{_hint(entry, path)}") from None
            trees.append(path)
    return trees


def _hint(entry: str, path: Path) -> str:
    if path.is_file():
        return " (it is a file: list the directory that holds it)"
    if entry != entry.strip():
        return f" (the entry {entry!r} has spaces around it)"
    if not path.is_absolute() and not path.exists():
        try:
            where = os.getcwd()
        except OSError:
            where = "the working directory"
        return (f" (a relative entry is looked up from the working directory, {where}: "
                f"write it as an absolute path)")
    return ""


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
