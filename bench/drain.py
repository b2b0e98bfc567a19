"""The collector's cost when there is nothing to collect, against a Redis round trip measured in the same run.

    .venv/bin/python bench/drain.py [--redis redis://127.0.0.1:6379/14] [--runs 7] [--drains 500]

The scheduler drains the results list on every tick, so an empty drain is paid once per tick, for every
sweep, whether or not anything finished. Floor: one PING (a Redis round trip on the same connection).
An empty drain is two round trips (the processing list's LRANGE, the results list's LLEN).
Prints one table; copy it to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis  # noqa: E402

from controller.collector import Collector  # noqa: E402
from controller.store import Store  # noqa: E402


def _per_call_ms(fn, n: int, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        out.append((time.perf_counter() - t) / n * 1e3)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--drains", type=int, default=500)
    args = p.parse_args(argv)
    client = redis.Redis.from_url(args.redis)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        sys.exit(f"error: no Redis at {args.redis} ({exc}); start one or pass --redis URL")
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{Path(tmp) / 'fb.db'}")
        store.migrate()
        collector = Collector(client, store, name=f"bench-drain-{os.getpid()}")
        for _ in range(50):  # warm: connections, imports
            collector.drain()
            client.ping()
        drain = _per_call_ms(collector.drain, args.drains, args.runs)
        ping = _per_call_ms(client.ping, args.drains, args.runs)
        store.close()
    med = statistics.median
    print("| figure | p50 of runs | min / max |\n|---|---|---|")
    print(f"| empty drain | {med(drain):.3f} ms | {min(drain):.3f} / {max(drain):.3f} ms |")
    print(f"| floor: one PING | {med(ping):.3f} ms | {min(ping):.3f} / {max(ping):.3f} ms |")
    print(f"| empty drain / PING | {med(drain) / med(ping):.1f} | ({args.runs} runs of {args.drains} calls) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
