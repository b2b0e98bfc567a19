"""Profiles: a runtime's per-node figures made into the compact record (:class:`protocol.records.Profile`), the
precision a kernel ran in read from its name, a graph cut into partitions where its placement changes, and two
profiles compared op type by op type.

Pure functions over plain values. The agent's backends read their runtime's own counters (OpenVINO's
``PERF_COUNT``, LiteRT's profiler) into :class:`~protocol.records.ProfileNode` objects; :func:`summarize`
keeps what a team reads: time per op type, the slowest nodes, the placement, the precision coverage. The
CLI, the dashboard and readiness read profiles through :func:`int8_share` and :func:`diff`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from protocol.records import (PROFILE_TOP_NODES, OpTypeProfile, Placement, PrecisionShare, Profile, ProfileNode)  # fmt: skip

#: Precisions that are 8-bit integer arithmetic.
INT8 = ("i8", "u8")
#: Said where a runtime gives no per-op time (the record never invents one).
NO_OP_TIME = "per-op time not available from this runtime"
#: The precision coverage's name for nodes whose kernel names no precision (a reshape, a copy, a delegate's op).
UNKNOWN = "unknown"
_NAME_MAX = 200


@dataclass(frozen=True)
class GraphOp:
    """One op of the model as the runtime placed it, where placement is counted over other units than the
    timed nodes (LiteRT: XNNPACK times its own operators, placement counts the model's ops)."""

    op_type: str
    place: str


def _sum(values: Iterable[float]) -> float:
    return round(float(sum(values)), 6)


def _share(part: float, whole: float | None) -> float | None:
    if whole is None:
        return None
    return round(part / whole, 6) if whole > 0 else 0.0


# size: one pass per part of the profile (op types, top nodes, placement, precisions), read top to bottom
def summarize(
    nodes: Sequence[ProfileNode],
    *,
    source: str,
    runs: int,
    target: str,
    partitions: int,
    latency_ms: float | None = None,
    op_time: str = "",
    graph: Sequence[GraphOp] | None = None,
    notes: Sequence[str] = (),
) -> Profile:
    """The compact profile of ``nodes`` (every node the runtime listed, in execution order).

    ``target`` is what the capability runs on (``xnnpack``, a delegate, ``gpu``, an OpenVINO device); a node
    placed anywhere else fell back. ``graph`` counts the placement over the model's ops where those are not
    the timed nodes. Per-op time is used only when every executed node has one; otherwise ``op_time`` says
    why there is none (it defaults to :data:`NO_OP_TIME`).
    """
    nodes = [_tidy(n) for n in nodes]
    executed = [n for n in nodes if n.status == "executed"]
    timed = bool(executed) and all(n.time_ms is not None for n in executed)
    if not timed:
        executed = [_untimed(n) for n in executed]
        op_time = op_time or NO_OP_TIME
    node_time = _sum(n.time_ms for n in executed) if timed else None

    by_type: dict[str, list[ProfileNode]] = {}
    for n in executed:
        by_type.setdefault(n.op_type, []).append(n)
    op_types = []
    for op_type, group in by_type.items():
        t = _sum(n.time_ms for n in group) if timed else None
        op_types.append(OpTypeProfile(op_type=op_type, count=len(group), time_ms=t,
                                      share=_share(t, node_time) if timed else None))  # fmt: skip
    op_types.sort(key=lambda o: (-(o.time_ms or 0.0), -o.count, o.op_type))

    top = sorted(executed, key=lambda n: -n.time_ms)[:PROFILE_TOP_NODES] if timed else executed[:PROFILE_TOP_NODES]

    placed = list(graph) if graph is not None else [GraphOp(n.op_type, n.place) for n in executed]
    places: dict[str, int] = {}
    for op in placed:
        places[op.place] = places.get(op.place, 0) + 1
    off = [op.op_type for op in placed if op.place != target]
    fallback_types = sorted(set(off), key=lambda t: (-off.count(t), t))
    placement = Placement(
        target=target, ops_on_target=places.get(target, 0), fallback_ops=len(off), partitions=partitions,
        time_on_target_ms=_sum(n.time_ms for n in executed if n.place == target) if timed else None,
        fallback_time_ms=_sum(n.time_ms for n in executed if n.place != target) if timed else None,
        places=dict(sorted(places.items(), key=lambda kv: (-kv[1], kv[0]))), fallback_op_types=tuple(fallback_types),
    )  # fmt: skip

    precisions = []
    for p in sorted({n.precision or UNKNOWN for n in executed}):
        group = [n for n in executed if (n.precision or UNKNOWN) == p]
        t = _sum(n.time_ms for n in group) if timed else None
        precisions.append(PrecisionShare(precision=p, ops=len(group), op_share=round(len(group) / len(executed), 6),
                                         time_ms=t, time_share=_share(t, node_time) if timed else None))  # fmt: skip
    precisions.sort(key=lambda s: (s.precision == UNKNOWN, -(s.time_share or 0.0), -s.ops, s.precision))

    return Profile(
        source=source, runs=runs, nodes=len(executed), not_executed=len(nodes) - len(executed), node_time_ms=node_time,
        latency_ms=round(latency_ms, 6) if latency_ms is not None else None, op_time="" if timed else op_time,
        op_types=tuple(op_types), top_nodes=tuple(top), placement=placement, precisions=tuple(precisions),
        notes=tuple(notes),
    )  # fmt: skip


def failed(source: str, target: str, why: str) -> Profile:
    """The profile of a phase that could not run: empty, with the reason (the job's other numbers stand)."""
    return Profile(source=source, runs=0, nodes=0, not_executed=0, node_time_ms=None, latency_ms=None, op_time="",
                   op_types=(), top_nodes=(), placement=Placement(target=target, ops_on_target=0, fallback_ops=0,
                                                                  partitions=0), precisions=(), error=why)  # fmt: skip


def _tidy(n: ProfileNode) -> ProfileNode:
    """The node with its name cut to 200 characters and its time rounded to the nanosecond."""
    name = n.name if len(n.name) <= _NAME_MAX else n.name[: _NAME_MAX - 1] + "…"
    t = round(n.time_ms, 6) if n.time_ms is not None else None
    return n if (name, t) == (n.name, n.time_ms) else dataclasses.replace(n, name=name, time_ms=t)


def _untimed(n: ProfileNode) -> ProfileNode:
    return n if n.time_ms is None else dataclasses.replace(n, time_ms=None)


def int8_share(profile: Profile) -> tuple[float, str] | None:
    """(share of the profile in 8-bit integer arithmetic, "time" or "ops"): of all the node time where the runtime
    gave per-op time, else of all the nodes. None when no node's precision is known (or the phase failed)."""
    if not any(p.precision != UNKNOWN for p in profile.precisions):
        return None
    if all(p.time_share is not None for p in profile.precisions):
        return round(sum(p.time_share for p in profile.precisions if p.precision in INT8), 6), "time"
    return round(sum(p.op_share for p in profile.precisions if p.precision in INT8), 6), "ops"


def partitions(nodes: list[str], edges: list[tuple[str, str]], place: dict[str, str]) -> dict[str, int]:
    """How many subgraphs each place's nodes make when a graph is cut wherever the place changes: {place: count}.

    Nodes are taken in dependency order, as many of one place as are ready before any of another (a delegate
    or HETERO takes a subgraph only when its inputs are all computed): a target node that depends on a
    fallback node which depends on the target starts a new target subgraph, even where a skip edge joins the
    two target nodes directly."""
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    indeg = {n: 0 for n in nodes}
    for a, b in edges:
        if a in succ and b in indeg and a != b:
            succ[a].append(b)
            indeg[b] += 1
    ready = [n for n in nodes if indeg[n] == 0]
    counts: dict[str, int] = {}
    while ready:
        current = place[ready[0]]
        queue = [n for n in ready if place[n] == current]
        ready = [n for n in ready if place[n] != current]
        counts[current] = counts.get(current, 0) + 1
        while queue:
            n = queue.pop()
            for s in succ[n]:
                indeg[s] -= 1
                if indeg[s] == 0:
                    (queue if place[s] == current else ready).append(s)
    return counts


# ---------------------------------------------------------------- precision names

_CANON = {"i8": "i8", "u8": "u8", "f16": "f16", "fp16": "f16", "f32": "f32", "fp32": "f32", "bf16": "bf16",
          "i4": "i4", "u4": "u4", "i16": "i16", "i32": "i32", "i64": "i64", "f64": "f64", "int8": "i8", "uint8": "u8",
          "float16": "f16", "float32": "f32", "bfloat16": "bf16", "int16": "i16", "int32": "i32", "int64": "i64",
          "float64": "f64"}  # fmt: skip


def canonical_precision(name: str) -> str:
    """``I8``, ``FP32``, ``bf16`` ... as the profile names them (i8, f32, bf16); "" for anything else."""
    return _CANON.get(name.strip().lower(), "")


def openvino_precision(exec_type: str, runtime_precision: str = "") -> str:
    """The precision of an OpenVINO kernel: its exec_type's suffix (``jit_avx2_I8`` -> i8,
    ``brgconv_avx512_f32`` -> f32), else the layer's runtimePrecision; "" when neither says.

    The exec_type names the arithmetic: an fp16 IR's convolutions on an AVX2 CPU run ``brgconv_avx2_f32``
    (f16 weights widened to f32), though their runtimePrecision says f16."""
    suffix = exec_type.rsplit("_", 1)[-1] if "_" in exec_type else ""
    return canonical_precision(suffix) or canonical_precision(runtime_precision)


#: XNNPACK's data types, as its operator names give them (``Fully Connected (NC, QD8, F32, QC8W) GEMM``).
_XNN_TYPES = {"F32": "f32", "F16": "f16", "BF16": "bf16", "QS8": "i8", "QC8": "i8", "QD8": "i8", "S8": "i8",
              "QU8": "u8", "U8": "u8", "QP8": "i8"}  # fmt: skip
_XNN_NAME = re.compile(r"^\s*([^(]+?)\s*(?:\(([^)]*)\))?\s*([\w ]*)$")


def xnnpack_op(tag: str) -> tuple[str, str]:
    """(op type, precision) of an XNNPACK operator name: ``Convolution (NHWC, QS8) IGEMM`` -> (Convolution, i8).

    The precision is the operator's first data type (the activations it computes on: a QD8 GEMM multiplies
    dynamically quantized int8 activations by int8 weights); "" for operators of no arithmetic type
    (``Static Reshape (NC)``, copies of X32)."""
    m = _XNN_NAME.match(tag)
    if not m:
        return tag.strip(), ""
    args = [a.strip() for a in (m.group(2) or "").split(",")]
    precision = next((_XNN_TYPES[a] for a in args if a in _XNN_TYPES), "")
    return m.group(1), precision


# ---------------------------------------------------------------- comparing two


@dataclass(frozen=True)
class OpTypeDiff:
    op_type: str
    count_a: int
    count_b: int
    time_a_ms: float | None
    time_b_ms: float | None

    @property
    def delta_ms(self) -> float | None:
        if self.time_a_ms is None or self.time_b_ms is None:
            return None
        return self.time_b_ms - self.time_a_ms

    @property
    def ratio(self) -> float | None:
        if self.time_a_ms is None or self.time_b_ms is None or self.time_a_ms <= 0:
            return None
        return self.time_b_ms / self.time_a_ms


def diff(a: Profile, b: Profile) -> list[OpTypeDiff]:
    """Every op type of either profile, A against B: where B gained or lost the most time first (by count
    where a profile has no per-op time)."""
    ta = {t.op_type: t for t in a.op_types}
    tb = {t.op_type: t for t in b.op_types}
    timed_a, timed_b = a.node_time_ms is not None, b.node_time_ms is not None
    rows = []
    for op_type in dict.fromkeys([*ta, *tb]):
        x, y = ta.get(op_type), tb.get(op_type)
        rows.append(OpTypeDiff(
            op_type=op_type, count_a=x.count if x else 0, count_b=y.count if y else 0,
            time_a_ms=(x.time_ms if x else 0.0) if timed_a else None, time_b_ms=(y.time_ms if y else 0.0) if timed_b else None,
        ))  # fmt: skip
    rows.sort(key=lambda r: (-abs(r.delta_ms) if r.delta_ms is not None else 0.0, -abs(r.count_b - r.count_a), r.op_type))
    return rows
