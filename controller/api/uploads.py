"""Artifacts down (agents and users), models and data sets up (users): files streamed to disk, checked off the
event loop."""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from controller.api.auth import auth, user
from controller.api.errors import Problem, _err, _scrub
from controller.api.limits import API
from controller.api.state import ApiState, context
from protocol.hashing import SHA256_HEX

log = logging.getLogger("fleetbench.api")
SHA256 = re.compile(rf"^{SHA256_HEX.pattern}$")
UPLOAD_KINDS = (".keras", ".h5", ".tflite", ".onnx")
#: the pin of a data set uploaded with ``allow_nan=true``: sweeps over it keep its NaN and infinities
NAN_PIN = "uploaded data set (allow_nan)"
router = APIRouter()


@router.get(f"{API}/artifacts/{{sha256}}", responses={404: {"model": Problem}})
def artifact(sha256: str = PathParam(..., pattern=SHA256.pattern, description="64 lower-case hex digits"),
             role: str = Depends(auth), st: ApiState = Depends(context)):  # fmt: skip
    """Download an artifact by sha256 (agents verify it before use)."""
    if st.artifacts.get(sha256) is None:
        raise _err(404, f"no artifact {sha256[:12]}… here")
    return FileResponse(st.artifacts.path_for(sha256), media_type="application/octet-stream")


async def _receive(request: Request, suffix: str, st: ApiState) -> Path:
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > st.max_upload_bytes:
        raise _err(413, f"the upload is {int(length):,} bytes; this controller accepts at most {st.max_upload_bytes:,}")
    fd, tmp = tempfile.mkstemp(suffix=suffix, dir=st.paths.run)
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > st.max_upload_bytes:
                    raise _err(413, f"the upload is over {st.max_upload_bytes:,} bytes, this controller's limit")
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


@router.post(
    f"{API}/models",
    status_code=201,
    responses={413: {"model": Problem}, 415: {"model": Problem}, 422: {"model": Problem}},
)
async def upload_model(request: Request, filename: str = Query(..., min_length=1, max_length=200), name: str | None = Query(None, max_length=200),
                       role: str = Depends(user), st: ApiState = Depends(context)) -> dict:  # fmt: skip
    """Upload a model file (.keras, .h5, .tflite, .onnx) as the raw request body."""
    from controller.convert.sources import SourceError, identify

    if any(c in filename for c in "\x00/\\") or any(ord(c) < 32 for c in filename) or filename in (".", ".."):
        raise _err(400, "filename: give the model file's plain name, without '/', '\\' or control characters")
    suffix = Path(filename).suffix.lower()
    if suffix not in UPLOAD_KINDS:
        raise _err(415, f"upload a single model file ({', '.join(UPLOAD_KINDS)}); pack SavedModels and IR with "
                        "`fleetbench bundle` or convert them locally")  # fmt: skip
    tmp = await _receive(request, suffix, st)
    try:
        named = Path(tempfile.mkdtemp(dir=st.paths.run)) / Path(filename).name  # its own name, not another upload's
        tmp.rename(named)
        tmp = named

        def store_model():  # off the event loop: the file is read whole
            from controller.convert.service import ConvertError, _source_facts

            try:
                source = identify(tmp)
                payload, stored_name = source.payload()
                _source_facts(source, payload)  # a corrupt TFLite file or IR is refused before it is stored
            except (SourceError, ConvertError) as exc:
                raise _err(422, _scrub(str(exc), tmp, st.paths.root)) from None
            ref = st.artifacts.put_bytes(payload, stored_name)
            st.store.add_model(ref.sha256, name or source.name, source.kind, stored_name, ref.size_bytes)
            return source, ref

        source, ref = await run_in_threadpool(store_model)
    finally:
        tmp.unlink(missing_ok=True)
        if tmp.parent != Path(st.paths.run):
            tmp.parent.rmdir()
    return {"model_id": ref.sha256, "name": name or source.name, "kind": source.kind, "size_bytes": ref.size_bytes}


def _store_dataset(st: ApiState, tmp: Path, allow_nan: bool = False):
    from controller.datasets import DatasetError, _check_values, _task_in
    from protocol.npz import NpzError, load_npz

    try:
        with load_npz(tmp, st.max_array_bytes) as data:
            if "x" not in data:
                raise _err(422, "the .npz has no array 'x' (the inputs)")
            x, y = data["x"], (data["y"] if "y" in data else None)
            # the checks `fleetbench` runs on a local data set (finite numbers, class indices), shown as data.npz
            _check_values(
                Path("data.npz"), x, y, None if y is None else _task_in(data, Path("data.npz")), allow_nan=allow_nan
            )
            n = len(x)
    except HTTPException:
        raise
    except DatasetError as exc:  # the API's switch for NaN is a query parameter, not the server's environment
        detail = str(exc).replace("set FLEETBENCH_ALLOW_NAN=1", "upload it with ?allow_nan=true, which "
                                  "`fleetbench upload` sends when FLEETBENCH_ALLOW_NAN=1")  # fmt: skip
        raise _err(422, _scrub(detail, tmp, st.paths.root)) from None
    except NpzError as exc:
        raise _err(
            413 if "over the limit" in str(exc) else 422, _scrub(f"the .npz {exc}", tmp, st.paths.root)
        ) from None
    except Exception as exc:  # noqa: BLE001 - numpy raises several types
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise _err(422, f"not a readable .npz without pickles: {_scrub(first, tmp, st.paths.root)}") from None
    ref = st.artifacts.put_file(tmp, "data.npz")
    # sweeps name it later: gc keeps it, and a sweep over it keeps NaN when the upload asked to
    st.artifacts.pin(ref.sha256, NAN_PIN if allow_nan else "uploaded data set")
    return ref, n


@router.post(f"{API}/datasets", status_code=201, responses={413: {"model": Problem}, 422: {"model": Problem}})
async def upload_dataset(request: Request, role: str = Depends(user), st: ApiState = Depends(context),
                         allow_nan: bool = Query(False, description="keep NaN and infinite inputs (the CLI's FLEETBENCH_ALLOW_NAN=1)")) -> dict:  # fmt: skip
    """Upload a data set (.npz with x, and y when labelled) as the raw request body; sweeps name it by the
    sha256 this returns (`data: sha256:<hex>`)."""
    tmp = await _receive(request, ".npz", st)
    try:
        # off the event loop (health and every other request go on), within bounds on what it declares
        ref, n = await run_in_threadpool(_store_dataset, st, tmp, allow_nan)
    finally:
        tmp.unlink(missing_ok=True)
    return {"dataset": ref.sha256, "samples": n, "size_bytes": ref.size_bytes}


@router.get(f"{API}/models")
def models(role: str = Depends(user), st: ApiState = Depends(context)) -> dict:
    return {"models": [dict(model_id=m.model_id, name=m.name, kind=m.kind, size_bytes=m.size_bytes,
                            variants=[v.variant for v in st.store.variants(m.model_id)]) for m in st.store.models()]}  # fmt: skip
