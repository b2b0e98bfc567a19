"""Latency statistics computed from raw samples, with MLPerf LoadGen validity.

Every statistic is computed from the raw per-inference samples; to merge runs,
concatenate their samples and call :func:`summarize` again (never average
percentiles).

Percentiles use linear interpolation between closest ranks (numpy's default
``method="linear"``). The standard deviation is the sample standard deviation
(``ddof=1``).

Validity follows LoadGen's early-stopping rule (``loadgen/early_stopping.cc``):
a percentile ``p`` is trusted only when at least ``n`` samples were taken, where
``n`` is the smallest count for which seeing at most one sample above the true
``p``-quantile has probability at most ``1 - confidence`` (confidence 0.99).
That gives 64 samples for p90 and 662 for p99, the figures LoadGen prints.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

#: Percentiles every record reports.
PERCENTILES: tuple[int, ...] = (50, 90, 95, 99)
#: LoadGen's early-stopping confidence.
CONFIDENCE = 0.99


@functools.lru_cache(maxsize=64)
def min_samples_for(percentile: float, confidence: float = CONFIDENCE) -> int:
    """Smallest sample count for which ``percentile`` (0-100) is valid.

    The smallest ``n`` with P(Binomial(n, 1 - q) <= 1) <= 1 - confidence,
    where ``q = percentile / 100``.
    """
    q = percentile / 100.0
    if not 0.0 < q < 1.0:
        raise ValueError(f"percentile must be strictly between 0 and 100, got {percentile}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")
    limit = math.log(1.0 - confidence)
    n = 2
    while True:
        # log(q^n + n q^(n-1) (1-q)) = (n-1) log q + log(q + n (1-q))
        log_p = (n - 1) * math.log(q) + math.log(q + n * (1.0 - q))
        if log_p <= limit:
            return n
        n += 1


@dataclass(frozen=True)
class Summary:
    """Statistics of one set of latency samples, in milliseconds."""

    count: int
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    #: One reason per percentile that had too few samples; empty when all valid.
    invalid_reasons: tuple[str, ...]

    @property
    def valid(self) -> bool:
        return not self.invalid_reasons


def validity_reasons(count: int, percentiles: Sequence[int] = PERCENTILES) -> tuple[str, ...]:
    """Why each percentile is invalid for ``count`` samples (empty if all valid)."""
    reasons = []
    for p in percentiles:
        need = min_samples_for(p)
        if count < need:
            reasons.append(f"p{p} needs at least {need} samples (MLPerf LoadGen rule), got {count}")
    return tuple(reasons)


def _linear_percentiles(sorted_ms: np.ndarray, percentiles: Sequence[int], scale: float = 1.0) -> list[float]:
    """numpy's default ("linear") percentiles of sorted data, without np.percentile's per-call overhead
    (about 250 us, most of a record's validation); the same interpolation as numpy's ``_lerp``. The values
    read are divided by ``scale`` first (sorted integer ns and ``1e6`` give the ms figures, with no float
    copy of the whole array)."""
    n = sorted_ms.size
    out = []
    for q in percentiles:
        pos = (n - 1) * (q / 100.0)
        lo = int(math.floor(pos))
        hi = min(lo + 1, n - 1)
        t = pos - lo
        a, b = float(sorted_ms[lo]) / scale, float(sorted_ms[hi]) / scale
        out.append(b - (b - a) * (1.0 - t) if t >= 0.5 else a + (b - a) * t)
    return out


def summarize_ns(samples_ns: Sequence[int]) -> Summary:
    """Summarize raw latency samples given in integer nanoseconds."""
    if len(samples_ns) == 0:
        raise ValueError("cannot summarize an empty set of latency samples")
    raw = np.asarray(samples_ns)
    if raw.dtype.kind in "iu":  # integers: finite by nature; sorted as they are, read in ms
        ordered, scale = np.sort(raw), 1e6
        if ordered[0] < 0:
            raise ValueError("latency samples must be finite and non-negative")
        ms = raw.astype(np.float64)
        ms /= 1e6
    else:
        ms = raw.astype(np.float64) / 1e6
        if not np.all(np.isfinite(ms)) or np.any(ms < 0):
            raise ValueError("latency samples must be finite and non-negative")
        ordered, scale = np.sort(ms), 1.0
    p50, p90, p95, p99 = _linear_percentiles(ordered, PERCENTILES, scale)
    return Summary(
        count=int(ms.size),
        p50_ms=p50,
        p90_ms=p90,
        p95_ms=p95,
        p99_ms=p99,
        mean_ms=float(ms.mean()),
        std_ms=float(ms.std(ddof=1)) if ms.size > 1 else 0.0,
        min_ms=float(ordered[0]) / scale,
        max_ms=float(ordered[-1]) / scale,
        invalid_reasons=validity_reasons(int(ms.size)),
    )


def window_percentiles(samples_ns: Sequence[int], counts: Sequence[int]) -> list[tuple[float, float]]:
    """(p50, p99) in ms of each run of consecutive samples (``counts`` of them in turn): a sustained run's windows."""
    raw, out, start = np.asarray(samples_ns), [], 0
    for n in counts:
        p50, p99 = _linear_percentiles(np.sort(raw[start : start + n]), (50, 99), 1e6)
        out.append((p50, p99))
        start += n
    return out
