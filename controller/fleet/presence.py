"""The live agents as the controller knows them: a mirror of the broker's presence keys, kept by changes.

:class:`FleetMirror` holds the live agents, what each offers and an index from capability to agents, and
is updated one agent at a time (:meth:`FleetMirror.apply`), so nothing in a tick is proportional to the
fleet's size. Every change is logged with a generation number: a reader that remembers the generation it
last saw asks :meth:`FleetMirror.changes_since` what came and what went since (the scheduler looks at only
the jobs those changes touch). :class:`RedisPresence` keeps a mirror in step with the broker in one round
trip per sync (protocol/presence.py's SYNC_SCRIPT); ``MemoryFleet`` feeds one directly.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import deque
from dataclasses import dataclass

from controller.jobs import FleetView
from protocol import AgentInventory, ContractError
from protocol.machines import offered
from protocol.presence import FLEET_KEYS, HEARTBEAT_TTL_S, SYNC_SCRIPT

#: changes a mirror remembers; a reader further behind than this looks at everything again
LOG_KEEP = 100_000
#: agents expired or reported per sync call (a sync that is behind calls again at once)
SYNC_BATCH = 5_000


@dataclass(frozen=True)
class Changes:
    """What changed in the fleet between two generations: agent id -> the capabilities it stopped offering
    (``left``; an agent gone for good is also out of the mirror) and those it started to (``joined``)."""

    left: dict[str, frozenset[str]]
    joined: dict[str, frozenset[str]]

    def __bool__(self) -> bool:
        return bool(self.left or self.joined)


class FleetMirror:
    def __init__(self, keep: int = LOG_KEEP):
        self.agents: dict[str, AgentInventory] = {}
        #: agent id -> what it offers (its capabilities, and each @ its machine: protocol.machines.offered)
        self.offers: dict[str, frozenset[str]] = {}
        #: capability -> the live agents offering it
        self.by_capability: dict[str, set[str]] = {}
        self.generation = 0
        self._log: deque[tuple[int, str, frozenset[str], frozenset[str]]] = deque(maxlen=keep)
        self._view: tuple[int, FleetView] | None = None

    def apply(self, agent_id: str, inventory: AgentInventory | None) -> bool:
        """An agent joined or changed (``inventory``), or left (None); True when what it offers changed."""
        before = self.offers.get(agent_id, frozenset())
        after = frozenset(offered(inventory)) if inventory is not None else frozenset()
        if inventory is None:
            self.agents.pop(agent_id, None)
            self.offers.pop(agent_id, None)
        else:
            self.agents[agent_id] = inventory
            self.offers[agent_id] = after
        if before == after:
            return False
        for cap in before - after:
            holders = self.by_capability.get(cap)
            if holders is not None:
                holders.discard(agent_id)
                if not holders:
                    del self.by_capability[cap]
        for cap in after - before:
            self.by_capability.setdefault(cap, set()).add(agent_id)
        self.generation += 1
        self._log.append((self.generation, agent_id, before, after))
        return True

    def changes_since(self, generation: int) -> Changes | None:
        """What came and went after ``generation``; None when the log no longer reaches back that far."""
        if generation >= self.generation:
            return Changes({}, {})
        if not self._log or self._log[0][0] > generation + 1:
            return None
        left: dict[str, frozenset[str]] = {}
        joined: dict[str, frozenset[str]] = {}
        for gen, agent_id, before, after in reversed(self._log):  # newest first: stop at the reader's generation
            if gen <= generation:
                break
            if before - after:
                left[agent_id] = left.get(agent_id, frozenset()) | (before - after)
            if after - before:
                joined[agent_id] = joined.get(agent_id, frozenset()) | (after - before)
        return Changes(left, joined)

    def view(self) -> FleetView:
        """The live agents as a :class:`FleetView` (made again only after a change)."""
        if self._view is None or self._view[0] != self.generation:
            self._view = (self.generation, FleetView(dict(self.offers), frozenset(self.by_capability)))
        return self._view[1]

    def offering(self, capability: str) -> set[str]:
        return set(self.by_capability.get(capability, ()))


class RedisPresence:
    """A :class:`FleetMirror` kept in step with the broker: :meth:`sync` is one round trip (more only while
    it catches up, e.g. at start with a fleet of more than :data:`SYNC_BATCH` agents)."""

    def __init__(self, client, ttl_s: float = HEARTBEAT_TTL_S, batch: int = SYNC_BATCH):
        self.client = client
        self.ttl_s, self.batch = ttl_s, batch
        self.mirror = FleetMirror()
        self.seq = 0
        #: the broker's time at the last sync
        self.now: dt.datetime | None = None
        #: agent id -> when its inventory last changed here (for the store: written only then)
        self.changed: dict[str, AgentInventory | None] = {}
        self._sync = client.register_script(SYNC_SCRIPT)
        #: round trips made by the last sync
        self.calls = 0

    def sync(self) -> FleetMirror:
        """Expire the agents whose heartbeat is older than the TTL, and take in what changed since the last sync."""
        self.calls = 0
        while True:
            now, seq, items = self._sync(keys=FLEET_KEYS, args=[self.seq, self.ttl_s, self.batch])
            self.calls += 1
            seq = int(seq)
            self.now = dt.datetime.fromtimestamp(float(now), dt.timezone.utc)
            if seq < self.seq:  # the broker lost its data (a restart without persistence): start again
                self.seq = 0
                for agent_id in list(self.mirror.agents):
                    self._take(agent_id, None)
                continue
            last = self.seq
            for i in range(0, len(items), 4):
                agent_id, at, raw, beat = items[i : i + 4]
                agent_id, last = _text(agent_id), max(last, int(float(at)))
                self._take(agent_id, self._inventory(raw, beat))
            self.seq = max(last, self.seq)
            if len(items) < 4 * self.batch or self.seq >= seq:
                return self.mirror

    def _inventory(self, raw, beat) -> AgentInventory | None:
        if raw is None:
            return None
        try:
            inv = AgentInventory.from_json(raw)
        except ContractError:
            return None  # an agent of another schema version: it cannot take this controller's jobs
        if beat is not None:
            when = dt.datetime.fromtimestamp(float(beat), dt.timezone.utc)
            inv = dataclasses.replace(inv, heartbeat_at=when.isoformat())
        return inv

    def _take(self, agent_id: str, inv: AgentInventory | None) -> None:
        had = agent_id in self.mirror.agents
        self.mirror.apply(agent_id, inv)
        if inv is not None or had:
            self.changed[agent_id] = inv

    def take_changed(self) -> dict[str, AgentInventory | None]:
        """The agents that joined, changed or left since the last call (what the store must write)."""
        out, self.changed = self.changed, {}
        return out


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
