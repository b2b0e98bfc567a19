"""Models, data sets, variants and reference outputs: what conversion stores."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from controller.store.base import StoreBase, StoreError
from controller.store.models import DatasetRow, ModelRow, ReferenceRow, Result, VariantRow


class CatalogStore(StoreBase):
    def add_model(self, model_id: str, name: str, kind: str, filename: str, size_bytes: int) -> bool:
        return self._add_once(
            ModelRow(model_id=model_id, name=name, kind=kind, filename=filename, size_bytes=size_bytes,
                     created_at=dt.datetime.now(dt.timezone.utc)),
            model_id,
        )  # fmt: skip

    def models(self) -> list[ModelRow]:
        with self._session() as session:
            return list(session.scalars(select(ModelRow).order_by(ModelRow.created_at.desc())))

    def find_model(self, ref: str) -> ModelRow:
        """A model by id, unique id prefix (>= 6 characters), or name: the newest version of that name (a name
        whose source changed holds one version per source sha; give the id for an older one)."""
        with self._session() as session:
            rows = list(session.scalars(select(ModelRow).where(ModelRow.model_id == ref)))
            if not rows and len(ref) >= 6:
                rows = list(session.scalars(select(ModelRow).where(ModelRow.model_id.startswith(ref))))
            if not rows:
                newest = (select(ModelRow).where(ModelRow.name == ref)
                          .order_by(ModelRow.created_at.desc(), ModelRow.model_id.desc()).limit(1))  # as versions() counts
                rows = list(session.scalars(newest))
        if len(rows) == 1:
            return rows[0]
        if not rows:
            raise StoreError(f"no stored model matches '{ref}'; `fleetbench models` lists them")
        ids = ", ".join(r.model_id[:12] for r in rows)
        raise StoreError(f"'{ref}' matches {len(rows)} models ({ids}); give more of the id")

    @staticmethod
    def versions(models: list[ModelRow]) -> dict[str, int]:
        """Each model id's version within its name: 1 for the first source stored under that name, and so on."""
        out: dict[str, int] = {}
        count: dict[str, int] = {}
        for m in sorted(models, key=lambda m: (m.name, m.created_at, m.model_id)):
            count[m.name] = out[m.model_id] = count.get(m.name, 0) + 1
        return out

    def add_dataset(self, row: DatasetRow) -> bool:
        return self._add_once(row, row.dataset_id)

    def get_dataset(self, dataset_id: str) -> DatasetRow | None:
        with self._session() as session:
            return session.get(DatasetRow, dataset_id)

    def add_variant(self, row: VariantRow) -> bool:
        return self._add_once(row, row.cache_key)

    def get_variant(self, cache_key: str) -> VariantRow | None:
        with self._session() as session:
            return session.get(VariantRow, cache_key)

    def update_variant_details(self, cache_key: str, details: dict) -> bool:
        """Merge ``details`` into a stored variant's (a per-layer report made after it was converted)."""
        with self._write() as session:
            row = session.get(VariantRow, cache_key)
            if row is None:
                return False
            row.details = {**(row.details or {}), **details}
            return True

    def delete_variant(self, cache_key: str) -> None:
        with self._write() as session:
            row = session.get(VariantRow, cache_key)
            if row is not None:
                session.delete(row)

    def add_reference(self, model_id: str, dataset_id: str, artifact: dict) -> None:
        """The fp32 reference outputs of ``model_id`` on ``dataset_id`` (the newest replaces an older one)."""
        with self._write() as session:
            row = session.get(ReferenceRow, (model_id, dataset_id))
            if row is None:
                session.add(ReferenceRow(model_id=model_id, dataset_id=dataset_id, artifact=artifact,
                                         created_at=dt.datetime.now(dt.timezone.utc)))  # fmt: skip
            else:
                row.artifact = artifact

    def get_reference(self, model_id: str, dataset_id: str) -> dict | None:
        with self._session() as session:
            row = session.get(ReferenceRow, (model_id, dataset_id))
            return row.artifact if row is not None else None

    def variants(self, model_id: str) -> list[VariantRow]:
        with self._session() as session:
            stmt = select(VariantRow).where(VariantRow.model_id == model_id).order_by(VariantRow.created_at)
            return list(session.scalars(stmt))

    def referenced_artifacts(self) -> set[str]:
        """sha256 of every artifact a stored row points at (what gc must keep)."""
        keep: set[str] = set()
        with self._session() as session:
            keep.update(session.scalars(select(ModelRow.model_id)))
            for cal, val, train in session.execute(select(DatasetRow.calibration, DatasetRow.validation, DatasetRow.train)):
                keep.update((cal["sha256"], val["sha256"]))
                if train:
                    keep.add(train["sha256"])
            for art, ref in session.execute(select(VariantRow.artifact, VariantRow.reference)):
                keep.add(art["sha256"])
                if ref:
                    keep.add(ref["sha256"])
            keep.update(ref["sha256"] for ref in session.scalars(select(ReferenceRow.artifact)))
            keep.update(session.scalars(select(Result.artifact_sha256)))
        return keep
