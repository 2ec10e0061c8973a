"""Command line: payrules bill | validate | payers (shared/design.md §3, CONTRACT).

Exit codes: 0 every session billed; 1 a session has an error-severity warning or could not be billed;
2 usage error, invalid rule file, unknown --payer, or an input that cannot be parsed at all.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from . import render
from .billing import Biller
from .errors import PayrulesError, SessionError, UsageError
from .loader import PayerFile, Registry, check_payer, rule_files
from .network import ENGINES, default_engine
from .paths import RULES_DIR
from .sessions import load_sessions


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.run(args)
    except PayrulesError as exc:
        _error(str(exc))
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="payrules", description="Payer rules engine for outpatient therapy billing.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    bill = sub.add_parser("bill", help="bill each session of the input(s)")
    bill.add_argument("inputs", nargs="+", metavar="INPUT",
                      help="YAML/JSON file (one session or a list), .jsonl file, or - for standard input")
    bill.add_argument("--payer", help="bill every session under this payer (overrides the session's payer)")
    bill.add_argument("--rules", action="append", default=[], metavar="DIR", help="extra rules tree (repeatable)")
    bill.add_argument("--date", type=_date, help="date of service for every session (YYYY-MM-DD)")
    bill.add_argument("--format", choices=["table", "json", "jsonl", "csv"], default="json")
    bill.add_argument("--engine", choices=ENGINES, default=None,
                      help=f"rule network (default: {default_engine()})")
    bill.set_defaults(run=cmd_bill)

    validate = sub.add_parser("validate", help="check payer rule files")
    validate.add_argument("paths", nargs="*", metavar="FILE_OR_DIR", help="default: every known payer file")
    validate.add_argument("--rules", action="append", default=[], metavar="DIR", help="extra rules tree (repeatable)")
    validate.set_defaults(run=cmd_validate)

    payers = sub.add_parser("payers", help="list known payers")
    payers.add_argument("--rules", action="append", default=[], metavar="DIR", help="extra rules tree (repeatable)")
    payers.add_argument("--format", choices=["table", "json"], default="table")
    payers.set_defaults(run=cmd_payers)
    return parser


def _date(text: str) -> str:
    try:
        return datetime.date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def cmd_bill(args) -> int:
    registry = Registry(args.rules)
    if args.payer and registry.get(args.payer) is None:
        raise UsageError(registry.unknown_message(args.payer))
    sessions, single = [], len(args.inputs) == 1
    for name in args.inputs:
        loaded, one = load_sessions(name, start=len(sessions) + 1)
        sessions.extend(loaded)
        single = single and one
    biller = Biller(registry, args.engine or default_engine())
    try:
        records = [biller.bill(s, args.payer, args.date) for s in sessions]
    finally:
        biller.close()
    for session, record in zip(sessions, records):
        _report(session, record)
    out = {"json": lambda r: render.to_json(r, single), "jsonl": render.to_jsonl,
           "csv": render.to_csv, "table": render.to_table}[args.format](records)
    sys.stdout.write(out)
    failed = any("error" in r or any(w["severity"] == "error" for w in r["warnings"]) for r in records)
    return 1 if failed else 0


def _report(session, record) -> None:
    """Errors of a session on stderr, `error: FILE:LINE: ...` naming the session by its id only."""
    if isinstance(session, SessionError):
        _error(f"{session} (session {session.session_id})")
        return
    where = f"{session.file}:{session.line}: " if session.file and session.line else ""
    if "error" in record:
        _error(f"{where}session {record['session_id']}: {record['error']}")
        return
    for w in record["warnings"]:
        if w["severity"] == "error":
            _error(f"{where}session {record['session_id']}: {w['rule']}: {w['message']}")


def cmd_validate(args) -> int:
    files = []
    if args.paths:
        for name in args.paths:
            path = Path(name)
            if path.is_dir():
                files.extend(rule_files(path))
            elif path.is_file():
                files.append(PayerFile(path, path.as_posix()))
            else:
                raise UsageError(f"no such file or directory: {name}")
    else:
        for directory in [RULES_DIR] + [Path(d) for d in args.rules]:
            files.extend(rule_files(directory))
    bad = 0
    ids: dict = {}
    for pfile in files:
        result = check_payer(pfile)
        if isinstance(result, list):
            bad += 1
            for error in result[:20]:
                _error(str(error))
            continue
        if result.id in ids:
            bad += 1
            _error(f"{pfile.display}: payer: payer id {result.id!r} is already defined in {ids[result.id]}")
            continue
        ids[result.id] = pfile.display
        print(f"ok   {pfile.display}  payer {result.id}  ({len(result.rules)} rules)")
    print(f"{len(files) - bad} valid, {bad} invalid", file=sys.stderr)
    return 2 if bad else 0


def cmd_payers(args) -> int:
    registry = Registry(args.rules)
    listing = [{"id": p.id, "name": p.name, "method": p.method.name, "file": p.file, "extends": p.extends,
                "effective_from": p.effective_from, "effective_to": p.effective_to}
               for p in sorted(registry.payers.values(), key=lambda p: p.id)]
    if args.format == "json":
        sys.stdout.write(json.dumps(listing, indent=2) + "\n")
    else:
        sys.stdout.write(render.payers_table(listing))
    return 0
