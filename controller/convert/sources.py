"""What a model file is, and its identity (sha256 of its content).

Identification looks at the bytes, not only the name, so a mislabelled file
gets one clear line that says what it really is. Multi-file sources (a
SavedModel directory, an OpenVINO IR ``.xml`` + ``.bin`` pair) are packed into
a deterministic tar; the model id is the sha256 of that tar.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

from protocol.packing import pack_files

#: Source kinds, as named in the docs.
KERAS = "keras"  # .keras (Keras 3 zip archive)
H5 = "h5"  # legacy Keras HDF5
SAVEDMODEL = "savedmodel"
TFLITE = "tflite"
OPENVINO_IR = "openvino-ir"
ONNX = "onnx"

KIND_LABEL = {
    KERAS: "Keras .keras archive",
    H5: "Keras HDF5 (.h5) file",
    SAVEDMODEL: "TensorFlow SavedModel directory",
    TFLITE: "TFLite flatbuffer",
    OPENVINO_IR: "OpenVINO IR (.xml + .bin)",
    ONNX: "ONNX model",
}
_EXT_KIND = {".keras": KERAS, ".h5": H5, ".hdf5": H5, ".tflite": TFLITE, ".xml": OPENVINO_IR, ".onnx": ONNX}

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"


class SourceError(ValueError):
    """A model file cannot be used; the message names the file and the reason."""


@dataclass(frozen=True)
class Source:
    kind: str
    path: Path
    name: str  # a display name: the file or directory stem

    def payload(self) -> tuple[bytes, str]:
        """The canonical bytes stored for this source and their filename."""
        if self.kind == SAVEDMODEL:
            return pack_tree(self.path), f"{self.name}.savedmodel.tar"
        if self.kind == OPENVINO_IR:
            files = {"model.xml": self.path, "model.bin": self.path.with_suffix(".bin")}
            return pack_files(files), f"{self.name}.openvino-ir.tar"
        return self.path.read_bytes(), self.path.name


def _sniff(head: bytes) -> str | None:
    if head.startswith(HDF5_MAGIC):
        return H5
    if head.startswith(ZIP_MAGIC):
        return KERAS
    if len(head) >= 8 and head[4:8] == b"TFL3":
        return TFLITE
    stripped = head.lstrip()
    if stripped.startswith(b"<?xml") or stripped.startswith(b"<net"):
        return OPENVINO_IR
    return None


def identify(path: str | Path) -> Source:
    p = Path(path).expanduser()
    if not p.exists():
        raise SourceError(f"{p}: no such file or directory")
    if p.is_dir():
        if (p / "saved_model.pb").is_file() or (p / "saved_model.pbtxt").is_file():
            return Source(SAVEDMODEL, p.resolve(), p.resolve().name)
        raise SourceError(f"{p}: a directory, but not a TensorFlow SavedModel (no saved_model.pb inside)")
    size = p.stat().st_size
    if size == 0:
        raise SourceError(f"{p}: the file is empty (0 bytes)")
    with open(p, "rb") as fh:
        head = fh.read(64)
    sniffed = _sniff(head)
    by_ext = _EXT_KIND.get(p.suffix.lower())
    if by_ext is None and sniffed is None:
        known = ", ".join(sorted(_EXT_KIND))
        raise SourceError(f"{p}: unknown model format (extension '{p.suffix}'); fleetbench reads {known} and SavedModel directories")
    if by_ext == ONNX and sniffed is None:
        kind = ONNX  # protobuf has no magic; OpenVINO validates it at conversion
    elif by_ext is not None and sniffed is not None and by_ext != sniffed:
        raise SourceError(
            f"{p}: the name says {KIND_LABEL[by_ext]} but the content is a {KIND_LABEL[sniffed]}; "
            "rename the file to match its content or pass the right file"
        )
    elif sniffed is None:
        raise SourceError(f"{p}: not a {KIND_LABEL[by_ext]} (its first bytes do not match); the file is corrupt or mislabelled")
    else:
        kind = sniffed
    if kind == KERAS:
        _check_keras_zip(p)
    if kind == OPENVINO_IR:
        if p.suffix.lower() != ".xml":
            raise SourceError(f"{p}: an OpenVINO IR is given by its .xml file")
        if not p.with_suffix(".bin").is_file():
            raise SourceError(f"{p}: its weights file {p.with_suffix('.bin').name} is missing next to it")
    return Source(kind, p.resolve(), p.stem)


#: Reading this much of an IR's .xml is enough to see its layers' precisions (the weights are in the .bin).
IR_XML_LIMIT = 64 * 2**20


def openvino_ir_variant(xml: Path) -> tuple[str, str]:
    """(the variant an OpenVINO IR is, the evidence), from its layers: FakeQuantize or int8 constants make it
    ``openvino-int8``, f16 constants ``openvino-fp16``, anything else ``openvino-fp32``.

    A plain scan of the XML text (no XML parser, so no entity expansion), at most :data:`IR_XML_LIMIT` bytes.
    """
    import re

    size = xml.stat().st_size
    if size > IR_XML_LIMIT:
        raise SourceError(f"{xml}: the IR's .xml is {size / 2**20:.0f} MiB; fleetbench reads IRs up to "
                          f"{IR_XML_LIMIT / 2**20:.0f} MiB of XML (the weights belong in the .bin)")  # fmt: skip
    text = xml.read_text(encoding="utf-8", errors="replace")
    fq = len(re.findall(r'type="FakeQuantize"', text))
    consts = re.findall(r'<layer[^>]*type="Const"[^>]*>\s*<data[^>]*element_type="(\w+)"', text)
    by = {t: consts.count(t) for t in set(consts)}
    ints = by.get("i8", 0) + by.get("u8", 0) + by.get("i4", 0) + by.get("u4", 0)
    if fq or ints:
        return "openvino-int8", f"{fq} FakeQuantize layers, {ints} int8/int4 constants"
    if by.get("f16"):
        return "openvino-fp16", f"{by['f16']} f16 constants"
    return "openvino-fp32", "f32 constants"


def _check_keras_zip(p: Path) -> None:
    try:
        with zipfile.ZipFile(p) as z:
            names = set(z.namelist())
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError) as exc:
        raise SourceError(f"{p}: a truncated or corrupt .keras archive ({exc})") from None
    if bad is not None:
        raise SourceError(f"{p}: a corrupt .keras archive (member {bad} fails its CRC check)")
    if "config.json" not in names:
        raise SourceError(f"{p}: a zip archive but not a Keras model (no config.json inside)")


def pack_tree(root: Path) -> bytes:
    files = {str(f.relative_to(root)): f for f in sorted(root.rglob("*")) if f.is_file()}
    return pack_files(files)
