"""Agents as last seen: their newest inventory and heartbeat."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from controller.store.base import StoreBase, _in_parts, _parse_ts, _write_error, as_utc
from controller.store.models import AgentRow
from protocol import AgentInventory


class AgentsStore(StoreBase):
    def record_agent(self, inventory: AgentInventory) -> None:
        """Keep the newest inventory of an agent (an older heartbeat never overwrites a newer one)."""
        self.record_agents([inventory])

    def record_agents(self, inventories: list[AgentInventory]) -> None:
        """:meth:`record_agent` for many, in one transaction (a statement per 500 agents to find them)."""
        if not inventories:
            return
        newest: dict[str, AgentInventory] = {}
        for inv in inventories:
            if inv.agent_id not in newest or _parse_ts(newest[inv.agent_id].heartbeat_at) < _parse_ts(inv.heartbeat_at):
                newest[inv.agent_id] = inv
        for _ in range(2):  # a concurrent first insert of the same agent: retry, as an update
            try:
                with self._write() as session:
                    for part in _in_parts(newest):
                        rows = {r.agent_id: r for r in session.scalars(select(AgentRow).where(AgentRow.agent_id.in_(part)))}
                        for agent_id in part:
                            inv, row = newest[agent_id], rows.get(agent_id)
                            beat = _parse_ts(inv.heartbeat_at)
                            if row is None:
                                session.add(AgentRow(agent_id=agent_id, hostname=inv.host.hostname, inventory=inv.to_dict(),
                                                     first_seen=beat, last_heartbeat=beat))  # fmt: skip
                            elif as_utc(row.last_heartbeat) <= beat:
                                row.inventory, row.hostname, row.last_heartbeat = inv.to_dict(), inv.host.hostname, beat
                return
            except IntegrityError:
                continue
            except OperationalError as exc:
                raise _write_error(self.url, exc) from None

    def touch_agents(self, agent_ids, when: dt.datetime) -> None:
        """The agents ``agent_ids`` were live at ``when``: their last heartbeat, in one statement per 500."""
        try:
            with self._write() as session:
                for part in _in_parts(sorted(agent_ids)):
                    session.execute(update(AgentRow).where(AgentRow.agent_id.in_(part), AgentRow.last_heartbeat < when)
                                    .values(last_heartbeat=when).execution_options(synchronize_session=False))  # fmt: skip
        except OperationalError as exc:
            raise _write_error(self.url, exc) from None

    def agents(self) -> list[AgentRow]:
        with self._session() as session:
            return list(session.scalars(select(AgentRow).order_by(AgentRow.agent_id)))

    def agent_capabilities(self) -> set[str]:
        """Every capability an agent has shown (as last recorded)."""
        return {c["name"] for row in self.agents() for c in row.inventory["capabilities"]}
