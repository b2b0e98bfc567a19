"""What an idle fleet's job polls cost the broker: N clients each asking for a job with Celery's `BRPOP`
(agent/cli.py's POLL_S wait, 1 s) on an empty queue, as N idle agents do between jobs.

    .venv/bin/python bench/idle_polls.py [--clients 1000,10000] [--seconds 20]

For each N it starts a private redis-server (controller.embedded.RedisServer, maxclients raised as
docker-compose.yml does; N needs N open files here too, and the script says so when the limit is lower), runs
``redis-benchmark -c N ... BRPOP <empty queue> 1`` against it for about ``--seconds``, and reads the
server's CPU time (psutil) before and after: the broker's share of one core that N idle agents' polls
take. redis-benchmark is C, so the clients cost little beside it; the run's own duration is printed so the
poll rate (N a second when every BRPOP waits its whole second) can be checked. Prints one markdown table;
copy it to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.cli import POLL_S  # noqa: E402
from controller.embedded import RedisServer  # noqa: E402
from controller.errors import ServiceError  # noqa: E402


def cpu_s(proc: psutil.Process) -> float:
    """User + system CPU seconds of ``proc``, its threads' included."""
    t = proc.cpu_times()
    return t.user + t.system


def point(n: int, seconds: float, work: Path) -> dict:
    try:
        server = RedisServer(work / f"redis-{n}", work / f"redis-{n}.log", args=("--maxclients", str(n + 100))).start()
    except ServiceError as exc:
        raise SystemExit(f"error: {exc}") from None
    try:
        proc, polls = psutil.Process(server.proc.pid), int(n * seconds)
        before, t0 = cpu_s(proc), time.perf_counter()
        bench = subprocess.run(["redis-benchmark", "-p", str(server.port), "-c", str(n), "-n", str(polls), "-q",
                                "BRPOP", "fb:idle-polls:empty", f"{POLL_S:g}"], capture_output=True, text=True)  # fmt: skip
        wall, used = time.perf_counter() - t0, cpu_s(proc) - before
        if bench.returncode != 0:
            raise SystemExit(f"error: redis-benchmark failed: {(bench.stderr or bench.stdout).strip()[-300:]}")
        if wall < seconds * POLL_S * 0.9:  # every BRPOP waits its whole poll on an empty queue: faster is an error
            raise SystemExit(f"error: {polls:,} polls ended in {wall:.1f} s, under their {POLL_S:g} s waits: "
                             f"redis-benchmark said {bench.stdout.strip()[-200:]!r}")  # fmt: skip
        return {"clients": n, "polls": polls, "seconds": round(wall, 1), "polls/s": round(polls / wall),
                "Redis CPU s": round(used, 2), "Redis core %": round(100 * used / wall, 1)}  # fmt: skip
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", default="1000,10000", help="idle agents to stand for, comma-separated")
    p.add_argument("--seconds", type=float, default=20.0, help="how long each point polls")
    args = p.parse_args(argv)
    sizes = [int(n) for n in args.clients.split(",") if n.strip()]
    if not sizes or min(sizes) < 1 or args.seconds <= 0:
        print("error: --clients takes fleet sizes of 1 or more (1000,10000) and --seconds a time above 0",
              file=sys.stderr)  # fmt: skip
        return 2
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < max(sizes) + 200:
        print(f"error: {max(sizes):,} clients need {max(sizes) + 200:,} open files and the limit is {soft:,}: "
              f"run `ulimit -n {max(sizes) + 1000}` first", file=sys.stderr)  # fmt: skip
        return 2
    if shutil.which("redis-benchmark") is None:  # redis-server: controller.embedded finds it, or says how to get it
        print("error: redis-benchmark is not installed: apt-get install redis-tools", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="idle-polls-") as work:
        rows = [point(n, args.seconds, Path(work)) for n in sizes]
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:,}" for c in cols) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
