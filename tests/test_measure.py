"""The measurement module's stopping rule, on a deterministic clock."""

import pytest

from agent.measure import STOP_MAX_DURATION, STOP_MAX_ITERATIONS, STOP_MET, measure_latency, timed
from protocol import BenchmarkSettings

MS = 1_000_000


class FakeWorkload:
    """run() advances a virtual clock by ``cost_ns``; the first call may cost more."""

    def __init__(self, cost_ns: int, first_cost_ns: int | None = None):
        self.now = 0
        self.calls = 0
        self.cost_ns = cost_ns
        self.first_cost_ns = first_cost_ns if first_cost_ns is not None else cost_ns

    def clock(self) -> int:
        return self.now

    def run(self) -> None:
        self.now += self.first_cost_ns if self.calls == 0 else self.cost_ns
        self.calls += 1


def settings(**kw) -> BenchmarkSettings:
    base = dict(warmup_iterations=5, min_iterations=10, min_duration_s=0.0, max_iterations=10_000, max_duration_s=100.0)
    base.update(kw)
    return BenchmarkSettings(**base)


@pytest.mark.parametrize(
    "cost_ms,kw,expected_samples,expected_reason",
    [
        # min_iterations dominates
        (1, dict(min_iterations=100, min_duration_s=0.01), 100, STOP_MET),
        # min_duration dominates: 50 samples of 1 ms reach 0.05 s
        (1, dict(min_iterations=10, min_duration_s=0.05), 50, STOP_MET),
        # both equal
        (2, dict(min_iterations=25, min_duration_s=0.05), 25, STOP_MET),
        # max_iterations cap before min_duration
        (1, dict(min_iterations=10, min_duration_s=10.0, max_duration_s=20.0, max_iterations=200), 200, STOP_MAX_ITERATIONS),
        # max_duration cap before min_iterations
        (1, dict(min_iterations=5000, min_duration_s=0.3, max_duration_s=0.3, max_iterations=10_000), 300, STOP_MAX_DURATION),
    ],
)
def test_stopping_rule(cost_ms, kw, expected_samples, expected_reason):
    w = FakeWorkload(cost_ms * MS)
    s = settings(**kw)
    m = measure_latency(w.run, s, clock=w.clock)
    assert len(m.samples_ns) == expected_samples
    assert m.stop_reason == expected_reason
    assert all(v == cost_ms * MS for v in m.samples_ns)
    assert bool(m.problems(s)) == (expected_reason != STOP_MET)


def test_warmup_and_first_inference_are_kept_out_of_the_samples():
    w = FakeWorkload(cost_ns=1 * MS, first_cost_ns=50 * MS)
    s = settings(warmup_iterations=7, min_iterations=20)
    m = measure_latency(w.run, s, clock=w.clock)
    assert m.first_inference_ns == 50 * MS
    assert max(m.samples_ns) == 1 * MS
    assert w.calls == 1 + 7 + len(m.samples_ns)


def test_samples_time_only_the_run_call():
    """Work between calls (the loop itself) must not show up in the samples."""
    state = {"now": 0}

    def clock():
        state["now"] += 10  # every clock read costs 10 ns of "loop overhead"
        return state["now"]

    def run():
        state["now"] += 1000

    m = measure_latency(run, settings(min_iterations=5), clock=clock)
    # t0 read, run (1000), t1 read (+10) -> exactly 1010 per sample, whatever else the loop does
    assert set(m.samples_ns) == {1010}


def test_problems_say_which_cap_stopped_the_run():
    w = FakeWorkload(1 * MS)
    s = settings(min_iterations=10, min_duration_s=10.0, max_duration_s=20.0, max_iterations=50)
    m = measure_latency(w.run, s, clock=w.clock)
    (msg,) = m.problems(s)
    assert "max_iterations" in msg and "50 samples" in msg and "min_duration_s=10.0" in msg


def test_timed_returns_result_and_duration():
    w = FakeWorkload(3 * MS)
    result, ns = timed(lambda: (w.run(), "loaded")[1], clock=w.clock)
    assert result == "loaded" and ns == 3 * MS


def test_throughput_window_is_owned_by_the_measurement_module():
    from agent.measure import measure_throughput

    w = FakeWorkload(1 * MS)

    class Pool:  # two requests in flight: two inferences per millisecond
        def run(self, stop):
            done = 0
            while not stop():
                w.now += MS // 2
                done += 1
            return done

    t = measure_throughput(Pool(), duration_s=0.1, clock=w.clock)
    assert t.completed == 200 and t.elapsed_ns == 100 * MS and t.ips == pytest.approx(2000.0)


def test_runtime_latency_replaces_the_clock_but_not_the_window():
    w = FakeWorkload(2 * MS)
    reported = iter(range(1000, 10**6))  # the runtime's own figure, different from the clock's
    m = measure_latency(w.run, settings(min_iterations=10, min_duration_s=0.05), clock=w.clock,
                        runtime_latency_ns=lambda: next(reported))  # fmt: skip
    assert len(m.samples_ns) == 25  # the 0.05 s window is still measured by the clock (25 x 2 ms)
    assert m.samples_ns[:3] == [1000, 1001, 1002]


@pytest.mark.parametrize("cost_ms, kw, boundaries", [
    # 1 s in windows of 0.25 s: three boundaries, at the first sample past each quarter
    (10, dict(sustained_s=1.0, sustained_window_s=0.25), [(25, 250 * MS), (50, 500 * MS), (75, 750 * MS)]),
    # min_iterations keeps it running to 3 s: the samples past 1 s join the last window, no more are cut
    (10, dict(sustained_s=1.0, sustained_window_s=0.25, min_iterations=300), [(25, 250 * MS), (50, 500 * MS), (75, 750 * MS)]),
    # an inference longer than a window: the windows it spans are skipped, never empty
    (300, dict(sustained_s=1.0, sustained_window_s=0.25, min_iterations=1), [(1, 300 * MS), (2, 600 * MS), (3, 900 * MS)]),
    # a window that does not divide the run: the last, shorter one counts (0.4 + 0.4 + 0.2)
    (100, dict(sustained_s=1.0, sustained_window_s=0.4), [(4, 400 * MS), (8, 800 * MS)]),
])  # fmt: skip
def test_sustained_mode_cuts_windows_only_within_sustained_s(cost_ms, kw, boundaries):
    w = FakeWorkload(cost_ms * MS)
    s = settings(**kw)
    readings = []
    m = measure_latency(w.run, s, clock=w.clock, on_window=lambda: readings.append(w.now))
    assert m.stop_reason == STOP_MET and m.elapsed_ns >= 1000 * MS
    assert list(m.boundaries) == boundaries and len(readings) == len(boundaries) <= s.windows() - 1


def test_sustained_settings_bound_the_windows_and_the_samples():
    assert BenchmarkSettings(sustained_s=1.0, sustained_window_s=0.4).windows() == 3
    assert BenchmarkSettings(sustained_s=0.9, sustained_window_s=0.3).windows() == 3  # 0.9 / 0.3 is 3.0000000000000004
    assert BenchmarkSettings(sustained_s=600).windows() == 10 and BenchmarkSettings().windows() == 0
    assert "max_iterations must be at most 10,000,000" in BenchmarkSettings(max_iterations=10_000_001).problems()[0]


def test_an_injected_slowdown_stretches_each_timed_call_by_its_factor(monkeypatch):
    from agent.measure import SLOWDOWN_ENV, injected_slowdown, stretched

    w = FakeWorkload(cost_ns=MS)

    def clock():  # the busy wait reads the clock: each read moves it 1 µs on
        w.now += 1000
        return w.now

    m = measure_latency(stretched(w.run, 1.10, clock=clock), settings(), clock=clock)
    assert all(int(1.10 * MS) <= s <= int(1.10 * MS) + 4000 for s in m.samples_ns), m.samples_ns
    monkeypatch.delenv(SLOWDOWN_ENV, raising=False)
    assert injected_slowdown() == 1.0
    monkeypatch.setenv(SLOWDOWN_ENV, "1.1")
    assert injected_slowdown() == 1.1
    for bad in ("fast", "0.9", "nan", "11"):
        monkeypatch.setenv(SLOWDOWN_ENV, bad)
        with pytest.raises(ValueError, match=f"{SLOWDOWN_ENV} must be a factor from 1.0 to 10"):
            injected_slowdown()


def test_an_injected_floor_pads_each_timed_call_to_it_and_the_slowdown_stretches_that(monkeypatch):
    """FLEETBENCH_INJECT_FLOOR_MS: a call faster than the floor takes the floor, a slower one its own time; with the
    slowdown on top, the floor is stretched (the nightly test's steady 1 ms, then 1.1 ms, whatever the host does)."""
    from agent.measure import FLOOR_ENV, injected_floor_ms, stretched

    def clock():  # the busy wait reads the clock: each read moves the workload's 1 µs on
        w.now += 1000
        return w.now

    for cost_ns, floor_ns, expect in ((MS // 4, MS, MS), (2 * MS, MS, 2 * MS)):
        w = FakeWorkload(cost_ns=cost_ns)
        m = measure_latency(stretched(w.run, 1.0, clock=clock, floor_ns=floor_ns), settings(), clock=clock)
        assert all(expect <= s <= expect + 4000 for s in m.samples_ns), (cost_ns, m.samples_ns[:5])
    w = FakeWorkload(cost_ns=MS // 4)  # the floor, then 10% of it
    m = measure_latency(stretched(w.run, 1.10, clock=clock, floor_ns=MS), settings(), clock=clock)
    assert all(int(1.10 * MS) <= s <= int(1.10 * MS) + 4000 for s in m.samples_ns), m.samples_ns[:5]
    monkeypatch.delenv(FLOOR_ENV, raising=False)
    assert injected_floor_ms() == 0.0
    monkeypatch.setenv(FLOOR_ENV, " 1.5 ")
    assert injected_floor_ms() == 1.5
    for bad in ("slow", "0", "-1", "nan", "1001"):
        monkeypatch.setenv(FLOOR_ENV, bad)
        with pytest.raises(ValueError, match=f"{FLOOR_ENV} must be a time in ms above 0 and at most 1000"):
            injected_floor_ms()
