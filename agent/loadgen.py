"""Optional MLPerf LoadGen scenarios (``pip install mlcommons-loadgen``).

LoadGen drives the backend itself (SingleStream: one query at a time;
Offline: every sample at once; Server: Poisson arrivals at a target rate),
times each query, and judges the run VALID or INVALID. We keep its verdict
and its percentile estimates exactly as it logged them, from
``mlperf_log_detail.txt``; the record's own single-stream samples still come
from :mod:`agent.measure`.

The system under test is one worker thread that runs the backend on the
inputs prepared once (as the vendor tools and our own loop do), so queries
that arrive while it is busy wait in a queue: on one device that waiting is
the latency a Server sees. The query sample library holds that one prepared
input; LoadGen's accuracy mode is not used (accuracy comes from the labelled
validation split).
"""

from __future__ import annotations

import json
import queue
import tempfile
import threading
import time
from pathlib import Path

from agent.errors import JobError
from protocol import BenchmarkSettings, LoadGenResult
from protocol.errors import ErrorKind

#: QSL size: LoadGen picks sample indices from it; every index maps to the prepared input.
QSL_SAMPLES = 64


def _lg():
    try:
        import mlperf_loadgen
    except ImportError:
        raise JobError(
            ErrorKind.UNSUPPORTED_SETTING,
            "this job asks for an MLPerf LoadGen scenario, but mlcommons-loadgen is not installed on this agent; "
            "install it with `pip install mlcommons-loadgen` (or `fleetbench[loadgen]`), or drop loadgen_scenario",
        ) from None
    return mlperf_loadgen


def read_detail_log(path: Path) -> dict:
    """The ``:::MLLOG`` key/value pairs of a LoadGen detail log (last value wins)."""
    values: dict = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.startswith(":::MLLOG "):
            continue
        try:
            entry = json.loads(line[len(":::MLLOG ") :])
        except json.JSONDecodeError:
            continue
        values[entry.get("key")] = entry.get("value")
    return values


_CHECKS = [
    ("result_min_duration_met", "LoadGen: min duration not satisfied (raise loadgen_min_duration_s or the expected QPS)"),
    ("result_min_queries_met", "LoadGen: min queries not satisfied (raise loadgen_min_duration_s or loadgen_min_queries)"),
    ("result_perf_constraints_met", "LoadGen: performance constraints not met (the latency bound was exceeded at this rate)"),
    ("early_stopping_met", "LoadGen: early stopping not satisfied (too few queries for the percentile it judges)"),
]


def result_from_log(values: dict, scenario: str, target_qps: float, duration_s: float = 0.0) -> LoadGenResult:
    """A :class:`LoadGenResult` from the detail log's values."""
    verdict = str(values.get("result_validity", "INVALID"))
    reasons = [why for key, why in _CHECKS if values.get(key) is False]
    extra = str(values.get("result_invalid_reason") or "").strip()
    if extra:
        reasons.append(f"LoadGen: {extra}")
    if verdict != "VALID" and not reasons:
        reasons.append("LoadGen judged the run INVALID without a reason in its log")
    percentiles = {
        key[len("result_") : -len("_percentile_latency_ns")]: float(v) / 1e6
        for key, v in values.items()
        if isinstance(key, str) and key.startswith("result_") and key.endswith("_percentile_latency_ns")
    }
    rate_key = {"Server": "result_completed_samples_per_sec", "Offline": "result_samples_per_second"}.get(
        scenario, "result_qps_with_loadgen_overhead"
    )
    return LoadGenResult(
        scenario=scenario,
        verdict=verdict,
        reasons=tuple(reasons) if verdict != "VALID" else (),
        percentiles_ms=percentiles,
        mean_ms=float(values.get("result_mean_latency_ns", 0)) / 1e6,
        queries=int(values.get("result_query_count", 0)),
        duration_s=duration_s,
        samples_per_s=float(values.get(rate_key, 0.0)),
        target_qps=float(values.get("effective_target_qps", target_qps) or 0.0),
        version=str(values.get("loadgen_version", "")).split(" @")[0],
    )


class _SystemUnderTest:
    """One worker thread that runs the backend for each query LoadGen issues."""

    def __init__(self, lg, run) -> None:
        self.lg, self.run = lg, run
        self.queue: queue.Queue = queue.Queue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._work, name="loadgen-sut", daemon=True)
        self.thread.start()

    def issue(self, query_samples) -> None:
        for q in query_samples:
            self.queue.put(q.id)

    def flush(self) -> None:
        pass

    def _work(self) -> None:
        lg = self.lg
        while True:
            qid = self.queue.get()
            if qid is None:
                return
            if self.error is None:
                try:
                    self.run()
                except BaseException as exc:  # noqa: BLE001 - reported after the test ends
                    self.error = exc
            lg.QuerySamplesComplete([lg.QuerySampleResponse(qid, 0, 0)])

    def stop(self) -> None:
        self.queue.put(None)
        self.thread.join()


def run_scenario(run, settings: BenchmarkSettings, expected_latency_ns: int) -> LoadGenResult:
    """Run ``settings.loadgen_scenario`` under LoadGen with ``run`` as the system under test."""
    lg = _lg()
    scenario = settings.loadgen_scenario
    ts = lg.TestSettings()
    ts.scenario = getattr(lg.TestScenario, scenario)
    ts.mode = lg.TestMode.PerformanceOnly
    ts.min_duration_ms = int(settings.loadgen_min_duration_s * 1000)
    ts.min_query_count = settings.loadgen_min_queries
    expected_latency_ns = max(int(expected_latency_ns), 1000)
    ts.single_stream_expected_latency_ns = expected_latency_ns
    measured_qps = 1e9 / expected_latency_ns
    target_qps = settings.loadgen_target_qps
    if scenario == "Offline":
        ts.offline_expected_qps = target_qps or measured_qps
    if scenario == "Server":
        ts.server_target_qps = target_qps
        ts.server_target_latency_ns = int(settings.loadgen_target_latency_ms * 1e6)
    sut_impl = _SystemUnderTest(lg, run)
    sut = lg.ConstructSUT(sut_impl.issue, sut_impl.flush)
    qsl = lg.ConstructQSL(QSL_SAMPLES, QSL_SAMPLES, lambda samples: None, lambda samples: None)
    try:
        with tempfile.TemporaryDirectory(prefix="fleetbench-loadgen-") as out:
            log = lg.LogSettings()
            log.log_output.outdir = out
            log.log_output.copy_summary_to_stdout = False
            started = time.perf_counter()
            lg.StartTestWithLogSettings(sut, qsl, ts, log)
            duration_s = time.perf_counter() - started
            values = read_detail_log(Path(out) / "mlperf_log_detail.txt")
    finally:
        sut_impl.stop()
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    if sut_impl.error is not None:
        raise JobError(ErrorKind.INFERENCE_FAILED, f"inference failed under LoadGen ({scenario}): {sut_impl.error}")
    return result_from_log(values, scenario, target_qps, duration_s)
