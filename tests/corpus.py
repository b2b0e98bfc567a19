"""Real third-party models, as their makers ship them, fetched by `make test`'s set-up (never at run time),
and one Keras architecture not used elsewhere (``weights=None``), built there too.

    python -m tests.corpus fetch     # download the wheels once, unzip the models into the cache
    python -m tests.corpus path      # print the cache folder

The models come out of registry packages (``pip download --no-deps``), into
``~/.cache/fleetbench/corpus/<key>/`` (or ``$FLEETBENCH_CORPUS``), where the key
is a hash of the list below: a machine that has fetched them once reuses them.
Tests that need them skip when they are missing, except under ``CI=true``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

#: package==version -> the files taken from its wheel (by file name, wherever they sit in it).
CORPUS = {
    "mediapipe==0.10.14": [
        "palm_detection_lite.tflite",  # fp16 weights, 2 outputs (boxes, scores)
        "iris_landmark.tflite",  # fp32, old-schema opcodes, 2 outputs
        "face_detection_full_range_sparse.tflite",  # sparse fp16 weights (DENSIFY)
        "pose_landmark_full.tflite",  # fp16, 5 outputs
        "selfie_segmentation_landscape.tflite",  # custom op Convolution2DTransposeBias
    ],
    "rapidocr-onnxruntime==1.4.4": [
        "ch_PP-OCRv4_rec_infer.onnx",  # PyTorch-style export, dynamic shapes
        "ch_ppocr_mobile_v2.0_cls_infer.onnx",
    ],
}


#: Keras architectures built at set-up (``weights=None``: real graphs, meaningless accuracy), by file name.
KERAS = {"mobilenet_v3_small.keras": ("MobileNetV3Small", (96, 96, 3))}

#: The input an ONNX export's dynamic shape is benchmarked at (height, width, channels), NCHW in the file.
ONNX_INPUT = {"ch_PP-OCRv4_rec_infer.onnx": (48, 320, 3), "ch_ppocr_mobile_v2.0_cls_infer.onnx": (48, 192, 3)}


def names() -> list[str]:
    """Every corpus model's file name."""
    return [n for ns in CORPUS.values() for n in ns] + list(KERAS)


def key() -> str:
    return hashlib.sha256(json.dumps([CORPUS, KERAS], sort_keys=True).encode()).hexdigest()[:16]


def folder() -> Path:
    root = os.environ.get("FLEETBENCH_CORPUS")
    return Path(root) if root else Path.home() / ".cache" / "fleetbench" / "corpus" / key()


def path(name: str) -> Path:
    return folder() / name


def missing() -> list[str]:
    return [n for n in names() if not path(n).is_file()]


def _build_keras(out: Path) -> None:
    """The Keras architectures, with random weights (seed 0), saved as .keras files."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    keras.utils.set_random_seed(0)
    for name, (arch, shape) in KERAS.items():
        if path(name).is_file():
            continue
        print(f"corpus: building {arch}(weights=None, input_shape={shape})", flush=True)
        model = getattr(keras.applications, arch)(weights=None, input_shape=shape)
        part = out / f".{name}.part.keras"
        model.save(part)
        part.rename(out / name)


def fetch() -> int:
    out = folder()
    if not missing():
        print(f"corpus: {len(names())} models in {out}")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    _build_keras(out)
    with tempfile.TemporaryDirectory(prefix="fleetbench-corpus-") as tmp:
        for package, files in CORPUS.items():
            if all(path(n).is_file() for n in files):
                continue
            print(f"corpus: downloading {package} (once; cached in {out})", flush=True)
            r = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                                "-d", tmp, package], capture_output=True, text=True)  # fmt: skip
            if r.returncode != 0:
                tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
                print(f"error: could not download {package} for the model corpus: {tail}", file=sys.stderr)
                return 1
            wheel = next(Path(tmp).glob(package.split("==")[0].replace("-", "_") + "-*.whl"))
            with zipfile.ZipFile(wheel) as z:
                members = {Path(m).name: m for m in z.namelist()}
                for n in files:
                    if n not in members:
                        print(f"error: {wheel.name} has no {n}", file=sys.stderr)
                        return 1
                    part = out / f".{n}.part"
                    part.write_bytes(z.read(members[n]))
                    part.rename(out / n)
            wheel.unlink()
    print(f"corpus: {len(names())} models in {out}")
    return 0


def random_dataset(name: str, out: Path, n: int = 8) -> tuple[Path, str]:
    """(an .npz of ``n`` random images in [0, 1) the model takes, its layout): fidelity needs real variation."""
    import numpy as np

    if name in ONNX_INPUT:
        h, w, c = ONNX_INPUT[name]
        layout = "NCHW"
    elif name in KERAS:
        h, w, c = KERAS[name][1]
        layout = "NHWC"
    else:
        from ai_edge_litert.interpreter import Interpreter

        _, h, w, c = (int(d) for d in Interpreter(model_path=str(path(name))).get_input_details()[0]["shape"])
        layout = "NHWC"
    x = np.random.default_rng(0).random((n, h, w, c), dtype=np.float32)
    np.savez(out, x=x)
    return out, layout


def run_model(name: str, workdir: Path, settings, capabilities=("litert:cpu", "openvino:CPU")) -> list[dict]:
    """Convert a corpus model into every variant that applies and benchmark each on each local capability
    of its family, the way `fleetbench` does (sandboxed conversion, benchmark child). One row a variant."""
    from agent.runner import run_job
    from controller.artifacts import ArtifactStore
    from controller.convert import service
    from controller.convert.runner import Limits, run_conversion
    from controller.convert.variants import FAMILY_CAPABILITY, STANDARD, VARIANTS
    from controller.datasets import Preprocessing
    from controller.store import Store
    from protocol import JobSpec, new_job_id

    workdir.mkdir(parents=True, exist_ok=True)
    store = Store(f"sqlite:///{workdir / 'fleetbench.db'}")
    store.migrate()
    arts = ArtifactStore(workdir / "artifacts")
    data, layout = random_dataset(name, workdir / f"{name}.npz")
    try:
        plan = service.plan(path(name), list(STANDARD), store, arts, dataset_path=data,
                            preprocessing=Preprocessing(layout=layout), n_calibration=4)  # fmt: skip
        report = service.execute(plan, store, lambda job, ev: run_conversion(job, arts, ev, Limits()))
        rows = []
        for o in report.outcomes:
            row = {"model": name, "variant": o.variant, "source": o.from_source, "status": o.status,
                   "reason": o.error or "", "size_bytes": o.size_bytes, "record": None}  # fmt: skip
            cap = FAMILY_CAPABILITY[VARIANTS[o.variant].family]
            if o.status in ("converted", "cached") and cap in capabilities:
                spec = JobSpec(job_id=new_job_id(), model_id=plan.model_id, model_name=name, variant=o.variant,
                               capability=cap, artifact=o.artifact, settings=settings,
                               dataset=plan.dataset.validation, reference=o.reference)  # fmt: skip
                outcome = run_job(spec.to_dict(), "zoo")
                if outcome.ok:
                    row["record"] = outcome.record
                else:
                    row["status"], row["reason"] = "failed", outcome.error
            rows.append(row)
        return rows
    finally:
        store.close()


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else "fetch"
    if cmd == "path":
        print(folder())
        sys.exit(0)
    sys.exit(fetch())
