"""Which frontend reads a model file: decided by its content, not its suffix.

- ``tflite``: a TFLite flatbuffer (file identifier ``TFL3`` at bytes 4..8);
- ``keras``: a Keras 3 ``.keras`` zip (``config.json`` with ``metadata.json`` or
  ``model.weights.h5``), or an HDF5 file (signature ``\\x89HDF\\r\\n\\x1a\\n`` at offset 0, 512,
  1024, ...: Keras ``.h5``);
- ``torch``: a PyTorch zip (``torch.save`` / TorchScript: members ``*/data.pkl``,
  ``*/constants.pkl``, ``*/version``), a legacy pickle (``torch.save`` before 1.6: pickle
  protocol 2+, first byte ``0x80``), or ``module:callable`` (not a file);
- ``onnx``: a protobuf whose first field is one of ``ModelProto``'s (``ir_version``,
  ``producer_name``, ``graph``, ``opset_import``, ...; the file is then fully checked by
  :func:`exporter.frontends.onnx.load_onnx_model`).

Content none of these recognise goes by the suffix when it names a format (the frontend's loader
then says what is wrong: ``model.onnx: not an ONNX model``, ``model.tflite: not a TFLite model``);
anything else is refused with one line listing the accepted formats.

Example::

    detect_format("face_detection_front.tflite")   # 'tflite', whatever the file is called
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Literal

from edge_runtime.errors import ModelError
from exporter.tflite_flatbuffer import is_tflite

ModelFormat = Literal["onnx", "tflite", "torch", "keras"]

ACCEPTED = (
    "ONNX (.onnx), TFLite (.tflite), PyTorch (.pt/.pth, a saved nn.Module or TorchScript; or module:callable), "
    "Keras (.keras, .h5)"
)
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_SUFFIXES: dict[str, ModelFormat] = {
    ".onnx": "onnx",
    ".tflite": "tflite",
    ".pt": "torch",
    ".pth": "torch",
    ".ts": "torch",
    ".pt2": "torch",
    ".keras": "keras",
    ".h5": "keras",
    ".hdf5": "keras",
}
# ModelProto field number -> protobuf wire type (0 varint, 2 length-delimited).
_MODEL_PROTO_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2}


def is_callable_spec(model: str) -> bool:
    """``package.module:callable`` or ``file.py:callable`` (a PyTorch factory), not a file path."""
    return ":" in model and not Path(model).exists()


def _is_hdf5(path: Path) -> bool:
    with open(path, "rb") as handle:
        offset = 0
        while True:  # the superblock sits at 0, 512, 1024, 2048, ... (after a user block)
            handle.seek(offset)
            chunk = handle.read(8)
            if len(chunk) < 8:
                return False
            if chunk == HDF5_SIGNATURE:
                return True
            offset = 512 if offset == 0 else offset * 2
            if offset > 1 << 20:
                return False


def _zip_format(path: Path) -> ModelFormat | None:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return None
    if any(n.endswith(("/data.pkl", "/constants.pkl", "/version", "/archive_format")) for n in names):
        return "torch"
    if "config.json" in names and ("metadata.json" in names or "model.weights.h5" in names):
        return "keras"
    return None


def _varint(data: bytes, pos: int) -> tuple[int, int] | None:
    value = shift = 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7
    return None


def _looks_like_onnx(head: bytes) -> bool:
    """The first protobuf field is a ``ModelProto`` field with its wire type."""
    tag = _varint(head, 0)
    if tag is None:
        return False
    number, wire = tag[0] >> 3, tag[0] & 7
    return _MODEL_PROTO_FIELDS.get(number) == wire


def detect_format(model: str | Path) -> ModelFormat:
    """The format of ``model`` (a file, or ``module:callable``), from its content; raises
    :class:`ModelError` naming the file and the accepted formats when it is none of them."""
    text = str(model)
    if is_callable_spec(text):
        return "torch"
    path = Path(text)
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    if not path.is_file():
        raise ModelError(f"{path}: not a file (MODEL is a model file or module:callable)")
    with open(path, "rb") as handle:
        head = handle.read(64)
    claimed = _SUFFIXES.get(path.suffix.lower())
    if not head:
        if claimed is not None:
            return claimed  # its loader says "empty file"
        raise ModelError(f"{path}: empty file, not a model (accepted: {ACCEPTED})")
    if is_tflite(head):
        return "tflite"
    if head.startswith(b"PK\x03\x04"):
        found = _zip_format(path)
        if found is not None:
            return found
        if claimed is not None:
            return claimed
        raise ModelError(f"{path}: a zip archive that is neither a PyTorch nor a Keras model (accepted: {ACCEPTED})")
    if _is_hdf5(path):
        return "keras"
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:
        return "torch"  # a pickle: torch.save's legacy format
    if _looks_like_onnx(head):
        return "onnx"
    if claimed is not None:
        return claimed
    raise ModelError(f"{path}: not a model file this exporter reads (accepted: {ACCEPTED})")


def guess_format(model: str | Path) -> ModelFormat | None:
    """The format from the content when it can be read and is recognised, else from the suffix
    (None when neither says): for checking options before the file is read in earnest."""
    try:
        return detect_format(model)
    except (ModelError, OSError):
        return _SUFFIXES.get(Path(str(model)).suffix.lower())


__all__ = ["ACCEPTED", "ModelFormat", "detect_format", "guess_format", "is_callable_spec"]
