"""One controller interface: this machine's store (LocalController) and a real `fleetbench serve` over HTTP
(RemoteController) answer with the same dicts, and the CLI prints the same tables from either."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from controller.config import Paths
from controller.service import ControllerError, LocalController, RemoteController
from controller.store import Store
from protocol.proc import free_port
from tests.golden_demo import seed

TOKEN = "service-test-token"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A data dir holding the golden demo runs, and `fleetbench serve` on it (no broker)."""
    from tests.test_api import _wait_http

    paths = Paths.resolve(tmp_path_factory.mktemp("svc") / "fb")
    paths.run.mkdir(parents=True, exist_ok=True)
    store = Store(paths.db_url())
    store.migrate()
    seed(store)
    port = free_port()
    env = dict(os.environ, FLEETBENCH_API_TOKENS=TOKEN, FLEETBENCH_TOKEN=TOKEN, FLEETBENCH_DISABLE_GPU_PROBE="1")
    server = subprocess.Popen([sys.executable, "-m", "controller.cli", "serve", "--port", str(port), "--data-dir",
                               str(paths.root)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{url}/api/v1/health", server)
        yield paths, store, url, env
    finally:
        server.terminate()
        server.wait(timeout=20)
        store.close()


def test_local_and_remote_answer_with_the_same_views(served, monkeypatch):
    paths, store, url, _ = served
    monkeypatch.setenv("FLEETBENCH_TOKEN", TOKEN)
    local, remote = LocalController(store, live_agents=lambda: set()), RemoteController(url)
    sweeps = local.sweeps()
    assert sweeps and remote.sweeps() == sweeps
    ref = sweeps[0]["sweep_id"]
    view = local.sweep(ref)
    assert view["jobs"] and remote.sweep(ref) == view and remote.sweep("demo") == local.sweep("demo")
    assert remote.jobs(ref) == local.jobs(ref) == view["jobs"]
    assert remote.jobs(ref, "done") == local.jobs(ref, "done")
    records, rview = local.results(ref)
    assert records and remote.results(ref) == (records, rview) and rview["sweep_id"] == ref
    assert remote.results(limit=3) == local.results(limit=3)
    # the server has no broker: it lists every agent as not online; without a broker asked, unknown (None)
    assert [a["online"] for a in remote.fleet()] == [False] * len(local.fleet())
    assert {a["online"] for a in LocalController(store).fleet()} == {None}
    assert [dict(a, online=None) for a in remote.fleet()] == LocalController(store).fleet()


def test_both_say_what_is_missing_in_one_line(served, monkeypatch):
    _, store, url, _ = served
    monkeypatch.setenv("FLEETBENCH_TOKEN", TOKEN)
    for c in (LocalController(store), RemoteController(url)):
        with pytest.raises(ControllerError, match="nope") as exc:
            c.sweep("nope")
        assert "\n" not in str(exc.value)
    with pytest.raises(ControllerError) as local_exc:
        LocalController(store).cancel("nope")
    assert local_exc.value.status == 404
    monkeypatch.delenv("FLEETBENCH_TOKEN")
    with pytest.raises(ControllerError, match="FLEETBENCH_TOKEN"):
        RemoteController(url)


@pytest.mark.parametrize("argv", [["status"], ["status", "demo"], ["results", "demo"], ["fleet"]],
                         ids=lambda a: " ".join(a))  # fmt: skip
def test_the_cli_prints_the_same_table_from_either(served, argv):
    paths, _, url, env = served
    env = dict(env, COLUMNS="120")

    def run(*extra):
        r = subprocess.run([sys.executable, "-m", "controller.cli", *argv, *extra], env=env, capture_output=True,
                           text=True, timeout=120)  # fmt: skip
        assert r.returncode == 0, r.stderr
        return r.stdout.splitlines()

    here, there = run("--data-dir", str(paths.root)), run("--controller", url)
    assert len(here) > 3
    if argv == ["fleet"]:  # the title says where it came from, and the API (no broker) knows the agents are offline
        assert here[0].startswith("Fleet (as last seen") and there[0].rstrip() == f"Fleet of {url}"
        assert "unknown" in "\n".join(here) and "offline" in "\n".join(there)
        return
    assert here == there


def test_cancel_with_a_broker_fences_the_jobs_there(tmp_path, redis_url):
    """`fleetbench sweep --cancel NAME --broker URL` cancels in the store and sets each job's fence to 0 on the
    broker, so an agent that still gets one of its messages does not run it."""
    import redis as redis_mod

    from controller.fleet.memory import MemoryFleet
    from protocol import FENCE_PREFIX
    from tests.test_jobs import _sweep

    paths = Paths.resolve(tmp_path / "fb")
    store = Store(paths.db_url())
    store.migrate()
    fleet = MemoryFleet(store)
    fleet.add_agent("a1", "litert:cpu")
    _, sweep_id = _sweep(store, fleet, name="to-fence", n_threads=2)
    jobs = [j.job_id for j in store.jobs(sweep_id)]
    store.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETBENCH_")}
    r = subprocess.run([sys.executable, "-m", "controller.cli", "sweep", "--cancel", "to-fence", "--broker", redis_url,
                        "--data-dir", str(paths.root)], env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0 and f"sweep to-fence ({sweep_id}) cancelled: 2 unfinished job(s)" in r.stdout, r.stderr
    client = redis_mod.Redis.from_url(redis_url)
    assert [client.get(FENCE_PREFIX + j) for j in jobs] == [b"0", b"0"]
    again = subprocess.run([sys.executable, "-m", "controller.cli", "sweep", "--cancel", "to-fence", "--broker", redis_url,
                            "--data-dir", str(paths.root)], env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert again.returncode == 2 and "cancelled already" in again.stderr and "Traceback" not in again.stderr
