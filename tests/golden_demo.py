"""Golden data for the dashboard's tests: three real `fleetbench demo` runs, kept as JSON.

tests/data/demo_runs.json holds what three demo runs stored (agents' inventories, the three
demo sweeps with their jobs, and 21 records): one with 2 threads and 2 requests in flight,
then two alike. Regenerate it with

    FLEETBENCH_HOME=/tmp/fbgold fleetbench demo --min-duration 0 --min-iterations 400 --threads 2 --throughput-requests 2
    FLEETBENCH_HOME=/tmp/fbgold fleetbench demo --min-duration 0 --min-iterations 400   # twice
    python -m tests.golden_demo dump sqlite:////tmp/fbgold/fleetbench.db tests/data/demo_runs.json

tests/data/profile_runs.json (issue 17) holds profiled runs, made and dumped the same way:

    FLEETBENCH_HOME=/tmp/fbgoldp fleetbench demo --min-duration 0 --min-iterations 400 --profile
    FLEETBENCH_HOME=/tmp/fbgoldp fleetbench sweep palm.yaml   # name: palm-profile, profile: true, the corpus's
        # palm_detection_lite.tflite, variants [tflite-fp16, tflite-dynamic-int8, openvino-fp32, openvino-fp16],
        # settings {min_iterations: 400, min_duration_s: 0}
    python -m tests.golden_demo dump sqlite:////tmp/fbgoldp/fleetbench.db tests/data/profile_runs.json
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

GOLDEN = Path(__file__).parent / "data" / "demo_runs.json"
_JOB_COLUMNS = ("job_id", "sweep_id", "model_id", "model_name", "variant", "capability", "pinned_agent", "settings",
                "spec", "state", "reason", "error_kind", "attempt", "sent_attempt", "max_attempts", "agent_id",
                "created_at", "updated_at")  # fmt: skip


def _iso(value) -> str | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)).isoformat()


def dump(url: str, out: Path) -> dict:
    from controller.store import Store

    store = Store(url)
    doc = {
        "agents": [dict(a.inventory, heartbeat_at=_iso(a.last_heartbeat)) for a in store.agents()],
        "sweeps": [dict(sweep_id=s.sweep_id, name=s.name, spec=s.spec, state=s.state, created_at=_iso(s.created_at),
                        finished_at=_iso(s.finished_at)) for s in reversed(store.sweeps())],  # fmt: skip
        "jobs": [{c: (_iso(getattr(j, c)) if c.endswith("_at") else getattr(j, c)) for c in _JOB_COLUMNS}
                 for j in store.jobs()],  # fmt: skip
        "records": [r.to_dict() for r in reversed(store.results())],
    }
    store.close()
    out.write_text(json.dumps(doc, indent=None, separators=(",", ":")) + "\n")
    return doc


def seed(store, path: Path = GOLDEN, shift: dt.timedelta | None = None) -> dict:
    """Store the golden runs through the store's own paths (record_agent, add_sweep, ingest).

    ``shift`` moves every timestamp (so heartbeats can be made recent, say). Returns counts.
    """
    from controller.store.models import JobRow, SweepRow
    from protocol import AgentInventory, JobOutcome, ResultRecord

    doc = json.loads(path.read_text())
    shift = shift or dt.timedelta(0)

    def ts(value):
        return None if value is None else dt.datetime.fromisoformat(value) + shift

    for inv in doc["agents"]:
        store.record_agent(AgentInventory.from_dict(dict(inv, heartbeat_at=ts(inv["heartbeat_at"]).isoformat())))
    for s in doc["sweeps"]:
        jobs = [JobRow(**{**j, "state": "running", "created_at": ts(j["created_at"]), "updated_at": ts(j["updated_at"])})
                for j in doc["jobs"] if j["sweep_id"] == s["sweep_id"]]  # fmt: skip
        store.add_sweep(SweepRow(**{**s, "created_at": ts(s["created_at"]), "finished_at": ts(s["finished_at"])}), jobs)
    outcomes = []
    for r in doc["records"]:
        record = ResultRecord.from_dict(dict(r, finished_at=ts(r["finished_at"]).isoformat()))
        outcomes.append(JobOutcome(job_id=record.job_id, attempt=record.attempt, ok=True, record=record,
                                   agent_id=record.agent_id))  # fmt: skip
    answers = store.ingest_many(outcomes)
    assert answers == ["stored"] * len(outcomes), answers
    return {"agents": len(doc["agents"]), "sweeps": len(doc["sweeps"]), "records": len(outcomes)}


def slowed(record, factor: float, job_id: str | None = None):
    """``record`` (a ResultRecord) with every sample ``factor`` times longer, its statistics recomputed and
    its throughput divided by ``factor``: a real record of a slower run, as the store accepts it."""
    import dataclasses

    from protocol import LatencyStats
    from protocol.stats import summarize_ns

    samples = tuple(int(s * factor) for s in record.samples_ns)
    stats = LatencyStats.from_summary(summarize_ns(samples), load_ms=record.stats.load_ms,
                                      first_inference_ms=record.stats.first_inference_ms)  # fmt: skip
    return dataclasses.replace(record, job_id=job_id or "slow-" + record.job_id[:10], samples_ns=samples, stats=stats,
                               throughput_ips=record.throughput_ips / factor)  # fmt: skip


def resampled(record, factor: float, seed: int, job_id: str, at: dt.datetime, tail: float = 1.0):
    """Another run of ``record``: its real samples drawn again with replacement (``seed``), every one ``factor``
    times longer, and the slowest 10% ``tail`` times longer again; statistics recomputed, finished at ``at``."""
    import dataclasses

    import numpy as np

    from protocol import LatencyStats
    from protocol.stats import summarize_ns

    base = np.asarray(record.samples_ns, dtype=np.float64)
    s = np.random.default_rng(seed).choice(base, size=base.size) * factor
    if tail != 1.0:
        s[s >= np.quantile(s, 0.9)] *= tail
    samples = s.astype(np.int64).tolist()
    stats = LatencyStats.from_summary(summarize_ns(samples), load_ms=record.stats.load_ms,
                                      first_inference_ms=record.stats.first_inference_ms)  # fmt: skip
    return dataclasses.replace(record, job_id=job_id, samples_ns=samples, stats=stats, finished_at=at.isoformat(),
                               throughput_ips=record.throughput_ips / factor)  # fmt: skip


def sustained(record, drift: float, windows: int = 6, minutes: float = 30.0, job_id: str | None = None):
    """``record`` as a sustained run of ``minutes`` in ``windows`` windows, each window its samples slowed a step
    further, to ``drift`` times in the last: the device heating (55 to 85 °C) and its clock falling as it does. Its
    statistics and windows derive from its samples, as the store checks."""
    import dataclasses

    import numpy as np

    from protocol import LatencyStats, Sustained, SustainedWindow, Validity
    from protocol.stats import summarize_ns, window_percentiles

    base = np.asarray(record.samples_ns, dtype=np.int64)
    steps = [1 + (drift - 1) * k / (windows - 1) for k in range(windows)]
    samples = np.concatenate([(base * f).astype(np.int64) for f in steps])
    counts = [len(base)] * windows
    heat = [55 + 30 * k / (windows - 1) for k in range(windows)]
    ws = tuple(SustainedWindow(start_s=k * minutes * 60 / windows, count=n, p50_ms=p50, p99_ms=p99, hottest_c=heat[k],
                               cpu_mhz=2400 / steps[k])
               for k, (n, (p50, p99)) in enumerate(zip(counts, window_percentiles(samples, counts))))  # fmt: skip
    stats = LatencyStats.from_summary(summarize_ns(samples), load_ms=record.stats.load_ms,
                                      first_inference_ms=record.stats.first_inference_ms)  # fmt: skip
    return dataclasses.replace(record, job_id=job_id or "sus-" + record.job_id[:10], samples_ns=samples.tolist(),
                               stats=stats, validity=Validity(True, ()),
                               sustained=Sustained(seconds=minutes * 60, window_s=minutes * 60 / windows, windows=ws,
                                                   drift_ratio=ws[-1].p50_ms / ws[0].p50_ms))  # fmt: skip


def seed_conditions(store) -> int:
    """Sustained runs of three golden variants on litert:cpu (drift 1.02, 1.15 and 1.4), each with an energy figure
    from a RAPL package domain, the last disturbed and throttled. Returns how many were stored."""
    import dataclasses

    from protocol import DeviceConditions, EnergyDomain, EnergyRecord, JobOutcome, ResultRecord, ThermalState

    doc = json.loads(GOLDEN.read_text())
    picked = {}
    for r in doc["records"]:
        if r["capability"] == "litert:cpu" and r["variant"] in ("tflite-fp32", "tflite-fp16", "tflite-int8"):
            picked.setdefault(r["variant"], r)
    outcomes = []
    for i, (variant, drift) in enumerate([("tflite-fp32", 1.02), ("tflite-fp16", 1.15), ("tflite-int8", 1.4)]):
        r = sustained(ResultRecord.from_dict(picked[variant]), drift)
        mj = r.stats.mean_ms * 9.0  # about 9 W while it runs
        energy = EnergyRecord(valid=True, why="", interval_s=0.02, intervals=90_000, seconds=1800.0, inferences=r.stats.count,
                              mj_per_inference=mj, domains=(EnergyDomain("package-0 (intel-rapl:0)", "rapl", mj * r.stats.count / 1e3, 9.0 - i, 14.0),))  # fmt: skip
        hot = i == 2
        cond = DeviceConditions(before=ThermalState({"x86_pkg_temp (thermal_zone0)": 55.0}, {"cpu0": 2400.0}, "powersave"),
                                after=ThermalState({"x86_pkg_temp (thermal_zone0)": 85.0}, {"cpu0": 1700.0 if hot else 2400.0}, "powersave"),
                                throttled=hot, throttle_why="cpu0 fell from 2,400 to 1,700 MHz during the job" if hot else "",
                                other_cpu_cores=0.9 if hot else 0.02, disturbed=hot, disturbance_max_cores=0.25, seconds=1800.0)  # fmt: skip
        r = dataclasses.replace(r, energy=energy, conditions=cond, finished_at=dt.datetime.now(dt.timezone.utc).isoformat())
        outcomes.append(JobOutcome(job_id=r.job_id, attempt=r.attempt, ok=True, record=r, agent_id=r.agent_id))
    assert store.ingest_many(outcomes) == ["stored"] * len(outcomes)
    return len(outcomes)


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "dump":
        sys.exit("usage: python -m tests.golden_demo dump DB_URL OUT.json")
    d = dump(sys.argv[2], Path(sys.argv[3]))
    print(f"{len(d['agents'])} agents, {len(d['sweeps'])} sweeps, {len(d['jobs'])} jobs, {len(d['records'])} records")


QUANT_DETAILS = Path(__file__).parent / "data" / "quant_details.json"


def seed_quant(store) -> str:
    """Attach the recorded accuracy-keeping details (tests/data/quant_details.json: what `fleetbench demo --quant`
    and `fleetbench quant-report` stored for the demo model) to the golden runs' model, as its stored variants.
    Returns the model's id."""
    from controller.store.models import VariantRow

    doc = json.loads(GOLDEN.read_text())
    rec = next(r for r in doc["records"] if r["variant"] == "tflite-int8")
    model_id = rec["model_id"]
    store.add_model(model_id, rec["model_name"], "keras", "digits-cnn.keras", 1)
    now = dt.datetime.now(dt.timezone.utc)
    ran = {r["variant"]: r["artifact_sha256"] for r in doc["records"]}  # the file each golden variant ran
    for i, (variant, details) in enumerate(json.loads(QUANT_DETAILS.read_text())["details"].items()):
        art = {"sha256": ran.get(variant, f"{i:064x}"), "uri": "", "size_bytes": 1, "filename": variant}
        store.add_variant(VariantRow(cache_key=f"{i + 1:064x}", model_id=model_id, variant=variant, dataset_id=None,
                                     artifact=art, reference=None, size_bytes=1, conversion_s=0.0, tool_versions={},
                                     recipe={"variant": variant}, input_shape=[1, 8, 8, 1], input_dtype="float32",
                                     created_at=now + dt.timedelta(seconds=i), details=details))  # fmt: skip
    return model_id
