"""Issue 17: the profile phase. Per-op times, placement and real precision per node, read from the runtimes
themselves: OpenVINO's PERF_COUNT, LiteRT's profiler (its C API) and op list, an external delegate's
placement. The summaries are tested from tables; the runtimes on real models, in the real benchmark child."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agent.backends import litert_profiler
from agent.backends.litert import graph_placement
from agent.runner import run_job
from controller.artifacts import ArtifactStore
from protocol import BenchmarkSettings, ContractError, JobSpec, ProfileNode, ResultRecord
from protocol import profiling as P
from protocol.records import PROFILE_TOP_NODES, Profile
from tests.helpers import venv_python

ROOT = Path(__file__).resolve().parent.parent
FAST = BenchmarkSettings(threads=1, warmup_iterations=2, min_iterations=200, min_duration_s=0.0, timeout_s=180,
                         profile=True, profile_runs=30)  # fmt: skip


def node(name, op_type="Convolution", place="CPU", precision="f32", time_ms=0.01, status="executed", exec_type=""):
    return ProfileNode(name=name, op_type=op_type, place=place, precision=precision, exec_type=exec_type,
                       time_ms=time_ms, status=status)  # fmt: skip


# ---------------------------------------------------------------- summaries, from tables


def test_summarize_keeps_time_by_op_type_the_slowest_nodes_placement_and_precision():
    nodes = [node("conv1", time_ms=0.030, precision="i8", exec_type="jit_avx2_I8"),
             node("fused", op_type="Relu", time_ms=0.0, status="not-run"),
             node("conv2", time_ms=0.010, precision="i8"),
             node("fc", op_type="FullyConnected", time_ms=0.050, precision="f32"),
             node("cumsum", op_type="CUMSUM", place="builtin", time_ms=0.010, precision="f32")]  # fmt: skip
    p = P.summarize(nodes, source="test", runs=7, target="CPU", partitions=2, latency_ms=0.12)
    assert (p.nodes, p.not_executed, p.op_time, p.runs) == (4, 1, "", 7)
    assert p.node_time_ms == pytest.approx(0.1)
    assert [(t.op_type, t.count, t.share) for t in p.op_types] == [("FullyConnected", 1, 0.5), ("Convolution", 2, 0.4),
                                                                   ("CUMSUM", 1, 0.1)]  # fmt: skip
    assert [n.name for n in p.top_nodes] == ["fc", "conv1", "conv2", "cumsum"]  # the fused node is counted, not listed
    pl = p.placement
    assert (pl.target, pl.ops_on_target, pl.fallback_ops, pl.partitions) == ("CPU", 3, 1, 2)
    assert pl.fallback_op_types == ("CUMSUM",) and pl.places == {"CPU": 3, "builtin": 1}
    assert pl.time_on_target_ms == pytest.approx(0.09) and pl.fallback_time_ms == pytest.approx(0.01)
    shares = {s.precision: (s.ops, s.op_share, s.time_share) for s in p.precisions}
    assert shares == {"i8": (2, 0.5, 0.4), "f32": (2, 0.5, 0.6)}
    assert P.int8_share(p) == (0.4, "time")
    # a node whose kernel names no precision stays in the whole: int8 is a share of all the node time
    unnamed = P.summarize(nodes + [node("copy", op_type="Copy", precision="", time_ms=0.1)], source="t", runs=1,
                          target="CPU", partitions=1)  # fmt: skip
    assert [s.precision for s in unnamed.precisions] == ["f32", "i8", "unknown"]
    assert P.int8_share(unnamed) == (0.2, "time") and unnamed.precisions[-1].time_share == 0.5
    assert not p.problems() and Profile.from_dict(json.loads(json.dumps(p.to_dict()))) == p


def test_without_per_op_time_nothing_is_invented():
    """One node without a time: no node keeps one, and the profile says why there is none."""
    nodes = [node("a", time_ms=0.02, precision="i8"), node("b", time_ms=None, precision="f32"), node("c", precision="i8")]
    p = P.summarize(nodes, source="test", runs=1, target="CPU", partitions=1)
    assert p.node_time_ms is None and p.op_time == P.NO_OP_TIME
    assert all(n.time_ms is None for n in p.top_nodes) and all(t.time_ms is None and t.share is None for t in p.op_types)
    assert [n.name for n in p.top_nodes] == ["a", "b", "c"]  # execution order, not a made-up ranking
    assert P.int8_share(p) == (pytest.approx(2 / 3, abs=1e-6), "ops")
    why = P.summarize(nodes[1:2], source="t", runs=1, target="CPU", partitions=1, op_time="no profiler here")
    assert why.op_time == "no profiler here"


def test_a_profile_keeps_twenty_nodes_and_cuts_long_names():
    nodes = [node(f"n{i}" + "x" * (300 if i == 0 else 0), time_ms=1.0 + i) for i in range(30)]
    p = P.summarize(nodes, source="t", runs=1, target="CPU", partitions=1)
    assert len(p.top_nodes) == PROFILE_TOP_NODES and p.top_nodes[0].name == "n29" and p.nodes == 30
    long = P.summarize(nodes[:1], source="t", runs=1, target="CPU", partitions=1).top_nodes[0].name
    assert len(long) == 200 and long.endswith("…")


@pytest.mark.parametrize("tag, expected", [
    ("Convolution (NHWC, QS8) IGEMM", ("Convolution", "i8")),
    ("Convolution (NHWC, QC8) IGEMM", ("Convolution", "i8")),
    ("Fully Connected (NC, QD8, F32, QC8W) GEMM", ("Fully Connected", "i8")),
    ("Fully Connected (NC, F32) GEMM", ("Fully Connected", "f32")),
    ("Max Pooling (NHWC, S8)", ("Max Pooling", "i8")),
    ("Add (ND, QU8)", ("Add", "u8")),
    ("Convolution (NHWC, F16) IGEMM", ("Convolution", "f16")),
    ("Static Reshape (NC)", ("Static Reshape", "")),
    ("Copy (NC, X32)", ("Copy", "")),
    ("PReLU (NC, F32)", ("PReLU", "f32")),
])  # fmt: skip
def test_xnnpack_operator_names_give_the_op_type_and_precision(tag, expected):
    assert P.xnnpack_op(tag) == expected


@pytest.mark.parametrize("exec_type, runtime, expected", [
    ("jit_avx512_I8", "u8", "i8"), ("brgconv_avx2_f32", "f16", "f32"), ("brgemm_avx512_amx_bf16", "bf16", "bf16"),
    ("jit_gemm_I8", "", "i8"), ("undef", "f32", "f32"), ("unknown_I8", "u8", "i8"), ("ref_any_f16", "", "f16"),
    ("gemm_kernel_opt", "f16", "f16"), ("", "", ""),
])  # fmt: skip
def test_openvino_precision_is_the_kernels(exec_type, runtime, expected):
    assert P.openvino_precision(exec_type, runtime) == expected


def test_two_profiles_compared_op_type_by_op_type():
    a = P.summarize([node("c", time_ms=0.02), node("fc", op_type="FullyConnected", time_ms=0.01)],
                    source="t", runs=1, target="CPU", partitions=1)  # fmt: skip
    b = P.summarize([node("c", time_ms=0.015, precision="i8"),
                     node("fc", op_type="FullyConnectedQuantizedLegacy", time_ms=0.03, precision="i8")],
                    source="t", runs=1, target="CPU", partitions=1)  # fmt: skip
    rows = P.diff(a, b)
    assert [r.op_type for r in rows] == ["FullyConnectedQuantizedLegacy", "FullyConnected", "Convolution"]
    assert rows[0].delta_ms == pytest.approx(0.03) and rows[0].ratio is None  # only in B
    assert rows[2].ratio == pytest.approx(0.75) and (rows[1].count_a, rows[1].count_b) == (1, 0)


@pytest.mark.parametrize("change, error", [
    (dict(nodes=5), "add up to"),
    (dict(runs=-1), "runs and counts must be >= 0"),
    (dict(top_nodes=tuple(node(f"n{i}") for i in range(21))), "21 top nodes"),
    (dict(node_time_ms=-1.0), "negative or not a finite number"),
    (dict(latency_ms=float("nan")), "negative or not a finite number"),
    (dict(latency_ms=float("inf")), "negative or not a finite number"),
    (dict(notes=("x" * 1001,)), "a text longer than 1000 characters"),
    (dict(notes=("n",) * 21), "more than 20 notes"),
])  # fmt: skip
def test_an_impossible_profile_is_refused_with_the_record(golden_record, change, error):
    good = P.summarize([node("a"), node("b")], source="t", runs=3, target="CPU", partitions=1)
    bad = dataclasses.replace(good, **change)
    assert any(error in p for p in bad.problems())
    record = dataclasses.replace(golden_record, profile=bad)
    with pytest.raises(ContractError, match=f"profile: .*{error}"):
        record.check_consistent()
    shares = dataclasses.replace(good, precisions=(dataclasses.replace(good.precisions[0], op_share=1.5),))
    assert "a share is outside 0-1" in shares.problems()
    twice = dataclasses.replace(good, precisions=good.precisions * 2)  # two full shares: int8 could read 200%
    assert "the precisions' op_shares add up to 2.000, past 1" in twice.problems()
    placement = dataclasses.replace(good.placement, fallback_time_ms=float("nan"), places={"CPU": -2})
    assert {"runs and counts must be >= 0", "a time is negative or not a finite number"} <= set(
        dataclasses.replace(good, placement=placement).problems())  # fmt: skip


def test_a_record_with_a_profile_travels_and_an_old_one_reads_without(golden_record):
    p = P.summarize([node("a", precision="i8")], source="t", runs=3, target="CPU", partitions=1)
    record = dataclasses.replace(golden_record, profile=p)
    back = ResultRecord.from_json(record.to_json(samples="text"))
    assert back.profile == p
    back.check_consistent()
    old = json.loads(golden_record.to_json())
    old.pop("profile", None)
    assert ResultRecord.from_dict(old).profile is None
    with pytest.raises(ContractError, match=r"profile\.placement: missing field 'target'"):
        ResultRecord.from_dict(dict(old, profile=dict(record.to_dict()["profile"], placement={"ops_on_target": 1})))


# ---------------------------------------------------------------- LiteRT: placement and the profiler's events


def _op(index, name, inputs, outputs):
    return {"index": index, "op_name": name, "inputs": np.array(inputs), "outputs": np.array(outputs)}


#: conv(0) -> shape(1) -> slice(2) -> reshape(3, also of 0's output) -> fc(4) -> cumsum(5) -> softmax(6)
MODEL_OPS = [_op(0, "CONV_2D", [0, 7, 6], [8]), _op(1, "SHAPE", [8], [9]), _op(2, "STRIDED_SLICE", [9, 3], [10]),
             _op(3, "RESHAPE", [8, 10], [12]), _op(4, "FULLY_CONNECTED", [12, 1, -1], [13]),
             _op(5, "CUMSUM", [13, 5], [14]), _op(6, "SOFTMAX", [14], [15])]  # fmt: skip


@pytest.mark.parametrize("delegates, at_init, device, places, partitions", [
    ([], 7, "cpu", ["builtin"] * 7, {}),
    # XNNPACK (applied at allocation) took conv, fc and softmax in three partitions
    ([_op(7, "DELEGATE", [0, 6, 7], [8]), _op(8, "DELEGATE", [12, 1], [13]), _op(9, "DELEGATE", [14], [15])], 7, "cpu",
     ["xnnpack", "builtin", "builtin", "builtin", "xnnpack", "builtin", "xnnpack"], {"xnnpack": 3}),
    # one partition of three ops: fc, cumsum, softmax
    ([_op(7, "DELEGATE", [12, 1, 5], [15])], 7, "cpu", ["builtin"] * 4 + ["xnnpack"] * 3, {"xnnpack": 1}),
    # an external delegate (applied before allocation) took fc..softmax, XNNPACK the conv
    ([_op(7, "DELEGATE", [12, 1, 5], [15]), _op(8, "DELEGATE", [0, 6, 7], [8])], 8, "edgetpu",
     ["xnnpack", "builtin", "builtin", "builtin", "edgetpu", "edgetpu", "edgetpu"], {"edgetpu": 1, "xnnpack": 1}),
])  # fmt: skip
def test_delegate_partitions_are_traced_back_to_the_ops_they_replaced(delegates, at_init, device, places, partitions):
    got, parts = graph_placement(MODEL_OPS + delegates, at_init, device)
    assert [got[i] for i in range(7)] == places and parts == partitions


@pytest.mark.parametrize("nodes, edges, place, expected", [
    # target -> fallback -> target, and a skip edge joining the two target nodes: two target subgraphs
    ("abc", [("a", "b"), ("b", "c"), ("a", "c")], dict(a="GPU", b="CPU", c="GPU"), {"GPU": 2, "CPU": 1}),
    ("abc", [("a", "b"), ("b", "c")], dict(a="GPU", b="GPU", c="GPU"), {"GPU": 1}),
    # two independent branches on the target, joined on the target: one subgraph
    ("abcd", [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")], dict(a="GPU", b="GPU", c="GPU", d="GPU"), {"GPU": 1}),
    # a fallback op on one branch only: the join waits for it
    ("abcd", [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")], dict(a="GPU", b="CPU", c="GPU", d="GPU"),
     {"GPU": 2, "CPU": 1}),
    ("ab", [], dict(a="GPU", b="CPU"), {"GPU": 1, "CPU": 1}),
])  # fmt: skip
def test_hetero_partitions_are_cut_where_the_device_changes(nodes, edges, place, expected):
    assert P.partitions(list(nodes), edges, place) == expected


def test_profiler_events_become_one_mean_per_op():
    events = []
    for run in range(2):
        events += [(1, "Invoke", 100 + run, 0, 0),  # a run
                   (8, "Convolution (NHWC, F32) IGEMM", 10 + run, 0, 0), (8, "Static Reshape (NC)", 0, 1, 0),
                   (2, "CUMSUM", 4, 5, 0),  # node 5 of subgraph 0, on TFLite's kernels
                   (8, "Fully Connected (NC, F32) GEMM", 6, 0, 0),  # restarts at 0: the next partition
                   (32, "Invoke", 4294967296, 0, 0)]  # telemetry: ignored  # fmt: skip
    out = litert_profiler.aggregate(events, runs=2)
    rows = {(r["kind"], r["partition"], r["index"]): (r["tag"], r["mean_us"], r["count"]) for r in out["ops"]}
    assert rows == {("delegate", 1, 0): ("Convolution (NHWC, F32) IGEMM", 10.5, 2),
                    ("delegate", 1, 1): ("Static Reshape (NC)", 0.0, 2), ("node", 0, 5): ("CUMSUM", 4.0, 2),
                    ("delegate", 2, 0): ("Fully Connected (NC, F32) GEMM", 6.0, 2)}  # fmt: skip
    assert out["invoke_us"] == 100.5
    # an op that runs three times per inference (a loop body) counts three times, per inference
    loop = [(1, "Invoke", 90, 0, 0)] + [(2, "ADD", 2, 3, 1)] * 3 + [(1, "Invoke", 90, 0, 0)] + [(2, "ADD", 2, 3, 1)] * 3
    (row,) = litert_profiler.aggregate(loop, runs=2)["ops"]
    assert (row["subgraph"], row["index"], row["mean_us"], row["count"]) == (1, 3, 6.0, 6)


def test_the_c_api_profiler_is_read_only_from_the_release_it_was_written_for():
    assert "known for ai-edge-litert 2.3 (installed: 2.4.0)" in litert_profiler.available("2.4.0")
    assert litert_profiler.available("2.3.0") == ""  # the installed one: its libLiteRt.so is there


# ---------------------------------------------------------------- real runs


@pytest.fixture(scope="module")
def cumsum_model(tmp_path_factory):
    """A real TFLite model with CUMSUM, an op XNNPACK does not take, between ops it does."""
    from controller.demo_model import import_tf

    tf = import_tf()
    tf.keras.utils.set_random_seed(3)
    inp = tf.keras.Input(shape=(8, 8, 2))
    x = tf.keras.layers.Conv2D(4, 3, activation="relu")(inp)
    x = tf.keras.layers.Flatten()(x)
    x = tf.keras.layers.Dense(6)(x)
    x = tf.keras.layers.Lambda(lambda t: tf.math.cumsum(t, axis=1))(x)
    model = tf.keras.Model(inp, tf.keras.layers.Softmax()(x))
    path = tmp_path_factory.mktemp("cumsum") / "cumsum.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path


def _job(store: ArtifactStore, path: Path, variant: str, capability: str, settings=FAST) -> JobSpec:
    return JobSpec(job_id=f"p-{variant}-{capability}".replace(":", "-"), model_id="m", model_name="profiled",
                   variant=variant, capability=capability, artifact=store.put_file(path), settings=settings)  # fmt: skip


def _profiled(spec: JobSpec, **kw) -> ResultRecord:
    outcome = run_job(spec.to_dict(), "agent-p", **kw)
    assert outcome.ok, outcome.error
    outcome.record.check_consistent()
    return outcome.record


def test_an_op_xnnpack_does_not_take_shows_on_tflites_own_kernels_with_its_time(tmp_path, cumsum_model):
    r = _profiled(_job(ArtifactStore(tmp_path / "a"), cumsum_model, "tflite-fp32", "litert:cpu"))
    p = r.profile
    assert p.error == "" and p.op_time == "" and p.source.startswith("litert profiler")
    pl = p.placement
    assert pl.target == "xnnpack" and "CUMSUM" in pl.fallback_op_types and pl.fallback_ops >= 1
    assert pl.ops_on_target >= 2 and pl.partitions >= 2  # the ops around CUMSUM: XNNPACK, cut in two at least
    cumsum = next(n for n in p.top_nodes if n.op_type == "CUMSUM")
    assert cumsum.place == "builtin" and cumsum.time_ms is not None and cumsum.precision == "f32"
    xnn = [n for n in p.top_nodes if n.place == "xnnpack"]
    assert xnn and all(n.exec_type and "(" in n.exec_type for n in xnn)  # XNNPACK's own operator names
    assert p.node_time_ms > 0 and p.latency_ms > 0 and p.runs == FAST.profile_runs
    assert {t.op_type for t in p.op_types} >= {"CUMSUM", "Convolution"}


def test_the_passthrough_delegate_claims_nothing_and_that_is_full_fallback(tmp_path, cumsum_model, delegate_lib,
                                                                           monkeypatch):  # fmt: skip
    from agent.backends import delegates

    monkeypatch.setenv(delegates.ENV, json.dumps({"passthrough": {"path": str(delegate_lib)}}))
    r = _profiled(_job(ArtifactStore(tmp_path / "a"), cumsum_model, "tflite-fp32", "litert:passthrough"))
    pl = r.profile.placement
    assert (pl.target, pl.ops_on_target, pl.partitions) == ("passthrough", 0, 0)
    assert pl.fallback_ops == r.profile.nodes == 8 and set(pl.places) == {"xnnpack", "builtin"}
    assert r.profile.op_time.startswith(P.NO_OP_TIME) and "placed, not timed" in r.profile.op_time
    assert all(n.time_ms is None for n in r.profile.top_nodes) and r.profile.runs == 0  # an op list: nothing ran for it
    assert r.profile.notes == ()  # nothing was cut short


def test_tflite_runtime_says_it_has_no_per_op_time(tmp_path, cumsum_model, monkeypatch):
    python = venv_python(".venv-tflite")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    r = _profiled(_job(ArtifactStore(tmp_path / "a"), cumsum_model, "tflite-fp32", "tflite:cpu"),
                  child_argv=[str(python), "-m", "agent.child"])  # fmt: skip
    p = r.profile
    assert p.op_time == f"{P.NO_OP_TIME}: tflite-runtime's Python API has no profiler (LiteRT's C API profiler is " \
                        "ai-edge-litert's)"  # fmt: skip
    assert "CUMSUM" in p.placement.fallback_op_types and p.placement.target == "xnnpack"


def test_without_profile_there_is_no_profile_phase(tmp_path, cumsum_model):
    r = _profiled(_job(ArtifactStore(tmp_path / "a"), cumsum_model, "tflite-fp32", "litert:cpu",
                       dataclasses.replace(FAST, profile=False)))  # fmt: skip
    assert r.profile is None


def test_a_profile_that_cannot_run_costs_the_profile_never_the_record(tmp_path, cumsum_model):
    # the job's timeout leaves under 5 s after the latency phase: the record stands, the profile says why not
    settings = dataclasses.replace(FAST, timeout_s=4.0, max_duration_s=3.0, min_duration_s=0.0)
    r = _profiled(_job(ArtifactStore(tmp_path / "a"), cumsum_model, "tflite-fp32", "litert:cpu", settings))
    assert r.stats.count >= settings.min_iterations
    assert r.profile.error.startswith("the profile phase could not run") and "timeout_s=4" in r.profile.error
    assert r.profile.nodes == 0 and r.profile.op_time == "" and not r.profile.problems()


def test_a_profile_phase_that_crashes_costs_the_profile_never_the_record(tmp_path, cumsum_model, monkeypatch):
    """The phase runs in a process of its own: a runtime that dies there (here, a SIGKILL at its start, as the
    kernel's OOM killer would) leaves the job's record whole."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os, signal, sys\n"
        "if 'agent.profile_child' in getattr(sys, 'orig_argv', []):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n")  # fmt: skip
    monkeypatch.setenv("PYTHONPATH", f"{hook}{__import__('os').pathsep}{ROOT}")
    r = _profiled(_job(ArtifactStore(tmp_path / "a"), cumsum_model, "tflite-fp32", "litert:cpu"))
    assert r.stats.count >= FAST.min_iterations and r.profile is not None
    assert r.profile.error == "the profile phase could not run: its process crashed (killed by signal 9)"


@pytest.fixture(scope="module")
def demo_variants(tmp_path_factory):
    """The demo model (trained here) converted to openvino-fp32 and openvino-int8, as `fleetbench demo` does."""
    from controller import demo_model
    from controller.config import Paths
    from controller.convert import service
    from controller.datasets import Preprocessing
    from controller.store import Store

    paths = Paths.resolve(tmp_path_factory.mktemp("demo"))
    files = demo_model.ensure(paths)
    store = Store(paths.db_url(None))
    store.migrate()
    arts = ArtifactStore(paths.artifacts)
    plan = service.plan(files.keras, ["openvino-fp32", "openvino-int8"], store, arts, dataset_path=files.holdout,
                        preprocessing=Preprocessing(scale=demo_model.SCALE), n_calibration=64, name="digits-cnn")  # fmt: skip
    report = service.execute(plan, store, service.local_runner(arts))
    store.close()
    assert all(o.artifact is not None for o in report.outcomes), [o.error for o in report.outcomes]
    return {o.variant: o.artifact for o in report.outcomes}


@pytest.mark.slow
def test_the_demo_models_openvino_int8_runs_int8_kernels_and_fp32_none(demo_variants):
    records = {}
    for variant, artifact in demo_variants.items():
        spec = JobSpec(job_id=f"demo-{variant}", model_id="m", model_name="digits-cnn", variant=variant,
                       capability="openvino:CPU", artifact=artifact, settings=FAST)  # fmt: skip
        records[variant] = _profiled(spec)
    int8, fp32 = records["openvino-int8"].profile, records["openvino-fp32"].profile
    for p in (int8, fp32):
        assert p.source == "openvino PERF_COUNT (profiling_info)" and p.op_time == ""
        assert p.placement.target == "CPU" and p.placement.fallback_ops == 0 and p.placement.partitions == 1
        assert all(n.exec_type for n in p.top_nodes) and p.node_time_ms > 0
    kernels = {n.exec_type for n in int8.top_nodes}
    assert any(k.endswith("_I8") for k in kernels), kernels  # e.g. jit_avx2_I8, jit_gemm_I8
    assert {n.precision for n in int8.top_nodes if n.op_type == "Convolution"} == {"i8"}
    assert P.int8_share(int8)[0] > 0.5
    assert not any("I8" in n.exec_type or n.precision in ("i8", "u8") for n in fp32.top_nodes)
    assert P.int8_share(fp32) == (0.0, "time") and {s.precision for s in fp32.precisions} == {"f32"}
    assert fp32.not_executed > 0  # fused nodes (a Relu in its convolution) are counted, with their status


@pytest.mark.slow
def test_hetero_places_every_node_on_its_first_device(demo_variants, monkeypatch):
    """HETERO:CPU through the configured device strings: query_model's placement, one partition."""
    monkeypatch.setenv("FLEETBENCH_OPENVINO_DEVICES", "HETERO:CPU")
    spec = JobSpec(job_id="hetero", model_id="m", model_name="digits-cnn", variant="openvino-fp32",
                   capability="openvino:HETERO:CPU", artifact=demo_variants["openvino-fp32"], settings=FAST)  # fmt: skip
    p = _profiled(spec).profile
    assert p.error == "", p.error
    assert (p.placement.target, p.placement.fallback_ops, p.placement.partitions) == ("CPU", 0, 1)
    assert p.placement.ops_on_target == p.nodes > 0


def test_the_profiler_child_says_why_for_a_model_it_cannot_read(tmp_path):
    """A hostile file given to the C API child is a refusal or a crash of that child, one line, never more."""
    from agent.backends.litert import run_profiler

    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"TFL3" + bytes(range(256)) * 8)
    found, why = run_profiler(str(bad), [np.zeros((1, 2), np.float32)], ["x"], {}, 5, 1, 60)
    assert found is None and why and "\n" not in why
    assert why.startswith(("LiteRT's profiler refused the model", "LiteRT's profiler crashed"))


@pytest.mark.slow
def test_the_profile_phase_keeps_within_its_time(demo_variants, monkeypatch):
    """Its runs are cut to what fits in PROFILE_BUDGET_S at the latency phase's mean, and OpenVINO's loop stops at
    its deadline; the profile says how many ran."""
    from agent import backends, benchmark
    from agent.artifacts import local_path

    backend = backends.create("openvino")
    backend.load(str(local_path(demo_variants["openvino-fp32"])), "CPU", FAST)
    backend.prepare([np.zeros(backend.input_specs()[0].shape, np.float32)])
    assert backend.profile(50, 0.0).runs == 1  # past its deadline at once: one run, never none
    monkeypatch.setattr(benchmark, "PROFILE_BUDGET_S", 1e-6)
    spec = JobSpec(job_id="budget", model_id="m", model_name="digits-cnn", variant="openvino-fp32",
                   capability="openvino:CPU", artifact=demo_variants["openvino-fp32"], settings=FAST)  # fmt: skip
    p = benchmark.execute(spec, "agent-p").profile
    assert p.runs == 1 and p.notes[-1].startswith(f"1 of the {FAST.profile_runs} profile_runs")
