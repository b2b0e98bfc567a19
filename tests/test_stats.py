"""Statistics against hand-computed tables, and the LoadGen validity rule."""

import math

import pytest

from protocol.stats import min_samples_for, summarize_ns, validity_reasons

MS = 1_000_000  # ns per ms


# (samples in ms, expected p50, p90, p95, p99, mean, std(ddof=1), min, max) — computed by hand:
# linear interpolation at rank q*(n-1).
TABLE = [
    # 1..10: ranks 4.5, 8.1, 8.55, 8.91; variance = 82.5/9
    ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 5.5, 9.1, 9.55, 9.91, 5.5, math.sqrt(82.5 / 9), 1, 10),
    # constant samples
    ([4, 4, 4, 4], 4, 4, 4, 4, 4, 0.0, 4, 4),
    # one sample: std defined as 0
    ([7], 7, 7, 7, 7, 7, 0.0, 7, 7),
    # 0..99: ranks 49.5, 89.1, 94.05, 98.01
    (list(range(100)), 49.5, 89.1, 94.05, 98.01, 49.5, math.sqrt(sum((i - 49.5) ** 2 for i in range(100)) / 99), 0, 99),
    # unsorted input, odd count: sorted = 1,2,3,10,20 -> ranks 2, 3.6, 3.8, 3.96
    ([20, 1, 10, 3, 2], 3, 16, 18, 19.6, 7.2, math.sqrt(((20 - 7.2) ** 2 + 6.2**2 + 2.8**2 + 4.2**2 + 5.2**2) / 4), 1, 20),
]


@pytest.mark.parametrize("samples,p50,p90,p95,p99,mean,std,lo,hi", TABLE)
def test_summary_matches_hand_computed_table(samples, p50, p90, p95, p99, mean, std, lo, hi):
    s = summarize_ns([v * MS for v in samples])
    assert s.count == len(samples)
    for got, want in [
        (s.p50_ms, p50),
        (s.p90_ms, p90),
        (s.p95_ms, p95),
        (s.p99_ms, p99),
        (s.mean_ms, mean),
        (s.std_ms, std),
        (s.min_ms, lo),
        (s.max_ms, hi),
    ]:
        assert got == pytest.approx(want, abs=1e-9)


def test_nanosecond_samples_convert_to_milliseconds():
    s = summarize_ns([1500, 2500])  # 1.5 µs and 2.5 µs
    assert s.p50_ms == pytest.approx(0.002)
    assert s.min_ms == pytest.approx(0.0015)


@pytest.mark.parametrize(
    "percentile,minimum",
    [
        (90, 64),  # the figures MLPerf LoadGen prints
        (99, 662),
        (50, 11),
        (95, 130),
        (99.9, 6636),
    ],
)
def test_min_samples_table(percentile, minimum):
    assert min_samples_for(percentile) == minimum


@pytest.mark.parametrize("percentile", [50, 90, 95, 99])
def test_min_samples_is_the_smallest_count_meeting_the_binomial_bound(percentile):
    q = percentile / 100

    def p_at_most_one_over(n):  # P(Binomial(n, 1-q) <= 1)
        return q**n + n * q ** (n - 1) * (1 - q)

    n = min_samples_for(percentile)
    assert p_at_most_one_over(n) <= 0.01 < p_at_most_one_over(n - 1)


@pytest.mark.parametrize(
    "count,invalid",
    [
        (10, ["p50", "p90", "p95", "p99"]),
        (11, ["p90", "p95", "p99"]),
        (63, ["p90", "p95", "p99"]),
        (64, ["p95", "p99"]),
        (129, ["p95", "p99"]),
        (130, ["p99"]),
        (661, ["p99"]),
        (662, []),
        (100_000, []),
    ],
)
def test_validity_rule_by_sample_count(count, invalid):
    reasons = validity_reasons(count)
    assert [r.split()[0] for r in reasons] == invalid
    for r in reasons:
        assert f"got {count}" in r


def test_summary_carries_validity():
    assert not summarize_ns([MS] * 63).valid
    s = summarize_ns([MS] * 662)
    assert s.valid and s.invalid_reasons == ()


def test_merging_runs_joins_raw_samples():
    a = [1 * MS] * 50
    b = [3 * MS] * 50
    merged = summarize_ns(a + b)
    # Averaging the two runs' p90 would give 2.0 ms; the joined samples' p90 is 3.0 ms.
    assert merged.p90_ms == pytest.approx(3.0)
    assert merged.count == 100


@pytest.mark.parametrize("bad", [[], [-1], [float("nan")]])
def test_bad_samples_are_refused(bad):
    with pytest.raises(ValueError):
        summarize_ns(bad)


@pytest.mark.parametrize("bad", [0, 100, -5, 150])
def test_min_samples_refuses_out_of_range_percentiles(bad):
    with pytest.raises(ValueError):
        min_samples_for(bad)


@pytest.mark.parametrize("n", [1, 2, 3, 11, 64, 700, 2001])
def test_fast_percentiles_equal_numpys_linear_method(n):
    import numpy as np

    from protocol.stats import PERCENTILES, _linear_percentiles

    x = np.random.default_rng(n).random(n) * 10
    assert _linear_percentiles(np.sort(x), PERCENTILES) == [float(v) for v in np.percentile(x, PERCENTILES)]


@pytest.mark.parametrize("n", [1, 2, 5, 700, 85_535])
def test_percentiles_of_unsorted_samples_with_ties_equal_numpys(n):
    import numpy as np

    from protocol.stats import PERCENTILES, _linear_percentiles, summarize_ns

    rng = np.random.default_rng(n)
    x = rng.integers(1_000, 50_000, n).astype(np.float64)  # integer ns: many ties, in no order
    assert _linear_percentiles(np.sort(x), PERCENTILES) == [float(v) for v in np.percentile(x, PERCENTILES)]
    s = summarize_ns(x.astype(np.int64).tolist())
    assert [s.p50_ms, s.p90_ms, s.p95_ms, s.p99_ms] == [float(v) for v in np.percentile(x / 1e6, PERCENTILES)]
