"""Bearer tokens: user tokens may do everything, agent tokens may only download artifacts."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from fastapi import Depends, Request

from controller.api.errors import _err
from protocol.redact import token_in


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
            if token_in(token, tokens):
                return role
        return None


def auth(request: Request) -> str:
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else ""
    role = request.app.state.fleetbench.tokens.role(token) if token else None
    if role is None:
        raise _err(401, "missing or unknown token: send `Authorization: Bearer <token>` (FLEETBENCH_TOKEN for the CLI)")
    return role


def user(role: str = Depends(auth)) -> str:
    if role != "user":
        raise _err(403, "agent tokens may only download artifacts")
    return role
