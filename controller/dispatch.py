"""Sending benchmark jobs to agents through Celery.

The controller never imports agent code: it sends the task by name to the
queue of the job's capability. Outcomes come back one way only: through each
agent's outbox onto the results list, where the collector stores them (the
scheduler reads no Celery result for an outcome; it asks the result backend
only whether an attempt has started).
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Callable, Iterator

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from controller.config import FLEET_RECORD_S
from controller.errors import DispatchError
from protocol import (
    BENCHMARK_TASK,
    CELERY_SETTINGS,
    CONVERT_QUEUE,
    CONVERT_TASK,
    AgentInventory,
    JobSpec,
    queue_for,
)


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
        self.redis = redis.Redis.from_url(broker_url, socket_timeout=5, socket_connect_timeout=5, socket_keepalive=True)
        self._lock = threading.RLock()  # the scheduler's thread and the API's requests share the mirror
        self._presence = None
        self._touched = float("-inf")

    def close(self) -> None:
        self.app.close()
        self.redis.close()

    @property
    def presence(self):
        """The live agents, mirrored from the broker (controller.fleet.presence): made on first use."""
        from controller.fleet.presence import RedisPresence

        with self._lock:
            if self._presence is None:
                self._presence = RedisPresence(self.redis)
            return self._presence

    @contextlib.contextmanager
    def _synced(self) -> Iterator:
        """The mirror of the live agents (a FleetMirror), brought up to date (one round trip) and read under the
        lock: the API's requests and the scheduler's thread both sync it."""
        with self._lock:
            try:
                mirror = self.presence.sync()
            except redis.exceptions.RedisError as exc:
                raise DispatchError(self._broker_down(exc)) from None
            yield mirror

    def presence_snapshot(self, since: int | None = None):
        """Sync, then the fleet taken whole (a Snapshot: its generation, view and changes since ``since``)."""
        with self._synced() as mirror:
            return mirror.snapshot(since)

    def live_agents(self) -> list[AgentInventory]:
        """Agents whose heartbeat has not expired, by agent id."""
        with self._synced() as mirror:
            return sorted(mirror.agents.values(), key=lambda a: a.agent_id)

    def online_counts(self) -> dict[str, int]:
        """How many live agents offer each capability (and each @ machine)."""
        with self._synced() as mirror:
            return {name: len(ids) for name, ids in mirror.by_capability.items()}

    def record_live_agents(self, store, touch_every_s: float = FLEET_RECORD_S) -> set[str]:
        """Keep the store's agents (what `fleetbench fleet` and the Fleet page list) up to date; returns the live ids.

        An inventory is written when it changes (an agent joins, or comes back with other capabilities), and
        every ``touch_every_s`` the live agents' last-seen time is written for all of them in a few statements,
        so a fleet of 10,000 costs a handful of SQL statements per interval, not 10,000."""
        with self._synced() as mirror:
            changed = self.presence.take_changed()
            live = set(mirror.agents)
            now, due = self.presence.now, time.monotonic() - self._touched >= touch_every_s
        try:
            store.record_agents([inv for inv in changed.values() if inv is not None])
            if due:
                store.touch_agents(live, now)
                self._touched = time.monotonic()
        except BaseException:
            with self._lock:  # written at the next call; a newer change of the same agent wins
                self.presence.changed = {**changed, **self.presence.changed}
            raise
        return live

    def agents_offering(self, capability: str) -> list[str]:
        """Ids of live agents offering ``capability``."""
        with self._synced() as mirror:
            return sorted(mirror.offering(capability))

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
