"""The patient-year workload (issue 13): prints its figures; it asserts nothing.

    python benchmarks/patients_bench.py                       # 1,000,000 sessions of 100,000 patients
    python benchmarks/patients_bench.py --sessions 100000 --patients 10000 --jobs 2

The generated sessions of benchmarks/workload.py (1-6 services, Medicare), each given a patient (uniform
over --patients) and a date of service in 2026, in shuffled order. `payrules bill FILE --format jsonl` runs
on them twice, output to /dev/null: with their patient_id (spooled, sorted by patient and date, billed
patient by patient, written in input order: engine/patients.py) and without (the streaming path). Figures:
sessions/s of each, their ratio, and the peak RSS of the billing process (VmHWM) and of its workers.
Targets: the patient path at least 0.5x the stateless throughput, peak RSS under 500 MB.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from workload import make_sessions          # noqa: E402

TARGETS = (0.5, 500)        # throughput ratio at least, peak RSS (MB) at most

# the billing process reports its own peak RSS (ru_maxrss would count this process's, kept across exec)
RUN = ("import sys, resource; from engine.cli import main; code = main(sys.argv[1:]); sys.stdout.flush(); "
       "hwm = open('/proc/self/status').read().split('VmHWM:')[1].split()[0]; "
       "print('peak', hwm, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)")


def write_inputs(n: int, patients: int, folder: Path, seed: int = 13) -> tuple:
    """(with patient_id, without): the same sessions, shuffled, as JSONL files; written in slices so that
    this process does not hold a million sessions either."""
    rnd = random.Random(seed)
    order = list(range(n))
    rnd.shuffle(order)
    with_p, without = folder / "patients.jsonl", folder / "stateless.jsonl"
    step = 100_000
    with open(with_p, "w") as a, open(without, "w") as b:
        for start in range(0, n, step):
            for k, s in zip(order[start:start + step], make_sessions(min(step, n - start), seed=seed + start)):
                s["session_id"] = f"S{k}"
                s["date_of_service"] = f"2026-{1 + k % 12:02}-{1 + (k // 12) % 28:02}"
                b.write(json.dumps(s, separators=(",", ":")) + "\n")
                s["patient_id"] = f"P{(k * 7919) % patients}"
                a.write(json.dumps(s, separators=(",", ":")) + "\n")
    return with_p, without


def bill(path: Path, jobs: int) -> tuple:
    """(seconds, peak RSS MB of the billing process, of its largest worker, summary line)."""
    start = time.perf_counter()
    with open(os.devnull, "wb") as out:
        proc = subprocess.run([sys.executable, "-c", RUN, "bill", str(path), "--format", "jsonl", "--jobs", str(jobs)],
                              cwd=ROOT, stdout=out, stderr=subprocess.PIPE, env={**os.environ, "PAYRULES_CACHE": "off"})
    took = time.perf_counter() - start
    lines = proc.stderr.decode().splitlines()
    peak = next(line for line in lines if line.startswith("peak")).split()
    summary = next((line for line in lines if line.startswith("payrules:")), "?")
    return took, int(peak[1]) / 1024, int(peak[2]) / 1024, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=1_000_000)
    ap.add_argument("--patients", type=int, default=100_000)
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="payrules-patients-bench-") as tmp:
        with_p, without = write_inputs(args.sessions, args.patients, Path(tmp))
        print(f"Patient-year workload: {args.sessions:,} sessions of {args.patients:,} patients, shuffled; "
              f"`bill --format jsonl --jobs {args.jobs}` to /dev/null ({with_p.stat().st_size / 2**20:,.0f} MB input)")
        figures = {}
        for name, path in (("stateless (no patient_id)", without), ("by patient (patient_id)", with_p)):
            took, rss, workers, summary = bill(path, args.jobs)
            figures[name] = args.sessions / took
            print(f"  {name:28} {took:8.1f} s  {args.sessions / took:10,.0f} sessions/s  peak RSS {rss:6.0f} MB"
                  + (f" (largest worker {workers:.0f} MB)" if args.jobs > 1 else "") + f"   [{summary}]")
        ratio = figures["by patient (patient_id)"] / figures["stateless (no patient_id)"]
        print(f"  ratio by patient / stateless: {ratio:.2f}x (target >= {TARGETS[0]}x); peak RSS target < "
              f"{TARGETS[1]} MB")


if __name__ == "__main__":
    main()
