"""Service benchmark (issue 14): single-session POST /v1/bill per second and p50/p99 latency at 1, 10 and
50 concurrent clients on loopback, against `payrules serve --workers 1` and `--workers 2`.

The server runs as `python -m engine serve` on a free port and is stopped at the end. The clients are
keep-alive HTTP/1.1 connections driven by one asyncio loop in a separate process, with each request's
bytes made before the clock starts, so that the client costs as little of the machine as it can (on a
2-core machine it still takes a share: the figures are for server and clients together). Each level runs
for at most --seconds or --requests, whichever comes first, after a warm-up. Targets (2 cores,
--workers 2): at least 1,000 bills/s, and p99 under 50 ms at 50 clients. It prints figures and asserts
nothing.

    .venv/bin/python benchmarks/service_bench.py [--seconds 5] [--requests 20000] [--engine python]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workload import make_sessions  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = (1, 10, 50)
TARGET_RATE, TARGET_P99_MS = 1000.0, 50.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(port: int, workers: int, engine: str | None) -> subprocess.Popen:
    args = [sys.executable, "-m", "engine", "serve", "--port", str(port), "--workers", str(workers)]
    if engine:
        args += ["--engine", engine]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not start")


def requests(port: int, n: int) -> list:
    out = []
    for session in make_sessions(n, seed=7):
        body = json.dumps(session).encode()
        out.append(b"POST /v1/bill HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n%s" % (port, len(body), body))
    return out


async def client(port: int, payloads: list, offset: int, stop_at: float, budget: list, latencies: list,
                 statuses: dict) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    k = offset
    try:
        while budget[0] > 0 and time.perf_counter() < stop_at:
            budget[0] -= 1
            payload = payloads[k % len(payloads)]
            k += 1
            started = time.perf_counter()
            writer.write(payload)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            status = int(head[9:12])
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


async def level(port: int, payloads: list, clients: int, seconds: float, count: int) -> dict:
    latencies: list = []
    statuses: dict = {}
    budget = [count]
    began = time.perf_counter()
    await asyncio.gather(*(client(port, payloads, i * 97, began + seconds, budget, latencies, statuses)
                           for i in range(clients)))
    span = time.perf_counter() - began
    latencies.sort()
    return {"clients": clients, "requests": len(latencies), "rate": len(latencies) / span,
            "p50": statistics.median(latencies) * 1000,
            "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, "statuses": statuses}


def load(port: int, seconds: float, count: int, out) -> None:
    """In its own process: warm up, then each level of clients (on uvloop when it is installed: the
    clients' own CPU is taken from the server's)."""
    try:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    payloads = requests(port, 500)
    asyncio.run(level(port, payloads, 10, min(2.0, seconds), 2000))       # warm-up: every worker's plans
    out.put([asyncio.run(level(port, payloads, c, seconds, count)) for c in CLIENTS])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="at most this long per level (default 5)")
    parser.add_argument("--requests", type=int, default=20_000, help="at most this many requests per level")
    parser.add_argument("--workers", default="1,2", help="worker counts to measure (default 1,2)")
    parser.add_argument("--engine", choices=["durable", "python"], help="rule network (default: the CLI's)")
    args = parser.parse_args()
    print(f"service benchmark: {os.cpu_count()} CPUs, single-session POST /v1/bill, keep-alive clients, "
          f"each level at most {args.seconds:g} s or {args.requests} requests")
    print(f"{'workers':>7} {'clients':>7} {'requests':>8} {'bills/s':>8} {'p50 ms':>7} {'p99 ms':>7}  statuses")
    results = {}
    for workers in map(int, args.workers.split(",")):
        port = free_port()
        proc = start(port, workers, args.engine)
        try:
            queue: multiprocessing.Queue = multiprocessing.Queue()
            loader = multiprocessing.Process(target=load, args=(port, args.seconds, args.requests, queue))
            loader.start()
            rows = queue.get(timeout=120 + 5 * args.seconds)
            loader.join(30)
        finally:
            proc.terminate()
            proc.wait(30)
        for row in rows:
            results[(workers, row["clients"])] = row
            print(f"{workers:>7} {row['clients']:>7} {row['requests']:>8} {row['rate']:>8.0f} {row['p50']:>7.2f} "
                  f"{row['p99']:>7.2f}  {row['statuses']}")
    best = results.get((2, 50))
    if best:
        rate = max(r["rate"] for (w, _), r in results.items() if w == 2)
        print(f"targets, --workers 2: bills/s {rate:.0f} (target >= {TARGET_RATE:.0f}: "
              f"{'met' if rate >= TARGET_RATE else 'NOT met'}); p99 at 50 clients {best['p99']:.1f} ms "
              f"(target < {TARGET_P99_MS:.0f} ms: {'met' if best['p99'] < TARGET_P99_MS else 'NOT met'})")


if __name__ == "__main__":
    main()
