"""Presence at N agents: what a tick and the store pay for the live agents (issue 22), against the same
figures of the presence it replaced.

    .venv/bin/python bench/presence.py [--redis redis://127.0.0.1:6379/13] [--sizes 10,100,1000,10000]

For each N it beats N real AgentInventory heartbeats (protocol/presence.py's BEAT_SCRIPT, a spread of
capabilities) into a Redis database of its own (emptied first), then times, median of 5:
- a controller's first sync (it catches up on the whole fleet: once per process);
- a steady sync (``RedisPresence.sync()``: what every tick pays), and one after 1% of the agents changed;
- the scheduler's fleet view (``FleetMirror.view()``) after that change;
- ``Dispatcher.record_live_agents(store)`` on SQLite with nothing changed, and with the last-seen batch due
  (what ``fleetbench serve`` does every 10 s);
- one beat of every agent (N EVALSHAs, pipelined 1,000 at a time here; each real agent sends its own);
and reads Redis's used memory per agent and the round trips of a steady sync. Prints one table.

The presence before issue 22 (one key per agent, SCAN + one GET each, every agent written to SQL every
10 s) measured with this script's first version (``git show d8190b2:bench/presence_baseline.py``), on
2026-12-07 on this 2-core machine and the local Redis 7.0:

| agents | live_agents() ms | fleet view ms | record_live_agents (SQLite) ms | N beats, pipelined ms | Redis bytes/agent | commands per live_agents() |
|---|---|---|---|---|---|---|
| 10 | 0.9 | 1.0 | 3 | 0.2 | 3,170 | 14 |
| 100 | 9.3 | 9.5 | 28 | 0.9 | 716 | 104 |
| 1,000 | 94.1 | 98.3 | 263 | 7.9 | 713 | 1,006 |
| 10,000 | 1,011.9 | 1,010.5 | 2,630 | 78.4 | 722 | 10,023 |
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis  # noqa: E402

from agent.presence import stable  # noqa: E402
from controller.dispatch import Dispatcher  # noqa: E402
from controller.fleet.presence import RedisPresence  # noqa: E402
from controller.store import Store  # noqa: E402
from protocol import AgentInventory, CapabilityInfo, HostFacts, utc_now  # noqa: E402
from protocol.presence import BEAT_SCRIPT, FLEET_KEYS  # noqa: E402

CAPS = ["litert:cpu", "openvino:CPU", "litert:gpu", "openvino:MYRIAD", "tflite:cpu", "openvino:GPU", "openvino:NPU"]


def inventory(i: int) -> AgentInventory:
    names = [CAPS[i % len(CAPS)], CAPS[(i * 7 + 1) % len(CAPS)]] if i % 3 else [CAPS[0]]
    caps = tuple(CapabilityInfo(name=n, runtime=n.split(":")[0], runtime_version="2.3.0", device=n.split(":")[1],
                                device_name=f"device class {i % 17}", precisions=("FP32", "FP16")) for n in dict.fromkeys(names))  # fmt: skip
    host = HostFacts(hostname=f"host-{i:05d}", cpu_model="Cortex-A72", cpu_cores=4, ram_bytes=4 << 30, os="Linux",
                     python="3.11.2", machine="aarch64" if i % 2 else "x86_64")  # fmt: skip
    now = utc_now()
    return AgentInventory(agent_id=f"sim-{i:05d}", host=host, capabilities=caps, started_at=now, heartbeat_at=now)


def median_s(fn, runs: int = 5, before=lambda: None) -> float:
    out = []
    for _ in range(runs):
        before()
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
    script = r.register_script(BEAT_SCRIPT)
    rows = []
    for n in [int(x) for x in args.sizes.split(",")]:
        r.flushdb()
        base = r.info("memory")["used_memory"]
        fleet = [inventory(i) for i in range(n)]
        payloads = [(inv.agent_id, stable(inv)) for inv in fleet]

        def beat(items):
            pipe = r.pipeline(transaction=False)
            for i, (agent_id, payload) in enumerate(items, 1):
                script(keys=FLEET_KEYS, args=[agent_id, payload], client=pipe)
                if i % 1000 == 0:
                    pipe.execute()
            pipe.execute()

        beat(payloads)
        beats = median_s(lambda: beat(payloads), 3)
        per_agent = (r.info("memory")["used_memory"] - base) / n
        first = median_s(lambda: RedisPresence(r).sync(), 3)
        presence = RedisPresence(r)
        presence.sync()
        steady = median_s(presence.sync)
        trips = presence.calls
        k = max(1, n // 100)
        flip = {"i": 0}

        def change():  # 1% of the agents come back with one capability fewer, or all of them again
            flip["i"] += 1
            items = [(inv.agent_id, stable(dataclasses.replace(inv, capabilities=inv.capabilities[: 1 + flip["i"] % 2])))
                     for inv in fleet[:k]]  # fmt: skip
            beat(items)

        changed = median_s(presence.sync, before=change)
        view = median_s(lambda: presence.mirror.view(), before=lambda: (change(), presence.sync()))
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(f"sqlite:///{Path(tmp) / 'fb.db'}")
            store.migrate()
            d = Dispatcher(args.redis)
            d.record_live_agents(store)  # the first: every inventory is new
            record = median_s(lambda: d.record_live_agents(store, touch_every_s=3600), 3)
            touch = median_s(lambda: d.record_live_agents(store, touch_every_s=0), 3)
            d.close()
            store.close()
        rows.append((n, first * 1e3, steady * 1e3, trips, changed * 1e3, view * 1e3, record * 1e3, touch * 1e3,
                     beats * 1e3, per_agent))  # fmt: skip
        print(f"n={n} done", file=sys.stderr)
    r.flushdb()
    print("| agents | first sync ms | sync ms | round trips per sync | sync after 1% changed ms | fleet view ms "
          "| record_live_agents, no change (SQLite) ms | ... with the last-seen batch ms | N beats, pipelined ms "
          "| Redis bytes/agent |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n, first, steady, trips, changed, view, record, touch, beats, mem in rows:
        print(f"| {n:,} | {first:,.1f} | {steady:,.2f} | {trips} | {changed:,.2f} | {view:,.2f} | {record:,.1f} "
              f"| {touch:,.1f} | {beats:,.1f} | {mem:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
