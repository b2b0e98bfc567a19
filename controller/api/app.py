"""The controller's HTTP API (FastAPI; OpenAPI at /openapi.json, docs at /docs).

Every /api/v1 route needs ``Authorization: Bearer <token>``:

- user tokens may do everything: upload models and data sets, submit sweeps,
  list the fleet, jobs and results, download artifacts;
- agent tokens may only download artifacts (``GET /api/v1/artifacts/<sha256>``).

Uploads stream to disk and stop at ``max_upload_bytes`` with 413; any other request body (JSON) stops at
``max_json_bytes`` (``FLEETBENCH_MAX_JSON_BYTES``, 1 MiB) with 413, and a body whose next piece takes longer
than ``body_timeout_s`` (``FLEETBENCH_BODY_TIMEOUT_S``, 30 s) to arrive gets 408. Sweeps run
in this process: a scheduler thread ticks every running sweep, conversions
run in sandboxed children, and jobs go to the fleet's broker.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from controller.api import metrics, sweeps, uploads
from controller.api.auth import Tokens, auth
from controller.api.errors import Problem, _scrub
from controller.api.limits import API, DEFAULT_BODY_TIMEOUT_S, DEFAULT_MAX_JSON_BYTES, _BodyLimits, _env_number
from controller.api.state import ApiState

log = logging.getLogger("fleetbench.api")


# size: the middleware and handlers are closures over the app they are registered on
def create_app(paths, db_url: str, broker_url: str | None, tokens: Tokens, *, max_upload_bytes: int = 512 * 2**20,
               public_url: str = "", run_scheduler: bool = True, max_array_bytes: int | None = None,
               max_json_bytes: int | None = None, body_timeout_s: float | None = None) -> FastAPI:  # fmt: skip
    """``max_array_bytes``: what an uploaded .npz may declare, decompressed (default: 4x the upload limit).
    ``max_json_bytes``: the largest body of a route other than an upload (``FLEETBENCH_MAX_JSON_BYTES``, 1 MiB);
    ``body_timeout_s``: the longest wait for the next piece of a request body (``FLEETBENCH_BODY_TIMEOUT_S``, 30)."""
    from controller.artifacts import ArtifactStore
    from controller.store import Store

    if max_array_bytes is None:
        from protocol.npz import max_bytes_default

        max_array_bytes = min(max_bytes_default(), 4 * max_upload_bytes)
    if max_json_bytes is None:
        max_json_bytes = _env_number("FLEETBENCH_MAX_JSON_BYTES", DEFAULT_MAX_JSON_BYTES, int)
    if body_timeout_s is None:
        body_timeout_s = _env_number("FLEETBENCH_BODY_TIMEOUT_S", DEFAULT_BODY_TIMEOUT_S, float)

    if not tokens.users:
        raise ValueError("the API needs at least one user token (FLEETBENCH_API_TOKENS or --token-file)")
    store = Store(db_url)
    store.migrate()
    artifacts = ArtifactStore(paths.artifacts)
    state = ApiState(store, artifacts, broker_url, public_url, paths)
    state.tokens, state.max_upload_bytes, state.max_array_bytes = tokens, max_upload_bytes, max_array_bytes
    state.metrics = metrics.Metrics(state)
    app = FastAPI(title="fleetbench controller", version="1", description=__doc__,
                  responses={400: {"model": Problem}, 401: {"model": Problem}, 403: {"model": Problem},
                             408: {"model": Problem, "description": "the request body stalled"},
                             413: {"model": Problem, "description": "the request body is over the limit"},
                             422: {"model": Problem, "description": "the request does not fit the spec; detail says how"}})  # fmt: skip
    # registered before the two below, so it runs after them: a request without a valid token is a 401 first
    app.add_middleware(_BodyLimits, max_json_bytes=max_json_bytes, timeout_s=body_timeout_s)

    @app.middleware("http")
    async def allow_header(request: Request, call_next):
        """A 405 lists every method of the path (Starlette lists only the first route's)."""
        response = await call_next(request)
        if response.status_code == 405:
            methods = {m for r in app.routes if getattr(r, "methods", None) and r.path_regex.match(request.url.path)
                       for m in r.methods}  # fmt: skip
            response.headers["Allow"] = ", ".join(sorted(methods - {"HEAD"}))
        return response

    @app.middleware("http")
    async def token_first(request: Request, call_next):
        """Every API route but health wants a valid token before anything else (FastAPI would parse a JSON
        body first). Registered last, so it runs first."""
        if request.url.path.startswith(f"{API}/") and request.url.path != f"{API}/health":
            try:
                auth(request)
            except HTTPException as exc:
                return JSONResponse(status_code=exc.status_code, content={"detail": exc.detail}, headers=exc.headers)
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        """One readable line, in the same shape as every other error (``Problem``)."""
        parts = []
        for e in exc.errors():
            where = ".".join(str(x) for x in e.get("loc", ())[1:]) or ".".join(str(x) for x in e.get("loc", ()))
            parts.append(f"{where}: {e.get('msg', 'invalid')}")
        detail = " ".join(("; ".join(parts) or "invalid request").split())  # one line
        return JSONResponse(status_code=422, content={"detail": _scrub(detail, paths.root)})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):  # no tracebacks to clients
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse(
            status_code=500, content={"detail": f"internal error: {type(exc).__name__}; see the controller log"}
        )

    @app.get(f"{API}/health")
    def health() -> dict:
        """Liveness, without a token."""
        return {"ok": True, "broker": bool(broker_url)}

    app.include_router(uploads.router)
    app.include_router(sweeps.router)
    app.include_router(metrics.router)

    if run_scheduler and broker_url:
        state.start()
    app.state.fleetbench = state
    return app
