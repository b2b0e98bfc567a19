"""A sweep spec (YAML or JSON), parsed and checked: the models, variants, devices and settings matrix."""

from __future__ import annotations

import dataclasses
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path

from controller.convert.variants import STANDARD, VARIANTS, QuantOptions
from controller.datasets import Preprocessing
from controller.store.models import SweepRow
from protocol import BenchmarkSettings
from protocol.hashing import SHA256_HEX

#: settings keys a spec may sweep over, and the BenchmarkSettings field each sets
SETTING_ALIASES = {"target_qps": "loadgen_target_qps", "target_latency_ms": "loadgen_target_latency_ms"}


SCENARIOS = {"single-stream": "", "singlestream": "SingleStream", "offline": "Offline", "server": "Server"}


DEFAULT_EXPIRE_S = 600.0


#: the key in a stored sweep's spec that keeps the folder its relative paths were resolved from
BASE_DIR_KEY = "_base_dir"


class SweepError(ValueError):
    """The spec cannot be run; the message says what to change."""


@dataclass
class ModelEntry:
    path: str | None = None
    model_id: str | None = None
    data: str | None = None
    name: str | None = None
    input_shape: tuple[int, ...] | None = None
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    calibration_size: int = 100
    seed: int = 0
    #: keep NaN in the data set (an upload made with ``allow_nan=true``); None: as FLEETBENCH_ALLOW_NAN says
    allow_nan: bool | None = None
    #: the accuracy-keeping variants' settings (``quantization:`` in the spec): a training split for QAT
    train_samples: int = 0
    quant: QuantOptions = field(default_factory=QuantOptions)


@dataclass
class SweepSpec:
    name: str
    models: list[ModelEntry]
    variants: list[str]
    devices: list[str]
    settings: list[BenchmarkSettings]
    expire_after_s: float = DEFAULT_EXPIRE_S
    max_attempts: int = 3
    raw: dict = field(default_factory=dict)
    #: where relative paths in ``raw`` were resolved from (kept with the sweep, for ``--resume``)
    base_dir: str | None = None
    #: free labels (commit, branch, app version...): stored with the sweep, filterable, shown on hover
    labels: dict[str, str] = field(default_factory=dict)


def _expand(value):
    """``~`` and ``$VARS`` in a path from the spec."""
    import os

    return os.path.expanduser(os.path.expandvars(str(value))) if value else value


def parse_duration(value, where: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*", str(value))
    if not m:
        raise SweepError(f"{where}: '{value}' is not a duration; write 90, 90s, 10m or 2h")
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def _settings_matrix(raw: dict) -> list[BenchmarkSettings]:
    if not isinstance(raw, dict):
        raise SweepError("settings: must be a mapping, e.g. {threads: [1, 2]}")
    known = {f for f in BenchmarkSettings.__dataclass_fields__}
    axes: list[tuple[str, list]] = []
    for key, value in raw.items():
        values = value if isinstance(value, list) else [value]
        if not values:
            raise SweepError(f"settings.{key}: an empty list sweeps over nothing")
        if key == "scenario":
            mapped = []
            for v in values:
                if str(v).lower() not in SCENARIOS:
                    raise SweepError(f"settings.scenario: '{v}' is not one of single-stream, SingleStream, Offline, Server")
                mapped.append(SCENARIOS[str(v).lower()])
            axes.append(("loadgen_scenario", mapped))
        elif key == "batch":
            if any(v != 1 for v in values):
                raise SweepError("settings.batch: only batch 1 is supported; convert a model with a larger static "
                                 "batch (`fleetbench convert --input-shape 8,...`) and sweep over it instead")  # fmt: skip
        elif SETTING_ALIASES.get(key, key) in known:
            axes.append((SETTING_ALIASES.get(key, key), values))
        else:
            raise SweepError(f"settings.{key}: unknown; known: threads, batch, scenario, target_qps, {', '.join(sorted(known))}")
    out = []
    for combo in itertools.product(*[vals for _, vals in axes]) if axes else [()]:
        try:
            s = BenchmarkSettings.from_dict({k: v for (k, _), v in zip(axes, combo)})
        except Exception as exc:  # noqa: BLE001 - a contract error names the field
            raise SweepError(f"settings: {exc}") from None
        problems = s.problems()
        if problems:
            raise SweepError("settings: " + "; ".join(problems))
        out.append(s)
    return out


def parse_spec(text: str, base_dir: Path | None = None) -> SweepSpec:
    """A :class:`SweepSpec` from YAML (or JSON) text; relative paths are against ``base_dir``."""
    import yaml  # noqa: F401 - PyYAML, a controller dependency

    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SweepError(f"the sweep spec is not valid YAML: {' '.join(str(exc).split())}") from None
    return spec_from_dict(raw, base_dir)


_QUANT_KEYS = ("train_samples", "qat_epochs", "qat_lr", "max_accuracy_drop", "fidelity_target_db")


def _quantization(raw, i: int) -> dict:
    """A model's ``quantization:`` mapping (the accuracy-keeping variants' settings) as ModelEntry fields."""
    where = f"models[{i}].quantization"
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SweepError(f"{where}: a mapping, e.g. {{train_samples: 150, qat_epochs: 3, fidelity_target_db: 30}}")
    unknown = set(raw) - set(_QUANT_KEYS)
    if unknown:
        raise SweepError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(_QUANT_KEYS)}")

    def number(key: str, low: float, high: float, default, low_ok: bool = False, high_ok: bool = True):
        value = raw.get(key, default)
        if value is None:
            return None
        ok = not isinstance(value, bool) and isinstance(value, (int, float))
        if not ok or not ((low <= value) if low_ok else (low < value)) or not ((value <= high) if high_ok else (value < high)):
            raise SweepError(f"{where}.{key}: a number from {low:g} ({'inclusive' if low_ok else 'exclusive'}) to "
                             f"{high:g} ({'inclusive' if high_ok else 'exclusive'}), not {value!r}")  # fmt: skip
        return float(value)

    base = QuantOptions()  # the same bounds as `fleetbench convert`'s options
    drop = number("max_accuracy_drop", 0, 100, base.max_accuracy_drop * 100, low_ok=True, high_ok=False)
    options = QuantOptions(qat_epochs=_int(raw.get("qat_epochs", base.qat_epochs), f"{where}.qat_epochs", 1),
                           qat_learning_rate=number("qat_lr", 0, 1, base.qat_learning_rate, high_ok=False),
                           max_accuracy_drop=drop / 100, fidelity_target_db=number("fidelity_target_db", 0, 200, None))  # fmt: skip
    return {"train_samples": _int(raw.get("train_samples", 0), f"{where}.train_samples"), "quant": options}


def _int(value, where: str, least: int = 0) -> int:
    """An integer field of the spec (a whole number, at least ``least``), or a SweepError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise SweepError(f"{where}: '{value}' is not a whole number")
    try:
        n = int(str(value).strip()) if isinstance(value, str) else int(value)
    except ValueError:
        raise SweepError(f"{where}: '{value}' is not a whole number") from None
    if n != value and not isinstance(value, str):
        raise SweepError(f"{where}: '{value}' is not a whole number")
    if n < least:
        raise SweepError(f"{where}: must be at least {least}")
    return n


def _name(value) -> str:
    if value is not None and not isinstance(value, (str, int)) or isinstance(value, bool):
        raise SweepError("name: a string, e.g. nightly")
    name = str(value or "sweep")
    if len(name) > 200:
        raise SweepError("name: at most 200 characters")
    return name


def _str_list(value, where: str, example: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SweepError(f"{where}: a list of names, e.g. {example}")
    return value


#: a data set named by content: the sha256 of an uploaded one, bare or as ``sha256:<hex>``
DATA_SHA256 = re.compile(rf"(?:sha256:)?({SHA256_HEX.pattern})")


def _api_model(m, i: int) -> None:
    """Through the API a model is a stored one (`id:` with its name or id), never a file on the server."""
    if isinstance(m, str) or (isinstance(m, dict) and "path" in m):
        raise SweepError(f"models[{i}]: name a stored model with `id:` (its name or id); upload model files with "
                         "POST /api/v1/models first")  # fmt: skip
    ref = m.get("id") if isinstance(m, dict) else None
    if isinstance(ref, str) and ("/" in ref or "\\" in ref or ref.startswith((".", "~"))):
        raise SweepError(f"models[{i}].id: a stored model's name or id, not a path; upload model files with "
                         "POST /api/v1/models first")  # fmt: skip


def _api_data(value, i: int) -> str | None:
    """Through the API a data set is named by the sha256 POST /api/v1/datasets returned: ``sha256:<hex>``."""
    if value is None:
        return None
    m = DATA_SHA256.fullmatch(value)
    if not m:
        raise SweepError(f"models[{i}].data: name an uploaded data set by the sha256 POST /api/v1/datasets "
                         "returned (64 hex digits, or sha256:<hex>), not a path")  # fmt: skip
    return "sha256:" + m.group(1)


# size: each top-level key of a spec checked in the order the docs list them, each with its own message
def spec_from_dict(raw, base_dir: Path | None = None, *, server_paths: bool = True) -> SweepSpec:
    """A :class:`SweepSpec` from the parsed spec (the API takes it as JSON).

    ``server_paths=False`` (the API): models are stored ones (`id:`, never a path) and ``data:`` is the sha256
    of an uploaded data set, kept as ``sha256:<hex>``; nothing in the spec is read as a path on this machine.
    """
    if not isinstance(raw, dict):
        raise SweepError("the sweep spec must be a mapping with at least `models:`")
    unknown = set(raw) - {"name", "models", "variants", "devices", "settings", "expire_after", "max_attempts", "profile",
                          "labels"}  # fmt: skip
    if unknown:
        raise SweepError(f"unknown key(s) {', '.join(sorted(unknown))}; known: name, models, variants, devices, settings, "
                         "expire_after, max_attempts, profile, labels")  # fmt: skip
    labels = check_labels(raw.get("labels"))
    models = []
    if not isinstance(raw.get("models") or [], list):
        raise SweepError("models: a list, e.g. [{path: model.keras}] or [{id: digits-cnn}]")
    for i, m in enumerate(raw.get("models") or []):
        if isinstance(m, str):
            if not server_paths:
                _api_model(m, i)
            m = {"path": m}
        if not isinstance(m, dict) or ("path" in m) == ("id" in m):
            raise SweepError(f"models[{i}]: give either `path:` (a model file to convert) or `id:` (a stored model)")
        known_m = ("path", "id", "data", "name", "input_shape", "preprocessing", "calibration_size", "seed", "quantization")
        unknown_m = set(m) - set(known_m)
        if unknown_m:
            raise SweepError(f"models[{i}]: unknown key(s) {', '.join(sorted(unknown_m))}; known: {', '.join(known_m)}")
        for key in ("path", "id", "data", "name"):
            if m.get(key) is not None and not isinstance(m[key], str):
                raise SweepError(f"models[{i}].{key}: a string, not {type(m[key]).__name__}")
        if not server_paths:
            _api_model(m, i)
            path, data = None, _api_data(m.get("data"), i)
        else:
            path = _expand(m.get("path"))
            if path and base_dir and not Path(path).is_absolute():
                path = str(base_dir / path)
            data = _expand(m.get("data"))
            if data and base_dir and not Path(data).is_absolute() and not DATA_SHA256.fullmatch(str(data)):
                data = str(base_dir / data)
        shape = None
        if m.get("input_shape"):
            if not isinstance(m["input_shape"], list):
                raise SweepError(f"models[{i}].input_shape: a list of whole numbers, e.g. [1, 224, 224, 3]")
            shape = tuple(_int(v, f"models[{i}].input_shape", least=1) for v in m["input_shape"])
        pre = m.get("preprocessing") or {}
        if not isinstance(pre, dict):
            raise SweepError(f"models[{i}].preprocessing: a mapping, e.g. {{scale: 0.00392157, layout: NHWC}}")
        try:
            pre = Preprocessing(**{k: tuple(v) if isinstance(v, list) else v for k, v in pre.items()})
        except (TypeError, ValueError) as exc:
            raise SweepError(f"models[{i}].preprocessing: {exc}") from None
        if pre.problems():
            raise SweepError(f"models[{i}].preprocessing: " + "; ".join(pre.problems()))
        models.append(ModelEntry(path=path, model_id=m.get("id"), data=data, name=m.get("name"), input_shape=shape,
                                 preprocessing=pre, calibration_size=_int(m.get("calibration_size", 100), f"models[{i}].calibration_size", 1),
                                 seed=_int(m.get("seed", 0), f"models[{i}].seed"), **_quantization(m.get("quantization"), i)))  # fmt: skip
    if not models:
        raise SweepError("models: list at least one model (`- path: model.keras` or `- id: digits-cnn`)")
    variants = _str_list(raw.get("variants") or list(STANDARD), "variants", "[tflite-fp32, openvino-int8]")
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise SweepError(f"variants: unknown {', '.join(bad)}; known: {', '.join(VARIANTS)}")
    devices = raw.get("devices") or ["*"]
    if not isinstance(devices, list) or not all(isinstance(d, str) and d for d in devices):
        raise SweepError("devices: a list of selectors, e.g. ['litert:*', 'openvino:CPU', 'agent:pi-07']")
    max_attempts = _int(raw.get("max_attempts", 3), "max_attempts", least=1)
    settings = _settings_matrix(raw.get("settings") or {})
    if "profile" in raw:
        if not isinstance(raw["profile"], bool):
            raise SweepError(f"profile: true or false (a profile phase in every job), not '{raw['profile']}'")
        if "profile" in (raw.get("settings") or {}):
            raise SweepError("profile: given both at the top and under settings; give it once")
        settings = [dataclasses.replace(s, profile=raw["profile"]) for s in settings]
    return SweepSpec(
        name=_name(raw.get("name")), models=models, variants=list(variants), devices=devices,
        settings=settings,
        expire_after_s=parse_duration(raw.get("expire_after", DEFAULT_EXPIRE_S), "expire_after"),
        max_attempts=max_attempts, raw={**raw, "labels": labels} if labels else raw,
        base_dir=str(Path(base_dir).resolve()) if base_dir else None, labels=labels,
    )  # fmt: skip


#: the most labels a sweep carries, and their longest key and value
MAX_LABELS, MAX_LABEL_KEY, MAX_LABEL_VALUE = 32, 64, 200


def check_labels(raw) -> dict[str, str]:
    """A spec's free ``labels:`` (``{commit: abc123, branch: main, app: 2.4.1}``) as text, or SweepError."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SweepError("labels: a mapping of names to values, e.g. {commit: abc123, branch: main}")
    if len(raw) > MAX_LABELS:
        raise SweepError(f"labels: at most {MAX_LABELS}, got {len(raw)}")
    out = {}
    for key, value in raw.items():
        if isinstance(value, (dict, list)) or value is None:
            raise SweepError(f"labels.{key}: a single value (text or a number), not {type(value).__name__}")
        k, v = str(key).strip(), str(value).strip()
        if not k or len(k) > MAX_LABEL_KEY or len(v) > MAX_LABEL_VALUE or "=" in k:
            raise SweepError(f"labels.{key}: a name of 1-{MAX_LABEL_KEY} characters without '=' and a value of at most "
                             f"{MAX_LABEL_VALUE}")  # fmt: skip
        out[k] = v
    return out


def spec_of_sweep(sweep: SweepRow) -> SweepSpec:
    """The spec a stored sweep was submitted with, its relative paths resolved as they were then."""
    raw = dict(sweep.spec)
    base_dir = raw.pop(BASE_DIR_KEY, None)
    return spec_from_dict(raw, base_dir=Path(base_dir) if base_dir else None)
