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
