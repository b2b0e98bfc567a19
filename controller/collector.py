"""Moves agents' outcomes from the broker's results list into the SQL store.

Reliable-queue pattern: an item is moved to this collector's processing list
(``LMOVE``), stored (idempotently, :meth:`Store.ingest`), and only then removed.
A collector that dies in between finds the item there on its next start; a
database that is down leaves the item there until it is back.
"""

from __future__ import annotations

import logging
from collections import Counter

import redis

from controller.store import Store, StoreError
from protocol import RESULTS_KEY, ContractError, JobOutcome

log = logging.getLogger("fleetbench.collector")
BAD_KEY = RESULTS_KEY + ":unreadable"


class Collector:
    def __init__(self, redis_client: redis.Redis, store: Store, name: str = "main", on_result=None):
        self.redis = redis_client
        self.store = store
        #: called with (outcome, what ingest did) after each stored outcome
        self.on_result = on_result or (lambda outcome, what: None)
        self.processing = f"{RESULTS_KEY}:processing:{name}"

    def drain(self, limit: int = 10_000) -> Counter:
        """Store what is waiting; returns {what ingest did: count}. Raises StoreError while the database is down."""
        done: Counter = Counter()
        for raw in self.redis.lrange(self.processing, 0, -1):  # left over from a crash or a database outage
            done[self._store(raw)] += 1
        for _ in range(limit):
            raw = self.redis.lmove(RESULTS_KEY, self.processing, "LEFT", "RIGHT")
            if raw is None:
                break
            done[self._store(raw)] += 1
        return done

    def _store(self, raw: bytes) -> str:
        try:
            outcome = JobOutcome.from_json(raw)
        except ContractError as exc:
            log.error("unreadable result moved to %s: %s", BAD_KEY, exc)
            self.redis.rpush(BAD_KEY, raw)
            self.redis.lrem(self.processing, 1, raw)
            return "unreadable"
        try:
            what = self.store.ingest(outcome)
        except StoreError:
            raise  # stays in the processing list; the next drain tries again
        self.redis.lrem(self.processing, 1, raw)
        self.on_result(outcome, what)
        return what

    def pending(self) -> int:
        return int(self.redis.llen(RESULTS_KEY)) + int(self.redis.llen(self.processing))
