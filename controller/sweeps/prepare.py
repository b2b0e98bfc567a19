"""A spec's models made ready: cached variants now, the rest converted in the background."""

from __future__ import annotations

from pathlib import Path

from controller.store import Store
from controller.sweeps.scheduler import ModelVariants
from controller.sweeps.spec import DATA_SHA256, ModelEntry, SweepError, SweepSpec
from protocol import ArtifactRef


def _materialize(artifacts, sha256: str, filename: str, tmp: Path) -> Path | None:
    """A stored artifact copied under its original file name (conversion identifies files by name and content)."""
    import shutil

    ref = artifacts.get(sha256)
    if ref is None:
        return None
    out = tmp / sha256[:16] / Path(filename).name
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(artifacts.path_for(sha256), out)
    return out


def prepare_models(spec: SweepSpec, store: Store, artifacts, convert_runner, workdir: Path | None = None,
                   max_model_bytes: int | None = None) -> list[ModelVariants]:  # fmt: skip
    """Each spec model's variants: cached ones ready now, the rest converted by ``convert_runner``.

    ``path:`` entries are model files; ``id:`` entries are stored models (uploaded or converted before),
    converted again from their stored source for any variant not stored yet. ``data:`` is a file, or the
    sha256 of an uploaded data set.
    """
    import tempfile

    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    # Stored files are copied here for planning only: planning puts them in the artifact store,
    # and conversions read them from there.
    with tempfile.TemporaryDirectory(prefix="fleetbench-sweep-", dir=workdir) as tmp:
        return [_prepare_model(entry, spec, store, artifacts, convert_runner, Path(tmp), max_model_bytes)
                for entry in spec.models]  # fmt: skip


def _prepare_model(entry: ModelEntry, spec: SweepSpec, store: Store, artifacts, convert_runner, tmp: Path,
                   max_model_bytes: int | None = None) -> ModelVariants:  # fmt: skip
    from controller.convert import service

    path, name = entry.path, entry.name
    if entry.model_id:
        row = store.find_model(entry.model_id)
        name = name or row.name
        path = _materialize(artifacts, row.model_id, row.filename, tmp)
        if path is None:
            raise SweepError(f"model {entry.model_id}: its source file is no longer in the artifact store; upload it again")
    data = entry.data
    if data and DATA_SHA256.fullmatch(data) and (data.startswith("sha256:") or not Path(data).exists()):
        data = _materialize(artifacts, DATA_SHA256.fullmatch(data).group(1), "data.npz", tmp)
        if data is None:
            raise SweepError(f"data set {DATA_SHA256.fullmatch(entry.data).group(1)[:12]}…: not in the artifact store; upload it first")
    plan = service.plan(path, spec.variants, store, artifacts, dataset_path=data, preprocessing=entry.preprocessing, seed=entry.seed,
                        n_calibration=entry.calibration_size, input_shape=entry.input_shape, name=name,
                        allow_nan=entry.allow_nan, max_bytes=max_model_bytes, n_train=entry.train_samples,
                        options=entry.quant)  # fmt: skip
    if plan.needs_reference:  # variants cached on another data set (or none): the outputs on this one first
        import dataclasses

        done = dataclasses.replace(plan, variants=[v for v in plan.variants if v.status != "todo"])
        plan.reference = service.execute(done, store, convert_runner).reference
    # the reference outputs belong to the data set the jobs use, whichever data set a variant was converted with
    ready = {v.variant: (ArtifactRef.from_dict(v.row.artifact), plan.reference)
             for v in plan.variants if v.status == "cached"}  # fmt: skip
    converting = [v.variant for v in plan.todo]
    dataset = plan.dataset.validation if plan.dataset else None
    convert = (lambda on_event: service.execute(plan, store, convert_runner, on_event=on_event)) if converting else None
    return ModelVariants(plan.model_id, plan.name, dataset, ready, converting, convert)
