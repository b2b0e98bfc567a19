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

from controller.store import Store
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

    def drain(self, limit: int = 100_000, block_s: float = 0.0, batch: int = 500) -> Counter:
        """Store what is waiting, in batches; returns {what ingest did: count}.

        Raises StoreError while the database is down (what was taken stays in the processing list).
        ``block_s`` > 0 waits up to that long for the first outcome (instead of the caller polling).
        """
        done: Counter = Counter()
        leftover = self.redis.lrange(self.processing, 0, -1)  # from a crash or a database outage
        if leftover:
            done.update(self._store_batch(leftover))
        if block_s > 0 and not done:
            raw = self.redis.blmove(RESULTS_KEY, self.processing, block_s, "LEFT", "RIGHT")
            if raw is not None:
                done.update(self._store_batch([raw]))
        while sum(done.values()) < limit:
            pipe = self.redis.pipeline(transaction=False)
            for _ in range(batch):
                pipe.lmove(RESULTS_KEY, self.processing, "LEFT", "RIGHT")
            raws = [r for r in pipe.execute() if r is not None]
            if not raws:
                break
            done.update(self._store_batch(raws))
        return done

    def _store_batch(self, raws: list[bytes]) -> Counter:
        outcomes, done = [], Counter()
        for raw in raws:
            try:
                outcomes.append(JobOutcome.from_json(raw))
            except ContractError as exc:
                log.error("unreadable result moved to %s: %s", BAD_KEY, exc)
                self.redis.rpush(BAD_KEY, raw)
                done["unreadable"] += 1
        answers = self.store.ingest_many(outcomes) if outcomes else []  # StoreError: all stay in processing
        self.redis.delete(self.processing)  # everything in it was this batch, now stored
        for outcome, what in zip(outcomes, answers):
            done[what] += 1
            self.on_result(outcome, what)
        return done

    def pending(self) -> int:
        return int(self.redis.llen(RESULTS_KEY)) + int(self.redis.llen(self.processing))
