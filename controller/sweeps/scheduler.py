"""The scheduler: it stores a sweep's jobs and moves them, one tick at a time, by controller.jobs' rules."""

# size: one class whose parts (submit, resume, cancel, conversions, the event-driven tick and its batched
# sends) all move the same jobs through the same store and fleet; split, each part would need the others' state

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
from protocol.machines import with_machine
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
#: A tick looks at every active job at least this often (seconds), whatever the events said.
FULL_PASS_S = 30.0
#: At most this many jobs are sent in one tick (a big sweep is sent over several, with progress between).
SEND_BATCH = 1_000


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
        #: sweep id -> (the fleet mirror's generation at its last tick, when its last full pass was): what _due
        #: asks the mirror's changes since
        self._seen: dict[str, tuple[int | None, float]] = {}
        #: jobs to look at on the next tick whatever happens (started on an agent already gone)
        self._recheck: set[str] = set()
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
        for event in events:  # these first: the outcomes are off the broker already, a failed fence must not lose them
            if isinstance(event, SetAside) and event.job_id is not None:
                try:
                    self._on_set_aside(event)
                except Exception as exc:  # noqa: BLE001 - the job then waits for its agent-lost or expiry path
                    log.warning("could not mark job %s after setting its result aside: %s", event.job_id,
                                str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)  # fmt: skip
        finished = [(e.outcome.job_id, 0) for e in events if isinstance(e, Delivered) and e.what in jobs.FENCE_OFF_AFTER]
        if finished:  # a redelivered message of a finished job must not run again
            self.fleet.fence_many(finished)
        return len(events)

    def _on_set_aside(self, event: SetAside) -> None:
        """A sweep job whose outcome was set aside runs again (up to its attempts); else it is dead-lettered."""
        job = self.store.get_job(event.job_id)
        change = jobs.on_result_set_aside(job, event.attempt, event.reason) if job is not None else None
        if change is not None:
            self._apply_many([(event.job_id, change, job.state)])

    # ---------------------------------------------------------- submit

    def known_capabilities(self) -> dict[str, set[str]]:
        known: dict[str, set[str]] = {}
        self.store.record_agents(self.fleet.live_agents())
        for row in self.store.agents():
            host = row.inventory.get("host") or {}
            names = with_machine([c["name"] for c in row.inventory["capabilities"]], host.get("machine", ""),
                                 bool(host.get("emulated_by")))  # fmt: skip
            for name in names:
                known.setdefault(name, set()).add(row.agent_id)
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
        if superseded:  # an agent that still gets one of their messages does not run it
            self.fleet.fence_many([(job_id, 0) for job_id in superseded])
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
        self._seen.pop(sweep_id, None)  # its next tick looks at every job
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
            self.fleet.fence_many([(job_id, 0) for job_id in ids])
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

    def tick(self, sweep_id: str, wait_s: float = 0.0) -> dict[str, int]:
        """Collect outcomes (waiting up to ``wait_s`` for one), take in the starts agents announced, then
        move the jobs something happened to one step; returns the counts by state.

        The work is proportional to events, not to active jobs or agents: pending jobs are sent; queued
        and running jobs are looked at only when the agents they need went away (or their start was
        announced); waiting jobs only when agents came or their expiry is due. Every :data:`FULL_PASS_S` (and on a sweep's
        first tick here) every active job a rule could move is looked at (a queued job whose capability is
        offered, or a running one whose agent is live, is not read), so a missed event heals on its own.
        """
        self.drain()
        t = now()
        snap = self.fleet.presence(self._seen.get(sweep_id, (None, 0.0))[0])
        fleet = snap.view
        sweep = self.store.get_sweep(sweep_id)
        expire_s = float(sweep.spec.get("expire_after", DEFAULT_EXPIRE_S))
        self._take_starts(fleet, t, expire_s)
        sends, changes = [], []
        try:
            for job in self._due(sweep_id, snap, t):
                step = jobs.on_tick(job, fleet, t, expire_s)
                if isinstance(step, jobs.Send):
                    sends.append((job, step.attempt))
                elif step is not None:
                    changes.append((job.job_id, step, job.state))
            self._apply_many(changes)
            self._send_many(sends[:SEND_BATCH])  # the rest stay pending, for the next tick
        except BaseException:
            self._seen.pop(sweep_id, None)  # the changes it took in were not acted on: its next tick looks at all
            raise
        if wait_s > 0:
            self.drain(block_s=wait_s)  # after sending: wake as soon as an outcome arrives
        counts = self.store.job_counts(sweep_id)
        if not any(counts.get(s) for s in ACTIVE_STATES) and sweep.state == SweepState.RUNNING:
            self.store.set_sweep_state(sweep_id, SweepState.DONE.value, only_from=SweepState.RUNNING.value)  # not over a cancel made meanwhile
        return counts

    def _due(self, sweep_id: str, snap, t) -> list[JobRow]:
        """The active jobs of a sweep that this tick must look at (see :meth:`tick`): pending ones; those the
        fleet's changes since the sweep's last tick touch (running on an agent that went away, queued for a
        capability nobody offers now or for an agent that lost it, waiting for one that came); waiting ones
        whose expiry is due. Never every queued job because one agent of thousands went away."""
        _, full_at = self._seen.get(sweep_id, (None, 0.0))
        clock = time.monotonic()
        fleet, changes = snap.view, snap.changes
        full = changes is None or clock - full_at > FULL_PASS_S
        self._seen[sweep_id] = (snap.generation, clock if full else full_at)
        if full:  # every job a rule could move now: those it would leave as they are are not read
            rows = self.store.jobs(sweep_id, states=(PENDING, WAITING))
            rows += self.store.jobs(sweep_id, states=(QUEUED,), unoffered=fleet.offered)
            lost = [job_id for job_id, agent in self.store.running_on(sweep_id) if agent and agent not in fleet.live]
            rows += self.store.jobs_by_id(lost, states=(RUNNING,))
        else:
            rows = self.store.jobs(sweep_id, states=(PENDING,))
            gone = [a for a in changes.left if a not in fleet.live]
            lost = {c for caps in changes.left.values() for c in caps if c not in fleet.offered}
            if gone:
                rows += self.store.jobs(sweep_id, states=(RUNNING,), agents=gone)
            if lost or changes.left:
                rows += self.store.jobs(sweep_id, states=(QUEUED,), capabilities=lost, pinned=list(changes.left))
            if changes.joined:
                came = {c for caps in changes.joined.values() for c in caps}
                rows += self.store.jobs(sweep_id, states=(WAITING,), capabilities=came, pinned=list(changes.joined))
            have = {j.job_id for j in rows}
            rows += [j for j in self.store.jobs(sweep_id, states=(WAITING,), expiring_before=t) if j.job_id not in have]
        if self._recheck:
            have = {j.job_id for j in rows}
            active = self.store.jobs_by_id(self._recheck, states=(QUEUED, RUNNING, WAITING))
            self._recheck = {j.job_id for j in active if j.sweep_id != sweep_id}  # others wait for their sweep's tick
            rows += [j for j in active if j.sweep_id == sweep_id and j.job_id not in have]
        return rows

    def _take_starts(self, fleet: jobs.FleetView, t, expire_s: float) -> None:
        """Mark running the queued jobs whose start agents announced (of any sweep: one list for the fleet)."""
        started = self.fleet.started_events()
        if not started:
            return
        changes = []
        for job in self.store.jobs_by_id({job_id for job_id, _ in started}, states=(QUEUED, WAITING)):
            agent = started.get((job.job_id, job.attempt))
            if agent is None:
                continue  # an older attempt's start
            step = jobs.on_tick(job, fleet, t, expire_s, started=agent)
            if isinstance(step, jobs.Change) and step.fields.get("state") == jobs.JobState.RUNNING:
                changes.append((job.job_id, step, job.state))
                if agent and agent not in fleet.live:  # started, then gone before this tick: look again
                    self._recheck.add(job.job_id)
        self._apply_many(changes)

    def _apply_many(self, changes: list[tuple[str, jobs.Change, str]]) -> None:
        """Apply rule changes ``(job id, change, the state the rule saw)`` in one transaction (each only
        while its job is still in that state), then set the fences they call for in one round trip."""
        if not changes:
            return
        done = self.store.update_jobs([(job_id, c.attempt, c.fields, (seen,)) for job_id, c, seen in changes])
        fences = [(job_id, c.fence) for (job_id, c, _), ok in zip(changes, done) if ok and c.fence is not None]
        if fences:
            self.fleet.fence_many(fences)

    def _send_many(self, sends: list[tuple[JobRow, int]]) -> None:
        """Send next attempts in a batch: one transaction marks them queued, one round trip fences them,
        one producer sends them, one transaction notes they are on a queue. If the broker fails on the
        way, the jobs marked and not noted go back to pending (their next send is a new attempt, so a
        message of this one that did go out is fenced off) and the error goes on to the caller."""
        if not sends:
            return
        specs = [JobSpec.from_dict(dict(job.spec, job_id=job.job_id, attempt=a)) for job, a in sends]  # before marking
        marked = self.store.update_jobs([(job.job_id, job.attempt, dict(attempt=a, state=QUEUED, reason="", expires_at=None),
                                          (job.state,)) for job, a in sends])  # fmt: skip
        go = [(job, a, spec) for (job, a), spec, ok in zip(sends, specs, marked) if ok]  # not those moved meanwhile
        if not go:
            return
        try:
            self.fleet.fence_many([(job.job_id, a) for job, a, _ in go])
            self.fleet.send_many([(spec, agent_queue(job.pinned_agent) if job.pinned_agent else None) for job, _, spec in go])
        except BaseException:
            self.store.update_jobs([(job.job_id, a, {"state": PENDING, "reason": "its send failed; it is sent again"},
                                     (QUEUED,)) for job, a, _ in go])  # fmt: skip
            raise
        self.store.update_jobs([(job.job_id, a, {"sent_attempt": a}, (QUEUED, RUNNING)) for job, a, _ in go])


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
