"""Finding 15: a job's file:// artifact is read only under the agent's file roots, so a job cannot
make an agent hash (and report on) any local file; and agents leave no private files readable by others."""

import hashlib
import os
import stat
from pathlib import Path

import pytest

from agent.artifacts import FILE_ROOTS_ENV, ArtifactCache, default_file_roots, file_roots
from agent.errors import JobError
from agent.runner import run_job
from protocol import ArtifactRef, BenchmarkSettings, JobSpec

PROBE = Path(__file__).resolve().parent.parent / "agent" / "backends" / "data" / "probe.tflite"
SECRET = Path("/etc/passwd")


def _ref(path: Path, sha: str | None = None) -> ArtifactRef:
    return ArtifactRef(sha256=sha or "0" * 64, uri=path.as_uri(), size_bytes=1, filename=path.name)


def _secret_facts() -> list[str]:
    data = SECRET.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    return [digest[:12], str(len(data))]


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "store"
    r.mkdir()
    (r / "m.tflite").write_bytes(PROBE.read_bytes())
    return r


def test_a_file_under_a_root_is_verified_and_used(root):
    sha = hashlib.sha256((root / "m.tflite").read_bytes()).hexdigest()
    assert ArtifactCache(root.parent / "cache", roots=[root]).path(_ref(root / "m.tflite", sha)) == root / "m.tflite"


@pytest.mark.parametrize("target", [
    lambda root: SECRET,  # outside
    lambda root: root / ".." / ".." / ".." / ".." / ".." / ".." / SECRET.relative_to("/"),  # .. out of the root
    lambda root: (root / "link").symlink_to(SECRET) or root / "link",  # a symlink in the root pointing out
])  # fmt: skip
def test_a_file_outside_the_roots_is_refused_unread(root, target):
    path = target(root)
    with pytest.raises(JobError) as err:
        ArtifactCache(root.parent / "cache", roots=[root]).path(_ref(path))
    message = err.value.message
    assert err.value.kind == "bad-artifact" and FILE_ROOTS_ENV in message and "--file-root" in message, message
    assert "outside this agent's file roots" in message and "not read" in message
    assert not any(fact in message for fact in _secret_facts()), message


def test_no_roots_refuses_every_file(monkeypatch, root):
    monkeypatch.setenv(FILE_ROOTS_ENV, "")
    assert file_roots() == []
    with pytest.raises(JobError, match="file roots \\(none\\)"):
        ArtifactCache(root.parent / "cache").path(_ref(root / "m.tflite"))


def test_roots_come_from_the_environment_or_default_to_the_controllers_store(monkeypatch, tmp_path):
    monkeypatch.setenv(FILE_ROOTS_ENV, os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")]))
    assert file_roots() == [tmp_path / "a", tmp_path / "b"]
    monkeypatch.delenv(FILE_ROOTS_ENV)
    monkeypatch.setenv("FLEETBENCH_HOME", str(tmp_path / "home"))
    assert file_roots() == default_file_roots() == [tmp_path / "home" / "artifacts"]
    monkeypatch.delenv("FLEETBENCH_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert file_roots() == [tmp_path / "xdg" / "fleetbench" / "artifacts"]


def test_a_job_naming_etc_passwd_is_refused_and_reports_nothing_about_it(monkeypatch, tmp_path):
    """Through a real benchmark child, as an agent runs a job from the broker."""
    monkeypatch.setenv(FILE_ROOTS_ENV, str(tmp_path))
    spec = JobSpec(job_id="job-p", model_id="m", model_name="probe", variant="tflite-fp32", capability="litert:cpu",
                   artifact=_ref(SECRET), settings=BenchmarkSettings(min_iterations=10, min_duration_s=0.0, timeout_s=60))  # fmt: skip
    outcome = run_job(spec.to_dict(), "agent-t")
    assert not outcome.ok and outcome.error_kind == "bad-artifact" and outcome.record is None, outcome
    assert FILE_ROOTS_ENV in outcome.error and "--file-root" in outcome.error, outcome.error
    assert not any(fact in outcome.to_json() for fact in _secret_facts()), outcome.error


def test_the_embedded_agent_reads_the_data_dirs_artifact_store(tmp_path):
    from controller.embedded import LocalAgent

    a = LocalAgent("redis://127.0.0.1:1/0", "x", tmp_path / "agent.log", file_roots=(tmp_path / "artifacts",))
    argv = a.argv()
    assert argv[argv.index("--file-root") + 1] == str(tmp_path / "artifacts")


def test_logs_of_started_processes_are_private(tmp_path):
    from protocol.proc import spawn as _spawn

    old = tmp_path / "old.log"
    old.write_text("from an older release\n")
    old.chmod(0o644)
    for log in (tmp_path / "logs" / "agent.log", old):
        proc = _spawn(["true"], log)
        proc.wait()
        assert stat.S_IMODE(log.stat().st_mode) == 0o600, oct(log.stat().st_mode)


@pytest.mark.parametrize("how", ["flag", "config"])
def test_the_agent_cli_sets_the_roots_its_benchmark_children_inherit(monkeypatch, tmp_path, how):
    import json

    from agent.cli import main

    monkeypatch.delenv(FILE_ROOTS_ENV, raising=False)
    monkeypatch.setenv("FLEETBENCH_DISABLE_GPU_PROBE", "1")
    if how == "flag":
        argv = ["--file-root", str(tmp_path / "a"), "--file-root", str(tmp_path / "b"), "--probe"]
    else:
        cfg = tmp_path / "agent.json"
        cfg.write_text(json.dumps({"file_roots": [str(tmp_path / "a"), str(tmp_path / "b")]}))
        argv = ["--config", str(cfg), "--probe"]
    main(argv)
    assert file_roots() == [tmp_path / "a", tmp_path / "b"]
