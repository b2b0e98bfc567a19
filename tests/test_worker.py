"""A real agent worker process consuming jobs from a real Redis through Celery."""

import time
import uuid

import numpy as np
import pytest

from controller.artifacts import ArtifactStore
from controller.dispatch import Dispatcher, DispatchError
from controller.embedded import LocalAgent
from protocol import BENCHMARK_TASK, BenchmarkSettings, JobSpec, agent_queue, new_job_id
from tests.helpers import QUEUED, RUNNING, WAITING_FOR_DEVICE, wait_outcome

FAST = BenchmarkSettings(threads=1, warmup_iterations=5, min_iterations=100, min_duration_s=0.0, timeout_s=120)


@pytest.fixture(scope="module")
def agent(redis_url, tmp_path_factory):
    agent_id = f"test-agent-{uuid.uuid4().hex[:6]}"
    log = tmp_path_factory.mktemp("agent") / "agent.log"
    proc = LocalAgent(redis_url, agent_id, log, capabilities=("litert:cpu",)).start()
    dispatcher = Dispatcher(redis_url)
    try:
        proc.wait_ready(lambda: agent_id in dispatcher.agents_offering("litert:cpu"), timeout_s=60)
        yield proc
    finally:
        dispatcher.close()
        proc.stop()


@pytest.fixture
def dispatcher(redis_url):
    d = Dispatcher(redis_url)
    yield d
    d.close()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, tiny_model):
    store = ArtifactStore(tmp_path_factory.mktemp("artifacts"))
    return store, store.put_file(tiny_model["path"])


def _spec(model_ref, **kw):
    base = dict(
        job_id=new_job_id(), model_id="tiny", model_name="tiny", variant="tflite-fp32",
        capability="litert:cpu", artifact=model_ref, settings=FAST,
    )  # fmt: skip
    base.update(kw)
    return JobSpec(**base)


def test_agent_publishes_its_inventory(agent, dispatcher):
    inv = next(a for a in dispatcher.live_agents() if a.agent_id == agent.agent_id)
    cap = next(c for c in inv.capabilities if c.name == "litert:cpu")
    assert cap.runtime == "litert" and cap.runtime_version and cap.device_name
    assert inv.host.cpu_cores >= 1 and inv.host.python


def test_job_runs_through_celery_and_comes_back_as_a_record(agent, dispatcher, artifacts):
    _, model = artifacts
    spec = _spec(model)
    states = []
    outcome = wait_outcome(dispatcher, dispatcher.submit(spec), spec, on_state=states.append, check=agent.check_alive)
    assert outcome.ok, outcome.error
    r = outcome.record
    assert r.job_id == spec.job_id and r.agent_id == agent.agent_id
    assert r.stats.count >= 100 and r.stats.p50_ms > 0
    assert r.artifact_sha256 == model.sha256
    assert set(states) <= {QUEUED, RUNNING}


def test_bad_job_fails_with_its_reason_and_the_agent_keeps_serving(agent, dispatcher, artifacts, tmp_path):
    _, model = artifacts
    garbage = ArtifactStore(tmp_path).put_bytes(np.arange(100, dtype=np.uint8).tobytes(), "garbage.tflite")
    bad = _spec(garbage, variant="tflite-fp32")
    outcome = wait_outcome(dispatcher, dispatcher.submit(bad), bad, check=agent.check_alive)
    assert not outcome.ok and outcome.error_kind in ("load-failed", "crashed")
    assert "garbage.tflite" in outcome.error or "killed by" in outcome.error
    good = _spec(model)
    assert wait_outcome(dispatcher, dispatcher.submit(good), good, check=agent.check_alive).ok
    assert agent.alive()


def test_capability_nobody_offers_waits_for_a_device(agent, dispatcher, artifacts):
    _, model = artifacts
    spec = _spec(model, capability="openvino:MYRIAD", settings=BenchmarkSettings(timeout_s=1.0))
    states = []
    start = time.monotonic()
    with pytest.raises(DispatchError, match="is an agent with openvino:MYRIAD running"):
        wait_outcome(dispatcher, dispatcher.submit(spec), spec, on_state=states.append, grace_s=2.0)
    assert states == [WAITING_FOR_DEVICE]
    assert time.monotonic() - start < 30


@pytest.mark.parametrize("serve_a_job_first", [False, True], ids=["stopped-while-starting", "stopped-after-a-job"])
def test_stopped_agent_leaves_the_inventory(redis_url, dispatcher, tmp_path, artifacts, serve_a_job_first):
    agent_id = f"short-lived-{uuid.uuid4().hex[:6]}"
    a = LocalAgent(redis_url, agent_id, tmp_path / "a.log", capabilities=("litert:cpu",)).start()
    try:
        a.wait_ready(lambda: agent_id in dispatcher.agents_offering("litert:cpu"), timeout_s=60)
        if serve_a_job_first:  # pinned to this agent's own queue
            spec = _spec(artifacts[1])
            result = dispatcher.app.send_task(BENCHMARK_TASK, args=[spec.to_dict()], queue=agent_queue(agent_id))
            assert wait_outcome(dispatcher, result, spec, check=a.check_alive).agent_id == agent_id
    finally:
        a.stop()
    assert a.proc.returncode is not None
    # removed at once on a clean stop, not merely left to expire after HEARTBEAT_TTL_S
    assert agent_id not in [x.agent_id for x in dispatcher.live_agents()]


def test_dead_broker_gives_a_clear_error(artifacts):
    from protocol.proc import free_port

    d = Dispatcher(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(DispatchError, match="cannot reach the broker at redis://127.0.0.1"):
            d.agents_offering("litert:cpu")
        with pytest.raises(DispatchError, match="start Redis or pass the right --broker URL"):
            d.submit(_spec(artifacts[1]))
    finally:
        d.close()


def test_conversion_runs_on_a_converter_worker(redis_url, tmp_path, tiny_model):
    from controller.config import Paths
    from controller.convert import service
    from controller.embedded import LocalConverter
    from controller.store import Store

    paths = Paths.resolve(tmp_path / "fb")
    store = Store(paths.db_url())
    store.migrate()
    plan = service.plan(tiny_model["path"], ["tflite-fp32", "openvino-fp16"], store, ArtifactStore(paths.artifacts))
    converter = LocalConverter(redis_url, paths.root, tmp_path / "converter.log").start()
    d = Dispatcher(redis_url)
    events = []
    cut = tmp_path / "cut.onnx"  # no magic to check at planning: only the converter finds it corrupt
    cut.write_bytes(b"\x08\x07\x12\x04" + bytes(range(256)) * 2)
    bad_plan = service.plan(cut, ["openvino-fp32"], store, ArtifactStore(paths.artifacts))
    try:
        runner = lambda job, ev: d.convert(job, ev, check=converter.check_alive)  # noqa: E731
        (bad,) = service.execute(bad_plan, store, runner).outcomes
        assert bad.status == "failed" and "cut.onnx" in bad.error
        # the same worker goes on to the next job
        report = service.execute(plan, store, runner, events.append)
    finally:
        d.close()
        converter.stop()
        store.close()
    assert [o.status for o in report.outcomes] == ["converted", "converted"], [o.error for o in report.outcomes]
    done = [e["variant"] for e in events if e.get("event") == "done"]
    assert sorted(done) == ["openvino-fp16", "tflite-fp32"]
    assert ArtifactStore(paths.artifacts).get(report.outcome("openvino-fp16").artifact.sha256) is not None


def test_agent_config_file(tmp_path):
    import json
    import subprocess
    import sys

    cfg = tmp_path / "agent.json"
    cfg.write_text(json.dumps({"openvino_devices": ["HETERO:CPU"], "capabilities": ["openvino:HETERO:CPU"]}))
    r = subprocess.run([sys.executable, "-m", "agent", "--config", str(cfg), "--probe"], capture_output=True, text=True)
    assert r.returncode == 0 and "capability openvino:HETERO:CPU:" in r.stdout
    cfg.write_text(json.dumps({"brokr": "redis://x"}))
    r = subprocess.run([sys.executable, "-m", "agent", "--config", str(cfg), "--probe"], capture_output=True, text=True)
    assert r.returncode != 0 and "unknown key(s) brokr" in r.stderr


def test_fleet_lists_agents_online_and_offline(redis_url, agent, tmp_path):
    import subprocess
    import sys

    from controller.embedded import LocalAgent

    gone_id = f"gone-{uuid.uuid4().hex[:6]}"
    gone = LocalAgent(redis_url, gone_id, tmp_path / "gone.log", capabilities=("litert:cpu",)).start()
    d = Dispatcher(redis_url)
    try:
        gone.wait_ready(lambda: gone_id in d.agents_offering("litert:cpu"), timeout_s=60)
        cmd = [sys.executable, "-m", "controller.cli", "fleet", "--broker", redis_url, "--data-dir", str(tmp_path / "fb")]
        first = subprocess.run(cmd, capture_output=True, text=True, timeout=60)  # both online: both recorded
        gone.stop()
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    finally:
        gone.stop()
        d.close()
    assert first.returncode == 0 and first.stdout.count("online") >= 2, first.stdout + first.stderr
    lines = {ln.split("│")[1].strip(): ln for ln in second.stdout.splitlines() if ln.count("│") > 3 and ln.split("│")[1].strip()}
    assert agent.agent_id in lines, second.stdout
    assert "online" in lines[agent.agent_id] and "litert:cpu" in lines[agent.agent_id]
    assert "offline since" in lines[gone_id]


def test_agent_start_from_a_config_file_serves_a_delegate_through_celery(redis_url, dispatcher, artifacts, delegate_lib, tmp_path):
    """`fleetbench agent start --config` with an external delegate and an OpenVINO HETERO string."""
    import json
    import sys

    agent_id = f"cfg-{uuid.uuid4().hex[:6]}"
    marker = tmp_path / "prepare.log"
    cfg = tmp_path / "agent.json"
    cfg.write_text(json.dumps({
        "broker": redis_url, "agent_id": agent_id, "openvino_devices": ["HETERO:CPU"],
        "delegates": {"npu": {"path": str(delegate_lib), "options": {"marker": str(marker)}, "device_name": "Test NPU"}},
    }))  # fmt: skip

    class ConfiguredAgent(LocalAgent):
        def argv(self):
            return [sys.executable, "-m", "controller.cli", "agent", "start", "--config", str(cfg)]

    a = ConfiguredAgent(redis_url, agent_id, tmp_path / "agent.log").start()
    try:
        a.wait_ready(lambda: agent_id in dispatcher.agents_offering("litert:npu"), timeout_s=90)
        inv = next(x for x in dispatcher.live_agents() if x.agent_id == agent_id)
        names = {c.name: c for c in inv.capabilities}
        assert {"litert:cpu", "litert:npu", "openvino:CPU", "openvino:HETERO:CPU"} <= set(names)
        assert names["litert:npu"].device_name == "Test NPU"
        assert "INT8" in names["openvino:CPU"].precisions and "FP32" in names["litert:cpu"].precisions
        spec = _spec(artifacts[1], capability="litert:npu")
        outcome = wait_outcome(dispatcher, dispatcher.submit(spec), spec, check=a.check_alive)
    finally:
        a.stop()
    assert outcome.ok, outcome.error
    assert outcome.record.capability == "litert:npu" and outcome.record.agent_id == agent_id
    assert "prepare" in marker.read_text()


def test_an_agent_leaves_nothing_in_tmpdir_and_keeps_its_log_private(redis_url, dispatcher, artifacts, tmp_path, monkeypatch):
    """Finding 15: the fork server's folder (fleetbench-forkserver-*) goes when the agent stops on SIGTERM,
    after a real job; the agent's log is 0600."""
    import stat

    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))  # the agent and its children inherit it
    agent_id = f"tidy-{uuid.uuid4().hex[:6]}"
    a = LocalAgent(redis_url, agent_id, tmp_path / "agent.log", capabilities=("litert:cpu",)).start()
    try:
        a.wait_ready(lambda: agent_id in dispatcher.agents_offering("litert:cpu"), timeout_s=60)
        spec = _spec(artifacts[1])
        result = dispatcher.app.send_task(BENCHMARK_TASK, args=[spec.to_dict()], queue=agent_queue(agent_id))
        assert wait_outcome(dispatcher, result, spec, check=a.check_alive).ok
        assert list(tmpdir.glob("fleetbench-forkserver-*")), "the fork server should have a folder while it runs"
    finally:
        a.stop()  # SIGTERM
    assert a.proc.returncode is not None
    assert sorted(p.name for p in tmpdir.iterdir()) == [], "left behind in TMPDIR"
    assert stat.S_IMODE((tmp_path / "agent.log").stat().st_mode) == 0o600


def test_a_conversion_that_ends_between_two_polls_still_reports_its_reference_first(redis_url, tmp_path, tiny_model):
    """A sweep's jobs take the reference outputs known when their variant's "done" arrives. A conversion that
    finished before the controller's first poll (a loaded machine) used to report its variants without the
    reference, and the records came back without fidelity."""
    import numpy as np

    from controller.config import Paths
    from controller.convert import service
    from controller.dispatch import CONVERT_QUEUE, CONVERT_TASK, wait_conversion
    from controller.embedded import LocalConverter
    from controller.store import Store

    paths = Paths.resolve(tmp_path / "fb")
    store = Store(paths.db_url())
    store.migrate()
    np.savez(tmp_path / "d.npz", x=tiny_model["x"], y=tiny_model["y"])
    plan = service.plan(tiny_model["path"], ["openvino-fp32"], store, ArtifactStore(paths.artifacts),
                        dataset_path=tmp_path / "d.npz", n_calibration=4)  # fmt: skip
    assert plan.needs_reference
    converter = LocalConverter(redis_url, paths.root, tmp_path / "converter.log").start()
    d = Dispatcher(redis_url)
    events = []
    try:
        result = d.app.send_task(CONVERT_TASK, args=[service.job_for(plan)], queue=CONVERT_QUEUE)
        deadline = time.monotonic() + 300
        while not result.ready():  # the controller looks only once the conversion is over
            assert time.monotonic() < deadline and converter.alive()
            time.sleep(0.2)
        out = wait_conversion(d.app, result, events.append)
    finally:
        d.close()
        converter.stop()
        store.close()
    kinds = [e["event"] for e in events]
    assert out["reference"] and "reference" in kinds and "done" in kinds, events
    assert kinds.index("reference") < kinds.index("done")
    assert next(e for e in events if e["event"] == "reference")["artifact"]["sha256"] == out["reference"]["sha256"]
