# size: one backend whole: its API (2022.3's or current), probe, load and run, throughput pool, PERF_COUNT profile
"""OpenVINO backend: every device ``Core().available_devices`` reports.

Capabilities are ``openvino:<DEVICE>`` (CPU, GPU, NPU, and MYRIAD on the
2022.3 LTS line for NCS2), plus the device strings listed in
``$FLEETBENCH_OPENVINO_DEVICES`` (``;``-separated, e.g.
``HETERO:FPGA,CPU;AUTO:CPU``; the agent config's ``openvino_devices`` sets
it). Each listed string is offered only if the probe really compiles the
bundled probe model on it. Artifacts are IR tars (``model.xml`` +
``model.bin``) made by :func:`protocol.packing.pack_files`.

API versions: the current ``openvino`` package exposes its API at the top
level; the 2022.3 LTS line (the last with the MYRIAD plugin, Python <= 3.10)
has it in ``openvino.runtime``. :func:`api` picks whichever exists, and every
OpenVINO name the backend uses comes from it. ``$FLEETBENCH_OPENVINO_API=runtime``
forces ``openvino.runtime`` (OpenVINO 2023.x to 2025.x still ship it), so the NCS2 hosts'
code path runs, and is tested, on a newer OpenVINO.
"""

from __future__ import annotations

import importlib
import os
import re
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from agent.backends import PROBE_MODEL, Capability, TensorSpec, Unavailable, dist_version
from agent.backends.base import PROFILE_WARMUP
from agent.errors import JobError
from protocol import Profile, ProfileNode
from protocol.errors import ErrorKind, ov_error_line
from protocol.packing import unpack
from protocol.profiling import canonical_precision, openvino_precision, partitions, summarize

#: ``runtime``: use OpenVINO through ``openvino.runtime``, 2022.3 LTS's API, even where the top-level one exists.
API_ENV = "FLEETBENCH_OPENVINO_API"


def api():
    """The module the backend uses OpenVINO through: ``openvino`` (2023.1+), else ``openvino.runtime`` (2022.3
    LTS, whose top-level package has no API); only ``openvino.runtime`` when ``$FLEETBENCH_OPENVINO_API=runtime``."""
    forced = os.environ.get(API_ENV, "")
    if forced not in ("", "runtime"):
        raise Unavailable(f"{API_ENV}={forced!r} is not a choice: set it to 'runtime' (OpenVINO 2022.3's API) "
                          "or unset it")  # fmt: skip
    for module in ("openvino.runtime",) if forced else ("openvino", "openvino.runtime"):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        if getattr(mod, "Core", None) is not None:
            return mod
    if forced:
        raise Unavailable(f"{API_ENV}=runtime, but openvino.runtime is not importable (OpenVINO 2026 and newer "
                          "dropped it): unset it, or install openvino<2026")  # fmt: skip
    raise Unavailable(
        "openvino is not importable; install it with `pip install 'fleetbench[agent]'` "
        "(NCS2 hosts: `pip install openvino==2022.3.2` on Python <= 3.10)"
    )


def _core_class():
    """``Core`` of :func:`api`."""
    return api().Core


def _rt(info, key: str) -> str:
    """``rt_info[key]`` as a string: 2022.3 returns ``str`` itself, 2023.1 and newer an ``OVAny``."""
    value = info[key]
    return value if isinstance(value, str) else value.astype(str)


def _probe_ir() -> tuple[bytes, bytes]:
    """The probe model as IR (XML, weights): a 3x3 convolution and a ReLU on a 1x3x16x16 input. OpenVINO 2022.3
    reads IR, ONNX, Paddle and TensorFlow models, not the bundled ``.tflite`` probe model."""
    x, w, y = ("".join(f"<dim>{d}</dim>" for d in shape) for shape in ((1, 3, 16, 16), (8, 3, 3, 3), (1, 8, 16, 16)))
    xml = f"""<?xml version="1.0"?><net name="fleetbench-probe" version="11"><layers>
<layer id="0" name="x" type="Parameter" version="opset1"><data shape="1,3,16,16" element_type="f32"/>
 <output><port id="0" precision="FP32">{x}</port></output></layer>
<layer id="1" name="w" type="Const" version="opset1"><data element_type="f32" shape="8,3,3,3" offset="0" size="864"/>
 <output><port id="0" precision="FP32">{w}</port></output></layer>
<layer id="2" name="conv" type="Convolution" version="opset1">
 <data strides="1,1" dilations="1,1" pads_begin="1,1" pads_end="1,1" auto_pad="explicit"/>
 <input><port id="0">{x}</port><port id="1">{w}</port></input>
 <output><port id="2" precision="FP32">{y}</port></output></layer>
<layer id="3" name="relu" type="ReLU" version="opset1">
 <input><port id="0">{y}</port></input><output><port id="1" precision="FP32">{y}</port></output></layer>
<layer id="4" name="y" type="Result" version="opset1"><input><port id="0">{y}</port></input></layer>
</layers><edges>
<edge from-layer="0" from-port="0" to-layer="2" to-port="0"/>
<edge from-layer="1" from-port="0" to-layer="2" to-port="1"/>
<edge from-layer="2" from-port="2" to-layer="3" to-port="0"/>
<edge from-layer="3" from-port="1" to-layer="4" to-port="0"/>
</edges></net>"""
    return xml.encode(), np.full((8, 3, 3, 3), 0.1, np.float32).tobytes()


def extra_devices() -> list[str]:
    """Device strings from $FLEETBENCH_OPENVINO_DEVICES (``;``-separated)."""
    raw = os.environ.get("FLEETBENCH_OPENVINO_DEVICES", "")
    return [d.strip() for d in raw.split(";") if d.strip()]


#: Element types that make a model something other than plain fp32 (compressed or quantized).
LOW_PRECISION = frozenset({"f16", "bf16", "i8", "u8", "i4", "u4", "u1", "nf4", "f8e4m3", "f8e5m2"})


def is_plain_f32(model) -> bool:
    """True when every op of ``model`` computes in f32 (no FakeQuantize, no f16/int constants).

    Such a model (an fp32 variant) runs with INFERENCE_PRECISION_HINT=f32 on the CPU: the plugin
    would otherwise run it in bf16 on CPUs with AVX-512 BF16 or AMX, and an fp32 variant's numbers
    (latency and fidelity) would be bf16's.
    """
    for op in model.get_ordered_ops():
        if op.get_type_name() == "FakeQuantize":
            return False
        if any(out.get_element_type().get_type_name() in LOW_PRECISION for out in op.outputs()):
            return False
    return True


#: Layers whose runtime precision is what a model "computes in".
COMPUTE_LAYERS = frozenset({"Convolution", "Deconvolution", "FullyConnected", "MatMul", "GroupConvolution", "RNNSeq",
                            "RNNCell", "Gemm", "Eltwise", "Pooling", "Interpolate", "MVN", "Softmax"})  # fmt: skip
_SKIP_LAYERS = frozenset({"Input", "Output", "Const", "Reorder", "Reshape", "Squeeze", "Unsqueeze", "Convert"})


def runtime_precision(compiled) -> tuple[str, dict[str, int]]:
    """(e.g. ``"f32"``, ``"i8+f32"``, ``"bf16"``; {precision: layer count}) of a compiled model.

    Counts the runtime precision of compute layers (convolutions, matrix products, eltwise ...);
    a model with none of those counts every layer that is not a constant, reorder or reshape.
    Returns ("", {}) when the plugin exposes no runtime model (then the record says unknown).
    """
    try:
        ops = compiled.get_runtime_model().get_ordered_ops()
        rows = []
        for op in ops:
            info = op.get_rt_info()
            rows.append((_rt(info, "layerType"), _rt(info, "runtimePrecision")))
    except Exception:  # noqa: BLE001 - a plugin without execution-graph rt_info
        return "", {}
    chosen = [p for t, p in rows if t in COMPUTE_LAYERS] or [p for t, p in rows if t not in _SKIP_LAYERS]
    counts: dict[str, int] = {}
    for p in chosen:
        p = canonical_precision(p) or p.lower()  # 2022.3 says FP32, I8, BF16 where 2023.1 and newer say f32, i8, bf16
        if p and p not in ("undefined", "dynamic", "unspecified"):
            counts[p] = counts.get(p, 0) + 1
    order = sorted(counts, key=lambda p: (-counts[p], p))
    return "+".join(order), counts


def _runtime_layers(compiled) -> dict | None:
    """{runtime node: its rt_info} of a compiled model; None when the plugin exposes no runtime model (2022.3's
    HETERO and AUTO answer NOT_IMPLEMENTED)."""
    try:
        return {op.get_friendly_name(): op.get_rt_info() for op in compiled.get_runtime_model().get_ordered_ops()}
    except Exception:  # noqa: BLE001 - any plugin's refusal
        return None


def _version() -> str:
    found = dist_version("openvino", "openvino-dev")
    if found == "unknown":  # installed from Intel's archive (setupvars.sh), as on many NCS2 hosts: no pip metadata
        try:
            found = str(api().get_version()).split("-")[0] or found
        except Exception:  # noqa: BLE001 - not importable: the probe says why
            pass
    return found


#: PERF_COUNT's statuses, as a profile names them.
_STATUS = {"EXECUTED": "executed", "NOT_RUN": "not-run", "OPTIMIZED_OUT": "optimized-out"}
#: Nodes that compute nothing: a profile leaves them out.
_NOT_NODES = frozenset({"Parameter", "Result", "Constant", "Const", "Input", "Output"})


class AsyncQueuePool:
    """OpenVINO throughput: the model compiled with the THROUGHPUT hint, N requests in an AsyncInferQueue."""

    mode = "openvino-async-queue"

    def __init__(self, core, model, device: str, n: int, inputs: list[np.ndarray], threads: int, extra: dict):
        config = {"PERFORMANCE_HINT": "THROUGHPUT", "PERFORMANCE_HINT_NUM_REQUESTS": n, **extra}
        if threads > 0 and device == "CPU":
            config["INFERENCE_NUM_THREADS"] = threads
        compiled = core.compile_model(model, device, config)
        self.queue = api().AsyncInferQueue(compiled, n)
        for request in self.queue:
            for i, array in enumerate(inputs):
                tensor = request.get_input_tensor(i)
                tensor.data[...] = array.astype(tensor.data.dtype, copy=False).reshape(tensor.data.shape)
        self.completed = 0
        lock = threading.Lock()

        def done(request, userdata) -> None:  # called from OpenVINO's threads
            with lock:
                self.completed += 1

        self.queue.set_callback(done)

    def run(self, stop) -> int:
        while not stop():
            self.queue.start_async()  # waits for a free request when all are busy
        self.queue.wait_all()
        return self.completed


class Backend:
    runtime = "openvino"

    def __init__(self) -> None:
        self._core = None
        self._request = None
        self._compiled = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        #: capability -> why it is not offered, filled by probe()
        self.unavailable: dict[str, str] = {}

    @property
    def version(self) -> str:
        return _version()

    def core(self):
        if self._core is None:
            self._core = _core_class()()
        return self._core

    def probe(self) -> list[Capability]:
        core = self.core()
        self.unavailable = {}
        caps = []
        for device in extra_devices():
            why = self._try_compile(device)
            if why is None:
                caps.append(Capability(f"openvino:{device}", self.runtime, _version(), device, device, self.precisions(device)))
            else:
                self.unavailable[f"openvino:{device}"] = why
        for device in core.available_devices:
            caps.append(
                Capability(
                    name=f"openvino:{device}",
                    runtime=self.runtime,
                    runtime_version=_version(),
                    device=device,
                    device_name=self.device_name(device),
                    precisions=self.precisions(device),
                )
            )
        if not caps:
            raise Unavailable("OpenVINO is installed but reports no devices")
        return sorted(caps, key=lambda c: (":" in c.device, c.name))

    def _try_compile(self, device: str) -> str | None:
        """None if the bundled probe model compiles on ``device``, else why not."""
        try:
            if api().__name__ == "openvino.runtime":
                self.core().compile_model(self.core().read_model(*_probe_ir()), device)
            else:
                self.core().compile_model(str(PROBE_MODEL), device)
        except Exception as exc:  # noqa: BLE001 - any failure means not offered
            return f"OpenVINO cannot compile a model for {device}: {ov_error_line(exc)}"
        return None

    def precisions(self, device: str) -> tuple[str, ...]:
        """OPTIMIZATION_CAPABILITIES of the device (of each listed device for HETERO/AUTO/MULTI: their intersection)."""
        head, _, rest = device.partition(":")
        parts = [d for d in rest.split(",") if d] if head in ("HETERO", "AUTO", "MULTI") else [device]
        found: list[set[str]] = []
        for part in parts:
            try:
                found.append({str(p) for p in self.core().get_property(part.split(".")[0], "OPTIMIZATION_CAPABILITIES")})
            except Exception:  # noqa: BLE001 - a plugin without the property
                return ()
        return tuple(sorted(set.intersection(*found))) if found else ()

    def device_name(self, device: str) -> str:
        try:
            return str(self.core().get_property(device.split(":")[0].split(".")[0], "FULL_DEVICE_NAME"))
        except Exception:  # noqa: BLE001 - HETERO/AUTO have no single name
            return device

    def load(self, artifact_path: str, device: str, settings, *, f32: bool = False) -> None:
        """``f32``: the variant is an fp32 one, so it computes in f32 whatever its weights are stored in."""
        core = self.core()
        self._tmp = tempfile.TemporaryDirectory(prefix="fleetbench-ir-")
        try:
            root = unpack(Path(artifact_path), Path(self._tmp.name))
        except Exception as exc:  # noqa: BLE001 - tarfile raises several types
            raise JobError(ErrorKind.LOAD_FAILED, f"not an OpenVINO IR archive: {exc}") from None
        xml = root / "model.xml"
        if not xml.is_file() or not xml.with_suffix(".bin").is_file():
            raise JobError(ErrorKind.LOAD_FAILED, "the IR archive lacks model.xml or model.bin; re-convert it with `fleetbench convert`")
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if settings.threads > 0 and device == "CPU":
            config["INFERENCE_NUM_THREADS"] = settings.threads
        try:
            model = core.read_model(str(xml))
        except RuntimeError as exc:
            raise JobError(ErrorKind.LOAD_FAILED, f"OpenVINO cannot read the IR: {ov_error_line(exc)}") from None
        dynamic = [str(p.get_partial_shape()) for p in model.inputs if p.get_partial_shape().is_dynamic]
        if dynamic:
            raise JobError(
                ErrorKind.LOAD_FAILED,
                f"the model's input shape {', '.join(dynamic)} is dynamic; fleetbench benchmarks static shapes: "
                "convert it with `fleetbench convert --input-shape ...` (or a data set that implies the shape)",
            )
        # an fp32 variant, or a plain-f32 model, runs in f32 (see is_plain_f32), also when its IR stores
        # f16 weights; the throughput phase compiles with the same
        self._extra = {"INFERENCE_PRECISION_HINT": "f32"} if device == "CPU" and (f32 or is_plain_f32(model)) else {}
        config.update(self._extra)
        self._model, self._device, self._threads = model, device, settings.threads
        try:
            self._compiled = core.compile_model(model, device, config)
        except RuntimeError as exc:
            if device not in core.available_devices and ":" not in device:
                raise JobError(ErrorKind.UNSUPPORTED_DEVICE, f"OpenVINO has no device '{device}' here; it has {', '.join(core.available_devices)}") from None
            raise JobError(ErrorKind.LOAD_FAILED, f"OpenVINO could not compile the model for {device}: {ov_error_line(exc)}") from None
        self._request = self._compiled.create_infer_request()

    def input_specs(self) -> list[TensorSpec]:
        out = []
        for port in self._compiled.inputs:
            shape = tuple(int(d) for d in port.get_shape())
            out.append(TensorSpec(port.get_any_name() if port.get_names() else "input", shape, port.get_element_type().to_dtype().name))
        return out

    def prepare(self, inputs: list[np.ndarray]) -> None:
        specs = self.input_specs()
        if len(inputs) != len(specs):
            raise JobError(ErrorKind.BAD_DATASET, f"model has {len(specs)} inputs, got {len(inputs)}")
        for i, (spec, array) in enumerate(zip(specs, inputs)):
            array = np.ascontiguousarray(array.astype(np.dtype(spec.dtype), copy=False).reshape(spec.shape))
            self._request.get_input_tensor(i).data[...] = array

    def run(self) -> None:
        self._request.infer()

    #: How ``runtime_latency_ns`` measures: recorded as ``ResultRecord.timer``.
    timer = "openvino request.latency"

    def runtime_latency_ns(self) -> int:
        """OpenVINO's own latency of the last ``run`` (``request.latency``, ms), in ns."""
        return int(round(self._request.latency * 1e6))

    def throughput_pool(self, n: int, inputs: list[np.ndarray]):
        return AsyncQueuePool(self.core(), self._model, self._device, n, inputs, self._threads, self._extra)

    def outputs(self) -> list[np.ndarray]:
        return [self._request.get_output_tensor(i).data for i in range(len(self._compiled.outputs))]

    def precision(self) -> tuple[str, dict[str, int]]:
        """The precision the compiled model really runs, read back from OpenVINO's runtime model:
        the runtime precisions of its compute layers, most used first (e.g. ``i8+f32``), and their counts."""
        return runtime_precision(self._compiled)

    def output_names(self) -> list[str]:
        return [port.get_any_name() if port.get_names() else f"output_{i}" for i, port in enumerate(self._compiled.outputs)]

    def profile(self, runs: int, timeout_s: float) -> Profile:
        """The model compiled a second time with PERF_COUNT (the same device and settings), ``runs`` inferences on
        the latency phase's inputs, each node's ``real_time`` averaged: its type, exec_type, the precision its
        kernel ran in, its status, and where it ran (HETERO: the device ``query_model`` placed it on). Fewer runs
        when ``timeout_s`` would pass (the profile then says how many ran)."""
        deadline = time.monotonic() + timeout_s
        config = {"PERFORMANCE_HINT": "LATENCY", "PERF_COUNT": True, **self._extra}
        if self._threads > 0 and self._device == "CPU":
            config["INFERENCE_NUM_THREADS"] = self._threads
        compiled = self.core().compile_model(self._model, self._device, config)
        request = compiled.create_infer_request()
        for i in range(len(compiled.inputs)):
            request.get_input_tensor(i).data[...] = self._request.get_input_tensor(i).data
        for _ in range(min(PROFILE_WARMUP, runs)):
            if time.monotonic() >= deadline:
                break
            request.infer()
        totals: dict[str, list] = {}  # node name -> [type, exec_type, status, summed µs]
        latency_ms, done = 0.0, 0
        while done < runs and (done == 0 or time.monotonic() < deadline):
            request.infer()
            done += 1
            latency_ms += request.latency
            for info in request.profiling_info:
                row = totals.setdefault(info.node_name, [info.node_type, info.exec_type, "", 0.0])
                status = _STATUS.get(info.status.name, "executed")
                if row[2] != "executed":  # executed in any run counts as executed
                    row[2] = status
                row[1] = info.exec_type or row[1]
                row[3] += info.real_time.total_seconds() * 1e6
        layers = _runtime_layers(compiled)
        profiled = [name for name, row in totals.items() if row[0] not in _NOT_NODES]
        target, places, partitions, notes = self._placement(compiled, layers, profiled)
        if layers is None:
            notes += ("the compiled model exposes no runtime model (as OpenVINO 2022.3's HETERO and AUTO): each "
                      "node's precision is its exec_type's",)  # fmt: skip
        nodes = []
        for name in profiled:
            node_type, exec_type, status, us = totals[name]
            info = (layers or {}).get(name)
            rt = _rt(info, "runtimePrecision") if info is not None and "runtimePrecision" in info else ""
            nodes.append(ProfileNode(name=name, op_type=node_type, place=places.get(name, target),
                                     precision=openvino_precision(exec_type, rt), exec_type=exec_type,
                                     time_ms=us / done / 1000, status=status))  # fmt: skip
        return summarize(nodes, source="openvino PERF_COUNT (profiling_info)", runs=done, target=target,
                         partitions=partitions, latency_ms=latency_ms / done, notes=notes)  # fmt: skip

    def _placement(self, compiled, layers: dict | None, profiled: list[str]) -> tuple[str, dict, int, tuple[str, ...]]:
        """(the target device, {runtime node: device} where not the target, the target's partitions, notes).

        A plain device runs every node: one partition. HETERO places each op of the model on one of its devices
        (``query_model``): the first device listed is the target, the rest fallback, and the target's
        partitions are counted as HETERO cuts them (:func:`partitions`). The runtime model's nodes (``layers``)
        name the ops they came from; without a runtime model (None: 2022.3's HETERO) the ``profiled`` nodes'
        own names do (``subgraph<N>: <op>`` on 2022.3). AUTO and MULTI run on the devices they chose for this
        compile."""
        head, _, rest = self._device.partition(":")
        if head in ("AUTO", "MULTI"):
            try:
                chosen = [str(d) for d in compiled.get_property("EXECUTION_DEVICES")]
            except Exception:  # noqa: BLE001 - an older plugin without the property
                chosen = [d for d in rest.split(",") if d]
            return ",".join(chosen) or self._device, {}, 1, ()
        if head != "HETERO":
            return self._device, {}, 1, ()
        target = rest.split(",")[0]
        affinity = {str(k): str(v) for k, v in self.core().query_model(self._model, self._device).items()}
        found: dict[str, str | None] = {}  # runtime node -> the device of the first op it came from
        if layers is None:
            found = {name: affinity.get(re.sub(r"^subgraph\d+: ", "", name)) for name in profiled}
        for name, info in (layers or {}).items():
            if _rt(info, "layerType") in ("Input", "Output", "Const"):
                continue
            originals = _rt(info, "originalLayersNames").split(",") if "originalLayersNames" in info else []
            found[name] = next((affinity[o] for o in originals if o in affinity), None)
        places = {name: device for name, device in found.items() if device is not None and device != target}
        unmapped = sum(device is None for device in found.values())
        ops = [op for op in self._model.get_ordered_ops() if op.get_type_name() not in ("Parameter", "Result", "Constant")]
        names = {op.get_friendly_name() for op in ops}
        edges = [(port.get_source_output().get_node().get_friendly_name(), op.get_friendly_name())
                 for op in ops for port in op.inputs()]  # fmt: skip
        cuts = partitions([op.get_friendly_name() for op in ops],
                          [(a, b) for a, b in edges if a in names], {n: affinity.get(n, target) for n in names})  # fmt: skip
        notes = (f"{unmapped} nodes of the compiled graph name no op of the model (layout copies HETERO or the plugin "
                 f"added); they are counted on {target}",) if unmapped else ()  # fmt: skip
        return target, places, cuts.get(target, 0), notes
