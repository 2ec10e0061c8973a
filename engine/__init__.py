"""payer-rules: a configurable payer rules engine for outpatient therapy billing (PT, OT, SLP).

Installed, this package is `payer_rules` (the source folder is engine/). From Python::

    import payer_rules
    book = payer_rules.RuleBook()                   # bundled payers (+ rules=("my-rules",))
    result = book.bill({"payer": "medicare", "services": [{"code": "97110", "minutes": 38}]})

`RuleBook`, `bill` and `PayrulesError` are in engine/api.py (design.md §7); they are imported on first
use, so that the `payrules` command starts by importing only this small module (see run).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.4.0"
__all__ = ["RuleBook", "bill", "PayrulesError", "run", "__version__"]

if TYPE_CHECKING:
    from .api import RuleBook, bill
    from .errors import PayrulesError


def __getattr__(name: str) -> Any:
    if name in ("RuleBook", "bill", "PayrulesError"):
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def run() -> int:
    """The `payrules` command (and `python -m engine`): Ctrl-C while its modules load is the exit code of
    an interrupted run, 130, not a traceback. The installed script imports only this small module first."""
    try:
        from .cli import main
    except KeyboardInterrupt:
        return 130
    return main()
