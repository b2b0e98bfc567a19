"""The agent's heartbeat: its inventory, kept fresh in the broker's Redis (protocol/presence.py).

A background thread beats every HEARTBEAT_S, so it keeps beating while the worker's main thread runs a job
(the solo pool cannot answer Celery's control messages then). A beat is one call: it scores the agent's
heartbeat and writes its inventory only when it changed.
"""

from __future__ import annotations

import dataclasses
import threading

import redis

from protocol import HEARTBEAT_S, AgentInventory
from protocol.presence import BEAT_SCRIPT, FLEET_KEYS, LEAVE_SCRIPT


def broker_client(broker_url: str, name: str = "fleetbench-agent") -> redis.Redis:
    """One connection to the broker, for one command at a time: the agent's fences, starts and outbox relay
    share one, and its heartbeat has its own (so a beat never waits behind a large result's push). With
    Celery's two, an agent holds four (docs/fleet-setup.md, "Sizing the broker and the database")."""
    pool = redis.BlockingConnectionPool.from_url(broker_url, max_connections=1, timeout=20, socket_timeout=5,
                                                 socket_connect_timeout=5, socket_keepalive=True,
                                                 client_name=name)  # fmt: skip
    return redis.Redis(connection_pool=pool)


def stable(inventory: AgentInventory) -> str:
    """The inventory as the broker keeps it: the same text at every beat (its heartbeat time is the beat's score)."""
    return dataclasses.replace(inventory, heartbeat_at=inventory.started_at).to_json()


class Heartbeat(threading.Thread):
    def __init__(self, broker: str | redis.Redis, inventory: AgentInventory):
        super().__init__(name="fleetbench-heartbeat", daemon=True)
        self._own = isinstance(broker, str)
        self.client = broker_client(broker, "fleetbench-heartbeat") if isinstance(broker, str) else broker
        self.inventory = inventory
        self._beat = self.client.register_script(BEAT_SCRIPT)
        self._leave = self.client.register_script(LEAVE_SCRIPT)
        self._payload = stable(inventory)
        self._stop_event = threading.Event()

    def beat(self) -> bool:
        """One heartbeat; True when the broker took it as a join or a change of inventory."""
        return bool(self._beat(keys=FLEET_KEYS, args=[self.inventory.agent_id, self._payload]))

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.beat()
            except redis.exceptions.RedisError:
                pass  # the broker is down; the agent's beat ages and the controller sees it as gone
            self._stop_event.wait(HEARTBEAT_S)

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout=10)  # a beat in flight must not re-add the agent after it left
        try:
            self._leave(keys=FLEET_KEYS, args=[self.inventory.agent_id])
        except redis.exceptions.RedisError:
            pass
        if self._own:
            self.client.close()
