"""Identifying model files by content, with one clear line for bad ones; packing; recipes."""

import io
import tarfile

import pytest

from controller.convert.engine import unsupported_ops
from controller.convert.sources import HDF5_MAGIC, SourceError, identify
from controller.convert.variants import VARIANTS, cache_key, refusal
from protocol.packing import pack_files, unpack

TFLITE_HEAD = b"\x1c\x00\x00\x00TFL3" + b"\x00" * 56


@pytest.mark.parametrize(
    "name,content,kind",
    [
        ("m.tflite", TFLITE_HEAD, "tflite"),
        ("m.h5", HDF5_MAGIC + b"\x00" * 64, "h5"),
        ("m.hdf5", HDF5_MAGIC + b"\x00" * 64, "h5"),
        ("m.onnx", b"\x08\x07\x12\x07pytorch", "onnx"),
        ("weights", HDF5_MAGIC + b"\x00" * 8, "h5"),  # no extension: the content decides
    ],
)
def test_identify_by_content(tmp_path, name, content, kind):
    p = tmp_path / name
    p.write_bytes(content)
    assert identify(p).kind == kind


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("empty.keras", b"", "the file is empty (0 bytes)"),
        ("m.tflite", HDF5_MAGIC + b"\x00" * 64, "the name says TFLite flatbuffer but the content is a Keras HDF5 (.h5) file"),
        ("m.keras", TFLITE_HEAD, "the name says Keras .keras archive but the content is a TFLite flatbuffer"),
        ("m.tflite", b"just some text, not a model" * 4, "not a TFLite flatbuffer"),
        ("m.h5", b"\x00" * 100, "not a Keras HDF5 (.h5) file"),
        ("m.pt", b"\x80\x02pickle", "unknown model format (extension '.pt')"),
        ("m.keras", b"PK\x03\x04" + b"\x00" * 40, "truncated or corrupt .keras archive"),
    ],
)
def test_bad_files_get_one_clear_line(tmp_path, name, content, message):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(SourceError) as err:
        identify(p)
    text = str(err.value)
    assert message in text and str(p) in text and "\n" not in text


def test_zip_without_keras_config_is_not_a_keras_model(tmp_path):
    import zipfile

    p = tmp_path / "notes.keras"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(SourceError, match="no config.json inside"):
        identify(p)


def test_openvino_ir_needs_its_bin(tmp_path):
    xml = tmp_path / "net.xml"
    xml.write_text('<?xml version="1.0"?><net name="x" version="11"></net>')
    with pytest.raises(SourceError, match="weights file net.bin is missing"):
        identify(xml)
    (tmp_path / "net.bin").write_bytes(b"\x00")
    assert identify(xml).kind == "openvino-ir"


def test_directory_must_be_a_savedmodel(tmp_path):
    with pytest.raises(SourceError, match="not a TensorFlow SavedModel"):
        identify(tmp_path)
    (tmp_path / "saved_model.pb").write_bytes(b"\x00")
    assert identify(tmp_path).kind == "savedmodel"


def test_missing_path(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        identify(tmp_path / "nope.keras")


def test_packing_is_deterministic_and_round_trips(tmp_path):
    (tmp_path / "a").write_bytes(b"alpha")
    one = pack_files({"model.xml": tmp_path / "a", "model.bin": b"beta"})
    two = pack_files({"model.bin": b"beta", "model.xml": tmp_path / "a"})
    assert one == two
    tar = tmp_path / "x.tar"
    tar.write_bytes(one)
    out = unpack(tar, tmp_path / "out")
    assert (out / "model.xml").read_bytes() == b"alpha" and (out / "model.bin").read_bytes() == b"beta"


def test_unpack_refuses_path_traversal(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 3
        t.addfile(info, io.BytesIO(b"bad"))
    tar = tmp_path / "evil.tar"
    tar.write_bytes(buf.getvalue())
    with pytest.raises(Exception):
        unpack(tar, tmp_path / "dest")
    assert not (tmp_path / "escaped.txt").exists()


@pytest.mark.parametrize(
    "kind,variant,refused_with",
    [
        ("keras", "tflite-int8", None),
        ("h5", "openvino-int8", None),
        ("savedmodel", "tflite-fp16", None),
        ("tflite", "tflite-fp32", None),
        ("tflite", "tflite-int8", None),  # ai-edge-quantizer, from the file itself
        ("tflite/tflite-fp16", "tflite-fp32", None),  # fp16 weights dequantized
        ("tflite/tflite-fp16", "tflite-dynamic-int8", None),
        ("tflite/tflite-int8", "tflite-fp32", "float weights cannot be recovered"),
        ("tflite/tflite-dynamic-int8", "tflite-int8", "already tflite-dynamic-int8"),
        ("tflite/tflite-int8", "tflite-int8", None),  # the file itself
        ("tflite", "openvino-fp16", None),
        ("openvino-ir", "tflite-fp32", "no TFLite variant from an OpenVINO IR"),
        ("openvino-ir", "openvino-int8", None),
        ("onnx", "tflite-dynamic-int8", "no TFLite variant from ONNX"),
        ("onnx", "openvino-fp32", None),
        ("keras", "tflite-int4", "unknown variant 'tflite-int4'"),
    ],
)
def test_which_variants_make_sense(kind, variant, refused_with):
    kind, _, is_variant = kind.partition("/")  # what a TFLite file is, by its tensors
    why = refusal(kind, variant, is_variant or None)
    if refused_with is None:
        assert why is None
    else:
        assert refused_with in why


def test_cache_key_follows_every_input():
    tools = {"tensorflow": "2.21.0", "openvino": "2026.4.1", "nncf": "3.4.0"}
    base = cache_key("a" * 64, "tflite-int8", (1, 8, 8, 1), "c" * 64, tools)
    assert base == cache_key("a" * 64, "tflite-int8", (1, 8, 8, 1), "c" * 64, dict(tools))
    assert base != cache_key("b" * 64, "tflite-int8", (1, 8, 8, 1), "c" * 64, tools)
    assert base != cache_key("a" * 64, "tflite-fp16", (1, 8, 8, 1), "c" * 64, tools)
    assert base != cache_key("a" * 64, "tflite-int8", (1, 16, 16, 1), "c" * 64, tools)
    assert base != cache_key("a" * 64, "tflite-int8", (1, 8, 8, 1), "d" * 64, tools)
    assert base != cache_key("a" * 64, "tflite-int8", (1, 8, 8, 1), "c" * 64, dict(tools, tensorflow="2.22.0"))
    # calibration data does not matter to a recipe that does not use it; another tool's version neither
    fp32 = cache_key("a" * 64, "tflite-fp32", None, "c" * 64, tools)
    assert fp32 == cache_key("a" * 64, "tflite-fp32", None, "d" * 64, dict(tools, nncf="9"))
    assert set(VARIANTS) == {"tflite-fp32", "tflite-dynamic-int8", "tflite-fp16", "tflite-int8",
                             "openvino-fp32", "openvino-fp16", "openvino-int8", "tflite-int8-qat",
                             "openvino-int8-qat", "openvino-int8-ac", "tflite-int8-mixed"}  # fmt: skip


@pytest.mark.parametrize(
    "message,ops",
    [
        ("error: 'tf.Erf' op is neither a custom op nor a flex op\nTF Select ops: Erf\nDetails:", ["Erf"]),
        ("Some ops are not supported\nTF Select ops: Atan, Erf\n", ["Atan", "Erf"]),
        ("Quantization not yet supported for op: 'CUMSUM'", ["CUMSUM"]),
        ("failed for an unrelated reason", []),
    ],
)
def test_unsupported_op_names_are_found_in_converter_errors(message, ops):
    assert unsupported_ops(message) == ops


def test_artifact_store_verify_and_gc(tmp_path):
    import os
    import time

    from controller.artifacts import ArtifactStore

    store = ArtifactStore(tmp_path)
    keep = store.put_bytes(b"keep me", "a.bin")
    drop = store.put_bytes(b"drop me", "b.bin")
    assert store.put_bytes(b"keep me", "again.bin").sha256 == keep.sha256  # content-addressed, stored once
    stale = tmp_path / keep.sha256[:2] / ".incoming-crashed"
    stale.write_bytes(b"half a file")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    assert store.verify() == []
    store.path_for(drop.sha256).write_bytes(b"tampered")
    (bad, actual), = store.verify()
    assert bad.sha256 == drop.sha256 and actual != drop.sha256
    assert store.get(drop.sha256) is None  # a corrupt artifact is never handed out
    assert [f.sha256 for f in store.gc({keep.sha256}, dry_run=True)] == [drop.sha256]
    assert store.path_for(drop.sha256).exists()
    store.gc({keep.sha256})
    assert not store.path_for(drop.sha256).exists() and store.get(keep.sha256) is not None
    assert not stale.exists()


def test_without_ai_edge_quantizer_the_tflite_file_itself_still_runs(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ai_edge_quantizer" else real(name, *a))
    assert "needs ai-edge-quantizer, which is not installed" in refusal("tflite", "tflite-int8", "tflite-fp16")
    assert refusal("tflite", "tflite-int8", "tflite-int8") is None  # the file itself needs no quantizer
    assert refusal("tflite", "tflite-fp32", "tflite-fp16") is None  # dequantizing needs none either


def test_an_oversized_source_is_refused_before_it_is_read_or_stored(tmp_path, sqlite_store, monkeypatch):
    """Issue 14, finding 10: a 3 MiB (sparse) file with a TFLite header, over a 1 MiB limit, is one line; the
    artifact store and the catalog stay empty."""
    from controller.artifacts import ArtifactStore
    from controller.convert.service import ConvertError, plan

    monkeypatch.setenv("FLEETBENCH_MAX_MODEL_MB", "1")
    big = tmp_path / "big.tflite"
    with big.open("wb") as fh:
        fh.write(TFLITE_HEAD)
        fh.truncate(3 * 2**20)
    artifacts = ArtifactStore(tmp_path / "artifacts")
    with pytest.raises(ConvertError, match=r"big.tflite: 3.0 MiB, over the limit of 1 MiB for a model; .*FLEETBENCH_MAX_MODEL_MB"):
        plan(big, ["tflite-fp32"], sqlite_store, artifacts)
    assert list(artifacts.iter_files()) == [] and sqlite_store.models() == []
    monkeypatch.setenv("FLEETBENCH_MAX_MODEL_MB", "lots")
    with pytest.raises(ConvertError, match="is not a number of MiB"):
        plan(big, ["tflite-fp32"], sqlite_store, artifacts)


def test_a_source_is_listed_only_once_something_was_made_from_it(tmp_path, sqlite_store, tiny_model):
    """Issue 14, finding 10: a broken SavedModel fails to convert and is not listed in `fleetbench models`; a
    TFLite file read whole is listed at once."""
    from controller.artifacts import ArtifactStore
    from controller.convert.service import execute, local_runner, plan

    artifacts = ArtifactStore(tmp_path / "artifacts")
    broken = tmp_path / "broken_savedmodel"
    (broken / "variables").mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"\x08\x01this is not a SavedModel protobuf" * 10)
    p = plan(broken, ["openvino-fp32"], sqlite_store, artifacts)
    assert not p.registered and sqlite_store.models() == []
    report = execute(p, sqlite_store, local_runner(artifacts))
    assert report.outcome("openvino-fp32").status == "failed"
    assert sqlite_store.models() == []  # nothing was made from it: not listed

    good = plan(tiny_model["path"], ["tflite-fp32"], sqlite_store, artifacts)
    assert good.registered and [m.model_id for m in sqlite_store.models()] == [good.model_id]
