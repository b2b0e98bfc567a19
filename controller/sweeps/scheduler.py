"""The scheduler: it stores a sweep's jobs and moves them, one tick at a time, by controller.jobs' rules."""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable

from controller import jobs
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
)
from controller.store.models import JobRow, SweepRow
from controller.sweeps.spec import BASE_DIR_KEY, DEFAULT_EXPIRE_S, SweepError, SweepSpec
from controller.sweeps.targets import expand_targets
from protocol import ArtifactRef, BenchmarkSettings, JobSpec, agent_queue
from protocol.errors import ErrorKind

log = logging.getLogger("fleetbench.scheduler")


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
        superseded = self.store.add_sweep(SweepRow(sweep_id=sweep_id, name=spec.name, spec=raw, state=SweepState.RUNNING.value,
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
        if sweep.state != SweepState.RUNNING:
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
            self.store.set_sweep_state(sweep_id, SweepState.DONE.value, only_from=SweepState.RUNNING.value)  # not over a cancel made meanwhile
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
