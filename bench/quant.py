"""Int8 that keeps accuracy (issue 18): variant × accuracy or fidelity × size × p50 × conversion time.

    python bench/quant.py [--models demo,hard,wide] [--qat-epochs 3] [--data-dir DIR]

Three models, each converted here and benchmarked in real benchmark children (``agent.runner.run_job``
through a fork server, as an agent runs them), one job per variant, on the validation split:

- ``demo``: the digits CNN of ``fleetbench demo --quant`` (the same split: 64 calibrate, 150 fine-tune the QAT
  variants, 145 validate);
- ``hard``: :func:`tests.quant_models.hard_to_quantize`, a digits classifier whose first layer post-training
  int8 honestly breaks (one outlier weight on an always-zero pixel); 100 calibrate, 300 fine-tune, 397 validate;
- ``wide``: a larger digits classifier trained here (three conv blocks of 64-128-256 channels with batch
  normalization, upsampled to 32×32, 0.6 M parameters), on the ``hard`` split.

The QAT fine-tune's time is its own column; the conversion time of a QAT variant includes it (and the tf_keras
process's start) for the first of the pair only. p50 is the latency phase's median at 1 thread (at least 1,000
inferences and 1 s); the column beside it is the p90/p50 spread, the noise a p50 must be read against.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.runner import ForkServer, run_job  # noqa: E402
from protocol import BenchmarkSettings, JobSpec, new_job_id  # noqa: E402

SETTINGS = BenchmarkSettings(threads=1, warmup_iterations=50, min_iterations=1000, min_duration_s=1.0, timeout_s=900)
VARIANTS = {
    "demo": ["tflite-fp32", "tflite-int8", "tflite-int8-qat", "tflite-int8-mixed", "openvino-fp32", "openvino-int8",
             "openvino-int8-qat", "openvino-int8-ac"],
    "hard": ["tflite-fp32", "tflite-int8", "tflite-int8-qat", "tflite-int8-mixed", "openvino-fp32", "openvino-int8",
             "openvino-int8-qat", "openvino-int8-ac"],
    "wide": ["tflite-fp32", "tflite-int8", "tflite-int8-qat", "tflite-int8-mixed", "openvino-fp32", "openvino-int8",
             "openvino-int8-qat", "openvino-int8-ac"],
}  # fmt: skip
#: The mixed variant's fidelity target (worst-output SNR against fp32, dB), per model.
TARGET_DB = {"demo": 40.0, "hard": 30.0, "wide": 40.0}


def wide_cnn(path: Path) -> Path:
    """A larger digits classifier: 8×8 upsampled to 32×32, three conv blocks with batch norm (momentum 0.9: the default 0.99 had not settled in 320 steps), trained 10 epochs."""
    from controller.demo_model import import_tf
    from tests import quant_models

    keras = import_tf().keras
    keras.utils.set_random_seed(0)
    x, y = quant_models.digits()
    x, y = x[: quant_models.TRAINED] / 16.0, y[: quant_models.TRAINED]
    layers = [keras.Input((8, 8, 1)), keras.layers.UpSampling2D(4)]
    for width in (64, 128, 256):
        layers += [keras.layers.Conv2D(width, 3, padding="same", use_bias=False), keras.layers.BatchNormalization(momentum=0.9),
                   keras.layers.ReLU(), keras.layers.MaxPooling2D(2)]  # fmt: skip
    layers += [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10, activation="softmax")]
    model = keras.Sequential(layers, name="wide_cnn")
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=10, batch_size=32, verbose=0)
    model.save(path)
    return path


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# size: three models' sources and data sets, converted the same way
def convert(data_dir: Path, model: str, qat_epochs: int):
    """Convert ``model``'s variants into the data directory ``data_dir`` (one for every model, so one file root)."""
    from controller import demo_model
    from controller.artifacts import ArtifactStore
    from controller.config import Paths
    from controller.convert import service
    from controller.convert.variants import QuantOptions
    from controller.datasets import Preprocessing
    from controller.store import Store
    from tests import quant_models

    paths = Paths.resolve(str(data_dir))
    work = data_dir / "sources" / model
    work.mkdir(parents=True, exist_ok=True)
    store = Store(paths.db_url(None))
    store.migrate()
    arts = ArtifactStore(paths.artifacts)
    opts = QuantOptions(qat_epochs=qat_epochs, fidelity_target_db=TARGET_DB[model])
    if model == "demo":
        files = demo_model.ensure(paths, on_step=lambda m: _say(f"  demo: {m}"))
        source, data, pre, n_cal, n_train = files.keras, files.holdout, Preprocessing(scale=demo_model.SCALE), 64, 150
    elif model in ("hard", "wide"):
        source = quant_models.hard_to_quantize(work / "hard.keras") if model == "hard" else wide_cnn(work / "wide.keras")
        x, y = quant_models.digits()
        data = work / "hard-digits.npz"
        np.savez(data, x=x[quant_models.TRAINED :], y=y[quant_models.TRAINED :])
        pre, n_cal, n_train = Preprocessing(scale=1 / 16), 100, 300
    else:
        sys.exit(f"error: unknown model {model}; one of {', '.join(VARIANTS)}")
    plan = service.plan(source, VARIANTS[model], store, arts, dataset_path=data, preprocessing=pre, n_calibration=n_cal,
                        n_train=n_train, options=opts, name=model)  # fmt: skip
    report = service.execute(plan, store, service.local_runner(arts),
                             on_event=lambda e: _say(f"  {model}: {e['variant']} {e['event']}")
                             if e.get("event") in ("done", "failed") else None)  # fmt: skip
    store.close()
    return plan, report


def job(forkserver, model: str, outcome, plan):
    cap = "litert:cpu" if outcome.variant.startswith("tflite") else "openvino:CPU"
    spec = JobSpec(job_id=new_job_id(), model_id=plan.model_id, model_name=model, variant=outcome.variant, capability=cap,
                   artifact=outcome.artifact, settings=SETTINGS, dataset=plan.dataset.validation,
                   reference=outcome.reference)  # fmt: skip
    result = run_job(spec.to_dict(), "quant-bench", forkserver=forkserver)
    if not result.ok:
        sys.exit(f"error: {model} {outcome.variant}: {result.error_kind}: {result.error}")
    return result.record


def row(model: str, o, rec) -> str:
    from controller.analysis.quantization import details_summary

    if rec is None:
        return f"| {model} | {o.variant} | - | - | - | - | - | - | {o.status}: {o.error} |"
    acc = f"{rec.accuracy.top1:.2%}" if rec.accuracy and rec.accuracy.top1 is not None else "-"
    snr = f"{rec.fidelity.snr_db:.1f}" if rec.fidelity else "-"
    qat = (o.details or {}).get("qat")
    fine = f"{qat['fine_tune_s']:.1f}" if qat else "-"
    spread = rec.stats.p90_ms / rec.stats.p50_ms if rec.stats.p50_ms else float("nan")
    return (f"| {model} | {o.variant} | {acc} | {snr} | {o.size_bytes / 1024:,.1f} | {rec.stats.p50_ms:.4f} | "
            f"{spread:.2f} | {o.seconds:.2f} / {fine} | {details_summary(o.details) or '-'} |")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="demo,hard,wide")
    ap.add_argument("--qat-epochs", type=int, default=3)
    ap.add_argument("--data-dir", default=None, help="where models and conversions go (default: a temp dir)")
    args = ap.parse_args()
    print("| model | variant | top-1 | SNR dB | KiB | p50 ms | p90/p50 | convert s / fine-tune s | found |")
    print("|---|---|---|---|---|---|---|---|---|")
    from agent.artifacts import FILE_ROOTS_ENV
    from controller.config import Paths

    with tempfile.TemporaryDirectory(prefix="fleetbench-quant-bench-") as tmp:
        root = Path(args.data_dir or tmp)
        os.environ[FILE_ROOTS_ENV] = str(Paths.resolve(str(root)).artifacts)  # the children read artifacts in place
        forkserver = ForkServer()
        try:
            for model in [m.strip() for m in args.models.split(",") if m.strip()]:
                _say(f"converting {model}")
                plan, report = convert(root, model, args.qat_epochs)
                for o in report.outcomes:
                    rec = job(forkserver, model, o, plan) if o.artifact is not None else None
                    print(row(model, o, rec), flush=True)
        finally:
            forkserver.close()


if __name__ == "__main__":
    main()
