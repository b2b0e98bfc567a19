"""Agents on separate network hosts: their own network namespaces, veth links and addresses.

One agent's link is cut for longer than the broker's visibility timeout while
it runs a job, then restored: the job runs again on the other agent, the late
result is kept as superseded, the redelivered message is not run again, and
exactly one record is stored.
"""

import os
import subprocess
import time
import uuid

import pytest

from controller.artifacts import ArtifactStore
from controller.dispatch import Dispatcher
from controller.embedded import LocalAgent, RedisServer
from controller.store.jobs import DONE, RUNNING
from controller.sweeps import ModelVariants, Scheduler, SweepSpec
from protocol import STARTS_PREFIX, BenchmarkSettings

pytestmark = pytest.mark.slow

VISIBILITY_S = 20


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


class Host:
    """A network namespace joined to this host by a veth pair: 10.77.<n>.2 there, 10.77.<n>.1 here."""

    def __init__(self, n: int):
        tag = f"{os.getpid() % 10000}{n}"
        self.ns, self.here, self.there = f"fbns{tag}", f"fbh{tag}", f"fbn{tag}"
        self.host_ip, self.ns_ip = f"10.77.{n}.1", f"10.77.{n}.2"

    def create(self) -> "Host":
        _ip("netns", "add", self.ns)
        _ip("link", "add", self.here, "type", "veth", "peer", "name", self.there)
        _ip("link", "set", self.there, "netns", self.ns)
        _ip("addr", "add", f"{self.host_ip}/24", "dev", self.here)
        _ip("link", "set", self.here, "up")
        _ip("-n", self.ns, "addr", "add", f"{self.ns_ip}/24", "dev", self.there)
        _ip("-n", self.ns, "link", "set", self.there, "up")
        _ip("-n", self.ns, "link", "set", "lo", "up")
        return self

    def cut(self) -> None:
        _ip("link", "set", self.here, "down")

    def restore(self) -> None:
        _ip("link", "set", self.here, "up")

    def destroy(self) -> None:
        for args in (("link", "del", self.here), ("netns", "del", self.ns)):
            try:
                _ip(*args)
            except subprocess.CalledProcessError:
                pass


class NetnsAgent(LocalAgent):
    def __init__(self, host: Host, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.host = host

    def argv(self):
        return ["ip", "netns", "exec", self.host.ns, *super().argv()]


@pytest.fixture
def hosts():
    made = []
    try:
        for n in (1, 2):
            made.append(Host(n).create())
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        for h in made:
            h.destroy()
        why = f"cannot make network namespaces here ({getattr(exc, 'stderr', b'') or exc}); needs root or CAP_NET_ADMIN and iproute2"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    yield made
    for h in made:
        h.destroy()


def test_cut_link_longer_than_the_visibility_timeout_loses_and_duplicates_nothing(sqlite_store, hosts, tmp_path, tiny_model):
    store = sqlite_store
    broker = RedisServer(tmp_path / "redis", tmp_path / "redis.log", bind=tuple(h.host_ip for h in hosts)).start()
    d = Dispatcher(broker.url)
    sched = Scheduler.on_broker(store, d)
    agents = [
        NetnsAgent(h, broker.url_on(h.host_ip), f"{h.ns}-{uuid.uuid4().hex[:4]}", tmp_path / f"{h.ns}.log", ("litert:cpu",),
                   extra_args=("--visibility-timeout", str(VISIBILITY_S), "--job-time-limit", "10"))
        for h in hosts
    ]  # fmt: skip
    try:
        for a in agents:
            a.start()
        for a in agents:
            a.wait_ready(lambda a=a: a.agent_id in {x.agent_id for x in d.live_agents()}, timeout_s=90)
        for a in agents:  # each talks to Redis from its own address
            assert a.host.ns_ip in _clients(d)
        art = ArtifactStore(tmp_path / "artifacts").put_file(tiny_model["path"])
        spec = SweepSpec(name="netns", models=[], variants=["tflite-fp32"], devices=["litert:cpu"], expire_after_s=300,
                         # ~4.5 s on any machine: a fixed-length throughput phase (sampling alone can hit its
                         # max_iterations cap in 0.3 s on this tiny model when the machine is idle)
                         settings=[BenchmarkSettings(threads=1, min_iterations=100, min_duration_s=0.5, throughput_requests=1,
                                                     throughput_duration_s=4.0, timeout_s=9)])  # fmt: skip
        sweep_id = sched.submit(spec, [ModelVariants("m", "tiny", None, {"tflite-fp32": (art, None)}, [])])
        _until(lambda: sched.tick(sweep_id).get(RUNNING) == 1, 60)
        (job,) = store.jobs(sweep_id)
        cut = next(a for a in agents if a.agent_id == job.agent_id)
        other = next(a for a in agents if a is not cut)
        cut.host.cut()
        t_cut = time.monotonic()
        # its heartbeat stops; the job runs again on the other host
        _until(lambda: sched.tick(sweep_id) == {DONE: 1}, 90)
        time.sleep(max(0.0, VISIBILITY_S + 8 - (time.monotonic() - t_cut)))  # longer than the visibility timeout
        cut.host.restore()
        # the cut agent relays its (now late) result; the message it never acknowledged comes back, fenced off
        _until(lambda: (sched.tick(sweep_id), store.count_superseded(job.job_id))[1] == 1, 90)
        time.sleep(VISIBILITY_S + 5)
        sched.tick(sweep_id)
        starts = [int(d.redis.get(f"{STARTS_PREFIX}{job.job_id}.{n}") or 0) for n in (1, 2)]
    finally:
        for a in agents:
            a.stop()
        d.close()
        broker.stop()
    (job,) = store.jobs(sweep_id)
    (record,) = store.sweep_results(sweep_id)
    assert job.state == DONE and job.attempt == 2 and record.attempt == 2 and record.agent_id == other.agent_id
    assert store.count_results() == 1 and store.count_superseded(job.job_id) == 1
    assert starts == [1, 1], "each attempt ran once: the redelivered message was not run again"


def _clients(d) -> set[str]:
    return {c["addr"].rsplit(":", 1)[0] for c in d.redis.client_list()}


def _until(pred, timeout_s):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.5)
    raise AssertionError(f"not reached within {timeout_s} s")
