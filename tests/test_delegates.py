"""External TFLite delegates given by path: a real shared library, loaded by LiteRT's load_delegate."""

import json

import pytest

from agent.backends import create, delegates, probe_all
from agent.errors import JobError
from agent.runner import run_job
from protocol import BenchmarkSettings

FAST = BenchmarkSettings(threads=1, warmup_iterations=2, min_iterations=100, min_duration_s=0.0, timeout_s=120)


@pytest.fixture
def configure(monkeypatch, tmp_path, delegate_lib):
    """Set $FLEETBENCH_DELEGATES as the agent CLI does from its config; returns the marker file."""
    marker = tmp_path / "prepare.log"

    def _configure(**extra):
        entries = {"passthrough": {"path": str(delegate_lib), "options": {"marker": str(marker)}, "device_name": "Test NPU"}}
        entries.update(extra)
        monkeypatch.setenv(delegates.ENV, json.dumps(entries))
        monkeypatch.setenv("FLEETBENCH_DISABLE_GPU_PROBE", "1")
        return marker

    return _configure


@pytest.mark.parametrize(
    "config, error",
    [
        ([], "must be an object"),
        ({"edgetpu": {}}, "needs \"path\""),
        ({"cpu": {"path": "x.so"}}, "'cpu' is the plain interpreter"),
        ({"Edge TPU": {"path": "x.so"}}, "lower-case"),
        ({"edgetpu": {"path": "x.so", "colour": 1}}, "unknown key(s) colour"),
        ({"edgetpu": {"path": "x.so", "options": "device=usb"}}, "options must be an object"),
        ({"edgetpu": {"path": "x.so", "runtimes": ["onnx"]}}, "runtimes must be a list"),
    ],
)
def test_bad_delegate_config_names_the_entry(config, error):
    with pytest.raises(ValueError) as exc:
        delegates.check_config(config)
    assert error in str(exc.value)


def test_gpu_delegate_is_tflite_only_and_has_a_default_library(monkeypatch):
    monkeypatch.setenv(delegates.ENV, json.dumps({"gpu": {"path": "/opt/libgpu.so"}, "npu": {"path": "n.so"}}))
    assert set(delegates.configured("litert")) == {"npu"}  # litert:gpu is the CompiledModel accelerator
    assert delegates.configured("tflite")["gpu"]["path"] == "/opt/libgpu.so"
    monkeypatch.delenv(delegates.ENV)
    assert delegates.configured("tflite")["gpu"]["path"] == delegates.DEFAULT_GPU_DELEGATE
    assert delegates.configured("litert") == {}


def test_probe_offers_a_delegate_only_when_it_really_loads(configure, delegate_lib, tmp_path):
    marker = configure(
        absent={"path": str(tmp_path / "libnothing.so")},
        nodevice={"path": str(delegate_lib), "options": {"fail": "create"}},
        rejects={"path": str(delegate_lib), "options": {"fail": "prepare"}},
    )
    caps, missing = probe_all()
    cap = next(c for c in caps if c.name == "litert:passthrough")
    assert cap.device_name == "Test NPU" and cap.device == "passthrough"
    assert marker.read_text().count("prepare") >= 1  # the probe child applied it to the probe model
    assert "cannot open shared object file" in missing["litert:absent"]
    assert "no device attached" in missing["litert:nodevice"] and "LD_LIBRARY_PATH" in missing["litert:nodevice"]
    assert "rejected the model" in missing["litert:rejects"]
    assert not {"litert:absent", "litert:nodevice", "litert:rejects"} & {c.name for c in caps}


def test_benchmark_through_a_delegate_in_the_child(configure, tiny_model, tmp_path):
    from controller.artifacts import ArtifactStore
    from protocol import JobSpec

    marker = configure()
    store = ArtifactStore(tmp_path / "artifacts")
    spec = JobSpec(
        job_id="d1", model_id="m", model_name="tiny", variant="tflite-fp32", capability="litert:passthrough",
        artifact=store.put_file(tiny_model["path"]), settings=FAST,
    )  # fmt: skip
    outcome = run_job(spec.to_dict(), "agent-d")
    assert outcome.ok, outcome.error
    r = outcome.record
    assert (r.capability, r.device, r.device_name, r.runtime) == ("litert:passthrough", "passthrough", "Test NPU", "litert")
    assert len(r.samples_ns) >= 100
    assert "prepare" in marker.read_text()  # the benchmark child ran the model through the delegate


def test_a_delegate_that_rejects_the_model_fails_the_job_clearly(configure, tiny_model, delegate_lib):
    configure(rejects={"path": str(delegate_lib), "options": {"fail": "prepare"}})
    with pytest.raises(JobError) as err:
        create("litert").load(str(tiny_model["path"]), "rejects", FAST)
    assert err.value.kind == "load-failed" and "litert:cpu" in err.value.message


def test_unconfigured_device_lists_what_is_offered(configure, tiny_model):
    configure()
    with pytest.raises(JobError) as err:
        create("litert").load(str(tiny_model["path"]), "edgetpu", FAST)
    assert "litert:cpu, litert:passthrough" in err.value.message and "delegates" in err.value.message


def test_agent_config_rejects_a_bad_delegates_entry(tmp_path):
    from agent.cli import load_config

    cfg = tmp_path / "agent.json"
    cfg.write_text(json.dumps({"delegates": {"edgetpu": {"options": {}}}}))
    with pytest.raises(SystemExit) as exc:
        load_config(str(cfg))
    assert "delegates.edgetpu" in str(exc.value) and "path" in str(exc.value)
