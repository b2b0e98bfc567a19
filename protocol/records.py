"""The wire contract: job specs and result records.

Plain frozen dataclasses with ``to_dict``/``from_dict``; JSON only. The same
record travels as the Celery message, the SQL JSON column and the CSV/pandas
export. ``from_dict`` validates types and names the offending field, so a bad
message fails with a clear error instead of half-storing.

Versioning: every top-level message carries ``schema_version``. A reader
accepts its own major version and refuses others with a message that says to
upgrade the older side.
"""

# size: the whole wire contract in one file: every message with its checks, so a schema change is read in one place

from __future__ import annotations

import dataclasses
import functools
import datetime as _dt
import json
import math
import types
import typing
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional

from protocol.samples import MAX_SAMPLES, Samples, SamplesError
from protocol.stats import Summary, summarize_ns, window_percentiles

SCHEMA_VERSION = 1


class ContractError(ValueError):
    """A message does not follow the wire contract."""


def utc_now() -> str:
    """Timestamp in the contract's format: ISO 8601, UTC, microseconds."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


def new_job_id() -> str:
    return uuid.uuid4().hex


# --------------------------------------------------------------------------
# Generic conversion between frozen dataclasses and JSON-safe dicts.


_SCALARS = (int, float, str, bool, type(None))


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict:
    return typing.get_type_hints(cls)


#: How :meth:`_Contract.to_dict` writes raw samples: a list of ints (for people and tools), the
#: compact ``"fbs1:..."`` text (the wire), or not at all (the store keeps them in a column of their own).
SAMPLES_AS = ("list", "text", "omit")
_OMIT = object()


_SCALAR_TYPES = frozenset(_SCALARS)


@functools.lru_cache(maxsize=None)
def _field_names(cls: type) -> tuple[str, ...] | None:
    """The field names of a dataclass type (None for any other type), worked out once per type."""
    return tuple(f.name for f in dataclasses.fields(cls)) if dataclasses.is_dataclass(cls) else None


def _to_json(value: Any, samples: str = "list") -> Any:
    t = type(value)
    if t in _SCALAR_TYPES:
        return value
    names = _field_names(t)
    if names is not None:
        out = {}
        for name in names:
            v = getattr(value, name)
            if type(v) not in _SCALAR_TYPES:
                v = _to_json(v, samples)
                if v is _OMIT:
                    continue
            out[name] = v
        return out
    if t is Samples:
        return value.tolist() if samples == "list" else value.to_text() if samples == "text" else _OMIT
    if isinstance(value, (list, tuple)):
        if _SCALAR_TYPES.issuperset(map(type, value)):
            return list(value)
        return [_to_json(v, samples) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_json(v, samples) for k, v in value.items()}
    return value


# From JSON: one converter per type, built once from the type hints (a record's fields are checked
# without working out their types again for every record).

Converter = typing.Callable[[Any, str], Any]


def _type_name(value: Any) -> str:
    return type(value).__name__


def _to_float(value: Any, where: str) -> float:
    t = type(value)
    if t is float:
        return value
    if t is int:
        return float(value)
    if value is None:
        raise ContractError(f"{where}: must not be null")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ContractError(f"{where}: expected a number, got {_type_name(value)}")
    return float(value)


def _to_int(value: Any, where: str) -> int:
    if type(value) is int:
        return value
    if value is None:
        raise ContractError(f"{where}: must not be null")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ContractError(f"{where}: expected an integer, got {_type_name(value)}")
    return value


def _exact(tp: type) -> Converter:
    def convert(value: Any, where: str) -> Any:
        if isinstance(value, tp):
            return value
        if value is None:
            raise ContractError(f"{where}: must not be null")
        raise ContractError(f"{where}: expected {tp.__name__}, got {_type_name(value)}")

    return convert


def _to_samples(value: Any, where: str) -> Samples:
    try:  # a list of ints or the fbs1 text, checked with numpy as a whole
        return Samples.coerce(value)
    except SamplesError as exc:
        msg = str(exc)
        raise ContractError(f"{where}{msg}" if msg.startswith("[") else f"{where}: {msg}") from None


@functools.lru_cache(maxsize=None)
def _converter(tp: Any) -> Converter:
    """The function that checks and converts a JSON value to ``tp``, raising ContractError naming where."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"unsupported union type {tp}")  # a programming error, at import time
        nullable, item = type(None) in args, _converter(inner[0])

        def optional(value: Any, where: str) -> Any:
            if value is None:
                if nullable:
                    return None
                raise ContractError(f"{where}: must not be null")
            return item(value, where)

        return optional
    if origin is tuple:
        item = _converter(typing.get_args(tp)[0])

        def sequence(value: Any, where: str) -> tuple:
            if not isinstance(value, (list, tuple)):
                raise ContractError(f"{where}: expected a list, got {_type_name(value)}")
            return tuple(item(v, f"{where}[{i}]") for i, v in enumerate(value))

        return sequence
    if origin is dict:
        item = _converter(typing.get_args(tp)[1])

        def mapping(value: Any, where: str) -> dict:
            if not isinstance(value, dict):
                raise ContractError(f"{where}: expected an object, got {_type_name(value)}")
            return {str(k): item(v, f"{where}.{k}") for k, v in value.items()}

        return mapping
    if tp is Samples:
        return _to_samples
    if dataclasses.is_dataclass(tp):
        return _dataclass_converter(tp)
    if tp is Any:
        return lambda value, where: value
    if tp is float:
        return _to_float
    if tp is int:
        return _to_int
    if tp in (str, bool):
        return _exact(tp)
    raise TypeError(f"unsupported type {tp}")  # a programming error


def _dataclass_converter(cls: type) -> Converter:
    hints = _hints(cls)
    # (name, type, required); the type's converter is looked up at each call (cached), so that a
    # dataclass may refer to itself
    plan = [(f.name, hints[f.name], f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
            for f in dataclasses.fields(cls)]  # fmt: skip

    def convert(data: Any, where: str) -> Any:
        if not isinstance(data, dict):
            raise ContractError(f"{where}: expected an object, got {_type_name(data)}")
        kwargs = {}
        for name, tp, required in plan:
            if name in data:
                kwargs[name] = _converter(tp)(data[name], f"{where}.{name}")
            elif required:
                raise ContractError(f"{where}: missing field '{name}'")
        return cls(**kwargs)

    return convert


def warm(*classes: type) -> None:
    """Build the converters of these contract types and of every type inside them now: the agent's fork
    server does, so that no benchmark child spends milliseconds resolving type hints."""
    todo, seen = list(classes), set()
    while todo:
        tp = todo.pop()
        if tp in seen:
            continue
        seen.add(tp)
        _converter(tp)
        if dataclasses.is_dataclass(tp):
            _field_names(tp)
            todo.extend(_hints(tp).values())
        else:
            todo.extend(a for a in typing.get_args(tp) if a is not Ellipsis and a is not type(None))


def _from_dict(cls: type, data: Any, where: str) -> Any:
    return _converter(cls)(data, where)


class _Contract:
    """Mixin: ``to_dict``/``from_dict``/``to_json``/``from_json``."""

    def to_dict(self, samples: str = "list") -> dict[str, Any]:
        """The JSON-safe dict; ``samples`` says how raw samples are written (see SAMPLES_AS)."""
        if samples not in SAMPLES_AS:
            raise ValueError(f"samples must be one of {', '.join(SAMPLES_AS)}, not {samples!r}")
        return _to_json(self, samples)

    def to_json(self, samples: str = "list") -> str:
        return json.dumps(self.to_dict(samples), separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_dict(cls, data: Any):
        if isinstance(data, dict) and "schema_version" in data:
            check_version(data["schema_version"], cls.__name__)
        return _from_dict(cls, data, cls.__name__)

    @classmethod
    def from_json(cls, text: str | bytes):
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ContractError(f"{cls.__name__}: not valid JSON ({exc})") from None
        return cls.from_dict(data)


def check_version(version: Any, what: str) -> None:
    if version != SCHEMA_VERSION:
        raise ContractError(
            f"{what} has schema_version {version!r}, this fleetbench speaks {SCHEMA_VERSION}: "
            "upgrade the controller and agents to the same fleetbench release"
        )


# --------------------------------------------------------------------------
# The messages.


@dataclass(frozen=True)
class ArtifactRef(_Contract):
    """A file the agent fetches and verifies by sha256 before use."""

    sha256: str
    uri: str
    size_bytes: int
    filename: str = ""


LOADGEN_SCENARIOS = ("", "SingleStream", "Offline", "Server")
MAX_PROFILE_RUNS = 100_000
#: Sustained mode's longest run (a day) and most windows.
MAX_SUSTAINED_S = 86_400.0
MAX_WINDOWS = 1000


@dataclass(frozen=True)
class BenchmarkSettings(_Contract):
    """How a variant is measured. Stored verbatim on every record."""

    #: Inference threads; 0 lets the runtime choose.
    threads: int = 1
    warmup_iterations: int = 10
    #: Steady-state sampling stops only when BOTH minimums are met...
    min_iterations: int = 1000
    min_duration_s: float = 1.0
    #: ...or when either safety cap is hit (then the record says so).
    max_iterations: int = 200_000
    max_duration_s: float = 300.0
    #: Wall-clock limit for the whole benchmark child process.
    timeout_s: float = 900.0
    #: Throughput phase: N requests in flight (OpenVINO AsyncInferQueue with the
    #: throughput hint; LiteRT: N interpreters on N threads); 0 skips it.
    throughput_requests: int = 0
    throughput_duration_s: float = 2.0
    #: Optional MLPerf LoadGen run after the single-stream measurement:
    #: "" (none), "SingleStream", "Offline" or "Server" (Poisson arrivals).
    loadgen_scenario: str = ""
    #: Server: the Poisson arrival rate (queries/s); Offline: the expected rate.
    loadgen_target_qps: float = 0.0
    #: Server: the p99 latency bound LoadGen judges the run against.
    loadgen_target_latency_ms: float = 100.0
    loadgen_min_duration_s: float = 5.0
    loadgen_min_queries: int = 256
    #: A profile phase after every other phase (so it perturbs none of their numbers): per-op times,
    #: placement and the precision each node really ran in, read from the runtime (see ``Profile``).
    profile: bool = False
    #: Inferences the profile phase averages over (fewer when they would take more than a minute).
    profile_runs: int = 100
    #: Cores the benchmark process is pinned to ("0", "0-3", "0,2"; "" for no pinning), as vendor tools advise.
    cpu_affinity: str = ""
    #: Other processes' CPU time during the job, in cores, above which the record is marked ``disturbed``.
    disturbance_max_cores: float = 0.25
    #: Sustained mode: the latency loop runs this many seconds (0: off), and the record keeps latency in windows
    #: of ``sustained_window_s`` (0: a tenth of the run) with the drift of the last window's p50 from the first's.
    sustained_s: float = 0.0
    sustained_window_s: float = 0.0

    def problems(self) -> list[str]:
        out = []
        if self.threads < 0:
            out.append("threads must be >= 0")
        if self.warmup_iterations < 0:
            out.append("warmup_iterations must be >= 0")
        if self.min_iterations < 1:
            out.append("min_iterations must be >= 1")
        if self.min_duration_s < 0:
            out.append("min_duration_s must be >= 0")
        if self.max_iterations < self.min_iterations:
            out.append("max_iterations must be >= min_iterations")
        if self.max_iterations > MAX_SAMPLES:
            out.append(f"max_iterations must be at most {MAX_SAMPLES:,} (the most samples a record holds)")
        if self.max_duration_s < self.min_duration_s:
            out.append("max_duration_s must be >= min_duration_s")
        if self.timeout_s <= 0:
            out.append("timeout_s must be > 0")
        if self.throughput_requests < 0:
            out.append("throughput_requests must be >= 0")
        if self.throughput_requests and self.throughput_duration_s <= 0:
            out.append("throughput_duration_s must be > 0")
        if self.loadgen_scenario not in LOADGEN_SCENARIOS:
            out.append(f"loadgen_scenario must be one of {', '.join(repr(s) for s in LOADGEN_SCENARIOS)}")
        if self.loadgen_scenario == "Server" and self.loadgen_target_qps <= 0:
            out.append("loadgen_target_qps must be > 0 for the Server scenario (the Poisson arrival rate)")
        if self.loadgen_target_qps < 0 or self.loadgen_target_latency_ms <= 0:
            out.append("loadgen_target_qps must be >= 0 and loadgen_target_latency_ms > 0")
        if self.loadgen_min_duration_s < 0 or self.loadgen_min_queries < 1:
            out.append("loadgen_min_duration_s must be >= 0 and loadgen_min_queries >= 1")
        if not 1 <= self.profile_runs <= MAX_PROFILE_RUNS:
            out.append(f"profile_runs must be between 1 and {MAX_PROFILE_RUNS:,}")
        try:
            parse_cpus(self.cpu_affinity)
        except ValueError as exc:
            out.append(str(exc))
        if not 0 <= self.disturbance_max_cores <= 1024:
            out.append("disturbance_max_cores must be between 0 and 1024 (cores of other processes' CPU time)")
        out += self._sustained_problems()
        return out

    def _sustained_problems(self) -> list[str]:
        if not self.sustained_s and not self.sustained_window_s:
            return []
        if not 0 < self.sustained_s <= MAX_SUSTAINED_S or self.sustained_window_s < 0:
            return [f"sustained_s must be between 0 and {MAX_SUSTAINED_S:g} s (and sustained_window_s >= 0)"]
        if self.windows() > MAX_WINDOWS:
            return [f"sustained_window_s={self.sustained_window_s:g} makes more than {MAX_WINDOWS} windows; raise it"]
        if self.timeout_s <= self.sustained_s:
            return [f"timeout_s={self.timeout_s:g} must be above sustained_s={self.sustained_s:g}: raise timeout_s "
                    "(it also covers loading and the other phases)"]  # fmt: skip
        return []

    def window_s(self) -> float:
        """The sustained mode's window: ``sustained_window_s``, or a tenth of ``sustained_s``."""
        return self.sustained_window_s or self.sustained_s / 10

    def windows(self) -> int:
        """How many windows a sustained run has: those that fit in ``sustained_s`` (a last, shorter one counts)."""
        return max(1, math.ceil(self.sustained_s / self.window_s() - 1e-9)) if self.sustained_s else 0


@dataclass(frozen=True)
class JobSpec(_Contract):
    """One benchmark of one variant on one capability."""

    job_id: str
    model_id: str
    model_name: str
    variant: str
    capability: str
    artifact: ArtifactRef
    settings: BenchmarkSettings = field(default_factory=BenchmarkSettings)
    #: Labelled validation set (``.npz`` with ``x`` and ``y``), already
    #: preprocessed to the model's input layout; optional.
    dataset: Optional[ArtifactRef] = None
    #: fp32 outputs of the source model on ``dataset``'s inputs (``.npz`` with
    #: ``outputs``), computed by the controller at conversion time; optional.
    reference: Optional[ArtifactRef] = None
    attempt: int = 1
    created_at: str = field(default_factory=utc_now)
    schema_version: int = SCHEMA_VERSION


@dataclass(frozen=True)
class HostFacts(_Contract):
    hostname: str
    cpu_model: str
    cpu_cores: int
    ram_bytes: int
    os: str
    python: str
    #: The machine architecture as ``uname -m`` names it (x86_64, aarch64); "" from agents before it was sent.
    machine: str = ""
    #: How this agent's CPU is emulated (e.g. "qemu-user: aarch64 on an x86_64 kernel"); "" when native.
    #: Timings under emulation are not the device's: records carry it, and views leave them out by default.
    emulated_by: str = ""


@dataclass(frozen=True)
class LatencyStats(_Contract):
    """Everything derived from ``samples_ns``, plus load and first inference."""

    load_ms: float
    first_inference_ms: float
    count: int
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float

    @classmethod
    def from_summary(cls, s: Summary, *, load_ms: float, first_inference_ms: float) -> "LatencyStats":
        """The statistics of ``s`` (every field the two share, by name), plus load and first inference."""
        shared = {f.name: getattr(s, f.name) for f in dataclasses.fields(cls) if f.name not in _LOAD_FIELDS}
        return cls(load_ms=load_ms, first_inference_ms=first_inference_ms, **shared)


#: LatencyStats' fields that do not come from the samples' Summary
_LOAD_FIELDS = ("load_ms", "first_inference_ms")


@dataclass(frozen=True)
class Validity(_Contract):
    valid: bool
    #: Every reason the record's statistics are not fully trustworthy.
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class OutputFidelity(_Contract):
    """One output tensor against its fp32 reference (see :mod:`protocol.fidelity`)."""

    name: str
    #: Mean over samples of the cosine similarity of output and reference.
    cosine: float
    #: Signal-to-noise ratio over all samples, in dB (300 = identical).
    snr_db: float
    max_abs_error: float
    mean_abs_error: float
    #: ||out - ref|| / ||ref|| over all samples; None where the reference is all zeros.
    rel_l2: Optional[float]
    #: Share of samples whose arg-max matches the reference's; only for class-score outputs.
    top1_agreement: Optional[float] = None
    #: The reference is (near-)constant across samples: nothing to compare.
    constant_reference: bool = False


@dataclass(frozen=True)
class Fidelity(_Contract):
    """How closely the variant's outputs follow the fp32 source model's, on the device.

    The top-level figures are the worst output's; ``outputs`` holds every output.
    Records written before every output was compared carry only the first four fields.
    """

    samples: int
    #: Share of samples whose arg-max matches the reference's (the worst class-score output);
    #: None when no output holds class scores.
    top1_agreement: Optional[float]
    max_abs_error: float
    #: The lowest mean cosine similarity of any output.
    mean_cosine: float
    snr_db: Optional[float] = None
    mean_abs_error: Optional[float] = None
    rel_l2: Optional[float] = None
    #: The output with the lowest SNR.
    worst_output: str = ""
    outputs: tuple[OutputFidelity, ...] = ()
    #: Why these figures may mean nothing (a constant reference).
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class TaskAccuracy(_Contract):
    """Accuracy against the data set's labels, by task (see :mod:`protocol.accuracy`)."""

    task: str  # "classification", "segmentation" or "regression"
    samples: int
    #: The output the labels were compared with.
    output: str = ""
    top1: Optional[float] = None
    #: Only with more than five classes.
    top5: Optional[float] = None
    mean_iou: Optional[float] = None
    mae: Optional[float] = None
    rmse: Optional[float] = None

    def headline(self) -> str:
        """The task's main figure, for tables: top-1, mIoU or MAE."""
        if self.task == "classification" and self.top1 is not None:
            return f"{self.top1:.4f}"
        if self.task == "segmentation" and self.mean_iou is not None:
            return f"mIoU {self.mean_iou:.3f}"
        if self.mae is not None:
            return f"MAE {self.mae:.4g}"
        return "-"


@dataclass(frozen=True)
class Throughput(_Contract):
    """The throughput phase: as many inferences as N requests in flight complete."""

    mode: str  # e.g. "openvino-async-queue", "litert-interpreters"
    requests: int
    completed: int
    elapsed_s: float
    ips: float
    #: Energy over this phase, as ``ResultRecord.energy`` is over the latency phase; None from agents before it.
    energy: Optional[EnergyRecord] = None


@dataclass(frozen=True)
class LoadGenResult(_Contract):
    """An MLPerf LoadGen run (``mlcommons-loadgen``): its own verdict and estimates, as it logged them."""

    scenario: str  # "SingleStream", "Offline" or "Server"
    #: LoadGen's verdict: "VALID" or "INVALID".
    verdict: str
    #: Why LoadGen said INVALID (its "... satisfied: NO" lines); empty when VALID.
    reasons: tuple[str, ...]
    #: LoadGen's latency percentile estimates, e.g. {"50.00": 1.2, "90.00": 1.4, "99.00": 2.0}, in ms.
    percentiles_ms: dict[str, float]
    mean_ms: float
    queries: int
    duration_s: float
    #: LoadGen's result: samples/s (SingleStream, Offline) or completed samples/s (Server).
    samples_per_s: float
    target_qps: float = 0.0
    #: The loadgen version that made it.
    version: str = ""


#: Where a node ran, beside a delegate's or a device's own name (see ``ProfileNode.place``).
PLACE_XNNPACK = "xnnpack"
PLACE_BUILTIN = "builtin"
#: A node's status in a profile.
NODE_STATUSES = ("executed", "not-run", "optimized-out")
#: A profile keeps this many nodes, the slowest (or the first, where the runtime gives no per-op time).
PROFILE_TOP_NODES = 20
#: More op types than this in one profile is not a real model's: the record is refused.
PROFILE_MAX_OP_TYPES = 1000
#: Nor more notes, or a longer name, kernel or note, than these.
PROFILE_MAX_NOTES, PROFILE_MAX_TEXT = 20, 1000


@dataclass(frozen=True)
class ProfileNode(_Contract):
    """One node of a profiled model, as its runtime reported it."""

    name: str
    #: The runtime's name for the op: ``Convolution`` (OpenVINO, XNNPACK), ``CONV_2D`` (TFLite's own kernels).
    op_type: str
    #: Where it ran: ``xnnpack``, ``builtin`` (TFLite's own CPU kernels, not XNNPACK), a delegate's name,
    #: ``gpu`` (LiteRT's GPU accelerator), or an OpenVINO device (``CPU``, ``GPU``).
    place: str
    #: The precision its kernel computed in, read from the runtime: i8, u8, f16, f32, bf16; "" unknown.
    precision: str = ""
    #: The kernel that ran: OpenVINO's exec_type (``jit_avx512_I8``), XNNPACK's operator
    #: (``Convolution (NHWC, QS8) IGEMM``); "" where the runtime does not say.
    exec_type: str = ""
    #: Mean time per inference in ms; None where the runtime gives no per-op time.
    time_ms: Optional[float] = None
    #: ``executed``; ``not-run`` or ``optimized-out`` for a node fused into another.
    status: str = "executed"


@dataclass(frozen=True)
class OpTypeProfile(_Contract):
    """The executed nodes of one op type."""

    op_type: str
    count: int
    time_ms: Optional[float] = None
    #: Share of the summed node time (0-1).
    share: Optional[float] = None


@dataclass(frozen=True)
class PrecisionShare(_Contract):
    """How much of a profile ran in one precision: share of the nodes, and of the node time."""

    precision: str
    ops: int
    op_share: float
    time_ms: Optional[float] = None
    time_share: Optional[float] = None


@dataclass(frozen=True)
class Placement(_Contract):
    """Which ops ran where the capability asked (the target) and which fell back.

    Counted over the model's ops as the runtime placed them (TFLite: the graph's nodes, each claimed by a
    delegate or left on TFLite's own kernels; OpenVINO: the executed nodes of the compiled graph)."""

    #: What the capability runs on: ``xnnpack`` (litert:cpu), a delegate's name, ``gpu``, an OpenVINO device.
    target: str
    ops_on_target: int
    fallback_ops: int
    #: The target's partitions (delegate kernels, HETERO subgraphs): each boundary is a copy.
    partitions: int
    time_on_target_ms: Optional[float] = None
    fallback_time_ms: Optional[float] = None
    #: Op count per place, e.g. {"xnnpack": 12, "builtin": 1}.
    places: dict[str, int] = field(default_factory=dict)
    #: The op types left off the target, the most frequent first.
    fallback_op_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class Profile(_Contract):
    """Where the time goes inside the model, from the runtime's own per-node counters, after every other
    phase of the job (see :mod:`protocol.profiling`)."""

    #: What produced it, e.g. ``openvino PERF_COUNT``, ``litert profiler (CompiledModel, CPU)``.
    source: str
    #: Inferences it averages over (0: the runtime was not run for it, as for an op list without times).
    runs: int
    #: Executed nodes, and nodes fused into others (not run, optimized out).
    nodes: int
    not_executed: int
    #: Summed mean node time per inference (ms); None without per-op time.
    node_time_ms: Optional[float]
    #: The runtime's own mean whole-inference time while profiling (ms); profiling adds overhead.
    latency_ms: Optional[float]
    #: "" when every node has a time; otherwise why none has (``per-op time not available from this runtime: ...``).
    op_time: str
    op_types: tuple[OpTypeProfile, ...]
    #: The slowest nodes (or the first, in execution order, without per-op time).
    top_nodes: tuple[ProfileNode, ...]
    placement: Placement
    #: Precision coverage: share of the executed nodes, and of the node time, per precision ("unknown" where the
    #: kernel names none).
    precisions: tuple[PrecisionShare, ...]
    notes: tuple[str, ...] = ()
    #: Why the profile phase could not run (the job's other numbers stand); every other field is then empty.
    error: str = ""

    def problems(self) -> list[str]:
        """What makes this profile impossible: counts that do not add up, shares outside 0-1 or summing past 1,
        times that are negative or not finite, or sizes no real profile has."""
        out = []
        pl = self.placement
        counts = [self.runs, self.nodes, self.not_executed, pl.ops_on_target, pl.fallback_ops, pl.partitions,
                  *pl.places.values(), *(t.count for t in self.op_types), *(p.ops for p in self.precisions)]  # fmt: skip
        if any(c < 0 for c in counts):
            out.append("runs and counts must be >= 0")
        if len(self.top_nodes) > PROFILE_TOP_NODES:
            out.append(f"{len(self.top_nodes)} top nodes, more than {PROFILE_TOP_NODES}")
        if max(len(self.op_types), len(self.precisions), len(pl.places), len(pl.fallback_op_types)) > PROFILE_MAX_OP_TYPES:
            out.append(f"more than {PROFILE_MAX_OP_TYPES} op types, precisions or places")
        if sum(t.count for t in self.op_types) != self.nodes:
            out.append(f"op type counts add up to {sum(t.count for t in self.op_types)}, not nodes={self.nodes}")
        shares = [t.share for t in self.op_types] + [p.op_share for p in self.precisions] + [p.time_share for p in self.precisions]
        if any(v is not None and not 0 <= v <= 1 for v in shares):
            out.append("a share is outside 0-1")
        for what in ("op_share", "time_share"):
            total = sum(getattr(p, what) or 0.0 for p in self.precisions)
            if total > 1 + 1e-3:
                out.append(f"the precisions' {what}s add up to {total:.3f}, past 1")
        times = ([t.time_ms for t in self.op_types] + [n.time_ms for n in self.top_nodes] + [p.time_ms for p in self.precisions]
                 + [self.node_time_ms, self.latency_ms, pl.time_on_target_ms, pl.fallback_time_ms])  # fmt: skip
        if any(v is not None and not (math.isfinite(v) and v >= 0) for v in times):
            out.append("a time is negative or not a finite number")
        if any(n.status not in NODE_STATUSES for n in self.top_nodes):
            out.append(f"a node status is not one of {', '.join(NODE_STATUSES)}")
        texts = ([self.source, self.op_time, self.error, pl.target, *pl.places, *pl.fallback_op_types, *self.notes]
                 + [t.op_type for t in self.op_types] + [p.precision for p in self.precisions]
                 + [v for n in self.top_nodes for v in (n.name, n.op_type, n.place, n.precision, n.exec_type)])  # fmt: skip
        if len(self.notes) > PROFILE_MAX_NOTES or any(len(t) > PROFILE_MAX_TEXT for t in texts):
            out.append(f"more than {PROFILE_MAX_NOTES} notes, or a text longer than {PROFILE_MAX_TEXT} characters")
        return out


def parse_cpus(text: str) -> tuple[int, ...]:
    """``"0-3,6"`` -> (0, 1, 2, 3, 6); "" -> (); raises ValueError saying what is wrong."""
    cpus: set[int] = set()
    for part in (p.strip() for p in text.split(",") if p.strip()):
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise ValueError(f"cpu_affinity: '{part}' is not a core number or a range like 0-3")
        if int(hi or lo) < int(lo):
            raise ValueError(f"cpu_affinity: the range '{part}' runs backwards")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return tuple(sorted(cpus))


@dataclass(frozen=True)
class ThermalState(_Contract):
    """Temperatures (°C, by thermal zone) and CPU clocks (MHz, by core) at one moment, with the governor."""

    temps_c: dict[str, float] = field(default_factory=dict)
    cpu_mhz: dict[str, float] = field(default_factory=dict)
    governor: str = ""
    #: GPU clocks (MHz, the SM clock by GPU, from NVML); GPU temperatures are in ``temps_c``.
    gpu_mhz: dict[str, float] = field(default_factory=dict)
    #: The platform's throttle event counters (Intel ``thermal_throttle/*_throttle_count`` by core and package).
    throttle_counts: dict[str, int] = field(default_factory=dict)
    #: Throttling the platform says is active now (NVML's clock event reasons, by GPU).
    throttle_flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeviceConditions(_Contract):
    """The device around a job (issue 19): thermal state before and after, throttling, other processes' CPU
    time during it, and the cores the benchmark ran on."""

    before: ThermalState
    after: ThermalState
    throttled: bool
    throttle_why: str
    #: Other processes' CPU time during the job over its wall time, in cores.
    other_cpu_cores: float
    disturbed: bool
    disturbance_max_cores: float
    seconds: float
    affinity: tuple[int, ...] = ()
    #: What the agent waited for before the job (its cooldown and quiet-device settings), in that order.
    waits: tuple[Wait, ...] = ()

    def problems(self) -> list[str]:
        """What no real device reports: figures that are not finite or are negative, or more zones and cores
        than any device has."""
        values = [self.other_cpu_cores, self.disturbance_max_cores, self.seconds,
                  *(v for st in (self.before, self.after) for v in (*st.temps_c.values(), *st.cpu_mhz.values(), *st.gpu_mhz.values()))]  # fmt: skip
        if any(not math.isfinite(v) for v in values) or min(self.other_cpu_cores, self.seconds, self.disturbance_max_cores) < 0:
            return ["conditions figures must be finite (and cores and seconds >= 0)"]
        sizes = [len(st.temps_c) + len(st.cpu_mhz) + len(st.gpu_mhz) + len(st.throttle_counts) + len(st.throttle_flags)
                 for st in (self.before, self.after)] + [len(self.affinity)]  # fmt: skip
        if max(sizes) > 4096 or len(self.throttle_why) > 2000 or len(self.before.governor + self.after.governor) > 2000:
            return ["more than 4096 zones, cores or affinity entries, or an overlong text"]
        if len(self.waits) > 2 or any(not math.isfinite(w.seconds) or w.seconds < 0 or len(w.why) > 2000 for w in self.waits):
            return ["at most two waits, each of finite seconds >= 0 with a short reason"]
        return []


@dataclass(frozen=True)
class Wait(_Contract):
    """One wait before a job: ``cooldown`` (for the temperature to fall near the idle baseline) or ``quiet`` (for
    other processes to stop using the CPU). ``done`` is False when the agent stopped waiting at its limit."""

    kind: str
    seconds: float
    done: bool
    why: str


@dataclass(frozen=True)
class SustainedWindow(_Contract):
    """One window of a sustained run: its samples' count and percentiles, and the device at its end."""

    start_s: float
    count: int
    p50_ms: float
    p99_ms: float
    #: The hottest thermal zone and the mean CPU clock when the window closed (None where there is no sensor).
    hottest_c: Optional[float] = None
    cpu_mhz: Optional[float] = None


@dataclass(frozen=True)
class Sustained(_Contract):
    """Sustained mode (``settings.sustained_s``): latency over time, in consecutive windows of the samples."""

    seconds: float
    window_s: float
    windows: tuple[SustainedWindow, ...]
    #: The last window's p50 over the first's (1.2: 20 % slower by the end); None with fewer than two windows.
    drift_ratio: Optional[float]

    @staticmethod
    def drift_of(windows) -> Optional[float]:
        """The last window's p50 over the first's; None with fewer than two windows (or a first p50 of 0)."""
        return windows[-1].p50_ms / windows[0].p50_ms if len(windows) > 1 and windows[0].p50_ms > 0 else None

    def problems(self, samples) -> list[str]:
        """Where the windows do not follow from ``samples`` (their counts and percentiles are derived from them)."""
        if len(self.windows) > MAX_WINDOWS:
            return [f"more than {MAX_WINDOWS} windows"]
        values = [self.seconds, self.window_s, *(v for w in self.windows for v in (w.start_s, w.hottest_c, w.cpu_mhz) if v is not None)]
        if any(not math.isfinite(v) for v in values) or min(self.seconds, self.window_s, *(w.start_s for w in self.windows)) < 0:
            return ["sustained figures must be finite (and seconds >= 0)"]
        if sum(w.count for w in self.windows) != len(samples) or any(w.count < 1 for w in self.windows):
            return ["window counts do not add up to the samples"]
        derived = window_percentiles(samples.array, [w.count for w in self.windows])
        for i, (w, (p50, p99)) in enumerate(zip(self.windows, derived)):
            if not (_close(p50, w.p50_ms) and _close(p99, w.p99_ms)):
                return [f"window {i + 1}'s percentiles do not match its samples"]
        expected = self.drift_of(self.windows)
        if (expected is None) != (self.drift_ratio is None) or (expected is not None and not _close(expected, self.drift_ratio)):
            return ["drift_ratio is not the last window's p50 over the first's"]
        return []


@dataclass(frozen=True)
class EnergyDomain(_Contract):
    """One sensor domain over the latency phase (RAPL package, a Jetson rail, a GPU)."""

    name: str
    #: Where it was read: ``rapl``, ``hwmon`` or ``nvml``.
    source: str
    joules: float
    avg_w: float
    peak_w: float


@dataclass(frozen=True)
class EnergyRecord(_Contract):
    """Energy over the latency phase (issue 19), measured by the device's own sensors, never estimated.

    ``valid`` is False with ``why`` when there is no sensor (``no energy sensor: <why>``) or the window held
    fewer than 10 sampling intervals. ``mj_per_inference`` is the first domain's joules over every inference
    the window ran (warm-up and the first inference included), in millijoules."""

    valid: bool
    why: str
    interval_s: float
    intervals: int
    seconds: float
    inferences: int
    mj_per_inference: Optional[float]
    domains: tuple[EnergyDomain, ...] = ()

    @property
    def measured(self) -> bool:
        """A valid figure from at least one domain (what tables, budgets and the store use)."""
        return self.valid and bool(self.domains) and self.mj_per_inference is not None

    def problems(self) -> list[str]:
        values = [self.interval_s, self.seconds, *(v for d in self.domains for v in (d.joules, d.avg_w, d.peak_w))]
        if self.mj_per_inference is not None:
            values.append(self.mj_per_inference)
        if any(not math.isfinite(v) or v < 0 for v in values) or self.intervals < 0 or self.inferences < 0:
            return ["energy figures must be finite and >= 0"]
        if len(self.domains) > 64 or len(self.why) > 2000:
            return ["more than 64 energy domains, or an overlong reason"]
        return []


@dataclass(frozen=True)
class ResultRecord(_Contract):
    """One measured benchmark. Statistics are always derived from ``samples_ns``."""

    job_id: str
    attempt: int
    model_id: str
    model_name: str
    artifact_sha256: str
    variant: str
    runtime: str
    runtime_version: str
    capability: str
    device: str
    device_name: str
    agent_id: str
    host: HostFacts
    settings: BenchmarkSettings
    #: Raw per-inference latencies, steady state only, integer nanoseconds (given as any sequence of ints).
    samples_ns: Samples
    stats: LatencyStats
    validity: Validity
    #: Inferences per second and how it was measured (``single-stream`` = 1/mean).
    throughput_ips: float
    throughput_mode: str
    #: Top-1 on the labelled set, or None without labels.
    accuracy_top1: Optional[float]
    accuracy_samples: int
    peak_rss_bytes: int
    model_size_bytes: int
    started_at: str
    finished_at: str
    fidelity: Optional[Fidelity] = None
    throughput: Optional[Throughput] = None
    loadgen: Optional[LoadGenResult] = None
    #: What produced ``samples_ns``: the agent's clock around the run call, or
    #: the runtime's own per-request figure (OpenVINO's request.latency).
    timer: str = "perf_counter_ns"
    #: The precision the runtime really computed in, read back from it (OpenVINO: the runtime
    #: model's layer precisions; LiteRT: the op result types), e.g. "f32", "bf16", "i8+f32";
    #: "" where the runtime does not say. Never inferred from the variant's name.
    precision: str = ""
    #: {precision: number of compute ops or layers} behind ``precision``.
    precision_ops: dict[str, int] = field(default_factory=dict)
    #: The artifact is the user's own file as given (no conversion): its sha256 is the model id.
    from_source: bool = False
    #: Accuracy by task (classification top-1/top-5, segmentation mIoU, regression MAE/RMSE); None without labels.
    #: ``accuracy_top1`` repeats a classification's top-1.
    accuracy: Optional[TaskAccuracy] = None
    #: The profile phase (``settings.profile``): per-op times, placement, precision per node; None when not asked.
    profile: Optional[Profile] = None
    #: Energy over the latency phase from the device's sensors, or why there is none; None from agents before it.
    energy: Optional[EnergyRecord] = None
    #: The device around the job: temperatures and clocks, throttling, disturbance, affinity.
    conditions: Optional[DeviceConditions] = None
    #: Sustained mode's windows and drift (``settings.sustained_s``); None when not asked.
    sustained: Optional[Sustained] = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if type(self.samples_ns) is not Samples:  # a tuple or list from a constructor; checked as a whole
            try:
                object.__setattr__(self, "samples_ns", Samples.coerce(self.samples_ns))
            except SamplesError as exc:
                raise ContractError(f"ResultRecord.samples_ns: {exc}") from None

    def check_consistent(self) -> None:
        """Raise ContractError if the stored statistics do not follow from the samples. A record is
        immutable, so a pass is remembered: ingestion checks once, however many layers ask."""
        if self.__dict__.get("_consistent"):
            return
        if len(self.samples_ns) != self.stats.count:
            raise ContractError(
                f"ResultRecord {self.job_id}: stats.count={self.stats.count} but {len(self.samples_ns)} samples"
            )
        s = summarize_ns(self.samples_ns.array)
        for f in dataclasses.fields(LatencyStats):  # every statistic the samples give (not load, not the count)
            name = f.name
            if name in _LOAD_FIELDS or name == "count":
                continue
            if not _close(getattr(s, name), getattr(self.stats, name)):
                raise ContractError(f"ResultRecord {self.job_id}: stats.{name} does not match its raw samples")
        if self.profile is not None and self.profile.problems():
            raise ContractError(f"ResultRecord {self.job_id}: profile: {'; '.join(self.profile.problems())}")
        if self.energy is not None and self.energy.problems():
            raise ContractError(f"ResultRecord {self.job_id}: energy: {'; '.join(self.energy.problems())}")
        if self.conditions is not None and self.conditions.problems():
            raise ContractError(f"ResultRecord {self.job_id}: conditions: {'; '.join(self.conditions.problems())}")
        if self.throughput is not None and self.throughput.energy is not None and self.throughput.energy.problems():
            raise ContractError(f"ResultRecord {self.job_id}: throughput energy: {'; '.join(self.throughput.energy.problems())}")
        if self.sustained is not None and self.sustained.problems(self.samples_ns):
            raise ContractError(f"ResultRecord {self.job_id}: sustained: {'; '.join(self.sustained.problems(self.samples_ns))}")
        object.__setattr__(self, "_consistent", True)


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


@dataclass(frozen=True)
class CapabilityInfo(_Contract):
    """One capability an agent offers, as its runtime reported it."""

    name: str  # "<runtime>:<device>", e.g. "litert:cpu", "openvino:MYRIAD"
    runtime: str
    runtime_version: str
    device: str
    device_name: str
    #: Precisions the device runs, as the runtime says (OpenVINO: OPTIMIZATION_CAPABILITIES, e.g. FP32, FP16, INT8).
    precisions: tuple[str, ...] = ()


@dataclass(frozen=True)
class AgentInventory(_Contract):
    """What an agent publishes at start-up and on every heartbeat."""

    agent_id: str
    host: HostFacts
    capabilities: tuple[CapabilityInfo, ...]
    started_at: str
    heartbeat_at: str
    schema_version: int = SCHEMA_VERSION


@dataclass(frozen=True)
class JobOutcome(_Contract):
    """What a benchmark task returns: a record, or an error that says what to do."""

    job_id: str
    attempt: int
    ok: bool
    record: Optional[ResultRecord] = None
    error: Optional[str] = None
    #: Machine-readable error kind, a :class:`protocol.errors.ErrorKind` value (bad-artifact, crashed, ...).
    #: A kind this release does not know (a newer agent's) is kept as it came, and is not retried.
    error_kind: Optional[str] = None
    agent_id: str = ""
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if isinstance(self.error_kind, str) and type(self.error_kind) is not str:
            object.__setattr__(self, "error_kind", str.__str__(self.error_kind))  # an ErrorKind travels as its value
