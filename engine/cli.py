"""Command line: payrules bill | compare | explain | audit | test | validate | payers (shared/design.md §3, CONTRACT).

Exit codes: 0 every session billed; 1 a session has an error-severity warning or could not be billed;
2 usage error, invalid rule file, unknown --payer, an input that cannot be read or parsed at all, or an
output that cannot be written; 130 interrupted (Ctrl-C).
"""
from __future__ import annotations

import argparse
import json
import os
import posixpath
import signal
import sys
from pathlib import Path

from . import __version__, render
from .batch import Counts, Job, Progress, Writer, interruptible, report_lines
from .billing import Biller
from .edits import RULES as EDIT_RULES
from .errors import (EvaluationError, InputError, LogWriteError, OutputError, PayrulesError, SessionError, UsageError,
                     date_problem, suggest)
from .loader import PayerFile, Registry, named_tables, rule_files
from .network import ENGINES, default_engine
from .patients import bill_in_order
from .paths import RULES_DIR, RULES_ENV, env_rules
from .sessions import FORMATS, SessionInput, check_input, load_sessions


def main(argv=None) -> int:
    if sys.stderr is None:          # started with stderr closed: nothing can be said, the exit code tells
        sys.stderr = open(os.devnull, "w")
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        _error(f"no command given: payrules {{{','.join(parser.commands)}}} ... (see payrules --help)")
        return 2
    try:
        if sys.stdout is None:
            raise OutputError("it is closed")
        if sys.stdin is None and "-" in getattr(args, "inputs", ()):
            raise UsageError("cannot read input: standard input is closed", "<stdin>")
        if hasattr(args, "rules") and args.command != "audit":     # audit: with --current-rules only
            args.rules = [*env_rules(), *args.rules]    # bundled, then PAYRULES_RULES, then --rules
        code = args.run(args)
        _flush_stdout()
        return code
    except OutputError as exc:
        _drop(sys.stdout)
        _error(str(exc))
        return 2
    except PayrulesError as exc:
        for line in exc.lines() if isinstance(exc, InputError) else [str(exc)]:
            _error(line)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:         # the reader went away (`payrules bill ... | head`)
        _drop(sys.stdout)
        return 0
    except OSError as exc:          # not from stdout (written through _out and Writer): an input that failed
        try:
            _flush_stdout()
            message = f"{exc.filename}: {exc.strerror}" if exc.filename else f"cannot read input: {exc.strerror}"
        except OutputError as out:
            _drop(sys.stdout)
            message = str(out)
        _error(message)
        return 2


def _flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise OutputError(exc) from None


def _out(text: str) -> None:
    """Text for standard output; a write that fails is an OutputError."""
    try:
        sys.stdout.write(text)
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise OutputError(exc) from None


def _drop(stream) -> None:
    """Point a standard stream that can no longer be written at /dev/null, so that what is still in its
    buffer does not fail again (and print a traceback) when Python exits."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _say(line: str) -> None:
    """One line on stderr; a stderr that cannot be written (closed, full) does not stop the run."""
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:
        _drop(sys.stderr)


def _error(message: str) -> None:
    """`error: ...` on stderr, one line whatever the message holds (render.clean)."""
    _say(f"error: {render.clean(message)}")


class _Parser(argparse.ArgumentParser):
    """A command-line mistake is one `error:` line like any other error (argparse prints a usage block)."""

    def error(self, message):
        _error(f"{self.prog}: {message} (see {self.prog} --help)")
        sys.exit(2)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="payrules", description="Payer rules engine for outpatient therapy billing.",
                     epilog=f"Payers are found in the bundled rules, then in the directories of {RULES_ENV} "
                            f"(separated by {os.pathsep!r}), then in each --rules DIR. "
                            "`payrules COMMAND --help` describes a command.")
    parser.add_argument("--version", action="version", version=f"payrules {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    # options several commands share, each defined once
    rules = argparse.ArgumentParser(add_help=False)
    rules.add_argument("--rules", action="append", default=[], metavar="DIR",
                       help=f"also find payers in this rules tree, after the bundled rules and {RULES_ENV} "
                            "(repeatable)")
    engine = argparse.ArgumentParser(add_help=False)
    engine.add_argument("--engine", choices=ENGINES, default=None, help=f"rule network (default: {default_engine()})")
    sessions = argparse.ArgumentParser(add_help=False, parents=[rules, engine])
    sessions.add_argument("inputs", nargs="+", metavar="INPUT",
                          help="YAML/JSON file (one session or a list), .jsonl or .csv file, or - for standard input")
    sessions.add_argument("--date", metavar="YYYY-MM-DD", type=_date, help="date of service for every session (YYYY-MM-DD)")

    bill = sub.add_parser("bill", parents=[sessions], help="bill each session of the input(s)",
                          description="Bill each session of the input(s): claim lines with units and modifiers, "
                                      "warnings, and the rule (file:line) behind each decision.")
    bill.add_argument("--payer", metavar="ID", help="bill every session under this payer (overrides the session's payer)")
    bill.add_argument("--format", choices=["table", "json", "jsonl", "csv"], default="json",
                      help="output format (default: json)")
    bill.add_argument("--audit-db", metavar="PATH", help="append every session's result and trace to this SQLite log")
    bill.add_argument("--jobs", type=_positive, default=1, metavar="N",
                      help="bill in N worker processes (output stays in input order)")
    bill.add_argument("--input-format", choices=FORMATS, default="auto",
                      help="input format (default: from the file name, or sniffed)")
    bill.set_defaults(run=cmd_bill)

    compare = sub.add_parser("compare", parents=[sessions], help="the same session(s) under several payers, side by side",
                             description="Bill the same session(s) under several payers and show the units "
                                         "side by side.")
    which = compare.add_mutually_exclusive_group(required=True)
    which.add_argument("--payers", metavar="ID,ID,...", type=_ids, help="comma-separated payer ids")
    which.add_argument("--all-payers", action="store_true", help="every known payer")
    compare.add_argument("--base", metavar="ID", help="measure the others against this payer (default: medicare "
                         "when compared, else the first payer)")
    compare.add_argument("--format", choices=["table", "json"], default="table", help="output format (default: table)")
    compare.set_defaults(run=cmd_compare)

    explain = sub.add_parser("explain", parents=[sessions],
                             help="every rule that fired and why each unit went where it went",
                             description="Explain each session's billing: every rule that fired and why, the "
                                         "unit arithmetic step by step, why each unbilled code got nothing.")
    explain.add_argument("--payer", metavar="ID", help="payer id (default: the session's payer)")
    explain.add_argument("--why-not", action="append", default=[], metavar="RULE_ID",
                         help="also say, fact by fact, which condition of this rule failed (repeatable)")
    explain.add_argument("--format", choices=["text", "json"], default="text", help="output format (default: text)")
    explain.set_defaults(run=cmd_explain)

    audit = sub.add_parser("audit", parents=[rules], help="query or replay an audit log written by bill --audit-db",
                           description="Query an audit log written by bill --audit-db, or replay its sessions "
                                       "and say which bill differently.")
    audit.add_argument("database", metavar="PATH", help="the SQLite audit log")
    audit.add_argument("--session", metavar="ID", help="a session id")
    audit.add_argument("--rule", metavar="RULE_ID", help="sessions this rule touched (fired on)")
    audit.add_argument("--payer", metavar="ID", help="a payer id")
    audit.add_argument("--from", dest="date_from", metavar="DATE", type=_date, help="date of service from (YYYY-MM-DD)")
    audit.add_argument("--to", dest="date_to", metavar="DATE", type=_date, help="date of service up to (YYYY-MM-DD)")
    audit.add_argument("--format", choices=["table", "json"], default="table", help="output format (default: table)")
    audit.add_argument("--replay", action="store_true",
                       help="bill the logged sessions again from the logged input and rule files; say which differ")
    audit.add_argument("--current-rules", action="store_true",
                       help=f"with --replay: bill them with today's rule files (bundled, {RULES_ENV}, --rules) "
                            "instead")
    audit.set_defaults(run=cmd_audit)

    validate = sub.add_parser("validate", parents=[rules], help="check payer rule files",
                              description="Check payer rule files, each with what it extends; one line per "
                                          "mistake, with its file and line.")
    validate.add_argument("paths", nargs="*", metavar="FILE_OR_DIR",
                          help="payer files or rules trees to check (default: every known payer file)")
    validate.set_defaults(run=cmd_validate)

    test = sub.add_parser("test", parents=[rules, engine], help="run payer scenario tests (*.tests.yaml)",
                          description="Run payer scenario tests (*.tests.yaml): bill each scenario's session and "
                                      "compare with what it expects.")
    test.add_argument("paths", nargs="*", metavar="PATH", help="scenario files or directories (default: every rules tree)")
    test.set_defaults(run=cmd_test)

    payers = sub.add_parser("payers", parents=[rules], help="list known payers",
                            description="List the known payers: id, name, unit method, file, what each extends "
                                        "and its effective dates.")
    payers.add_argument("--format", choices=["table", "json"], default="table", help="output format (default: table)")
    payers.set_defaults(run=cmd_payers)
    serve = sub.add_parser("serve", parents=[rules, engine], help="run the HTTP service and the web page",
                           description="Serve the API of design.md §8 and the web page for billing staff. Rules "
                                       "are loaded and checked first: a broken rule file stops it here. Bound to "
                                       "anything but loopback it requires PAYRULES_TOKEN, the bearer token clients "
                                       "send.")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8080, help="TCP port (default: 8080)")
    serve.add_argument("--workers", type=_workers, default=1, metavar="N",
                       help="worker processes, each with its own rules engine (default: 1)")
    serve.set_defaults(run=cmd_serve)
    parser.commands = list(sub.choices)
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of jobs from 1 to 64")
    return value


def _workers(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 64:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of worker processes from 1 to 64")
    return int(text)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port from 0 to 65535")
    return int(text)


def _ids(text: str) -> list:
    ids = [part.strip() for part in text.split(",") if part.strip()]
    if not ids:
        raise argparse.ArgumentTypeError("give at least one payer id")
    return list(dict.fromkeys(ids))


def _date(text: str) -> str:
    problem = date_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def _load_all(inputs, fmt="auto") -> tuple:
    """Every session of every input, numbered across inputs, and whether it was one session object."""
    sessions, single = [], len(inputs) == 1
    for name in inputs:
        loaded, one = load_sessions(name, start=len(sessions) + 1, fmt=fmt)
        sessions.extend(loaded)
        single = single and one
    return sessions, single


def _failed(records) -> bool:
    return any("error" in r or any(w["severity"] == "error" for w in r["warnings"]) for r in records)


MAX_REPORTED = 50     # per-session error lines on stderr; the summary counts the rest


def cmd_bill(args) -> int:
    registry = Registry(args.rules)         # a rule-file problem stops the run before anything is billed
    if args.payer and not registry.has(args.payer):
        raise UsageError(registry.unknown_message(args.payer))
    engine = args.engine or default_engine()
    registry.check_all(engine)              # ... and so does one the compiler or the engine refuses
    for name in args.inputs:                # every input can be read before anything is billed ...
        check_input(name)
    inputs = []     # ... and each is opened in its turn: a day of files may be more than can be open at once
    job = Job(args.payer, args.date, args.format, audit=bool(args.audit_db))
    log = log_failed = None
    if args.audit_db:       # records reach stdout through the log, once they are committed to it
        from .audit import AuditLog
        log = AuditLog(args.audit_db, engine, registry, sys.stdout.buffer)
        categories = bytearray()        # of each record, for the summary of those written if the log fails
    counts, progress, writer = Counts(), Progress(), Writer(args.format, log.out if log else None)
    failed = reported = 0
    interrupted = False
    stopped = []            # an input that could not be read further: the sessions before it are billed
    previous = signal.getsignal(signal.SIGINT)
    # Ctrl-C stays held back after the stream, until the output, the log and the summary are written
    sources = _numbered(args.inputs, args.input_format, args.jobs > 1, inputs, stopped)
    # sessions with a patient_id: billed in date order per patient, written in input order (engine/patients.py)
    stream = interruptible(bill_in_order(sources, args.rules, engine, job, args.jobs, registry), restore=False)
    try:
        try:
            for _, (category, text, report, audit) in stream:
                counts.add(category)
                if args.format == "json" and len(args.inputs) == 1 and inputs[0].single:
                    writer.write_single(json.loads(text))
                else:
                    writer.write(text)
                if report:
                    failed += 1
                    for line in report[:max(0, MAX_REPORTED - reported)]:
                        _error(line)
                        reported += 1
                if log:
                    categories.append(_CATEGORY_CODES[category])
                    log.record(counts.read, audit)
                progress.update(counts)
        except KeyboardInterrupt:   # raised only between records (batch.interruptible)
            interrupted = True
        except EvaluationError as exc:  # a worker died: the run stops, its output well-formed all the same
            stopped.append(exc)
        except LogWriteError as exc:    # the audit log could not commit a batch: the run stops there
            log_failed = exc
        finally:
            stream.close()
            progress.done()
        if stopped and not counts.read:     # nothing read: the one error line alone, no output, no summary
            raise stopped[0]
        if log_failed is None:
            try:
                writer.close()      # interrupted too: the output ends well-formed after the last record
                if log:             # the last batch: committed, then its output (and the `]`) written
                    log.close()
            except LogWriteError as exc:
                log_failed = exc
    finally:
        if log:
            log.close()
    if log_failed is not None:
        if not log.written:         # nothing was written out: the one error line alone
            raise log_failed
        # what was written out is what was logged: the output is closed on it and the summary counts it
        writer.close_after(log.written, sys.stdout.buffer)
        counts = Counts()
        for code in categories[:log.written]:
            counts.add(_CATEGORIES[code])
        stopped.append(log_failed)
    if reported >= MAX_REPORTED and failed:
        _error(f"more errors than the first {MAX_REPORTED} lines shown: see the output records")
    for exc in stopped:
        _error(str(exc))
    _say(counts.line(interrupted))
    if signal.getsignal(signal.SIGINT) is not previous:
        signal.signal(signal.SIGINT, previous)
    if interrupted:
        return 130
    if stopped:
        return 2
    return 1 if counts.with_errors or counts.failed_to_parse else 0


_CATEGORIES = ("billed", "error", "parse")
_CATEGORY_CODES = {name: code for code, name in enumerate(_CATEGORIES)}


def _numbered(names, fmt: str, defer: bool, opened: list, stopped: list):
    """Sessions of every input in turn, default ids numbered across inputs; each input is opened in its
    turn and added to `opened`. An input that cannot be read further (a UsageError) ends them there, the
    error put in `stopped`: the sessions read before it are billed and written whatever --jobs (raised
    through bill_stream, it would drop those in flight)."""
    number = 1
    try:
        for name in names:
            source = SessionInput(name, fmt, number, defer=defer)
            opened.append(source)
            yield from source
            number += source.count
    except UsageError as exc:
        stopped.append(exc)


def cmd_compare(args) -> int:
    from .compare import choose_base, compare_sessions, to_table as compare_table
    registry = Registry(args.rules)
    registry.check_all(args.engine or default_engine())
    payer_ids = registry.ids() if args.all_payers else args.payers
    for pid in payer_ids:
        if not registry.has(pid):
            raise UsageError(registry.unknown_message(pid))
    base = choose_base(payer_ids, args.base)
    sessions, single = _load_all(args.inputs)
    biller = Biller(registry, args.engine or default_engine())
    try:
        comparisons = compare_sessions(sessions, payer_ids, biller, args.date, base)
    finally:
        biller.close()
    for session, c in zip(sessions, comparisons):
        if isinstance(session, SessionError):
            _report(session, None)
            continue
        for payer_id, record in c["results"].items():
            _report(session, record, payer_id)
    if args.format == "json":
        _out(render.to_json(comparisons, single))
    else:
        _out(compare_table(comparisons, render.text_width()))
    return 1 if _failed([r for c in comparisons for r in c["results"].values()]) else 0


def cmd_audit(args) -> int:
    from .audit import query
    if not Path(args.database).is_file():
        raise UsageError("no such audit database", args.database)
    if args.replay or args.current_rules or args.rules:
        from .audit import replay_command
        return replay_command(args, _out)
    rows = query(args.database, args.session, args.rule, args.payer, args.date_from, args.date_to)
    if args.format == "json":
        _out(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
    else:
        _out(render.audit_table(rows, args.rule))
    return 0


def cmd_explain(args) -> int:
    from .explain import explain_json, explain_text
    from .patients import explain_in_order
    registry = Registry(args.rules)
    registry.check_all(args.engine or default_engine())
    if args.payer and not registry.has(args.payer):
        raise UsageError(registry.unknown_message(args.payer))
    sessions, single = _load_all(args.inputs)
    _check_why_not(registry, args.why_not, {args.payer} if args.payer else
                   {s.payer for s in sessions if not isinstance(s, SessionError) and registry.has(s.payer)})
    biller = Biller(registry, args.engine or default_engine())
    try:    # as `bill` bills the input: a patient's sessions in date order, with its year (engine/patients.py)
        outcomes, steps = zip(*explain_in_order(sessions, biller, args.payer, args.date)) if sessions else ((), ())
    finally:
        biller.close()
    records = [o if isinstance(o, dict) else o.result for o in outcomes]
    for session, record in zip(sessions, records):
        _report(session, record)
    if args.format == "json":
        docs = [o if isinstance(o, dict) else explain_json(o, args.why_not, s) for o, s in zip(outcomes, steps)]
        _out(render.to_json(docs, single))
    else:
        texts = [f"Session {render.clean(o['session_id'])}: NOT BILLED\n  error: {render.clean(o['error'])}\n"
                 if isinstance(o, dict)
                 else explain_text(o, args.why_not, s) for o, s in zip(outcomes, steps)]
        _out("\n".join(texts))
    return 1 if _failed(records) else 0


def _check_why_not(registry, rule_ids: list, payer_ids: set) -> None:
    """A --why-not id that is no rule of the payer on any date is a usage error; one that is a rule, but
    not in effect on the session's date, is explained in the text."""
    for payer_id in sorted(payer_ids):
        known = registry.rule_ids(payer_id) | set(EDIT_RULES)     # and the table edits (ncci-ptp, ncci-mue)
        for rule_id in rule_ids:
            if rule_id not in known:
                raise UsageError(f"--why-not: payer {payer_id} has no rule {rule_id!r} on any date"
                                 f"{suggest(rule_id, known)}")


def _report(session, record, payer_id: str | None = None) -> None:
    for line in report_lines(session, record, payer_id):
        _error(line)


def cmd_validate(args) -> int:
    """Check the named files and trees (default: every known payer), each merged with what it extends."""
    dirs, files = list(args.rules), []
    for name in args.paths:
        path = Path(name)
        if path.is_dir():
            dirs.append(path)
        elif path.is_file():
            files.append(PayerFile(path, path.as_posix()))
        else:
            raise UsageError(f"no such file or directory: {name}")
    registry = Registry(dirs, strict=False, extra_files=files)
    named = {p.path.resolve() for d in dirs[len(args.rules):] for p in rule_files(d)} | \
            {p.path.resolve() for p in files}
    checked = [p for p in registry.files if not args.paths or p.path.resolve() in named]
    shown = {p.shown for p in checked}      # paths the user can open, as messages name them
    # a table a checked file names (tables.ptp: [...]) is checked with it: its error makes the file invalid
    owner = {posixpath.join(posixpath.dirname(spec.shown), name): spec.shown for specs in registry.versions.values()
             for spec in specs if spec.shown in shown for names in (spec.data.get("tables") or {}).values()
             for name in names}
    errors = [e for e in registry.errors() if e.file in shown or e.file in owner]
    for error in errors:
        _error(str(error))
    bad = {owner.get(e.file, e.file) for e in errors}
    for pfile in checked:
        if pfile.shown not in bad:
            _out(f"ok   {pfile.shown}\n")
            for spec in (s for specs in registry.versions.values() for s in specs if s.shown == pfile.shown):
                for kind, name, table in named_tables(spec):    # on stderr: stdout lists the files that are ok
                    span = f", effective dates {table.first} to {table.last}" if kind == "ptp" and table.rows else ""
                    _say(f"table {name} ({kind}, named by {pfile.shown}): {render.plural(table.rows, 'row')}{span}")
    _say(f"{len(checked) - len(bad)} valid, {len(bad)} invalid")
    # bill and compare find payers only in the rules path: say so when a valid file checked is not in it
    trees = [Path(t).resolve() for t in [RULES_DIR, *args.rules]]

    def in_path(path) -> bool:
        return any(Path(path).resolve().is_relative_to(tree) for tree in trees)

    outside = list(dict.fromkeys((Path(name) if Path(name).is_dir() else Path(name).parent).as_posix()
                                 for name in args.paths if not in_path(name)))
    if outside and any(p.shown not in bad and not in_path(p.path) for p in checked):
        _say(f"note: bill and compare will not see the payers in {', '.join(outside)} unless "
             f"{'the directory is' if len(outside) == 1 else 'each directory is'} passed with --rules or listed in "
             f"{RULES_ENV}")
    return 2 if bad else 0


def cmd_test(args) -> int:
    """Run scenarios; payers are found in the rules trees and beside the scenario files (the payer files in
    each one's folder, not below it: a scenario file in a large folder does not read every YAML file under
    it)."""
    from .scenarios import load_scenarios, run_scenario, scenario_files
    paths = args.paths or [RULES_DIR] + args.rules
    files = scenario_files(paths)
    beside = [f for folder in sorted({p.parent for p, _ in files}) for f in rule_files(folder, below=False)]
    registry = Registry(list(args.rules), extra_files=beside)
    biller = Biller(registry, args.engine or default_engine())
    passed = failed = 0
    try:
        for path, display in files:
            for scenario in load_scenarios(path, display):
                diffs = run_scenario(scenario, biller)
                if diffs:
                    failed += 1
                    _out(f"FAIL {scenario.file}:{scenario.line}: {scenario.payer}: {scenario.name}\n")
                    _out("".join(f"     {d}\n" for d in diffs))
                else:
                    passed += 1
                    _out(f"ok   {scenario.file}:{scenario.line}: {scenario.payer}: {scenario.name}\n")
    finally:
        biller.close()
    _out(f"scenarios: {passed} passed, {failed} failed\n")
    return 1 if failed or not passed else 0


def cmd_payers(args) -> int:
    listing = Registry(args.rules).listing()
    if args.format == "json":
        _out(json.dumps(listing, indent=2) + "\n")
    else:
        _out(render.payers_table(listing))
    return 0


def cmd_serve(args) -> int:
    from .service import serve
    return serve(args.host, args.port, args.rules, args.engine, args.workers)
