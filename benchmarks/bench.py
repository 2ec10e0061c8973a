"""payer-rules benchmark: prints its figures; it asserts nothing.

    python benchmarks/bench.py                 # 100,000 sessions, both engines
    python benchmarks/bench.py --million       # also peak RSS after 1,000,000 sessions
    python benchmarks/bench.py --sessions 20000 --engines python

Figures (issue 5): throughput in sessions/s for Medicare and for a per-code midpoint payer, full trace
on, one process and --jobs 2; beside them a plain-Python direct computation of the same units (no rule
engine) run in the same process, and the ratio engine/baseline; peak RSS of `payrules bill` streaming
100,000 and 1,000,000 sessions; the wall time of a cold `payrules bill` of one session against
`python -c pass`. Also: how two plain CPU loops scale on two processes here (the ceiling for --jobs 2),
and the throughput with every session's facts sent through the rule network (no memo of plans).

Audit log (issue 10): `payrules bill FILE.jsonl --format jsonl` with and without `--audit-db` on the same
generated sessions, same process model (one process, --jobs 1): the time ratio (wall, and CPU of the
process), and the log's size in bytes per session. Targets: at most 1.5x the time, at most 400 bytes.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine.batch import Job, bill_stream, render_one                    # noqa: E402
from engine.billing import Biller                        # noqa: E402
from engine.loader import Registry                       # noqa: E402
from engine.network import durable_available             # noqa: E402
from engine.sessions import RawLine, parse_session                # noqa: E402
from engine.yamlload import Located                      # noqa: E402
from workload import make_sessions                       # noqa: E402

TARGETS = {"durable": (5000, 8.0), "python": (15000, 3.0)}     # sessions/s at least, ratio at most
AUDIT_TARGETS = (1.5, 400)          # audit log: time ratio at most, bytes per session at most


# --- the plain-Python baseline: the same units, no rule engine ----------------------------------------

def baseline_units(session: dict, payer) -> dict:
    """{code: units} computed directly: duplicates merged; timed codes (and 97129/97130 as one service)
    pooled by the CMS method or rounded per code; untimed, evaluation and group codes one unit."""
    minutes, order = {}, []
    for s in session["services"]:
        code = str(s["code"])
        if code not in minutes:
            order.append(code)
            minutes[code] = 0
        minutes[code] += s["minutes"]
    codes, method = payer.codes, payer.method
    one_unit = codes.get("untimed", frozenset()) | codes.get("evaluations", frozenset()) | codes.get("group", frozenset())
    timed = {}
    for code in order:
        if code in codes.get("timed_15", ()):
            timed[code] = minutes[code]
        elif code in ("97129", "97130") and "97129" in minutes:
            timed["cog"] = timed.get("cog", 0) + minutes[code]
    u, first = method.unit_minutes, method.first_unit_minutes
    chart = lambda m: 0 if m < first else 1 + (m - first) // u          # noqa: E731
    if method.pooled:
        total = chart(sum(timed.values()))
        units = {k: m // u for k, m in timed.items()}
        keys = list(timed)
        ranked = sorted((k for k in keys if timed[k] % u), key=lambda k: (-(timed[k] % u), -timed[k], keys.index(k)))
        for k in ranked[:total - sum(units.values())]:
            units[k] += 1
    else:
        units = {k: chart(m) for k, m in timed.items()}
    out = {code: 1 for code in order if code in one_unit}
    for k, n in units.items():
        if k == "cog":
            if n:
                out["97129"] = 1
            if n > 1:
                out["97130"] = n - 1
        elif n:
            out[k] = n
    return out


# --- measurements --------------------------------------------------------------------------------------

def engine_run(biller, data):
    """Parse, bill (full trace) and encode each session as bill --format jsonl does."""
    out = []
    for i, d in enumerate(data, 1):
        session = parse_session(d, Located(d, {(): i}, "bench"), (), i)
        out.append(render_one(biller.bill(session), "jsonl"))
    return out


def baseline_run(data, payer, span: float):
    """(seconds per pass, units of each session): the baseline run over the sessions again and again
    for at least `span` seconds (the engine's time), so that both figures average the host's speed over
    the same length of time. Timed alone, a run eight times shorter than the engine's would more often
    fall in a fast spell of this shared host, and the best of a few such runs would flatter it."""
    passes, start = 0, time.perf_counter()
    while True:
        units = [baseline_units(d, payer) for d in data]
        passes += 1
        took = time.perf_counter() - start
        if took >= span:
            return took / passes, units


def jobs_run(lines, engine, jobs):
    """The same through the batch pipeline of `bill FILE.jsonl --format jsonl --jobs N`: JSONL lines
    read here, parsed, billed and encoded in the workers."""
    raw = (RawLine((line, "bench.jsonl", i + 1, i + 1)) for i, line in enumerate(lines))
    return [text for _, (_, text, _, _) in bill_stream(raw, [], engine, Job(), jobs)]


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def cpu_loop(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def machine_scaling() -> float:
    """How much faster two processes finish two plain CPU loops than one process does: the ceiling
    for --jobs 2 on this machine (hyperthreads and a busy host give less than 2)."""
    import multiprocessing
    n = 8_000_000
    one = two = float("inf")
    with multiprocessing.get_context("fork").Pool(2) as pool:
        for _ in range(3):          # in turn, best of three
            one = min(one, timed(lambda: [cpu_loop(n), cpu_loop(n)])[0])
            two = min(two, timed(lambda: pool.map(cpu_loop, [n, n]))[0])
    return one / two


def throughput(n: int, engines: list, rounds: int) -> None:
    registry = Registry()
    print(f"Throughput (best of {rounds} rounds): {n:,} generated sessions of 1-6 services, full trace, JSON-encoded; "
          f"{os.cpu_count()} cores; two plain CPU loops in 2 processes run {machine_scaling():.2f}x one process")
    print(f"{'payer':17} {'engine':7} {'1 process':>10} {'baseline':>10} {'ratio':>6}  {'target':28} "
          f"{'JSONL 1 job':>11} {'--jobs 2':>10} {'x':>5} {'no memo':>9}")
    for payer_id in ("medicare", "example-midpoint"):
        data = make_sessions(n, seed=7, payer=payer_id)
        payer = registry.resolve(payer_id, "2026-03-02")
        jsonl = [json.dumps(d).encode() + b"\n" for d in data]
        part = data[:max(1, n // 5)]            # no memo: on a fifth of the sessions
        billers = {engine: (Biller(registry, engine), Biller(registry, engine, remember=False)) for engine in engines}
        for biller, _ in billers.values():
            engine_run(biller, data[:500])      # warm up: compile, first sessions
        times, differ = {}, set()
        reference = base_units = None       # the first engine's output and the baseline's units
        # the figures of a round are taken in turn, so that a slow spell of the host hits them alike
        for _ in range(rounds):
            for engine, (biller, fresh) in billers.items():
                measured = {"one": timed(engine_run, biller, data)}
                measured["base"] = baseline_run(data, payer, span=measured["one"][0])
                measured["fresh"] = timed(engine_run, fresh, part)
                measured["pipe"] = timed(jobs_run, jsonl, engine, 1)
                measured["two"] = timed(jobs_run, jsonl, engine, 2)
                for kind, (took, out) in measured.items():
                    times[engine, kind] = min(took, times.get((engine, kind), took))
                    if kind == "base":
                        base_units = base_units or out
                    elif reference is None:
                        reference = out
                    elif out != reference[:len(out)]:       # every output is the same text, whatever ran it
                        differ.add(f"{engine} {kind}")
        for biller, fresh in billers.values():
            biller.close()
            fresh.close()
        mismatched = sum(1 for line, want in zip(reference, base_units)
                         if {l["code"]: l["units"] for l in json.loads(line)["lines"]} != want)
        for engine in engines:
            one_time, base_time, fresh_time, pipe_time, two_time = \
                (times[engine, k] for k in ("one", "base", "fresh", "pipe", "two"))
            rate, base_rate = n / one_time, n / base_time
            ratio = one_time / base_time
            floor, ceiling = TARGETS[engine]
            verdict = "met" if rate >= floor and ratio <= ceiling else "NOT met"
            print(f"{payer_id:17} {engine:7} {rate:8,.0f}/s {base_rate:8,.0f}/s {ratio:5.1f}x  "
                  f"{f'>= {floor:,}/s, <= {ceiling}x: {verdict}':28} {n / pipe_time:9,.0f}/s "
                  f"{n / two_time:8,.0f}/s {pipe_time / two_time:4.2f}x {len(part) / fresh_time:7,.0f}/s")
        if differ:
            print(f"  !! outputs differ from {engines[0]}'s one process: {', '.join(sorted(differ))}")
        if mismatched:
            print(f"  !! {mismatched} sessions where the engines' units differ from the baseline's")
    print("  1 process: parse + validate + bill + trace + JSON per session; baseline: the same units computed"
          "\n  directly, run right after it for as long as it took (the ratio is engine / baseline);"
          "\n  JSONL 1 job / --jobs 2: the `bill FILE.jsonl --format jsonl` pipeline, JSON decoding included;"
          "\n  no memo: every session's facts through the rule network (Biller(remember=False)).")


def peak_rss(counts: list, engines: list) -> None:
    print("Peak RSS of `payrules bill FILE.jsonl --format jsonl > /dev/null` (streaming):")
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            path = Path(tmp) / f"s{n}.jsonl"
            with open(path, "w") as fh:
                for start in range(0, n, 100_000):
                    for d in make_sessions(min(100_000, n - start), seed=start + 1):
                        fh.write(json.dumps(d) + "\n")
            for engine in engines:
                # VmHWM: the peak RSS of this process's own memory (ru_maxrss would carry over the
                # benchmark's own peak through fork)
                code = ("import sys; from engine.cli import main\n"
                        "rc = main(sys.argv[1:])\n"
                        "hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
                        "print('maxrss_kb', hwm, file=sys.stderr)\n")
                start = time.perf_counter()
                proc = subprocess.run([sys.executable, "-c", code, "bill", str(path), "--format", "jsonl",
                                       "--engine", engine], cwd=ROOT, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True)
                wall = time.perf_counter() - start
                kb = next(int(l.split()[1]) for l in proc.stderr.splitlines() if l.startswith("maxrss_kb"))
                print(f"  {n:>9,} sessions  {engine:8} peak RSS {kb / 1024:6.1f} MB  "
                      f"({wall:.0f} s, {n / wall:,.0f}/s end to end)  target < 150 MB: "
                      f"{'met' if kb / 1024 < 150 else 'NOT met'}")


def audit_cost(n: int, rounds: int) -> None:
    """`bill FILE.jsonl --format jsonl` with and without --audit-db, in turn, best of `rounds` each; the
    log is a new file each time; the output must be the same bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sessions.jsonl"
        with open(path, "w") as fh:
            for d in make_sessions(n, seed=11):
                fh.write(json.dumps(d) + "\n")
        base = [sys.executable, "-m", "engine", "bill", str(path), "--format", "jsonl"]
        best, outputs, size = {}, {}, 0
        for r in range(rounds):
            for kind in ("plain", "audit"):
                db = Path(tmp) / f"audit{r}.sqlite"
                cmd = base + (["--audit-db", str(db)] if kind == "audit" else [])
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                start = time.perf_counter()
                proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                wall = time.perf_counter() - start
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                old = best.get(kind, (wall, cpu))
                best[kind] = (min(old[0], wall), min(old[1], cpu))
                outputs.setdefault(kind, proc.stdout)
                if kind == "audit":
                    size = sum(f.stat().st_size for f in Path(tmp).glob(f"audit{r}.sqlite*"))
    (wall, cpu), (audit_wall, audit_cpu) = best["plain"], best["audit"]
    ratio, per_session = audit_wall / wall, size / n
    time_target, size_target = AUDIT_TARGETS
    print(f"Audit log (best of {rounds}): `bill FILE.jsonl --format jsonl` of {n:,} sessions, --jobs 1, with and "
          f"without --audit-db")
    print(f"  wall {wall:.2f} s -> {audit_wall:.2f} s = {ratio:.2f}x; CPU {cpu:.2f} s -> {audit_cpu:.2f} s = "
          f"{audit_cpu / cpu:.2f}x; target <= {time_target}x (wall): {'met' if ratio <= time_target else 'NOT met'}")
    print(f"  log {size:,} bytes = {per_session:.0f} bytes/session; target <= {size_target}: "
          f"{'met' if per_session <= size_target else 'NOT met'}")
    if outputs["plain"] != outputs["audit"]:
        print("  !! the output differs with --audit-db")


def cold_start(engines: list) -> None:
    """Median of 11 runs of each command, run in turn so that a slow spell of the host hits them alike.
    The command is the installed `payrules` beside this interpreter (bytecode compiled at install, as a
    user runs it), else `python -m engine` from the checkout; the first run fills the validated-rule
    cache that later runs read."""
    script = Path(sys.executable).parent / "payrules"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "engine"]
    commands = {"bare": [sys.executable, "-c", "pass"]}
    commands.update({engine: command + ["bill", "examples/ot-session.yaml", "--engine", engine] for engine in engines})
    runs = {key: [] for key in commands}
    for _ in range(11):
        for key, cmd in commands.items():
            start = time.perf_counter()
            subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            runs[key].append(time.perf_counter() - start)
    bare = statistics.median(runs["bare"])
    print(f"Cold start (median of 11): python -c pass {bare * 1000:.0f} ms")
    for engine in engines:
        t = statistics.median(runs[engine])
        ratio = t / bare
        print(f"  {' '.join(Path(command[0]).name if i == 0 else c for i, c in enumerate(commands[engine]))}: "
              f"{t * 1000:.0f} ms = {ratio:.1f}x a bare interpreter; target < 10x: {'met' if ratio < 10 else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--million", action="store_true", help="also measure peak RSS at 1,000,000 sessions")
    parser.add_argument("--rounds", type=int, default=3,
                        help="runs of each throughput figure, taken in turn; the fastest counts (timeit's rule)")
    parser.add_argument("--engines", default="durable,python")
    parser.add_argument("--audit-only", action="store_true", help="only the audit log figures")
    args = parser.parse_args()
    if args.audit_only:
        audit_cost(args.sessions, args.rounds)
        return
    engines = [e for e in args.engines.split(",") if e != "durable" or durable_available()]
    print(f"Python {sys.version.split()[0]}; engines: {', '.join(engines)}\n")
    throughput(args.sessions, engines, args.rounds)
    print()
    peak_rss([args.sessions] + ([1_000_000] if args.million else []), engines)
    print()
    audit_cost(args.sessions, args.rounds)
    print()
    cold_start(engines)


if __name__ == "__main__":
    main()
