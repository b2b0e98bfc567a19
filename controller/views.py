"""The dicts users are shown, built once: the API returns them as JSON, and the CLI renders the same ones
(whether it read them from its own store or from a controller's API)."""

from __future__ import annotations

import datetime as dt

from controller.store.base import as_utc


def _iso(ts: dt.datetime | None) -> str | None:
    return as_utc(ts).isoformat(timespec="seconds") if ts is not None else None


def job_view(j) -> dict:
    """One job (a ``JobRow``) as shown: what it runs, where, its state, attempts and why."""
    return dict(job_id=j.job_id, model_name=j.model_name, variant=j.variant, capability=j.capability,
                pinned_agent=j.pinned_agent, threads=j.settings.get("threads"), state=j.state, attempt=j.attempt,
                max_attempts=j.max_attempts, agent_id=j.agent_id, reason=j.reason, error_kind=j.error_kind)  # fmt: skip


def sweep_view(row, counts: dict[str, int], jobs: list | None = None) -> dict:
    """One sweep (a ``SweepRow``) with its job counts by state, and its jobs when given."""
    view = dict(sweep_id=row.sweep_id, name=row.name, state=row.state, created_at=_iso(row.created_at), counts=counts)
    if jobs is not None:
        view["jobs"] = [job_view(j) for j in jobs]
    return view


def agent_view(row, online: bool | None) -> dict:
    """One agent (an ``AgentRow``) as last seen; ``online`` None when the fleet's broker was not asked."""
    host = row.inventory.get("host") or {}
    return dict(agent_id=row.agent_id, hostname=row.hostname, online=online, last_heartbeat=_iso(row.last_heartbeat),
                capabilities=row.inventory["capabilities"], machine=host.get("machine", ""),
                emulated_by=host.get("emulated_by", ""))  # fmt: skip
