"""The wire contract: JSON round trips, clear errors on bad messages, versioning."""

import copy
import json

import pytest

from protocol import (
    SCHEMA_VERSION,
    ArtifactRef,
    BenchmarkSettings,
    ContractError,
    JobOutcome,
    JobSpec,
    ResultRecord,
    queue_for,
)


def test_golden_record_round_trips_through_json(golden_record):
    text = golden_record.to_json()
    again = ResultRecord.from_json(text)
    assert again == golden_record
    assert json.loads(text)["schema_version"] == SCHEMA_VERSION
    golden_record.check_consistent()


def test_record_carries_what_the_contract_promises(golden_record):
    d = golden_record.to_dict()
    for key in [
        "job_id", "attempt", "model_id", "artifact_sha256", "variant", "runtime", "runtime_version",
        "capability", "device", "device_name", "host", "settings", "samples_ns", "stats", "validity",
        "throughput_ips", "accuracy_top1", "started_at", "finished_at",
    ]:  # fmt: skip
        assert key in d, key
    assert set(d["host"]) == {"hostname", "cpu_model", "cpu_cores", "ram_bytes", "os", "python", "machine", "emulated_by"}
    assert {"threads", "warmup_iterations", "min_iterations", "min_duration_s"} <= set(d["settings"])
    assert {"load_ms", "first_inference_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "std_ms",
            "min_ms", "max_ms"} <= set(d["stats"])  # fmt: skip


def _broken(golden_record, mutate):
    d = copy.deepcopy(golden_record.to_dict())
    mutate(d)
    return d


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda d: d["stats"].pop("p90_ms"), "ResultRecord.stats: missing field 'p90_ms'"),
        (lambda d: d["samples_ns"].__setitem__(3, "x"), "ResultRecord.samples_ns[3]: expected an integer"),
        (lambda d: d.__setitem__("attempt", True), "ResultRecord.attempt: expected an integer, got bool"),
        (lambda d: d.__setitem__("host", "box"), "ResultRecord.host: expected an object"),
        (lambda d: d.__setitem__("variant", None), "ResultRecord.variant: must not be null"),
        (lambda d: d["settings"].__setitem__("min_duration_s", "1s"), "ResultRecord.settings.min_duration_s"),
    ],
)
def test_bad_records_name_the_field(golden_record, mutate, message):
    with pytest.raises(ContractError) as err:
        ResultRecord.from_dict(_broken(golden_record, mutate))
    assert message in str(err.value)


def test_other_schema_versions_are_refused_with_advice(golden_record):
    d = _broken(golden_record, lambda d: d.__setitem__("schema_version", SCHEMA_VERSION + 1))
    with pytest.raises(ContractError, match="upgrade the controller and agents"):
        ResultRecord.from_dict(d)


def test_not_json_is_a_contract_error():
    with pytest.raises(ContractError, match="not valid JSON"):
        JobSpec.from_json(b"\x80\x04pickle")


def test_stats_that_do_not_follow_from_the_samples_are_caught(golden_record):
    d = _broken(golden_record, lambda d: d["stats"].__setitem__("p50_ms", d["stats"]["p50_ms"] * 2))
    with pytest.raises(ContractError, match="p50_ms does not match"):
        ResultRecord.from_dict(d).check_consistent()


def test_job_spec_round_trip_with_defaults():
    ref = ArtifactRef(sha256="ab" * 32, uri="file:///tmp/x", size_bytes=3)
    spec = JobSpec(job_id="j1", model_id="m", model_name="n", variant="tflite-fp32", capability="litert:cpu", artifact=ref)
    again = JobSpec.from_json(spec.to_json())
    assert again == spec and again.dataset is None and again.attempt == 1
    outcome = JobOutcome(job_id="j1", attempt=1, ok=False, error="boom", error_kind="crashed")
    assert JobOutcome.from_json(outcome.to_json()) == outcome


@pytest.mark.parametrize(
    "kw,problem",
    [
        (dict(threads=-1), "threads"),
        (dict(min_iterations=0), "min_iterations"),
        (dict(min_iterations=10, max_iterations=5), "max_iterations"),
        (dict(min_duration_s=5, max_duration_s=1), "max_duration_s"),
        (dict(timeout_s=0), "timeout_s"),
        (dict(warmup_iterations=-3), "warmup_iterations"),
    ],
)
def test_settings_problems(kw, problem):
    problems = BenchmarkSettings(**kw).problems()
    assert len(problems) == 1 and problem in problems[0]
    assert BenchmarkSettings().problems() == []


@pytest.mark.parametrize("cap,queue", [("litert:cpu", "fleetbench.cap.litert:cpu"), ("openvino:HETERO:FPGA,CPU", "fleetbench.cap.openvino:HETERO:FPGA,CPU")])
def test_queue_per_capability(cap, queue):
    assert queue_for(cap) == queue


@pytest.mark.parametrize("bad", ["", "litert cpu"])
def test_queue_refuses_bad_capability(bad):
    with pytest.raises(ValueError):
        queue_for(bad)
