"""The dashboard's queries on SQLite and PostgreSQL, on three real demo runs (tests/data/demo_runs.json)."""

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from dashboard import data
from dashboard.data import DashboardError, Filters, Side
from protocol import ResultRecord
from tests.golden_demo import GOLDEN, seed, seed_quant, slowed

DOC = json.loads(GOLDEN.read_text())


def _reader(store, request):
    """The dashboard's read-only engine on ``store`` (on PostgreSQL, in the test's schema)."""
    url = store.url
    if store.engine.dialect.name == "postgresql":
        _, kwargs = request.getfixturevalue("pg_url")
        url = sa.engine.make_url(store.url).update_query_dict(
            {"options": kwargs["connect_args"]["options"]}).render_as_string(hide_password=False)  # fmt: skip
    return data.readonly_engine(url)


@pytest.fixture
def seeded(store, request):
    seed(store)
    engine = _reader(store, request)
    yield store, engine
    engine.dispose()


def _records(**match):
    return [r for r in DOC["records"] if all({**r["settings"], **r}.get(k) == v for k, v in match.items())]


def test_counts(seeded):
    _, engine = seeded
    assert data.counts(engine) == {"results": 21, "agents": 3, "sweeps": 3}


def test_the_engine_cannot_write(seeded):
    _, engine = seeded
    with pytest.raises(sa.exc.DBAPIError) as err, engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM results"))
    assert "readonly" in str(err.value).replace("-", "").replace(" ", "").lower()
    assert data.counts(engine)["results"] == 21


def test_fleet_status_follows_the_last_heartbeat(seeded):
    _, engine = seeded
    beats = {a["agent_id"]: dt.datetime.fromisoformat(a["heartbeat_at"]) for a in DOC["agents"]}
    newest = max(beats.values())
    table = data.fleet(engine, now=newest + dt.timedelta(seconds=5))
    assert set(table["agent"]) == set(beats)
    assert set(table["capability"]) == {"litert:cpu", "openvino:CPU"}
    status = table.drop_duplicates("agent").set_index("agent")["status"]
    newest_id = max(beats, key=beats.get)
    assert status[newest_id] == "online"
    assert all(s.startswith("offline since") for a, s in status.items() if newest - beats[a] > dt.timedelta(minutes=1))
    later = data.fleet(engine, now=newest + dt.timedelta(days=1))
    assert later["status"].str.startswith("offline since").all()
    assert (table["jobs running"] == 0).all()


def test_running_jobs_are_counted_per_agent(seeded):
    store, engine = seeded
    job = DOC["jobs"][0]
    store.add_sweep(*_sweep("live", [dict(job, job_id="j-run", state="running", agent_id="agent-x")]))
    assert data.fleet(engine).set_index("agent").get("jobs running") is not None
    running = data.running_jobs(engine)
    assert list(running["agent"]) == ["agent-x"] and list(running["variant"]) == [job["variant"]]


FLEET_NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def mixed_fleet(store, request):
    """300 agents of six kinds (tests/fleet_seed.py): 50 of each, 10 of each offline; 3 jobs running."""
    from tests.fleet_seed import insert_agents

    insert_agents(store.engine, 300, FLEET_NOW, running={"agent-00007": 2, "agent-00010": 1})
    engine = _reader(store, request)
    yield engine
    engine.dispose()


@pytest.mark.parametrize("capability, expected", [
    ("litert:cpu", "CPU"), ("openvino:CPU", "CPU"), ("litert:cpu@aarch64", "CPU"), ("openvino:CPU@x86_64", "CPU"),
    ("litert:gpu", "GPU"), ("tflite:gpu", "GPU"), ("openvino:GPU", "GPU"), ("openvino:GPU.1", "GPU"),
    ("openvino:MYRIAD", "NCS2"), ("openvino:MYRIAD@x86_64", "NCS2"),
    ("openvino:HETERO:FPGA,CPU", "FPGA"), ("tflite:fpga", "FPGA"), ("tflite:intel-fpga@aarch64", "FPGA"),
    ("openvino:NPU", "NPU"), ("litert:npu", "NPU"),
    ("tflite:edgetpu", "other"), ("openvino:HETERO:GPU,CPU", "other"), ("litert:cpux", "other"), ("cpu", "other"),
])  # fmt: skip
def test_device_class_of_a_capability(capability, expected):
    assert data.device_class(capability) == expected


def test_fleet_summary_counts_agents_per_device_class_and_capability(mixed_fleet):
    table = data.fleet_summary(mixed_fleet, now=FLEET_NOW)
    assert list(table.columns) == ["device class", "capability", "online", "offline", "total"]
    assert table.values.tolist() == [
        ["CPU", "litert:cpu", 120, 30, 150],
        ["CPU", "openvino:CPU", 160, 40, 200],
        ["GPU", "litert:gpu", 40, 10, 50],
        ["GPU", "openvino:GPU", 40, 10, 50],
        ["GPU", "tflite:gpu", 40, 10, 50],
        ["NCS2", "openvino:MYRIAD", 40, 10, 50],
        ["FPGA", "openvino:HETERO:FPGA,CPU", 40, 10, 50],
        ["FPGA", "tflite:fpga", 40, 10, 50],
        ["NPU", "litert:npu", 40, 10, 50],
        ["NPU", "openvino:NPU", 40, 10, 50],
        ["other", "tflite:edgetpu", 40, 10, 50],
    ]
    assert data.fleet_counts(mixed_fleet, now=FLEET_NOW) == {"agents": 300, "online": 240, "offline": 60,
                                                             "jobs running": 3}  # fmt: skip
    # the window's edge: a heartbeat ONLINE_WINDOW_S old is online, one a second older is not
    edge = FLEET_NOW + dt.timedelta(seconds=data.ONLINE_WINDOW_S)
    assert data.fleet_counts(mixed_fleet, now=edge)["online"] == 240
    assert data.fleet_counts(mixed_fleet, now=edge + dt.timedelta(seconds=1))["online"] == 0
    later = data.fleet_summary(mixed_fleet, now=FLEET_NOW + dt.timedelta(days=1))
    assert (later["online"] == 0).all() and later["offline"].tolist() == table["total"].tolist()
    # the per-capability rows of fleet() say the same
    rows = data.fleet(mixed_fleet, now=FLEET_NOW)
    assert len(rows) == 800 and rows["agent"].nunique() == 300
    per_cap = rows.assign(online=rows["status"].eq("online")).groupby("capability")["online"].agg(["sum", "size"])
    assert per_cap.loc[table["capability"], "sum"].tolist() == table["online"].tolist()
    assert per_cap.loc[table["capability"], "size"].tolist() == table["total"].tolist()


def test_fleet_agents_are_searched_filtered_and_paged_in_sql(mixed_fleet):
    def agents(**kw):
        page, total = data.fleet_agents(mixed_fleet, now=FLEET_NOW, **kw)
        return page, total

    first, total = agents()
    assert total == 300 and first["agent"].tolist() == [f"agent-{i:05d}" for i in range(50)]
    assert list(first.columns) == ["agent", "host", "machine", "capabilities", "status", "last heartbeat", "jobs running"]
    second, _ = agents(page=2)
    assert second["agent"].tolist() == [f"agent-{i:05d}" for i in range(50, 100)]
    assert data.page_caption(2, len(second), total) == "agents 51–100 of 300"
    last, _ = agents(page=6)
    assert last["agent"].iloc[-1] == "agent-00299" and len(last) == 50
    beyond, total = agents(page=7)
    assert beyond.empty and total == 300
    one, total = agents(search="AGENT-00007")  # any case
    assert total == 1 and one.to_dict("records") == [{
        "agent": "agent-00007", "host": "edge-00007", "machine": "aarch64",
        "capabilities": "litert:cpu, litert:gpu, tflite:gpu", "status": "online",
        "last heartbeat": pd.Timestamp(FLEET_NOW), "jobs running": 2}]  # fmt: skip
    hosts, total = agents(search="Edge-0012")  # a host's name, not an agent id
    assert total == 10 and hosts["host"].tolist() == [f"edge-{i:05d}" for i in range(120, 130)]
    offline, total = agents(status="offline", page=2)
    assert total == 60 and offline["agent"].tolist() == [f"agent-{i:05d}" for i in range(250, 300, 5)]
    assert (offline["status"] == "offline since 2026-06-01 11:00 UTC").all()
    assert agents(status="offline", search="edge-001")[1] == 20 and agents(status="online")[1] == 240
    emulated, _ = agents(search="agent-00005")
    assert emulated["machine"].tolist() == ["aarch64 (emulated)"]
    assert emulated["capabilities"].tolist() == ["litert:cpu, tflite:edgetpu"]
    for wildcard in ("%", "_"):  # LIKE's wildcards are searched for as they are
        assert agents(search=wildcard)[1] == 0
    assert agents(search="no-such-agent")[1] == 0 and data.page_caption(1, 0, 0) == "no agent matches"
    with pytest.raises(ValueError):
        agents(status="busy")


def _sweep(name, jobs):
    from controller.store.models import JobRow, SweepRow

    t = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    sweep = SweepRow(sweep_id=f"s-{name}", name=name, spec={}, state="running", created_at=t)
    rows = [JobRow(**{**j, "sweep_id": f"s-{name}", "created_at": t, "updated_at": t}) for j in jobs]
    return sweep, rows


def test_sweeps_progress_is_counted_in_sql(seeded):
    store, engine = seeded
    table = data.sweeps(engine)
    assert len(table) == 3 and (table["total"] == 7).all() and (table["done"] == 7).all()
    assert (table["finished"] == 7).all()
    assert table["created_at"].is_monotonic_decreasing
    job = DOC["jobs"][0]
    store.add_sweep(*_sweep("mixed", [
        dict(job, job_id="a", state="failed", reason="unsupported op: FOO"),
        dict(job, job_id="b", state="waiting-for-device", reason="waiting for a device with openvino:MYRIAD"),
        dict(job, job_id="c", state="queued"),
    ]))  # fmt: skip
    mixed = data.sweeps(engine).set_index("name").loc["mixed"]
    assert (mixed["total"], mixed["finished"], mixed["failed"], mixed["waiting-for-device"], mixed["queued"]) == (3, 1, 1, 1, 1)
    jobs = data.sweep_jobs(engine, "s-mixed", ("failed", "waiting-for-device")).set_index("state")
    assert jobs.loc["failed", "reason"] == "unsupported op: FOO"
    assert "openvino:MYRIAD" in jobs.loc["waiting-for-device", "reason"]


def test_explorer_groups_average_the_runs_of_each_setting(seeded):
    _, engine = seeded
    groups = data.explorer_groups(engine, Filters())
    assert len(groups) == 14  # 7 variants × (1 thread, 2 threads)
    assert groups["runs"].sum() == 21
    g = groups.set_index(["variant", "threads"])
    for variant in ("tflite-fp32", "openvino-int8"):
        ones = _records(variant=variant, threads=1)
        assert g.loc[(variant, 1), "runs"] == 2
        assert g.loc[(variant, 1), "p50_ms"] == pytest.approx(np.mean([r["stats"]["p50_ms"] for r in ones]))
        assert g.loc[(variant, 1), "fidelity_top1"] == pytest.approx(ones[0]["fidelity"]["top1_agreement"])
        two = _records(variant=variant, threads=2)[0]
        assert g.loc[(variant, 2), "throughput_requests"] == 2 == two["throughput"]["requests"]
        assert g.loc[(variant, 2), "throughput_ips"] == pytest.approx(two["throughput_ips"])


def test_filters_narrow_in_sql(seeded):
    _, engine = seeded
    only = data.explorer_groups(engine, Filters(variants=("tflite-fp32",), runtimes=("litert",)))
    assert set(only["variant"]) == {"tflite-fp32"} and only["runs"].sum() == 3
    assert data.explorer_groups(engine, Filters(runtimes=("openvino",), variants=("tflite-fp32",))).empty
    day = dt.datetime.fromisoformat(DOC["records"][0]["finished_at"]).date()
    assert data.explorer_groups(engine, Filters(since=day, until=day))["runs"].sum() == 21
    assert data.explorer_groups(engine, Filters(since=day + dt.timedelta(days=1))).empty
    assert data.explorer_groups(engine, Filters(until=day - dt.timedelta(days=1))).empty
    assert data.explorer_groups(engine, Filters(threads=(2,)))["runs"].sum() == 7
    opts = data.filter_options(engine)
    assert opts["records"].sum() == 21 and set(opts["runtime"]) == {"litert", "openvino"}
    rows = data.selection_rows(engine, Filters(capabilities=("openvino:CPU",)), limit=5)
    assert len(rows) == 5 and set(rows["capability"]) == {"openvino:CPU"}
    assert rows["finished_at"].is_monotonic_decreasing


def test_latency_boxes_come_from_the_newest_records_raw_samples(seeded):
    _, engine = seeded
    boxes = data.latency_boxes(engine, Filters()).set_index("variant")
    assert len(boxes) == 7  # one per variant × device × host: the newest record of each
    newest = _records(variant="openvino-fp16")[-1]
    ms = np.asarray(newest["samples_ns"]) / 1e6
    row = boxes.loc["openvino-fp16"]
    assert row["samples"] == len(ms)
    assert row["median"] == pytest.approx(np.median(ms))
    assert row["low"] <= row["q1"] <= row["median"] <= row["q3"] <= row["high"] <= row["max"] == pytest.approx(ms.max())
    assert len(data.latency_boxes(engine, Filters(), limit=3)) == 3


@pytest.mark.parametrize("xs, ys, front", [
    ([1, 2, 3], [0.9, 0.95, 0.99], [True, True, True]),  # each slower one is better
    ([1, 2, 3], [0.99, 0.95, 0.90], [True, False, False]),  # the fastest is also the best
    ([1, 1, 2], [0.90, 0.95, 0.95], [False, True, False]),  # equal latency: only the better one
    ([1, 2, None], [0.9, None, 0.99], [True, False, False]),  # missing values are never on it
    ([2, 1, 3, 4], [0.95, 0.9, 0.97, 0.96], [True, True, True, False]),
])  # fmt: skip
def test_pareto_front(xs, ys, front):
    assert data.pareto_front(pd.Series(xs, dtype=float), pd.Series(ys, dtype=float)).tolist() == front


def test_history_points_then_daily_means_past_the_limit(seeded):
    _, engine = seeded
    f = Filters(variants=("tflite-fp32",))
    points = data.history(engine, f, "p50_ms")
    assert len(points) == 3 and (points["runs"] == 1).all()
    assert set(points["threads"]) == {1, 2}
    daily = data.history(engine, f, "p50_ms", max_points=2)  # aggregated per day, in SQL
    assert len(daily) == 2 and sorted(daily["runs"]) == [1, 2]  # one day, two thread settings
    ones = _records(variant="tflite-fp32", threads=1)
    assert daily.set_index("threads").loc[1, "value"] == pytest.approx(np.mean([r["stats"]["p50_ms"] for r in ones]))
    assert data.history(engine, Filters(variants=("nope",)), "p50_ms").empty
    with pytest.raises(DashboardError, match="unknown metric"):
        data.history(engine, f, "p50_ms; DROP TABLE results")


def test_history_marks_the_change_points_of_the_regressions_rule_with_their_acknowledgement(seeded, golden_record):
    from controller.regressions import scan
    from dashboard import charts
    from tests.test_regressions import NOISE, _ingest

    store, engine = seeded
    _ingest(store, golden_record, list(NOISE[:12]) + list(NOISE[12:18] * 1.25), name="stepped")
    f = Filters(models=("stepped",))
    marks = data.change_points(engine, f, "p50_ms")
    assert marks[["kind", "after_job", "acked"]].values.tolist() == [["regression", "stepped-012", False]]
    assert marks["cp_id"].isna().all()  # found live; `fleetbench regressions` has not stored it yet
    (cp,) = scan(store, metrics=("p50_ms",), model="stepped")  # the command finds the very same one
    assert cp.after_job == "stepped-012" and cp.ratio == pytest.approx(marks["ratio"].iloc[0])
    store.ack_change_point(cp.id, "expected: new preprocessing")
    marks = data.change_points(engine, f, "p50_ms")
    assert marks[["acked", "ack_note", "cp_id"]].values.tolist() == [[True, "expected: new preprocessing", cp.id]]
    assert data.change_points(engine, f, "peak_rss_bytes").empty  # not a metric change points are looked for on
    fig = charts.history(data.history(engine, f, "p50_ms"), "p50_ms", marks)
    (ring,) = [t for t in fig.data if t.name == "acknowledged"]
    assert len(ring.x) == 1 and not [t for t in fig.data if t.name == "regression"]


def test_compare_two_demo_sweeps_and_an_injected_slowdown(seeded):
    store, engine = seeded
    newest_first = data.sweeps(engine)["sweep_id"].tolist()
    b, a, t2 = newest_first  # two alike (1 thread), then the first run (2 threads)
    same = data.compare(engine, Side(sweep_id=a), Side(sweep_id=a), "p50_ms")
    assert (same["verdict"] == "same").all() and np.allclose(same["p_value"], 1.0)  # the test on identical samples
    table = data.compare(engine, Side(sweep_id=a), Side(sweep_id=b), "p50_ms", threshold=0.05)
    assert len(table) == 7 and table["ratio"].notna().all() and table["p_value"].notna().all()
    from controller.analysis.regress import significance

    by_variant = {r["variant"]: r for r in DOC["records"] if r["job_id"] in _jobs_of(b)}
    base = {r["variant"]: r for r in DOC["records"] if r["job_id"] in _jobs_of(a)}
    for row in table.itertuples():  # the verdict is the significance test's on the raw samples
        t = significance(base[row.variant]["samples_ns"], by_variant[row.variant]["samples_ns"])
        assert row.verdict == {"regression": "worse", "improvement": "better"}.get(t.verdict, "same")
        assert row.p_value == pytest.approx(t.p_value)
    tput = data.compare(engine, Side(sweep_id=a), Side(sweep_id=b), "throughput_ips")
    assert tput["p_value"].isna().all()  # not a latency metric: plain ratio
    for row in tput.itertuples():
        assert row.verdict == ("better" if row.ratio > 1.05 else "worse" if row.ratio < 0.95 else "same")
    other = data.compare(engine, Side(sweep_id=t2), Side(sweep_id=a))
    assert sorted(other["verdict"].value_counts().items()) == [("only in A", 7), ("only in B", 7)]
    # B gets a record twice as slow as A's for one variant: it must come out worse
    rec = next(r for r in DOC["records"] if r["job_id"] in {j["job_id"] for j in DOC["jobs"] if j["sweep_id"] == a})
    slow = slowed(ResultRecord.from_dict(rec), 2.0, job_id="slow-" + rec["job_id"][:8])
    store.add_sweep(*_sweep("slow", [dict(next(j for j in DOC["jobs"] if j["job_id"] == rec["job_id"]),
                                          job_id=slow.job_id, state="running")]))  # fmt: skip
    from protocol import JobOutcome

    assert store.ingest(JobOutcome(job_id=slow.job_id, attempt=1, ok=True, record=slow, agent_id="x")) == "stored"
    worse = data.compare(engine, Side(sweep_id=a), Side(sweep_id="s-slow")).set_index("variant")
    assert worse.loc[rec["variant"], "verdict"] == "worse"
    assert worse.loc[rec["variant"], "ratio"] == pytest.approx(2.0, rel=0.01)
    assert (worse.drop(index=rec["variant"])["verdict"] == "only in A").all()
    tput = data.compare(engine, Side(sweep_id=a), Side(sweep_id="s-slow"), "throughput_ips").set_index("variant")
    assert tput.loc[rec["variant"], "verdict"] == "worse"  # throughput halved


def _jobs_of(sweep_id: str) -> set[str]:
    return {j["job_id"] for j in DOC["jobs"] if j["sweep_id"] == sweep_id}


def test_compare_two_variants_pairs_them_per_capability_and_threads(seeded):
    _, engine = seeded
    table = data.compare(engine, Side(variant="tflite-fp32"), Side(variant="tflite-int8"), "p50_ms")
    assert list(table["variant"].unique()) == ["tflite-fp32 → tflite-int8"]
    assert sorted(zip(table["capability"], table["threads"])) == [("litert:cpu", 1), ("litert:cpu", 2)]
    assert table["p_value"].notna().all()
    ones = [r["stats"]["p50_ms"] for r in DOC["records"] if r["variant"] == "tflite-int8" and r["settings"]["threads"] == 1]
    assert table.set_index("threads").loc[1, "b"] == pytest.approx(np.mean(ones))
    other = data.compare(engine, Side(variant="tflite-fp32"), Side(variant="openvino-int8"), "p50_ms")
    assert set(other["verdict"]) == {"only in A", "only in B"}  # different capabilities never pair


def test_hosts_by_capability(seeded):
    _, engine = seeded
    hosts = data.hosts_by_capability(engine)
    assert hosts.groupby("capability")["records"].sum().to_dict() == {"litert:cpu": 12, "openvino:CPU": 9}


def test_quantization_lists_what_each_variant_found_beside_its_measures(seeded):
    store, engine = seeded
    assert data.quantization(engine, Filters()).empty  # no variant details stored yet
    seed_quant(store)
    q = data.quantization(engine, Filters())
    assert set(q["variant"]) == {"tflite-int8", "openvino-int8", "tflite-int8-qat", "openvino-int8-qat", "openvino-int8-ac"}
    row = q[q["variant"] == "tflite-int8"].iloc[0]
    sha = next(r["artifact_sha256"] for r in DOC["records"] if r["variant"] == "tflite-int8")
    measured = [r for r in DOC["records"] if r["artifact_sha256"] == sha]  # the records of that very file
    assert row["runs"] == len(measured)
    assert row["accuracy_top1"] == pytest.approx(np.mean([r["accuracy_top1"] for r in measured]))
    snrs = [r["fidelity"]["snr_db"] for r in measured if r["fidelity"].get("snr_db") is not None]
    assert row["fidelity_snr_db"] == pytest.approx(min(snrs)) if snrs else pd.isna(row["fidelity_snr_db"])
    layers = data.layer_errors(row["details"])
    assert list(layers.columns) == ["layer", "op", "error", "metric"] and layers["error"].is_monotonic_decreasing
    assert np.isnan(q[q["variant"] == "openvino-int8-ac"].iloc[0]["accuracy_top1"])  # never benchmarked in these runs
    assert data.quantization(engine, Filters(models=("nosuch",))).empty
    # a second stored tflite-int8 of the same model (another data set, say) that never ran pools nothing
    from controller.store.models import VariantRow

    first = next(r for r in store.variants(row_model_id(store)) if r.variant == "tflite-int8")
    store.add_variant(VariantRow(**{**{c: getattr(first, c) for c in ("model_id", "variant", "dataset_id", "reference",
                                   "size_bytes", "conversion_s", "tool_versions", "recipe", "input_shape", "input_dtype",
                                   "created_at")}, "cache_key": "f" * 64, "artifact": dict(first.artifact, sha256="e" * 64),
                                   "details": {"note": "another file"}}))  # fmt: skip
    again = data.quantization(engine, Filters())
    other = again[[d.get("note") == "another file" for d in again["details"]]].iloc[0]
    assert pd.isna(other["runs"]) and pd.isna(other["accuracy_top1"])
    assert again[again["variant"] == "tflite-int8"]["runs"].dropna().tolist() == [len(measured)]


def row_model_id(store) -> str:
    return store.find_model("digits-cnn").model_id


def test_missing_or_empty_databases_say_run_the_demo(tmp_path):
    with pytest.raises(DashboardError, match="fleetbench demo"):
        data.readonly_engine(f"sqlite:///{tmp_path / 'none.db'}")
    empty = tmp_path / "empty.db"
    sa.create_engine(f"sqlite:///{empty}").connect().close()
    engine = data.readonly_engine(f"sqlite:///{empty}")
    assert data.counts(engine) == {"results": 0, "agents": 0, "sweeps": 0}
    with pytest.raises(DashboardError, match="fleetbench demo"):
        data.explorer_groups(engine, Filters())
    with pytest.raises(DashboardError, match="unsupported database"):
        data.readonly_engine("mysql://x@y/z")


def test_a_dead_database_is_a_clear_error():
    engine = data.readonly_engine("postgresql+psycopg://fleet:secret@127.0.0.1:1/none")
    with pytest.raises(DashboardError) as err:
        data.counts(engine)
    assert "127.0.0.1:1" in str(err.value) and "secret" not in str(err.value)


def test_explorer_groups_average_energy_and_count_disturbed_and_throttled_runs(seeded, golden_record):
    import dataclasses

    from dashboard import charts
    from protocol import DeviceConditions, EnergyDomain, EnergyRecord, JobOutcome, ThermalState

    store, engine = seeded
    assert data.explorer_groups(engine, Filters())["energy_mj"].isna().all()  # records before issue 19 have none
    rows = []
    for i, (mj, disturbed) in enumerate([(2.0, True), (4.0, False)]):
        energy = EnergyRecord(valid=True, why="", interval_s=0.02, intervals=50, seconds=1.0, inferences=1000,
                              mj_per_inference=mj, domains=(EnergyDomain("package-0", "rapl", mj, 3.0 + i, 5.0),))  # fmt: skip
        cond = DeviceConditions(before=ThermalState(), after=ThermalState(), throttled=False, throttle_why="",
                                other_cpu_cores=1.0 if disturbed else 0.0, disturbed=disturbed,
                                disturbance_max_cores=0.25, seconds=1.0)  # fmt: skip
        r = dataclasses.replace(golden_record, job_id=f"energy-{i}", model_name="energy-model", energy=energy, conditions=cond)
        rows.append(JobOutcome(job_id=r.job_id, attempt=r.attempt, ok=True, record=r, agent_id=r.agent_id))
    store.ingest_many(rows)
    g = data.explorer_groups(engine, Filters(models=("energy-model",)))
    assert len(g) == 1
    row = g.iloc[0]
    assert row["energy_mj"] == pytest.approx(3.0) and row["energy_w"] == pytest.approx(3.5)
    assert row["disturbed_runs"] == 1 and row["throttled_runs"] == 0
    fig = charts.energy_vs_latency(g)
    assert list(fig.data[0].y) == [pytest.approx(3.0)]


def test_sustained_runs_are_read_window_by_window_and_drawn(seeded):
    from dashboard import charts
    from tests.golden_demo import seed_conditions

    store, engine = seeded
    assert data.sustained(engine, Filters()).empty  # no sustained run yet: the Explorer leaves the section out
    assert seed_conditions(store) == 3
    runs = data.sustained(engine, Filters())
    assert runs["run"].nunique() == 3 and len(runs) == 3 * 6
    drift = runs.groupby("variant")["drift_ratio"].first()
    assert drift["tflite-int8"] == pytest.approx(1.4, rel=0.02) and drift["tflite-fp32"] == pytest.approx(1.02, rel=0.02)
    last = runs[runs["window"] == 6].set_index("variant")
    first = runs[runs["window"] == 1].set_index("variant")
    assert (last["p50_ms"] / first["p50_ms"]).to_dict() == pytest.approx(drift.to_dict())
    assert list(runs[runs["variant"] == "tflite-int8"]["minute"]) == pytest.approx([0, 5, 10, 15, 20, 25])
    assert data.sustained(engine, Filters(variants=("tflite-fp16",)))["variant"].unique().tolist() == ["tflite-fp16"]
    fig = charts.sustained(runs)
    assert len(fig.data) == 6  # per run: latency and the hottest zone
    assert {t.name for t in fig.data if t.showlegend is not False} == set(
        f"{r} (drift {d:.2f}x)" for r, d in runs.groupby("run")["drift_ratio"].first().items())
    g = data.explorer_groups(engine, Filters(variants=("tflite-int8",)))
    assert g["disturbed_runs"].sum() == 1 and g["throttled_runs"].sum() == 1


def test_a_variant_has_one_colour_on_every_chart_whichever_variants_it_shows():
    from dashboard.charts import variant_colours

    every = variant_colours(["openvino-int8", "tflite-fp32", "tflite-int8", "my-own-variant"])
    assert variant_colours(["tflite-int8"])["tflite-int8"] == every["tflite-int8"]
    assert variant_colours(["my-own-variant"])["my-own-variant"] == every["my-own-variant"]
    assert len(set(variant_colours(["tflite-fp32", "tflite-fp16", "tflite-int8", "openvino-fp32"]).values())) == 4


def test_history_carries_sweep_labels_model_versions_and_baselines(seeded, golden_record):
    import dataclasses
    import datetime as dt

    import sqlalchemy as sa

    from controller.store.models import Result, SweepRow
    from dashboard import charts
    from tests.test_regressions import NOISE, _ingest

    store, engine = seeded
    _ingest(store, golden_record, list(NOISE[:4]), name="versioned")
    v2 = dataclasses.replace(golden_record, model_id="f" * 64, model_name="versioned")  # the same name, a new source
    _ingest(store, v2, list(NOISE[4:7]), name="versioned-v2", start=4)
    now = dt.datetime.now(dt.timezone.utc)
    store.add_sweep(SweepRow(sweep_id="nightly-1", name="nightly", state="done", created_at=now, finished_at=now,
                             spec={"name": "nightly", "labels": {"commit": "abc123", "branch": "main"}}), [])  # fmt: skip
    store.set_baseline("release-1.2", "nightly-1")
    with store.engine.begin() as conn:  # the second version's records came from two sweeps, the first of them labelled
        conn.execute(sa.update(Result).where(Result.job_id.like("versioned-v2-%")).values(model_name="versioned"))
        conn.execute(sa.update(Result).where(Result.job_id == "versioned-v2-004").values(sweep_id="nightly-1"))
    points = data.history(engine, Filters(models=("versioned",)), "p50_ms")
    assert len(points) == 7 and points["new_version"].tolist() == [False] * 4 + [True, False, False]
    assert points["labels"].tolist() == [""] * 4 + ["branch=main, commit=abc123", "", ""]
    assert data.baselines(engine).query("tag == 'release-1.2'")["sweep_id"].tolist() == ["nightly-1"]
    fig = charts.history(points.assign(baseline=["", "", "", "", "release-1.2", "", ""]), "p50_ms")
    names = {t.name: t for t in fig.data}
    assert len(names["new model version"].x) == 1 and list(names["baseline"].text) == ["release-1.2"]
    assert "branch=main, commit=abc123" in [row[1] for row in names["tflite-fp32"].customdata]


def test_sweep_labels_are_checked_and_kept_as_text():
    from controller.sweeps import SweepError, parse_spec

    spec = parse_spec("models: [{id: m}]\nlabels: {commit: abc123, app: 2.4, build: 17}\n")
    assert spec.labels == {"commit": "abc123", "app": "2.4", "build": "17"} and spec.raw["labels"] == spec.labels
    for bad, words in (("labels: [a, b]", "labels: a mapping"), ("labels: {a: [1]}", "labels.a: a single value"),
                       ("labels: {'a=b': 1}", "without '='")):  # fmt: skip
        with pytest.raises(SweepError, match=words):
            parse_spec(f"models: [{{id: m}}]\n{bad}\n")


def test_latency_boxes_of_several_models_are_one_box_each(seeded, golden_record):
    from dashboard import charts
    from tests.test_regressions import NOISE, _ingest

    store, engine = seeded
    for name in ("model-a", "model-b"):  # two models whose variants share names, devices and hosts
        _ingest(store, golden_record, list(NOISE[:1]), name=name)
    boxes = data.latency_boxes(engine, Filters(models=("model-a", "model-b")))
    assert sorted(boxes["model_name"]) == ["model-a", "model-b"]
    fig = charts.latency_boxes(boxes)
    labels = [y for trace in fig.data for y in trace.y]
    assert len(labels) == len(set(labels)) == 2 and all(lbl.startswith(("model-a · ", "model-b · ")) for lbl in labels)
    one = charts.latency_boxes(boxes[boxes["model_name"] == "model-a"])
    assert not one.data[0].y[0].startswith("model-a")  # one model: no need to say which


def test_explorer_charts_of_several_models_never_merge_them(seeded, golden_record):
    """Pareto and throughput charts facet by model × device; the scatters give each model its own marker symbol
    and name it on hover; with one model, nothing changes."""
    from dashboard import charts
    from tests.test_regressions import NOISE, _ingest

    store, engine = seeded
    for name, factor in (("model-a", 1.0), ("model-b", 2.0)):
        _ingest(store, golden_record, [NOISE[0] * factor], name=name)
    groups = data.explorer_groups(engine, Filters(models=("model-a", "model-b")))
    assert sorted(groups["model_name"].unique()) == ["model-a", "model-b"]
    titles = [a.text for a in charts.latency_vs_quality(groups, "accuracy_top1").layout.annotations]
    assert sorted(titles) == sorted(f"{r.model_name} · {r.device_name} · {r.capability}" for r in groups.itertuples())
    assert len(titles) == 2  # the two models on one device: two charts
    throughput = charts.throughput_vs_threads(groups)
    assert sorted(a.text for a in throughput.layout.annotations) == [f"model-a · {golden_record.capability}",
                                                                      f"model-b · {golden_record.capability}"]  # fmt: skip
    assert len(throughput.data) == 2  # one line per model, not one line averaging both
    size = charts.size_vs_latency(groups)
    points = [t for t in size.data if t.x[0] is not None]
    assert len({s for t in points for s in t.marker.symbol}) == 2 and "%{customdata[2]} · " in points[0].hovertemplate
    assert {t.name for t in size.data if t.x[0] is None} == {"model model-a", "model model-b"}
    one = groups[groups["model_name"] == "model-a"]
    assert [a.text for a in charts.latency_vs_quality(one, "accuracy_top1").layout.annotations] == [
        f"{one['device_name'].iloc[0]} · {one['capability'].iloc[0]}"]
    assert all(t.x[0] is not None for t in charts.size_vs_latency(one).data)
