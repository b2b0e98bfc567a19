"""Offline bundles: made by the controller, run with only numpy and a runtime, imported once."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from controller.artifacts import ArtifactStore
from controller.bundles import create_bundle, import_results
from controller.convert import service
from controller.store import Store
from protocol.bundles import BundleError, read_results
from protocol.packing import pack_files, unpack

ROOT = Path(__file__).resolve().parent.parent
#: Packages a bare device does not have: importing any of them in bundle mode is a bug.
NOT_ON_DEVICE = ["celery", "kombu", "redis", "sqlalchemy", "alembic", "tensorflow", "keras", "typer"]


def tiny_variants(root: Path, tiny_model) -> tuple[Store, ArtifactStore]:
    """A store in ``root`` holding the tiny model's tflite-fp32 and openvino-fp32 variants, with its data set."""
    store = Store(f"sqlite:///{root / 'fb.db'}")
    store.migrate()
    arts = ArtifactStore(root / "artifacts")
    np.savez(root / "data.npz", x=tiny_model["x"], y=tiny_model["y"])
    plan = service.plan(tiny_model["path"], ["tflite-fp32", "openvino-fp32"], store, arts,
                        dataset_path=root / "data.npz", n_calibration=2, name="tiny")  # fmt: skip
    report = service.execute(plan, store, service.local_runner(arts))
    assert [o.status for o in report.outcomes] == ["converted", "converted"], [o.error for o in report.outcomes]
    return store, arts


@pytest.fixture(scope="module")
def made(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("bundle")
    store, arts = tiny_variants(root, tiny_model)
    from protocol import BenchmarkSettings

    out = root / "tiny.fbb"
    manifest = create_bundle(store, arts, "tiny", out, settings=BenchmarkSettings(min_iterations=100, min_duration_s=0.0))
    yield store, out, manifest, bare_device(root)
    store.close()


def bare_device(root: Path) -> Path:
    """A folder that, first on PYTHONPATH, makes importing any of NOT_ON_DEVICE fail, as on a bare device."""
    blocker = root / "blocked"
    for name in NOT_ON_DEVICE:
        (blocker / name).mkdir(parents=True)
        (blocker / name / "__init__.py").write_text(f"raise ImportError('bundle mode imported {name}')\n")
    return blocker


def _run_bundle(bundle, blocker, *extra):
    env = dict(os.environ, PYTHONPATH=f"{blocker}{os.pathsep}{ROOT}")
    return subprocess.run([sys.executable, "-m", "agent", "run-bundle", str(bundle), *extra],
                          capture_output=True, text=True, env=env, timeout=300)  # fmt: skip


def test_bundle_runs_offline_and_imports_once(made, tmp_path):
    store, bundle, manifest, blocker = made
    assert len(manifest["jobs"]) == 2
    assert {j["capability"] for j in manifest["jobs"]} == {"litert:cpu", "openvino:CPU"}
    results = tmp_path / "results.json"
    r = _run_bundle(bundle, blocker, "--out", str(results), "--agent-id", "pi-7")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "[1/2]" in r.stdout and "[2/2]" in r.stdout and "fleetbench import" in r.stdout
    outcomes = read_results(results)
    assert all(o.ok for o in outcomes) and {o.record.agent_id for o in outcomes} == {"pi-7"}
    for o in outcomes:
        assert o.record.accuracy_top1 == 1.0 and o.record.fidelity.top1_agreement == 1.0
    before = store.count_results()
    first = import_results(store, results)
    assert (first.stored, first.already, first.failed) == (2, 0, [])
    second = import_results(store, results)
    assert (second.stored, second.already) == (0, 2)
    assert store.count_results() == before + 2
    # the same bundle on a second device: its own run, its own records (issue 14, finding 3)
    other = tmp_path / "device-b.json"
    r = _run_bundle(bundle, blocker, "--out", str(other), "--agent-id", "deviceB")
    assert r.returncode == 0, r.stdout + r.stderr
    third = import_results(store, other)
    assert (third.stored, third.already, third.failed) == (2, 0, [])
    assert store.count_results() == before + 4
    assert {o.record.agent_id for o in read_results(other)} == {"deviceB"}
    assert not {o.job_id for o in read_results(other)} & {o.job_id for o in outcomes}


def test_tampered_artifact_in_a_bundle_is_not_run(made, tmp_path):
    _, bundle, manifest, blocker = made
    root = unpack(bundle, tmp_path / "open")
    victim = manifest["jobs"][0]["artifact"]["sha256"]
    (root / "artifacts" / victim).write_bytes(b"\x00" * 100)
    files = {str(p.relative_to(root)): p for p in root.rglob("*") if p.is_file()}
    bad = tmp_path / "bad.fbb"
    bad.write_bytes(pack_files(files))
    r = _run_bundle(bad, blocker, "--out", str(tmp_path / "r.json"))
    assert r.returncode == 1 and "FAILED (bad-artifact)" in r.stdout
    outcomes = read_results(tmp_path / "r.json")
    assert [o.ok for o in outcomes].count(False) == 1 and "not run" in next(o for o in outcomes if not o.ok).error


ESCAPING = {"format": "fleetbench-bundle", "schema_version": 1, "jobs": [
    {"artifact": {"sha256": "0" * 64, "uri": "bundle:../../etc/passwd", "size_bytes": 1}}]}


@pytest.mark.parametrize("content,message", [
    (b"not a tar at all", "not a readable fleetbench bundle"),
    (pack_files({"x.txt": b"hi"}), "no bundle.json inside"),
    (pack_files({"bundle.json": json.dumps({"format": "fleetbench-bundle", "schema_version": 1}).encode()}),
     "lists no jobs"),
    (pack_files({"bundle.json": json.dumps(ESCAPING).encode()}), "is not inside the bundle"),
])  # fmt: skip
def test_bad_bundles_are_clear_errors(made, tmp_path, content, message):
    bad = tmp_path / "bad.fbb"
    bad.write_bytes(content)
    r = _run_bundle(bad, made[3])
    assert r.returncode == 2 and message in r.stderr


def test_importing_something_else_is_a_clear_error(tmp_path):
    f = tmp_path / "x.json"
    f.write_text(json.dumps({"hello": 1}))
    with pytest.raises(BundleError, match="not a fleetbench results file"):
        read_results(f)


def _leftovers(tmpdir: Path) -> list[str]:
    return sorted(p.name for p in tmpdir.iterdir())


def test_a_bundle_run_leaves_nothing_in_tmpdir(made, tmp_path):
    """Finding 15: the unpacked bundle (fleetbench-bundle-*) and the jobs' folders go after a run."""
    _, bundle, _, blocker = made
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = dict(os.environ, PYTHONPATH=f"{blocker}{os.pathsep}{ROOT}", TMPDIR=str(tmpdir))
    r = subprocess.run([sys.executable, "-m", "agent", "run-bundle", str(bundle), "--out", str(tmp_path / "r.json")],
                       capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert _leftovers(tmpdir) == []


def test_sigterm_to_run_bundle_leaves_nothing_in_tmpdir(made, tmp_path):
    import signal
    import time

    store, _, _, blocker = made
    from protocol import BenchmarkSettings

    slow = tmp_path / "slow.fbb"  # a job that measures for a while: SIGTERM comes in the middle of it
    create_bundle(store, ArtifactStore(made[1].parent / "artifacts"), "tiny", slow, variants=["tflite-fp32"],
                  settings=BenchmarkSettings(min_iterations=100, min_duration_s=30.0, max_iterations=5_000_000,
                                             timeout_s=300.0))  # fmt: skip
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = dict(os.environ, PYTHONPATH=f"{blocker}{os.pathsep}{ROOT}", TMPDIR=str(tmpdir))
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run-bundle", str(slow), "--out", str(tmp_path / "r.json")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not list(tmpdir.glob("fleetbench-job-*/spec.json")):  # the bundle is unpacked, the job started
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() is not None else "no job"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, proc.stdout.read()
    deadline = time.monotonic() + 10  # the benchmark child dies with its parent
    while _leftovers(tmpdir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _leftovers(tmpdir) == []
    assert not (tmp_path / "r.json").exists()
