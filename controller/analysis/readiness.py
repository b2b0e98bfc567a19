# size: the budgets file, the candidates merged from records and the verdict on each: one rule set, read in one place
"""Deployment readiness: a model's records held against a budgets file.

A budgets file (YAML)::

    required: ["litert:cpu", "openvino:*"]   # device classes that must have a passing variant
    budgets:
      - devices: "litert:*"                  # a capability, or a glob over capabilities ("*" = all)
        p90_ms: 0.05                         # any of p50_ms, p90_ms, p95_ms, p99_ms
        accuracy_drop_max: 1.0               # top-1 points below the fp32 variant on that device
        top1_agreement_min: 0.99             # top-1 agreement with the fp32 outputs (0-1); also fidelity_min
        snr_db_min: 30                       # the worst output's SNR against the fp32 outputs, in dB
        cosine_min: 0.999                    # the worst output's mean cosine similarity
        memory_max_mb: 300                   # peak resident memory of the benchmark process, MiB (2^20 bytes)
        size_max_mb: 1                       # the variant's file, MiB
        throughput_min: 1000                 # inferences per second
        fallback_ops_max: 0                  # ops the profile saw fall back off the target (a delegate, XNNPACK)
        int8_time_share_min: 0.9             # int8 variants: share of the profiled node time in int8 (0-1)
        energy_per_inference_mj_max: 5       # millijoules per inference, from the device's own sensor
        power_w_max: 10                      # average watts over the latency phase (the sensor's first domain)
        drift_ratio_max: 1.1                 # sustained runs: last window's p50 over the first's (settings.sustained_s)

For each capability, the first rule whose ``devices`` matches applies; a
capability no rule matches is judged against nothing but validity.

A candidate is one capability × variant × thread setting. Its records (every
one of the sweep with ``--sweep``; otherwise the newest) are merged: samples
concatenated before percentiles are taken, accuracy and top-1 agreement
averaged, the SNR and cosine the worst of any record,
memory the highest, throughput the median, the fallback ops the most and the
int8 time share the least of any profiled record (``profile: true``; a
candidate without a profile fails a profile budget, and says how to get one),
and the energy per inference and average power the highest of any record with
a valid energy figure (a candidate with none fails an energy budget, with the
device's reason: ``no energy sensor: ...``), and the drift the highest of any
sustained run (``sustained_s``; a candidate with none fails a drift budget and
says how to get one). Records that were disturbed or throttled are counted in a
warning under the verdicts: their speed may not be the device's own.
A percentile that has too few samples under the MLPerf LoadGen rule is not
used: it is a failure reason of its own.

Recommendation, per capability, among the passing candidates: the most
accurate (accuracy, else fidelity); within 0.1 point of it, the one with the
lowest latency at the budget's percentile (p90 when the budget sets none);
then the smaller file; then the variant's name. The most accurate passing
candidate is never dominated, so it lies on the Pareto front of latency
against accuracy.
"""

from __future__ import annotations

import fnmatch
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from controller.analysis.regress import labelled, mixed_capabilities
from protocol import ResultRecord
from protocol.profiling import int8_share
from protocol.stats import min_samples_for

PERCENTILE_KEYS = {"p50_ms": 50, "p90_ms": 90, "p95_ms": 95, "p99_ms": 99}
LIMIT_KEYS = ("accuracy_drop_max", "fidelity_min", "top1_agreement_min", "snr_db_min", "cosine_min", "memory_max_mb",
              "size_max_mb", "throughput_min", "fallback_ops_max", "int8_time_share_min", "energy_per_inference_mj_max",
              "power_w_max", "drift_ratio_max")  # fmt: skip
#: Budget keys that are fractions (0-1).
FRACTION_KEYS = ("fidelity_min", "cosine_min", "int8_time_share_min")
NO_PROFILE = "no profile: add `profile: true` to the sweep spec and run it again"
NO_SUSTAINED = "no sustained run: add `sustained_s: 600` to the sweep's settings and run it again"
MIB = 2**20
TIE_POINTS = 0.1


class BudgetError(ValueError):
    """The budgets file is wrong; the message names the entry and says what is allowed."""


@dataclass(frozen=True)
class Budget:
    devices: str = "*"
    latency_ms: dict[int, float] = field(default_factory=dict)  # percentile -> limit
    accuracy_drop_max: float | None = None
    #: top-1 agreement with the fp32 outputs (budget keys fidelity_min and top1_agreement_min)
    fidelity_min: float | None = None
    snr_db_min: float | None = None
    cosine_min: float | None = None
    memory_max_mb: float | None = None
    size_max_mb: float | None = None
    throughput_min: float | None = None
    fallback_ops_max: float | None = None
    #: int8 variants only: the share of the profiled node time spent in int8 kernels (0-1)
    int8_time_share_min: float | None = None
    energy_per_inference_mj_max: float | None = None
    power_w_max: float | None = None
    drift_ratio_max: float | None = None

    @property
    def percentile(self) -> int:
        """The percentile the budget judges latency at (the strictest it names; p90 if none)."""
        return max(self.latency_ms) if self.latency_ms else 90


@dataclass(frozen=True)
class Budgets:
    required: tuple[str, ...]
    rules: tuple[Budget, ...]

    def for_capability(self, capability: str, machine: str = "") -> Budget:
        for rule in self.rules:
            if matches(capability, rule.devices, machine):
                return rule
        return Budget(devices=capability)


def matches(capability: str, pattern: str, machine: str = "") -> bool:
    """Whether a capability (a candidate's, maybe ``litert:cpu@aarch64`` where machines differ) is one ``pattern``
    names: the pattern may name the capability alone (``litert:*``) or with the machine (``litert:*@aarch64``)."""
    base = capability.partition("@")[0]
    return any(fnmatch.fnmatchcase(name, pattern) for name in (capability, base) + ((f"{base}@{machine}",) if machine else ()))


def parse_budgets(doc: dict, source: str = "budgets") -> Budgets:
    if not isinstance(doc, dict):
        raise BudgetError(f"{source}: expected a mapping with 'budgets' (and 'required')")
    unknown = set(doc) - {"required", "budgets"}
    if unknown:
        raise BudgetError(f"{source}: unknown key(s) {', '.join(sorted(unknown))}; allowed: required, budgets")
    required = doc.get("required") or []
    if isinstance(required, str):
        required = [required]
    if not all(isinstance(r, str) and r for r in required):
        raise BudgetError(f"{source}: 'required' is a list of capabilities or globs, e.g. [\"litert:cpu\"]")
    rules = []
    for i, entry in enumerate(doc.get("budgets") or []):
        where = f"{source}: budgets[{i}]"
        if not isinstance(entry, dict):
            raise BudgetError(f"{where}: expected a mapping")
        allowed = {"devices", *PERCENTILE_KEYS, *LIMIT_KEYS}
        bad = set(entry) - allowed
        if bad:
            raise BudgetError(f"{where}: unknown key(s) {', '.join(sorted(bad))}; allowed: {', '.join(sorted(allowed))}")
        values = {}
        for key in set(entry) - {"devices"}:
            v = entry[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (v < 0 and key != "snr_db_min"):
                raise BudgetError(f"{where}: {key} must be a number >= 0, got {v!r}")
            values[key] = float(v)
        if "fidelity_min" in values and "top1_agreement_min" in values:
            raise BudgetError(f"{where}: fidelity_min and top1_agreement_min are the same limit; give one")
        if "top1_agreement_min" in values:
            values["fidelity_min"] = values.pop("top1_agreement_min")
        for key in FRACTION_KEYS:
            if key in values and values[key] > 1:
                shown = "top1_agreement_min" if key == "fidelity_min" and "fidelity_min" not in entry else key
                raise BudgetError(f"{where}: {shown} is a fraction (0-1), got {values[key]}")
        devices = entry.get("devices", "*")
        if not isinstance(devices, str) or not devices:
            raise BudgetError(f"{where}: devices is a capability or a glob such as 'openvino:*'")
        rules.append(Budget(devices=devices, latency_ms={PERCENTILE_KEYS[k]: values.pop(k) for k in list(values)
                                                         if k in PERCENTILE_KEYS}, **values))  # fmt: skip
    return Budgets(required=tuple(required), rules=tuple(rules))


def load_budgets(path: Path) -> Budgets:
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise BudgetError(f"cannot read the budgets file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise BudgetError(f"{path}: not UTF-8 text (byte {exc.start}); save the budgets file as UTF-8 YAML") from None
    except yaml.YAMLError as exc:
        raise BudgetError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
    return parse_budgets(doc, str(path))


# ---------------------------------------------------------------- candidates


@dataclass(frozen=True)
class Candidate:
    capability: str  # with "@<machine>" where the records' machines differ
    variant: str
    threads: int
    device_name: str
    runs: int
    samples: int
    percentiles_ms: dict[int, float]
    accuracy: float | None  # 0-1
    fidelity: float | None  # top-1 agreement with the fp32 outputs, 0-1
    snr_db: float | None  # the worst output's SNR in any record
    cosine: float | None  # the worst output's mean cosine in any record
    memory_mb: float
    size_mb: float
    throughput_ips: float
    #: Why its fidelity may mean nothing (a constant reference), from any of its records.
    warnings: tuple[str, ...] = ()
    #: From its profiled records (None without one): the most ops fallen back off the target, the target, and
    #: the least share in int8 with what it is a share of ("time", or "ops" where the runtime gave no per-op time).
    fallback_ops: int | None = None
    target: str = ""
    int8_share: float | None = None
    int8_by: str = ""
    #: From its records with a valid energy figure (None without one): the most millijoules per inference and
    #: average watts; else why there is none.
    energy_mj: float | None = None
    power_w: float | None = None
    no_energy: str = ""
    #: The highest drift ratio of its sustained runs (None without one).
    drift_ratio: float | None = None
    #: the machine architecture its records ran on ("" from agents that did not say)
    machine: str = ""

    @property
    def name(self) -> str:
        return f"{self.capability} {self.variant} ({self.threads} thread{'s' if self.threads != 1 else ''})"


def candidates(records: list[ResultRecord]) -> list[Candidate]:
    """Merge records per capability × variant × threads (see the module docstring), never across machines: where
    one capability's records come from several (an x86-64 server and an aarch64 board both run ``litert:cpu``),
    each candidate's capability names its machine (``litert:cpu@aarch64``)."""
    mixed = mixed_capabilities(records)
    groups: dict[tuple, list[ResultRecord]] = {}
    for r in records:
        groups.setdefault((labelled(r, mixed), r.variant, r.settings.threads), []).append(r)
    out = []
    for (cap, variant, threads), rs in sorted(groups.items()):
        ms = np.concatenate([np.asarray(r.samples_ns, dtype=np.float64) for r in rs]) / 1e6
        pct = dict(zip(PERCENTILE_KEYS.values(), np.percentile(ms, list(PERCENTILE_KEYS.values()))))
        acc = [r.accuracy_top1 for r in rs if r.accuracy_top1 is not None]
        fid = [r.fidelity.top1_agreement for r in rs if r.fidelity is not None and r.fidelity.top1_agreement is not None]
        snr = [r.fidelity.snr_db for r in rs if r.fidelity is not None and r.fidelity.snr_db is not None]
        cos = [r.fidelity.mean_cosine for r in rs if r.fidelity is not None]
        tput = [r.throughput.ips if r.throughput else r.throughput_ips for r in rs]
        profiles = [r.profile for r in rs if r.profile is not None and not r.profile.error]
        shares = [s for s in (int8_share(p) for p in profiles) if s is not None]
        least = min(shares) if shares else None
        energies = [r.energy for r in rs if r.energy is not None and r.energy.measured]
        drifts = [r.sustained.drift_ratio for r in rs if r.sustained is not None and r.sustained.drift_ratio is not None]
        out.append(Candidate(
            capability=cap, machine=rs[0].host.machine, variant=variant, threads=threads, device_name=rs[0].device_name, runs=len(rs),
            samples=int(ms.size), percentiles_ms={p: float(v) for p, v in pct.items()},
            accuracy=float(np.mean(acc)) if acc else None, fidelity=float(np.mean(fid)) if fid else None,
            snr_db=min(snr) if snr else None, cosine=min(cos) if cos else None,
            memory_mb=max(r.peak_rss_bytes for r in rs) / MIB, size_mb=rs[0].model_size_bytes / MIB,
            throughput_ips=float(statistics.median(tput)),
            warnings=tuple(dict.fromkeys(w for r in rs if r.fidelity for w in r.fidelity.warnings)) + _condition_warnings(rs),
            fallback_ops=max(p.placement.fallback_ops for p in profiles) if profiles else None,
            target=profiles[0].placement.target if profiles else "",
            int8_share=least[0] if least else None, int8_by=least[1] if least else "",
            energy_mj=max(e.mj_per_inference for e in energies) if energies else None,
            power_w=max(e.domains[0].avg_w for e in energies) if energies else None,
            no_energy=next((r.energy.why for r in rs if r.energy is not None and r.energy.why), "") or
            "no energy measured: these records come from an agent without the energy phase",
            drift_ratio=max(drifts) if drifts else None,
        ))  # fmt: skip
    return out


def _condition_warnings(rs: list[ResultRecord]) -> tuple[str, ...]:
    """Records whose speed may not be the device's own: other processes busy during them, a clock that fell."""
    out = []
    for flag, what in (("disturbed", "disturbed by other processes' CPU use"), ("throttled", "throttled (a clock fell or the platform reported throttling)")):
        n = sum(1 for r in rs if r.conditions is not None and getattr(r.conditions, flag))
        if n:
            out.append(f"{n} of {len(rs)} record(s) {what}: run them again on a quiet, cool device")
    return tuple(out)


def _fp32_accuracy(c: Candidate, pool: list[Candidate]) -> float | None:
    """The fp32 variant's accuracy on the same capability (same family first), else on any capability."""
    family = c.variant.split("-")[0]
    for same_cap in (True, False):
        for other in pool:
            if other.accuracy is None or not other.variant.endswith("fp32"):
                continue
            if same_cap and other.capability == c.capability and other.variant.split("-")[0] == family:
                return other.accuracy
            if not same_cap:
                return other.accuracy
    return None


# ---------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class Verdict:
    candidate: Candidate
    budget: Budget
    reasons: tuple[str, ...]
    fp32_accuracy: float | None

    @property
    def passed(self) -> bool:
        return not self.reasons


def judge(c: Candidate, budget: Budget, fp32_accuracy: float | None) -> Verdict:
    reasons = []
    for p, limit in sorted(budget.latency_ms.items()):
        need = min_samples_for(p)
        if c.samples < need:
            reasons.append(f"p{p} is not valid: {c.samples} samples, the MLPerf LoadGen rule needs {need}; "
                           "run longer (min_iterations)")  # fmt: skip
        elif c.percentiles_ms[p] > limit:
            reasons.append(f"p{p} latency {c.percentiles_ms[p]:.4g} ms > {limit:g} ms")
    if budget.accuracy_drop_max is not None:
        if c.accuracy is None:
            reasons.append("no accuracy measured: benchmark with a labelled data set")
        elif fp32_accuracy is None:
            reasons.append("no fp32 accuracy to compare with: benchmark the fp32 variant too")
        else:
            drop = (fp32_accuracy - c.accuracy) * 100
            if drop > budget.accuracy_drop_max:
                reasons.append(f"accuracy {c.accuracy:.2%} is {drop:.2f} points below fp32 ({fp32_accuracy:.2%}) "
                               f"> {budget.accuracy_drop_max:g}")  # fmt: skip
    no_fidelity = "no fidelity measured: benchmark with a data set and the fp32 reference outputs"
    if budget.fidelity_min is not None:
        if c.fidelity is None:
            reasons.append(no_fidelity if c.cosine is None else "no top-1 agreement: no output holds class scores; "
                           "budget snr_db_min or cosine_min instead")  # fmt: skip
        elif c.fidelity < budget.fidelity_min:
            reasons.append(f"top-1 agreement with fp32 {c.fidelity:.4f} < {budget.fidelity_min:g}")
    for limit, value, label, fmt in [(budget.snr_db_min, c.snr_db, "SNR", ".1f"), (budget.cosine_min, c.cosine, "cosine", ".6f")]:
        if limit is None:
            continue
        if value is None:
            reasons.append(no_fidelity)
        elif value < limit:
            reasons.append(f"worst-output {label} {value:{fmt}}{' dB' if label == 'SNR' else ''} < {limit:g}")
    if budget.memory_max_mb is not None and c.memory_mb > budget.memory_max_mb:
        reasons.append(f"peak memory {c.memory_mb:.1f} MiB > {budget.memory_max_mb:g} MiB")
    if budget.size_max_mb is not None and c.size_mb > budget.size_max_mb:
        reasons.append(f"model size {c.size_mb:.3f} MiB > {budget.size_max_mb:g} MiB")
    if budget.throughput_min is not None and c.throughput_ips < budget.throughput_min:
        reasons.append(f"throughput {c.throughput_ips:,.1f}/s < {budget.throughput_min:g}/s")
    reasons += _profile_reasons(c, budget)
    for limit, value, text in [(budget.energy_per_inference_mj_max, c.energy_mj, "energy per inference {:.4g} mJ > {:g} mJ"),
                               (budget.power_w_max, c.power_w, "average power {:.3g} W > {:g} W")]:  # fmt: skip
        if limit is None:
            continue
        if value is None:
            reasons.append(c.no_energy)
        elif value > limit:
            reasons.append(text.format(value, limit))
    if budget.drift_ratio_max is not None:
        if c.drift_ratio is None:
            reasons.append(NO_SUSTAINED)
        elif c.drift_ratio > budget.drift_ratio_max:
            reasons.append(f"sustained p50 drift {c.drift_ratio:.3f}x > {budget.drift_ratio_max:g}x")
    return Verdict(c, budget, tuple(reasons), fp32_accuracy)


def _profile_reasons(c: Candidate, budget: Budget) -> list[str]:
    """The profile budgets: ops fallen back off the target, and the int8 time share of an int8 variant."""
    reasons = []
    if budget.fallback_ops_max is not None:
        if c.fallback_ops is None:
            reasons.append(NO_PROFILE)
        elif c.fallback_ops > budget.fallback_ops_max:
            reasons.append(f"{c.fallback_ops} ops fell back off {c.target} > {budget.fallback_ops_max:g}")
    if budget.int8_time_share_min is not None and "int8" in c.variant:
        if c.int8_share is None:
            reasons.append(NO_PROFILE if c.fallback_ops is None else "the profile knows no node's precision")
        elif c.int8_by != "time":
            reasons.append(f"no per-op time on {c.capability} to take an int8 time share from ({c.int8_share:.1%} of "
                           "the nodes ran in int8)")  # fmt: skip
        elif c.int8_share < budget.int8_time_share_min:
            reasons.append(f"int8 time share {c.int8_share:.1%} < {budget.int8_time_share_min:.0%}")
    return reasons


def recommend(verdicts: list[Verdict]) -> dict[str, Verdict]:
    """The recommended passing candidate per capability (the rule is in the module docstring)."""
    best: dict[str, Verdict] = {}
    by_cap: dict[str, list[Verdict]] = {}
    for v in verdicts:
        if v.passed:
            by_cap.setdefault(v.candidate.capability, []).append(v)
    for cap, vs in by_cap.items():
        quality = [(v.candidate.accuracy if v.candidate.accuracy is not None else v.candidate.fidelity) for v in vs]
        top = max((q for q in quality if q is not None), default=None)
        near = [v for v, q in zip(vs, quality) if top is None or (q is not None and (top - q) * 100 <= TIE_POINTS)]
        best[cap] = min(near, key=lambda v: (v.candidate.percentiles_ms[v.budget.percentile], v.candidate.size_mb,
                                             v.candidate.variant, v.candidate.threads))  # fmt: skip
    return best


@dataclass(frozen=True)
class Readiness:
    model: str
    verdicts: list[Verdict]
    recommended: dict[str, Verdict]
    #: required device class -> the capabilities that have a passing candidate
    required: dict[str, list[str]]
    #: required device class with no candidate at all -> why no variant exists there
    absent: dict[str, str] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return all(self.required.values())

    @property
    def missing(self) -> list[str]:
        return [r for r, caps in self.required.items() if not caps]

    def why_missing(self, req: str) -> str:
        """"no variant exists" (and why) apart from "no variant passes"."""
        if req in self.absent:
            return f"no variant of {self.model} exists for {req}: {self.absent[req]}"
        return f"no variant of {self.model} passes on {req}"


def assess(
    model: str, records: list[ResultRecord], budgets: Budgets, why_absent: Callable[[str], str] = lambda req: ""
) -> Readiness:
    """``why_absent(req)``: why no record matches a required class (the store's failed jobs, say)."""
    pool = candidates(records)
    verdicts = [judge(c, budgets.for_capability(c.capability, c.machine), _fp32_accuracy(c, pool)) for c in pool]
    passing = {(v.candidate.capability, v.candidate.machine) for v in verdicts if v.passed}
    required = {r: sorted({c for c, m in passing if matches(c, r, m)}) for r in budgets.required}
    absent = {
        r: why_absent(r) or "no variant was benchmarked there; add it to a sweep's devices"
        for r in budgets.required if not any(matches(c.capability, r, c.machine) for c in pool)
    }  # fmt: skip
    return Readiness(model, verdicts, recommend(verdicts), required, absent)


# ---------------------------------------------------------------- outputs
