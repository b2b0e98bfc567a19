"""The fleet's presence at size: one sorted set and one hash in a real Redis, a mirror kept by changes, the
store written only when an inventory changes, and a tick that looks only at the jobs a change touches."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import time

import pytest
import redis as redis_mod
from sqlalchemy import event

from agent.presence import Heartbeat, stable
from controller.fleet.presence import FleetMirror, RedisPresence
from protocol import AgentInventory, CapabilityInfo, HostFacts, utc_now
from protocol.presence import BEAT_SCRIPT, FLEET_BEATS, FLEET_INVENTORIES, FLEET_KEYS, LEAVE_SCRIPT

_index = itertools.count(1)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from controller.embedded import RedisServer

    base = tmp_path_factory.mktemp("presence-redis")
    s = RedisServer(base / "data", base / "redis.log").start()
    yield s.url
    s.stop()


@pytest.fixture
def url(server):
    """A database of this test's own on the module's Redis, emptied first."""
    u = server.rsplit("/", 1)[0] + f"/{next(_index) % 16}"
    redis_mod.Redis.from_url(u).flushdb()
    return u


def inv(agent_id: str, *caps: str, machine: str = "x86_64") -> AgentInventory:
    host = HostFacts(hostname=f"host-{agent_id}", cpu_model="-", cpu_cores=1, ram_bytes=1, os="-", python="3", machine=machine)
    infos = tuple(CapabilityInfo(c, c.split(":")[0], "1", c.split(":")[1], c) for c in caps)
    return AgentInventory(agent_id=agent_id, host=host, capabilities=infos, started_at=utc_now(), heartbeat_at=utc_now())


def beat_many(client, inventories) -> None:
    script = client.register_script(BEAT_SCRIPT)
    pipe = client.pipeline(transaction=False)
    for i in inventories:
        script(keys=FLEET_KEYS, args=[i.agent_id, stable(i)], client=pipe)
    pipe.execute()


# ------------------------------------------------------------------ the mirror


def test_mirror_indexes_capabilities_and_logs_changes():
    m = FleetMirror(keep=4)
    assert m.apply("a", inv("a", "litert:cpu"))
    assert m.apply("b", inv("b", "litert:cpu", "openvino:MYRIAD"))
    g = m.generation
    assert m.offering("litert:cpu") == {"a", "b"} and m.offering("litert:cpu@x86_64") == {"a", "b"}
    assert not m.apply("a", inv("a", "litert:cpu"))  # the same offer again: no change, no generation
    assert m.generation == g
    assert m.apply("b", inv("b", "litert:cpu"))  # the stick was pulled
    assert m.apply("a", None)
    ch = m.changes_since(g)
    assert ch.left == {"b": {"openvino:MYRIAD", "openvino:MYRIAD@x86_64"}, "a": {"litert:cpu", "litert:cpu@x86_64"}}
    assert ch.joined == {}
    assert m.offering("openvino:MYRIAD") == set() and "openvino:MYRIAD" not in m.by_capability
    view = m.view()
    assert set(view.live) == {"b"} and "litert:cpu" in view.offered and "openvino:MYRIAD" not in view.offered
    assert m.view() is view  # made again only after a change
    for i in range(4):
        m.apply(f"c{i}", inv(f"c{i}", "litert:gpu"))
    assert m.changes_since(g) is None  # the log of 4 no longer reaches back: the reader looks at everything
    assert m.changes_since(m.generation - 1).joined == {"c3": {"litert:gpu", "litert:gpu@x86_64"}}
    snap = m.snapshot(m.generation - 1)
    assert snap.generation == m.generation and set(snap.changes.joined) == {"c3"} and "c3" in snap.view.live


def test_an_agent_that_offers_nothing_still_comes_and_goes():
    """Review of issue 22: its stick pulled (it offers nothing), then crashed: its leaving is still a change."""
    m = FleetMirror()
    m.apply("pi", inv("pi", "openvino:MYRIAD"))
    m.apply("pi", inv("pi"))  # offers nothing now, still live
    g = m.generation
    assert "pi" in m.view().live
    assert m.apply("pi", None)
    assert m.changes_since(g).left == {"pi": frozenset()} and "pi" not in m.view().live


# ------------------------------------------------------------------ Redis


def test_beats_sync_and_leave_on_a_real_redis(url):
    client = redis_mod.Redis.from_url(url)
    hb = Heartbeat(url, inv("pi-1", "litert:cpu", machine="aarch64"))
    assert hb.beat() is True  # joined
    assert hb.beat() is False  # the same inventory: only the score moves
    assert client.hlen(FLEET_INVENTORIES) == 1
    p = RedisPresence(client)
    m = p.sync()
    assert set(m.agents) == {"pi-1"} and m.offering("litert:cpu@aarch64") == {"pi-1"}
    beat_at = dt.datetime.fromisoformat(m.agents["pi-1"].heartbeat_at)
    assert abs((beat_at - p.now).total_seconds()) < 5  # the broker's clock, not the agent's
    assert p.take_changed().keys() == {"pi-1"} and p.take_changed() == {}
    hb.stop()  # a clean stop leaves at once
    assert set(p.sync().agents) == set() and p.take_changed() == {"pi-1": None}
    assert client.zcard(FLEET_BEATS) == 0


def test_silent_agents_expire_by_score(url):
    client = redis_mod.Redis.from_url(url)
    beat_many(client, [inv(f"a{i}", "litert:cpu") for i in range(5)])
    p = RedisPresence(client, ttl_s=1.0)
    assert len(p.sync().agents) == 5
    time.sleep(0.6)
    beat_many(client, [inv("a0", "litert:cpu")])
    time.sleep(0.6)
    g = p.mirror.generation
    assert set(p.sync().agents) == {"a0"}  # four missed their beats
    assert set(p.mirror.changes_since(g).left) == {"a1", "a2", "a3", "a4"}
    assert client.zcard(FLEET_BEATS) == 1 and client.hlen(FLEET_INVENTORIES) == 1
    other = RedisPresence(client, ttl_s=1.0)  # a second controller (or the CLI) sees the same fleet
    assert set(other.sync().agents) == {"a0"}


@pytest.mark.parametrize("n", [10, 2_000])
def test_a_sync_is_one_round_trip_whatever_the_fleet(url, n):
    client = redis_mod.Redis.from_url(url)
    beat_many(client, [inv(f"agent-{i:05d}", "litert:cpu" if i % 2 else "openvino:CPU") for i in range(n)])
    p = RedisPresence(client, batch=500)
    assert len(p.sync().agents) == n
    assert p.calls == 3  # the first: a sync, the fleet read whole, a sync for what changed meanwhile
    beat_many(client, [inv("agent-00003", "litert:cpu", "litert:gpu")])  # one agent changed
    sent, execute = [], client.execute_command
    client.execute_command = lambda *a, **kw: (sent.append(a[0]), execute(*a, **kw))[1]
    m = p.sync()
    assert p.calls == 1 and sent == ["EVALSHA"]  # one round trip, whatever the fleet's size
    assert m.offering("litert:gpu") == {"agent-00003"} and len(m.offering("openvino:CPU")) == n // 2


def test_a_broker_that_lost_its_data_is_read_again(url):
    client = redis_mod.Redis.from_url(url)
    beat_many(client, [inv("a", "litert:cpu"), inv("b", "litert:cpu")])
    p = RedisPresence(client)
    assert len(p.sync().agents) == 2
    client.flushdb()  # a restart without persistence
    beat_many(client, [inv("c", "openvino:CPU")])
    assert set(p.sync().agents) == {"c"}
    assert p.mirror.offering("litert:cpu") == set()


def test_a_controller_too_far_behind_reads_the_fleet_again(url):
    """The changes' marks are kept for KEEP_CHANGES changes; one behind that reads the fleet whole."""
    from protocol.presence import FLEET_CHANGES, FLEET_SEQ, KEEP_CHANGES

    client = redis_mod.Redis.from_url(url)
    beat_many(client, [inv("old", "litert:cpu"), inv("gone", "litert:cpu")])
    p = RedisPresence(client)
    assert set(p.sync().agents) == {"old", "gone"}
    client.register_script(LEAVE_SCRIPT)(keys=FLEET_KEYS, args=["gone"])
    client.set(FLEET_SEQ, 3 * KEEP_CHANGES)  # as if 300,000 changes happened since
    beat_many(client, [inv("new", "openvino:CPU")])
    fresh = RedisPresence(client)
    assert set(fresh.sync().agents) == {"old", "new"}  # a new controller: "old" changed long ago, read all the same
    assert {m.decode() for m in client.zrange(FLEET_CHANGES, 0, -1)} == {"new"}  # the old marks are forgotten
    assert set(p.sync().agents) == {"old", "new"} and p.calls == 3  # the one behind: sync, read whole, sync


def test_an_inventory_of_another_schema_is_not_live(url):
    client = redis_mod.Redis.from_url(url)
    beat_many(client, [inv("ok", "litert:cpu")])
    client.register_script(BEAT_SCRIPT)(keys=FLEET_KEYS, args=["future", '{"schema_version": 99}'])
    assert set(RedisPresence(client).sync().agents) == {"ok"}


# ------------------------------------------------------------------ the store


def test_the_store_is_written_when_an_inventory_changes_and_touched_in_batches(store, url):
    from controller.dispatch import Dispatcher

    statements: list[str] = []
    event.listen(store.engine, "before_cursor_execute",
                 lambda conn, cur, sql, params, ctx, many: statements.append(sql.split()[0].upper()))  # fmt: skip
    client = redis_mod.Redis.from_url(url)
    fleet = [inv(f"dev-{i:04d}", "litert:cpu") for i in range(1_200)]
    beat_many(client, fleet)
    d = Dispatcher(url)
    try:
        assert len(d.record_live_agents(store, touch_every_s=0)) == 1_200
        assert len(store.agents()) == 1_200
        statements.clear()
        beat_many(client, fleet)  # beats that change nothing
        assert len(d.record_live_agents(store, touch_every_s=3600)) == 1_200
        assert not {"INSERT", "UPDATE"} & set(statements)  # no SQL write per beat
        beat_many(client, [dataclasses.replace(fleet[7], capabilities=fleet[7].capabilities * 0 + (
            CapabilityInfo("litert:gpu", "litert", "1", "gpu", "gpu"),))])  # fmt: skip
        d.record_live_agents(store, touch_every_s=3600)
        assert statements.count("UPDATE") == 1 and "INSERT" not in statements
        row = next(r for r in store.agents() if r.agent_id == "dev-0007")
        assert [c["name"] for c in row.inventory["capabilities"]] == ["litert:gpu"]
        statements.clear()
        d.record_live_agents(store, touch_every_s=0)  # the periodic last-seen: 1,200 agents in 3 statements
        assert statements.count("UPDATE") == 3
    finally:
        d.close()
