"""One redactor for every URL printed or logged: the password of ``scheme://user:password@host`` becomes ***.

Used by the CLI's error lines, the agent, the API and the dashboard, and by a
logging filter (:func:`install_log_filter`) for what libraries log.
"""

from __future__ import annotations

import logging
import re

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s/]+)@")


def token_in(given: str, tokens) -> bool:
    """Whether ``given`` is one of ``tokens``, compared in constant time, every token each time (the API's bearer
    tokens and the dashboard's login both ask this)."""
    import hmac

    found = False
    for t in tokens:
        # bytes: compare_digest refuses a str with non-ASCII characters (a TypeError, not a refusal)
        found |= hmac.compare_digest(given.encode("utf-8", "replace"), t.encode("utf-8", "replace"))
    return found


def redact(text) -> str:
    """``text`` with every URL's password replaced by ``***`` (anything else is left as it is)."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", str(text))


class RedactFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is the logger's problem, not ours
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def install_log_filter(logger: logging.Logger | None = None) -> None:
    """Redact every record that reaches ``logger``'s (default: the root logger's) handlers (idempotent)."""
    root = logger or logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(f, RedactFilter) for f in handler.filters):
            handler.addFilter(RedactFilter())
    if not any(isinstance(f, RedactFilter) for f in root.filters):
        root.addFilter(RedactFilter())
