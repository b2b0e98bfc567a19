"""``convert``: plan what a request needs, run only that, record it.

Plain functions: the CLI, the demo and tests call them; the conversion itself
runs through a ``runner`` (in-process child, or a Celery converter worker).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from controller import datasets
from controller.artifacts import ArtifactStore
from controller.convert.sources import OPENVINO_IR, TFLITE, Source, SourceError, identify
from controller.convert.variants import (
    QAT_VARIANTS, STANDARD, VARIANTS, QuantOptions, Recipe, cache_key, recipe_for, refusal, tool_versions,
)
from controller.store import Store
from controller.store.models import DatasetRow, VariantRow
from protocol import ArtifactRef

Runner = Callable[[dict, Callable[[dict], None]], dict]


class ConvertError(RuntimeError):
    """The request as a whole cannot go ahead; the message says why."""


@dataclass
class VariantPlan:
    variant: str
    status: str  # "todo", "cached", "refused"
    cache_key: str | None = None
    reason: str | None = None
    row: VariantRow | None = None
    recipe: Recipe | None = None

    @property
    def from_source(self) -> bool:
        """The user's own file, benchmarked as it is."""
        return bool(self.recipe and self.recipe.params.get("source"))


@dataclass
class Plan:
    source: Source
    name: str
    model_ref: ArtifactRef
    dataset: datasets.PreparedDataset | None
    input_shape: tuple[int, ...] | None
    tools: dict[str, str]
    variants: list[VariantPlan] = field(default_factory=list)
    #: What the file itself is (a TFLite file's variant, by its tensors), or None.
    source_variant: str | None = None
    source_evidence: str = ""
    #: The fp32 reference outputs on the data set, when stored already (from any earlier conversion).
    reference: ArtifactRef | None = None
    #: Whether the source is in the models catalog yet: a file is listed only once it is known to be valid
    #: (its own variant was read from it, or a variant was converted from it).
    registered: bool = False
    #: Why the source counts as trained with quantization (QAT), or None.
    qat_source: str | None = None

    @property
    def needs_reference(self) -> bool:
        """A data set is given but no reference outputs on it are stored: the converter computes them."""
        return self.dataset is not None and self.reference is None

    @property
    def model_id(self) -> str:
        return self.model_ref.sha256

    @property
    def todo(self) -> list[VariantPlan]:
        return [v for v in self.variants if v.status == "todo"]


@dataclass(frozen=True)
class VariantOutcome:
    variant: str
    status: str  # converted, cached, refused, failed
    size_bytes: int | None = None
    seconds: float | None = None
    error: str | None = None
    artifact: ArtifactRef | None = None
    reference: ArtifactRef | None = None
    #: The user's own file as it is (no conversion).
    from_source: bool = False
    #: What the conversion found out (layers kept in float, QAT epochs, integer checks); see VariantRow.details.
    details: dict | None = None


@dataclass(frozen=True)
class ConvertReport:
    model_id: str
    name: str
    kind: str
    dataset_id: str | None
    input_shape: tuple[int, ...] | None
    outcomes: list[VariantOutcome]
    #: The fp32 reference outputs on the request's data set (None without one).
    reference: ArtifactRef | None = None

    def outcome(self, variant: str) -> VariantOutcome:
        return next(o for o in self.outcomes if o.variant == variant)


def parse_variants(spec: str | None) -> list[str]:
    """``all`` (or nothing) is the seven standard variants; the accuracy-keeping ones are asked for by name."""
    if not spec or spec == "all":
        return list(STANDARD)
    names = [v.strip() for v in spec.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise ConvertError(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    return names


# size: each variant's cache key, refusal or recipe, decided in one pass over the source
def plan(
    source_path: str | Path,
    variants: list[str],
    store: Store,
    artifacts: ArtifactStore,
    *,
    dataset_path: str | Path | None = None,
    preprocessing: datasets.Preprocessing = datasets.Preprocessing(),
    seed: int = 0,
    n_calibration: int = 100,
    input_shape: tuple[int, ...] | None = None,
    name: str | None = None,
    allow_nan: bool | None = None,
    max_bytes: int | None = None,
    n_train: int = 0,
    options: QuantOptions | None = None,
) -> Plan:
    """``n_train``: a labelled training split for QAT; ``options``: the accuracy-keeping variants' settings."""
    given = input_shape  # the shape the user gave, not one a data set implies
    try:
        source = identify(source_path)
    except SourceError as exc:
        raise ConvertError(str(exc)) from None
    _check_size(source, max_bytes)
    payload, filename = source.payload()
    # a corrupt file is refused before anything is stored
    source_variant, evidence, static_source = _source_facts(source, payload)
    model_ref = artifacts.put_bytes(payload, filename)
    display = name or source.name

    dataset = None
    if dataset_path is not None:
        try:
            dataset = datasets.prepare(dataset_path, artifacts, preprocessing, seed=seed, n_calibration=n_calibration,
                                       allow_nan=allow_nan, n_train=n_train)  # fmt: skip
        except datasets.DatasetError as exc:
            raise ConvertError(str(exc)) from None
        store.add_dataset(
            DatasetRow(
                dataset_id=dataset.dataset_id, name=dataset.name, source_sha256=dataset.source_sha256,
                preprocessing=preprocessing.to_dict(), seed=seed, n_calibration=dataset.n_calibration,
                n_validation=dataset.n_validation, labelled=dataset.labelled,
                calibration=dataset.calibration.to_dict(), validation=dataset.validation.to_dict(),
                sample_shape=list(dataset.sample_shape), created_at=dt.datetime.now(dt.timezone.utc),
                train=dataset.train.to_dict() if dataset.train else None, n_train=dataset.n_train,
            )
        )  # fmt: skip
        if input_shape is None:
            input_shape = (1, *dataset.sample_shape)

    if source_variant and source_variant not in variants:
        variants = [source_variant, *variants]  # the user's own file is always benchmarked
    tools = tool_versions()
    p = Plan(source=source, name=display, model_ref=model_ref, dataset=dataset, input_shape=input_shape, tools=tools,
             source_variant=source_variant, source_evidence=evidence)  # fmt: skip
    if source_variant is not None:  # a TFLite file or IR read whole: valid as it is
        register(p, store)
    if dataset is not None:
        stored = store.get_reference(model_ref.sha256, dataset.dataset_id)
        if stored is not None and artifacts.get(stored["sha256"]) is not None:
            p.reference = ArtifactRef.from_dict(stored)
    calibration_sha = dataset.calibration.sha256 if dataset else None
    from controller.convert import qat

    p.qat_source = qat.evidence(source)
    if p.qat_source and list(variants) == list(STANDARD):  # no variants named: what a QAT model gives
        variants = [v for v in QAT_VARIANTS if refusal(source.kind, v, None, p.qat_source) is None]
    opts = _options(options or QuantOptions(), dataset, seed)
    for v in variants:
        why = refusal(source.kind, v, source_variant, p.qat_source)
        recipe = recipe_for(source.kind, v, source_variant, opts, p.qat_source) if why is None else None
        if why is None and recipe.needs_calibration and dataset is None:
            why = f"{v} needs calibration data: pass --data DATASET (an .npz or an image folder)"
        if why is None:
            why = _data_refusal(v, recipe, dataset, opts)
        if why:
            p.variants.append(VariantPlan(v, "refused", reason=why))
            continue
        key = cache_key(model_ref.sha256, v, input_shape, calibration_sha, tools, recipe)
        row = store.get_variant(key)
        if row is None and not recipe.needs_calibration and given is None:
            row = _same_without_data(store, model_ref.sha256, v, input_shape, tools, recipe, static_source)
            key = row.cache_key if row is not None else key
        if row is not None and artifacts.get(row.artifact["sha256"]) is not None:
            p.variants.append(VariantPlan(v, "cached", cache_key=key, row=row, recipe=recipe))
            register(p, store)  # converted from before
        else:
            if row is not None:  # its file is gone or corrupt: convert again
                store.delete_variant(key)
            p.variants.append(VariantPlan(v, "todo", cache_key=key, recipe=recipe))
    return p


def _options(o: QuantOptions, dataset, seed: int) -> QuantOptions:
    """The options with the data set's splits filled in, so the recipes (and cache keys) name them."""
    from dataclasses import replace

    if dataset is None:
        return replace(o, seed=seed)
    return replace(o, seed=seed, train_sha=dataset.train.sha256 if dataset.train else None, n_train=dataset.n_train,
                   validation_sha=dataset.validation.sha256, n_validation=dataset.n_validation,
                   n_calibration=dataset.n_calibration)  # fmt: skip


def _data_refusal(v: str, recipe: Recipe, dataset, o: QuantOptions) -> str | None:
    """What an accuracy-keeping variant still lacks (labels, a training split, a target), and what to pass."""
    params = recipe.params
    if "qat" in params and dataset is not None and not dataset.n_train:
        return (f"{v} fine-tunes on a labelled training split apart from calibration and validation: pass "
                "--train-samples N (e.g. half of the data set) with a labelled --data")  # fmt: skip
    if params.get("nncf") == "accuracy_control" and dataset is not None and not dataset.labelled:
        return (f"{v} controls the top-1 accuracy drop on labelled validation data, and this data set has no labels: "
                "pass --data with labels ('y' in an .npz, or one sub-folder per class)")  # fmt: skip
    if "mixed" in params and o.fidelity_target_db is None:
        return (f"{v} keeps layers in float until a fidelity target is met: pass --fidelity-target-db "
                "(the worst output's SNR against fp32, e.g. 30)")  # fmt: skip
    return None


def max_model_bytes() -> int:
    """The largest model source ``convert`` and ``sweep`` take: FLEETBENCH_MAX_MODEL_MB (MiB), by default 512,
    the API's upload limit (``serve --max-upload-mb``)."""
    import os

    raw = os.environ.get("FLEETBENCH_MAX_MODEL_MB", "512")
    try:
        mb = float(raw)
    except ValueError:
        raise ConvertError(f"FLEETBENCH_MAX_MODEL_MB={raw!r} is not a number of MiB; e.g. FLEETBENCH_MAX_MODEL_MB=2048") from None
    return int(mb * 2**20)


def _check_size(source: Source, limit: int | None = None) -> None:
    """Refuse a source over ``limit`` (default :func:`max_model_bytes`) before reading it (sizes as the file
    system reports them)."""
    p = source.path
    if p.is_dir():
        size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    else:
        size = p.stat().st_size
        if source.kind == OPENVINO_IR and p.with_suffix(".bin").is_file():
            size += p.with_suffix(".bin").stat().st_size
    limit = limit or max_model_bytes()
    if size > limit:
        raise ConvertError(f"{p}: {size / 2**20:,.1f} MiB, over the limit of {limit / 2**20:,.0f} MiB for a model; "
                           "if it is meant to be this big, raise FLEETBENCH_MAX_MODEL_MB")  # fmt: skip


def register(p: Plan, store: Store) -> None:
    """List the plan's source in the models catalog (once it is known to be valid)."""
    if not p.registered:
        store.add_model(p.model_ref.sha256, p.name, p.source.kind, p.model_ref.filename, p.model_ref.size_bytes)
        p.registered = True


def _same_without_data(store: Store, model_id: str, variant: str, shape, tools, recipe: Recipe,
                       static_source: bool) -> VariantRow | None:  # fmt: skip
    """A variant that needs no calibration, converted before with or without a data set: the same file
    when its input shape is the one this request implies (the data's), or, without a data set and for a
    source whose input shape is fixed, the one converted at a data set's shape."""
    if shape is not None:  # a data set implies the shape: one converted without data, if it came out so
        earlier = store.get_variant(cache_key(model_id, variant, None, None, tools, recipe))
        return earlier if earlier is not None and tuple(earlier.input_shape) == tuple(shape) else None
    if not static_source:  # a dynamic input: without a shape there is no one variant to reuse
        return None
    for row in store.variants(model_id):  # no data set: one converted at a data set's shape
        if row.variant == variant and row.cache_key == cache_key(model_id, variant, tuple(row.input_shape), None, tools, recipe):
            return row
    return None


def _source_facts(source: Source, payload: bytes) -> tuple[str | None, str, bool]:
    """(the variant the file itself is, the evidence, whether its input shape is fixed) for TFLite files and
    OpenVINO IRs; (None, "", False) for sources that are no variant as they are."""
    if source.kind == OPENVINO_IR:
        from controller.convert.sources import openvino_ir_variant

        try:
            variant, evidence = openvino_ir_variant(source.path)
        except SourceError as exc:
            raise ConvertError(str(exc)) from None
        return variant, evidence, False
    if source.kind != TFLITE:
        return None, "", False
    from controller.convert import tflite_tools

    try:
        facts = tflite_tools.inspect(payload)
    except tflite_tools.TfliteError as exc:
        raise ConvertError(f"{source.path}: {exc}; the file is corrupt or truncated") from None
    return facts.variant, facts.evidence, facts.static_input


def job_for(p: Plan, limits: dict | None = None) -> dict:
    """The JSON job a runner converts (the Celery task's argument)."""
    return {
        "limits": dict(limits or {}),
        "source": p.model_ref.to_dict(),
        "kind": p.source.kind,
        "name": p.source.name,
        "variants": [v.variant for v in p.todo],
        "input_shape": list(p.input_shape) if p.input_shape else None,
        "calibration": p.dataset.calibration.to_dict() if p.dataset else None,
        "validation": p.dataset.validation.to_dict() if p.dataset else None,
        "recipes": {v.variant: v.recipe.to_dict() for v in p.todo if v.recipe is not None},
        "train": p.dataset.train.to_dict() if p.dataset and p.dataset.train and _trains(p) else None,
        "qat_source": p.qat_source,
    }


def _trains(p: Plan) -> bool:
    """Whether a variant to make reads the training split: QAT fine-tunes on it, accuracy control tunes on it."""
    return any(v.recipe is not None and ("qat" in v.recipe.params or v.recipe.params.get("tune_on") == "train")
               for v in p.todo)  # fmt: skip


def execute(
    p: Plan,
    store: Store,
    runner: Runner,
    on_event: Callable[[dict], None] = lambda e: None,
    limits: dict | None = None,
) -> ConvertReport:
    """Run the plan's missing variants through ``runner`` and record them.

    ``limits`` (see :class:`controller.convert.runner.Limits`) travel with the job.
    """
    work = p.todo or p.needs_reference  # the reference alone, for variants cached on another data set
    result = runner(job_for(p, limits), on_event) if work else {"variants": {}, "reference": None}
    reference = ArtifactRef.from_dict(result["reference"]) if result.get("reference") else p.reference
    if reference is not None and p.dataset is not None and p.reference is None:
        store.add_reference(p.model_id, p.dataset.dataset_id, reference.to_dict())
    shape = tuple(result["input_shape"]) if result.get("input_shape") else p.input_shape
    outcomes = []
    for vp in p.variants:
        if vp.status == "refused":
            outcomes.append(VariantOutcome(vp.variant, "refused", error=vp.reason))
        elif vp.status == "cached":
            row = vp.row
            outcomes.append(
                VariantOutcome(vp.variant, "cached", size_bytes=row.size_bytes, seconds=row.conversion_s,
                               artifact=ArtifactRef.from_dict(row.artifact),
                               reference=reference, from_source=vp.from_source, details=row.details)
            )  # fmt: skip
            if shape is None:
                shape = tuple(row.input_shape)
        else:
            r = result["variants"].get(vp.variant, {"status": "failed", "error": "no result from the converter"})
            if r["status"] != "converted":
                outcomes.append(VariantOutcome(vp.variant, "failed", error=r.get("error")))
                continue
            art = ArtifactRef.from_dict(r["artifact"])
            register(p, store)  # a variant was made from it: the source is valid
            store.add_variant(
                VariantRow(
                    cache_key=vp.cache_key, model_id=p.model_id, variant=vp.variant,
                    dataset_id=p.dataset.dataset_id if p.dataset else None, artifact=art.to_dict(),
                    reference=reference.to_dict() if reference else None, size_bytes=art.size_bytes,
                    conversion_s=float(r["seconds"]), tool_versions=p.tools, recipe=vp.recipe.to_dict(),
                    input_shape=list(result["input_shape"]), input_dtype=result["input_dtype"],
                    created_at=dt.datetime.now(dt.timezone.utc), details=r.get("details"),
                )
            )  # fmt: skip
            outcomes.append(VariantOutcome(vp.variant, "converted", size_bytes=art.size_bytes, seconds=float(r["seconds"]),
                                           artifact=art, reference=reference, from_source=vp.from_source,
                                           details=r.get("details")))  # fmt: skip
    return ConvertReport(
        model_id=p.model_id, name=p.name, kind=p.source.kind,
        dataset_id=p.dataset.dataset_id if p.dataset else None, input_shape=shape, outcomes=outcomes,
        reference=reference,
    )  # fmt: skip


def local_runner(artifacts: ArtifactStore) -> Runner:
    """Run conversions in a sandboxed child of this process (no broker)."""
    from controller.convert.runner import Limits, run_conversion

    return lambda job, on_event: run_conversion(job, artifacts, on_event, Limits(**job.get("limits", {})))
