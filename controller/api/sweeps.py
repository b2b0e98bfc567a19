"""Sweeps, jobs, results and the fleet: the routes over a LocalController."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from controller.api.auth import user
from controller.api.errors import Problem, _err, _scrub
from controller.api.limits import API
from controller.api.state import ApiState, context
from controller.api.uploads import NAN_PIN

router = APIRouter()


class SweepRequest(BaseModel):
    spec: dict
    #: needed for a sweep of more than 1,000 jobs
    confirm: bool = False


#: OpenAPI links: a submitted sweep's id leads to its state, its jobs and its results (clients and
#: schemathesis's stateful tests follow them)
by_sweep = "$response.body#/sweep_id"
sweep_links = {
    "GetSweep": {"operationId": "getSweep", "parameters": {"ref": by_sweep}},
    "GetSweepJobs": {"operationId": "listJobs", "parameters": {"sweep": by_sweep}},
    "GetSweepResults": {"operationId": "listResults", "parameters": {"sweep": by_sweep}},
    "CancelSweep": {"operationId": "cancelSweep", "parameters": {"ref": by_sweep}},
}


@router.post(f"{API}/sweeps", status_code=201, operation_id="submitSweep",
          responses={201: {"description": "Submitted", "links": sweep_links}, 400: {"model": Problem},
                     503: {"model": Problem}})  # fmt: skip
def submit_sweep(body: SweepRequest, role: str = Depends(user), st: ApiState = Depends(context)) -> dict:
    """Submit a sweep spec (the YAML's content as JSON); models are stored ones (`id:`)."""
    from controller.convert.service import ConvertError
    from controller.store import StoreError
    from controller.sweeps import SweepError, spec_from_dict

    try:
        # a bad spec is a 400 naming its field, with or without a broker; nothing in it is a path here
        spec = spec_from_dict(body.spec, server_paths=False)
        uploaded = st.artifacts.pinned()
        for i, m in enumerate(spec.models):
            if m.data and m.data.removeprefix("sha256:") not in uploaded:
                raise SweepError(f"models[{i}].data: no uploaded data set {m.data.removeprefix('sha256:')[:12]}…; "
                                 "upload it with POST /api/v1/datasets and name the sha256 it returns")  # fmt: skip
            if m.data:  # an upload with allow_nan=true is prepared with its NaN; any other, with none
                m.allow_nan = st.artifacts.pin_reason(m.data.removeprefix("sha256:")) == NAN_PIN
    except SweepError as exc:
        raise _err(400, str(exc)) from None
    if not st.broker_url:
        raise _err(503, "this controller was started without --broker, so it cannot send jobs")
    try:
        return {"sweep_id": st.submit(spec, confirm=body.confirm)}
    except SweepError as exc:
        raise _err(400, str(exc)) from None
    except (ConvertError, StoreError) as exc:  # these name the stored files they copied for planning
        raise _err(400, _scrub(" ".join(str(exc).split()), st.paths.root)) from None


def _answer(call):
    from controller.service import ControllerError

    try:
        return call()
    except ControllerError as exc:
        raise _err(exc.status, str(exc)) from None


@router.get(f"{API}/sweeps")
def sweeps(role: str = Depends(user), st: ApiState = Depends(context)) -> dict:
    return {"sweeps": st.controller().sweeps()}


@router.get(f"{API}/sweeps/{{ref}}", operation_id="getSweep", responses={404: {"model": Problem}})
def sweep(ref: str, role: str = Depends(user), st: ApiState = Depends(context)) -> dict:
    return _answer(lambda: st.controller().sweep(ref))


@router.post(f"{API}/sweeps/{{ref}}/cancel", operation_id="cancelSweep",
          responses={404: {"model": Problem}, 409: {"model": Problem}})  # fmt: skip
def cancel_sweep(ref: str, role: str = Depends(user), st: ApiState = Depends(context)) -> dict:
    """End a running sweep: its unfinished jobs become cancelled (fenced on the broker, so no agent runs them)."""
    out = _answer(lambda: st.controller().cancel(ref))
    return {"sweep_id": out["sweep_id"], "cancelled": out["cancelled"]}


@router.get(f"{API}/jobs", operation_id="listJobs")
def jobs(
    sweep: str | None = None, state: str | None = None, role: str = Depends(user), st: ApiState = Depends(context)
) -> dict:
    return {"jobs": st.controller().jobs(sweep, state)}


@router.get(f"{API}/results", operation_id="listResults", responses={404: {"model": Problem}})
def results(sweep: str | None = None, model: str | None = None, limit: int = Query(100, ge=1, le=10_000),
            role: str = Depends(user), st: ApiState = Depends(context)) -> dict:  # fmt: skip
    records, _ = _answer(lambda: st.controller().results(sweep, model, limit))
    return {"records": [r.to_dict() for r in records]}


@router.get(f"{API}/fleet")
def fleet(role: str = Depends(user), st: ApiState = Depends(context)) -> dict:
    return {"agents": st.controller().fleet()}
