"""What an idle fleet's job polls cost the broker: N clients each asking for a job with Celery's `BRPOP`
(a 1 s wait, agent/cli.py's POLL_S) on an empty queue, as N idle agents do between jobs.

    .venv/bin/python bench/idle_polls.py [--clients 1000,10000] [--seconds 20]

For each N it starts a private redis-server (maxclients raised as docker-compose.yml does), runs
``redis-benchmark -c N ... BRPOP <empty queue> 1`` against it for about ``--seconds``, and reads the
server's CPU time from /proc before and after: the broker's share of one core that N idle agents' polls
take. redis-benchmark is C, so the clients cost little beside it; the run's own duration is printed so the
poll rate (N a second when every BRPOP waits its whole second) can be checked. Prints one markdown table;
copy it to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocol.proc import free_port  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def point(n: int, seconds: float, work: Path) -> dict:
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--maxclients", str(n + 100), "--dir", str(work)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True).stdout.strip() != "PONG":
            if time.monotonic() > deadline:
                raise SystemExit(f"error: redis-server on port {port} did not answer within 10 s")
            time.sleep(0.1)
        before, t0 = cpu_s(server.pid), time.perf_counter()
        bench = subprocess.run(["redis-benchmark", "-p", str(port), "-c", str(n), "-n", str(int(n * seconds)), "-q",
                                "BRPOP", "fb:idle-polls:empty", "1"], capture_output=True, text=True)  # fmt: skip
        wall, used = time.perf_counter() - t0, cpu_s(server.pid) - before
        if bench.returncode != 0:
            raise SystemExit(f"error: redis-benchmark failed: {(bench.stderr or bench.stdout).strip()[-300:]}")
        return {"clients": n, "polls": int(n * seconds), "seconds": round(wall, 1), "polls/s": round(n * seconds / wall),
                "redis CPU s": round(used, 2), "redis core %": round(100 * used / wall, 1)}  # fmt: skip
    finally:
        server.terminate()
        server.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", default="1000,10000", help="idle agents to stand for, comma-separated")
    p.add_argument("--seconds", type=float, default=20.0, help="how long each point polls")
    args = p.parse_args(argv)
    for tool in ("redis-server", "redis-benchmark", "redis-cli"):
        if shutil.which(tool) is None:
            print(f"error: {tool} is not installed: apt-get install redis-server redis-tools", file=sys.stderr)
            return 1
    work = Path(tempfile.mkdtemp(prefix="idle-polls-"))
    rows = [point(int(n), args.seconds, work) for n in args.clients.split(",") if n.strip()]
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:,}" for c in cols) + " |")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
