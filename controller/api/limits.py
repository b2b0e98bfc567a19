"""Bounds on request bodies: size (413) and how long the next piece may take (408)."""

from __future__ import annotations

import asyncio
import json
import logging
import os

from fastapi import HTTPException

from controller.api.errors import CLOSE

log = logging.getLogger("fleetbench.api")
API = "/api/v1"
#: routes whose raw bodies are uploads, bounded by ``max_upload_bytes`` instead of ``max_json_bytes``
UPLOAD_PATHS = (f"{API}/models", f"{API}/datasets")
DEFAULT_MAX_JSON_BYTES = 2**20
DEFAULT_BODY_TIMEOUT_S = 30.0


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
                log.info(
                    "%s %s: no request body for %.0f s; answered 408",
                    scope.get("method"),
                    scope["path"],
                    self.timeout_s,
                )
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
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
