"""SQLAlchemy tables. The full record lives in ``record`` (JSON); the columns
beside it are the fields dashboards filter and sort on."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, Index, Integer, String, UniqueConstraint
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
    record: Mapped[dict] = mapped_column(JSONType, nullable=False)


class ModelRow(Base):
    """A source model, identified by the sha256 of its content (or canonical tar)."""

    __tablename__ = "models"

    model_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    filename: Mapped[str] = mapped_column(String(400), nullable=False)
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
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


class AgentRow(Base):
    """The newest inventory seen from each agent (its heartbeat), kept after it goes away."""

    __tablename__ = "agents"

    agent_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(256), nullable=False)
    inventory: Mapped[dict] = mapped_column(JSONType, nullable=False)  # AgentInventory
    first_seen: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    last_heartbeat: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
