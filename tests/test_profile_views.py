"""Issue 17: profiles where a team reads them. `fleetbench profile`, the readiness budgets, `profile: true` in a
sweep spec, the store's columns on SQLite and PostgreSQL, and the dashboard's Profile page, on real profiled
runs (tests/data/profile_runs.json: `fleetbench demo --profile`, and a sweep with `profile: true` over MediaPipe's
palm_detection_lite.tflite, as tests/golden_demo.py says to regenerate them)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from controller.analysis.readiness import NO_PROFILE, assess, parse_budgets
from controller.sweeps.spec import SweepError, parse_spec
from protocol import ResultRecord
from tests.golden_demo import seed

ROOT = Path(__file__).resolve().parent.parent
PROFILES = ROOT / "tests" / "data" / "profile_runs.json"
DOC = json.loads(PROFILES.read_text())
RECORDS = [ResultRecord.from_dict(r) for r in DOC["records"]]


def _job(model: str, variant: str) -> str:
    return next(r.job_id for r in RECORDS if (r.model_name, r.variant) == (model, variant))


@pytest.fixture(scope="module")
def profiled_db(tmp_path_factory):
    """A data dir whose SQLite store holds the golden profiled runs, through the store's own paths."""
    from controller.store import Store

    root = tmp_path_factory.mktemp("profiled")
    store = Store(f"sqlite:///{root / 'fleetbench.db'}")
    store.migrate()
    seed(store, PROFILES)
    store.close()
    return root


def cli(data_dir: Path, *args: str, columns: int = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETBENCH_")}
    env.update(COLUMNS=str(columns), PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "controller.cli", "profile", *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip


# ---------------------------------------------------------------- the command


def test_a_sweep_lists_its_profiled_records_with_their_job_ids(profiled_db):
    r = cli(profiled_db, "palm-profile")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert all(len(line) <= 120 for line in lines)
    for rec in RECORDS:
        if rec.model_name == "palm_detection_lite":
            assert rec.job_id[:8] in r.stdout
    row = next(line for line in lines if _job("palm_detection_lite", "tflite-dynamic-int8")[:8] in line)
    assert "xnnpack" in row and " 24 " in row  # 24 XNNPACK partitions: the depthwise convs fell out of it


def test_one_record_shows_op_types_nodes_placement_and_precision(profiled_db):
    job = _job("palm_detection_lite", "tflite-dynamic-int8")
    r = cli(profiled_db, job[:8])
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert all(len(line) <= 120 for line in out.splitlines())
    for heading in ("Time by op type", "Slowest nodes", "Precision coverage"):
        assert heading in out
    assert "fell back: 23 (builtin 23): DEPTHWISE_CONV_2D" in out and "24 partitions" in out
    assert "int8: 92.7% of the node time" in out  # of all the node time: XNNPACK's untyped ops count too
    assert "note: XNNPACK times its own operators" in out


def test_two_records_differ_op_type_by_op_type(profiled_db):
    fp16, dyn = _job("palm_detection_lite", "tflite-fp16"), _job("palm_detection_lite", "tflite-dynamic-int8")
    r = cli(profiled_db, fp16[:8], dyn[:8])
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if line.startswith("│")]
    assert rows[0].split("│")[1].strip() == "DEPTHWISE_CONV_2D"  # B's biggest gain in time: why int8 is slower here
    assert "all nodes" in r.stdout
    data = json.loads(cli(profiled_db, fp16[:8], dyn[:8], "--format", "json").stdout)
    first = data["op_types"][0]
    assert first["op_type"] == "DEPTHWISE_CONV_2D" and first["count_a"] == 0 and first["count_b"] == 23
    assert first["delta_ms"] > 10
    csv = cli(profiled_db, fp16[:8], dyn[:8], "--format", "csv").stdout.splitlines()
    assert csv[0] == "op_type,count_a,count_b,time_a_ms,time_b_ms,delta_ms,ratio" and csv[1].startswith("DEPTHWISE_CONV_2D,0,23,")


def test_json_and_csv_carry_the_whole_profile(profiled_db):
    job = _job("digits-cnn", "openvino-int8")
    doc = json.loads(cli(profiled_db, job, "--format", "json").stdout)
    assert doc["record"]["job_id"] == job and doc["profile"]["source"] == "openvino PERF_COUNT (profiling_info)"
    assert any(n["exec_type"].endswith("_I8") for n in doc["profile"]["top_nodes"])
    rows = cli(profiled_db, "demo", "--format", "csv").stdout.splitlines()
    assert rows[0] == "job_id,model_name,variant,capability,op_type,count,time_ms,share"
    assert len({line.split(",")[0] for line in rows[1:]}) == 7  # every profiled demo record


@pytest.mark.parametrize("args, code, words", [
    (["nothing-like-it"], 2, "no record's job id starts with 'nothing-like-it' and no sweep is called so"),
    (["a", "b", "c"], 2, "give one record or sweep, or two records to compare; got 3"),
    (["demo", "--format", "xml"], 2, "--format must be table, csv or json"),
    (["demo", "palm-profile"], 2, "'demo' is a sweep with 7 profiled records; compare two records by job id"),
    (["demo", "--top", "0"], 2, "--top must be at least 1"),
])  # fmt: skip
def test_bad_refs_are_one_line(profiled_db, args, code, words):
    r = cli(profiled_db, *args)
    assert r.returncode == code and "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("error:") and words in " ".join(r.stderr.split())


def test_a_record_without_a_profile_says_how_to_get_one(tmp_path, golden_record):
    from controller.store import Store

    store = Store(f"sqlite:///{tmp_path / 'fleetbench.db'}")
    store.migrate()
    store.add_result(golden_record)
    failed = dataclasses.replace(golden_record, job_id="f" * 32, profile=_failed_profile())
    store.add_result(failed)
    store.close()
    r = cli(tmp_path, golden_record.job_id[:8])
    assert r.returncode == 1 and "has no profile: add `profile: true` to the sweep spec" in r.stderr
    r = cli(tmp_path, "ffffffff")
    assert r.returncode == 1 and "the profile phase could not run: out of time" in r.stderr


def _failed_profile():
    from protocol.profiling import failed

    return failed("litert:cpu", "cpu", "the profile phase could not run: out of time")


# ---------------------------------------------------------------- readiness


def test_budgets_on_fallback_ops_and_the_int8_time_share():
    budgets = parse_budgets({"budgets": [
        {"devices": "litert:*", "fallback_ops_max": 0, "int8_time_share_min": 0.99},
        {"devices": "openvino:*", "int8_time_share_min": 0.99},
    ]})  # fmt: skip
    palm = assess("palm", [r for r in RECORDS if r.model_name == "palm_detection_lite"], budgets)
    verdicts = {v.candidate.variant: v for v in palm.verdicts}
    assert verdicts["tflite-dynamic-int8"].reasons == ("23 ops fell back off xnnpack > 0", "int8 time share 92.7% < 99%")
    assert verdicts["tflite-fp16"].passed and verdicts["openvino-fp32"].passed  # int8 share applies to int8 variants
    demo = {(v.candidate.variant, v.candidate.capability): v for v in assess("d", RECORDS[:7], budgets).verdicts}
    assert demo[("openvino-int8", "openvino:CPU")].reasons == ("int8 time share 98.0% < 99%",)
    assert "1 ops fell back off xnnpack > 0" in demo[("tflite-int8", "litert:cpu")].reasons  # its SOFTMAX
    assert demo[("tflite-int8", "litert:cpu")].reasons == ("1 ops fell back off xnnpack > 0",)  # 100% int8


def test_a_profile_budget_without_a_profile_fails_and_says_how(golden_record):
    budgets = parse_budgets({"budgets": [{"fallback_ops_max": 3, "int8_time_share_min": 0.5}]})
    r = dataclasses.replace(golden_record, variant="tflite-int8")
    (v,) = assess("m", [r], budgets).verdicts
    assert v.reasons == (NO_PROFILE, NO_PROFILE)
    failed = dataclasses.replace(r, profile=_failed_profile())
    (v,) = assess("m", [failed], budgets).verdicts
    assert v.reasons == (NO_PROFILE, NO_PROFILE)  # a phase that could not run is no profile


def test_the_int8_share_needs_per_op_time(golden_record):
    from protocol import ProfileNode
    from protocol.profiling import summarize

    untimed = summarize([ProfileNode("a", "CONV_2D", "passthrough", "i8")], source="t", runs=1, target="passthrough",
                        partitions=1)  # fmt: skip
    r = dataclasses.replace(golden_record, variant="tflite-int8", profile=untimed)
    (v,) = assess("m", [r], parse_budgets({"budgets": [{"int8_time_share_min": 0.5}]})).verdicts
    assert v.reasons == ("no per-op time on litert:cpu to take an int8 time share from (100.0% of the nodes ran in int8)",)


@pytest.mark.parametrize("entry, error", [
    ({"int8_time_share_min": 90}, "int8_time_share_min is a fraction (0-1), got 90"),
    ({"fallback_ops_max": -1}, "fallback_ops_max must be a number >= 0"),
    ({"fallback_ops_max": "none"}, "fallback_ops_max must be a number >= 0"),
])  # fmt: skip
def test_bad_profile_budgets_name_the_key(entry, error):
    from controller.analysis.readiness import BudgetError

    with pytest.raises(BudgetError, match=re.escape(error)):
        parse_budgets({"budgets": [entry]})


# ---------------------------------------------------------------- sweep specs


def test_profile_true_in_a_spec_profiles_every_job():
    spec = parse_spec("models: [{id: m}]\nprofile: true\nsettings: {threads: [1, 2], profile_runs: 40}\n")
    assert [(s.threads, s.profile, s.profile_runs) for s in spec.settings] == [(1, True, 40), (2, True, 40)]
    assert all(not s.profile for s in parse_spec("models: [{id: m}]\n").settings)
    swept = parse_spec("models: [{id: m}]\nsettings: {profile: [false, true]}\n")
    assert [s.profile for s in swept.settings] == [False, True]


def test_the_example_profile_sweep_profiles_every_job():
    spec = parse_spec((ROOT / "examples" / "demo-profile-sweep.yaml").read_text(), base_dir=ROOT / "examples")
    assert spec.name == "demo-profile" and spec.settings and all(s.profile for s in spec.settings)


@pytest.mark.parametrize("text, error", [
    ("models: [{id: m}]\nprofile: yes please\n", "profile: true or false"),
    ("models: [{id: m}]\nprofile: true\nsettings: {profile: true}\n", "given both at the top and under settings"),
    ("models: [{id: m}]\nsettings: {profile_runs: 0}\n", "profile_runs must be between 1 and 100,000"),
])  # fmt: skip
def test_bad_profile_keys_in_a_spec(text, error):
    with pytest.raises(SweepError, match=error):
        parse_spec(text)


# ---------------------------------------------------------------- the store


def test_the_store_marks_profiled_records_and_their_fallback(store):
    answers = store.ingest_many([_outcome(r) for r in RECORDS])
    assert answers == ["stored"] * len(RECORDS)
    import sqlalchemy as sa

    from controller.store.models import Result

    with store.engine.connect() as conn:
        rows = dict(conn.execute(sa.select(Result.job_id, Result.fallback_ops).where(Result.profiled.is_(True))).all())
    assert len(rows) == len(RECORDS)
    assert rows[_job("palm_detection_lite", "tflite-dynamic-int8")] == 23
    back = store.results_by_job(_job("palm_detection_lite", "tflite-dynamic-int8")[:8])
    assert len(back) == 1 and back[0].profile == RECORDS[9].profile
    assert store.results_by_job("%") == [] and store.results_by_job("_") == []  # LIKE wildcards are literal


def _outcome(r):
    from protocol import JobOutcome

    return JobOutcome(job_id=r.job_id, attempt=r.attempt, ok=True, record=r, agent_id=r.agent_id)


def test_migration_0009_adds_the_columns_and_downgrade_drops_them(tmp_path, golden_record):
    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    from controller.store import Store
    from controller.store.store import MIGRATIONS

    store = Store(f"sqlite:///{tmp_path / 'fb.db'}")
    store.migrate()
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))

    def columns():
        return {c["name"] for c in sa.inspect(store.engine).get_columns("results")}

    assert {"profiled", "fallback_ops"} <= columns()
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0008")
    assert not {"profiled", "fallback_ops"} & columns()
    store.engine.dispose()
    store = Store(store.url)
    store.migrate()
    assert {"profiled", "fallback_ops"} <= columns()
    assert store.add_result(golden_record)
    store.close()


# ---------------------------------------------------------------- the dashboard


def test_dashboard_profiles_are_the_newest_per_variant_and_device(store):
    from dashboard import data

    older = dataclasses.replace(RECORDS[1], job_id="older-" + RECORDS[1].job_id[:20], finished_at="2020-01-01T00:00:00+00:00")
    assert store.ingest_many([_outcome(r) for r in [*RECORDS, older]]) == ["stored"] * (len(RECORDS) + 1)
    rows = data.profiles(store.engine)
    assert len(rows) == len(RECORDS) and "older-" not in "".join(rows["job_id"])
    palm = rows[rows["model_name"] == "palm_detection_lite"]
    cov = data.coverage(palm).set_index("variant")
    assert cov.loc["tflite-dynamic-int8", "fallback ops"] == 23 and cov.loc["tflite-dynamic-int8", "partitions"] == 24
    assert cov.loc["tflite-dynamic-int8", "share_i8"] == pytest.approx(0.927266)
    assert cov.loc["tflite-dynamic-int8", "int8"] == pytest.approx(0.927266)
    assert cov.loc["tflite-dynamic-int8", "share_unknown"] == pytest.approx(0.065802)
    assert cov.loc["openvino-fp32", "share_f32"] == 1.0 and cov.loc["openvino-fp32", "share_i8"] == 0.0
    ops = data.op_types(palm.set_index("variant").loc["tflite-dynamic-int8", "profile"])
    assert ops.iloc[0]["op_type"] == "DEPTHWISE_CONV_2D" and ops.iloc[0]["count"] == 23


def test_the_profile_page(profiled_db, monkeypatch):
    from streamlit.testing.v1 import AppTest

    import dashboard
    from dashboard.ui import DB_ENV

    monkeypatch.setenv(DB_ENV, f"sqlite:///{profiled_db / 'fleetbench.db'}")
    page = str(Path(dashboard.__file__).parent / "views" / "profile.py")
    at = AppTest.from_file(page, default_timeout=120).run()
    assert not at.exception and not at.error, [e.value for e in at.exception]
    assert at.title[0].value == "Profile"
    assert at.selectbox(key="profile-model").value == "palm_detection_lite"  # the newest profiled model first
    # it opens on a float variant and an int8 one of the same device, side by side
    assert at.selectbox(key="profile-a-palm_detection_lite").value.startswith("tflite-fp16 · litert:cpu")
    assert at.selectbox(key="profile-b-palm_detection_lite").value.startswith("tflite-dynamic-int8 · litert:cpu")
    assert len(at.get("plotly_chart")) == 2 and len(at.dataframe) == 3  # coverage, and each side's nodes
    assert len(at.dataframe[0].value) == 4 and list(at.dataframe[0].value.columns[:8]) == [
        "variant", "device", "threads", "on target", "fallback ops", "partitions", "int8", "i8"]  # fmt: skip
    labels = [(m.label, m.value) for m in at.metric]
    assert ("Partitions", "24") in labels and ("Ops on xnnpack", "96 / 119") in labels and ("int8 share", "93%") in labels
    assert any("Fell back off xnnpack: DEPTHWISE_CONV_2D" in c.value for c in at.caption)
    at.selectbox(key="profile-b-palm_detection_lite").set_value("(none)").run()
    assert not at.exception and len(at.dataframe) == 2
    at.selectbox(key="profile-model").set_value("digits-cnn").run()
    assert not at.exception
    assert at.selectbox(key="profile-a-digits-cnn").value.startswith("tflite-fp32 · litert:cpu")
    assert at.selectbox(key="profile-b-digits-cnn").value.startswith("tflite-int8 · litert:cpu")
    assert len(at.dataframe) == 3 and len(at.dataframe[0].value) == 7
    assert [m.value for m in at.metric if m.label == "int8 share"] == ["0%", "100%"]
    ov = next(o for o in at.selectbox(key="profile-b-digits-cnn").options if o.startswith("openvino-int8"))
    at.selectbox(key="profile-b-digits-cnn").set_value(ov).run()
    assert not at.exception and [m.value for m in at.metric if m.label == "int8 share"] == ["0%", "98%"]


@pytest.mark.parametrize("variants, capabilities, expected", [
    (["tflite-int8", "openvino-fp32", "tflite-fp32", "openvino-int8"], ["litert:cpu", "openvino:CPU", "litert:cpu",
                                                                        "openvino:CPU"], (2, 0)),
    (["tflite-fp16", "tflite-dynamic-int8", "tflite-int8", "tflite-fp32"], ["litert:cpu"] * 4, (3, 2)),
    (["openvino-fp32", "tflite-int8"], ["openvino:CPU", "litert:cpu"], (0, None)),  # not on the same device
])  # fmt: skip
def test_the_profile_page_opens_on_a_float_and_an_int8_variant_of_one_device(variants, capabilities, expected):
    import pandas as pd

    from dashboard import data

    assert data.default_pair(pd.DataFrame({"variant": variants, "capability": capabilities})) == expected


def test_the_profile_page_without_profiles_says_how_to_get_them(tmp_path, golden_record, monkeypatch):
    from streamlit.testing.v1 import AppTest

    import dashboard
    from controller.store import Store
    from dashboard.ui import DB_ENV

    store = Store(f"sqlite:///{tmp_path / 'plain.db'}")
    store.migrate()
    store.add_result(golden_record)
    store.close()
    monkeypatch.setenv(DB_ENV, f"sqlite:///{tmp_path / 'plain.db'}")
    at = AppTest.from_file(str(Path(dashboard.__file__).parent / "views" / "profile.py"), default_timeout=60).run()
    assert not at.exception and "profile: true" in at.info[0].value


# ---------------------------------------------------------------- a whole sweep


@pytest.mark.slow
def test_a_sweep_with_profile_true_stores_profiles_through_the_fleet(tmp_path, tiny_model):
    """The embedded fleet (Redis, a Celery agent, the collector) carries profiles into the store; the command and
    the readiness budgets read them."""
    import numpy as np

    model_dir = tmp_path / "in"
    model_dir.mkdir()
    np.savez(model_dir / "tiny.npz", x=tiny_model["x"], y=tiny_model["y"])
    (model_dir / "tiny.tflite").write_bytes(tiny_model["path"].read_bytes())
    (model_dir / "sweep.yaml").write_text(
        "name: profiled\nmodels: [{path: tiny.tflite, data: tiny.npz, calibration_size: 4}]\n"
        "variants: [tflite-fp32, openvino-fp32]\ndevices: ['litert:cpu', 'openvino:CPU']\nprofile: true\n"
        "settings: {min_iterations: 100, min_duration_s: 0, profile_runs: 20}\n"
    )  # fmt: skip
    (model_dir / "budgets.yaml").write_text("required: ['openvino:*']\nbudgets: [{fallback_ops_max: 3}]\n")
    data = tmp_path / "fb"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETBENCH_")}
    env.update(FLEETBENCH_DISABLE_GPU_PROBE="1", PYTHONPATH=str(ROOT), COLUMNS="120")
    base = [sys.executable, "-m", "controller.cli"]
    run = subprocess.run(base + ["sweep", str(model_dir / "sweep.yaml"), "--data-dir", str(data)], env=env,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    listed = subprocess.run(base + ["profile", "profiled", "-f", "json", "--data-dir", str(data)], env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    found = {(d["record"]["variant"], d["record"]["capability"]): d["profile"] for d in json.loads(listed.stdout)}
    assert set(found) == {("tflite-fp32", "litert:cpu"), ("openvino-fp32", "openvino:CPU")}
    for p in found.values():
        assert p["error"] == "" and p["op_time"] == "" and p["runs"] == 20 and p["nodes"] > 0
        assert "f32" in {s["precision"] for s in p["precisions"]} and not {"i8", "u8"} & {s["precision"] for s in p["precisions"]}
    assert found[("openvino-fp32", "openvino:CPU")]["placement"]["fallback_ops"] == 0
    litert = found[("tflite-fp32", "litert:cpu")]["placement"]
    # the file's batch is open (-1): the shape arithmetic of its Flatten runs on TFLite's kernels, between two
    # XNNPACK partitions
    assert litert["target"] == "xnnpack" and litert["partitions"] == 2
    assert sorted(litert["fallback_op_types"]) == ["PACK", "RESHAPE", "SHAPE", "STRIDED_SLICE"]
    table = subprocess.run(base + ["profile", "profiled", "--data-dir", str(data)], env=env, capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    assert "Profiles in sweep profiled (tiny)" in table.stdout
    ready = subprocess.run(base + ["readiness", "--model", "tiny", "--budgets", str(model_dir / "budgets.yaml"),
                                   "--sweep", "profiled", "--data-dir", str(data)], env=env, capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    assert ready.returncode == 0, ready.stdout + ready.stderr  # openvino:CPU is required, and passes
    assert "4 ops fell back off xnnpack > 3" in " ".join(ready.stdout.split())


def test_a_bundle_profiles_on_a_bare_device(tmp_path, tiny_model):
    """`fleetbench bundle --profile`: run-bundle with only numpy and the runtimes (the C API profiler included)
    brings profiles back, and `fleetbench import` stores them."""
    from controller.bundles import create_bundle, import_results
    from protocol import BenchmarkSettings
    from protocol.bundles import read_results
    from tests.test_bundle import _run_bundle, bare_device, tiny_variants

    store, arts = tiny_variants(tmp_path, tiny_model)
    settings = BenchmarkSettings(min_iterations=100, min_duration_s=0.0, profile=True, profile_runs=10)
    create_bundle(store, arts, "tiny", tmp_path / "tiny.fbb", settings=settings)
    r = _run_bundle(tmp_path / "tiny.fbb", bare_device(tmp_path), "--out", str(tmp_path / "results.json"))
    assert r.returncode == 0, r.stdout + r.stderr
    outcomes = read_results(tmp_path / "results.json")
    sources = {o.record.capability: o.record.profile.source for o in outcomes}
    assert sources == {"litert:cpu": "litert profiler (CompiledModel API, CPU)",
                       "openvino:CPU": "openvino PERF_COUNT (profiling_info)"}  # fmt: skip
    assert import_results(store, tmp_path / "results.json").stored == 2
    assert all(r.profile is not None and r.profile.nodes > 0 for r in store.results())
    store.close()
