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
from protocol.presence import FLEET_BEATS, FLEET_INVENTORIES, FLEET_KEYS, FLEET_SEQ, HEARTBEAT_TTL_S, SYNC_SCRIPT

#: changes a mirror remembers; a reader further behind than this looks at everything again
LOG_KEEP = 100_000
#: agents expired or reported per sync call (a sync that is behind calls again at once)
SYNC_BATCH = 5_000


@dataclass(frozen=True)
class Changes:
    """What changed in the fleet between two generations: agent id -> the capabilities it stopped offering
    (``left``; an agent gone for good is in it too, with all it offered, even nothing) and those it started
    to offer (``joined``)."""

    left: dict[str, frozenset[str]]
    joined: dict[str, frozenset[str]]


@dataclass(frozen=True)
class Snapshot:
    """The fleet at one moment, taken whole (a tick judges every job by the same one): its generation, the
    live agents as a FleetView, and what changed since the generation asked about (None: look at everything)."""

    generation: int
    view: FleetView
    changes: Changes | None


class FleetMirror:
    def __init__(self, keep: int = LOG_KEEP):
        self.agents: dict[str, AgentInventory] = {}
        #: agent id -> what it offers (its capabilities, and each @ its machine: protocol.machines.offered)
        self.offers: dict[str, frozenset[str]] = {}
        #: capability -> the live agents offering it
        self.by_capability: dict[str, set[str]] = {}
        self.generation = 0
        #: (generation, agent id, offered before, offered after, live after)
        self._log: deque[tuple[int, str, frozenset[str], frozenset[str], bool]] = deque(maxlen=keep)
        self._view: tuple[int, FleetView] | None = None

    def apply(self, agent_id: str, inventory: AgentInventory | None) -> bool:
        """An agent joined or changed (``inventory``), or left (None); True when it came, went, or what it
        offers changed."""
        was = agent_id in self.agents
        before = self.offers.get(agent_id, frozenset())
        after = frozenset(offered(inventory)) if inventory is not None else frozenset()
        if inventory is None:
            self.agents.pop(agent_id, None)
            self.offers.pop(agent_id, None)
        else:
            self.agents[agent_id] = inventory
            self.offers[agent_id] = after
        if before == after and was == (inventory is not None):
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
        self._log.append((self.generation, agent_id, before, after, inventory is not None))
        return True

    def changes_since(self, generation: int) -> Changes | None:
        """What came and went after ``generation``; None when the log no longer reaches back that far."""
        if generation >= self.generation:
            return Changes({}, {})
        if not self._log or self._log[0][0] > generation + 1:
            return None
        left: dict[str, frozenset[str]] = {}
        joined: dict[str, frozenset[str]] = {}
        for gen, agent_id, before, after, live in reversed(self._log):  # newest first: stop at the reader's generation
            if gen <= generation:
                break
            if before - after or not live:
                left[agent_id] = left.get(agent_id, frozenset()) | (before - after)
            if after - before:
                joined[agent_id] = joined.get(agent_id, frozenset()) | (after - before)
        return Changes(left, joined)

    def view(self) -> FleetView:
        """The live agents as a :class:`FleetView` (made again only after a change: a copy of what each offers)."""
        if self._view is None or self._view[0] != self.generation:
            self._view = (self.generation, FleetView(dict(self.offers), frozenset(self.by_capability)))
        return self._view[1]

    def snapshot(self, since: int | None = None) -> Snapshot:
        """The view and the changes since ``since`` (None: none asked), taken together."""
        return Snapshot(self.generation, self.view(), self.changes_since(since) if since is not None else None)

    def offering(self, capability: str) -> set[str]:
        return set(self.by_capability.get(capability, ()))


class RedisPresence:
    """A :class:`FleetMirror` kept in step with the broker: :meth:`sync` is one round trip (more only while
    it catches up on more than :data:`SYNC_BATCH` changes). The first sync, and one after the broker lost
    its data or after more than KEEP_CHANGES changes were missed, reads the fleet itself instead."""

    def __init__(self, client, ttl_s: float = HEARTBEAT_TTL_S, batch: int = SYNC_BATCH):
        self.client = client
        self.ttl_s, self.batch = ttl_s, batch
        self.mirror = FleetMirror()
        self.seq = 0
        self.epoch: str | None = None
        #: the broker's time at the last sync
        self.now: dt.datetime | None = None
        #: agent id -> its inventory as of its last change here, None when it left (for the store: written only then)
        self.changed: dict[str, AgentInventory | None] = {}
        self._sync = client.register_script(SYNC_SCRIPT)
        #: round trips made by the last sync
        self.calls = 0

    def sync(self) -> FleetMirror:
        """Expire the agents whose heartbeat is older than the TTL, and take in what changed since the last sync."""
        self.calls = 0
        while True:
            now, seq, epoch, oldest, items = self._sync(keys=FLEET_KEYS, args=[self.seq, self.ttl_s, self.batch])
            self.calls += 1
            seq, epoch = int(seq), _text(epoch)
            self.now = dt.datetime.fromtimestamp(float(now), dt.timezone.utc)
            if epoch != self.epoch or self.seq < int(float(oldest)) or seq < self.seq:
                self._reload(epoch)
                continue  # then what changed while it read
            last = self.seq
            for i in range(0, len(items), 4):
                agent_id, at, raw, beat = items[i : i + 4]
                last = max(last, int(float(at)))
                self._take(_text(agent_id), self._inventory(raw, beat))
            self.seq = max(last, self.seq)
            if len(items) < 4 * self.batch or self.seq >= seq:
                return self.mirror

    def _reload(self, epoch: str) -> None:
        """Read every live agent from the broker (the mark first: what changes meanwhile is read again after)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.get(FLEET_SEQ)
        pipe.zrange(FLEET_BEATS, 0, -1, withscores=True)
        pipe.hgetall(FLEET_INVENTORIES)
        seq, beats, inventories = pipe.execute()
        self.calls += 1
        current = {_text(a): self._inventory(inventories.get(a), score) for a, score in beats}
        for agent_id in set(self.mirror.agents) - set(current):
            self._take(agent_id, None)
        for agent_id, inv in current.items():
            self._take(agent_id, inv)
        self.seq, self.epoch = int(seq or 0), epoch

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
        had = self.mirror.agents.get(agent_id)
        if inv is not None and had is not None and dataclasses.replace(inv, heartbeat_at=had.heartbeat_at) == had:
            return  # read again (a reload): nothing changed but its beat
        self.mirror.apply(agent_id, inv)
        if inv is not None or had is not None:
            self.changed[agent_id] = inv

    def take_changed(self) -> dict[str, AgentInventory | None]:
        """The agents that joined, changed or left since the last call (what the store must write)."""
        out, self.changed = self.changed, {}
        return out


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
