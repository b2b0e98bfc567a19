"""SQLAlchemy tables. A record lives in ``record`` (JSON) and, for its raw samples, ``samples`` (the
compact FBS1 blob of :mod:`protocol.samples`); the columns beside them are the fields dashboards filter
and sort on."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (JSON, BigInteger, Boolean, DateTime, Float, Index, Integer, LargeBinary, String, Text, UniqueConstraint,
                        false)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JSONType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    pass


class Result(Base):
    __tablename__ = "results"
    __table_args__ = (
        UniqueConstraint("job_id", "attempt", name="uq_results_job_attempt"),
        Index("ix_results_model_variant", "model_id", "variant"),
        Index("ix_results_capability", "capability"),
        Index("ix_results_finished_at", "finished_at"),
        Index("ix_results_sweep", "sweep_id"),
        Index("ix_results_device_name", "device_name"),
        Index("ix_results_model_time", "model_id", "finished_at"),
        Index("ix_results_hostname", "hostname"),
        Index("ix_results_profiled", "profiled", "model_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(String(64), nullable=False)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    model_id: Mapped[str] = mapped_column(String(64), nullable=False)
    model_name: Mapped[str] = mapped_column(String(200), nullable=False)
    artifact_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    variant: Mapped[str] = mapped_column(String(64), nullable=False)
    runtime: Mapped[str] = mapped_column(String(32), nullable=False)
    runtime_version: Mapped[str] = mapped_column(String(64), nullable=False)
    capability: Mapped[str] = mapped_column(String(128), nullable=False)
    device: Mapped[str] = mapped_column(String(64), nullable=False)
    device_name: Mapped[str] = mapped_column(String(256), nullable=False)
    hostname: Mapped[str] = mapped_column(String(256), nullable=False)
    agent_id: Mapped[str] = mapped_column(String(128), nullable=False)
    p50_ms: Mapped[float] = mapped_column(Float, nullable=False)
    p90_ms: Mapped[float] = mapped_column(Float, nullable=False)
    p99_ms: Mapped[float] = mapped_column(Float, nullable=False)
    mean_ms: Mapped[float] = mapped_column(Float, nullable=False)
    throughput_ips: Mapped[float] = mapped_column(Float, nullable=False)
    accuracy_top1: Mapped[float | None] = mapped_column(Float, nullable=True)
    model_size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    valid: Mapped[bool] = mapped_column(Boolean, nullable=False)
    finished_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    stored_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    #: the record without its raw samples (``samples_ns`` is in ``samples``)
    record: Mapped[dict] = mapped_column(JSONType, nullable=False)
    #: the raw samples, FBS1 (migration 0008; every row has them)
    samples: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    #: the sweep whose job made it (None for demo, bundle and ad-hoc jobs)
    sweep_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    #: a late result of an attempt that was already replaced: kept, never counted
    superseded: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default=false())
    # Read from the record (migration 0005), so that the dashboard groups on columns, never on JSON.
    threads: Mapped[int] = mapped_column(Integer, nullable=False, default=1, server_default="1")
    #: requests in flight in the throughput phase (0: none measured)
    throughput_requests: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    fidelity_top1: Mapped[float | None] = mapped_column(Float, nullable=True)
    peak_rss_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0, server_default="0")
    sample_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    # Read from the record (migration 0007).
    #: the precision the runtime really ran (ResultRecord.precision)
    precision: Mapped[str] = mapped_column(String(64), nullable=False, default="", server_default="")
    #: the worst output's SNR (dB) and mean cosine against the fp32 reference
    fidelity_snr_db: Mapped[float | None] = mapped_column(Float, nullable=True)
    fidelity_cosine: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: the artifact was the user's own file as given
    from_source: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default=false())
    # Read from the record (migration 0009).
    #: the record carries a profile (ResultRecord.profile: one that ran, or one that says why it could not)
    profiled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default=false())
    #: the profile's ops that fell back off the capability's target (a delegate, XNNPACK, a HETERO device)
    fallback_ops: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: The latency phase's millijoules per inference and average watts from the device's sensor (issue 19, 0011).
    energy_mj: Mapped[float | None] = mapped_column(Float, nullable=True)
    energy_w: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: Other processes' CPU time passed the job's limit; a clock fell during it (None: not recorded).
    disturbed: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    throttled: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    #: A sustained run's last window's p50 over its first (issue 19, 0012); None when not sustained.
    drift_ratio: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: The agent's machine architecture (HostFacts.machine; "" before issue 21, 0015) and whether its CPU was
    #: emulated (qemu-user): such timings are not the device's, and views leave them out by default.
    machine: Mapped[str] = mapped_column(String(32), nullable=False, default="", server_default="")
    emulated: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default=false())


# Attempt fencing: at most one current (not superseded) record per job.
_current = Result.superseded == false()
Index("uq_results_job_current", Result.job_id, unique=True, sqlite_where=_current, postgresql_where=_current)


class ModelRow(Base):
    """A source model, identified by the sha256 of its content (or canonical tar)."""

    __tablename__ = "models"

    model_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    filename: Mapped[str] = mapped_column(String(400), nullable=False)
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class ReferenceRow(Base):
    """The fp32 outputs of a model on a data set's validation split: one per model and data set, shared by
    every variant benchmarked on that data set, whichever was converted with it."""

    __tablename__ = "reference_outputs"

    model_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    artifact: Mapped[dict] = mapped_column(JSONType, nullable=False)  # ArtifactRef of reference.npz
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class DatasetRow(Base):
    __tablename__ = "datasets"

    dataset_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    source_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    preprocessing: Mapped[dict] = mapped_column(JSONType, nullable=False)
    seed: Mapped[int] = mapped_column(Integer, nullable=False)
    n_calibration: Mapped[int] = mapped_column(Integer, nullable=False)
    n_validation: Mapped[int] = mapped_column(Integer, nullable=False)
    labelled: Mapped[bool] = mapped_column(Boolean, nullable=False)
    calibration: Mapped[dict] = mapped_column(JSONType, nullable=False)  # ArtifactRef
    validation: Mapped[dict] = mapped_column(JSONType, nullable=False)  # ArtifactRef
    sample_shape: Mapped[list] = mapped_column(JSONType, nullable=False)
    #: The labelled training split for QAT (ArtifactRef), between calibration and validation; None without one.
    train: Mapped[dict | None] = mapped_column(JSONType, nullable=True)
    n_train: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class VariantRow(Base):
    """One converted variant. ``cache_key`` decides whether a convert does any work."""

    __tablename__ = "variants"
    __table_args__ = (Index("ix_variants_model", "model_id", "variant"),)

    cache_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_id: Mapped[str] = mapped_column(String(64), nullable=False)
    variant: Mapped[str] = mapped_column(String(64), nullable=False)
    dataset_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    artifact: Mapped[dict] = mapped_column(JSONType, nullable=False)  # ArtifactRef
    reference: Mapped[dict | None] = mapped_column(JSONType, nullable=True)  # ArtifactRef of fp32 outputs
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    conversion_s: Mapped[float] = mapped_column(Float, nullable=False)
    tool_versions: Mapped[dict] = mapped_column(JSONType, nullable=False)
    recipe: Mapped[dict] = mapped_column(JSONType, nullable=False)
    input_shape: Mapped[list] = mapped_column(JSONType, nullable=False)
    input_dtype: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    #: What the conversion found out (issue 18): layers kept in float, QAT epochs, integer checks, the
    #: per-layer quantization report. None for a variant whose recipe says all there is.
    details: Mapped[dict | None] = mapped_column(JSONType, nullable=True)


class AgentRow(Base):
    """The newest inventory seen from each agent (its heartbeat), kept after it goes away."""

    __tablename__ = "agents"

    agent_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(256), nullable=False)
    inventory: Mapped[dict] = mapped_column(JSONType, nullable=False)  # AgentInventory
    first_seen: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    last_heartbeat: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class SweepRow(Base):
    """One sweep: a spec expanded into jobs."""

    __tablename__ = "sweeps"

    sweep_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    spec: Mapped[dict] = mapped_column(JSONType, nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False)  # running, done
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class JobRow(Base):
    """One benchmark job of a sweep, with its persisted state (see controller.jobs)."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_sweep_state", "sweep_id", "state"),
        Index("ix_jobs_state", "state"),
    )

    job_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sweep_id: Mapped[str] = mapped_column(String(32), nullable=False)
    model_id: Mapped[str] = mapped_column(String(64), nullable=False)
    model_name: Mapped[str] = mapped_column(String(200), nullable=False)
    variant: Mapped[str] = mapped_column(String(64), nullable=False)
    capability: Mapped[str] = mapped_column(String(128), nullable=False)
    pinned_agent: Mapped[str | None] = mapped_column(String(128), nullable=True)
    settings: Mapped[dict] = mapped_column(JSONType, nullable=False)  # BenchmarkSettings
    spec: Mapped[dict | None] = mapped_column(JSONType, nullable=True)  # the JobSpec last sent
    state: Mapped[str] = mapped_column(String(24), nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False, default="")
    error_kind: Mapped[str | None] = mapped_column(String(32), nullable=True)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    #: the attempt whose message is in a queue (== attempt once sent)
    sent_attempt: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=3)
    agent_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class BaselineRow(Base):
    """A named baseline: a tag pointing at a sweep (`fleetbench baseline set SWEEP --tag NAME`)."""

    __tablename__ = "baselines"

    tag: Mapped[str] = mapped_column(String(100), primary_key=True)
    sweep_id: Mapped[str] = mapped_column(String(32), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class ChangePointRow(Base):
    """A change point found in a series (issue 20): model × variant × capability × device × threads × throughput requests,
    one metric over time, between the record ``before_job`` and the record ``after_job`` (the first of the new
    level). Found by ``fleetbench regressions`` (E-Divisive, confirmed on the raw samples); acknowledged by a
    person; sent to the store's webhook once."""

    __tablename__ = "change_points"
    __table_args__ = (
        UniqueConstraint("metric", "after_job", name="uq_change_points_metric_after"),
        Index("ix_change_points_series", "model_name", "variant", "capability", "device_name", "threads", "metric"),
        Index("ix_change_points_after_at", "after_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_name: Mapped[str] = mapped_column(String(200), nullable=False)
    variant: Mapped[str] = mapped_column(String(64), nullable=False)
    capability: Mapped[str] = mapped_column(String(128), nullable=False)
    #: the device name the series' records report (migration 0014; "" where none was known)
    device_name: Mapped[str] = mapped_column(String(200), nullable=False, default="", server_default="")
    threads: Mapped[int] = mapped_column(Integer, nullable=False)
    throughput_requests: Mapped[int] = mapped_column(Integer, nullable=False)
    metric: Mapped[str] = mapped_column(String(32), nullable=False)
    before_job: Mapped[str] = mapped_column(String(64), nullable=False)
    after_job: Mapped[str] = mapped_column(String(64), nullable=False)
    before_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    after_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    #: the new level over the old (medians of the raw samples for latency; of the records' values otherwise)
    ratio: Mapped[float] = mapped_column(Float, nullable=False)
    p_value: Mapped[float] = mapped_column(Float, nullable=False)
    #: |ratio - 1|, the size of the change either way
    magnitude: Mapped[float] = mapped_column(Float, nullable=False)
    #: "regression" or "improvement"
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    before_value: Mapped[float] = mapped_column(Float, nullable=False)
    after_value: Mapped[float] = mapped_column(Float, nullable=False)
    detected_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    acked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    ack_note: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: the webhook took it (never sent twice); a sender holds ``notify_claim`` while it tries
    notified_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    notify_claim: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    notify_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class SettingRow(Base):
    """A store-wide setting, by key (``webhook``: its URL and secret)."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict] = mapped_column(JSONType, nullable=False)
