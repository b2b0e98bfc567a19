"""Jobs in a child process: real LiteRT runs, and failures that never take the agent down."""

import sys

import numpy as np
import pytest

from agent.runner import run_job
from controller.artifacts import ArtifactStore
from protocol import ArtifactRef, BenchmarkSettings, JobSpec

FAST = BenchmarkSettings(threads=1, warmup_iterations=5, min_iterations=700, min_duration_s=0.0, timeout_s=120)


def _npz(x, y):
    import io

    buf = io.BytesIO()
    np.savez(buf, x=x, y=y)
    return buf.getvalue()


@pytest.fixture
def spec(tmp_path, tiny_model):
    store = ArtifactStore(tmp_path / "artifacts")
    model = store.put_file(tiny_model["path"])
    data = store.put_bytes(_npz(tiny_model["x"], tiny_model["y"]), "tiny.npz")
    ref = store.put_bytes(_ref_npz(tiny_model["expected"]), "reference.npz")
    return JobSpec(
        job_id="job-1", model_id="m1", model_name="tiny", variant="tflite-fp32", capability="litert:cpu",
        artifact=model, dataset=data, reference=ref, settings=FAST,
    )  # fmt: skip


def _ref_npz(outputs):
    import io

    buf = io.BytesIO()
    np.savez(buf, outputs=outputs)
    return buf.getvalue()


def _with(spec, **kw):
    d = spec.to_dict()
    d.update(kw)
    return d


def test_real_benchmark_in_a_child_process(spec):
    outcome = run_job(spec.to_dict(), "agent-t")
    assert outcome.ok, outcome.error
    r = outcome.record
    r.check_consistent()
    assert (r.job_id, r.attempt, r.agent_id, r.capability, r.runtime) == ("job-1", 1, "agent-t", "litert:cpu", "litert")
    assert r.stats.count >= 700 and len(r.samples_ns) == r.stats.count
    assert r.validity.valid, r.validity.reasons
    assert 0 < r.stats.min_ms <= r.stats.p50_ms <= r.stats.p90_ms <= r.stats.p99_ms <= r.stats.max_ms
    assert r.stats.load_ms > 0 and r.stats.first_inference_ms > 0
    # labels are Keras's own predictions: LiteRT must agree on every one
    assert r.accuracy_top1 == 1.0 and r.accuracy_samples == 12
    assert r.model_size_bytes == spec.artifact.size_bytes
    assert r.peak_rss_bytes > 10 * 2**20
    assert r.host.cpu_cores >= 1 and r.host.ram_bytes > 0
    assert r.settings == FAST and r.timer == "perf_counter_ns"
    # the fp32 variant follows Keras's own outputs (the reference) on the device
    f = r.fidelity
    assert f.samples == 12 and f.top1_agreement == 1.0 and f.max_abs_error < 1e-4 and f.mean_cosine > 0.99999


def test_fidelity_reports_a_variant_that_drifts(spec, tmp_path, tiny_model):
    store = ArtifactStore(tmp_path / "artifacts")
    shifted = tiny_model["expected"][:, ::-1].copy()  # a "reference" whose classes are reversed
    ref = store.put_bytes(_ref_npz(shifted), "shifted.npz")
    f = run_job(_with(spec, reference=ref.to_dict()), "a").record.fidelity
    assert f.max_abs_error > 0.01 and f.mean_cosine < 0.9999
    assert f.top1_agreement == pytest.approx(float((tiny_model["expected"].argmax(1) == shifted.argmax(1)).mean()))


def test_reference_of_the_wrong_length_is_refused(spec, tmp_path, tiny_model):
    store = ArtifactStore(tmp_path / "artifacts")
    ref = store.put_bytes(_ref_npz(tiny_model["expected"][:5]), "short.npz")
    outcome = run_job(_with(spec, reference=ref.to_dict()), "a")
    assert not outcome.ok and outcome.error_kind == "bad-dataset" and "5 rows but the data set has 12" in outcome.error


def test_too_few_samples_are_marked_invalid_with_reasons(spec):
    few = _with(spec, settings=BenchmarkSettings(min_iterations=70, min_duration_s=0.0, max_iterations=70).to_dict())
    r = run_job(few, "a").record
    assert not r.validity.valid
    assert any(reason.startswith("p99 needs at least 662") for reason in r.validity.reasons)
    assert not any(reason.startswith("p90") for reason in r.validity.reasons)  # 70 >= 64


def test_artifact_with_wrong_sha256_is_never_run(spec, tmp_path):
    path = tmp_path / "artifacts" / spec.artifact.sha256[:2] / spec.artifact.sha256
    path.chmod(0o644)
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")  # one byte changed after conversion
    outcome = run_job(spec.to_dict(), "a")
    assert not outcome.ok and outcome.error_kind == "bad-artifact"
    assert "sha256" in outcome.error and "not run" in outcome.error


def test_truncated_model_fails_cleanly(spec, tmp_path, tiny_model):
    store = ArtifactStore(tmp_path / "artifacts")
    half = store.put_bytes(tiny_model["path"].read_bytes()[:500], "truncated.tflite")
    outcome = run_job(_with(spec, artifact=half.to_dict()), "a")
    assert not outcome.ok
    assert outcome.error_kind in ("load-failed", "crashed")
    assert "truncated.tflite" in outcome.error or "killed by" in outcome.error


def test_segfaulting_child_fails_the_job_not_the_agent(spec):
    crash = [sys.executable, "-c", "import ctypes; ctypes.string_at(0)"]
    outcome = run_job(spec.to_dict(), "a", child_argv=crash)
    assert not outcome.ok and outcome.error_kind == "crashed"
    assert "SIGSEGV" in outcome.error and "the agent itself is fine" in outcome.error
    # and the same process runs the next job normally
    assert run_job(spec.to_dict(), "a").ok


def test_hanging_child_is_killed_at_the_timeout(spec):
    hang = [sys.executable, "-c", "import time; time.sleep(60)"]
    d = _with(spec, settings=BenchmarkSettings(timeout_s=1.0).to_dict())
    outcome = run_job(d, "a", child_argv=hang)
    assert not outcome.ok and outcome.error_kind == "timeout"
    assert "timeout_s=1" in outcome.error


def test_child_exiting_without_outcome_is_reported(spec):
    outcome = run_job(spec.to_dict(), "a", child_argv=[sys.executable, "-c", "import sys; print('oops', file=sys.stderr); sys.exit(3)"])
    assert not outcome.ok and "exited with code 3" in outcome.error and "oops" in outcome.error


@pytest.mark.parametrize(
    "mutate,kind,text",
    [
        (lambda d: d.pop("artifact"), "bad-spec", "missing field 'artifact'"),
        (lambda d: d.__setitem__("capability", "litert"), "bad-spec", "<runtime>:<device>"),
        (lambda d: d.__setitem__("capability", "tensorrt:gpu"), "unsupported-device", "unknown runtime"),
        (lambda d: d["settings"].__setitem__("min_iterations", 0), "bad-spec", "min_iterations"),
    ],
)
def test_bad_specs_fail_with_a_reason(spec, mutate, kind, text):
    d = spec.to_dict()
    mutate(d)
    outcome = run_job(d, "a")
    assert not outcome.ok and outcome.error_kind == kind and text in outcome.error


def test_missing_dataset_file_is_reported(spec):
    gone = ArtifactRef(sha256="0" * 64, uri="file:///nonexistent/data.npz", size_bytes=1, filename="data.npz")
    outcome = run_job(_with(spec, dataset=gone.to_dict()), "a")
    assert not outcome.ok and outcome.error_kind == "bad-artifact" and "data.npz" in outcome.error


def test_throughput_phase_with_several_interpreters(spec):
    d = _with(spec, settings=BenchmarkSettings(min_iterations=100, min_duration_s=0.0, throughput_requests=2,
                                               throughput_duration_s=0.5).to_dict())  # fmt: skip
    r = run_job(d, "a").record
    t = r.throughput
    assert t.mode == "litert-interpreters" and t.requests == 2
    assert t.completed > 100 and 0.5 <= t.elapsed_s < 2.0 and t.ips == pytest.approx(t.completed / t.elapsed_s)


def test_the_fork_server_imports_openvino_without_its_telemetry_thread():
    """OpenVINO's import sends telemetry from a thread pool unless its telemetry package is missing;
    the fork server must fork with no such thread (a child forked beside it can deadlock), and an
    air-gapped agent must not try to call home. CI=true would hide it (OpenVINO skips telemetry in CI)."""
    import os
    import subprocess
    import sys

    code = ("import threading, agent.child as c; c._preload(); import openvino; "
            "print(sorted(t.name for t in threading.enumerate()))")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['MainThread']"


def test_the_fork_server_runs_jobs_back_to_back_in_fresh_processes_and_survives_a_timeout(spec, tmp_path):
    """Issue 16's lean agent path: each job runs in a process forked ahead of it (a spare waits between
    jobs), the agent goes on once the outcome is written (the end of the child is heard on the next
    job), and a job killed at its timeout leaves the fork server in step for the next one."""
    import time

    import psutil

    from agent.runner import ForkServer

    fs = ForkServer().start()
    try:
        for i in range(3):
            outcome = run_job(_with(spec, job_id=f"job-{i}"), "agent-t", forkserver=fs)
            assert outcome.ok, outcome.error
            assert outcome.record.job_id == f"job-{i}" and outcome.record.stats.count >= 700
        assert fs._reaping and "exit" in fs._read(10.0)  # the last job's end, told after its outcome: reaped
        fs._reaping = False
        server = psutil.Process(fs.proc.pid)
        deadline = time.monotonic() + 10
        while not server.children() and time.monotonic() < deadline:
            time.sleep(0.01)
        (spare,) = server.children()  # the next job's process, waiting for its job
        hang = _with(spec, job_id="hangs", settings=dict(spec.settings.to_dict(), min_duration_s=600.0,
                                                        max_duration_s=600.0, max_iterations=10**7, timeout_s=1.0))  # fmt: skip
        timed_out = run_job(hang, "agent-t", forkserver=fs)
        assert not timed_out.ok and timed_out.error_kind == "timeout"
        after = run_job(_with(spec, job_id="after"), "agent-t", forkserver=fs)
        assert after.ok and after.record.job_id == "after", after.error
        assert not spare.is_running() or spare.status() == psutil.STATUS_ZOMBIE  # it took the timed-out job
    finally:
        fs.close()
