"""What every part of the store shares: its error, timestamps in UTC, URLs fit for messages."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.exc import OperationalError


class StoreError(RuntimeError):
    """The database cannot be used; the message says which and what to do."""


def _parse_ts(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def as_utc(ts: dt.datetime) -> dt.datetime:
    """SQLite hands timestamps back without their zone; they were stored in UTC."""
    return ts if ts.tzinfo else ts.replace(tzinfo=dt.timezone.utc)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _write_error(url: str, exc: OperationalError) -> StoreError:
    return StoreError(f"cannot write to {redact_url(url)}: {_one_line(exc.orig)}")


def redact_url(url: str) -> str:
    """The URL with its password replaced by ***, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for messages
        from protocol.redact import redact

        return redact(url)
