"""LiteRT (``ai_edge_litert``) backend.

- ``litert:cpu``: the interpreter with XNNPACK and a thread count.
- ``litert:<name>``: an external delegate given by path in the agent config
  (Edge TPU, a vendor NPU or FPGA delegate); see :mod:`agent.backends.delegates`.
- ``litert:gpu``: the CompiledModel API with the GPU accelerator only (no CPU
  fallback), offered only when the probe really compiles a bundled model fully
  on the GPU. On Linux the accelerator reaches the GPU through WebGPU/Vulkan,
  so the Vulkan loader (Debian: ``libvulkan1``) and a GPU driver with a Vulkan
  ICD must be installed. The probe runs in a child process with a time limit,
  so a crashing driver cannot take the agent down.
"""

# size: the interpreter and the CompiledModel (GPU) paths share probing, precision and error summaries

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import re
import sys
from pathlib import Path

import numpy as np

from agent.backends import (PROBE_MODEL, Capability, TensorSpec, Unavailable, delegates, dist_version, probe_in_child,
                            run_in_child)  # fmt: skip
from agent.errors import JobError
from agent.host import host_facts
from protocol import Profile, ProfileNode
from protocol.errors import ErrorKind
from protocol.profiling import NO_OP_TIME, GraphOp, canonical_precision, summarize, xnnpack_op
from protocol.records import PLACE_BUILTIN, PLACE_XNNPACK

GPU_PROBE_TIMEOUT_S = 90.0
#: Model precisions the interpreter's CPU kernels (XNNPACK and the reference ops) run.
CPU_PRECISIONS = ("FP16", "FP32", "INT8")


def _version() -> str:
    return dist_version("ai-edge-litert")


class Backend:
    runtime = "litert"
    #: the module with ``Interpreter`` and ``load_delegate``; tflite-runtime's backend swaps it
    interpreter_module = "ai_edge_litert.interpreter"
    install_hint = "install it with `pip install 'fleetbench[agent]'` or `pip install ai-edge-litert`"

    def __init__(self) -> None:
        self._interp = None
        self._inputs: list[dict] = []
        self._outputs: list[dict] = []
        self._session: CompiledModelSession | None = None
        self._device = "cpu"
        #: capability -> why it is not offered, filled by probe()
        self.unavailable: dict[str, str] = {}

    @property
    def version(self) -> str:
        return _version()

    def _api(self):
        """The interpreter module, or Unavailable with how to install it."""
        try:
            return importlib.import_module(self.interpreter_module)
        except ImportError as exc:
            raise Unavailable(f"{self.interpreter_module} is not importable ({exc}); {self.install_hint}") from None

    def probe(self) -> list[Capability]:
        self._api()
        cpu = Capability(f"{self.runtime}:cpu", self.runtime, self.version, "cpu", host_facts().cpu_model, CPU_PRECISIONS)
        return [cpu] + self._accelerator_caps() + self._delegate_caps()

    def _accelerator_caps(self) -> list[Capability]:
        ok, detail = probe_gpu()
        if ok:
            return [Capability("litert:gpu", self.runtime, _version(), "gpu", detail, ("FP16", "FP32"))]
        self.unavailable["litert:gpu"] = detail
        return []

    def _delegate_caps(self) -> list[Capability]:
        caps = []
        try:
            entries = delegates.configured(self.runtime)
        except JobError as exc:
            self.unavailable[f"{self.runtime}:<delegates>"] = exc.message
            return []
        for name in entries:
            ok, detail = delegates.probe(self.runtime, name)
            if ok:
                caps.append(Capability(f"{self.runtime}:{name}", self.runtime, self.version, name, detail))
            else:
                self.unavailable[f"{self.runtime}:{name}"] = detail
        return caps

    def device_name(self, device: str) -> str:
        if device == "cpu":
            return host_facts().cpu_model
        if device == "gpu" and self.runtime == "litert":
            return gpu_name()
        entry = delegates.configured(self.runtime).get(device)
        return entry["device_name"] if entry else device

    def load(self, artifact_path: str, device: str, settings, *, f32: bool = False) -> None:
        """``f32`` changes nothing here: the interpreter computes float models in f32 on the CPU
        (fp16 weights are dequantized first)."""
        threads = getattr(settings, "threads", 1)
        if device == "gpu" and self.runtime == "litert":
            self._session = CompiledModelSession(artifact_path, "gpu", threads)
            self._path, self._device = str(artifact_path), device
            return
        api = self._api()
        extra = {}
        if device != "cpu":
            entry = delegates.configured(self.runtime).get(device)
            if entry is None:
                offered = ", ".join(f"{self.runtime}:{d}" for d in ["cpu", *delegates.configured(self.runtime)])
                raise JobError(
                    ErrorKind.UNSUPPORTED_DEVICE,
                    f"{self.runtime} has no device '{device}' on this agent; it offers {offered}. "
                    "Add external delegates under \"delegates\" in the agent config",
                )
            extra["experimental_delegates"] = [delegates.load(api.load_delegate, device, entry)]
        try:
            interp = api.Interpreter(model_path=str(artifact_path), num_threads=threads if threads > 0 else None, **extra)
            # external delegates were applied just now; XNNPACK (the default delegate) is applied at allocation:
            # nodes added after this count are XNNPACK's (see graph_placement)
            self._nodes_at_init = interp._interpreter.NumNodes()
            interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            if extra:
                why = delegates.one_line(exc)
                if why == type(exc).__name__:
                    why = (f"the runtime gave no reason ({why}); delegates that need static shapes refuse graphs "
                           "with dynamic-sized tensors")  # fmt: skip
                raise JobError(
                    ErrorKind.LOAD_FAILED,
                    f"the '{device}' delegate could not run {Path(artifact_path).name}: {why}. "
                    "The delegate rejected the model (unsupported ops or a delegate error); "
                    f"benchmark it on {self.runtime}:cpu, or compile it for that device first",
                ) from None
            raise JobError(
                ErrorKind.LOAD_FAILED,
                f"{self.runtime} could not load {artifact_path}: {exc}. "
                "The file is not a valid TFLite model, or uses ops this runtime build lacks; "
                "re-convert it with `fleetbench convert`",
            ) from None
        self._interp = interp
        self._device = device
        self._threads = threads
        self._path = str(artifact_path)
        self._inputs = interp.get_input_details()
        self._outputs = interp.get_output_details()

    def input_specs(self) -> list[TensorSpec]:
        if self._session is not None:
            return self._session.input_specs()
        return [
            TensorSpec(d["name"], tuple(int(v) for v in d["shape"]), np.dtype(d["dtype"]).name)
            for d in self._inputs
        ]

    def prepare(self, inputs: list[np.ndarray]) -> None:
        if self._session is not None:
            return self._session.prepare(inputs)
        if len(inputs) != len(self._inputs):
            raise JobError(ErrorKind.BAD_DATASET, f"model has {len(self._inputs)} inputs, got {len(inputs)}")
        for detail, array in zip(self._inputs, inputs):
            array = quantize(array, detail)
            self._interp.set_tensor(detail["index"], np.ascontiguousarray(array.reshape(detail["shape"])))

    def run(self) -> None:
        if self._session is not None:
            self._session.run()
        else:
            self._interp.invoke()

    def throughput_pool(self, n: int, inputs: list[np.ndarray]):
        if self._session is not None or self._device != "cpu":
            raise JobError(ErrorKind.UNSUPPORTED_DEVICE, f"the throughput phase runs on {self.runtime}:cpu only for now")
        pool = InterpreterPool(self._api().Interpreter, self._path, n, inputs)
        pool.mode = f"{self.runtime}-interpreters"
        return pool

    def outputs(self) -> list[np.ndarray]:
        if self._session is not None:
            return self._session.outputs()
        return [dequantize(self._interp.get_tensor(d["index"]), d) for d in self._outputs]

    def precision(self) -> tuple[str, dict[str, int]]:
        """What the model computes in, from its tensor types (see :func:`tensor_precision`)."""
        if self._session is not None:
            return "", {}  # the CompiledModel API does not list ops; the record says unknown
        return tensor_precision(self._interp)

    def output_names(self) -> list[str]:
        if self._session is not None:
            return list(self._session.out_names)
        return [d["name"] for d in self._outputs]

    def profile(self, runs: int, timeout_s: float) -> Profile:
        """Where each of the model's ops ran (XNNPACK, TFLite's own kernels, a delegate, the GPU), the partitions,
        and, on litert:cpu, each op's time from LiteRT's own profiler (:mod:`agent.backends.litert_profiler`)."""
        if self._session is not None:  # load() refused anything the GPU did not take whole
            ops, tensors = _op_list(self._api().Interpreter(model_path=self._path))
            nodes = [_node(op, tensors, "gpu") for op in ops]
            return summarize(nodes, source="litert CompiledModel (GPU accelerator): op list", runs=0, target="gpu",
                             partitions=1 if nodes else 0, op_time=f"{NO_OP_TIME}: fleetbench reads no per-op time "
                             "on LiteRT's GPU accelerator; the placement is the accelerator's own check that the "
                             "model compiled fully on the GPU", notes=(GPU_PLACEMENT_NOTE,))  # fmt: skip
        ops, tensors = _op_list(self._interp)
        target = PLACE_XNNPACK if self._device == "cpu" else self._device
        places, partitions = graph_placement(ops, self._nodes_at_init, self._device)
        originals = [op for op in ops if op["op_name"] != "DELEGATE"]
        nodes = [_node(op, tensors, places[op["index"]]) for op in originals]
        graph = [GraphOp(n.op_type, n.place) for n in nodes]
        found, why = None, self._no_op_time()
        if not why:
            order = [d["name"] for d in self._inputs]
            arrays = [self._interp.get_tensor(d["index"]) for d in self._inputs]
            shapes = {d["name"]: [int(v) for v in d["shape"]] for d in self._inputs + self._outputs}
            found, why = run_profiler(self._path, arrays, order, shapes, runs, self._threads, timeout_s)
        if found is None:
            return summarize(nodes, source=f"{self.runtime} interpreter: op list", runs=0, target=target,
                             partitions=partitions.get(target, 0), op_time=f"{NO_OP_TIME}: {why}")  # fmt: skip
        by_index = {op["index"]: op for op in originals}
        timed, nested = [], 0
        for row in found["ops"]:
            if row["kind"] == "delegate":
                op_type, precision = xnnpack_op(row["tag"])
                name = f"xnnpack partition {row['partition']} op {row['index']}" if row["index"] >= 0 else \
                    f"xnnpack partition {row['partition']}"  # fmt: skip
                timed.append(ProfileNode(name=name, op_type=op_type, place=PLACE_XNNPACK, precision=precision,
                                         exec_type=row["tag"], time_ms=row["mean_us"] / 1000))  # fmt: skip
            elif row["subgraph"] == 0 and row["index"] in by_index:
                base = _node(by_index[row["index"]], tensors, PLACE_BUILTIN)
                timed.append(dataclasses.replace(base, time_ms=row["mean_us"] / 1000))
            else:  # an op of a control-flow body: its time is inside its WHILE/IF node's
                nested += 1
        notes = CPU_PROFILE_NOTES + _disagreements(places, timed, nested)
        invoke = found.get("invoke_us")
        return summarize(timed, source="litert profiler (CompiledModel API, CPU)", runs=runs, target=target,
                         partitions=partitions.get(target, 0), graph=graph,
                         latency_ms=invoke / 1000 if invoke is not None else None, notes=notes)  # fmt: skip

    def _no_op_time(self) -> str:
        """Why this backend reads no per-op time for this job ("" when it does)."""
        if self._device != "cpu":
            return (f"LiteRT's profiler runs on its own CPU path; the '{self._device}' delegate's ops are "
                    "placed, not timed")  # fmt: skip
        from agent.backends import litert_profiler

        return litert_profiler.available(self.version)


class InterpreterPool:
    """Interpreter throughput: N interpreters, one thread each (invoke releases the GIL)."""

    mode = "litert-interpreters"

    def __init__(self, interpreter_class, path: str, n: int, inputs: list[np.ndarray]):
        self.interpreters = []
        for _ in range(n):
            interp = interpreter_class(model_path=path, num_threads=1)
            interp.allocate_tensors()
            for detail, array in zip(interp.get_input_details(), inputs):
                interp.set_tensor(detail["index"], np.ascontiguousarray(quantize(array, detail).reshape(detail["shape"])))
            self.interpreters.append(interp)

    def run(self, stop) -> int:
        import threading

        counts = [0] * len(self.interpreters)

        def work(i: int, interp) -> None:
            while not stop():
                interp.invoke()
                counts[i] += 1

        threads = [threading.Thread(target=work, args=(i, it)) for i, it in enumerate(self.interpreters)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sum(counts)


class CompiledModelSession:
    """A model compiled with LiteRT's CompiledModel API for one accelerator.

    Input and output TensorBuffers are created once; ``prepare`` writes the
    inputs, ``run`` is one ``run_by_index`` on the same buffers, as LiteRT's
    own benchmark tool does.
    """

    def __init__(self, path: str | Path | bytes, accelerator: str, threads: int = 1):
        from ai_edge_litert.compiled_model import CompiledModel
        from ai_edge_litert.hardware_accelerator import HardwareAccelerator
        from ai_edge_litert.options import CpuOptions, Options

        accel = {"gpu": HardwareAccelerator.GPU, "cpu": HardwareAccelerator.CPU}[accelerator]
        options = Options(hardware_accelerators=accel, cpu_options=CpuOptions(num_threads=max(threads, 1)))
        name = "the model" if isinstance(path, bytes) else Path(path).name
        try:
            if isinstance(path, bytes):
                self.model = CompiledModel.from_buffer(path, options=options)
            else:
                self.model = CompiledModel.from_file(str(path), options=options)
        except RuntimeError as exc:
            raise JobError(
                ErrorKind.LOAD_FAILED if accelerator == "cpu" else ErrorKind.UNSUPPORTED_DEVICE,
                f"LiteRT could not compile {name} for the {accelerator.upper()}: {summarize_litert_error(str(exc))}",
            ) from None
        if accelerator != "cpu" and not self.model.is_fully_accelerated():
            raise JobError(
                ErrorKind.UNSUPPORTED_DEVICE,
                f"{name} is not fully accelerated on the {accelerator.upper()}: some ops would fall back to the CPU, "
                "so its numbers would not be GPU numbers. Benchmark it on litert:cpu or simplify the model",
            )
        signatures = self.model.get_signature_list()
        self.key = next(iter(signatures))
        self.index = self.model.get_signature_index(self.key)
        ins = self.model.get_input_tensor_details(self.key)
        outs = self.model.get_output_tensor_details(self.key)
        self.in_details = [ins[n] for n in signatures[self.key]["inputs"]]
        self.out_names = list(signatures[self.key]["outputs"])
        self.out_details = [outs[n] for n in self.out_names]
        self.in_buffers = self.model.create_input_buffers(self.index)
        self.out_buffers = self.model.create_output_buffers(self.index)

    def input_specs(self) -> list[TensorSpec]:
        return [TensorSpec(d["name"], tuple(int(v) for v in d["shape"]), d["dtype"]) for d in self.in_details]

    def prepare(self, inputs: list[np.ndarray]) -> None:
        if len(inputs) != len(self.in_details):
            raise JobError(ErrorKind.BAD_DATASET, f"model has {len(self.in_details)} inputs, got {len(inputs)}")
        for d, buf, array in zip(self.in_details, self.in_buffers, inputs):
            want = np.dtype(d["dtype"])
            if want.kind in "iu" and array.dtype.kind == "f":
                raise JobError(ErrorKind.BAD_DATASET, f"input '{d['name']}' is {want.name}; quantized IO is not supported on this accelerator")
            buf.write(np.ascontiguousarray(array.astype(want, copy=False).reshape(d["shape"])))

    def run(self) -> None:
        self.model.run_by_index(self.index, self.in_buffers, self.out_buffers)

    def outputs(self) -> list[np.ndarray]:
        return [
            buf.read(int(np.prod(d["shape"])), np.dtype(d["dtype"])).reshape(d["shape"])
            for d, buf in zip(self.out_details, self.out_buffers)
        ]


_KNOWN_GPU_FAILURES = [
    ("No adapters found", "no GPU adapter: WebGPU found no Vulkan device. Install the Vulkan loader (libvulkan1) "
                          "and a GPU driver with a Vulkan ICD (NVIDIA: VK_DRIVER_FILES=.../nvidia_icd.json)"),
    ("libvulkan", "the Vulkan loader libvulkan.so.1 is missing: install libvulkan1"),
]  # fmt: skip


def summarize_litert_error(text: str) -> str:
    """One actionable line out of LiteRT's multi-line error logs."""
    for needle, reason in _KNOWN_GPU_FAILURES:
        if needle in text:
            return reason
    errors = [ln.strip(" └") for ln in text.splitlines() if "ERROR" in ln]
    last = errors[-1] if errors else (text.strip().splitlines() or ["unknown error"])[-1]
    return re.sub(r"^.*?ERROR: \[[^\]]*\]\s*", "", last)[:300] or "unknown error"


def gpu_name() -> str:
    """The GPU's model name where the driver says it (NVIDIA), else a generic name."""
    root = Path("/proc/driver/nvidia/gpus")
    try:
        for info in sorted(root.glob("*/information")):
            for line in info.read_text().splitlines():
                if line.startswith("Model:"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "GPU (LiteRT GPU accelerator)"


def probe_gpu(timeout_s: float = GPU_PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """(True, device name) if the bundled model compiles fully on the GPU, else (False, reason)."""
    if os.environ.get("FLEETBENCH_DISABLE_GPU_PROBE"):
        return False, "GPU probe disabled by FLEETBENCH_DISABLE_GPU_PROBE"
    result, problem, stderr = probe_in_child("agent.backends.litert", ["--probe-gpu"], "the GPU probe", timeout_s)
    if result is None:
        return False, problem if stderr is None else f"{problem}: {summarize_litert_error(stderr)}"
    if not result["ok"]:
        for needle, reason in _KNOWN_GPU_FAILURES:  # the cause is often only in LiteRT's log
            if needle in stderr:
                return False, f"LiteRT could not compile a model for the GPU: {reason}"
    return bool(result["ok"]), result["detail"]


def _probe_gpu_here() -> dict:
    try:
        session = CompiledModelSession(PROBE_MODEL.read_bytes(), "gpu")
        session.prepare([np.ones(session.input_specs()[0].shape, dtype=np.float32)])
        session.run()
        out = session.outputs()[0]
        if not np.all(np.isfinite(out)):
            return {"ok": False, "detail": "the GPU ran the probe model but returned non-finite outputs"}
        return {"ok": True, "detail": gpu_name()}
    except JobError as exc:
        return {"ok": False, "detail": exc.message}
    except Exception as exc:  # noqa: BLE001 - any failure means no GPU capability
        return {"ok": False, "detail": summarize_litert_error(f"{type(exc).__name__}: {exc}")}


if __name__ == "__main__" and sys.argv[1:] == ["--probe-gpu"]:
    print(json.dumps(_probe_gpu_here()), flush=True)


GPU_PLACEMENT_NOTE = ("litert:gpu runs a model only when LiteRT says it is fully accelerated (no op on the CPU), "
                      "so every op is placed on the GPU in one partition")
CPU_PROFILE_NOTES = (
    "per-op times from LiteRT's profiler on a second compile of the model (CompiledModel API, CPU, the job's "
    "threads, XNNPACK as in the latency phase), in whole microseconds",
    "XNNPACK times its own operators, which do not map one to one onto the model's ops: the op types are "
    "XNNPACK's (and TFLite's for ops it did not take); the placement counts the model's ops",
)

#: Ops that only move or convert data: their types say nothing about the arithmetic.
_CONVERT_OPS = frozenset({"DEQUANTIZE", "QUANTIZE", "DENSIFY", "CAST", "RESHAPE", "DELEGATE"})


def tensor_precision(interp) -> tuple[str, dict[str, int]]:
    """(e.g. ``"f32"``, ``"i8"``, ``"i8w+f32"``; {precision: op count}) from the interpreter's op list.

    Each op that computes counts under the type of its result; one with a float result and a
    constant int8 input (dynamic-range quantization) counts as ``i8w`` (int8 weights). fp16
    weights are dequantized to f32 before use, so such a model counts as ``f32``.
    """
    try:
        ops = interp._get_ops_details()
        tensors = {t["index"]: t for t in interp.get_tensor_details()}
    except Exception:  # noqa: BLE001 - a runtime build without the op list
        return "", {}
    counts: dict[str, int] = {}
    for op in ops:
        if op.get("op_name") in _CONVERT_OPS or not len(op.get("outputs", [])):
            continue
        out = tensors.get(int(op["outputs"][0]))
        if out is None:
            continue
        kind = canonical_precision(np.dtype(out["dtype"]).name) or np.dtype(out["dtype"]).name
        if kind in ("f32", "f16"):
            ins = [tensors.get(int(i)) for i in op.get("inputs", []) if int(i) >= 0]
            if any(t is not None and np.dtype(t["dtype"]).name == "int8" for t in ins):
                kind = "i8w"
        counts[kind] = counts.get(kind, 0) + 1
    order = sorted(counts, key=lambda p: (-counts[p], p))
    return "+".join(order), counts


def quantize(array: np.ndarray, detail: dict) -> np.ndarray:
    """Float data into an integer (int8/uint8) input with the model's own scale and zero point."""
    want = np.dtype(detail["dtype"])
    if array.dtype == want:
        return array
    if want.kind in "iu" and array.dtype.kind == "f":
        scale, zero_point = detail.get("quantization", (0.0, 0))
        if not scale:
            raise JobError(ErrorKind.BAD_DATASET, f"input '{detail['name']}' is {want.name} without quantization parameters")
        info = np.iinfo(want)
        q = np.round(array.astype(np.float32) / np.float32(scale)) + zero_point
        return np.clip(q, info.min, info.max).astype(want)
    return array.astype(want)


def dequantize(array: np.ndarray, detail: dict) -> np.ndarray:
    """An integer output back to float with its scale and zero point; float outputs unchanged."""
    if array.dtype.kind not in "iu":
        return array
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if not scale:
        return array
    return (array.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


def _disagreements(places: dict[int, str], timed: list[ProfileNode], nested: int) -> tuple[str, ...]:
    """Notes where the profiled compile and the interpreter's placement differ, or ops were left out."""
    notes = []
    on_builtin = {i for i, p in places.items() if p == PLACE_BUILTIN}
    timed_builtin = sum(1 for n in timed if n.place == PLACE_BUILTIN)
    if timed_builtin != len(on_builtin):
        notes.append(f"the profiled compile ran {timed_builtin} ops on TFLite's own kernels where the interpreter "
                     f"placed {len(on_builtin)} there: the two compiles split the model differently")  # fmt: skip
    if nested:
        notes.append(f"{nested} ops of control-flow bodies (WHILE, IF) are left out: their time is inside their "
                     "WHILE or IF node's")  # fmt: skip
    return tuple(notes)


def _op_list(interp) -> tuple[list[dict], dict[int, dict]]:
    """The interpreter's nodes (model ops, then delegate kernels) and its tensors by index."""
    try:
        return list(interp._get_ops_details()), {t["index"]: t for t in interp.get_tensor_details()}
    except Exception:  # noqa: BLE001 - a runtime build without the op list
        return [], {}


def graph_placement(ops: list[dict], nodes_at_init: int, device: str) -> tuple[dict[int, str], dict[str, int]]:
    """({model node index: where it ran}, {place: its partitions}) from the interpreter's nodes.

    A delegate replaces the ops it claims by one DELEGATE node per partition, appended after the model's
    ops, with the partition's inputs and outputs. The ops it claimed are those that produce its outputs,
    walking back until its inputs. DELEGATE nodes added before allocation (index below ``nodes_at_init``)
    are the external delegate's (``device``); those added at allocation, XNNPACK's. Ops claimed by none
    ran on TFLite's own kernels (``builtin``).
    """
    first = next((op["index"] for op in ops if op["op_name"] == "DELEGATE"), len(ops))
    producer = {int(t): op["index"] for op in ops[:first] for t in op["outputs"] if int(t) >= 0}
    places = {op["index"]: PLACE_BUILTIN for op in ops[:first]}
    partitions: dict[str, int] = {}
    for op in ops[first:]:
        owner = device if op["index"] < nodes_at_init and device != "cpu" else PLACE_XNNPACK
        partitions[owner] = partitions.get(owner, 0) + 1
        stop = {int(t) for t in op["inputs"]}
        todo = [int(t) for t in op["outputs"]]
        while todo:
            t = todo.pop()
            node = producer.get(t)
            if t in stop or node is None or places[node] != PLACE_BUILTIN:
                continue
            places[node] = owner
            todo.extend(int(i) for i in ops[node]["inputs"] if int(i) >= 0)
    return places, partitions


def _node(op: dict, tensors: dict[int, dict], place: str) -> ProfileNode:
    """A model op as a profile node: named by its first output tensor. Its precision is read from its types only
    where TFLite's own CPU kernels or XNNPACK run it (they compute in the types the model gives); a delegate or
    the GPU chooses its own, which it does not tell, so there it is unknown."""
    outputs = [tensors.get(int(t)) for t in op.get("outputs", []) if int(t) >= 0]
    name = outputs[0]["name"] if outputs and outputs[0] is not None and outputs[0]["name"] else f"node {op['index']}"
    precision = _op_precision(op, tensors) if place in (PLACE_XNNPACK, PLACE_BUILTIN) else ""
    return ProfileNode(name=name, op_type=op["op_name"], place=place, precision=precision)


#: Ops with hybrid kernels: with int8 weights and float activations they quantize the activations on the fly
#: and multiply in int8 (dynamic-range quantization).
_HYBRID_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV", "LSTM",
                         "UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM", "RNN",
                         "UNIDIRECTIONAL_SEQUENCE_RNN", "BIDIRECTIONAL_SEQUENCE_RNN", "SVDF"})  # fmt: skip


def _op_precision(op: dict, tensors: dict[int, dict]) -> str:
    """The type an op's kernel works in: its result's, except a hybrid op (float result, int8 weights), which
    multiplies in int8 (i8)."""
    outputs = [tensors.get(int(t)) for t in op.get("outputs", []) if int(t) >= 0]
    if not outputs or outputs[0] is None:
        return ""
    kind = canonical_precision(np.dtype(outputs[0]["dtype"]).name)
    if kind in ("f32", "f16") and op["op_name"] in _HYBRID_OPS:
        ins = [tensors.get(int(i)) for i in op.get("inputs", []) if int(i) >= 0]
        if any(t is not None and np.dtype(t["dtype"]).name == "int8" for t in ins):
            return "i8"
    return kind


def run_profiler(path: str, arrays: list[np.ndarray], order: list[str], shapes: dict[str, list[int]], runs: int,
                 threads: int, timeout_s: float) -> tuple[dict | None, str]:  # fmt: skip
    """:func:`agent.backends.litert_profiler.profile` in a child process: (its answer, "") or (None, why not)."""
    request = {"model": str(path), "order": order, "shapes": shapes, "runs": runs, "threads": threads}
    result, problem, stderr = run_in_child("agent.backends.litert_profiler", request, arrays, "LiteRT's profiler",
                                           timeout_s)  # fmt: skip
    if result is None:
        tail = summarize_litert_error(stderr) if stderr else ""
        return None, f"{problem}: {tail}" if tail else problem
    if not result.get("ok"):
        return None, f"LiteRT's profiler refused the model: {result.get('why', 'no reason given')}"
    return result, ""
