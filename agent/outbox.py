"""The agent's outbox: every outcome is written to a local SQLite file before
the job's message is acknowledged, then relayed to the controller with retries.

Relay: the outcome (a :class:`protocol.JobOutcome` as JSON) is pushed onto the
broker's Redis list :data:`protocol.RESULTS_KEY`; the controller's collector
moves it to its own processing list, stores it (idempotently), and only then
removes it. So a result survives a stopped controller (it waits in the list),
a stopped database (the collector keeps it and retries), a stopped broker (it
waits here), and an agent restart (this file is on disk; the relay starts
with the agent). Delivery is at least once; the store makes it exactly once.

Standard library only (sqlite3) plus redis, which Celery brings.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from pathlib import Path

from protocol import RESULTS_KEY, JobOutcome
from protocol.private import create_private

log = logging.getLogger("fleetbench.agent.outbox")

STATE_ENV = "FLEETBENCH_AGENT_STATE"


def default_path(agent_id: str) -> Path:
    """``$FLEETBENCH_AGENT_STATE/<agent_id>/outbox.db`` (default ``~/.local/share/fleetbench-agent``)."""
    root = os.environ.get(STATE_ENV) or Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "fleetbench-agent"
    return Path(root) / agent_id / "outbox.db"


class Outbox:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        create_private(self.path)  # results are the lab's own (SQLite keeps the mode for its -wal and -shm files)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        with contextlib.closing(self._connect()) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS outbox ("
                " id INTEGER PRIMARY KEY AUTOINCREMENT,"
                " job_id TEXT NOT NULL, attempt INTEGER NOT NULL, body TEXT NOT NULL,"
                " created_at TEXT DEFAULT CURRENT_TIMESTAMP,"
                " UNIQUE (job_id, attempt))"
            )
            db.execute(  # rows the relay cannot send (unreadable on disk), kept to look at
                "CREATE TABLE IF NOT EXISTS dead ("
                " id INTEGER PRIMARY KEY, body TEXT NOT NULL, reason TEXT NOT NULL,"
                " created_at TEXT DEFAULT CURRENT_TIMESTAMP)"
            )

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA synchronous=FULL")  # on disk before the message is acknowledged
        return db

    @property
    def _db(self) -> sqlite3.Connection:
        """The one connection (opened on first use, in this process: a forked child opens its own)."""
        if self._conn is None or self._pid != os.getpid():
            self._conn, self._pid = self._connect(), os.getpid()
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def put(self, outcome: JobOutcome) -> tuple[int, str] | None:
        """Keep ``outcome`` until relayed (a second copy of the same job attempt is ignored); returns its
        row (id, body), or None if that attempt was already kept."""
        body = outcome.to_json(samples="text")
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO outbox (job_id, attempt, body) VALUES (?, ?, ?)",
                (outcome.job_id, outcome.attempt, body),
            )
            return (cur.lastrowid, body) if cur.rowcount else None

    def pending(self, limit: int = 100) -> list[tuple[int, str]]:
        with self._lock:
            return list(self._db.execute("SELECT id, body FROM outbox ORDER BY id LIMIT ?", (limit,)))

    def remove(self, row_id: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM outbox WHERE id = ?", (row_id,))

    def set_aside(self, row_id: int, reason: str) -> None:
        """Move a row the relay cannot send to the ``dead`` table, so the rows behind it go on."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("INSERT INTO dead (id, body, reason) SELECT id, body, ? FROM outbox WHERE id = ?", (reason, row_id))
                db.execute("DELETE FROM outbox WHERE id = ?", (row_id,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def dead(self) -> list[tuple[str, str]]:
        """(reason, body) of every row set aside, oldest first."""
        with self._lock:
            return list(self._db.execute("SELECT reason, body FROM dead ORDER BY id"))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM outbox").fetchone()[0]


class Relay:
    """A thread that pushes the outbox to the broker's results list, retrying while it is down."""

    def __init__(self, outbox: Outbox, broker, interval_s: float = 1.0, max_backoff_s: float = 15.0):
        """``broker``: a URL, or the agent's shared client (agent.presence.broker_client)."""
        import redis

        self.outbox = outbox
        self.redis = redis.Redis.from_url(broker, socket_timeout=5, socket_connect_timeout=5) if isinstance(broker, str) else broker
        self.interval_s, self.max_backoff_s = interval_s, max_backoff_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._sending = threading.Lock()  # the task's push and the thread's relay never send one row twice
        self._thread = threading.Thread(target=self._loop, name="outbox-relay", daemon=True)

    def start(self) -> "Relay":
        self._thread.start()
        return self

    def kick(self) -> None:
        self._wake.set()

    def push(self, row: tuple[int, str] | None) -> None:
        """Send one row just put in the outbox, now, from the caller's thread (no wait for the relay
        thread); if the broker does not take it, the relay thread retries it."""
        import redis

        if row is None:
            return
        if not self._sending.acquire(blocking=False):  # the relay thread is sending: it takes this row too
            self.kick()
            return
        try:
            self._send(*row)
        except (redis.exceptions.RedisError, OSError):
            self.kick()
        finally:
            self._sending.release()

    def stop(self, flush_timeout_s: float = 5.0) -> None:
        """Try once more to relay what is left, then stop (what is left stays on disk)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=flush_timeout_s)

    def relay_once(self) -> int:
        """Push every pending outcome; returns how many went. Raises on a broker error."""
        from protocol import ContractError

        sent = 0
        with self._sending:
            for row_id, body in self.outbox.pending():
                try:
                    JobOutcome.from_json(body)
                except ContractError as exc:  # damaged on disk: set aside, the rest go on
                    self.outbox.set_aside(row_id, str(exc))
                    log.error("outbox row %d is unreadable (%s); set aside in %s (table dead)", row_id, exc, self.outbox.path)
                    continue
                self._send(row_id, body)
                sent += 1
        return sent

    def _send(self, row_id: int, body: str) -> None:
        self.redis.rpush(RESULTS_KEY, body)
        self.outbox.remove(row_id)  # a crash between these two lines re-sends: the store dedups

    def _loop(self) -> None:
        import redis

        backoff = self.interval_s
        while True:
            try:
                n = self.relay_once()
                if n:
                    log.info("relayed %d result(s) to the controller", n)
                backoff = self.interval_s
            except (redis.exceptions.RedisError, OSError) as exc:
                log.warning("broker unreachable (%s); %d result(s) kept in %s, retrying in %.0f s",
                            exc, len(self.outbox), self.outbox.path, backoff)  # fmt: skip
                backoff = min(backoff * 2, self.max_backoff_s)
            if self._stop.is_set():
                return
            self._wake.wait(backoff)
            self._wake.clear()
