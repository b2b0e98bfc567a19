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


#: a process that keeps one core busy for at most a minute: a test run killed half-way leaves no busy orphan (one
#: that outlived a killed run once made a later full run's timings and disturbance tests fail)
BUSY = "import itertools, time; end = time.monotonic() + 60; any(time.monotonic() > end for _ in itertools.count())"


def _job(tmp_path, tiny_model, prejob=None, **settings):
    # the latency phase runs its full second (the tiny model's microseconds would reach the default max_iterations
    # in a third of one): the tests change the device half a second in, while it runs
    base = dict(threads=1, warmup_iterations=5, min_iterations=50, min_duration_s=1.0, max_iterations=10_000_000,
                timeout_s=120)  # fmt: skip
    art = ArtifactStore(tmp_path / "artifacts").put_file(tiny_model["path"])
    spec = JobSpec(job_id="cond", model_id="m", model_name="tiny", variant="tflite-fp32", capability="litert:cpu",
                   artifact=art, settings=BenchmarkSettings(**{**base, **settings}))  # fmt: skip
    return run_job(spec.to_dict(), "agent-c", prejob=prejob)


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
    busy = subprocess.Popen([sys.executable, "-c", BUSY])
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
    assert hot.seconds > 0.5, hot.seconds  # the job outlasted the timer: the clock fell while it ran
    assert hot.throttled and hot.after.cpu_mhz["cpu1"] == 1200.0
    assert hot.throttle_why.startswith("cpu1 fell from 2,400 to 1,200 MHz during the job")
    assert steady.before.throttle_counts == {"cpu0 core": 17, "cpu1 core": 17, "package 0": 3}  # one per package
    tree.set_mhz(1, 2400)
    timer = threading.Timer(0.5, lambda: tree.throttle(0, 5))  # the clock holds, but the hardware says it throttled
    timer.start()
    try:
        counted = _job(tmp_path, tiny_model).record.conditions
    finally:
        timer.cancel()
    assert counted.throttled and counted.throttle_why == "cpu0 core throttle count rose by 5 during the job (1 counter(s) rose)"


def test_gpu_clocks_and_nvml_throttle_reasons_mark_a_record_throttled():
    from agent.conditions import throttled
    from protocol import ThermalState

    cool = ThermalState(temps_c={"GPU 0 (nvml)": 40.0}, gpu_mhz={"GPU 0": 1980.0})
    assert throttled(cool, cool) == ""
    slowed = ThermalState(temps_c={"GPU 0 (nvml)": 88.0}, gpu_mhz={"GPU 0": 1410.0}, throttle_flags=("GPU 0 SwThermalSlowdown",))
    assert throttled(cool, slowed) == ("GPU 0 fell from 1,980 to 1,410 MHz during the job (1 GPU(s) fell by more than 10%); "
                                       "NVML reports GPU 0 SwThermalSlowdown")  # fmt: skip


def test_bad_affinity_settings_are_refused_before_a_job_is_sent():
    assert BenchmarkSettings(cpu_affinity="0-3,6").problems() == []
    assert "runs backwards" in BenchmarkSettings(cpu_affinity="3-1").problems()[0]
    assert "disturbance_max_cores" in BenchmarkSettings(disturbance_max_cores=-1).problems()[0]


# ---------------------------------------------------------------- sustained mode


def test_sustained_mode_keeps_latency_in_windows_with_the_drift_and_the_device_state(tmp_path, tiny_model, monkeypatch):
    import dataclasses

    from protocol import ContractError

    ThermalTree(tmp_path / "thermal", tmp_path / "cpu", mhz=2400)
    monkeypatch.setenv("FLEETBENCH_THERMAL_ROOT", str(tmp_path / "thermal"))
    monkeypatch.setenv("FLEETBENCH_CPUFREQ_ROOT", str(tmp_path / "cpu"))
    outcome = _job(tmp_path, tiny_model, sustained_s=1.5, sustained_window_s=0.5, max_iterations=5_000_000)
    assert outcome.ok, outcome.error
    r = outcome.record
    s = r.sustained
    assert [w.start_s for w in s.windows] == pytest.approx([0.0, 0.5, 1.0], abs=0.05) and s.window_s == 0.5
    assert sum(w.count for w in s.windows) == r.stats.count and s.seconds >= 1.5
    assert s.drift_ratio == pytest.approx(s.windows[-1].p50_ms / s.windows[0].p50_ms)
    assert {w.hottest_c for w in s.windows} == {52.0} and {w.cpu_mhz for w in s.windows} == {2400.0}
    r.check_consistent()
    w0 = dataclasses.replace(s.windows[0], p50_ms=s.windows[0].p50_ms * 2)
    with pytest.raises(ContractError, match="sustained: window 1's percentiles do not match its samples"):
        dataclasses.replace(r, sustained=dataclasses.replace(s, windows=(w0, *s.windows[1:]))).check_consistent()
    with pytest.raises(ContractError, match="sustained: drift_ratio is not"):
        dataclasses.replace(r, sustained=dataclasses.replace(s, drift_ratio=1.0 + s.drift_ratio)).check_consistent()
    assert _job(tmp_path, tiny_model).record.sustained is None


def test_sustained_settings_that_cannot_work_are_refused_before_a_job_is_sent():
    assert BenchmarkSettings(sustained_s=600, timeout_s=900).problems() == []
    assert "timeout_s=300 must be above sustained_s=600: raise timeout_s" in BenchmarkSettings(sustained_s=600, timeout_s=300).problems()[0]
    assert "more than 1000 windows" in BenchmarkSettings(sustained_s=600, sustained_window_s=0.1).problems()[0]
    assert "sustained_s must be between" in BenchmarkSettings(sustained_window_s=5).problems()[0]


# ---------------------------------------------------------------- the agent's waits before a job


def test_cooldown_waits_until_every_zone_is_near_its_idle_baseline(tmp_path, monkeypatch):
    from agent.conditions import PreJob

    tree = ThermalTree(tmp_path / "thermal", tmp_path / "cpu")
    monkeypatch.setenv("FLEETBENCH_THERMAL_ROOT", str(tmp_path / "thermal"))
    clock = [0.0]

    def cooling(seconds):  # the device's own clock: the package cools 4 °C a second while the agent waits
        clock[0] += seconds
        tree.set_temp(0, max(52.0, 70.0 - 4 * clock[0]))

    prejob = PreJob(cooldown_within_c=3, sleep=cooling, clock=lambda: clock[0])  # idle: 52 and 41 °C, read now
    tree.set_temp(0, 70.0)  # the last job heated it
    (wait,) = prejob.run(max_cores=0.25)
    assert wait.kind == "cooldown" and wait.done and wait.seconds == pytest.approx(4.0)  # 70 - 16 = 54 <= 52 + 3
    assert wait.why.startswith("every zone within 3 °C of idle after 4.0 s (x86_pkg_temp (thermal_zone0) 54.0 °C")
    tree.set_temp(1, 60.0)  # a zone that does not cool: the agent stops at cooldown_s, and says so
    short = PreJob(cooldown_within_c=3, cooldown_s=5, idle_c=41.0, sleep=lambda s: clock.__setitem__(0, clock[0] + s),
                   clock=lambda: clock[0])  # fmt: skip
    (gave_up,) = short.run(max_cores=0.25)
    assert not gave_up.done and gave_up.seconds == pytest.approx(5.0)
    assert gave_up.why == "gave up after 5 s: acpitz (thermal_zone1) at 60.0 °C, more than 3 °C above its idle 41.0 °C"


def test_the_idle_baseline_follows_recent_idle_readings_and_ignores_glitches(tmp_path, monkeypatch):
    from agent.conditions import IDLE_READINGS, PreJob

    monkeypatch.setenv("FLEETBENCH_THERMAL_ROOT", str(tmp_path / "none"))
    prejob = PreJob(cooldown_within_c=3)
    prejob._note({"zone": 40.0})
    prejob._note({"zone": -273.0})  # a sensor glitch
    assert prejob.baseline["zone"] == 40.0
    for _ in range(IDLE_READINGS):  # the room warmed: the old 40 °C falls out of the window
        prejob._note({"zone": 45.0})
    assert prejob.baseline["zone"] == 45.0


def test_a_flat_cooldown_is_waited_and_recorded_on_the_job(tmp_path, tiny_model):
    from agent.conditions import PreJob

    outcome = _job(tmp_path, tiny_model, prejob=PreJob(cooldown_s=0.3))
    assert outcome.ok, outcome.error
    (wait,) = outcome.record.conditions.waits
    assert wait.kind == "cooldown" and wait.done and wait.seconds >= 0.3 and wait.why == "waited 0.3 s (cooldown_s)"


def _stranger() -> int:
    """A busy process that is not this one's descendant (its shell parent exits; init adopts it): other work."""
    out = subprocess.run(["sh", "-c", f"{sys.executable} -c '{BUSY}' >/dev/null 2>&1 & echo $!"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return int(out.stdout.strip())


def _kill(pid: int) -> None:
    import contextlib
    import signal

    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def test_a_busy_device_is_refused_or_waited_for_as_the_agent_is_set(tmp_path, tiny_model):
    from agent.conditions import PreJob, other_cpu_seconds

    own = subprocess.Popen([sys.executable, "-c", BUSY])  # the agent's own child: not other work
    try:
        time.sleep(0.2)
        alone = _job(tmp_path, tiny_model, prejob=PreJob(on_disturbance="refuse", probe_s=0.3))
        assert alone.ok, alone.error
        mine = {os.getpid()}
        a, b = other_cpu_seconds(mine), other_cpu_seconds(mine, os.getpid())
        time.sleep(0.5)
        assert other_cpu_seconds(mine) - a >= 0.3 and other_cpu_seconds(mine, os.getpid()) - b < 0.2
    finally:
        own.kill()
        own.wait()
    busy = _stranger()
    try:
        time.sleep(0.2)
        refused = _job(tmp_path, tiny_model, prejob=PreJob(on_disturbance="refuse", probe_s=0.3))
        assert not refused.ok and refused.error_kind == ErrorKind.DEVICE_BUSY.value and ErrorKind.DEVICE_BUSY.retryable
        assert refused.error.startswith("device busy: other processes used ") and "on_disturbance=refuse" in refused.error
        threading.Timer(1.0, _kill, (busy,)).start()  # the other work ends while the agent waits
        waited = _job(tmp_path, tiny_model, prejob=PreJob(on_disturbance="wait", probe_s=0.3, quiet_wait_s=30),
                      disturbance_max_cores=0.5)  # fmt: skip
    finally:
        _kill(busy)
    assert waited.ok, waited.error
    (wait,) = waited.record.conditions.waits
    assert wait.kind == "quiet" and wait.done and 0.8 <= wait.seconds < 30, wait
    assert not waited.record.conditions.disturbed


# ---------------------------------------------------------------- readiness and the results table


def _sustained(record, drift: float):
    from tests.golden_demo import sustained

    return sustained(record, drift, windows=2)


def test_a_drift_budget_judges_sustained_runs_and_says_how_to_get_one(golden_record):
    from controller.analysis.readiness import NO_SUSTAINED, candidates, judge, parse_budgets

    rule = parse_budgets({"budgets": [{"devices": "*", "drift_ratio_max": 1.1}]}).for_capability(golden_record.capability)
    slowed = _sustained(golden_record, 1.3)
    slowed.check_consistent()
    (c,) = candidates([slowed])
    assert c.drift_ratio == pytest.approx(1.3, rel=0.01)
    assert judge(c, rule, None).reasons[0].startswith("sustained p50 drift 1.3") and "> 1.1x" in judge(c, rule, None).reasons[0]
    (steady,) = candidates([_sustained(golden_record, 1.0)])
    assert judge(steady, rule, None).passed
    (none,) = candidates([golden_record])
    assert judge(none, rule, None).reasons == (NO_SUSTAINED,)


def test_disturbed_and_throttled_records_are_counted_in_readiness_and_marked_in_the_table(golden_record):
    import dataclasses

    from controller.analysis.readiness import candidates
    from controller.cli.render import conditions_notes, results_table
    from protocol import DeviceConditions, ThermalState, Wait

    c = DeviceConditions(before=ThermalState(), after=ThermalState(), throttled=True, throttle_why="cpu0 fell from 2,400 to 1,200 MHz",
                         other_cpu_cores=1.5, disturbed=True, disturbance_max_cores=0.25, seconds=2.0,
                         waits=(Wait("cooldown", 300.0, False, "gave up after 300 s: x86_pkg_temp at 80.0 °C"),))  # fmt: skip
    bad = dataclasses.replace(golden_record, conditions=c)
    (cand,) = candidates([bad, golden_record])
    assert "1 of 2 record(s) disturbed by other processes' CPU use: run them again on a quiet, cool device" in cand.warnings
    assert any(w.startswith("1 of 2 record(s) throttled") for w in cand.warnings)
    notes = conditions_notes(bad)
    assert notes[0] == "waited before the job: gave up after 300 s: x86_pkg_temp at 80.0 °C"
    assert [n.split(":")[0] for n in notes[1:]] == ["disturbed", "throttled"]
    table = results_table([_sustained(golden_record, 1.3)], width=120)
    assert "drift" in [col.header for col in table.columns]  # shown at 120 columns for a sustained run
    assert "drift" not in [col.header for col in results_table([golden_record], width=200).columns]


def test_the_example_sustained_sweep_parses_into_sustained_settings():
    from pathlib import Path

    from controller.sweeps.spec import parse_spec

    examples = Path(__file__).resolve().parent.parent / "examples"
    spec = parse_spec((examples / "demo-sustained-sweep.yaml").read_text(), base_dir=examples)
    assert spec.name == "demo-sustained"
    assert [(s.sustained_s, s.window_s(), s.cpu_affinity) for s in spec.settings] == [(30.0, 5.0, "0")]
