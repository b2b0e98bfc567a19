"""One store interface for results, whatever the database: every table group in one class."""

from __future__ import annotations

from controller.store.agents import AgentsStore
from controller.store.base import HEAD_REVISION, MIGRATIONS, StoreError, as_utc, redact_url
from controller.store.catalog import CatalogStore
from controller.store.jobs import JobsStore
from controller.store.regressions import RegressionsStore
from controller.store.results import ResultsStore

__all__ = ["HEAD_REVISION", "MIGRATIONS", "Store", "StoreError", "as_utc", "redact_url"]


class Store(ResultsStore, CatalogStore, AgentsStore, JobsStore, RegressionsStore):
    """The store: results, the catalog of models and variants, agents, sweeps and jobs, change points and settings,
    on one engine."""
