"""Making offline bundles from stored variants, and importing their results."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from controller.artifacts import ArtifactStore
from controller.convert.variants import FAMILY_CAPABILITY, VARIANTS
from controller.store import Store, StoreError
from protocol import SCHEMA_VERSION, ArtifactRef, BenchmarkSettings, JobSpec, new_job_id, utc_now
from protocol.bundles import BUNDLE_FORMAT, bundle_uri, read_results
from protocol.packing import pack_files


@dataclass(frozen=True)
class ImportReport:
    stored: int
    already: int
    failed: list[tuple[str, str]]  # (job id, error)


def create_bundle(
    store: Store,
    artifacts: ArtifactStore,
    model: str,
    out: Path,
    *,
    variants: list[str] | None = None,
    capabilities: dict[str, str] | None = None,
    settings: BenchmarkSettings = BenchmarkSettings(),
) -> dict:
    """Pack jobs for the model's stored variants into ``out``; return the manifest.

    ``capabilities`` maps a variant family (``tflite``, ``openvino``) to the
    capability to run it on (default ``litert:cpu`` and ``openvino:CPU``).
    """
    caps = dict(FAMILY_CAPABILITY, **(capabilities or {}))
    m = store.find_model(model)
    rows = [r for r in store.variants(m.model_id) if variants is None or r.variant in variants]
    if not rows:
        raise StoreError(f"{m.name} has no stored variants{' of ' + ', '.join(variants) if variants else ''}; "
                         "run `fleetbench convert` first")  # fmt: skip
    files: dict[str, Path] = {}
    jobs = []

    def packed(ref_dict: dict | None) -> dict | None:
        if ref_dict is None:
            return None
        ref = ArtifactRef.from_dict(ref_dict)
        if artifacts.get(ref.sha256) is None:
            raise StoreError(f"artifact {ref.filename or ref.sha256[:12]} is missing or corrupt; `fleetbench artifacts verify`")
        files[f"artifacts/{ref.sha256}"] = artifacts.path_for(ref.sha256)
        return dict(ref.to_dict(), uri=bundle_uri(ref.sha256))

    for r in rows:
        dataset = store.get_dataset(r.dataset_id) if r.dataset_id else None
        spec = JobSpec(
            job_id=new_job_id(), model_id=m.model_id, model_name=m.name, variant=r.variant,
            capability=caps[VARIANTS[r.variant].family], artifact=ArtifactRef.from_dict(r.artifact),
            settings=settings,
        ).to_dict()  # fmt: skip
        spec["artifact"] = packed(r.artifact)
        spec["dataset"] = packed(dataset.validation) if dataset else None
        spec["reference"] = packed(store.get_reference(m.model_id, r.dataset_id) or r.reference) if dataset else None
        jobs.append(spec)
    manifest = {"format": BUNDLE_FORMAT, "schema_version": SCHEMA_VERSION, "created_at": utc_now(), "jobs": jobs}
    manifest["bundle_id"] = hashlib.sha256(json.dumps(jobs, sort_keys=True).encode()).hexdigest()[:16]
    data = pack_files({"bundle.json": json.dumps(manifest, indent=1).encode(), **files})
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    return manifest


def import_results(store: Store, path: Path) -> ImportReport:
    """Store every record in a results file once; a second import stores nothing new."""
    stored = already = 0
    failed = []
    for outcome in read_results(path):
        if not outcome.ok:
            failed.append((outcome.job_id, f"{outcome.error_kind}: {outcome.error}"))
        elif store.add_result(outcome.record):
            stored += 1
        else:
            already += 1
    return ImportReport(stored, already, failed)
