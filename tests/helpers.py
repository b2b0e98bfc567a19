"""Helpers tests share: waiting on one agent task through Celery's result backend."""

from __future__ import annotations

import time
from typing import Callable

from kombu.exceptions import OperationalError

from controller.errors import DispatchError
from controller.jobs import JobState
from protocol import JobOutcome, JobSpec
from protocol.records import ContractError

#: States reported to ``on_state`` while waiting.
WAITING_FOR_DEVICE, QUEUED, RUNNING = JobState.WAITING.value, JobState.QUEUED.value, JobState.RUNNING.value


def wait_outcome(
    dispatcher,
    result,
    spec: JobSpec,
    on_state: Callable[[str], None] = lambda s: None,
    check: Callable[[], None] = lambda: None,
    poll_s: float = 0.2,
    device_check_s: float = 2.0,
    grace_s: float = 60.0,
) -> JobOutcome:
    """Wait for a job's outcome on Celery's result backend, reporting its state; ``check`` may raise to abort.

    For tests that watch one agent task directly. fleetbench itself never reads an outcome from here: it
    comes through the agent's outbox and the collector (controller.sweeps.Scheduler).

    Gives up ``grace_s`` after the job's own timeout.
    """
    limit_s = spec.settings.timeout_s + grace_s
    deadline = time.monotonic() + limit_s
    next_device_check = 0.0
    state = None
    while True:
        try:
            ready = result.ready()
            celery_state = result.state
        except OperationalError as exc:
            raise DispatchError(dispatcher._broker_down(exc)) from None
        if ready:
            break
        now = time.monotonic()
        if celery_state == "STARTED":
            new_state = RUNNING
        elif now >= next_device_check:
            next_device_check = now + device_check_s
            new_state = QUEUED if dispatcher.agents_offering(spec.capability) else WAITING_FOR_DEVICE
        else:
            new_state = state or QUEUED
        if new_state != state:
            state = new_state
            on_state(state)
        check()
        if now > deadline:
            raise DispatchError(
                f"no outcome for job {spec.job_id} within {limit_s:g} s "
                f"(last state: {state}); is an agent with {spec.capability} running?"
            )
        time.sleep(poll_s)
    if result.failed():
        raise DispatchError(f"job {spec.job_id} failed inside the agent's task: {result.result!r}")
    try:
        return JobOutcome.from_dict(result.get(timeout=5))
    except ContractError as exc:
        raise DispatchError(f"agent answered job {spec.job_id} with a malformed outcome: {exc}") from None
