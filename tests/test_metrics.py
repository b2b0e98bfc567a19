"""`GET /api/v1/metrics`: Prometheus text read from the store and a real Redis broker (an agent's heartbeat
key as the agent's own Heartbeat writes it, messages on a capability's queue)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from controller.api import Tokens, create_app
from controller.config import Paths

USER, AGENT = "metrics-user", "metrics-agent"


@pytest.fixture
def broker_url(tmp_path):
    """A Redis of this test's own: the gauges count every agent and queue on the broker."""
    from controller.embedded import RedisServer

    server = RedisServer(tmp_path / "redis", tmp_path / "redis.log").start()
    yield server.url
    server.stop()


def _value(text: str, name: str, **labels) -> float | None:
    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return None


def _app(tmp_path, broker=None):
    paths = Paths.resolve(tmp_path / "fb")
    paths.run.mkdir(parents=True, exist_ok=True)
    return create_app(paths, paths.db_url(), broker, Tokens({USER}, {AGENT}), run_scheduler=False)


def test_metrics_need_a_token_and_count_jobs_and_records_without_a_broker(tmp_path, golden_record):
    app = _app(tmp_path)
    with TestClient(app) as api:
        assert api.get("/api/v1/metrics").status_code == 401
        store = app.state.fleetbench.store
        store.add_result(golden_record)
        r = api.get("/api/v1/metrics", headers={"Authorization": f"Bearer {AGENT}"})  # a scraper may use any token
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        text = r.text
    assert _value(text, "fleetbench_records_stored") == 1
    assert _value(text, "fleetbench_jobs", state="done") == 0 and _value(text, "fleetbench_jobs", state="pending") == 0
    assert "fleetbench_scheduler_tick_seconds_count" in text
    assert "fleetbench_queue_depth" not in text  # no broker: absent, not zero


def test_metrics_read_agents_queues_and_the_results_backlog_from_the_broker(tmp_path, broker_url):
    import redis

    from agent.presence import Heartbeat
    from protocol import RESULTS_KEY, AgentInventory, CapabilityInfo, HostFacts, queue_for, utc_now

    host = HostFacts(hostname="pi", cpu_model="arm", cpu_cores=4, ram_bytes=1, os="linux", python="3.11")
    cap = CapabilityInfo(name="litert:cpu", runtime="litert", runtime_version="2.3", device="cpu", device_name="arm")
    inv = AgentInventory(agent_id="pi-7", host=host, capabilities=(cap,), started_at=utc_now(), heartbeat_at=utc_now())
    Heartbeat(broker_url, inv).beat()  # the key a live agent keeps
    client = redis.Redis.from_url(broker_url)
    client.rpush(queue_for("litert:cpu"), b"m1", b"m2", b"m3")
    client.rpush(queue_for("litert:cpu") + "\x06\x166", b"m4")  # a message at priority 6
    client.rpush(RESULTS_KEY, b"{}", b"{}")
    app = _app(tmp_path, broker_url)
    with TestClient(app) as api:
        text = api.get("/api/v1/metrics", headers={"Authorization": f"Bearer {USER}"}).text
    assert _value(text, "fleetbench_agents_online", capability="litert:cpu") == 1
    assert _value(text, "fleetbench_queue_depth", capability="litert:cpu") == 4
    assert _value(text, "fleetbench_results_backlog") == 2


def test_the_scheduler_thread_times_its_ticks(tmp_path, broker_url):
    """A running sweep in the store: the API's scheduler thread ticks it and each pass lands in the histogram."""
    import time

    from controller.fleet.memory import MemoryFleet
    from tests.test_jobs import _sweep

    app = _app(tmp_path, broker_url)
    st = app.state.fleetbench
    fleet = MemoryFleet(st.store)
    fleet.add_agent("gone-agent", "litert:cpu")  # seen once, so the selector expands; not live on the broker
    _sweep(st.store, fleet, name="ticked")
    with TestClient(app) as api:
        st.start()
        try:
            deadline, count = time.monotonic() + 30, 0.0
            while count < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
                text = api.get("/api/v1/metrics", headers={"Authorization": f"Bearer {USER}"}).text
                count = _value(text, "fleetbench_scheduler_tick_seconds_count") or 0.0
        finally:
            st._stop.set()
    assert count >= 2 and _value(text, "fleetbench_scheduler_tick_seconds_sum") > 0
    assert _value(text, "fleetbench_jobs", state="waiting-for-device") == 1  # the tick moved it: no live agent


def test_a_database_outage_is_a_one_line_503(tmp_path, monkeypatch):
    from sqlalchemy.exc import OperationalError

    app = _app(tmp_path)
    store = app.state.fleetbench.store

    def down():
        raise OperationalError("SELECT", {}, Exception("connection refused by postgres://u:s3cret@db"))

    monkeypatch.setattr(store, "job_counts_by_state", down)
    with TestClient(app) as api:
        r = api.get("/api/v1/metrics", headers={"Authorization": f"Bearer {USER}"})
    assert r.status_code == 503 and r.json() == {"detail": "the database is unreachable; the controller's figures are back when it is"}
    assert "s3cret" not in r.text
