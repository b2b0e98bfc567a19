"""Run one conversion request in a sandboxed child process.

Limits: a wall-clock timeout per variant (and for loading the source), an
address-space limit (RLIMIT_AS) and a file-size limit (RLIMIT_FSIZE). A child
that crashes, runs out of memory or time fails the variants it had left with
a clear error; the caller's process and the artifact store are never harmed,
because only finished, hashed outputs are put into the store.
"""

from __future__ import annotations

import json
import os
import resource
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from controller.artifacts import ArtifactStore
from protocol import ArtifactRef
from protocol.errors import ErrorKind
from protocol.packing import unpack
from protocol.proc import die_with_parent, signal_name


@dataclass(frozen=True)
class Limits:
    #: Seconds for loading the source, and again for each variant.
    step_timeout_s: float = 600.0
    memory_bytes: int = 12 * 2**30
    file_size_bytes: int = 8 * 2**30


def _limit(limits: Limits) -> Callable[[], None]:
    def apply() -> None:
        die_with_parent()  # a killed converter worker takes its conversion with it
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size_bytes, limits.file_size_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


# size: the child's events read as they come, with each way the child can end
def run_conversion(
    job: dict,
    artifacts: ArtifactStore,
    on_event: Callable[[dict], None] = lambda e: None,
    limits: Limits = Limits(),
) -> dict:
    """Convert ``job["source"]`` into ``job["variants"]``; return what happened to each.

    ``job``: ``source`` (ArtifactRef dict), ``kind``, ``name``, ``variants``,
    ``input_shape`` (or None), ``calibration`` and ``validation`` (ArtifactRef
    dicts or None). Returns ``{"variants": {name: {...}}, "reference":
    ArtifactRef dict or None, "input_shape": [...], "input_dtype": str,
    "fatal": str or None}``.
    """
    variants: list[str] = list(job["variants"])
    result: dict = {"variants": {}, "reference": None, "input_shape": None, "input_dtype": None, "fatal": None}

    def fail_rest(message: str, kind: str) -> None:
        for v in variants:
            if v not in result["variants"]:
                result["variants"][v] = {"status": "failed", "kind": kind, "error": message}
                on_event({"event": "failed", "variant": v, "kind": kind, "error": message})

    def local(ref_dict: dict | None) -> str | None:
        if not ref_dict:
            return None
        ref = ArtifactRef.from_dict(ref_dict)
        if artifacts.get(ref.sha256) is None:
            raise FileNotFoundError(f"artifact {ref.filename or ref.sha256[:12]} is missing or corrupt in the store")
        return str(artifacts.path_for(ref.sha256))

    with tempfile.TemporaryDirectory(prefix="fleetbench-convert-") as tmp_s:
        tmp = Path(tmp_s)
        try:
            src_path = Path(local(job["source"]))
            calibration, validation = local(job.get("calibration")), local(job.get("validation"))
            train = local(job.get("train"))
        except FileNotFoundError as exc:
            result["fatal"] = str(exc)
            fail_rest(str(exc), ErrorKind.BAD_ARTIFACT)
            return result
        if job["kind"] in ("savedmodel", "openvino-ir"):
            root = unpack(src_path, tmp / "source")
            src_path = root / "model.xml" if job["kind"] == "openvino-ir" else root
        else:  # loaders go by extension, and messages should name the user's file, not a hash
            named = tmp / "source" / f"{job['name']}{_EXT[job['kind']]}"
            named.parent.mkdir()
            named.symlink_to(src_path)
            src_path = named
        outdir = tmp / "out"
        outdir.mkdir()
        request = {
            "kind": job["kind"], "path": str(src_path), "name": job["name"], "variants": variants,
            "input_shape": job.get("input_shape"), "calibration": calibration, "validation": validation,
            "recipes": job.get("recipes") or {}, "train": train, "qat_source": job.get("qat_source"),
            "report": job.get("report"),
        }  # fmt: skip
        req_path = tmp / "request.json"
        req_path.write_text(json.dumps(request), encoding="utf-8")
        err_path = tmp / "stderr.log"
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
        with open(err_path, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "controller.convert.child", str(req_path), str(outdir)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, env=env,
                start_new_session=True, preexec_fn=_limit(limits),
            )  # fmt: skip
            try:
                _pump(proc, limits, result, artifacts, on_event)
            except TimeoutError as exc:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                if job.get("report"):
                    result["fatal"] = f"the report timed out while {exc} (limit {limits.step_timeout_s:g} s); the process was killed"
                fail_rest(
                    f"conversion timed out while {exc} (limit {limits.step_timeout_s:g} s per step); "
                    "the process was killed",
                    ErrorKind.TIMEOUT,
                )
                return result
            code = proc.wait()
        if result["fatal"] is not None:
            fail_rest(result["fatal"], result.get("fatal_kind", ErrorKind.BAD_MODEL))
        elif job.get("report") and "report" not in result:  # a per-layer report whose process died: say how
            tail = err_path.read_bytes()[-600:].decode("utf-8", "replace").strip().splitlines()
            why = f"killed by {signal_name(code)}" if code < 0 else f"exited with code {code}"
            result["fatal"] = (f"the report's process {why} before finishing"
                               + (f": {tail[-1][:300]}" if tail else ""))  # fmt: skip
        elif len(result["variants"]) < len(variants):
            tail = err_path.read_bytes()[-1500:].decode("utf-8", "replace").strip()
            if code < 0:
                why = f"the conversion process was killed by {signal_name(code)}"
            else:
                why = f"the conversion process exited with code {code}"
            hint = " (out of memory? the limit is {:.0f} GiB)".format(limits.memory_bytes / 2**30) if "MemoryError" in tail or "bad_alloc" in tail else ""
            fail_rest(f"{why}{hint} before finishing; the file may be corrupt or too large. Last output:\n{tail}", ErrorKind.CRASHED)
    return result


def _pump(proc, limits: Limits, result: dict, artifacts: ArtifactStore, on_event) -> None:
    """Read the child's events into ``result``; raise TimeoutError(step) when a step overruns."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    step = "loading the source model"
    deadline = time.monotonic() + limits.step_timeout_s
    buf = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(step)
        if not sel.select(timeout=min(remaining, 1.0)):
            continue
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            kind = event.get("event")
            if kind == "fatal":
                result["fatal"], result["fatal_kind"] = event["error"], event.get("kind", ErrorKind.BAD_MODEL)
            elif kind == "source":
                result["input_shape"], result["input_dtype"] = event["input_shape"], event["input_dtype"]
            elif kind == "reference":
                ref = artifacts.put_file(Path(event["file"]), "reference.npz")
                result["reference"] = ref.to_dict()
                event = dict(event, artifact=ref.to_dict())
            elif kind == "start":
                step = f"converting {event['variant']}"
                deadline = time.monotonic() + limits.step_timeout_s
            elif kind == "progress":  # a fine-tune's epoch or a search's try: the step is alive, its clock restarts
                deadline = time.monotonic() + limits.step_timeout_s
            elif kind == "done":
                v = event["variant"]
                ref = artifacts.put_file(Path(event["file"]), _filename(v))
                result["variants"][v] = {"status": "converted", "artifact": ref.to_dict(), "seconds": event["seconds"],
                                         "size_bytes": ref.size_bytes, "details": event.get("details")}  # fmt: skip
                event = dict(event, size_bytes=ref.size_bytes, artifact=ref.to_dict())
            elif kind == "report":
                result["report"] = {k: v for k, v in event.items() if k != "event"}
            elif kind == "failed":
                result["variants"][event["variant"]] = {"status": "failed", "kind": event["kind"], "error": event["error"]}
            on_event(event)


_EXT = {"keras": ".keras", "h5": ".h5", "tflite": ".tflite", "onnx": ".onnx"}


def _filename(variant: str) -> str:
    return f"{variant}.tflite" if variant.startswith("tflite") else f"{variant}.openvino-ir.tar"
