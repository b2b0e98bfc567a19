"""What the routes share: the store, the artifacts, the tokens and limits, and the scheduler thread (which also
scans for regressions and sends them to the store's webhook when a sweep finishes)."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future

from fastapi import Request

from controller.config import FLEET_RECORD_S
from controller.jobs import SweepState

log = logging.getLogger("fleetbench.api")


class ApiState:
    """The API's scheduler: one thread ticking every running sweep."""

    def __init__(self, store, artifacts, broker_url, public_url, paths):
        self.store, self.artifacts, self.broker_url, self.public_url, self.paths = (
            store,
            artifacts,
            broker_url,
            public_url,
            paths,
        )
        self.tokens = None  # Tokens, set by create_app
        self.max_upload_bytes = 0
        self.max_array_bytes = 0
        self._lock = threading.Lock()
        self._scheduler = None
        self._stop = threading.Event()
        self.metrics = None  # controller.api.metrics.Metrics, set by create_app
        self._running: set[str] = set()  # the sweeps running at the last tick
        self._scanning = threading.Lock()  # one regressions scan at a time

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
        models = prepare_models(
            spec,
            self.store,
            self.artifacts,
            service.local_runner(self.artifacts),
            workdir=self.paths.run / "sweeps",
            max_model_bytes=max(self.max_upload_bytes, service.max_model_bytes()),
        )  # what it took it takes
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
                running = [row.sweep_id for row in self.store.sweeps() if row.state == SweepState.RUNNING]
                self.track(running)
                with self.metrics.tick_seconds.time():  # /api/v1/metrics: fleetbench_scheduler_tick_seconds
                    for sweep_id in running:
                        s.tick(sweep_id)
                if running:
                    s.drain(block_s=0.5)  # wake as soon as an outcome arrives
                    continue
            except Exception as exc:  # noqa: BLE001 - outages: try again next time
                log.warning("scheduler: %s", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                time.sleep(2.0)
            time.sleep(0.5)

    def track(self, running: list[str]):
        """The sweeps running now: those that ran at the last tick and no longer do go to :meth:`finished`."""
        done, self._running = self._running - set(running), set(running)
        return self.finished(done)

    def finished(self, sweep_ids: set[str]) -> Future | None:
        """Sweeps that left the running state (done, cancelled or superseded): their models' series are scanned and
        new regressions sent to the webhook (:func:`controller.regressions.after_sweeps`) on a daemon thread, one
        scan at a time, so neither the scheduler nor a shutdown waits for a slow webhook (a delivery cut short is
        sent again later: `fleetbench regressions --notify` from cron stays the backstop). Returns its future."""
        if not sweep_ids:
            return None
        from controller.regressions import after_sweeps

        future: Future = Future()

        def run():
            with self._scanning:
                try:
                    models = {j.model_name for sweep_id in sweep_ids for j in self.store.jobs(sweep_id)}
                    future.set_result(after_sweeps(self.store, models))
                except Exception as exc:  # noqa: BLE001 - a store outage: `fleetbench regressions --notify` catches up
                    log.warning("regressions after sweep(s) %s: %s", ", ".join(s[:8] for s in sorted(sweep_ids)),
                                str(exc).splitlines()[0] if str(exc) else type(exc).__name__)  # fmt: skip
                    future.set_result(([], [], [str(exc)]))

        threading.Thread(target=run, name="regressions", daemon=True).start()
        return future


def context(request: Request) -> "ApiState":
    """The app's shared state, for a route (``st: ApiState = Depends(context)``)."""
    return request.app.state.fleetbench
