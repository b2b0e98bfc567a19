"""A small client for the controller's HTTP API (standard library only)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

TOKEN_ENV = "FLEETBENCH_TOKEN"


class ApiError(RuntimeError):
    """The controller said no, or could not be reached; the message says what to do."""


class ApiClient:
    def __init__(self, base_url: str, token: str, timeout_s: float = 60.0):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    @classmethod
    def from_env(cls, base_url: str) -> "ApiClient":
        token = os.environ.get(TOKEN_ENV, "")
        if not token:
            raise ApiError(f"no API token: set {TOKEN_ENV} to a user token of the controller at {base_url}")
        return cls(base_url, token)

    def _request(self, method: str, path: str, *, params: dict | None = None, body: bytes | None = None,
                 content_type: str = "application/json") -> dict:  # fmt: skip
        query = urllib.parse.urlencode({k: v for k, v in (params or {}).items() if v is not None})
        url = f"{self.base_url}{path}" + (f"?{query}" if query else "")
        req = urllib.request.Request(url, data=body, method=method, headers={"Authorization": f"Bearer {self.token}"})
        if body is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read()).get("detail")
            except (ValueError, AttributeError):
                detail = None
            hint = {401: f" (check {TOKEN_ENV})", 403: f" ({TOKEN_ENV} holds an agent token; use a user token)"}.get(exc.code, "")
            raise ApiError(f"the controller answered {exc.code} to {method} {path}: {detail or exc.reason}{hint}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(f"cannot reach the controller at {self.base_url} ({reason}); is `fleetbench serve` running?") from None

    def get(self, path: str, params: dict | None = None) -> dict:
        return self._request("GET", path, params=params)

    def post(self, path: str, json: dict | None = None, params: dict | None = None) -> dict:  # noqa: A002
        import json as _json

        return self._request("POST", path, params=params, body=_json.dumps(json or {}).encode())

    def upload(self, path: str, file: Path, params: dict | None = None) -> dict:
        return self._request("POST", path, params=params, body=Path(file).read_bytes(), content_type="application/octet-stream")
