"""The agent's guard on its broker queues: a message that is not a Celery task message is dropped with one log line.

kombu's Redis transport pops each item off a queue, decodes it with
``json.loads`` and builds a message from it inside the worker's event loop.
Bytes that are not JSON, or JSON that is not a message envelope, raise out of
that loop, and Celery stops the worker ("Unrecoverable error"): one bad item
pushed onto a queue would stop every agent that reads it, and, left on the
queue, stop them again on every restart.

:func:`install` wraps the two places (decoding and delivery) so such an item
is logged and dropped, and the worker goes on. Messages that are envelopes go
to Celery unchanged; Celery refuses the ones it cannot accept (a content type
other than JSON, an unknown task name) with its own log line.
"""

from __future__ import annotations

import base64
import binascii
import logging

log = logging.getLogger("fleetbench.agent")


class _Unreadable(dict):
    """What a queue item that is not JSON decodes to: never a message."""


def why_not_a_message(payload) -> str | None:
    """None if kombu can build a message from ``payload``; else what is wrong with it."""
    if isinstance(payload, _Unreadable):
        return payload["error"]
    if not isinstance(payload, dict):
        return f"JSON {type(payload).__name__}, not a message envelope"
    props = payload.get("properties")
    if not isinstance(props, dict) or not isinstance(props.get("delivery_tag"), (str, int)):
        return "no properties.delivery_tag"
    if not isinstance(props.get("delivery_info", {}), dict):
        return "properties.delivery_info is not an object"
    body = payload.get("body")
    if body is not None and not isinstance(body, str):
        return "its body is not a string"
    if body and props.get("body_encoding") == "base64":
        try:
            base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            return "its body is not base64"
    for key in ("headers",):
        if payload.get(key) is not None and not isinstance(payload[key], dict):
            return f"{key} is not an object"
    for key in ("content-type", "content-encoding"):
        if payload.get(key) is not None and not isinstance(payload[key], str):
            return f"{key} is not a string"
    return None


class _RefusalOnOneLine(logging.Filter):
    """Celery's "Received invalid task message" (a pickled or undecodable task) as one line, without the
    traceback and the body dump it logs for each: the refusal is the expected outcome, not a crash."""

    def filter(self, record: logging.LogRecord) -> bool:
        from celery.exceptions import InvalidTaskError
        from kombu.exceptions import ContentDisallowed, DecodeError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, (ContentDisallowed, DecodeError, InvalidTaskError)):
            record.msg, record.args = "refused a task message and discarded it: %s", (str(exc)[:200],)
            record.exc_info = record.exc_text = None
        return True


def _reject(transport, message: dict) -> None:
    """Take a message that failed after kombu took it on (delivered, not acknowledged) off the books, so it
    does not hold the agent's one prefetch slot until the visibility timeout hands it back."""
    tag = (message.get("properties") or {}).get("delivery_tag")
    for channel in list(getattr(transport, "channels", ())):
        try:
            if tag in channel.qos._delivered:
                channel.basic_reject(tag, requeue=False)
                return
        except Exception:  # noqa: BLE001 - best effort; the visibility timeout is the fallback
            log.debug("could not reject message %s", tag, exc_info=True)


def install() -> None:
    """Guard kombu's Redis transport in this process (once)."""
    import kombu.transport.redis as kredis

    if getattr(kredis, "_fleetbench_guarded", False):
        return
    logging.getLogger("celery.worker.consumer.consumer").addFilter(_RefusalOnOneLine())
    json_loads = kredis.loads

    def loads(s, *args, **kwargs):
        try:
            return json_loads(s, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - JSONDecodeError; kombu's type hooks raise TypeError, deep nesting RecursionError
            return _Unreadable(error=f"not readable JSON ({exc.__class__.__name__}: {str(exc)[:80]})")

    deliver = kredis.Transport._deliver

    def _deliver(self, message, queue):
        why = why_not_a_message(message)
        if why is None:
            try:
                return deliver(self, message, queue)
            except (*self.connection_errors, *self.channel_errors):
                raise  # the broker itself: kombu reconnects
            except Exception as exc:  # noqa: BLE001 - one bad message must not stop the worker
                why = f"{exc.__class__.__name__}: {str(exc)[:160]}"
                _reject(self, message)
        log.error("dropped an item on queue %s that is not a Celery task message (%s); the agent goes on. "
                  "Something other than the controller writes to this broker: check who can reach it", queue, why)  # fmt: skip

    kredis.loads = loads
    kredis.Transport._deliver = _deliver
    kredis._fleetbench_guarded = True
