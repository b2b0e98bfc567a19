"""The fleet as it runs: Celery queues on Redis, heartbeat keys, and the results list's collector."""

from __future__ import annotations

import json

from controller.collector import Collector
from controller.dispatch import Dispatcher
from controller.fleet.port import Delivered, Event, SetAside
from protocol import FENCE_PREFIX, STARTED_KEY, AgentInventory, JobSpec

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

    def send_many(self, sends: list[tuple[JobSpec, str | None]]) -> int:
        return self.dispatcher.submit_many(sends)

    def fence_many(self, fences: list[tuple[str, int]]) -> None:
        pipe = self.dispatcher.redis.pipeline(transaction=False)
        for job_id, attempt in fences:
            pipe.set(FENCE_PREFIX + job_id, attempt, ex=FENCE_TTL_S)
        pipe.execute()

    def started_events(self, batch: int = 10_000) -> dict[tuple[str, int], str]:
        """Take up to ``batch`` start announcements off :data:`STARTED_KEY` (one MULTI: LRANGE and LTRIM,
        so two schedulers never take the same one). Unreadable items are dropped."""
        pipe = self.dispatcher.redis.pipeline(transaction=True)
        pipe.lrange(STARTED_KEY, 0, batch - 1)
        pipe.ltrim(STARTED_KEY, batch, -1)
        items, _ = pipe.execute()
        out: dict[tuple[str, int], str] = {}
        for raw in items:
            try:
                d = json.loads(raw)
                job_id, attempt, agent = d["job_id"], d["attempt"], d.get("agent_id") or ""
            except (ValueError, TypeError, KeyError, AttributeError):
                continue
            if isinstance(job_id, str) and type(attempt) is int and isinstance(agent, str):
                out[(job_id, attempt)] = agent[:128]
        return out

    def live_agents(self) -> list[AgentInventory]:
        return self.dispatcher.live_agents()

    def presence(self, since: int | None = None):
        return self.dispatcher.presence_snapshot(since)

    def drain_outcomes(self, block_s: float = 0.0) -> list[Event]:
        self.collector.drain(block_s=block_s)  # a StoreError keeps what was heard for the next call
        events, self._events = self._events, []
        return events
