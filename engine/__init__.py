"""payer-rules: a configurable payer rules engine for outpatient therapy billing (PT, OT, SLP)."""

__version__ = "0.2.0"


def run() -> int:
    """The `payrules` command (and `python -m engine`): Ctrl-C while its modules load is the exit code of
    an interrupted run, 130, not a traceback. The installed script imports only this small module first."""
    try:
        from .cli import main
    except KeyboardInterrupt:
        return 130
    return main()
