"""Agents as last seen: their newest inventory and heartbeat."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError

from controller.store.base import StoreBase, _parse_ts, _write_error, as_utc
from controller.store.models import AgentRow
from protocol import AgentInventory


class AgentsStore(StoreBase):
    def record_agent(self, inventory: AgentInventory) -> None:
        """Keep the newest inventory of an agent (an older heartbeat never overwrites a newer one)."""
        beat = _parse_ts(inventory.heartbeat_at)
        for _ in range(2):  # a concurrent first insert of the same agent: retry as an update
            try:
                with self._write() as session:
                    row = session.get(AgentRow, inventory.agent_id)
                    if row is None:
                        session.add(AgentRow(agent_id=inventory.agent_id, hostname=inventory.host.hostname,
                                             inventory=inventory.to_dict(), first_seen=beat, last_heartbeat=beat))  # fmt: skip
                    elif as_utc(row.last_heartbeat) < beat:
                        row.inventory, row.hostname, row.last_heartbeat = (
                            inventory.to_dict(),
                            inventory.host.hostname,
                            beat,
                        )
                return
            except IntegrityError:
                continue
            except OperationalError as exc:
                raise _write_error(self.url, exc) from None

    def agents(self) -> list[AgentRow]:
        with self._session() as session:
            return list(session.scalars(select(AgentRow).order_by(AgentRow.agent_id)))

    def agent_capabilities(self) -> set[str]:
        """Every capability an agent has shown (as last recorded)."""
        return {c["name"] for row in self.agents() for c in row.inventory["capabilities"]}
