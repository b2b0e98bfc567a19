"""The fleet as it runs: Celery queues on Redis, heartbeat keys, and the results list's collector."""

from __future__ import annotations

from controller.collector import Collector
from controller.dispatch import Dispatcher
from controller.fleet.port import Delivered, Event, SetAside
from protocol import FENCE_PREFIX, AgentInventory, JobSpec

#: how long a fence outlives its job's last attempt (a message can sit on a queue for days)
FENCE_TTL_S = 14 * 24 * 3600


class RedisCeleryFleet:
    """A :class:`~controller.fleet.port.FleetPort` over a :class:`Dispatcher` and a :class:`Collector`."""

    def __init__(self, dispatcher: Dispatcher, collector: Collector):
        self.dispatcher = dispatcher
        self.collector = collector
        self._events: list[Event] = []
        collector.on_result = lambda outcome, what: self._events.append(Delivered(outcome, what))
        collector.on_dead = lambda job_id, attempt, reason: self._events.append(SetAside(job_id, attempt, reason))

    def send(self, spec: JobSpec, queue: str | None = None) -> None:
        self.dispatcher.submit(spec, queue=queue)

    def fence(self, job_id: str, attempt: int) -> None:
        self.dispatcher.redis.set(FENCE_PREFIX + job_id, attempt, ex=FENCE_TTL_S)

    def started(self, job_id: str, attempt: int) -> str | None:
        result = self.dispatcher.app.AsyncResult(f"{job_id}.{attempt}")
        try:
            state, info = result.state, result.info
        except Exception:  # noqa: BLE001 - the result backend is the broker; the next tick asks again
            return None
        if state != "STARTED":
            return None
        host = info.get("hostname", "") if isinstance(info, dict) else ""
        return host.split("@")[0]

    def live_agents(self) -> list[AgentInventory]:
        return self.dispatcher.live_agents()

    def drain_outcomes(self, block_s: float = 0.0) -> list[Event]:
        self.collector.drain(block_s=block_s)  # a StoreError keeps what was heard for the next call
        events, self._events = self._events, []
        return events
