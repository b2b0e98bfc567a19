"""The regression feed (issue 20): change points found over every series in the store, stored once, and each
new unacknowledged regression sent to the store's webhook.

:func:`scan` runs :func:`controller.analysis.changepoints.find` on every series and metric and stores what it has
not stored yet; :func:`notify` posts each unsent regression to the webhook (``settings.webhook``: its URL and an
optional secret for an HMAC-SHA256 signature), with retries and backoff, never twice for one change point (it is
claimed in the database first; a sender that dies between the POST and marking it sent leaves it to be sent again
after ten minutes: at least once). `fleetbench regressions --notify`, from a cron job, calls them, and
`fleetbench serve` calls :func:`after_sweeps` when a sweep leaves the running state.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
from itertools import groupby
from typing import Callable

from controller.analysis.changepoints import METRICS, THRESHOLD, Point, Series, find, watched
from controller.store.models import ChangePointRow

log = logging.getLogger("fleetbench.regressions")
WEBHOOK_KEY = "webhook"
SIGNATURE_HEADER = "X-Fleetbench-Signature"
#: delivery attempts per change point, and the first wait between them (doubling)
ATTEMPTS, BACKOFF_S = 4, 0.5


class NotifyError(RuntimeError):
    """The webhook could not take a change point; the message says why."""


#: what `fleetbench regressions` scans unless told (the p90 sits between the p50 and the p99 and says little more)
DEFAULT_METRICS = ("p50_ms", "p99_ms", "throughput_ips", "accuracy_top1", "fidelity_snr_db", "energy_mj")


def scan(store, metrics: tuple[str, ...] = DEFAULT_METRICS, model: str | None = None,
         threshold: float = THRESHOLD, on_series: Callable[[int, int], None] | None = None) -> list[ChangePointRow]:  # fmt: skip
    """Find the change points of every series (of ``model``) in ``metrics`` and store the new ones; returns them."""
    now = dt.datetime.now(dt.timezone.utc)
    work = []
    for metric in metrics:
        rows = store.series_points(metric, model)
        for key, group in groupby(rows, key=lambda r: tuple(r[:6])):
            if not watched(metric, key[4]):
                continue
            work.append((metric, Series(*key), [Point(id=r[6], job_id=r[7], at=r[8], value=float(r[9])) for r in group]))
    new: list[ChangePointRow] = []
    for done, (metric, series, points) in enumerate(work, 1):
        found = find(series, metric, points, store.samples_by_id, threshold=threshold)
        rows = [ChangePointRow(model_name=series.model_name, variant=series.variant, capability=series.capability,
                               device_name=series.device_name, threads=series.threads, throughput_requests=series.throughput_requests, metric=metric,
                               before_job=f.before.job_id, after_job=f.after.job_id, before_at=f.before.at,
                               after_at=f.after.at, ratio=f.ratio, p_value=f.p_value, magnitude=f.magnitude, kind=f.kind,
                               before_value=f.before_value, after_value=f.after_value, detected_at=now) for f in found]  # fmt: skip
        if rows:
            new += store.add_change_points(rows, positions={p.job_id: i for i, p in enumerate(points)})
        if on_series:
            on_series(done, len(work))
    return new


def _utc(when: dt.datetime) -> dt.datetime:
    """A stored time in UTC (SQLite gives it back naive, PostgreSQL in its session's time zone)."""
    return when.replace(tzinfo=dt.timezone.utc) if when.tzinfo is None else when.astimezone(dt.timezone.utc)


def describe(cp: ChangePointRow) -> str:
    """One line for a person: what moved, by how much, where."""
    label = METRICS.get(cp.metric, (cp.metric,))[0]
    series = Series(cp.model_name, cp.variant, cp.capability, cp.threads, cp.throughput_requests, cp.device_name).label
    return (f"{cp.kind} #{cp.id}: {label} of {series} {cp.before_value:.4g} -> {cp.after_value:.4g} "
            f"({cp.ratio:.3f}x, p={cp.p_value:.2g}) from job {cp.after_job[:8]} on")


def as_dict(cp: ChangePointRow) -> dict:
    """A change point as JSON gives it (the webhook's ``change_point``; `fleetbench regressions --format json` adds
    its acknowledgement and delivery)."""
    return {
        "id": cp.id, "kind": cp.kind, "metric": cp.metric, "model": cp.model_name, "variant": cp.variant,
        "capability": cp.capability, "device": cp.device_name, "threads": cp.threads,
        "throughput_requests": cp.throughput_requests, "before_job": cp.before_job, "after_job": cp.after_job,
        "before_at": _utc(cp.before_at).isoformat(), "after_at": _utc(cp.after_at).isoformat(),
        "before_value": cp.before_value, "after_value": cp.after_value, "ratio": cp.ratio, "p_value": cp.p_value,
        "magnitude": cp.magnitude,
    }  # fmt: skip


def payload(cp: ChangePointRow) -> dict:
    """The JSON the webhook receives: ``text`` for Slack (and anything that shows text), and the change point."""
    return {
        "text": f":rotating_light: fleetbench {describe(cp)} {_utc(cp.after_at):%Y-%m-%d %H:%M} UTC. "
                f"Acknowledge with `fleetbench regressions ack {cp.id} --note ...`",
        "change_point": as_dict(cp),
    }  # fmt: skip


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: ``sha256=`` and the HMAC-SHA256 of the body under the secret, in hex."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post(url: str, secret: str | None, body: bytes, attempts: int = ATTEMPTS, backoff_s: float = BACKOFF_S,
         timeout_s: float = 10.0, sleep=time.sleep) -> None:  # fmt: skip
    """POST ``body`` (JSON) to ``url``, trying ``attempts`` times with doubling waits; NotifyError if none took it.
    A 4xx answer other than 408 and 429 is final (the receiver refuses it: sending again will not help)."""
    headers = {"Content-Type": "application/json", "User-Agent": "fleetbench"}
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, body)
    why = ""
    for attempt in range(attempts):
        if attempt:
            sleep(backoff_s * 2 ** (attempt - 1))
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers, method="POST"),
                                        timeout=timeout_s) as response:  # fmt: skip
                if 200 <= response.status < 300:
                    return
                why = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            why = f"HTTP {exc.code}"
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                break
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            why = str(getattr(exc, "reason", exc))
        except Exception as exc:  # noqa: BLE001 - a broken answer (IncompleteRead, ...): a failed attempt too
            why = f"{type(exc).__name__}: {exc}"
    raise NotifyError(f"the webhook did not take it after {attempt + 1} attempt(s): {why}")


def notify(store, poster=post) -> tuple[list[ChangePointRow], list[tuple[ChangePointRow, str]]]:
    """Send every unacknowledged regression the webhook has not taken: (sent, [(failed, why)]). A change point
    another sender holds is skipped; one that failed is released for the next run."""
    hook = store.setting(WEBHOOK_KEY)
    if not hook or not hook.get("url"):
        return [], []
    sent, failed = [], []
    for cp in store.unsent_regressions():
        if not store.claim_for_notify(cp.id):
            continue
        body = json.dumps(payload(cp), sort_keys=True).encode()
        try:
            poster(hook["url"], hook.get("secret"), body)
        except NotifyError as exc:
            store.finish_notify(cp.id, str(exc))
            failed.append((cp, str(exc)))
            continue
        store.finish_notify(cp.id, None)
        sent.append(cp)
    return sent, failed


def after_sweeps(store, models: set[str]) -> tuple[list[ChangePointRow], list[ChangePointRow], list[str]]:
    """What `fleetbench serve` does once sweeps finished: scan the series of their ``models`` and send the new
    regressions (only when a webhook is set: without one, `fleetbench regressions` scans when asked).
    Returns (new change points, sent, [why each failed]); a missing detector and failed deliveries are logged, a
    store error is the caller's."""
    from controller.analysis.changepoints import DetectorMissing

    if not models or not (store.setting(WEBHOOK_KEY) or {}).get("url"):
        return [], [], []
    new: list[ChangePointRow] = []
    try:
        for name in sorted(models):
            new += scan(store, model=name)
    except DetectorMissing as exc:
        log.warning("regressions: %s", exc)
        return [], [], [str(exc)]
    sent, failed = notify(store)
    for cp, why in failed:
        log.warning("regressions: change point #%s not sent (%s); the next finished sweep or "
                    "`fleetbench regressions --notify` tries again", cp.id, why)  # fmt: skip
    if new or sent:
        log.info("regressions: %d new change point(s) in %s; sent %d to the webhook", len(new), ", ".join(sorted(models)),
                 len(sent))  # fmt: skip
    return new, sent, [why for _, why in failed]
