"""The SQL store: SQLite embedded, PostgreSQL for teams. Schema by Alembic."""

from controller.store.store import Store, StoreError, as_utc, redact_url

__all__ = ["Store", "StoreError", "as_utc", "redact_url"]
