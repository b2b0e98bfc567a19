"""Sweep specs, selector expansion, and `fleetbench sweep` end to end on the embedded fleet."""

import json
import os
import subprocess
import sys

import pytest

from controller.sweeps import SweepError, expand_targets, parse_duration, parse_spec
from tests.helpers import tiny_sweep

KNOWN = {"litert:cpu": {"a1", "a2"}, "openvino:CPU": {"a1"}, "openvino:GPU": {"a2"}, "tflite:cpu": {"pi"}}
# as Scheduler.known_capabilities gives them: each name also @ its agents' machine (a1, a2: x86_64; pi: aarch64)
KNOWN |= {"litert:cpu@x86_64": {"a1", "a2"}, "openvino:CPU@x86_64": {"a1"}, "openvino:GPU@x86_64": {"a2"},
          "tflite:cpu@aarch64": {"pi"}}  # fmt: skip


@pytest.mark.parametrize(
    "text, error",
    [
        ("- just a list", "must be a mapping"),
        ("models: []", "list at least one model"),
        ("models: [{path: a.keras, id: b}]", "either `path:`"),
        ("models: [a.keras]\nvariants: [tflite-fp64]", "unknown tflite-fp64"),
        ("models: [a.keras]\ndevices: litert:cpu", "a list of selectors"),
        ("models: [a.keras]\nsettings: {threads: []}", "empty list"),
        ("models: [a.keras]\nsettings: {colour: red}", "settings.colour: unknown"),
        ("models: [a.keras]\nsettings: {scenario: MultiStream}", "not one of single-stream"),
        ("models: [a.keras]\nsettings: {scenario: Server}", "loadgen_target_qps must be > 0"),
        ("models: [a.keras]\nsettings: {batch: [1, 8]}", "only batch 1"),
        ("models: [a.keras]\nsettings: {threads: -1}", "threads must be >= 0"),
        ("models: [a.keras]\nexpire_after: soon", "not a duration"),
        ("models: [a.keras]\nmax_attempts: 0", "at least 1"),
        ("models: [{path: a.keras, colour: 1}]", "unknown key(s) colour"),
        ("models: [{path: a.keras, preprocessing: {layout: NCWH}}]", "preprocessing"),
        ("models: [a.keras]\nwhen: now", "unknown key(s) when"),
        ("models: [a.keras\n", "not valid YAML"),
        # issue 14, findings 9 and 12: each of these was a 500 from the API or a traceback from the CLI
        ("models: 5", "models: a list"),
        ("models: [{path: a.keras, input_shape: abc}]", "models[0].input_shape: a list of whole numbers"),
        ("models: [{path: a.keras, input_shape: [1, x]}]", "models[0].input_shape: 'x' is not a whole number"),
        ("models: [{path: a.keras, calibration_size: x}]", "models[0].calibration_size: 'x' is not a whole number"),
        ("models: [{path: a.keras, seed: x}]", "models[0].seed: 'x' is not a whole number"),
        ("models: [{path: 5}]", "models[0].path: a string"),
        ("models: [a.keras]\nmax_attempts: x", "max_attempts: 'x' is not a whole number"),
        ("models: [a.keras]\nvariants: 5", "variants: a list of names"),
        ("models: [a.keras]\nvariants: [[a]]", "variants: a list of names"),
        ("models: [a.keras]\nname: [x]", "name: a string"),
        ("models: [{path: a.keras, preprocessing: {scale: abc}}]", "scale must be a non-zero number"),
        ("models: [{path: a.keras, preprocessing: {mean: [a], std: [1]}}]", "lists of numbers"),
        # issue 18: the accuracy-keeping variants' settings
        ("models: [{path: a.keras, quantization: 5}]", "models[0].quantization: a mapping"),
        ("models: [{path: a.keras, quantization: {epochs: 3}}]", "unknown key(s) epochs; known: train_samples"),
        ("models: [{path: a.keras, quantization: {qat_epochs: 0}}]", "models[0].quantization.qat_epochs: must be at least 1"),
        ("models: [{path: a.keras, quantization: {qat_lr: 1}}]", "quantization.qat_lr: a number from 0 (exclusive) to 1 (exclusive)"),
        ("models: [{path: a.keras, quantization: {max_accuracy_drop: 100}}]", "max_accuracy_drop: a number from 0 (inclusive)"),
        ("models: [{path: a.keras, quantization: {fidelity_target_db: high}}]", "fidelity_target_db: a number"),
        ("models: [{path: a.keras, quantization: {train_samples: x}}]", "train_samples: 'x' is not a whole number"),
    ],
)
def test_bad_specs_say_what_to_change(text, error):
    """Every bad spec is one SweepError naming the field (the CLI prints it as one line, the API as a 400)."""
    with pytest.raises(SweepError) as exc:
        parse_spec(text)
    assert error in str(exc.value)


def test_a_models_quantization_settings_reach_its_plan():
    spec = parse_spec("models: [{path: a.keras, quantization: {train_samples: 150, qat_epochs: 2, qat_lr: 0.001, "
                      "max_accuracy_drop: 0.5, fidelity_target_db: 35}}]\nvariants: [tflite-int8-qat, openvino-int8-ac]")
    m = spec.models[0]
    assert m.train_samples == 150 and spec.variants == ["tflite-int8-qat", "openvino-int8-ac"]
    assert (m.quant.qat_epochs, m.quant.qat_learning_rate, m.quant.max_accuracy_drop, m.quant.fidelity_target_db) == (
        2, 0.001, 0.005, 35.0)
    plain = parse_spec("models: [a.keras]").models[0]
    assert plain.train_samples == 0 and plain.quant.fidelity_target_db is None and plain.quant.max_accuracy_drop == 0.01


def test_settings_lists_are_swept_over(tmp_path):
    spec = parse_spec("models: [m.keras]\nsettings: {threads: [1, 2], scenario: [single-stream, Offline], min_duration_s: 0.5}",
                      base_dir=tmp_path)  # fmt: skip
    combos = {(s.threads, s.loadgen_scenario, s.min_duration_s) for s in spec.settings}
    assert combos == {(1, "", 0.5), (2, "", 0.5), (1, "Offline", 0.5), (2, "Offline", 0.5)}
    assert spec.models[0].path == str(tmp_path / "m.keras")
    assert spec.variants[0] == "tflite-fp32" and len(spec.variants) == 7 and spec.devices == ["*"]


@pytest.mark.parametrize("value, seconds", [(90, 90.0), ("90s", 90.0), ("10m", 600.0), ("2h", 7200.0), ("1.5m", 90.0)])
def test_durations(value, seconds):
    assert parse_duration(value, "x") == seconds


@pytest.mark.parametrize(
    "devices, variants, expected",
    [
        (["litert:*"], ["tflite-fp32"], {"tflite-fp32": [("litert:cpu", None)]}),
        (["*:cpu"], ["tflite-fp32"], {"tflite-fp32": [("litert:cpu", None), ("tflite:cpu", None)]}),
        (["openvino:*"], ["openvino-fp16"], {"openvino-fp16": [("openvino:CPU", None), ("openvino:GPU", None)]}),
        (["openvino:MYRIAD"], ["openvino-fp32"], {"openvino-fp32": [("openvino:MYRIAD", None)]}),  # waits for one
        (["agent:a2"], ["tflite-fp32", "openvino-fp32"],
         {"tflite-fp32": [("litert:cpu", "a2")], "openvino-fp32": [("openvino:GPU", "a2")]}),
        (["*"], ["tflite-int8"], {"tflite-int8": [("litert:cpu", None), ("tflite:cpu", None)]}),
        # by machine: a name @ an architecture (Debian's and Apple's names too), or a glob @ one
        (["litert:cpu@x86_64"], ["tflite-fp32"], {"tflite-fp32": [("litert:cpu@x86_64", None)]}),
        (["tflite:cpu@arm64"], ["tflite-fp32"], {"tflite-fp32": [("tflite:cpu@aarch64", None)]}),
        (["*@aarch64"], ["tflite-fp32"], {"tflite-fp32": [("tflite:cpu@aarch64", None)]}),
        (["litert:cpu@aarch64"], ["tflite-fp32"], {"tflite-fp32": [("litert:cpu@aarch64", None)]}),  # waits for one
    ],
)  # fmt: skip
def test_selectors_expand_over_the_fleet(devices, variants, expected):
    assert expand_targets(devices, variants, KNOWN) == expected


@pytest.mark.parametrize(
    "devices, variants, error",
    [
        (["agent:nobody"], ["tflite-fp32"], "no agent 'nobody'"),
        (["npu:*"], ["tflite-fp32"], "matches no capability"),
        (["openvino:CPU"], ["tflite-fp32"], "offers no runtime for the variants"),
        (["cpu"], ["tflite-fp32"], "is not a capability"),
        (["litert:cpu@"], ["tflite-fp32"], "names no machine after '@'"),
        (["litert:cpu@arm 64"], ["tflite-fp32"], "has a space in it"),
        (["litert: cpu"], ["tflite-fp32"], "has a space in it"),
        (["*@riscv64"], ["tflite-fp32"], "matches no capability"),
    ],
)
def test_selectors_that_match_nothing_are_errors(devices, variants, error):
    with pytest.raises(SweepError) as exc:
        expand_targets(devices, variants, KNOWN)
    assert error in str(exc.value)


@pytest.mark.slow
def test_sweep_cli_end_to_end(tmp_path, tiny_model):
    """Convert, benchmark on every local capability, wait for a device nobody has, report."""
    spec = tiny_sweep(
        tmp_path / "in", tiny_model,
        "name: e2e\n"
        "models: [{path: tiny.tflite, data: tiny.npz, calibration_size: 4}]\n"
        "variants: [tflite-fp32, openvino-fp32, openvino-fp16]\n"
        "devices: ['litert:*', 'openvino:CPU', 'openvino:MYRIAD']\n"
        "settings: {threads: [1, 2], min_iterations: 100, min_duration_s: 0.1}\n"
        "expire_after: 3s\n"
    )
    data = tmp_path / "fb"
    env = dict(os.environ, FLEETBENCH_DISABLE_GPU_PROBE="1", PYTHONUNBUFFERED="1")
    cli = [sys.executable, "-m", "controller.cli"]
    run = subprocess.run(cli + ["sweep", str(spec), "--data-dir", str(data)], env=env, capture_output=True, text=True, timeout=600)
    # MYRIAD jobs expire: the sweep says so and exits non-zero
    assert run.returncode == 1, run.stdout + run.stderr
    assert "done 6," in run.stdout and "expired 4" in run.stdout
    assert "fleetbench status" in run.stdout
    status = subprocess.run(cli + ["status", "e2e", "--data-dir", str(data)], env=env, capture_output=True, text=True)
    assert status.stdout.count("expired") >= 4 and "openvino:MYRIAD" in status.stdout
    from controller.store import Store

    store = Store(f"sqlite:///{data / 'fleetbench.db'}")
    expired = [j for j in store.jobs(store.get_sweep("e2e").sweep_id) if j.state == "expired"]
    store.close()
    assert len(expired) == 4 and all(j.reason == "waiting for a device with openvino:MYRIAD: none came within 3 s" for j in expired)
    out = subprocess.run(cli + ["results", "e2e", "-f", "json", "--data-dir", str(data)], env=env, capture_output=True, text=True)
    records = json.loads(out.stdout)
    assert len(records) == 6
    assert {(r["variant"], r["capability"], r["settings"]["threads"]) for r in records} == {
        (v, c, t) for v, c in [("tflite-fp32", "litert:cpu"), ("openvino-fp32", "openvino:CPU"), ("openvino-fp16", "openvino:CPU")]
        for t in (1, 2)
    }  # fmt: skip
    assert all(r["accuracy_top1"] == 1.0 and r["fidelity"]["top1_agreement"] == 1.0 for r in records)
    csv = subprocess.run(cli + ["results", "e2e", "-f", "csv", "--data-dir", str(data)], env=env, capture_output=True, text=True)
    assert csv.stdout.splitlines()[0].startswith("job_id,attempt,model_name") and len(csv.stdout.splitlines()) == 7

    # Again with another split of the data: the variants are cached, and the reference outputs on the new
    # split are computed first, so fidelity is measured on it too; the sweep supersedes nothing.
    spec.write_text(spec.read_text().replace("calibration_size: 4", "calibration_size: 6").replace("'openvino:MYRIAD'", "")
                    .replace("name: e2e", "name: e2e-split"))  # fmt: skip
    again = subprocess.run(cli + ["sweep", str(spec), "--data-dir", str(data)], env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    out = subprocess.run(cli + ["results", "e2e-split", "-f", "json", "--data-dir", str(data)], env=env, capture_output=True, text=True)
    records = json.loads(out.stdout)
    assert len(records) == 6 and all(r["accuracy_top1"] == 1.0 for r in records)
    assert all(r["fidelity"] is not None and r["fidelity"]["top1_agreement"] == 1.0 for r in records)
    assert all(r["fidelity"]["samples"] == records[0]["accuracy_samples"] for r in records)


def test_a_sweep_of_more_than_1000_jobs_needs_yes(tmp_path, tiny_model):
    """Issue 14, finding 11: a settings matrix that grows past 1,000 jobs is refused with one line; nothing is stored."""
    (tmp_path / "tiny.tflite").write_bytes(tiny_model["path"].read_bytes())
    spec = tmp_path / "big.yaml"
    spec.write_text("name: big\nmodels: [{path: tiny.tflite}]\nvariants: [tflite-fp32]\ndevices: ['litert:cpu']\n"
                    f"settings: {{min_iterations: {list(range(100, 1101))}}}\n")  # fmt: skip
    env = dict(os.environ, FLEETBENCH_DISABLE_GPU_PROBE="1")
    data = tmp_path / "fb"
    run = subprocess.run([sys.executable, "-m", "controller.cli", "sweep", str(spec), "--data-dir", str(data)],
                         env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    out = run.stdout + run.stderr
    assert run.returncode != 0 and "Traceback" not in out
    assert "expands to 1,001 jobs, more than 1,000" in out and "--yes" in out
    from controller.store import Store

    store = Store(f"sqlite:///{data / 'fleetbench.db'}")
    assert store.sweeps() == []
    store.close()


@pytest.mark.slow
def test_the_embedded_agent_relays_what_a_lost_run_left_in_its_outbox(tmp_path, tiny_model, golden_record):
    """Issue 14, finding 8: the embedded agent's id is stable per data directory, so the next run relays
    a result the last one could not (its broker was lost) and it is stored."""
    import dataclasses

    from agent.outbox import Outbox
    from controller.embedded import local_agent_id
    from controller.store import Store
    from protocol import JobOutcome

    data = tmp_path / "fb"
    agent_id = local_agent_id(data)
    assert agent_id == local_agent_id(tmp_path / "." / "fb") and agent_id != local_agent_id(tmp_path / "other")
    left = dataclasses.replace(golden_record, job_id="left-by-a-lost-run", attempt=1)
    Outbox(data / "logs" / "agent-state" / agent_id / "outbox.db").put(
        JobOutcome(job_id=left.job_id, attempt=1, ok=True, record=left, agent_id=agent_id))
    (tmp_path / "tiny.tflite").write_bytes(tiny_model["path"].read_bytes())
    spec = tmp_path / "small.yaml"
    spec.write_text("name: small\nmodels: [{path: tiny.tflite}]\nvariants: [tflite-fp32]\ndevices: ['litert:cpu']\n"
                    "settings: {min_iterations: 20, min_duration_s: 0.0}\n")  # fmt: skip
    env = dict(os.environ, FLEETBENCH_DISABLE_GPU_PROBE="1")
    run = subprocess.run([sys.executable, "-m", "controller.cli", "sweep", str(spec), "--data-dir", str(data)],
                         env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"starting a local agent ({agent_id})" in run.stdout
    store = Store(f"sqlite:///{data / 'fleetbench.db'}")
    try:
        assert store.get_result("left-by-a-lost-run", 1) is not None
    finally:
        store.close()
    assert "result(s) from before a restart, relaying" in (data / "logs" / "agent.log").read_text()


def _redis_of(data) -> int:
    """The pid of the embedded redis-server a `fleetbench sweep` on ``data`` started (from its log: redis-server
    rewrites its command line)."""
    import re
    import time

    log = data / "logs" / "redis.log"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        m = re.search(r"^(\d+):M .*Ready to accept connections", log.read_text() if log.exists() else "", re.M)
        if m:
            return int(m.group(1))
        time.sleep(0.2)
    raise AssertionError("the embedded redis-server did not start")


def _sweep_until_one_is_done(tmp_path, tiny_model, name: str, durations: list[float]):
    """Start `fleetbench sweep` of one job per ``durations`` entry on the embedded fleet, and return once its first
    job is done: (the CLI process, the store, the embedded redis-server's pid, the data dir, the env, the CLI argv)."""
    import time

    from controller.store import Store

    (tmp_path / "tiny.tflite").write_bytes(tiny_model["path"].read_bytes())
    spec = tmp_path / "s.yaml"
    spec.write_text(f"name: {name}\nmodels: [{{path: tiny.tflite}}]\nvariants: [tflite-fp32]\ndevices: ['litert:cpu']\n"
                    f"settings: {{min_iterations: 50, min_duration_s: {durations}}}\n")  # fmt: skip
    data = tmp_path / "fb"
    env = dict(os.environ, FLEETBENCH_DISABLE_GPU_PROBE="1", PYTHONUNBUFFERED="1")
    cli = [sys.executable, "-m", "controller.cli"]
    proc = subprocess.Popen(cli + ["sweep", str(spec), "--data-dir", str(data)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        pid = _redis_of(data)
        store = Store(f"sqlite:///{data / 'fleetbench.db'}")
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not (store.sweeps() and store.job_counts(store.sweeps()[0].sweep_id).get("done")):
            time.sleep(0.2)
    except BaseException:
        proc.kill()
        raise
    return proc, store, pid, data, env, cli


@pytest.mark.slow
def test_a_lost_embedded_broker_ends_the_sweep_in_one_line_and_resume_finishes_it(tmp_path, tiny_model):
    """Issue 14, finding 8: kill -9 the embedded broker mid-sweep: one error line naming --resume, the sweep kept
    running; `sweep --resume` sends what was lost again and ends with every job done and one record each."""
    import signal

    proc, store, pid, data, env, cli = _sweep_until_one_is_done(tmp_path, tiny_model, "lose", [0.6, 0.7, 0.8, 0.9, 1.0, 1.1])
    try:  # kill it once the first job is done, with the rest to go
        os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 1, out + err
    assert "Traceback" not in out + err and err.count("error:") == 1, err
    assert "the embedded broker (redis-server) stopped" in err and "fleetbench sweep --resume lose" in " ".join(err.split())
    row = store.get_sweep("lose")
    counts = store.job_counts(row.sweep_id)
    assert row.state == "running" and counts.get("done", 0) < 6, counts

    again = subprocess.run(cli + ["sweep", "--resume", "lose", "--data-dir", str(data)], env=env, capture_output=True,
                           text=True, timeout=600)  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resuming" in again.stdout and "unfinished job(s) of 6" in again.stdout
    try:
        assert store.job_counts(row.sweep_id) == {"done": 6} and store.get_sweep("lose").state == "done"
        records = store.sweep_results(row.sweep_id)
        assert len(records) == 6 and len({r.job_id for r in records}) == 6  # one counted record per job
        assert sorted(r.settings.min_duration_s for r in records) == [0.6, 0.7, 0.8, 0.9, 1.0, 1.1]
    finally:
        store.close()
    done = subprocess.run(cli + ["sweep", "--resume", "lose", "--data-dir", str(data)], env=env, capture_output=True, text=True)
    assert done.returncode == 2 and "is done: there is nothing to resume" in done.stderr


@pytest.mark.slow
def test_an_interrupted_sweep_says_how_to_go_on_and_cancel_ends_it(tmp_path, tiny_model):
    """Issue 14, finding 11: Ctrl-C leaves a sweep resumable and says so; `sweep --cancel` marks its jobs cancelled."""
    import signal

    proc, store, _, data, env, cli = _sweep_until_one_is_done(tmp_path, tiny_model, "stop-me",
                                                              [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7])  # fmt: skip
    try:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in out + err, out + err
    said = " ".join(err.split())
    assert "interrupted: sweep stop-me keeps" in said and "--resume stop-me" in said and "--cancel stop-me" in said
    row = store.get_sweep("stop-me")
    assert row.state == "running"
    left = sum(n for s, n in store.job_counts(row.sweep_id).items() if s != "done")
    assert left > 0
    cancel = subprocess.run(cli + ["sweep", "--cancel", "stop-me", "--data-dir", str(data)], env=env, capture_output=True, text=True)
    assert cancel.returncode == 0 and f"{left} unfinished job(s) marked cancelled" in cancel.stdout, cancel.stdout + cancel.stderr
    try:
        assert store.get_sweep("stop-me").state == "cancelled"
        assert set(store.job_counts(row.sweep_id)) <= {"done", "cancelled"}
    finally:
        store.close()
    status = subprocess.run(cli + ["status", "stop-me", "--data-dir", str(data)], env=dict(env, COLUMNS="200"),
                            capture_output=True, text=True)  # fmt: skip
    assert "stop-me" in status.stdout and f"cancelled {left}" in status.stdout and "cancelled by the user" in status.stdout
    twice = subprocess.run(cli + ["sweep", "--cancel", "stop-me", "--data-dir", str(data)], env=env, capture_output=True, text=True)
    assert twice.returncode == 2 and "cancelled already" in twice.stderr
    neither = subprocess.run(cli + ["sweep", "--data-dir", str(data)], env=env, capture_output=True, text=True)
    assert neither.returncode == 2 and "give a sweep spec file, or --resume SWEEP, or --cancel SWEEP" in neither.stderr
