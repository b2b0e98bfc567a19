"""tflite-runtime, the fallback runtime for boards without a LiteRT wheel.

Its wheels need numpy 1.x, so these tests run the agent in `.venv-tflite`
(made by `make test`), which holds only tflite-runtime and numpy<2, like a
bare device: no LiteRT, no OpenVINO, no Celery.
"""

import json
import subprocess
from pathlib import Path

import pytest

from agent.runner import run_job
from controller.artifacts import ArtifactStore
from controller.bundles import create_bundle, import_results
from protocol import BenchmarkSettings, JobSpec
from protocol.bundles import read_results
from tests.helpers import venv_python

ROOT = Path(__file__).resolve().parent.parent
FAST = BenchmarkSettings(threads=1, warmup_iterations=2, min_iterations=700, min_duration_s=0.0, timeout_s=120)


@pytest.fixture(scope="module")
def tflite_python():
    return venv_python(".venv-tflite")


@pytest.fixture
def device_env(monkeypatch):
    """What the agent's children see on the device: the repo's code and nothing else of this venv."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))


def _npz(tmp_path, name, **arrays):
    import numpy as np

    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def test_probe_offers_tflite_cpu_and_says_why_not_gpu(tflite_python, device_env):
    r = subprocess.run([tflite_python, "-m", "agent", "--probe"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "capability tflite:cpu: tflite 2." in r.stdout
    gpu = next(line for line in r.stdout.splitlines() if line.startswith("capability tflite:gpu unavailable"))
    assert "libtensorflowlite_gpu_delegate.so" in gpu and "LD_LIBRARY_PATH" in gpu
    assert "runtime litert unavailable" in r.stdout and "runtime openvino unavailable" in r.stdout


def test_benchmark_child_on_tflite_matches_litert(tflite_python, device_env, tmp_path, tiny_model):
    store = ArtifactStore(tmp_path / "artifacts")
    spec = JobSpec(
        job_id="t1", model_id="m", model_name="tiny", variant="tflite-fp32", capability="tflite:cpu",
        artifact=store.put_file(tiny_model["path"]),
        dataset=store.put_file(_npz(tmp_path, "d.npz", x=tiny_model["x"], y=tiny_model["y"])),
        reference=store.put_file(_npz(tmp_path, "r.npz", outputs=tiny_model["expected"])),
        settings=FAST,
    )  # fmt: skip
    outcome = run_job(spec.to_dict(), "pi-1", child_argv=[tflite_python, "-m", "agent.child"])
    assert outcome.ok, outcome.error
    r = outcome.record
    assert (r.runtime, r.capability, r.device) == ("tflite", "tflite:cpu", "cpu")
    assert r.runtime_version.startswith("2.")
    assert len(r.samples_ns) >= 700 and r.validity.valid, r.validity.reasons
    assert r.accuracy_top1 == 1.0  # labels are the Keras model's own argmax
    assert r.fidelity.top1_agreement == 1.0 and r.fidelity.max_abs_error < 1e-4


def test_delegate_by_path_through_tflite_runtime(tflite_python, device_env, monkeypatch, tmp_path, tiny_model):
    import shutil

    from agent.backends.delegates import ENV

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the test delegate")
    lib = tmp_path / "libpassthrough_delegate.so"
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(lib), str(ROOT / "tests/data/passthrough_delegate.c")], check=True)
    marker = tmp_path / "prepare.log"
    monkeypatch.setenv(ENV, json.dumps({"npu": {"path": str(lib), "options": {"marker": str(marker)}, "runtimes": ["tflite"]}}))
    store = ArtifactStore(tmp_path / "artifacts")
    spec = JobSpec(job_id="t2", model_id="m", model_name="tiny", variant="tflite-fp32", capability="tflite:npu",
                   artifact=store.put_file(tiny_model["path"]), settings=FAST)  # fmt: skip
    outcome = run_job(spec.to_dict(), "pi-1", child_argv=[tflite_python, "-m", "agent.child"])
    assert outcome.ok, outcome.error
    assert outcome.record.capability == "tflite:npu" and outcome.record.device_name == "npu delegate (libpassthrough_delegate.so)"
    assert "prepare" in marker.read_text()


def test_offline_bundle_on_a_bare_tflite_device(tflite_python, device_env, tmp_path, tiny_model):
    """The air-gapped path end to end: bundle on the controller, run-bundle on the device, import once."""
    import numpy as np

    from controller.convert import service
    from controller.store import Store

    store = Store(f"sqlite:///{tmp_path / 'fb.db'}")
    store.migrate()
    arts = ArtifactStore(tmp_path / "artifacts")
    np.savez(tmp_path / "data.npz", x=tiny_model["x"], y=tiny_model["y"])
    plan = service.plan(tiny_model["path"], ["tflite-fp32"], store, arts, dataset_path=tmp_path / "data.npz",
                        n_calibration=2, name="tiny")  # fmt: skip
    assert [o.status for o in service.execute(plan, store, service.local_runner(arts)).outcomes] == ["converted"]
    bundle = tmp_path / "tiny.fbb"
    create_bundle(store, arts, "tiny", bundle, capabilities={"tflite": "tflite:cpu"}, settings=FAST)
    results = tmp_path / "results.json"
    r = subprocess.run([tflite_python, "-m", "agent", "run-bundle", str(bundle), "--out", str(results), "--agent-id", "pi-2"],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    (outcome,) = read_results(results)
    assert outcome.ok and outcome.record.runtime == "tflite" and outcome.record.accuracy_top1 == 1.0
    assert import_results(store, results).stored == 1
    assert import_results(store, results).stored == 0  # idempotent
    store.close()
