"""MLPerf LoadGen scenarios driving a real LiteRT model through the agent's benchmark child."""

import pytest

from agent.loadgen import read_detail_log, result_from_log
from agent.runner import run_job
from protocol import BenchmarkSettings, JobSpec, ResultRecord

pytest.importorskip("mlperf_loadgen", reason="mlcommons-loadgen is part of fleetbench[all]; run `make test`")

BASE = dict(threads=1, warmup_iterations=2, min_iterations=100, min_duration_s=0.0, timeout_s=120)


@pytest.mark.parametrize(
    "values, verdict, reasons",
    [
        ({"result_validity": "VALID", "result_min_duration_met": True, "early_stopping_met": True}, "VALID", []),
        (
            {"result_validity": "INVALID", "result_min_duration_met": False, "result_min_queries_met": True,
             "result_invalid_reason": "Increase expected QPS so the loadgen pre-generates a larger (coalesced) query. "},
            "INVALID",
            ["min duration not satisfied", "Increase expected QPS"],
        ),
        ({"result_validity": "INVALID", "early_stopping_met": False}, "INVALID", ["early stopping not satisfied"]),
        ({"result_validity": "INVALID", "result_perf_constraints_met": False}, "INVALID", ["latency bound was exceeded"]),
        ({}, "INVALID", ["without a reason"]),
    ],
)  # fmt: skip
def test_verdict_and_reasons_come_from_loadgens_log(values, verdict, reasons):
    r = result_from_log(dict(values, **{"result_90.00_percentile_latency_ns": 2_500_000}), "Server", 50.0)
    assert r.verdict == verdict
    assert len(r.reasons) == len(reasons) and all(want in got for want, got in zip(reasons, r.reasons))
    assert r.percentiles_ms == {"90.00": 2.5}


def test_detail_log_lines_are_parsed_and_garbage_skipped(tmp_path):
    log = tmp_path / "mlperf_log_detail.txt"
    log.write_text(
        ':::MLLOG {"key": "result_validity", "value": "VALID", "time_ms": 1}\n'
        "not a log line\n"
        ":::MLLOG {broken json\n"
        ':::MLLOG {"key": "result_query_count", "value": 70, "time_ms": 2}\n'
    )
    assert read_detail_log(log) == {"result_validity": "VALID", "result_query_count": 70}


@pytest.fixture
def job(tmp_path, tiny_model):
    from controller.artifacts import ArtifactStore

    art = ArtifactStore(tmp_path / "artifacts").put_file(tiny_model["path"])

    def _job(**settings) -> ResultRecord:
        spec = JobSpec(job_id="lg", model_id="m", model_name="tiny", variant="tflite-fp32", capability="litert:cpu",
                       artifact=art, settings=BenchmarkSettings(**BASE, **settings))  # fmt: skip
        outcome = run_job(spec.to_dict(), "agent-lg")
        assert outcome.ok, outcome.error
        return ResultRecord.from_json(outcome.record.to_json())  # survives the wire format

    return _job


def test_single_stream_is_valid_with_loadgens_percentiles(job):
    r = job(loadgen_scenario="SingleStream", loadgen_min_duration_s=0.5, loadgen_min_queries=700)
    lg = r.loadgen
    assert lg.scenario == "SingleStream" and lg.verdict == "VALID" and lg.reasons == ()
    assert lg.queries >= 700 and lg.duration_s >= 0.5
    assert {"50.00", "90.00", "99.00"} <= set(lg.percentiles_ms)
    assert 0 < lg.percentiles_ms["50.00"] <= lg.percentiles_ms["99.00"]
    assert lg.samples_per_s > 0 and lg.version
    assert len(r.samples_ns) >= 100  # the agent's own measurement is still there


def test_offline_reports_samples_per_second(job):
    lg = job(loadgen_scenario="Offline", loadgen_min_duration_s=0.5, loadgen_min_queries=1).loadgen
    assert lg.scenario == "Offline" and lg.samples_per_s > 0
    assert lg.verdict in ("VALID", "INVALID") and (lg.verdict == "VALID") == (lg.reasons == ())


def test_server_at_a_sustainable_rate_meets_its_latency_bound(job):
    lg = job(loadgen_scenario="Server", loadgen_target_qps=100, loadgen_target_latency_ms=50,
             loadgen_min_duration_s=1.0, loadgen_min_queries=100).loadgen  # fmt: skip
    assert lg.scenario == "Server" and lg.target_qps == 100
    assert not any("latency bound" in why for why in lg.reasons), lg.reasons
    assert 80 < lg.samples_per_s < 120  # Poisson arrivals at 100/s


def test_server_past_its_latency_bound_is_invalid_with_the_reason(job):
    # No inference finishes within 1 microsecond, so the p99 bound cannot hold.
    lg = job(loadgen_scenario="Server", loadgen_target_qps=1000, loadgen_target_latency_ms=0.001,
             loadgen_min_duration_s=0.3, loadgen_min_queries=100).loadgen  # fmt: skip
    assert lg.verdict == "INVALID"
    assert any("latency bound was exceeded" in why for why in lg.reasons), lg.reasons


def test_server_without_a_rate_is_a_bad_spec():
    problems = BenchmarkSettings(loadgen_scenario="Server").problems()
    assert any("loadgen_target_qps" in p for p in problems)
    assert any("loadgen_scenario" in p for p in BenchmarkSettings(loadgen_scenario="MultiStream").problems())
