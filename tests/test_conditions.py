"""The device around a job (issue 19): affinity and disturbance for real, in real benchmark children; the thermal
state and throttling on recorded sysfs trees (tests/sysfs.py) read through the agent's own code."""

import os
import subprocess
import sys
import threading
import time

import pytest

from agent.runner import run_job
from controller.artifacts import ArtifactStore
from protocol import BenchmarkSettings, JobSpec
from protocol.errors import ErrorKind
from tests.sysfs import ThermalTree


def _job(tmp_path, tiny_model, **settings):
    base = dict(threads=1, warmup_iterations=5, min_iterations=50, min_duration_s=1.0, timeout_s=120)
    art = ArtifactStore(tmp_path / "artifacts").put_file(tiny_model["path"])
    spec = JobSpec(job_id="cond", model_id="m", model_name="tiny", variant="tflite-fp32", capability="litert:cpu",
                   artifact=art, settings=BenchmarkSettings(**{**base, **settings}))  # fmt: skip
    return run_job(spec.to_dict(), "agent-c")


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="Linux only")
def test_the_benchmark_child_runs_on_the_cores_it_is_pinned_to(tmp_path, tiny_model):
    outcome = _job(tmp_path, tiny_model, cpu_affinity="0")
    assert outcome.ok, outcome.error
    assert outcome.record.conditions.affinity == (0,) and outcome.record.settings.cpu_affinity == "0"
    free = _job(tmp_path, tiny_model)
    assert free.record.conditions.affinity == tuple(sorted(os.sched_getaffinity(0)))
    missing = max(os.sched_getaffinity(0)) + 1
    bad = _job(tmp_path, tiny_model, cpu_affinity=str(missing))
    assert not bad.ok and bad.error_kind == ErrorKind.BAD_SPEC.value and f"core(s) {missing} not available here" in bad.error


def test_a_busy_process_during_the_job_marks_it_disturbed(tmp_path, tiny_model):
    quiet = _job(tmp_path, tiny_model)
    assert quiet.ok, quiet.error
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        loud = _job(tmp_path, tiny_model)
    finally:
        busy.kill()
        busy.wait()
    c = loud.record.conditions
    assert c.disturbed and c.other_cpu_cores >= 0.5 and c.disturbance_max_cores == 0.25, c
    assert c.other_cpu_cores > quiet.record.conditions.other_cpu_cores + 0.4
    assert c.seconds > 0
    import dataclasses

    from protocol import ContractError

    with pytest.raises(ContractError, match="conditions: conditions figures must be finite"):
        dataclasses.replace(loud.record, conditions=dataclasses.replace(c, other_cpu_cores=float("nan"))).check_consistent()
    from controller.cli.render import conditions_notes
    from protocol.flatten import record_fields

    assert conditions_notes(loud.record)[0].startswith("disturbed: other processes used ")
    assert record_fields(loud.record)["disturbed"] is True and record_fields(loud.record)["other_cpu_cores"] >= 0.5


def test_thermal_state_and_a_clock_that_falls_mid_job(tmp_path, tiny_model, monkeypatch):
    tree = ThermalTree(tmp_path / "thermal", tmp_path / "cpu", mhz=2400)
    monkeypatch.setenv("FLEETBENCH_THERMAL_ROOT", str(tmp_path / "thermal"))
    monkeypatch.setenv("FLEETBENCH_CPUFREQ_ROOT", str(tmp_path / "cpu"))
    steady = _job(tmp_path, tiny_model).record.conditions
    assert steady.before.temps_c == {"x86_pkg_temp (thermal_zone0)": 52.0, "acpitz (thermal_zone1)": 41.0}
    assert steady.before.cpu_mhz == {"cpu0": 2400.0, "cpu1": 2400.0} and steady.before.governor == "powersave"
    assert not steady.throttled and steady.throttle_why == ""
    timer = threading.Timer(0.5, lambda: tree.set_mhz(1, 1200))  # the clock halves while the job runs
    timer.start()
    try:
        hot = _job(tmp_path, tiny_model).record.conditions
    finally:
        timer.cancel()
    assert hot.throttled and hot.after.cpu_mhz["cpu1"] == 1200.0
    assert hot.throttle_why.startswith("cpu1 fell from 2,400 to 1,200 MHz during the job")


def test_bad_affinity_settings_are_refused_before_a_job_is_sent():
    assert BenchmarkSettings(cpu_affinity="0-3,6").problems() == []
    assert "runs backwards" in BenchmarkSettings(cpu_affinity="3-1").problems()[0]
    assert "disturbance_max_cores" in BenchmarkSettings(disturbance_max_cores=-1).problems()[0]
