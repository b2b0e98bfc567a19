"""The SQL store: SQLite embedded, PostgreSQL for teams. Schema by Alembic."""

from controller.store.store import Store, StoreError

__all__ = ["Store", "StoreError"]
