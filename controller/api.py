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

import asyncio
import hmac
import json
import logging
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from protocol.hashing import SHA256_HEX

log = logging.getLogger("fleetbench.api")

API = "/api/v1"
SHA256 = re.compile(rf"^{SHA256_HEX.pattern}$")
UPLOAD_KINDS = (".keras", ".h5", ".tflite", ".onnx")
#: routes whose raw bodies are uploads, bounded by ``max_upload_bytes`` instead of ``max_json_bytes``
UPLOAD_PATHS = (f"{API}/models", f"{API}/datasets")
DEFAULT_MAX_JSON_BYTES = 2**20
DEFAULT_BODY_TIMEOUT_S = 30.0
#: on an answer given before the request's body was read to its end: the connection cannot carry another request
CLOSE = {"Connection": "close"}
#: the pin of a data set uploaded with ``allow_nan=true``: sweeps over it keep its NaN and infinities
NAN_PIN = "uploaded data set (allow_nan)"


@dataclass
class Tokens:
    users: set[str] = field(default_factory=set)
    agents: set[str] = field(default_factory=set)

    @classmethod
    def from_env(cls) -> "Tokens":
        split = lambda v: {t.strip() for t in os.environ.get(v, "").split(",") if t.strip()}  # noqa: E731
        return cls(users=split("FLEETBENCH_API_TOKENS"), agents=split("FLEETBENCH_AGENT_TOKENS"))

    def role(self, token: str) -> str | None:
        for role, tokens in (("user", self.users), ("agent", self.agents)):
            # bytes: compare_digest refuses a str with non-ASCII characters (a TypeError, not a 401)
            if any(hmac.compare_digest(token.encode("utf-8", "replace"), t.encode("utf-8", "replace")) for t in tokens):
                return role
        return None


class SweepRequest(BaseModel):
    spec: dict
    #: needed for a sweep of more than 1,000 jobs
    confirm: bool = False


class Problem(BaseModel):
    detail: str


def _err(status: int, detail: str) -> HTTPException:
    return HTTPException(status_code=status, detail=detail)


#: an absolute path of two parts or more (``/srv/fb/run/tmpab12/x.npz``): only its last part is shown (not a
#: URL's path, nor one of this API's routes)
_ABS_PATH = re.compile(r"(?<![\w.:/])(?!/api/)(?:/[^\s/'\"`(),;]+)+/([^\s/'\"`(),;]+)")
_UNDER = re.compile(r"(?:/[^\s/'\"`(),;]+)*/([^\s/'\"`(),;]+)")


def _scrub(text: str, *paths) -> str:
    """``text`` (an exception's message, for a client) without this machine's paths: each of ``paths``, and
    any other absolute path, becomes its file's base name."""
    for p in sorted((str(p) for p in paths if p), key=len, reverse=True):
        text = re.sub(re.escape(p) + _UNDER.pattern, r"\1", text)  # a file under it (its parts may hold spaces)
        text = text.replace(p, Path(p).name)
    return _ABS_PATH.sub(r"\1", text)


def _env_number(name: str, default, cast):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = cast(raw)
    except ValueError:
        value = None
    if value is None or not value > 0:
        raise ValueError(f"{name}={raw!r}: give a number above 0 (default {default})")
    return value


class _BodyLimits:
    """Pure ASGI: a request body other than an upload is at most ``max_json_bytes`` (413, by its Content-Length
    before anything is read, else counted as it streams), and each piece of any body must arrive within
    ``timeout_s`` (408). Over the limit or late, the route sees an HTTPException from ``receive``. Once the
    body is complete, ``receive`` is not timed (Starlette waits on it for a disconnect while it sends a file)."""

    def __init__(self, app, max_json_bytes: int, timeout_s: float):
        self.app, self.max_json_bytes, self.timeout_s = app, max_json_bytes, timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limited = scope["path"] not in UPLOAD_PATHS
        if limited:
            length = dict(scope.get("headers") or ()).get(b"content-length", b"")
            if length.isdigit() and int(length) > self.max_json_bytes:
                return await self._send(send, 413, self._too_big(int(length)))
        seen, done = 0, False

        async def bounded():
            nonlocal seen, done
            if done:  # the body is in: what Starlette waits for now (a disconnect, beside a response) is not timed
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout_s)
            except asyncio.TimeoutError:
                log.info("%s %s: no request body for %.0f s; answered 408", scope.get("method"), scope["path"], self.timeout_s)
                raise HTTPException(408, f"the request body stalled: nothing arrived for {self.timeout_s:g} s",
                                    headers=CLOSE) from None  # fmt: skip
            done = message["type"] != "http.request" or not message.get("more_body", False)
            if limited and message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_json_bytes:
                    raise HTTPException(413, self._too_big(seen, over=True), headers=CLOSE)
            return message

        return await self.app(scope, bounded, send)

    def _too_big(self, n: int, over: bool = False) -> str:
        return (f"the request body is {'over ' if over else ''}{n:,} bytes; this controller accepts at most "
                f"{self.max_json_bytes:,} (FLEETBENCH_MAX_JSON_BYTES)")  # fmt: skip

    @staticmethod
    async def _send(send, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


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
    state = _State(store, artifacts, broker_url, public_url, paths)
    state.max_upload_bytes = max_upload_bytes
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

    def auth(request: Request) -> str:
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        role = tokens.role(token) if token else None
        if role is None:
            raise _err(401, "missing or unknown token: send `Authorization: Bearer <token>` (FLEETBENCH_TOKEN for the CLI)")
        return role

    def user(role: str = Depends(auth)) -> str:
        if role != "user":
            raise _err(403, "agent tokens may only download artifacts")
        return role

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):  # no tracebacks to clients
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse(status_code=500, content={"detail": f"internal error: {type(exc).__name__}; see the controller log"})

    @app.get(f"{API}/health")
    def health() -> dict:
        """Liveness, without a token."""
        return {"ok": True, "broker": bool(broker_url)}

    @app.get(f"{API}/artifacts/{{sha256}}", responses={404: {"model": Problem}})
    def artifact(sha256: str = PathParam(..., pattern=SHA256.pattern, description="64 lower-case hex digits"),
                 role: str = Depends(auth)):  # fmt: skip
        """Download an artifact by sha256 (agents verify it before use)."""
        if artifacts.get(sha256) is None:
            raise _err(404, f"no artifact {sha256[:12]}… here")
        return FileResponse(artifacts.path_for(sha256), media_type="application/octet-stream")

    async def _receive(request: Request, suffix: str) -> Path:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_upload_bytes:
            raise _err(413, f"the upload is {int(length):,} bytes; this controller accepts at most {max_upload_bytes:,}")
        fd, tmp = tempfile.mkstemp(suffix=suffix, dir=paths.run)
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > max_upload_bytes:
                        raise _err(413, f"the upload is over {max_upload_bytes:,} bytes, this controller's limit")
                    out.write(chunk)
        except ClientDisconnect:  # one line, not a traceback: the client went away, nothing is wrong here
            os.unlink(tmp)
            client = f"{request.client.host}:{request.client.port}" if request.client else "a client"
            log.warning("upload to %s: %s disconnected after %s bytes; discarded", request.url.path, client, f"{size:,}")
            raise _err(400, "the client disconnected before the upload was complete") from None
        except BaseException:
            os.unlink(tmp)
            raise
        if size == 0:
            os.unlink(tmp)
            raise _err(400, "the upload is empty")
        return Path(tmp)

    @app.post(f"{API}/models", status_code=201, responses={413: {"model": Problem}, 415: {"model": Problem}, 422: {"model": Problem}})
    async def upload_model(request: Request, filename: str = Query(..., min_length=1, max_length=200), name: str | None = Query(None, max_length=200),
                           role: str = Depends(user)) -> dict:  # fmt: skip
        """Upload a model file (.keras, .h5, .tflite, .onnx) as the raw request body."""
        from controller.convert.sources import SourceError, identify

        if any(c in filename for c in "\x00/\\") or any(ord(c) < 32 for c in filename) or filename in (".", ".."):
            raise _err(400, "filename: give the model file's plain name, without '/', '\\' or control characters")
        suffix = Path(filename).suffix.lower()
        if suffix not in UPLOAD_KINDS:
            raise _err(415, f"upload a single model file ({', '.join(UPLOAD_KINDS)}); pack SavedModels and IR with "
                            "`fleetbench bundle` or convert them locally")  # fmt: skip
        tmp = await _receive(request, suffix)
        try:
            named = Path(tempfile.mkdtemp(dir=paths.run)) / Path(filename).name  # its own name, not another upload's
            tmp.rename(named)
            tmp = named

            def store_model():  # off the event loop: the file is read whole
                from controller.convert.service import ConvertError, _source_facts

                try:
                    source = identify(tmp)
                    payload, stored_name = source.payload()
                    _source_facts(source, payload)  # a corrupt TFLite file or IR is refused before it is stored
                except (SourceError, ConvertError) as exc:
                    raise _err(422, _scrub(str(exc), tmp, paths.root)) from None
                ref = artifacts.put_bytes(payload, stored_name)
                store.add_model(ref.sha256, name or source.name, source.kind, stored_name, ref.size_bytes)
                return source, ref

            source, ref = await run_in_threadpool(store_model)
        finally:
            tmp.unlink(missing_ok=True)
            if tmp.parent != Path(paths.run):
                tmp.parent.rmdir()
        return {"model_id": ref.sha256, "name": name or source.name, "kind": source.kind, "size_bytes": ref.size_bytes}

    def _store_dataset(tmp: Path, allow_nan: bool = False):
        from controller.datasets import DatasetError, _check_values, _task_in
        from protocol.npz import NpzError, load_npz

        try:
            with load_npz(tmp, max_array_bytes) as data:
                if "x" not in data:
                    raise _err(422, "the .npz has no array 'x' (the inputs)")
                x, y = data["x"], (data["y"] if "y" in data else None)
                # the checks `fleetbench` runs on a local data set (finite numbers, class indices), shown as data.npz
                _check_values(Path("data.npz"), x, y, None if y is None else _task_in(data, Path("data.npz")), allow_nan=allow_nan)
                n = len(x)
        except HTTPException:
            raise
        except DatasetError as exc:  # the API's switch for NaN is a query parameter, not the server's environment
            detail = str(exc).replace("set FLEETBENCH_ALLOW_NAN=1", "upload it with ?allow_nan=true, which "
                                      "`fleetbench upload` sends when FLEETBENCH_ALLOW_NAN=1")  # fmt: skip
            raise _err(422, _scrub(detail, tmp, paths.root)) from None
        except NpzError as exc:
            raise _err(413 if "over the limit" in str(exc) else 422, _scrub(f"the .npz {exc}", tmp, paths.root)) from None
        except Exception as exc:  # noqa: BLE001 - numpy raises several types
            first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise _err(422, f"not a readable .npz without pickles: {_scrub(first, tmp, paths.root)}") from None
        ref = artifacts.put_file(tmp, "data.npz")
        # sweeps name it later: gc keeps it, and a sweep over it keeps NaN when the upload asked to
        artifacts.pin(ref.sha256, NAN_PIN if allow_nan else "uploaded data set")
        return ref, n

    @app.post(f"{API}/datasets", status_code=201, responses={413: {"model": Problem}, 422: {"model": Problem}})
    async def upload_dataset(request: Request, role: str = Depends(user),
                             allow_nan: bool = Query(False, description="keep NaN and infinite inputs (the CLI's FLEETBENCH_ALLOW_NAN=1)")) -> dict:  # fmt: skip
        """Upload a data set (.npz with x, and y when labelled) as the raw request body; sweeps name it by the
        sha256 this returns (`data: sha256:<hex>`)."""
        tmp = await _receive(request, ".npz")
        try:
            # off the event loop (health and every other request go on), within bounds on what it declares
            ref, n = await run_in_threadpool(_store_dataset, tmp, allow_nan)
        finally:
            tmp.unlink(missing_ok=True)
        return {"dataset": ref.sha256, "samples": n, "size_bytes": ref.size_bytes}

    @app.get(f"{API}/models")
    def models(role: str = Depends(user)) -> dict:
        return {"models": [dict(model_id=m.model_id, name=m.name, kind=m.kind, size_bytes=m.size_bytes,
                                variants=[v.variant for v in store.variants(m.model_id)]) for m in store.models()]}  # fmt: skip

    #: OpenAPI links: a submitted sweep's id leads to its state, its jobs and its results (clients and
    #: schemathesis's stateful tests follow them)
    by_sweep = "$response.body#/sweep_id"
    sweep_links = {
        "GetSweep": {"operationId": "getSweep", "parameters": {"ref": by_sweep}},
        "GetSweepJobs": {"operationId": "listJobs", "parameters": {"sweep": by_sweep}},
        "GetSweepResults": {"operationId": "listResults", "parameters": {"sweep": by_sweep}},
        "CancelSweep": {"operationId": "cancelSweep", "parameters": {"ref": by_sweep}},
    }

    @app.post(f"{API}/sweeps", status_code=201, operation_id="submitSweep",
              responses={201: {"description": "Submitted", "links": sweep_links}, 400: {"model": Problem},
                         503: {"model": Problem}})  # fmt: skip
    def submit_sweep(body: SweepRequest, role: str = Depends(user)) -> dict:
        """Submit a sweep spec (the YAML's content as JSON); models are stored ones (`id:`)."""
        from controller.convert.service import ConvertError
        from controller.store import StoreError
        from controller.sweeps import SweepError, spec_from_dict

        try:
            # a bad spec is a 400 naming its field, with or without a broker; nothing in it is a path here
            spec = spec_from_dict(body.spec, server_paths=False)
            uploaded = artifacts.pinned()
            for i, m in enumerate(spec.models):
                if m.data and m.data.removeprefix("sha256:") not in uploaded:
                    raise SweepError(f"models[{i}].data: no uploaded data set {m.data.removeprefix('sha256:')[:12]}…; "
                                     "upload it with POST /api/v1/datasets and name the sha256 it returns")  # fmt: skip
                if m.data:  # an upload with allow_nan=true is prepared with its NaN; any other, with none
                    m.allow_nan = artifacts.pin_reason(m.data.removeprefix("sha256:")) == NAN_PIN
        except SweepError as exc:
            raise _err(400, str(exc)) from None
        if not broker_url:
            raise _err(503, "this controller was started without --broker, so it cannot send jobs")
        try:
            return {"sweep_id": state.submit(spec, confirm=body.confirm)}
        except SweepError as exc:
            raise _err(400, str(exc)) from None
        except (ConvertError, StoreError) as exc:  # these name the stored files they copied for planning
            raise _err(400, _scrub(" ".join(str(exc).split()), paths.root)) from None

    def _answer(call):
        from controller.service import ControllerError

        try:
            return call()
        except ControllerError as exc:
            raise _err(exc.status, str(exc)) from None

    @app.get(f"{API}/sweeps")
    def sweeps(role: str = Depends(user)) -> dict:
        return {"sweeps": state.controller().sweeps()}

    @app.get(f"{API}/sweeps/{{ref}}", operation_id="getSweep", responses={404: {"model": Problem}})
    def sweep(ref: str, role: str = Depends(user)) -> dict:
        return _answer(lambda: state.controller().sweep(ref))

    @app.post(f"{API}/sweeps/{{ref}}/cancel", operation_id="cancelSweep",
              responses={404: {"model": Problem}, 409: {"model": Problem}})  # fmt: skip
    def cancel_sweep(ref: str, role: str = Depends(user)) -> dict:
        """End a running sweep: its unfinished jobs become cancelled (fenced on the broker, so no agent runs them)."""
        return _answer(lambda: state.controller().cancel(ref))

    @app.get(f"{API}/jobs", operation_id="listJobs")
    def jobs(sweep: str | None = None, state_: str | None = Query(None, alias="state"), role: str = Depends(user)) -> dict:
        return {"jobs": state.controller().jobs(sweep, state_)}

    @app.get(f"{API}/results", operation_id="listResults", responses={404: {"model": Problem}})
    def results(sweep: str | None = None, model: str | None = None, limit: int = Query(100, ge=1, le=10_000),
                role: str = Depends(user)) -> dict:  # fmt: skip
        records, _ = _answer(lambda: state.controller().results(sweep, model, limit))
        return {"records": [r.to_dict() for r in records]}

    @app.get(f"{API}/fleet")
    def fleet(role: str = Depends(user)) -> dict:
        return {"agents": state.controller().fleet()}

    if run_scheduler and broker_url:
        state.start()
    app.state.fleetbench = state
    return app


#: How often the API stores the live agents' inventories (their heartbeats), for the dashboard.
FLEET_RECORD_S = 10.0


class _State:
    """The API's scheduler: one thread ticking every running sweep."""

    def __init__(self, store, artifacts, broker_url, public_url, paths):
        self.store, self.artifacts, self.broker_url, self.public_url, self.paths = store, artifacts, broker_url, public_url, paths
        self.max_upload_bytes = 0
        self._lock = threading.Lock()
        self._scheduler = None
        self._stop = threading.Event()

    def scheduler(self):
        from controller.dispatch import Dispatcher
        from controller.sweeps import Scheduler, http_artifact_ref

        with self._lock:
            if self._scheduler is None:
                d = Dispatcher(self.broker_url)
                ref = http_artifact_ref(self.public_url) if self.public_url else (lambda r: r)
                self._scheduler = Scheduler.on_broker(self.store, d, artifact_ref=ref)
            return self._scheduler

    def controller(self):
        """The routes' view of this controller: the store, and the fleet's broker when there is one."""
        from controller.service import LocalController

        if not self.broker_url:
            return LocalController(self.store, live_agents=lambda: set())
        return LocalController(self.store, scheduler=self.scheduler(), live_agents=self.live_agents)

    def live_agents(self) -> set[str]:
        if not self.broker_url:
            return set()
        try:
            return self.scheduler().dispatcher.record_live_agents(self.store)
        except Exception:  # noqa: BLE001 - the fleet page still lists what was seen
            return set()

    def submit(self, spec, confirm: bool = False) -> str:
        from controller.convert import service
        from controller.sweeps import prepare_models

        s = self.scheduler()
        models = prepare_models(spec, self.store, self.artifacts, service.local_runner(self.artifacts), workdir=self.paths.run / "sweeps",
                                max_model_bytes=max(self.max_upload_bytes, service.max_model_bytes()))  # what it took it takes
        return s.submit(spec, models, confirm=confirm)

    def start(self) -> None:
        threading.Thread(target=self._loop, name="sweep-scheduler", daemon=True).start()

    def _loop(self) -> None:
        recorded = 0.0
        while not self._stop.is_set():
            if time.monotonic() - recorded >= FLEET_RECORD_S:  # the dashboard's Fleet page reads these
                self.live_agents()
                recorded = time.monotonic()
            try:
                s = self.scheduler()
                running = [row.sweep_id for row in self.store.sweeps() if row.state == "running"]
                for sweep_id in running:
                    s.tick(sweep_id)
                if running:
                    s.drain(block_s=0.5)  # wake as soon as an outcome arrives
                    continue
            except Exception as exc:  # noqa: BLE001 - outages: try again next time
                log.warning("scheduler: %s", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                time.sleep(2.0)
            time.sleep(0.5)
