"""Issue 22's starting point: what today's presence path costs per tick at N agents, before it is rebuilt.

    .venv/bin/python bench/presence_baseline.py [--redis redis://127.0.0.1:6379/13] [--sizes 10,100,1000,10000]

For each N it writes N real AgentInventory heartbeats (as agent/presence.py does: one SET with a TTL per agent,
a spread of capabilities) into a Redis database of its own (emptied first), then times, median of 5:
- ``Dispatcher.live_agents()`` (SCAN over fleetbench:agent:*, one GET per agent);
- the scheduler's fleet view (``jobs.FleetView`` of ``offered(inv)`` for every live agent, as ``Scheduler.tick``);
- ``Dispatcher.record_live_agents(store)`` on SQLite (one SQL write per agent: what ``fleetbench serve`` does
  every 10 s);
- one beat of every agent (N SETs, pipelined 1,000 at a time here; each real agent sends its own);
and reads Redis's used memory per agent and the commands each live-agents call sends. Prints one table.

The first step of issue 22: the figures it set out to beat. Measured on 2026-12-07
(this 2-core machine, the local Redis 7.0, nothing else running), from
``--sizes 10,100,1000`` and ``--sizes 10000``:

| agents | live_agents() ms | fleet view ms | record_live_agents (SQLite) ms | N beats, pipelined ms | Redis bytes/agent | commands per live_agents() |
|---|---|---|---|---|---|---|
| 10 | 0.9 | 1.0 | 3 | 0.2 | 3,170 | 14 |
| 100 | 9.3 | 9.5 | 28 | 0.9 | 716 | 104 |
| 1,000 | 94.1 | 98.3 | 263 | 7.9 | 713 | 1,006 |
| 10,000 | 1,011.9 | 1,010.5 | 2,630 | 78.4 | 722 | 10,023 |

So today the presence read alone is linear: about 0.1 ms and one Redis command per agent per tick (1 s at
10,000, against issue 22's 50 ms tick target, and 1,000x the 10-agent figure against its 3x), and
``fleetbench serve`` writes every agent to SQL every 10 s (2.6 s a round at 10,000 on SQLite).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis  # noqa: E402

from controller import jobs  # noqa: E402
from controller.dispatch import Dispatcher  # noqa: E402
from controller.store import Store  # noqa: E402
from protocol import AGENT_KEY_PREFIX, HEARTBEAT_TTL_S, AgentInventory, CapabilityInfo, HostFacts, utc_now  # noqa: E402
from protocol.machines import offered  # noqa: E402

CAPS = ["litert:cpu", "openvino:CPU", "litert:gpu", "openvino:MYRIAD", "tflite:cpu", "openvino:GPU", "openvino:NPU"]


def inventory(i: int) -> AgentInventory:
    names = [CAPS[i % len(CAPS)], CAPS[(i * 7 + 1) % len(CAPS)]] if i % 3 else [CAPS[0]]
    caps = tuple(CapabilityInfo(name=n, runtime=n.split(":")[0], runtime_version="2.3.0", device=n.split(":")[1],
                                device_name=f"device class {i % 17}", precisions=("FP32", "FP16")) for n in dict.fromkeys(names))  # fmt: skip
    host = HostFacts(hostname=f"host-{i:05d}", cpu_model="Cortex-A72", cpu_cores=4, ram_bytes=4 << 30, os="Linux",
                     python="3.11.2", machine="aarch64" if i % 2 else "x86_64")  # fmt: skip
    now = utc_now()
    return AgentInventory(agent_id=f"sim-{i:05d}", host=host, capabilities=caps, started_at=now, heartbeat_at=now)


def median_s(fn, runs: int = 5) -> float:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--redis", default="redis://127.0.0.1:6379/13")
    p.add_argument("--sizes", default="10,100,1000,10000")
    args = p.parse_args(argv)
    r = redis.Redis.from_url(args.redis)
    rows = []
    for n in [int(x) for x in args.sizes.split(",")]:
        r.flushdb()
        base = r.info("memory")["used_memory"]
        payloads = [(AGENT_KEY_PREFIX + inv.agent_id, inv.to_json()) for inv in map(inventory, range(n))]

        def beat_all():
            pipe = r.pipeline(transaction=False)
            for i, (key, value) in enumerate(payloads, 1):
                pipe.set(key, value, ex=HEARTBEAT_TTL_S * 20)  # long TTL: the bench must not see them expire
                if i % 1000 == 0:
                    pipe.execute()
            pipe.execute()

        beat = median_s(beat_all, 3)
        per_agent = (r.info("memory")["used_memory"] - base) / n
        d = Dispatcher(args.redis)
        before = r.info("commandstats")
        d.live_agents()
        after = r.info("commandstats")
        calls = sum(after[k]["calls"] - before.get(k, {"calls": 0})["calls"] for k in after)
        live = median_s(d.live_agents)
        view = median_s(lambda: jobs.FleetView({inv.agent_id: offered(inv) for inv in d.live_agents()}))
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(f"sqlite:///{Path(tmp) / 'fb.db'}")
            store.migrate()
            record = median_s(lambda: d.record_live_agents(store), 3)
            store.close()
        d.close()
        rows.append((n, live * 1e3, view * 1e3, record * 1e3, beat * 1e3, per_agent, calls))
        print(f"n={n} done", file=sys.stderr)
    r.flushdb()
    print("| agents | live_agents() ms | fleet view ms | record_live_agents (SQLite) ms | N beats, pipelined ms "
          "| Redis bytes/agent | commands per live_agents() |")
    print("|---|---|---|---|---|---|---|")
    for n, live, view, record, beat, mem, calls in rows:
        print(f"| {n:,} | {live:,.1f} | {view:,.1f} | {record:,.0f} | {beat:,.1f} | {mem:,.0f} | {calls:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
