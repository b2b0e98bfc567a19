"""Moves agents' outcomes from the broker's results list into the SQL store.

Reliable-queue pattern: an item is moved to this collector's processing list
(``LMOVE``), stored (idempotently, :meth:`Store.ingest`), and only then removed.
A collector that dies in between finds the item there on its next start; a
database that is down leaves the item there until it is back.

A bad message is told apart from a database outage: an outcome that does not
parse, or whose record fails :meth:`ResultRecord.check_consistent`, or that the
database refuses on its own (a value too long, say), is moved to
:data:`DEAD_KEY` with the reason and counted; ingestion goes on behind it. A
database outage (:class:`StoreError`) leaves the whole batch in the processing
list, to be retried.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections import Counter

import redis
from sqlalchemy.exc import DataError

from controller.store import Store, StoreError
from protocol import RESULTS_DEAD_KEY, RESULTS_KEY, ContractError, JobOutcome, results_processing_key

log = logging.getLogger("fleetbench.collector")
#: Outcomes set aside: JSON ``{"reason", "at", "job_id", "raw"}``, oldest first.
DEAD_KEY = RESULTS_DEAD_KEY
#: How many set-aside outcomes are kept (the oldest go first).
DEAD_KEEP = 10_000
#: How much of a set-aside message is kept, in characters.
RAW_KEEP = 1_000_000
DEAD = "dead-letter"
#: What the database raises for one bad outcome, as against an outage (StoreError, retried).
REFUSED = (DataError, ContractError, ValueError, TypeError, KeyError, AttributeError, OverflowError)


def _check(raw: bytes) -> JobOutcome:
    """The outcome in ``raw``, or ContractError saying why it cannot be stored."""
    outcome = JobOutcome.from_json(raw)
    if outcome.ok and outcome.record is None:
        raise ContractError(f"outcome {outcome.job_id} says ok but carries no record")
    if outcome.record is not None:
        outcome.record.check_consistent()
        if (outcome.record.job_id, outcome.record.attempt) != (outcome.job_id, outcome.attempt):
            raise ContractError(
                f"outcome {outcome.job_id}/{outcome.attempt} carries the record of "
                f"{outcome.record.job_id}/{outcome.record.attempt}"
            )
    return outcome


def ids_of(raw: bytes | str) -> tuple[str | None, int | None]:
    """The job id and attempt of a results item that could not be stored, where it says them (else None)."""
    try:
        d = json.loads(raw)
        job_id = str(d["job_id"])[:200] if isinstance(d.get("job_id"), str) else None
        attempt = d["attempt"] if isinstance(d.get("attempt"), int) else None
    except (ValueError, AttributeError, TypeError):
        return None, None
    return job_id, attempt


def dead_letters(client: redis.Redis, limit: int = 5) -> tuple[int, list[dict]]:
    """How many outcomes were set aside, and the newest ``limit`` of them (without their raw text)."""
    count = int(client.llen(DEAD_KEY))
    newest = []
    for item in client.lrange(DEAD_KEY, -limit, -1) if limit else []:
        try:
            d = json.loads(item)
            newest.append({k: d.get(k) for k in ("at", "job_id", "reason")})
        except (ValueError, AttributeError):
            newest.append({"at": None, "job_id": None, "reason": "unreadable entry"})
    return count, newest[::-1]


class Collector:
    def __init__(self, redis_client: redis.Redis, store: Store, name: str = "main", on_result=None):
        self.redis = redis_client
        self.store = store
        #: called with (outcome, what ingest did) after each stored outcome
        self.on_result = on_result or (lambda outcome, what: None)
        #: called with (job_id, attempt, reason) for each outcome set aside (job_id/attempt None if unreadable)
        self.on_dead = lambda job_id, attempt, reason: None
        self.processing = results_processing_key(name)

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
            waiting = int(self.redis.llen(RESULTS_KEY))  # one round trip when there is nothing, not `batch` moves
            if not waiting:
                break
            pipe = self.redis.pipeline(transaction=False)
            for _ in range(min(batch, waiting)):
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
                outcomes.append((raw, _check(raw)))
            except REFUSED as exc:
                self._set_aside(raw, str(exc))
                done[DEAD] += 1
        try:
            answers = self.store.ingest_many([o for _, o in outcomes]) if outcomes else []
        except StoreError:
            raise  # the database is down: all stay in processing, retried on the next drain
        except REFUSED:  # one outcome the database refuses: find it, store the rest
            answers = []
            for raw, outcome in outcomes:
                try:
                    answers.append(self.store.ingest(outcome))
                except StoreError:
                    raise
                except REFUSED as exc:
                    self._set_aside(raw, f"the database refused it: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
                    answers.append(DEAD)
        self.redis.delete(self.processing)  # everything in it was this batch, now stored or set aside
        for (_, outcome), what in zip(outcomes, answers):
            done[what] += 1
            if what != DEAD:
                self.on_result(outcome, what)
        return done

    def _set_aside(self, raw: bytes, reason: str) -> None:
        job_id, attempt = ids_of(raw)
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        entry = json.dumps({"reason": reason, "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                            "job_id": job_id, "raw": text[:RAW_KEEP]})  # fmt: skip
        pipe = self.redis.pipeline()
        pipe.rpush(DEAD_KEY, entry)
        pipe.ltrim(DEAD_KEY, -DEAD_KEEP, -1)
        pipe.execute()
        log.error("result set aside in %s (job %s): %s", DEAD_KEY, job_id, reason)
        if job_id is not None:
            try:
                self.on_dead(job_id, attempt, reason)
            except Exception as exc:  # noqa: BLE001 - the job then waits for its agent-lost or expiry path
                log.warning("could not mark job %s after setting its result aside: %s", job_id, str(exc).splitlines()[0][:200])

    def pending(self) -> int:
        return int(self.redis.llen(RESULTS_KEY)) + int(self.redis.llen(self.processing))
