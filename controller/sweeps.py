"""Sweeps: models x variants x capability selectors x settings, expanded into
jobs whose states live in the SQL store, and the scheduler that moves them.

A spec (YAML or JSON)::

    name: nightly-digits
    models:
      - path: digits.keras          # converted first (cached by content)
        data: digits.npz            # optional: validation data for accuracy
      - id: digits-cnn              # or a stored model: its stored variants
    variants: [tflite-fp32, tflite-int8, openvino-fp32]   # default: all
    devices: ["litert:*", "openvino:CPU", "agent:pi-07"]  # default: ["*"]
    settings:                        # a value, or a list to sweep over
      threads: [1, 2]
      scenario: [single-stream, Server]
      target_qps: 200
      min_duration_s: 1.0
    expire_after: 10m               # how long a job waits for a device
    max_attempts: 3                 # crashes, time-outs, lost agents

A selector is a capability (``openvino:MYRIAD``: its jobs wait for such a
device), a glob over the capabilities the fleet has shown (``openvino:*``,
``*:cpu``), or ``agent:<id>`` (every capability of that agent, pinned to it).
"""

from __future__ import annotations

import fnmatch
import itertools
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from controller import jobs
from controller.convert.variants import VARIANTS
from controller.datasets import Preprocessing
from controller.fleet.port import Delivered, SetAside
from controller.jobs import SweepState
from controller.store import Store
from controller.store.jobs import (
    ACTIVE_STATES,
    CANCELLED,
    CONVERTING,
    DEAD_LETTER,
    DONE,
    EXPIRED,
    FAILED,
    FINAL_STATES,
    PENDING,
    QUEUED,
    RUNNING,
    SUPERSEDED,
    WAITING,
    now,
)  # fmt: skip
from controller.store.models import JobRow, SweepRow
from protocol import ArtifactRef, BenchmarkSettings, JobSpec, agent_queue
from protocol.errors import ErrorKind

log = logging.getLogger("fleetbench.scheduler")

#: which runtimes run which variant family
FAMILY_RUNTIMES = {"tflite": ("litert", "tflite"), "openvino": ("openvino",)}
#: settings keys a spec may sweep over, and the BenchmarkSettings field each sets
SETTING_ALIASES = {"target_qps": "loadgen_target_qps", "target_latency_ms": "loadgen_target_latency_ms"}
SCENARIOS = {"single-stream": "", "singlestream": "SingleStream", "offline": "Offline", "server": "Server"}
DEFAULT_EXPIRE_S = 600.0


#: the key in a stored sweep's spec that keeps the folder its relative paths were resolved from
BASE_DIR_KEY = "_base_dir"


class SweepError(ValueError):
    """The spec cannot be run; the message says what to change."""


@dataclass
class ModelEntry:
    path: str | None = None
    model_id: str | None = None
    data: str | None = None
    name: str | None = None
    input_shape: tuple[int, ...] | None = None
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    calibration_size: int = 100
    seed: int = 0
    #: keep NaN in the data set (an upload made with ``allow_nan=true``); None: as FLEETBENCH_ALLOW_NAN says
    allow_nan: bool | None = None


@dataclass
class SweepSpec:
    name: str
    models: list[ModelEntry]
    variants: list[str]
    devices: list[str]
    settings: list[BenchmarkSettings]
    expire_after_s: float = DEFAULT_EXPIRE_S
    max_attempts: int = 3
    raw: dict = field(default_factory=dict)
    #: where relative paths in ``raw`` were resolved from (kept with the sweep, for ``--resume``)
    base_dir: str | None = None


def _expand(value):
    """``~`` and ``$VARS`` in a path from the spec."""
    import os

    return os.path.expanduser(os.path.expandvars(str(value))) if value else value


def parse_duration(value, where: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*", str(value))
    if not m:
        raise SweepError(f"{where}: '{value}' is not a duration; write 90, 90s, 10m or 2h")
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def _settings_matrix(raw: dict) -> list[BenchmarkSettings]:
    if not isinstance(raw, dict):
        raise SweepError("settings: must be a mapping, e.g. {threads: [1, 2]}")
    known = {f for f in BenchmarkSettings.__dataclass_fields__}
    axes: list[tuple[str, list]] = []
    for key, value in raw.items():
        values = value if isinstance(value, list) else [value]
        if not values:
            raise SweepError(f"settings.{key}: an empty list sweeps over nothing")
        if key == "scenario":
            mapped = []
            for v in values:
                if str(v).lower() not in SCENARIOS:
                    raise SweepError(f"settings.scenario: '{v}' is not one of single-stream, SingleStream, Offline, Server")
                mapped.append(SCENARIOS[str(v).lower()])
            axes.append(("loadgen_scenario", mapped))
        elif key == "batch":
            if any(v != 1 for v in values):
                raise SweepError("settings.batch: only batch 1 is supported; convert a model with a larger static "
                                 "batch (`fleetbench convert --input-shape 8,...`) and sweep over it instead")  # fmt: skip
        elif SETTING_ALIASES.get(key, key) in known:
            axes.append((SETTING_ALIASES.get(key, key), values))
        else:
            raise SweepError(f"settings.{key}: unknown; known: threads, batch, scenario, target_qps, {', '.join(sorted(known))}")
    out = []
    for combo in itertools.product(*[vals for _, vals in axes]) if axes else [()]:
        try:
            s = BenchmarkSettings.from_dict({k: v for (k, _), v in zip(axes, combo)})
        except Exception as exc:  # noqa: BLE001 - a contract error names the field
            raise SweepError(f"settings: {exc}") from None
        problems = s.problems()
        if problems:
            raise SweepError("settings: " + "; ".join(problems))
        out.append(s)
    return out


def parse_spec(text: str, base_dir: Path | None = None) -> SweepSpec:
    """A :class:`SweepSpec` from YAML (or JSON) text; relative paths are against ``base_dir``."""
    import yaml  # noqa: F401 - PyYAML, a controller dependency

    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SweepError(f"the sweep spec is not valid YAML: {' '.join(str(exc).split())}") from None
    return spec_from_dict(raw, base_dir)


def _int(value, where: str, least: int = 0) -> int:
    """An integer field of the spec (a whole number, at least ``least``), or a SweepError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise SweepError(f"{where}: '{value}' is not a whole number")
    try:
        n = int(str(value).strip()) if isinstance(value, str) else int(value)
    except ValueError:
        raise SweepError(f"{where}: '{value}' is not a whole number") from None
    if n != value and not isinstance(value, str):
        raise SweepError(f"{where}: '{value}' is not a whole number")
    if n < least:
        raise SweepError(f"{where}: must be at least {least}")
    return n


def _name(value) -> str:
    if value is not None and not isinstance(value, (str, int)) or isinstance(value, bool):
        raise SweepError("name: a string, e.g. nightly")
    name = str(value or "sweep")
    if len(name) > 200:
        raise SweepError("name: at most 200 characters")
    return name


def _str_list(value, where: str, example: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SweepError(f"{where}: a list of names, e.g. {example}")
    return value


#: a data set named by content: the sha256 of an uploaded one, bare or as ``sha256:<hex>``
DATA_SHA256 = re.compile(r"(?:sha256:)?([0-9a-f]{64})")


def _api_model(m, i: int) -> None:
    """Through the API a model is a stored one (`id:` with its name or id), never a file on the server."""
    if isinstance(m, str) or (isinstance(m, dict) and "path" in m):
        raise SweepError(f"models[{i}]: name a stored model with `id:` (its name or id); upload model files with "
                         "POST /api/v1/models first")  # fmt: skip
    ref = m.get("id") if isinstance(m, dict) else None
    if isinstance(ref, str) and ("/" in ref or "\\" in ref or ref.startswith((".", "~"))):
        raise SweepError(f"models[{i}].id: a stored model's name or id, not a path; upload model files with "
                         "POST /api/v1/models first")  # fmt: skip


def _api_data(value, i: int) -> str | None:
    """Through the API a data set is named by the sha256 POST /api/v1/datasets returned: ``sha256:<hex>``."""
    if value is None:
        return None
    m = DATA_SHA256.fullmatch(value)
    if not m:
        raise SweepError(f"models[{i}].data: name an uploaded data set by the sha256 POST /api/v1/datasets "
                         "returned (64 hex digits, or sha256:<hex>), not a path")  # fmt: skip
    return "sha256:" + m.group(1)


def spec_from_dict(raw, base_dir: Path | None = None, *, server_paths: bool = True) -> SweepSpec:
    """A :class:`SweepSpec` from the parsed spec (the API takes it as JSON).

    ``server_paths=False`` (the API): models are stored ones (`id:`, never a path) and ``data:`` is the sha256
    of an uploaded data set, kept as ``sha256:<hex>``; nothing in the spec is read as a path on this machine.
    """
    if not isinstance(raw, dict):
        raise SweepError("the sweep spec must be a mapping with at least `models:`")
    unknown = set(raw) - {"name", "models", "variants", "devices", "settings", "expire_after", "max_attempts"}
    if unknown:
        raise SweepError(f"unknown key(s) {', '.join(sorted(unknown))}; known: name, models, variants, devices, settings, expire_after, max_attempts")
    models = []
    if not isinstance(raw.get("models") or [], list):
        raise SweepError("models: a list, e.g. [{path: model.keras}] or [{id: digits-cnn}]")
    for i, m in enumerate(raw.get("models") or []):
        if isinstance(m, str):
            if not server_paths:
                _api_model(m, i)
            m = {"path": m}
        if not isinstance(m, dict) or ("path" in m) == ("id" in m):
            raise SweepError(f"models[{i}]: give either `path:` (a model file to convert) or `id:` (a stored model)")
        known_m = ("path", "id", "data", "name", "input_shape", "preprocessing", "calibration_size", "seed")
        unknown_m = set(m) - set(known_m)
        if unknown_m:
            raise SweepError(f"models[{i}]: unknown key(s) {', '.join(sorted(unknown_m))}; known: {', '.join(known_m)}")
        for key in ("path", "id", "data", "name"):
            if m.get(key) is not None and not isinstance(m[key], str):
                raise SweepError(f"models[{i}].{key}: a string, not {type(m[key]).__name__}")
        if not server_paths:
            _api_model(m, i)
            path, data = None, _api_data(m.get("data"), i)
        else:
            path = _expand(m.get("path"))
            if path and base_dir and not Path(path).is_absolute():
                path = str(base_dir / path)
            data = _expand(m.get("data"))
            if data and base_dir and not Path(data).is_absolute() and not DATA_SHA256.fullmatch(str(data)):
                data = str(base_dir / data)
        shape = None
        if m.get("input_shape"):
            if not isinstance(m["input_shape"], list):
                raise SweepError(f"models[{i}].input_shape: a list of whole numbers, e.g. [1, 224, 224, 3]")
            shape = tuple(_int(v, f"models[{i}].input_shape", least=1) for v in m["input_shape"])
        pre = m.get("preprocessing") or {}
        if not isinstance(pre, dict):
            raise SweepError(f"models[{i}].preprocessing: a mapping, e.g. {{scale: 0.00392157, layout: NHWC}}")
        try:
            pre = Preprocessing(**{k: tuple(v) if isinstance(v, list) else v for k, v in pre.items()})
        except (TypeError, ValueError) as exc:
            raise SweepError(f"models[{i}].preprocessing: {exc}") from None
        if pre.problems():
            raise SweepError(f"models[{i}].preprocessing: " + "; ".join(pre.problems()))
        models.append(ModelEntry(path=path, model_id=m.get("id"), data=data, name=m.get("name"), input_shape=shape,
                                 preprocessing=pre, calibration_size=_int(m.get("calibration_size", 100), f"models[{i}].calibration_size", 1),
                                 seed=_int(m.get("seed", 0), f"models[{i}].seed")))  # fmt: skip
    if not models:
        raise SweepError("models: list at least one model (`- path: model.keras` or `- id: digits-cnn`)")
    variants = _str_list(raw.get("variants") or list(VARIANTS), "variants", "[tflite-fp32, openvino-int8]")
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise SweepError(f"variants: unknown {', '.join(bad)}; known: {', '.join(VARIANTS)}")
    devices = raw.get("devices") or ["*"]
    if not isinstance(devices, list) or not all(isinstance(d, str) and d for d in devices):
        raise SweepError("devices: a list of selectors, e.g. ['litert:*', 'openvino:CPU', 'agent:pi-07']")
    max_attempts = _int(raw.get("max_attempts", 3), "max_attempts", least=1)
    return SweepSpec(
        name=_name(raw.get("name")), models=models, variants=list(variants), devices=devices,
        settings=_settings_matrix(raw.get("settings") or {}),
        expire_after_s=parse_duration(raw.get("expire_after", DEFAULT_EXPIRE_S), "expire_after"),
        max_attempts=max_attempts, raw=raw, base_dir=str(Path(base_dir).resolve()) if base_dir else None,
    )  # fmt: skip


def spec_of_sweep(sweep: SweepRow) -> SweepSpec:
    """The spec a stored sweep was submitted with, its relative paths resolved as they were then."""
    raw = dict(sweep.spec)
    base_dir = raw.pop(BASE_DIR_KEY, None)
    return spec_from_dict(raw, base_dir=Path(base_dir) if base_dir else None)


def _compatible(variant: str, capability: str) -> bool:
    return capability.split(":", 1)[0] in FAMILY_RUNTIMES[VARIANTS[variant].family]


def expand_targets(devices: list[str], variants: list[str], known: dict[str, set[str]]) -> dict[str, list[tuple[str, str | None]]]:
    """{variant: [(capability, pinned agent or None)]} for the selectors.

    ``known`` maps each capability the fleet has shown to the agents offering it.
    """
    agents: dict[str, set[str]] = {}
    for cap, ids in known.items():
        for a in ids:
            agents.setdefault(a, set()).add(cap)
    out: dict[str, list[tuple[str, str | None]]] = {v: [] for v in variants}
    for sel in devices:
        if sel.startswith("agent:"):
            agent = sel.removeprefix("agent:")
            if agent not in agents:
                raise SweepError(f"devices: no agent '{agent}' has been seen; `fleetbench fleet` lists the agents")
            targets = [(c, agent) for c in sorted(agents[agent])]
        elif any(ch in sel for ch in "*?["):
            targets = [(c, None) for c in sorted(known) if fnmatch.fnmatchcase(c, sel)]
            if not targets:
                shown = ", ".join(sorted(known)) or "none yet (start an agent)"
                raise SweepError(f"devices: '{sel}' matches no capability the fleet has shown; known: {shown}")
        else:
            if ":" not in sel:
                raise SweepError(f"devices: '{sel}' is not a capability (<runtime>:<device>), a glob or agent:<id>")
            targets = [(sel, None)]
        matched = False
        for variant in variants:
            for cap, pin in targets:
                if _compatible(variant, cap) and (cap, pin) not in out[variant]:
                    out[variant].append((cap, pin))
                    matched = True
        if not matched:
            raise SweepError(f"devices: '{sel}' offers no runtime for the variants {', '.join(variants)}")
    return out


# ---------------------------------------------------------------- the scheduler


@dataclass
class ModelVariants:
    """What a sweep needs of one model: its variants, ready or being converted."""

    model_id: str
    name: str
    dataset: ArtifactRef | None
    ready: dict[str, tuple[ArtifactRef, ArtifactRef | None]]  # variant -> (artifact, reference)
    converting: list[str]
    convert: Callable[[Callable[[dict], None]], object] | None = None  # runs the conversion, passing events


#: A sweep of more jobs than this needs confirming (a settings matrix grows fast).
CONFIRM_ABOVE = 1_000


class Scheduler:
    """Moves a sweep's jobs through their states: one ``tick()`` at a time.

    ``fleet`` is a :class:`~controller.fleet.port.FleetPort`: it sends jobs, fences attempts, knows the live
    agents and stores the outcomes agents relayed (:meth:`on_broker` builds one on today's Redis and Celery
    fleet). The rules are :mod:`controller.jobs`'; this class applies them to the
    store and the fleet. ``artifact_ref`` rewrites artifact URIs for agents (``file://`` embedded, the
    controller's HTTP URL in a fleet).
    """

    def __init__(self, store: Store, fleet, artifact_ref: Callable[[ArtifactRef], ArtifactRef] = lambda r: r):
        self.store = store
        self.fleet = fleet
        self.artifact_ref = artifact_ref
        self.errors: list[str] = []
        self._threads: list[threading.Thread] = []
        #: set when the process that runs this scheduler is going away (Ctrl-C, a lost embedded broker): a
        #: conversion that fails then leaves its jobs converting, for `--resume`, instead of failing them
        self.stopping = False

    @classmethod
    def on_broker(cls, store: Store, dispatcher, artifact_ref: Callable[[ArtifactRef], ArtifactRef] = lambda r: r,
                  collector_name: str = "main") -> "Scheduler":  # fmt: skip
        """A scheduler on the Redis and Celery fleet behind ``dispatcher``, its results stored by a collector."""
        from controller.collector import Collector
        from controller.fleet.redis_celery import RedisCeleryFleet

        return cls(store, RedisCeleryFleet(dispatcher, Collector(dispatcher.redis, store, name=collector_name)), artifact_ref)

    @property
    def dispatcher(self):
        """The Redis and Celery fleet's dispatcher (its broker client, for callers that need the broker itself)."""
        return self.fleet.dispatcher

    @property
    def collector(self):
        return self.fleet.collector

    def drain(self, block_s: float = 0.0) -> int:
        """Take in the outcomes agents sent (waiting up to ``block_s`` for one) and act on each; returns how many."""
        events = self.fleet.drain_outcomes(block_s=block_s)
        for event in events:
            if isinstance(event, Delivered):
                if event.what in jobs.FENCE_OFF_AFTER:  # finished: a redelivered message must not run again
                    self._fence(event.outcome.job_id, 0)
            elif event.job_id is not None:
                try:
                    self._on_set_aside(event)
                except Exception as exc:  # noqa: BLE001 - the job then waits for its agent-lost or expiry path
                    log.warning("could not mark job %s after setting its result aside: %s", event.job_id,
                                str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)  # fmt: skip
        return len(events)

    def _on_set_aside(self, event: SetAside) -> None:
        """A sweep job whose outcome was set aside runs again (up to its attempts); else it is dead-lettered."""
        job = self.store.get_job(event.job_id)
        change = jobs.on_result_set_aside(job, event.attempt, event.reason) if job is not None else None
        if change is not None:
            self._apply(event.job_id, change)

    def _apply(self, job_id: str, change: jobs.Change) -> bool:
        if not self.store.update_job(job_id, expect_attempt=change.attempt, **change.fields):
            return False
        if change.fence is not None:
            self._fence(job_id, change.fence)
        return True

    # ---------------------------------------------------------- submit

    def known_capabilities(self) -> dict[str, set[str]]:
        known: dict[str, set[str]] = {}
        for inv in self.fleet.live_agents():
            self.store.record_agent(inv)
        for row in self.store.agents():
            for c in row.inventory["capabilities"]:
                known.setdefault(c["name"], set()).add(row.agent_id)
        return known

    def submit(self, spec: SweepSpec, models: list[ModelVariants], *, confirm: bool = False) -> str:
        """Store the sweep's jobs and start it; past :data:`CONFIRM_ABOVE` jobs only with ``confirm``."""
        targets = expand_targets(spec.devices, spec.variants, self.known_capabilities())
        sweep_id = uuid.uuid4().hex[:16]
        jobs = []
        t = now()
        for m in models:
            for variant in spec.variants:
                if variant not in m.ready and variant not in m.converting:
                    continue  # refused for this source, or not stored
                for (cap, pin), settings in itertools.product(targets[variant], spec.settings):
                    template = None
                    if variant in m.ready:
                        template = self._template(m, variant, cap, settings)
                    jobs.append(JobRow(
                        job_id=uuid.uuid4().hex, sweep_id=sweep_id, model_id=m.model_id, model_name=m.name,
                        variant=variant, capability=cap, pinned_agent=pin, settings=settings.to_dict(), spec=template,
                        state=PENDING if template else CONVERTING,
                        reason="" if template else f"waiting for {variant} to be converted",
                        attempt=0, sent_attempt=0, max_attempts=spec.max_attempts, created_at=t, updated_at=t,
                    ))  # fmt: skip
        if not jobs:
            raise SweepError("the sweep expands to no jobs: no model has any of the variants on any selected device")
        if len(jobs) > CONFIRM_ABOVE and not confirm:
            raise SweepError(f"the sweep expands to {len(jobs):,} jobs, more than {CONFIRM_ABOVE:,}; check its settings "
                             "matrix, or confirm it (fleetbench sweep --yes; the API's confirm: true)")  # fmt: skip
        raw = dict(spec.raw, expire_after=spec.expire_after_s, **({BASE_DIR_KEY: spec.base_dir} if spec.base_dir else {}))
        superseded = self.store.add_sweep(SweepRow(sweep_id=sweep_id, name=spec.name, spec=raw, state="running",
                                                   created_at=t), jobs, supersede=True)  # fmt: skip
        for job_id in superseded:
            self._fence(job_id, 0)  # an agent that still gets its message does not run it
        if superseded:
            self.errors.append(f"{len(superseded)} unfinished job(s) of an earlier '{spec.name}' sweep superseded")
        for m in models:
            if m.converting and m.convert is not None:
                self._start_conversion(sweep_id, m)
        return sweep_id

    def resume(self, sweep_id: str, models: list[ModelVariants], *, resend: bool) -> int:
        """Take up an interrupted sweep; returns how many of its jobs are unfinished.

        Jobs waiting for a conversion get their variant (converted again if it is still missing). With
        ``resend`` (the broker that held the sweep's messages is gone, as the embedded one is after its run),
        queued and running jobs are sent again under a new attempt; the old attempt is fenced, so a late
        result of it is kept but not counted. A fleet's broker still holds them, so without ``resend`` they
        are left to arrive (or to be retried when their agent is seen gone)."""
        sweep = self.store.get_sweep(sweep_id)
        if sweep.state != "running":
            raise SweepError(f"sweep {sweep.name} ({sweep_id}) is {sweep.state}: there is nothing to resume; "
                             "`fleetbench status` lists the sweeps")  # fmt: skip
        by_id = {m.model_id: m for m in models}
        convert = {}
        unfinished = 0
        for job in self.store.jobs(sweep_id, states=(PENDING, CONVERTING, QUEUED, RUNNING, WAITING)):
            unfinished += 1
            m = by_id.get(job.model_id)
            if job.state == CONVERTING:
                if m is not None and job.variant in m.ready:
                    spec = self._template(m, job.variant, job.capability, BenchmarkSettings.from_dict(job.settings))
                    self.store.update_job(job.job_id, spec=spec, state=PENDING, reason="")
                elif m is not None and job.variant in m.converting and m.convert is not None:
                    convert[m.model_id] = m
                else:
                    self.store.update_job(job.job_id, state=FAILED, error_kind=ErrorKind.CONVERSION_FAILED,
                                          reason=f"{job.variant} of {job.model_name} can no longer be made from its source")  # fmt: skip
            elif resend and (job.state in (QUEUED, RUNNING) or (job.state == WAITING and job.sent_attempt == job.attempt > 0)):
                self.store.update_job(job.job_id, expect_attempt=job.attempt, state=PENDING, agent_id=None,
                                      reason=f"resumed: attempt {job.attempt} is sent again (its broker is gone)")  # fmt: skip
        for m in convert.values():
            self._start_conversion(sweep_id, m)
        return unfinished

    def cancel(self, sweep_id: str) -> int:
        """End a sweep: its unfinished jobs become cancelled, and an agent that still gets one does not run it."""
        import redis

        ids = self.store.cancel_sweep(sweep_id)
        try:
            for job_id in ids:
                self._fence(job_id, 0)
        except redis.exceptions.RedisError as exc:  # cancelled in the store all the same; a late result is not counted
            self.errors.append(f"the broker is unreachable ({type(exc).__name__}): {len(ids)} cancelled job(s) not fenced; "
                               "an agent that still gets one runs it, and its result is kept apart")  # fmt: skip
        return len(ids)

    def _template(self, m: ModelVariants, variant: str, cap: str, settings: BenchmarkSettings, job_id: str = "") -> dict:
        artifact, reference = m.ready[variant]
        return JobSpec(
            job_id=job_id or "-", model_id=m.model_id, model_name=m.name, variant=variant, capability=cap,
            artifact=self.artifact_ref(artifact), settings=settings,
            dataset=self.artifact_ref(m.dataset) if m.dataset else None,
            reference=self.artifact_ref(reference) if reference else None, attempt=0,
        ).to_dict()  # fmt: skip

    def _start_conversion(self, sweep_id: str, m: ModelVariants) -> None:
        """Convert in the background; each variant's jobs become pending the moment it exists."""
        state = {"reference": None}

        def on_event(e: dict) -> None:
            kind = e.get("event")
            if kind == "reference" and e.get("artifact"):
                state["reference"] = ArtifactRef.from_dict(e["artifact"])
            elif kind == "done" and e.get("artifact"):
                m.ready[e["variant"]] = (ArtifactRef.from_dict(e["artifact"]), state["reference"])
                for job in self.store.jobs(sweep_id, states=(CONVERTING,)):
                    if job.variant == e["variant"] and job.model_id == m.model_id:
                        spec = self._template(m, job.variant, job.capability, BenchmarkSettings.from_dict(job.settings))
                        self.store.update_job(job.job_id, spec=spec, state=PENDING, reason="")
            elif kind == "failed":
                self._fail_converting(sweep_id, m, e["variant"], f"conversion failed: {e.get('error')}")

        def run() -> None:
            from controller.errors import DispatchError, ServiceError

            try:
                m.convert(on_event)
            except (DispatchError, ServiceError) as exc:  # the converter or its broker went away, not the model
                self.errors.append(f"conversion of {m.name} stopped: {str(exc).splitlines()[0]}")
                time.sleep(1.0)  # the tick that notices a lost broker sets `stopping` within its wait
                if self.stopping:
                    return  # its jobs stay converting; `fleetbench sweep --resume` converts them again
            except Exception as exc:  # noqa: BLE001 - every waiting job learns why
                self.errors.append(f"conversion of {m.name} failed: {exc}")
            if self.stopping:
                return
            for variant in set(m.converting) - set(m.ready):
                self._fail_converting(sweep_id, m, variant, "the conversion ended without this variant")

        t = threading.Thread(target=run, name=f"convert-{m.name}", daemon=True)
        self._threads.append(t)
        t.start()

    def _fail_converting(self, sweep_id: str, m: ModelVariants, variant: str, why: str) -> None:
        for job in self.store.jobs(sweep_id, states=(CONVERTING,)):
            if job.variant == variant and job.model_id == m.model_id:
                self.store.update_job(job.job_id, state=FAILED, reason=why, error_kind=ErrorKind.CONVERSION_FAILED)

    # ---------------------------------------------------------- tick

    def _fence(self, job_id: str, attempt: int) -> None:
        self.fleet.fence(job_id, attempt)

    def tick(self, sweep_id: str, wait_s: float = 0.0) -> dict[str, int]:
        """Collect outcomes (waiting up to ``wait_s`` for one), then move every active job one step;
        returns the counts by state."""
        self.drain()
        fleet = jobs.FleetView({inv.agent_id: {c.name for c in inv.capabilities} for inv in self.fleet.live_agents()})
        sweep = self.store.get_sweep(sweep_id)
        expire_s = float(sweep.spec.get("expire_after", DEFAULT_EXPIRE_S))
        for job in self.store.jobs(sweep_id, states=(PENDING, WAITING, QUEUED, RUNNING)):
            started = self.fleet.started(job.job_id, job.attempt) if job.state == QUEUED else None
            step = jobs.on_tick(job, fleet, now(), expire_s, started=started)
            if isinstance(step, jobs.Send):
                self._send(job, step.attempt)
            elif step is not None:
                self._apply(job.job_id, step)
        if wait_s > 0:
            self.drain(block_s=wait_s)  # after sending: wake as soon as an outcome arrives
        counts = self.store.job_counts(sweep_id)
        if not any(counts.get(s) for s in ACTIVE_STATES) and sweep.state == SweepState.RUNNING:
            self.store.set_sweep_state(sweep_id, "done", only_from="running")  # not over a cancel made meanwhile
        return counts

    def _send(self, job: JobRow, attempt: int) -> None:
        spec = JobSpec.from_dict(dict(job.spec, job_id=job.job_id, attempt=attempt))
        if not self.store.update_job(job.job_id, expect_attempt=job.attempt, attempt=attempt, state=QUEUED,
                                     reason="", expires_at=None):  # fmt: skip
            return  # an outcome moved it meanwhile
        self._fence(job.job_id, attempt)
        self.fleet.send(spec, queue=agent_queue(job.pinned_agent) if job.pinned_agent else None)
        self.store.update_job(job.job_id, expect_attempt=attempt, sent_attempt=attempt)


def http_artifact_ref(base_url: str) -> Callable[[ArtifactRef], ArtifactRef]:
    """Point artifact refs at the controller API's download URL (``/api/v1/artifacts/<sha256>``)."""
    import dataclasses

    base = base_url.rstrip("/")
    return lambda r: dataclasses.replace(r, uri=f"{base}/api/v1/artifacts/{r.sha256}")


def summary(counts: dict[str, int]) -> str:
    """One line: done 3, running 1, queued 2, failed 0, waiting 1 (of 7)."""
    total = sum(counts.values())
    parts = [
        f"done {counts.get(DONE, 0)}",
        f"running {counts.get(RUNNING, 0)}",
        f"queued {counts.get(QUEUED, 0) + counts.get(PENDING, 0)}",
        f"converting {counts.get(CONVERTING, 0)}",
        f"failed {counts.get(FAILED, 0) + counts.get(DEAD_LETTER, 0)}",
        f"waiting for a device {counts.get(WAITING, 0)}",
    ]
    if counts.get(EXPIRED):
        parts.append(f"expired {counts[EXPIRED]}")
    if counts.get(SUPERSEDED):
        parts.append(f"superseded {counts[SUPERSEDED]}")
    if counts.get(CANCELLED):
        parts.append(f"cancelled {counts[CANCELLED]}")
    return ", ".join(parts) + f" (of {total})"


def finished(counts: dict[str, int]) -> int:
    return sum(n for s, n in counts.items() if s in FINAL_STATES)




def _materialize(artifacts, sha256: str, filename: str, tmp: Path) -> Path | None:
    """A stored artifact copied under its original file name (conversion identifies files by name and content)."""
    import shutil

    ref = artifacts.get(sha256)
    if ref is None:
        return None
    out = tmp / sha256[:16] / Path(filename).name
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(artifacts.path_for(sha256), out)
    return out


def prepare_models(spec: SweepSpec, store: Store, artifacts, convert_runner, workdir: Path | None = None,
                   max_model_bytes: int | None = None) -> list[ModelVariants]:  # fmt: skip
    """Each spec model's variants: cached ones ready now, the rest converted by ``convert_runner``.

    ``path:`` entries are model files; ``id:`` entries are stored models (uploaded or converted before),
    converted again from their stored source for any variant not stored yet. ``data:`` is a file, or the
    sha256 of an uploaded data set.
    """
    import tempfile

    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    # Stored files are copied here for planning only: planning puts them in the artifact store,
    # and conversions read them from there.
    with tempfile.TemporaryDirectory(prefix="fleetbench-sweep-", dir=workdir) as tmp:
        return [_prepare_model(entry, spec, store, artifacts, convert_runner, Path(tmp), max_model_bytes)
                for entry in spec.models]  # fmt: skip


def _prepare_model(entry: ModelEntry, spec: SweepSpec, store: Store, artifacts, convert_runner, tmp: Path,
                   max_model_bytes: int | None = None) -> ModelVariants:  # fmt: skip
    from controller.convert import service

    path, name = entry.path, entry.name
    if entry.model_id:
        row = store.find_model(entry.model_id)
        name = name or row.name
        path = _materialize(artifacts, row.model_id, row.filename, tmp)
        if path is None:
            raise SweepError(f"model {entry.model_id}: its source file is no longer in the artifact store; upload it again")
    data = entry.data
    if data and DATA_SHA256.fullmatch(data) and (data.startswith("sha256:") or not Path(data).exists()):
        data = _materialize(artifacts, DATA_SHA256.fullmatch(data).group(1), "data.npz", tmp)
        if data is None:
            raise SweepError(f"data set {DATA_SHA256.fullmatch(entry.data).group(1)[:12]}…: not in the artifact store; upload it first")
    plan = service.plan(path, spec.variants, store, artifacts, dataset_path=data, preprocessing=entry.preprocessing, seed=entry.seed,
                        n_calibration=entry.calibration_size, input_shape=entry.input_shape, name=name,
                        allow_nan=entry.allow_nan, max_bytes=max_model_bytes)  # fmt: skip
    if plan.needs_reference:  # variants cached on another data set (or none): the outputs on this one first
        import dataclasses

        done = dataclasses.replace(plan, variants=[v for v in plan.variants if v.status != "todo"])
        plan.reference = service.execute(done, store, convert_runner).reference
    # the reference outputs belong to the data set the jobs use, whichever data set a variant was converted with
    ready = {v.variant: (ArtifactRef.from_dict(v.row.artifact), plan.reference)
             for v in plan.variants if v.status == "cached"}  # fmt: skip
    converting = [v.variant for v in plan.todo]
    dataset = plan.dataset.validation if plan.dataset else None
    convert = (lambda on_event: service.execute(plan, store, convert_runner, on_event=on_event)) if converting else None
    return ModelVariants(plan.model_id, plan.name, dataset, ready, converting, convert)
