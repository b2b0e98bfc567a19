"""The agent's heartbeat: its inventory, kept fresh in the broker's Redis.

A background thread rewrites the key every HEARTBEAT_S with a TTL, so it keeps
beating while the worker's main thread runs a job (the solo pool cannot
answer Celery's control messages then).
"""

from __future__ import annotations

import threading

import redis

from protocol import AGENT_KEY_PREFIX, HEARTBEAT_S, HEARTBEAT_TTL_S, AgentInventory, utc_now


class Heartbeat(threading.Thread):
    def __init__(self, broker_url: str, inventory: AgentInventory):
        super().__init__(name="fleetbench-heartbeat", daemon=True)
        self.client = redis.Redis.from_url(broker_url, socket_timeout=5, socket_connect_timeout=5)
        self.inventory = inventory
        self.key = AGENT_KEY_PREFIX + inventory.agent_id
        self._stop_event = threading.Event()

    def beat(self) -> None:
        inv = AgentInventory(
            agent_id=self.inventory.agent_id,
            host=self.inventory.host,
            capabilities=self.inventory.capabilities,
            started_at=self.inventory.started_at,
            heartbeat_at=utc_now(),
        )
        self.client.set(self.key, inv.to_json(), ex=HEARTBEAT_TTL_S)

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.beat()
            except redis.exceptions.RedisError:
                pass  # the broker is down; the key expires and the controller sees the agent as gone
            self._stop_event.wait(HEARTBEAT_S)

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout=10)  # a beat in flight must not re-create the key after the delete
        try:
            self.client.delete(self.key)
        except redis.exceptions.RedisError:
            pass
        self.client.close()
