"""summarize_ns, which every record goes through twice (built on the agent, recomputed by the controller's
consistency check at ingestion): percentiles after a full np.sort (what it does) against np.partition at
the order statistics the interpolation reads (issue 16 suggested it; it is slower here, see the table).

    .venv/bin/python bench/stats.py [--runs 7]

Both are timed in the same run, interleaved, on integer-nanosecond samples like an agent's (700, a typical
record; 85,535, the demo's largest). Floor: converting the list to a float array, which both pay.
Prints one table; copy it to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from protocol.stats import PERCENTILES, _linear_percentiles  # noqa: E402


def partitioned_percentiles(ms: np.ndarray) -> list[float]:
    """The alternative: np.partition at exactly the indices the interpolation reads, then the same interpolation."""
    n = ms.size
    where = []
    for q in PERCENTILES:
        pos = (n - 1) * (q / 100.0)
        lo = int(math.floor(pos))
        where.append((lo, min(lo + 1, n - 1), pos - lo))
    part = np.partition(ms, sorted({k for lo, hi, _ in where for k in (lo, hi)}))
    out = []
    for lo, hi, t in where:
        a, b = float(part[lo]), float(part[hi])
        out.append(b - (b - a) * (1.0 - t) if t >= 0.5 else a + (b - a) * t)
    return out


def _us(fn, reps: int) -> float:
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps * 1e6


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=7)
    args = p.parse_args(argv)
    print("| samples | np.sort (kept) | np.partition (tried) | partition / sort | floor: list to array |\n|---|---|---|---|---|")
    for n, reps in ((700, 2000), (85_535, 40)):
        samples = np.random.default_rng(n).integers(50_000, 5_000_000, n).tolist()
        ms = np.asarray(samples, dtype=np.float64) / 1e6
        assert partitioned_percentiles(ms) == _linear_percentiles(np.sort(ms), PERCENTILES)
        old, new, floor = [], [], []
        for _ in range(args.runs):  # interleaved, so machine noise falls on both
            old.append(_us(lambda: _linear_percentiles(np.sort(ms), PERCENTILES), reps))
            new.append(_us(lambda: partitioned_percentiles(ms), reps))
            floor.append(_us(lambda: np.asarray(samples, dtype=np.float64), reps))
        med = statistics.median
        print(f"| {n:,} | {med(old):,.1f} us ({min(old):,.1f}-{max(old):,.1f}) | {med(new):,.1f} us "
              f"({min(new):,.1f}-{max(new):,.1f}) | {med(new) / med(old):.1f}x | {med(floor):,.1f} us |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
