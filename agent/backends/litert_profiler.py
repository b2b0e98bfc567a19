"""Per-op times from LiteRT's own profiler, through its C API (``libLiteRt.so``), in a process of its own.

ai-edge-litert 2.3's Python API (``Interpreter``, ``CompiledModel``, ``Options``) has no profiler. Its C
library does: a CompiledModel compiled with the runtime option ``enable_profiling`` records an event per op
(``LiteRtGetProfilerEvents``), as LiteRT's C++ ``benchmark_model --enable_op_profiling`` reads them. This
module calls that API with ctypes:

- the model is compiled for the CPU (XNNPACK, the same delegate the interpreter applies), with the job's
  thread count, profiling on; the inputs are the bytes the latency phase's interpreter held;
- after a warm-up, the profiler records ``runs`` inferences; each op's mean time is kept:
  XNNPACK reports its own operators (``Convolution (NHWC, QS8) IGEMM``), numbered from 0 in each of its
  partitions; an op XNNPACK did not take is reported as the model's node (its index) on TFLite's own
  kernels; ``Invoke`` is the whole inference;
- times are whole microseconds, as the runtime keeps them: an op under 1 µs reads 0 in most runs.

The C API's structs and option strings are not versioned, so :func:`available` allows the ai-edge-litert
release whose headers this was written from (2.3) and no other. It runs in a child process
(``python -m agent.backends.litert_profiler REQUEST.json``, one JSON line on stdout): a crash in native code
costs the profile, never the job's record.
"""

from __future__ import annotations

import ctypes as C
import json
import os
import sys
from pathlib import Path

from agent.backends.base import PROFILE_WARMUP

#: ai-edge-litert releases whose C API (struct layouts, option identifiers) this module was written from.
KNOWN_RELEASES = ("2.3.",)
#: LiteRtProfilerEventType: the whole-inference event, an op on TFLite's kernels, a delegate node as one,
#: an op a delegate profiled itself (XNNPACK's operators).
EV_DEFAULT, EV_OPERATOR, EV_DELEGATE_OPERATOR, EV_DELEGATE_PROFILED = 1, 2, 4, 8
_CPU = 1  # kLiteRtHwAcceleratorCpu
_WRITE = 1  # kLiteRtTensorBufferLockModeWrite


def available(version: str) -> str:
    """"" when this ai-edge-litert's profiler can be read here; otherwise why not."""
    if not any(version.startswith(r) for r in KNOWN_RELEASES):
        return (f"fleetbench reads LiteRT's profiler through its C API, known for ai-edge-litert "
                f"{', '.join(r.rstrip('.') for r in KNOWN_RELEASES)} (installed: {version})")  # fmt: skip
    if not _library().is_file():
        return f"ai-edge-litert has no {_library().name} here"
    return ""


def _library() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("ai_edge_litert")
    root = Path(spec.origin).parent if spec and spec.origin else Path(".")
    return root / "libLiteRt.so"


class _Memory(C.Structure):
    _fields_ = [("total", C.c_size_t), ("in_use", C.c_size_t), ("private", C.c_size_t)]


class _Event(C.Structure):  # ProfiledEventData, litert/c/litert_profiler_event.h
    _fields_ = [("tag", C.c_char_p), ("event_type", C.c_int), ("start_us", C.c_uint64), ("elapsed_us", C.c_uint64),
                ("begin_mem", _Memory), ("end_mem", _Memory), ("metadata1", C.c_uint64), ("metadata2", C.c_uint64),
                ("source", C.c_int)]  # fmt: skip


class _LiteRt:
    """The C functions used, with their signatures; every call's LiteRtStatus is checked."""

    P, PP = C.c_void_p, C.POINTER(C.c_void_p)
    FREE = C.CFUNCTYPE(None, C.c_void_p)

    def __init__(self) -> None:
        P, PP, SZ = self.P, self.PP, C.POINTER(C.c_size_t)
        self.lib = C.CDLL(str(_library()))
        self.libc = C.CDLL(None)
        self.libc.malloc.restype, self.libc.malloc.argtypes = C.c_void_p, [C.c_size_t]
        self.libc.free.argtypes = [C.c_void_p]
        self.free = self.FREE(C.cast(self.libc.free, C.c_void_p).value)
        for name, args in {
            "LiteRtCreateEnvironment": [C.c_int, P, PP], "LiteRtCreateModelFromFile": [P, C.c_char_p, PP],
            "LiteRtCreateOptions": [PP], "LiteRtSetOptionsHardwareAccelerators": [P, C.c_int],
            "LiteRtCreateOpaqueOptions": [C.c_char_p, P, self.FREE, PP], "LiteRtAddOpaqueOptions": [P, P],
            "LiteRtCreateCompiledModel": [P, P, P, PP], "LiteRtCompiledModelGetProfiler": [P, PP],
            "LiteRtCompiledModelResizeInputTensor": [P, C.c_size_t, C.c_size_t, C.POINTER(C.c_int), C.c_size_t],
            "LiteRtGetModelSignature": [P, C.c_size_t, PP], "LiteRtGetNumSignatureInputs": [P, SZ],
            "LiteRtGetNumSignatureOutputs": [P, SZ], "LiteRtGetSignatureInputTensorByIndex": [P, C.c_size_t, PP],
            "LiteRtGetSignatureOutputTensorByIndex": [P, C.c_size_t, PP], "LiteRtGetTensorName": [P, C.POINTER(C.c_char_p)],
            "LiteRtGetRankedTensorType": [P, P],
            "LiteRtGetCompiledModelInputBufferRequirements": [P, C.c_size_t, C.c_size_t, PP],
            "LiteRtGetCompiledModelOutputBufferRequirements": [P, C.c_size_t, C.c_size_t, PP],
            "LiteRtCreateManagedTensorBufferFromRequirements": [P, P, P, PP], "LiteRtGetTensorBufferSize": [P, SZ],
            "LiteRtLockTensorBuffer": [P, PP, C.c_int], "LiteRtUnlockTensorBuffer": [P],
            "LiteRtRunCompiledModel": [P, C.c_size_t, C.c_size_t, PP, C.c_size_t, PP],
            "LiteRtStartProfiler": [P], "LiteRtStopProfiler": [P], "LiteRtGetNumProfilerEvents": [P, C.POINTER(C.c_int)],
            "LiteRtGetProfilerEvents": [P, C.c_int, C.POINTER(_Event)],
        }.items():  # fmt: skip
            fn = getattr(self.lib, name)
            fn.argtypes, fn.restype = args, C.c_int

    def __call__(self, name: str, *args) -> None:
        status = getattr(self.lib, name)(*args)
        if status != 0:
            raise RuntimeError(f"{name} failed (LiteRtStatus {status})")

    def options_string(self, identifier: bytes, toml: str):
        """An opaque option whose payload is a TOML string (as LiteRT's own C++ option helpers make them)."""
        raw = toml.encode() + b"\0"
        buf = self.libc.malloc(len(raw))
        C.memmove(buf, raw, len(raw))
        opaque = C.c_void_p()
        self("LiteRtCreateOpaqueOptions", identifier, buf, self.free, C.byref(opaque))
        return opaque


#: LiteRtRankedTensorType (litert/c/litert_model_types.h, litert_layout.h): element type (int32), then the
#: layout: rank (7 bits) and has_strides (1 bit) in one unsigned int, dimensions int32[8], strides uint32[8].
_RANK_AT, _DIMS_AT, _MAX_RANK = 4, 8, 8


def _shape(ranked) -> list[int]:
    rank = int.from_bytes(ranked.raw[_RANK_AT:_RANK_AT + 4], "little") & 0x7F
    return list(C.cast(C.addressof(ranked) + _DIMS_AT, C.POINTER(C.c_int32))[: min(rank, _MAX_RANK)])


def _set_shape(ranked, dims: list[int]) -> None:
    C.memmove(C.addressof(ranked) + _DIMS_AT, (C.c_int32 * len(dims))(*dims), 4 * len(dims))


# size: the C API's sequence (environment, model, options, compiled model, buffers, runs, events), in order
def profile(model: str, inputs: dict[str, bytes], order: list[str], runs: int, threads: int,
            shapes: dict[str, list[int]] | None = None) -> dict:  # fmt: skip
    """Compile ``model`` for the CPU with profiling on, run it ``runs`` times on ``inputs`` (tensor name ->
    bytes; ``order``: the names in the interpreter's input order) and return the mean time of each op.

    ``shapes`` (tensor name -> shape, inputs and outputs): the interpreter's concrete shapes, for a model whose
    signature leaves a dimension open (a batch of -1): its inputs are resized to them."""
    shapes = shapes or {}
    api = _LiteRt()
    env, model_h, opts, compiled, prof = (C.c_void_p() for _ in range(5))
    api("LiteRtCreateEnvironment", 0, None, C.byref(env))
    api("LiteRtCreateModelFromFile", env, model.encode(), C.byref(model_h))
    api("LiteRtCreateOptions", C.byref(opts))
    api("LiteRtSetOptionsHardwareAccelerators", opts, _CPU)
    api("LiteRtAddOpaqueOptions", opts, api.options_string(b"runtime_options_string", "enable_profiling = true\n"))
    if threads > 0:
        api("LiteRtAddOpaqueOptions", opts, api.options_string(b"xnnpack", f"num_threads = {threads}\n"))
    api("LiteRtCreateCompiledModel", env, model_h, opts, C.byref(compiled))
    api("LiteRtCompiledModelGetProfiler", compiled, C.byref(prof))
    signature = C.c_void_p()
    api("LiteRtGetModelSignature", model_h, 0, C.byref(signature))

    def buffers(kind: str) -> tuple:
        n = C.c_size_t()
        api(f"LiteRtGetNumSignature{kind}s", signature, C.byref(n))
        out, names = (C.c_void_p * n.value)(), []
        for i in range(n.value):
            tensor, req, buf, name = C.c_void_p(), C.c_void_p(), C.c_void_p(), C.c_char_p()
            ranked = C.create_string_buffer(1024)  # LiteRtRankedTensorType, passed through as it is
            api(f"LiteRtGetSignature{kind}TensorByIndex", signature, i, C.byref(tensor))
            api("LiteRtGetTensorName", tensor, C.byref(name))
            api("LiteRtGetRankedTensorType", tensor, ranked)
            dims = _shape(ranked)
            if any(d < 0 for d in dims):  # an open dimension: the interpreter's concrete shape
                name_s = (name.value or b"").decode(errors="replace")
                concrete = shapes.get(name_s)
                if concrete is None or len(concrete) != len(dims):
                    raise RuntimeError(f"tensor '{name_s}' has the open shape {dims} and no concrete one")
                if kind == "Input":
                    api("LiteRtCompiledModelResizeInputTensor", compiled, 0, i, (C.c_int * len(concrete))(*concrete),
                        len(concrete))  # fmt: skip
                _set_shape(ranked, list(concrete))
            api(f"LiteRtGetCompiledModel{kind}BufferRequirements", compiled, 0, i, C.byref(req))
            api("LiteRtCreateManagedTensorBufferFromRequirements", env, ranked, req, C.byref(buf))
            out[i] = buf.value
            names.append((name.value or b"").decode(errors="replace"))
        return out, names

    ins, in_names = buffers("Input")
    outs, _ = buffers("Output")
    for i, name in enumerate(in_names):
        data = inputs.get(name) if name in inputs else (inputs[order[i]] if i < len(order) else None)
        size, ptr = C.c_size_t(), C.c_void_p()
        api("LiteRtGetTensorBufferSize", ins[i], C.byref(size))
        if data is None or len(data) != size.value:
            raise RuntimeError(f"input '{name}' of the compiled model takes {size.value} bytes; the interpreter's "
                               f"input has {None if data is None else len(data)}")  # fmt: skip
        api("LiteRtLockTensorBuffer", ins[i], C.byref(ptr), _WRITE)
        C.memmove(ptr, data, len(data))
        api("LiteRtUnlockTensorBuffer", ins[i])

    def run() -> None:
        api("LiteRtRunCompiledModel", compiled, 0, len(ins), ins, len(outs), outs)

    for _ in range(min(PROFILE_WARMUP, runs)):  # warm-up: the profiler records nothing before it starts
        run()
    api("LiteRtStartProfiler", prof)
    for _ in range(runs):
        run()
    api("LiteRtStopProfiler", prof)
    count = C.c_int()
    api("LiteRtGetNumProfilerEvents", prof, C.byref(count))
    events = (_Event * max(count.value, 1))()
    api("LiteRtGetProfilerEvents", prof, count.value, events)
    return aggregate([(e.event_type, (e.tag or b"").decode(errors="replace"), e.elapsed_us, e.metadata1, e.metadata2)
                      for e in events[: count.value]], runs)  # fmt: skip


def aggregate(events: list[tuple[int, str, int, int, int]], runs: int) -> dict:
    """Each op's time per inference (its summed time over the runs, divided by the runs), from the profiler's
    events in order: (type, tag, elapsed µs, metadata1, metadata2).

    An ``Invoke`` event starts a run. A delegate-profiled event (XNNPACK) is one of the delegate's own
    operators, numbered from 0 in each partition: a number not above the last one starts the next
    partition. An operator event is a model node on TFLite's kernels (metadata1: its index)."""
    ops: dict[tuple, dict] = {}
    invokes: list[int] = []
    partition, last = 0, None
    for kind, tag, us, md1, md2 in events:
        if kind == EV_DEFAULT:
            if tag == "Invoke":
                invokes.append(us)
                partition, last = 0, None
            continue
        if kind in (EV_DELEGATE_PROFILED, EV_DELEGATE_OPERATOR):
            if last is None or md1 <= last or kind == EV_DELEGATE_OPERATOR:
                partition += 1
            last = md1
            key = ("delegate", partition, int(md1) if kind == EV_DELEGATE_PROFILED else -1, tag)
        elif kind == EV_OPERATOR:
            last = None
            key = ("node", int(md2), int(md1), tag)
        else:
            continue
        entry = ops.setdefault(key, {"us": 0, "n": 0})
        entry["us"] += us
        entry["n"] += 1
    per = len(invokes) or runs  # an op's time per inference: one that runs k times in a loop body counts k times
    rows = [{"kind": k[0], "partition": k[1] if k[0] == "delegate" else 0, "index": k[2],
             "subgraph": k[1] if k[0] == "node" else 0, "tag": k[3], "mean_us": v["us"] / per, "count": v["n"]}
            for k, v in ops.items()]  # fmt: skip
    return {"ok": True, "runs": runs, "ops": rows, "invoke_us": sum(invokes) / len(invokes) if invokes else None}


def main(argv: list[str]) -> int:
    request = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    import numpy as np

    with np.load(request["inputs"]) as data:
        inputs = {name: np.ascontiguousarray(data[f"in_{i}"]).tobytes() for i, name in enumerate(request["order"])}
    try:
        result = profile(request["model"], inputs, request["order"], int(request["runs"]), int(request["threads"]),
                         request.get("shapes"))  # fmt: skip
    except RuntimeError as exc:  # a LiteRtStatus the runtime refused with: the reason, not a crash
        result = {"ok": False, "why": str(exc)}
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    os._exit(code)  # skip LiteRT's teardown: the answer is written
