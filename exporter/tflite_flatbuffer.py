"""Read what the exporter needs from a TFLite flatbuffer, in pure Python (no TensorFlow, no
``flatbuffers`` package): the operator codes, each subgraph's tensors (name, shape, type,
sparsity), inputs, outputs and operators, and the named metadata buffers
(``TFLITE_METADATA``: the ``M001`` model-metadata flatbuffer, see :func:`read_input_metadata`).

Field numbers follow the TFLite schema (``tensorflow/compiler/mlir/lite/schema/schema.fbs``)
and the metadata schema (``tflite_support/metadata/metadata_schema.fbs``). Every read is
bounds-checked: a truncated or corrupt file raises :class:`edge_runtime.errors.ModelError`.

Example::

    model = read_tflite(Path("face_detection_front.tflite").read_bytes(), "face_detection_front.tflite")
    [code.name for code in model.operator_codes]   # ['CONV_2D', 'DEPTHWISE_CONV_2D', ...]
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from edge_runtime.errors import ModelError

#: The file identifier of a TFLite model (bytes 4..8).
TFLITE_IDENTIFIER = b"TFL3"
#: The file identifier of the TFLite model-metadata flatbuffer (the TFLITE_METADATA buffer).
METADATA_IDENTIFIER = b"M001"
METADATA_NAME = "TFLITE_METADATA"

#: BuiltinOperator codes the exporter names (the others are shown as their number).
CUSTOM = 32
DENSIFY = 124
#: Codes below this may be stored in the deprecated int8 field; the real code is the larger.
_PLACEHOLDER_FOR_GREATER_OP_CODES = 127
_BUILTIN_NAMES = {
    0: "ADD", 1: "AVERAGE_POOL_2D", 2: "CONCATENATION", 3: "CONV_2D", 4: "DEPTHWISE_CONV_2D",
    5: "DEPTH_TO_SPACE", 6: "DEQUANTIZE", 9: "FULLY_CONNECTED", 14: "LOGISTIC", 17: "MAX_POOL_2D",
    18: "MUL", 19: "RELU", 21: "RELU6", 22: "RESHAPE", 23: "RESIZE_BILINEAR", 25: "SOFTMAX",
    28: "TANH", 32: "CUSTOM", 34: "PAD", 39: "TRANSPOSE", 40: "MEAN", 41: "SUB", 49: "SPLIT",
    54: "PRELU", 67: "TRANSPOSE_CONV", 83: "PACK", 114: "QUANTIZE", 124: "DENSIFY",
}  # fmt: skip
#: TensorType values -> numpy dtype names.
TENSOR_TYPES = {
    0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool",
    7: "int16", 8: "complex64", 9: "int8", 10: "float64", 11: "complex128", 12: "uint64",
    15: "uint32", 16: "uint16", 17: "int4",
}  # fmt: skip

T = TypeVar("T")


class _Reader:
    """Bounds-checked little-endian reads from a flatbuffer."""

    def __init__(self, data: bytes, where: str) -> None:
        self.data = data
        self.where = where

    def _unpack(self, fmt: str, pos: int) -> Any:
        size = struct.calcsize(fmt)
        if pos < 0 or pos + size > len(self.data):
            raise ModelError(f"{self.where}: not a valid TFLite flatbuffer (an offset points outside the file)")
        return struct.unpack_from("<" + fmt, self.data, pos)[0]

    def u8(self, pos: int) -> int:
        return int(self._unpack("B", pos))

    def i8(self, pos: int) -> int:
        return int(self._unpack("b", pos))

    def u16(self, pos: int) -> int:
        return int(self._unpack("H", pos))

    def i32(self, pos: int) -> int:
        return int(self._unpack("i", pos))

    def u32(self, pos: int) -> int:
        return int(self._unpack("I", pos))

    def u64(self, pos: int) -> int:
        return int(self._unpack("Q", pos))

    def f32(self, pos: int) -> float:
        return float(self._unpack("f", pos))

    def root(self) -> _Table:
        return _Table(self, self.u32(0))


class _Table:
    """One flatbuffer table: fields by their number in the schema."""

    def __init__(self, reader: _Reader, pos: int) -> None:
        self.r = reader
        self.pos = pos
        self.vtable = pos - reader.i32(pos)
        self.vsize = reader.u16(self.vtable)

    def _field(self, index: int) -> int | None:
        slot = 4 + 2 * index
        if slot + 2 > self.vsize:
            return None
        offset = self.r.u16(self.vtable + slot)
        return self.pos + offset if offset else None

    def scalar(self, index: int, read: Callable[[int], T], default: T) -> T:
        pos = self._field(index)
        return default if pos is None else read(pos)

    def _indirect(self, index: int) -> int | None:
        pos = self._field(index)
        return None if pos is None else pos + self.r.u32(pos)

    def string(self, index: int) -> str | None:
        pos = self._indirect(index)
        if pos is None:
            return None
        length = self.r.u32(pos)
        if pos + 4 + length > len(self.r.data):
            raise ModelError(f"{self.r.where}: not a valid TFLite flatbuffer (a string runs past the end)")
        return self.r.data[pos + 4 : pos + 4 + length].decode("utf-8", errors="replace")

    def table(self, index: int) -> _Table | None:
        pos = self._indirect(index)
        return None if pos is None else _Table(self.r, pos)

    def _vector(self, index: int, item: int) -> tuple[int, int]:
        pos = self._indirect(index)
        if pos is None:
            return 0, 0
        length = self.r.u32(pos)
        if pos + 4 + length * item > len(self.r.data):
            raise ModelError(f"{self.r.where}: not a valid TFLite flatbuffer (a vector runs past the end)")
        return pos + 4, length

    def tables(self, index: int) -> list[_Table]:
        start, length = self._vector(index, 4)
        return [_Table(self.r, start + 4 * i + self.r.u32(start + 4 * i)) for i in range(length)]

    def ints(self, index: int) -> list[int]:
        start, length = self._vector(index, 4)
        return [self.r.i32(start + 4 * i) for i in range(length)]

    def floats(self, index: int) -> list[float]:
        start, length = self._vector(index, 4)
        return [self.r.f32(start + 4 * i) for i in range(length)]

    def bytes(self, index: int) -> bytes:
        start, length = self._vector(index, 1)
        return self.r.data[start : start + length]


@dataclass(frozen=True)
class OperatorCode:
    """One entry of the model's ``operator_codes``: the builtin code and, for CUSTOM, its name."""

    builtin: int
    custom: str | None

    @property
    def name(self) -> str:
        """``CONV_2D``, the custom op's own name (``FlexEinsum``, ``TFLite_Detection_PostProcess``),
        or ``BUILTIN_<n>`` for a builtin without a name here."""
        if self.builtin == CUSTOM:
            return self.custom or "CUSTOM (unnamed)"
        return _BUILTIN_NAMES.get(self.builtin, f"BUILTIN_{self.builtin}")

    @property
    def is_custom(self) -> bool:
        return self.builtin == CUSTOM

    @property
    def is_flex(self) -> bool:
        """A TensorFlow op run by the Flex delegate (custom code ``Flex...``)."""
        return self.is_custom and (self.custom or "").startswith("Flex")


@dataclass(frozen=True)
class Tensor:
    """One tensor of a subgraph."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    sparse: bool


@dataclass(frozen=True)
class Subgraph:
    """One subgraph: its tensors, input and output tensor indices, and each operator's opcode index."""

    name: str
    tensors: tuple[Tensor, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    operators: tuple[int, ...]


@dataclass(frozen=True)
class TfliteModel:
    """What :func:`read_tflite` reads from a model."""

    operator_codes: tuple[OperatorCode, ...]
    subgraphs: tuple[Subgraph, ...]
    metadata: dict[str, bytes]


def is_tflite(head: bytes) -> bool:
    """Whether the first bytes of a file carry the TFLite file identifier (``TFL3`` at 4..8)."""
    return len(head) >= 8 and head[4:8] == TFLITE_IDENTIFIER


def read_tflite(data: bytes, where: str) -> TfliteModel:
    """Parse the TFLite model ``data`` (``where`` names it in errors)."""
    if not is_tflite(data[:8]):
        raise ModelError(f"{where}: not a TFLite model (no 'TFL3' file identifier)")
    reader = _Reader(data, where)
    model = reader.root()
    codes = []
    for entry in model.tables(1):
        deprecated = entry.scalar(0, reader.i8, 0)
        builtin = entry.scalar(3, reader.i32, 0)
        codes.append(OperatorCode(builtin=max(deprecated, builtin), custom=entry.string(1)))
    subgraphs = []
    for graph in model.tables(2):
        tensors = []
        for tensor in graph.tables(0):
            kind = tensor.scalar(1, reader.i8, 0)
            tensors.append(
                Tensor(
                    name=tensor.string(3) or "",
                    shape=tuple(tensor.ints(0)),
                    dtype=TENSOR_TYPES.get(kind, f"type{kind}"),
                    sparse=tensor.table(6) is not None,
                )
            )
        operators = tuple(op.scalar(0, reader.u32, 0) for op in graph.tables(3))
        subgraphs.append(
            Subgraph(
                name=graph.string(4) or "",
                tensors=tuple(tensors),
                inputs=tuple(graph.ints(1)),
                outputs=tuple(graph.ints(2)),
                operators=operators,
            )
        )
    buffers = model.tables(4)
    metadata: dict[str, bytes] = {}
    for entry in model.tables(6):
        index = entry.scalar(1, reader.u32, 0)
        if index < len(buffers):
            buffer = buffers[index]
            blob = buffer.bytes(0)
            offset, size = buffer.scalar(1, reader.u64, 0), buffer.scalar(2, reader.u64, 0)
            if not blob and offset > 1 and offset + size <= len(data):  # a large model: data after the flatbuffer
                blob = data[offset : offset + size]
            metadata[entry.string(0) or ""] = blob
    return TfliteModel(operator_codes=tuple(codes), subgraphs=tuple(subgraphs), metadata=metadata)


@dataclass(frozen=True)
class InputMetadata:
    """What the model metadata states about the first input: normalisation (in the units the
    input tensor is fed: for an image model, pixel values 0..255) and colour space."""

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    color: str | None = None


#: ProcessUnitOptions union: NormalizationOptions; ContentProperties union: ImageProperties.
_NORMALIZATION_OPTIONS = 1
_IMAGE_PROPERTIES = 2
_COLOR_SPACES = {1: "RGB", 2: "GRAY"}


def read_input_metadata(blob: bytes, where: str) -> InputMetadata:
    """The first input's normalisation and colour space from a ``TFLITE_METADATA`` buffer
    (the ``M001`` ModelMetadata flatbuffer); empty when it states neither."""
    if len(blob) < 8 or blob[4:8] != METADATA_IDENTIFIER:
        return InputMetadata()
    reader = _Reader(blob, f"{where} (TFLite metadata)")
    subgraphs = reader.root().tables(3)
    inputs = subgraphs[0].tables(2) if subgraphs else []
    if not inputs:
        return InputMetadata()
    tensor = inputs[0]
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    for unit in tensor.tables(4):
        options = unit.table(1)
        if unit.scalar(0, reader.u8, 0) == _NORMALIZATION_OPTIONS and options is not None:
            mean, std = options.floats(0) or None, options.floats(1) or None
    color = None
    content = tensor.table(3)
    if content is not None and content.scalar(0, reader.u8, 0) == _IMAGE_PROPERTIES:
        image = content.table(1)
        if image is not None:
            color = _COLOR_SPACES.get(image.scalar(0, reader.i8, 0))
    return InputMetadata(
        mean=tuple(mean) if mean else None,
        std=tuple(std) if std else None,
        color=color,
    )


__all__ = [
    "CUSTOM",
    "DENSIFY",
    "METADATA_NAME",
    "InputMetadata",
    "OperatorCode",
    "Subgraph",
    "Tensor",
    "TfliteModel",
    "is_tflite",
    "read_input_metadata",
    "read_tflite",
]
