"""``GET /api/v1/metrics``: the controller for Prometheus (any valid token; docs/fleet-setup.md has a scrape config).

Gauges are read at each scrape, from the store and the broker, so they are never stale:

- ``fleetbench_jobs{state}``: every job in the store by state;
- ``fleetbench_agents_online{capability}``: live agents (current heartbeat) offering each capability;
- ``fleetbench_queue_depth{capability}``: messages waiting on each capability's queue on the broker;
- ``fleetbench_results_backlog``: outcomes on the results list and in collectors' processing lists, not yet stored;
- ``fleetbench_records_stored``: records in the store (its rate is the ingest rate);

and the scheduler thread observes ``fleetbench_scheduler_tick_seconds`` (a histogram of one pass over every
running sweep). Without a broker the broker's figures are absent, not zero.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from controller.api.auth import auth
from controller.api.errors import _err
from controller.api.limits import API
from controller.api.state import ApiState, context

log = logging.getLogger("fleetbench.api")
router = APIRouter()
#: kombu's Redis transport keeps a queue's priority levels 3, 6 and 9 in lists of their own
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


class Metrics:
    """One app's registry: the tick histogram, and a collector that reads the gauges at each scrape."""

    def __init__(self, state: ApiState):
        from prometheus_client import CollectorRegistry, Histogram

        self.state = state
        self.registry = CollectorRegistry(auto_describe=True)
        self.tick_seconds = Histogram("fleetbench_scheduler_tick_seconds", "One scheduler pass over every running sweep",
                                      registry=self.registry,
                                      buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))  # fmt: skip
        self.registry.register(self)

    def describe(self):
        return []  # read at each scrape: nothing to declare up front

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        from controller.jobs import JobState

        st = self.state
        jobs = GaugeMetricFamily("fleetbench_jobs", "Jobs in the store, by state", labels=["state"])
        counts = st.store.job_counts_by_state()
        for s in JobState:
            jobs.add_metric([s.value], counts.get(s.value, 0))
        yield jobs
        yield GaugeMetricFamily("fleetbench_records_stored", "Benchmark records in the store", value=st.store.count_results())
        if not st.broker_url:
            return
        try:
            yield from self._broker_gauges()
        except Exception as exc:  # noqa: BLE001 - a scrape during a broker outage still gets the store's figures
            log.warning("metrics: the broker's figures are missing: %s", str(exc).splitlines()[0] if str(exc) else exc)

    def _broker_gauges(self):
        from prometheus_client.core import GaugeMetricFamily

        from protocol import RESULTS_KEY, queue_for

        d = self.state.scheduler().dispatcher
        # each queue's name, litert:cpu@aarch64 too (protocol.machines.offered): its depth has its agents beside it
        online = d.online_counts()
        agents = GaugeMetricFamily("fleetbench_agents_online", "Live agents offering a capability", labels=["capability"])
        depth = GaugeMetricFamily("fleetbench_queue_depth", "Messages waiting on a capability's queue",
                                  labels=["capability"])  # fmt: skip
        store = self.state.store
        caps = sorted(set(online) | store.agent_capabilities() | store.active_capabilities())
        pipe = d.redis.pipeline(transaction=False)
        for cap in caps:
            for suffix in _PRIORITY_SUFFIXES:
                pipe.llen(queue_for(cap) + suffix)
        lengths = pipe.execute()
        for i, cap in enumerate(caps):
            agents.add_metric([cap], online.get(cap, 0))
            depth.add_metric([cap], sum(lengths[i * len(_PRIORITY_SUFFIXES) : (i + 1) * len(_PRIORITY_SUFFIXES)]))
        yield agents
        yield depth
        backlog = int(d.redis.llen(RESULTS_KEY))
        for key in d.redis.scan_iter(match=RESULTS_KEY + ":processing:*", count=100):
            backlog += int(d.redis.llen(key))
        yield GaugeMetricFamily("fleetbench_results_backlog", "Outcomes on the broker not yet stored", value=backlog)


@router.get(f"{API}/metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"},
                       503: {"description": "the database is unreachable"}})  # fmt: skip
def metrics(role: str = Depends(auth), st: ApiState = Depends(context)) -> Response:
    """The controller's figures in Prometheus' text format (jobs by state, agents and queue depth per
    capability, results not yet stored, records stored, scheduler tick time)."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    from sqlalchemy.exc import SQLAlchemyError

    from controller.store import StoreError, redact_url

    try:
        body = generate_latest(st.metrics.registry)
    except (SQLAlchemyError, StoreError) as exc:  # a database outage: one line, and the scraper marks the target down
        log.warning("metrics: the database %s is unreachable (%s)", redact_url(st.store.url), type(exc).__name__)
        raise _err(503, "the database is unreachable; the controller's figures are back when it is") from None
    return Response(body, media_type=CONTENT_TYPE_LATEST)
