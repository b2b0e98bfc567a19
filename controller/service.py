"""One interface to a controller, whether it is this machine's store or a controller's HTTP API.

The CLI's ``fleet``, ``status``, ``results`` and ``sweep --cancel`` call a :class:`Controller` and do not
branch on ``--controller`` themselves; the API's routes call a :class:`LocalController`. Both return the
dicts of :mod:`controller.views` and records as :class:`ResultRecord`.
"""

from __future__ import annotations

from typing import Protocol

from controller import views
from controller.jobs import SweepState
from protocol import ResultRecord


class ControllerError(RuntimeError):
    """What was asked cannot be answered; one line. ``status`` is the HTTP status an API gives it."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class Controller(Protocol):
    def sweeps(self) -> list[dict]: ...
    def sweep(self, ref: str) -> dict: ...
    def jobs(self, sweep: str | None = None, state: str | None = None) -> list[dict]: ...
    def results(
        self, sweep: str | None = None, model: str | None = None, limit: int = 100
    ) -> tuple[list[ResultRecord], dict | None]: ...
    def fleet(self) -> list[dict]: ...
    def cancel(self, ref: str) -> dict: ...


class LocalController:
    """This machine's store; with ``scheduler`` (the fleet's), ``fleet`` says who is online and ``cancel``
    fences the cancelled jobs on the broker."""

    def __init__(self, store, scheduler=None, live_agents=None):
        self.store = store
        self.scheduler = scheduler
        #: () -> ids of the live agents (recording their inventories), or None when there is no broker to ask
        self.live_agents = live_agents

    def _row(self, ref: str):
        from controller.store import StoreError

        try:
            return self.store.get_sweep(ref)
        except StoreError as exc:
            raise ControllerError(str(exc), 404) from None

    def sweeps(self) -> list[dict]:
        return [views.sweep_view(r, self.store.job_counts(r.sweep_id)) for r in self.store.sweeps()]

    def sweep(self, ref: str) -> dict:
        row = self._row(ref)
        return views.sweep_view(row, self.store.job_counts(row.sweep_id), self.store.jobs(row.sweep_id))

    def jobs(self, sweep: str | None = None, state: str | None = None) -> list[dict]:
        return [views.job_view(j) for j in self.store.jobs(sweep, (state,) if state else None)]

    def results(
        self, sweep: str | None = None, model: str | None = None, limit: int = 100
    ) -> tuple[list[ResultRecord], dict | None]:
        if sweep:
            row = self._row(sweep)
            return self.store.sweep_results(row.sweep_id), views.sweep_view(row, self.store.job_counts(row.sweep_id))
        return self.store.results(model_id=model, limit=limit), None

    def fleet(self) -> list[dict]:
        live = self.live_agents() if self.live_agents is not None else None
        return [views.agent_view(r, (r.agent_id in live) if live is not None else None) for r in self.store.agents()]

    def cancel(self, ref: str) -> dict:
        """{"sweep_id", "name", "cancelled": how many unfinished jobs were marked cancelled}."""
        row = self._row(ref)
        if row.state != SweepState.RUNNING:
            raise ControllerError(
                f"sweep {row.name} ({row.sweep_id}) is {row.state} already; there is nothing to cancel", 409
            )
        if self.scheduler is not None:  # fenced too, so an agent that still gets a job does not run it (best effort)
            n = self.scheduler.cancel(row.sweep_id)
        else:
            n = len(self.store.cancel_sweep(row.sweep_id))
        return {"sweep_id": row.sweep_id, "name": row.name, "cancelled": n}


def _q(ref: str) -> str:
    from urllib.parse import quote

    return quote(ref, safe="")


class RemoteController:
    """A controller's HTTP API (``fleetbench serve``), with the token in FLEETBENCH_TOKEN."""

    def __init__(self, url: str):
        from controller.client import ApiClient, ApiError

        self.url = url
        try:
            self.client = ApiClient.from_env(url)
        except ApiError as exc:  # no token
            raise ControllerError(str(exc)) from None

    def _call(self, method: str, path: str, **kw) -> dict:
        from controller.client import ApiError

        try:
            return getattr(self.client, method)(path, **kw)
        except ApiError as exc:
            raise ControllerError(str(exc)) from None

    def sweeps(self) -> list[dict]:
        return self._call("get", "/api/v1/sweeps")["sweeps"]

    def sweep(self, ref: str) -> dict:
        return self._call("get", f"/api/v1/sweeps/{_q(ref)}")

    def jobs(self, sweep: str | None = None, state: str | None = None) -> list[dict]:
        return self._call("get", "/api/v1/jobs", params={"sweep": sweep, "state": state})["jobs"]

    def results(
        self, sweep: str | None = None, model: str | None = None, limit: int = 100
    ) -> tuple[list[ResultRecord], dict | None]:
        data = self._call("get", "/api/v1/results", params={"sweep": sweep, "model": model, "limit": limit})
        records = [ResultRecord.from_dict(r) for r in data["records"]]
        return records, ({k: v for k, v in self.sweep(sweep).items() if k != "jobs"} if sweep else None)

    def fleet(self) -> list[dict]:
        return self._call("get", "/api/v1/fleet")["agents"]

    def cancel(self, ref: str) -> dict:
        return self._call("post", f"/api/v1/sweeps/{_q(ref)}/cancel", json={})
