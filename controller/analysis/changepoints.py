"""Change points over history (issue 20): where a series' level moved, found without a hand-set threshold and
confirmed on the raw samples with the test `fleetbench compare` uses.

A *series* is model × variant × capability × threads × throughput requests over time, one value per record:
the p50, p90 or p99 (ms), throughput (inferences/s), top-1 accuracy, the worst output's SNR (dB) or energy per
inference (mJ).

1. **Detection**: Apache Otava's E-Divisive (``otava.analysis.compute_change_points``, the former Hunter). It
   splits the series where the energy distance between the two sides is largest, over sliding windows, and keeps
   a split when a t-test between the segments either side of it gives p below ``max_pvalue``: it adapts to each
   series' own noise, with no threshold on the size of the change. Chosen over MongoDB's
   signal-processing-algorithms because it is pure Python on numpy and scipy (that one pins numpy < 2 and needs
   a C build whose failure is silent), deterministic (no permutations), and gives each change point its
   p-value. It is installed with ``--no-deps`` (its metadata pins numpy 2.2 and scipy 1.16 exactly, and pulls
   BigQuery and Slack clients this code never imports; the Makefile says so).
2. **Confirmation** on the raw samples of up to :data:`SIDE` records either side (within the neighbouring change
   points), with :func:`controller.analysis.regress.significance`, `compare`'s test: a p50 candidate is kept when
   Mann-Whitney U gives p < alpha and the medians differ by more than ``threshold``; a p90 or p99 candidate
   when Kolmogorov-Smirnov gives p < alpha and that percentile of the pooled samples moved by more than
   ``tail_threshold`` (25%). The ratio and p-value are those. The other metrics have one value per
   record, so a candidate is kept when Otava's p-value is below ``max_pvalue`` and the medians of the records'
   values either side differ by more than the threshold.

The History page and `fleetbench regressions` both call :func:`find`: one rule.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from controller.analysis.regress import ALPHA, TAIL_THRESHOLD, significance

#: metric -> (label, a higher value is worse, measured on raw latency samples)
METRICS = {
    "p50_ms": ("p50 latency (ms)", True, True),
    "p90_ms": ("p90 latency (ms)", True, True),
    "p99_ms": ("p99 latency (ms)", True, True),
    "throughput_ips": ("throughput (inferences/s)", False, False),
    "accuracy_top1": ("top-1 accuracy", False, False),
    "fidelity_snr_db": ("worst-output SNR vs fp32 (dB)", False, False),
    "energy_mj": ("energy per inference (mJ)", True, False),
}
#: E-Divisive's significance (the t-test between the segments either side of a split)
MAX_PVALUE = 0.01
#: E-Divisive's sliding window, in points
WINDOW = 30
#: the smallest relative change of the median that counts (compare's default is 15%, for two single runs; here
#: each side pools up to SIDE records, which bench/regress.py --changepoints measured against the A/A rate)
THRESHOLD = 0.05
#: records on each side of a candidate whose samples the confirmation pools
SIDE = 5
#: a change point this close (in records) to a stored one of the same series, metric and kind is that one, moved by
#: the points that arrived since (`fleetbench regressions` stores it once; History shows its acknowledgement)
SAME_WITHIN = 2
#: the fewest records a candidate needs on each side, within its neighbours: one slow run alone (the run-to-run
#: spread of a shared machine reaches 13%) is not a new level (bench/regress.py --changepoints measured it)
MIN_SIDE = 2


def _confirm(metric: str, a_ns: np.ndarray, b_ns: np.ndarray, threshold: float, tail_threshold: float) -> tuple[float, float, float]:
    """(ratio, p-value, effect threshold) of ``metric`` on the raw samples either side. The p50 is `compare`'s median
    test (Mann-Whitney U on the samples, the ratio of medians, ``threshold``); a p90 or p99 is its tail test
    (Kolmogorov-Smirnov, which sees a change of shape the ranks miss, ``tail_threshold``) on the ratio of that
    percentile itself: a tail that doubles leaves the median and even the 99%-trimmed mean nearly where they were."""
    ratio, _, p, _, p_tail = significance(a_ns, b_ns, threshold=threshold, tail_threshold=tail_threshold)
    if metric == "p50_ms":
        return ratio, p, threshold
    q = 90 if metric == "p90_ms" else 99
    return float(np.percentile(b_ns, q) / np.percentile(a_ns, q)), p_tail, tail_threshold


def watched(metric: str, throughput_requests: int) -> bool:
    """Whether change points are looked for on ``metric`` of a series: not single-stream throughput (1 / mean
    latency: the latency series already say it)."""
    return metric != "throughput_ips" or bool(throughput_requests)


def same(job: str, kind: str, other_job: str, other_kind: str, positions: dict[str, int]) -> bool:
    """Whether a change point found at ``job`` is the one stored at ``other_job``: the same record, or one at most
    :data:`SAME_WITHIN` records away in the same direction (``positions``: job id -> index in the series)."""
    if job == other_job:
        return True
    return (kind == other_kind and job in positions and other_job in positions
            and abs(positions[job] - positions[other_job]) <= SAME_WITHIN)  # fmt: skip


class DetectorMissing(RuntimeError):
    """apache-otava is not installed."""


@dataclass(frozen=True)
class Series:
    model_name: str
    variant: str
    capability: str
    threads: int
    throughput_requests: int = 0
    #: the hardware the records report: one capability name covers unlike devices (litert:cpu on a Pi, on a server)
    device_name: str = ""

    @property
    def label(self) -> str:
        extra = f", {self.throughput_requests} req" if self.throughput_requests else ""
        device = f" · {self.device_name}" if self.device_name else ""
        return (f"{self.model_name} {self.variant} on {self.capability}{device} "
                f"({self.threads} thread{'s' if self.threads != 1 else ''}{extra})")


@dataclass(frozen=True)
class Point:
    """One record of a series: its row id (for its samples), job, when it finished and the metric's value."""

    id: int
    job_id: str
    at: dt.datetime
    value: float


@dataclass(frozen=True)
class Found:
    """A confirmed change point: ``after`` is the first record of the new level."""

    series: Series
    metric: str
    index: int
    before: Point
    after: Point
    ratio: float
    p_value: float
    kind: str  # "regression" or "improvement"
    before_value: float
    after_value: float

    @property
    def magnitude(self) -> float:
        return abs(self.ratio - 1.0)


def candidates(values: Sequence[float], max_pvalue: float = MAX_PVALUE, window: int = WINDOW) -> list[tuple[int, float]]:
    """(index of the first point of the new level, p-value) of each change E-Divisive finds, in order."""
    try:
        from otava.analysis import compute_change_points
    except ImportError:
        raise DetectorMissing("change-point detection needs apache-otava: pip install --no-deps apache-otava==0.8.0 "
                              "(make venv installs it)") from None  # fmt: skip
    if len(values) < 4:
        return []
    # a list, not an array: Otava 0.8 cuts its windows only out of a sequence that is not an ndarray
    found, _ = compute_change_points([float(v) for v in values], window_len=window, max_pvalue=max_pvalue)
    return sorted((int(c.index), float(c.stats.pvalue)) for c in found)


# size: both confirmations (raw samples; values) side by side, with the bounds they share
def find(series: Series, metric: str, points: Sequence[Point], samples_of: Callable[[list[int]], dict[int, np.ndarray]],
         threshold: float = THRESHOLD, alpha: float = ALPHA, tail_threshold: float = TAIL_THRESHOLD,
         max_pvalue: float = MAX_PVALUE, side: int = SIDE) -> list[Found]:  # fmt: skip
    """The confirmed change points of one series (``points`` oldest first). ``samples_of`` maps result row ids to
    their raw samples (ns), for the latency metrics."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; one of {', '.join(METRICS)}")
    _, worse_if_higher, latency = METRICS[metric]
    values = [p.value for p in points]
    cands = candidates(values, max_pvalue)
    bounds = [0] + [i for i, _ in cands] + [len(points)]
    out = []
    for k, (i, p_detect) in enumerate(cands):
        lo, hi = max(bounds[k], i - side), min(bounds[k + 2], i + side)
        before, after = list(points[lo:i]), list(points[i:hi])
        if len(before) < MIN_SIDE or len(after) < MIN_SIDE:
            continue
        if latency:
            samples = samples_of([p.id for p in before + after])
            a = [samples[p.id] for p in before if p.id in samples]
            b = [samples[p.id] for p in after if p.id in samples]
            if not a or not b:
                continue
            a_ns, b_ns = np.concatenate(a), np.concatenate(b)
            if a_ns.size < 2 or b_ns.size < 2:
                continue
            ratio, p_value, limit = _confirm(metric, a_ns, b_ns, threshold, tail_threshold)
            if p_value >= alpha or abs(ratio - 1.0) <= limit:
                continue
            kind = "regression" if ratio > 1 else "improvement"
        else:
            med_a, med_b = float(np.median([p.value for p in before])), float(np.median([p.value for p in after]))
            if med_a == 0:
                continue
            ratio, p_value = med_b / med_a, p_detect
            if abs(med_b - med_a) <= threshold * abs(med_a):  # relative to the old level's size (an SNR may be < 0)
                continue
            kind = "regression" if (med_b > med_a) == worse_if_higher else "improvement"
        out.append(Found(series=series, metric=metric, index=i, before=points[i - 1], after=points[i], ratio=ratio,
                         p_value=p_value, kind=kind, before_value=float(np.median([p.value for p in before])),
                         after_value=float(np.median([p.value for p in after]))))  # fmt: skip
    return out
