"""Regression detection: two sets of records compared on their raw samples.

For each model × variant × capability × threads the samples of every run on a
side are concatenated (never averaged percentiles), then:

- ``ratio``: the candidate's median over the baseline's;
- ``p_value``: a two-sided Mann-Whitney U test of the two sample sets;
- ``tail_ratio``: the same for the mean of the fastest 99% of samples (the
  slowest 1% left out, so a rare hiccup does not move it);
- the verdict: a *regression* when ``p_value < alpha`` and the median ratio
  is above ``1 + threshold``, or ``tail_p_value < alpha`` and the tail ratio
  is above ``1 + tail_threshold``; an *improvement* when either fell by as
  much, with nothing worse; otherwise *same*.
  The effect-size thresholds keep trivial but significant shifts (thousands
  of samples make a 1% shift significant) from being flagged. The tail is
  there because a competing process leaves the median alone: it preempts
  one inference in five or ten and adds a scheduler slice to each (measured
  on a 0.39 ms model: p50 0.39 ms either way, mean 0.40 -> 0.86 ms). A
  percentile such as the p90 sits on the edge of those preempted samples
  and flips between 1.1x and 10x from run to run.

Sides larger than ``MAX_SAMPLES`` are thinned by an even stride before the
test (deterministic; the medians use every sample). The test assumes
independent samples; consecutive latencies are not quite that, which is why
the threshold matters. The defaults (15% on the median, 25% on the tail) are
what kept the false-alarm rate on A/A pairs of back-to-back runs near 5% on
a shared 2-core VM, where identical runs' medians differ by up to ±17%;
on a quiet, pinned machine ``--threshold 0.05`` is reasonable.
docs/benchmarks.md has the rates, measured by bench/regress.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np

from protocol import ResultRecord

ALPHA = 0.05
THRESHOLD = 0.15
TAIL_THRESHOLD = 0.25
MAX_SAMPLES = 50_000

REGRESSION, IMPROVEMENT, SAME = "regression", "improvement", "same"
ONLY_BASELINE, ONLY_CANDIDATE = "only in baseline", "only in candidate"


@dataclass(frozen=True)
class Comparison:
    model_name: str
    variant: str
    capability: str
    threads: int
    baseline_median_ms: float | None
    candidate_median_ms: float | None
    ratio: float | None
    tail_ratio: float | None
    p_value: float | None
    tail_p_value: float | None
    baseline_samples: int
    candidate_samples: int
    verdict: str

    def to_dict(self) -> dict:
        return asdict(self)


def _thin(x: np.ndarray, limit: int = MAX_SAMPLES) -> np.ndarray:
    if x.size <= limit:
        return x
    return x[:: int(np.ceil(x.size / limit))]


class Significance(NamedTuple):
    ratio: float  # median of b over median of a
    tail_ratio: float  # of the 99% trimmed means
    p_value: float  # Mann-Whitney U
    verdict: str
    tail_p_value: float = 1.0  # Kolmogorov-Smirnov


def significance(a_ns, b_ns, alpha: float = ALPHA, threshold: float = THRESHOLD,
                 tail_threshold: float = TAIL_THRESHOLD) -> Significance:  # fmt: skip
    """The ratios, the Mann-Whitney p-value and the verdict for two sets of latency samples (b against a)."""
    from scipy.stats import ks_2samp, mannwhitneyu

    a = np.asarray(a_ns, dtype=np.float64)
    b = np.asarray(b_ns, dtype=np.float64)
    if a.size < 2 or b.size < 2:
        raise ValueError("each side needs at least two samples")
    ratio = float(np.median(b) / np.median(a))
    tail_ratio = _trimmed_mean(b) / _trimmed_mean(a)
    ta, tb = _thin(a), _thin(b)
    p = float(mannwhitneyu(ta, tb, alternative="two-sided").pvalue)
    p_tail = float(ks_2samp(ta, tb).pvalue)
    shifted, reshaped = p < alpha, p_tail < alpha
    worse = (shifted and ratio > 1 + threshold) or (reshaped and tail_ratio > 1 + tail_threshold)
    better = (shifted and ratio < 1 - threshold) or (reshaped and tail_ratio < 1 / (1 + tail_threshold))
    verdict = REGRESSION if worse else IMPROVEMENT if better else SAME
    return Significance(ratio, tail_ratio, p, verdict, p_tail)


def _trimmed_mean(x: np.ndarray) -> float:
    """The mean of the samples at or below the 99th percentile."""
    return float(x[x <= np.percentile(x, 99)].mean())


def _key(r: ResultRecord, mixed: set[str]) -> tuple[str, str, str, int]:
    return (r.model_name, r.variant, labelled(r, mixed), r.settings.threads)


def labelled(r: ResultRecord, mixed: set[str]) -> str:
    """The record's capability, ``@`` where it ran when ``mixed`` (:func:`mixed_capabilities`) says its records
    come from several places: ``litert:cpu@aarch64``."""
    return r.capability if r.capability not in mixed else f"{r.capability}@{place(r)}"


def place(r: ResultRecord) -> str:
    """Where a record ran, as far as pooling goes: its machine, and whether that was emulated."""
    return r.host.machine + (" (emulated)" if r.host.emulated_by else "")


def mixed_capabilities(records: list[ResultRecord]) -> set[str]:
    """The capabilities whose records come from more than one :func:`place`: never pooled across them."""
    places: dict[str, set[str]] = {}
    for r in records:
        places.setdefault(r.capability, set()).add(place(r))
    return {c for c, p in places.items() if len(p) > 1}


def _samples(records: list[ResultRecord], mixed: set[str]) -> dict[tuple, np.ndarray]:
    out: dict[tuple, list] = {}
    for r in records:
        out.setdefault(_key(r, mixed), []).append(np.asarray(r.samples_ns, dtype=np.int64))
    return {k: np.concatenate(v) for k, v in out.items()}


def compare(baseline: list[ResultRecord], candidate: list[ResultRecord], alpha: float = ALPHA,
            threshold: float = THRESHOLD, tail_threshold: float = TAIL_THRESHOLD) -> list[Comparison]:  # fmt: skip
    """One :class:`Comparison` per key found on either side, sorted by key."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    if threshold < 0 or tail_threshold < 0:
        raise ValueError(f"the thresholds are relative changes >= 0, got {threshold} and {tail_threshold}")
    mixed = mixed_capabilities(list(baseline) + list(candidate))
    a, b = _samples(baseline, mixed), _samples(candidate, mixed)
    out = []
    for key in sorted(set(a) | set(b)):
        sa, sb = a.get(key), b.get(key)
        med_a = float(np.median(sa)) / 1e6 if sa is not None else None
        med_b = float(np.median(sb)) / 1e6 if sb is not None else None
        ratio = tail = p = p_tail = None
        if sa is None:
            verdict = ONLY_CANDIDATE
        elif sb is None:
            verdict = ONLY_BASELINE
        else:
            ratio, tail, p, verdict, p_tail = significance(sa, sb, alpha, threshold, tail_threshold)
        out.append(Comparison(*key, med_a, med_b, ratio, tail, p, p_tail, 0 if sa is None else int(sa.size),
                              0 if sb is None else int(sb.size), verdict))  # fmt: skip
    return out
