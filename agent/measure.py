"""The one place that times inference. Backends never time themselves.

Single-stream latency, the way the vendor tools measure it:

1. the first inference is timed on its own (it often pays for lazy
   allocation and kernel selection);
2. ``warmup_iterations`` more inferences are run and discarded;
3. steady-state inferences are timed one by one, each sample covering only
   the ``run()`` call on inputs prepared once, until BOTH ``min_iterations``
   and ``min_duration_s`` are reached, or a safety cap (``max_iterations``,
   ``max_duration_s``) stops the run early; the stop reason is kept.

Sustained mode (``sustained_s``) runs step 3 for at least that long and notes where each window of
``settings.window_s()`` begins (the sample's index and the elapsed time), calling ``on_window`` there (between
two samples: what it reads is timed by neither).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Callable

from protocol import BenchmarkSettings

#: Why sampling stopped.
STOP_MET = "minimums-met"
STOP_MAX_ITERATIONS = "max-iterations"
STOP_MAX_DURATION = "max-duration"


#: Fault injection, to try a regression gate end to end (docs/readiness.md's nightly recipe): every timed
#: inference is stretched by busy-waiting to this factor of its own time (1.10 = 10% slower). The record says so
#: (an invalid record, with the reason), so an injected run is never mistaken for a measurement.
SLOWDOWN_ENV = "FLEETBENCH_INJECT_SLOWDOWN"


def injected_slowdown() -> float:
    """The factor FLEETBENCH_INJECT_SLOWDOWN asks for (1.0 when unset); ValueError names a bad value."""
    return _injected(SLOWDOWN_ENV, 1.0, lambda v: 1.0 <= v <= 10.0, "a factor from 1.0 to 10 (1.10 = 10% slower)")


#: Fault injection's steady clock, with or without the slowdown: every timed inference takes at least this many ms
#: (a busy wait to that deadline), so the run's level is the clock's, not the host's. The nightly recipe can then
#: be tried on a shared machine whose runs differ by more than the slowdown it injects (docs/readiness.md). The
#: record says so as the slowdown does.
FLOOR_ENV = "FLEETBENCH_INJECT_FLOOR_MS"


def injected_floor_ms() -> float:
    """The floor FLEETBENCH_INJECT_FLOOR_MS asks for (0.0 when unset); ValueError names a bad value."""
    return _injected(FLOOR_ENV, 0.0, lambda v: 0.0 < v <= 1000.0,
                     "a time in ms above 0 and at most 1000 (1 = each inference takes at least 1 ms)")  # fmt: skip


def _injected(name: str, unset: float, ok: Callable[[float], bool], rule: str) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return unset
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not ok(value):  # nan fails every comparison
        raise ValueError(f"{name} must be {rule}; got '{text}'")
    return value


def stretched(run: Callable[[], object], factor: float, clock: Callable[[], int] = time.perf_counter_ns,
              floor_ns: int = 0):  # fmt: skip
    """``run``, then a busy wait until the call has taken ``factor`` times its own time, or times ``floor_ns``
    where the call took less (the floor first, then the slowdown: 1 ms, then 1.1 ms)."""
    def slower():
        t0 = clock()
        result = run()
        until = t0 + int(max(clock() - t0, floor_ns) * factor)
        while clock() < until:
            pass
        return result

    return slower


@dataclass(frozen=True)
class Measurement:
    first_inference_ns: int
    samples_ns: list[int]
    stop_reason: str
    elapsed_ns: int
    #: Sustained mode: (index of the first sample, ns since sampling began) of each window after the first.
    boundaries: tuple[tuple[int, int], ...] = ()

    def problems(self, settings: BenchmarkSettings) -> list[str]:
        """Reasons the run fell short of its own minimums (empty when it did not)."""
        if self.stop_reason == STOP_MET:
            return []
        return [
            f"sampling stopped at the {self.stop_reason.replace('-', '_')} cap after "
            f"{len(self.samples_ns)} samples in {self.elapsed_ns / 1e9:.2f} s, before "
            f"min_iterations={settings.min_iterations} and min_duration_s={settings.min_duration_s} were both met"
        ]


def timed(fn: Callable[[], object], clock: Callable[[], int] = time.perf_counter_ns) -> tuple[object, int]:
    """Call ``fn`` once; return its result and the nanoseconds it took."""
    start = clock()
    result = fn()
    return result, clock() - start


def measure_latency(
    run: Callable[[], object],
    settings: BenchmarkSettings,
    clock: Callable[[], int] = time.perf_counter_ns,
    runtime_latency_ns: Callable[[], int] | None = None,
    on_window: Callable[[], object] | None = None,
) -> Measurement:
    """Measure ``run`` following the module's rules.

    With ``runtime_latency_ns`` (the runtime's own figure for the call that just
    finished, e.g. OpenVINO's ``request.latency``), each sample is that figure;
    the clock still decides when the minimum duration is met.
    """
    _, first_ns = timed(run, clock)
    for _ in range(settings.warmup_iterations):
        run()

    min_n = settings.min_iterations
    max_n = settings.max_iterations
    sustained_ns = int(settings.sustained_s * 1e9)
    min_ns = max(int(settings.min_duration_s * 1e9), sustained_ns)
    max_ns = max(int(settings.max_duration_s * 1e9), sustained_ns)
    window_ns = int(settings.window_s() * 1e9) if sustained_ns else 0
    next_window = window_ns or max_ns + 1  # never reached outside sustained mode: the loop stops at max_ns
    # the windows that fit in sustained_s (a sample past it, while min_iterations is still unmet, joins the last)
    most = settings.windows() - 1
    boundaries: list[tuple[int, int]] = []
    samples: list[int] = []
    append = samples.append
    start = clock()
    while True:
        t0 = clock()
        run()
        t1 = clock()
        append(t1 - t0 if runtime_latency_ns is None else runtime_latency_ns())
        n = len(samples)
        elapsed = t1 - start
        if n >= min_n and elapsed >= min_ns:
            reason = STOP_MET
            break
        if n >= max_n:
            reason = STOP_MAX_ITERATIONS
            break
        if elapsed >= max_ns:
            reason = STOP_MAX_DURATION
            break
        if elapsed >= next_window and len(boundaries) < most:
            boundaries.append((n, elapsed))
            while next_window <= elapsed:  # an inference longer than a window: the empty ones are skipped
                next_window += window_ns
            if on_window is not None:
                on_window()
    return Measurement(first_inference_ns=first_ns, samples_ns=samples, stop_reason=reason, elapsed_ns=elapsed,
                       boundaries=tuple(boundaries))


@dataclass(frozen=True)
class ThroughputRun:
    completed: int
    elapsed_ns: int

    @property
    def ips(self) -> float:
        return self.completed / (self.elapsed_ns / 1e9) if self.elapsed_ns > 0 else 0.0


def measure_throughput(
    pool,
    duration_s: float,
    clock: Callable[[], int] = time.perf_counter_ns,
) -> ThroughputRun:
    """Time ``pool.run(stop)``: the backend keeps its requests busy until ``stop()`` is true
    and returns how many inferences completed; this module owns the clock and the window."""
    window = int(duration_s * 1e9)
    start = clock()
    completed = pool.run(lambda: clock() - start >= window)
    return ThroughputRun(completed=completed, elapsed_ns=clock() - start)
