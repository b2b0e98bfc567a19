"""A ``ResultRecord`` flattened into named values, once: the store's columns, the CSV and any other table of
records take them from here."""

from __future__ import annotations

from protocol.profiling import int8_share


def record_fields(r) -> dict:
    """Every value of ``r`` a table shows, by name (a missing measurement is None; a missing name or word, "")."""
    f, a, lg, t = r.fidelity, r.accuracy, r.loadgen, r.throughput
    p = r.profile if r.profile is not None and not r.profile.error else None  # a profile that ran
    int8 = int8_share(p) if p is not None else None
    e = r.energy if r.energy is not None and r.energy.measured else None
    te = t.energy if t is not None and t.energy is not None and t.energy.measured else None
    waits = {w.kind: w.seconds for w in r.conditions.waits} if r.conditions else {}
    return dict(
        job_id=r.job_id, attempt=r.attempt, model_name=r.model_name, model_id=r.model_id, variant=r.variant,
        capability=r.capability, device=r.device, device_name=r.device_name, agent_id=r.agent_id,
        hostname=r.host.hostname, machine=r.host.machine, emulated_by=r.host.emulated_by, runtime=r.runtime, runtime_version=r.runtime_version,
        artifact_sha256=r.artifact_sha256, threads=r.settings.threads,
        throughput_requests=t.requests if t else 0, p50_ms=r.stats.p50_ms, p90_ms=r.stats.p90_ms,
        p99_ms=r.stats.p99_ms, mean_ms=r.stats.mean_ms, samples=r.stats.count, valid=r.validity.valid,
        throughput_ips=r.throughput_ips, accuracy_top1=r.accuracy_top1,
        accuracy_task=a.task if a else "", accuracy_top5=a.top5 if a else None,
        accuracy_mean_iou=a.mean_iou if a else None, accuracy_mae=a.mae if a else None,
        accuracy_rmse=a.rmse if a else None, top1_agreement=f.top1_agreement if f else None,
        fidelity_snr_db=f.snr_db if f else None, fidelity_cosine=f.mean_cosine if f else None,
        fidelity_max_abs_error=f.max_abs_error if f else None, fidelity_worst_output=f.worst_output if f else "",
        fidelity_warnings="; ".join(f.warnings) if f else "", precision=r.precision, model_size_bytes=r.model_size_bytes,
        peak_rss_bytes=r.peak_rss_bytes, from_source=r.from_source, loadgen_scenario=lg.scenario if lg else "",
        loadgen_verdict=lg.verdict if lg else "", profiled=r.profile is not None,
        fallback_ops=p.placement.fallback_ops if p else None, partitions=p.placement.partitions if p else None,
        int8_share=int8[0] if int8 else None, int8_by=int8[1] if int8 else "",
        energy_mj_per_inference=e.mj_per_inference if e else None, energy_avg_w=e.domains[0].avg_w if e else None,
        energy_peak_w=e.domains[0].peak_w if e else None, energy_domain=e.domains[0].name if e else "",
        energy_why=r.energy.why if r.energy is not None else "",
        disturbed=r.conditions.disturbed if r.conditions else None,
        other_cpu_cores=r.conditions.other_cpu_cores if r.conditions else None,
        throttled=r.conditions.throttled if r.conditions else None,
        cpu_affinity=",".join(map(str, r.conditions.affinity)) if r.conditions else "",
        throughput_mj_per_inference=te.mj_per_inference if te else None, cooldown_s=waits.get("cooldown"),
        quiet_wait_s=waits.get("quiet"), sustained_s=r.sustained.seconds if r.sustained else None,
        drift_ratio=r.sustained.drift_ratio if r.sustained else None, finished_at=r.finished_at,
    )  # fmt: skip
