"""One benchmark job, start to finish. Runs inside the child process.

``execute(spec)`` is a plain function: tests call it directly, the child
process (:mod:`agent.child`) calls it for the Celery task and for bundles.
"""

from __future__ import annotations

import dataclasses
import resource
import sys
import time
import zipfile

import numpy as np

from agent import backends, conditions, energy
from agent.artifacts import local_path
from agent.errors import JobError
from agent.host import host_facts
from agent.measure import (FLOOR_ENV, SLOWDOWN_ENV, injected_floor_ms, injected_slowdown, measure_latency,
                           measure_throughput, stretched, timed)
from protocol import (ContractError, Fidelity, JobSpec, LatencyStats, Profile, ResultRecord, TaskAccuracy, Throughput,
                      Validity, utc_now)  # fmt: skip
from protocol import accuracy as accuracy_mod
from protocol import profiling
from protocol import fidelity as fidelity_mod
from protocol.errors import ErrorKind
from protocol.npz import load_npz
from protocol.samples import Samples
from protocol.stats import summarize_ns


def _load_dataset(spec: JobSpec) -> tuple[np.ndarray, np.ndarray | None, str | None] | None:
    """(inputs, labels or None, the task the data set declares or None)."""
    if spec.dataset is None:
        return None
    path = local_path(spec.dataset)
    try:
        with load_npz(path) as data:
            if "x" not in data:
                raise JobError(ErrorKind.BAD_DATASET, f"dataset {path} has no array 'x' (inputs)")
            x = data["x"]
            y = data["y"] if "y" in data else None
            task = str(data["task"]) if "task" in data else None
    except JobError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise JobError(ErrorKind.BAD_DATASET, f"dataset {path} is not a readable .npz: {exc}") from None
    if y is not None and len(y) != len(x):
        raise JobError(ErrorKind.BAD_DATASET, f"dataset {path}: {len(x)} inputs but {len(y)} labels")
    if len(x) == 0:
        raise JobError(ErrorKind.BAD_DATASET, f"dataset {path} is empty")
    return x, y, task


def _latency_inputs(backend, dataset) -> list[np.ndarray]:
    """Inputs for the latency loop: the first real sample when there is one."""
    specs = backend.input_specs()
    if dataset is not None and len(specs) == 1:
        return [dataset[0][:1]]
    rng = np.random.default_rng(0)
    out = []
    for s in specs:
        dtype = np.dtype(s.dtype)
        if dtype.kind == "f":
            out.append(rng.random(s.shape, dtype=np.float32).astype(dtype))
        else:
            info = np.iinfo(dtype)
            out.append(rng.integers(info.min, info.max, size=s.shape, dtype=dtype, endpoint=True))
    return out


def _load_reference(spec: JobSpec, n: int) -> tuple[list[str], list[np.ndarray]] | None:
    """The fp32 reference: every output's name and its (samples × values) array.

    ``reference.npz`` holds ``names`` and ``out_0``, ``out_1``, ...; one written before every
    output was kept holds a single ``outputs`` array (the first output).
    """
    if spec.reference is None:
        return None
    path = local_path(spec.reference)
    try:
        with load_npz(path) as data:
            if "names" in data:
                names = [str(v) for v in data["names"]]
                refs = [data[f"out_{i}"] for i in range(len(names))]
            else:
                names, refs = [""], [data["outputs"]]
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise JobError(ErrorKind.BAD_DATASET, f"reference outputs {path} are not readable: {exc}") from None
    for ref in refs:
        if len(ref) != n:
            raise JobError(ErrorKind.BAD_DATASET, f"reference outputs have {len(ref)} rows but the data set has {n} samples")
    return names, [ref.reshape(n, -1).astype(np.float64) for ref in refs]


def _evaluate(backend, x: np.ndarray, y: np.ndarray | None, task: str | None,
              reference) -> tuple[TaskAccuracy | None, Fidelity | None]:  # fmt: skip
    """Accuracy against the labels, by task, and fidelity of every output against the fp32 reference,
    one sample at a time."""
    batch = backend.input_specs()[0].shape[0] if backend.input_specs()[0].shape else 1
    if batch != 1:
        raise JobError(ErrorKind.BAD_DATASET, f"accuracy needs a batch-1 model input, got batch {batch}")
    per_output: list[list[np.ndarray]] = []
    for i in range(len(x)):
        backend.prepare([x[i : i + 1]])
        backend.run()
        outs = backend.outputs()
        if not per_output:
            per_output = [[] for _ in outs]
        for store, o in zip(per_output, outs):
            # float32 copies (compare works in float64 per output): a mask output of many samples stays small
            store.append(np.array(o, dtype=np.float32).reshape(np.shape(o)[1:] if np.ndim(o) > 1 else np.shape(o)))
    shaped = [np.stack(o) for o in per_output]
    outs = [o.reshape(len(o), -1) for o in shaped]
    out_names = backend.output_names()
    accuracy = None
    if y is not None:
        try:
            accuracy = accuracy_mod.evaluate(task or accuracy_mod.infer_task(y), shaped, y, out_names)
        except accuracy_mod.AccuracyError as exc:
            raise JobError(ErrorKind.BAD_DATASET, f"the data set's labels do not fit the model: {exc}") from None
    fidelity = None
    if reference is not None:
        ref_names, refs = reference
        if ref_names == [""]:  # an old reference: the first output only
            outs, out_names, ref_names = outs[:1], out_names[:1], out_names[:1]
        try:
            order = fidelity_mod.match_outputs(out_names, ref_names, [o.shape[1] for o in outs], [r.shape[1] for r in refs])
            labels = y is not None and y.ndim == 1 and y.dtype.kind in "iu"
            n_classes = int(y.max()) + 1 if labels and len(y) else None
            fidelity = fidelity_mod.compare([outs[j] for j in order], refs, ref_names, n_classes)
        except ValueError as exc:
            raise JobError(ErrorKind.BAD_DATASET, f"the fp32 reference does not fit this variant: {exc}") from None
    return accuracy, fidelity


def _load(backend, path: str, device: str, spec: JobSpec) -> None:
    """Load the variant; an ``*-fp32`` variant is asked to compute in f32 (a label is a promise)."""
    backend.load(path, device, spec.settings, f32=spec.variant.endswith("-fp32"))


#: The profile phase's runs are cut to what fits in this many seconds at the latency phase's mean.
PROFILE_BUDGET_S = 60.0


# size: the phase's budget, its own process, and each way it can end (refused, crashed, late, done), in order
def _profile(spec: JobSpec, model_path, inputs: list[np.ndarray], mean_ms: float, load_s: float,
             deadline: float) -> Profile:  # fmt: skip
    """The profile phase, last of all so that it perturbs no other figure, in a process of its own
    (:mod:`agent.profile_child`) that must end before the job's deadline: a second load, the warm-up and the
    runs have to fit in what is left. A failure costs the profile (it says why), never the job's record."""
    from agent.backends import run_in_child
    from agent.backends.base import PROFILE_WARMUP

    runtime, _, device = spec.capability.partition(":")
    source = f"{runtime} profile phase"
    runs = spec.settings.profile_runs
    if mean_ms > 0:
        runs = max(1, min(runs, int(PROFILE_BUDGET_S * 1000 / mean_ms)))
    left = deadline - time.monotonic()
    need = 5 + 2 * load_s + (PROFILE_WARMUP + 1) * mean_ms / 1000
    if left < need:
        return profiling.failed(source, device, f"the profile phase could not run: the job's timeout_s="
                                f"{spec.settings.timeout_s:g} s left {max(left, 0):.0f} s, and a second load, the "
                                f"warm-up and one run need {need:.0f} s; raise timeout_s")  # fmt: skip
    request = {"runtime": runtime, "device": device, "model": str(model_path), "settings": spec.settings.to_dict(),
               "f32": spec.variant.endswith("-fp32"), "n_inputs": len(inputs), "runs": runs, "timeout_s": left - 3}
    found, problem, stderr = run_in_child("agent.profile_child", request, inputs, "its process", left - 2)
    if found is None:
        tail = (stderr or "").strip().splitlines()[-1:] if stderr else []
        return profiling.failed(source, device, f"the profile phase could not run: {problem}"
                                + (f": {tail[0][:300]}" if tail else ""))  # fmt: skip
    if not found.get("ok"):
        return profiling.failed(source, device, f"the profile phase could not run: {found.get('why', 'no reason given')}")
    try:
        profile = Profile.from_dict(found["profile"])
    except ContractError as exc:
        return profiling.failed(source, device, f"the profile phase gave an unreadable profile: {exc}")
    if profile.problems():
        return profiling.failed(source, device, f"the profile phase gave an impossible profile: {'; '.join(profile.problems())}")
    if 0 < profile.runs < spec.settings.profile_runs:
        note = (f"{profile.runs} of the {spec.settings.profile_runs} profile_runs: the rest would take over "
                f"{PROFILE_BUDGET_S:g} s, or past the job's timeout_s")  # fmt: skip
        profile = dataclasses.replace(profile, notes=profile.notes + (note,))
    return profile


def _peak_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss) if sys.platform == "darwin" else int(rss) * 1024


# size: the phases in the order they run (load, warm-up, latency, throughput, outputs, accuracy, profile), read top to bottom
def execute(spec: JobSpec, agent_id: str, deadline: float | None = None) -> ResultRecord:
    """The job's record. ``deadline`` (``time.monotonic()``, which every process of this machine shares) is when
    the agent kills this process: from ``spec.settings.timeout_s`` on when the caller gives none."""
    problems = spec.settings.problems()
    if problems:
        raise JobError(ErrorKind.BAD_SPEC, "invalid benchmark settings: " + "; ".join(problems))
    runtime, sep, device = spec.capability.partition(":")
    if not sep or not device:
        raise JobError(ErrorKind.BAD_SPEC, f"capability '{spec.capability}' is not of the form <runtime>:<device>")
    try:
        backend = backends.create(runtime)
    except backends.Unavailable as exc:
        raise JobError(ErrorKind.UNSUPPORTED_DEVICE, str(exc)) from None

    try:
        conditions.apply_affinity(spec.settings.cpu_affinity)  # before the runtime makes its threads
        slowdown, floor_ms = injected_slowdown(), injected_floor_ms()
    except ValueError as exc:
        raise JobError(ErrorKind.BAD_SPEC, str(exc)) from None
    started_at = utc_now()
    if deadline is None:
        deadline = time.monotonic() + spec.settings.timeout_s
    model_path = local_path(spec.artifact)
    dataset = _load_dataset(spec)

    try:
        _, load_ns = timed(lambda: _load(backend, str(model_path), device, spec))
    except JobError as exc:
        name = spec.artifact.filename or spec.variant
        raise JobError(exc.kind, f"{name} ({spec.variant}, sha256 {spec.artifact.sha256[:12]}): {exc.message}") from None
    inputs = _latency_inputs(backend, dataset)
    backend.prepare(inputs)
    watch = conditions.Watch(spec.settings.disturbance_max_cores).start()
    sampler = energy.Sampler(energy.Sources.probe(), interval_s=energy.interval_s()).start()
    readings: list = []  # sustained mode: the thermal state as each window closes
    on_window = (lambda: readings.append(conditions.thermal_state())) if spec.settings.sustained_s else None
    run, runtime_ns = backend.run, getattr(backend, "runtime_latency_ns", None)
    if slowdown != 1.0 or floor_ms:  # fault injection (FLEETBENCH_INJECT_SLOWDOWN, _FLOOR_MS): the clock times it
        run, runtime_ns = stretched(backend.run, slowdown, floor_ns=int(floor_ms * 1e6)), None
    try:
        m = measure_latency(run, spec.settings, runtime_latency_ns=runtime_ns, on_window=on_window)
    except Exception as exc:  # a runtime error during invoke is the model's fault, not the agent's
        raise JobError(ErrorKind.INFERENCE_FAILED, f"inference failed on {spec.capability}: {exc}") from None
    finally:
        joules = sampler.stop()
    # every inference the window ran: the first, the warm-up, the timed ones
    energy_record = joules.record(1 + spec.settings.warmup_iterations + len(m.samples_ns))
    samples = Samples(m.samples_ns)  # checked and made an array once: the statistics and the record share it
    sustained = None
    if spec.settings.sustained_s:
        readings.append(conditions.thermal_state())  # the last window's end
        sustained = conditions.sustained_record(samples.array, m, readings, spec.settings.window_s())

    throughput = None
    n = spec.settings.throughput_requests
    if n:
        pool = backend.throughput_pool(n, inputs)
        sampler.start()  # the same sources over the throughput window
        try:
            t = measure_throughput(pool, spec.settings.throughput_duration_s)
        finally:
            joules = sampler.stop()
        throughput = Throughput(mode=pool.mode, requests=n, completed=t.completed, elapsed_s=t.elapsed_ns / 1e9,
                                ips=t.ips, energy=joules.record(t.completed))  # fmt: skip

    device_conditions = watch.stop()  # the latency and throughput phases: what the record's speed figures saw
    summary = summarize_ns(samples.array)
    loadgen = None
    if spec.settings.loadgen_scenario:
        from agent.loadgen import run_scenario

        # (under fault injection this p50 is the injected one: the record is invalid whatever LoadGen makes of it)
        loadgen = run_scenario(backend.run, spec.settings, expected_latency_ns=int(summary.p50_ms * 1e6))

    accuracy, fidelity = None, None
    if dataset is not None:
        x, y, task = dataset
        reference = _load_reference(spec, len(x))
        if y is not None or reference is not None:
            accuracy, fidelity = _evaluate(backend, x, y, task, reference)

    precision, precision_ops = backend.precision()
    peak_rss = _peak_rss_bytes()
    profile = None
    if spec.settings.profile:
        profile = _profile(spec, model_path, inputs, summary.mean_ms, load_ns / 1e9, deadline)
    reasons = tuple(summary.invalid_reasons) + tuple(m.problems(spec.settings))
    if slowdown != 1.0:
        reasons += (f"injected slowdown: each inference stretched {slowdown:g}x ({SLOWDOWN_ENV}); not a measurement",)
    if floor_ms:
        reasons += (f"injected floor: each inference padded to at least {floor_ms:g} ms ({FLOOR_ENV}); "
                    "not a measurement",)
    stats = LatencyStats.from_summary(summary, load_ms=load_ns / 1e6, first_inference_ms=m.first_inference_ns / 1e6)
    return ResultRecord(
        job_id=spec.job_id,
        attempt=spec.attempt,
        model_id=spec.model_id,
        model_name=spec.model_name,
        artifact_sha256=spec.artifact.sha256,
        variant=spec.variant,
        runtime=runtime,
        runtime_version=backend.version,
        capability=spec.capability,
        device=device,
        device_name=backend.device_name(device),
        agent_id=agent_id,
        host=host_facts(),
        settings=spec.settings,
        samples_ns=samples,
        stats=stats,
        validity=Validity(valid=not reasons, reasons=reasons),
        throughput_ips=1000.0 / summary.mean_ms if summary.mean_ms > 0 else 0.0,
        throughput_mode="single-stream",
        accuracy_top1=accuracy.top1 if accuracy is not None else None,
        accuracy_samples=accuracy.samples if accuracy is not None else 0,
        peak_rss_bytes=peak_rss,
        model_size_bytes=model_path.stat().st_size,
        started_at=started_at,
        finished_at=utc_now(),
        fidelity=fidelity,
        throughput=throughput,
        loadgen=loadgen,
        timer=getattr(backend, "timer", "perf_counter_ns"),
        precision=precision,
        precision_ops=precision_ops,
        from_source=spec.artifact.sha256 == spec.model_id,
        accuracy=accuracy,
        profile=profile,
        energy=energy_record,
        conditions=device_conditions,
        sustained=sustained,
    )
