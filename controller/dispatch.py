"""Sending benchmark jobs to agents through Celery.

The controller never imports agent code: it sends the task by name to the
queue of the job's capability. Outcomes come back one way only: through each
agent's outbox onto the results list, where the collector stores them (the
scheduler reads no Celery result for an outcome; it asks the result backend
only whether an attempt has started).
"""

from __future__ import annotations

import time
from typing import Callable

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from controller.errors import DispatchError
from protocol import (
    AGENT_KEY_PREFIX,
    BENCHMARK_TASK,
    CELERY_SETTINGS,
    CONVERT_QUEUE,
    CONVERT_TASK,
    AgentInventory,
    JobSpec,
    queue_for,
)
from protocol.machines import offered
from protocol.records import ContractError


def celery_client(broker_url: str) -> Celery:
    app = Celery("fleetbench-controller", broker=broker_url, backend=broker_url)
    app.conf.update(CELERY_SETTINGS)
    app.conf.broker_connection_timeout = 5
    app.conf.broker_connection_max_retries = 3
    app.conf.task_publish_retry_policy = {"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5}
    return app


def broker_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a broker URL (one line, password masked), or None."""
    from urllib.parse import urlsplit

    from protocol.redact import redact

    try:
        scheme = urlsplit(url).scheme
    except ValueError as exc:
        return f"the broker URL {redact(url)} does not parse ({exc})"
    if scheme not in ("redis", "rediss", "unix"):
        return (f"{redact(url)} is not a broker URL: use redis://HOST:6379/0, rediss://... or unix://PATH "
                "(--broker / FLEETBENCH_BROKER_URL)")  # fmt: skip
    return None


class Dispatcher:
    def __init__(self, broker_url: str):
        problem = broker_url_problem(broker_url)
        if problem:
            raise DispatchError(problem)
        self.broker_url = broker_url
        self.app = celery_client(broker_url)
        self.redis = redis.Redis.from_url(broker_url, socket_timeout=5, socket_connect_timeout=5)

    def close(self) -> None:
        self.app.close()
        self.redis.close()

    def live_agents(self) -> list[AgentInventory]:
        """Agents whose heartbeat has not expired, by agent id."""
        agents = []
        try:
            for key in self.redis.scan_iter(match=AGENT_KEY_PREFIX + "*", count=500):
                raw = self.redis.get(key)
                if raw is None:  # expired between scan and get
                    continue
                try:
                    agents.append(AgentInventory.from_json(raw))
                except ContractError:
                    continue  # an agent of another schema version; it cannot take our jobs
        except redis.exceptions.RedisError as exc:
            raise DispatchError(self._broker_down(exc)) from None
        return sorted(agents, key=lambda a: a.agent_id)

    def record_live_agents(self, store) -> set[str]:
        """Store the newest inventory of every live agent (what `fleetbench fleet` lists); returns their ids."""
        inventories = self.live_agents()
        for inv in inventories:
            store.record_agent(inv)
        return {inv.agent_id for inv in inventories}

    def agents_offering(self, capability: str) -> list[str]:
        """Ids of live agents offering ``capability``."""
        return [a.agent_id for a in self.live_agents() if capability in offered(a)]

    def ping(self) -> None:
        """Fail fast, with advice, when the broker does not answer."""
        try:
            self.redis.ping()
        except redis.exceptions.RedisError as exc:
            raise DispatchError(self._broker_down(exc)) from None

    def submit(self, spec: JobSpec, queue: str | None = None):
        """Send ``spec`` to its capability's queue (or ``queue``, e.g. a pinned agent's)."""
        self.ping()  # Celery's own reconnect loop would retry for ~20 s, then fail obscurely
        try:
            return self._publish(spec, queue)
        except OperationalError as exc:
            raise DispatchError(self._broker_down(exc)) from None

    def submit_many(self, sends: list[tuple[JobSpec, str | None]]) -> int:
        """:meth:`submit` for many (spec, queue), in order: one ping and one producer for all of them.
        Returns how many went; a lost broker is a DispatchError (those before it went)."""
        if not sends:
            return 0
        self.ping()
        try:
            with self.app.producer_or_acquire() as producer:
                for spec, queue in sends:
                    self._publish(spec, queue, producer)
        except OperationalError as exc:
            raise DispatchError(self._broker_down(exc)) from None
        return len(sends)

    def _publish(self, spec: JobSpec, queue: str | None, producer=None):
        return self.app.send_task(BENCHMARK_TASK, args=[spec.to_dict()], queue=queue or queue_for(spec.capability),
                                  task_id=f"{spec.job_id}.{spec.attempt}", producer=producer)  # fmt: skip

    def convert(
        self, job: dict, on_event: Callable[[dict], None] = lambda e: None, check: Callable[[], None] = lambda: None
    ) -> dict:
        """Send a conversion job to the converter workers and wait for it."""
        self.ping()
        try:
            result = self.app.send_task(CONVERT_TASK, args=[job], queue=CONVERT_QUEUE)
        except OperationalError as exc:
            raise DispatchError(self._broker_down(exc)) from None
        return wait_conversion(self.app, result, on_event=on_event, check=check)

    def _broker_down(self, exc: Exception) -> str:
        from protocol.redact import redact

        return redact(
            f"cannot reach the broker at {self.broker_url} ({exc}); start Redis or pass the right --broker URL"
        )


def wait_conversion(
    app: Celery,
    result,
    on_event: Callable[[dict], None] = lambda e: None,
    check: Callable[[], None] = lambda: None,
    timeout_s: float = 3600.0,
    poll_s: float = 0.2,
) -> dict:
    """Wait for a ``fleetbench.convert`` task, passing each new progress event to ``on_event``."""
    seen = 0
    finished: set[str] = set()  # variants whose done/failed event was passed on
    told = {"reference": False}
    deadline = time.monotonic() + timeout_s

    def forward(event: dict) -> None:
        if event.get("event") in ("done", "failed"):
            finished.add(event["variant"])
        elif event.get("event") == "reference":
            told["reference"] = True
        on_event(event)

    while True:
        try:
            state, info = result.state, result.info
        except OperationalError as exc:
            raise DispatchError(f"lost the broker while converting ({exc})") from None
        if state == "PROGRESS" and isinstance(info, dict):
            events = info.get("events", [])
            for event in events[seen:]:
                forward(event)
            seen = max(seen, len(events))
        if state == "SUCCESS":
            out = result.get(timeout=5)
            # the task may finish between two polls: report what the last poll missed, the reference outputs
            # first (each variant's jobs take the reference known when its "done" arrives)
            if out.get("reference") and not told["reference"]:
                forward({"event": "reference", "artifact": out["reference"]})
            for name, v in out.get("variants", {}).items():
                if name not in finished:
                    forward({"event": "done" if v["status"] == "converted" else "failed", "variant": name, **v})
            return out
        if state in ("FAILURE", "REVOKED"):
            raise DispatchError(f"the conversion task failed in the converter worker: {info!r}")
        check()
        if time.monotonic() > deadline:
            raise DispatchError(
                f"no conversion result within {timeout_s:g} s; is a converter worker running (`fleetbench worker`)?"
            )
        time.sleep(poll_s)
