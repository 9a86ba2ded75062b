"""The wire format of result messages, shared by the device and the subscriber.

Every payload is a 4-byte header (magic ``ED 52``, version ``1``, flags) and a body: compact
msgpack (float arrays as little-endian float16 blobs, masks as run-length blobs) or, for
debugging, UTF-8 JSON; either may be zstd-compressed. ``docs/protocol.md`` is the
language-neutral specification, with test vectors. :func:`decode_payload` returns exactly the
JSON line that ``edge-runtime run`` prints (``FrameResult.to_dict(device, seq)`` plus
``"epoch"``), float arrays approximated to float16 precision unless the head was sent float32.

Example::

    import json
    from edge_runtime.codec.wire import decode_payload, encode_frame

    payload = encode_frame(result, device="pi-01", epoch="9f2c4e1ab07d3356", seq=42,
                           compression="zstd", float32_heads={"embedding"})
    print(json.dumps(decode_payload(payload)))

CLI (decode one payload for debugging)::

    python -m edge_runtime.codec.wire payload.bin          # or: --hex ED5201...
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import struct
import sys
import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from edge_runtime.bounded_json import loads_bounded
from edge_runtime.errors import EdgeRuntimeError, close_matches
from edge_runtime.inference.results import (
    DECIMALS,
    PIXEL_DECIMALS,
    Classification,
    Detections,
    Embedding,
    FrameResult,
    HeadResult,
    Landmarks,
    RawOutput,
    Regression,
    Segmentation,
    rounded,
)

logger = logging.getLogger(__name__)

#: First two bytes of every payload: non-ASCII, invalid as UTF-8, so never JSON by accident.
MAGIC = b"\xedR"
#: The envelope version written in byte 2; a decoder rejects any other.
VERSION = 1
HEADER_SIZE = 4
#: Flag bits (byte 3). Bits 3-7 are reserved and must be 0.
FLAG_JSON = 0x01
FLAG_ZSTD = 0x02
FLAG_HEARTBEAT = 0x04
KNOWN_FLAGS = FLAG_JSON | FLAG_ZSTD | FLAG_HEARTBEAT
#: Largest body accepted, after decompression (stops zip bombs).
MAX_BODY_BYTES = 16 * 1024 * 1024
#: zstd level written by :func:`encode_frame` (any level decodes).
ZSTD_LEVEL = 3

MODES = ("msgpack", "json")
COMPRESSIONS = ("none", "zstd")
CONTENT_TYPE = "application/vnd.edge-runtime.v1+msgpack"
CONTENT_TYPE_JSON = "application/vnd.edge-runtime.v1+json"
ZSTD_HINT = "pip install 'edge-runtime[zstd]'"

#: msgpack extension types holding typed arrays: code → little-endian dtype.
EXT_DTYPES: dict[int, np.dtype] = {
    code: np.dtype(spec)
    for code, spec in {
        1: "<f2", 2: "<f4", 3: "u1", 4: "<u2", 5: "<u4", 6: "<u8",
        7: "i1", 8: "<i2", 9: "<i4", 10: "<i8", 11: "?",
    }.items()
}  # fmt: skip
_EXT_CODES = {(dt.kind, dt.itemsize): code for code, dt in EXT_DTYPES.items()}
_EXT_F16, _EXT_F32 = 1, 2

# Head result types on the wire (field "y" of a head body).
_TYPE_CODES: dict[type, str] = {
    Classification: "c", Detections: "d", Segmentation: "s", Landmarks: "l",
    Regression: "r", Embedding: "e", RawOutput: "x",
}  # fmt: skip


class CodecError(EdgeRuntimeError):
    """A payload cannot be decoded (or a result cannot be encoded)."""


@dataclass(frozen=True)
class Header:
    """The 4-byte envelope header of a payload."""

    version: int
    mode: str  # "msgpack" | "json"
    compression: str  # "none" | "zstd"
    kind: str  # "frame" | "heartbeat"


def content_type(mode: str = "msgpack") -> str:
    """The MQTT v5 content type of payloads encoded in ``mode``."""
    return {"msgpack": CONTENT_TYPE, "json": CONTENT_TYPE_JSON}[_check_mode(mode)]


# -- header ------------------------------------------------------------------------------------


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise CodecError(f"unknown codec mode {mode!r}{close_matches(str(mode), MODES)}; choose one of {MODES}")
    return mode


def _check_compression(compression: str | None) -> str:
    name = "none" if compression is None else compression
    if name not in COMPRESSIONS:
        raise CodecError(
            f"unknown compression {compression!r}{close_matches(str(name), COMPRESSIONS)}; "
            f"choose one of {COMPRESSIONS} (or None)"
        )
    return name


def read_header(payload: bytes) -> Header:
    """Parse and check the header; :class:`CodecError` on a payload that is not ours."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise CodecError(f"a payload must be bytes, got {type(payload).__name__}")
    head = bytes(payload[:HEADER_SIZE])
    if len(head) < 2 or head[:2] != MAGIC:
        shown = head[:2].hex() or "nothing"
        raise CodecError(f"not an edge-runtime payload: bad magic {shown} (expected {MAGIC.hex()})")
    if len(head) < HEADER_SIZE:
        raise CodecError(f"truncated payload: {len(head)} bytes, the header alone is {HEADER_SIZE}")
    if head[2] != VERSION:
        raise CodecError(f"unsupported codec version {head[2]} (this decoder reads version {VERSION}); upgrade it")
    flags = head[3]
    if flags & ~KNOWN_FLAGS:
        raise CodecError(
            f"unknown flag bits 0x{flags & ~KNOWN_FLAGS:02x} in 0x{flags:02x} (known: 0x{KNOWN_FLAGS:02x})"
        )
    return Header(
        version=head[2],
        mode="json" if flags & FLAG_JSON else "msgpack",
        compression="zstd" if flags & FLAG_ZSTD else "none",
        kind="heartbeat" if flags & FLAG_HEARTBEAT else "frame",
    )


def _wrap(body: bytes, mode: str, compression: str, kind: str) -> bytes:
    flags = (FLAG_JSON if mode == "json" else 0) | (FLAG_HEARTBEAT if kind == "heartbeat" else 0)
    if len(body) > MAX_BODY_BYTES:
        raise CodecError(f"encoded body is {len(body)} bytes, over the {MAX_BODY_BYTES}-byte limit")
    if compression == "zstd":
        flags |= FLAG_ZSTD
        body = _compressor().compress(body)
    return bytes((MAGIC[0], MAGIC[1], VERSION, flags)) + body


# -- zstd (optional) ---------------------------------------------------------------------------

_local = threading.local()


def _zstandard() -> Any:
    try:
        import zstandard
    except ImportError:
        raise CodecError(f"zstd compression needs the zstandard package: {ZSTD_HINT}") from None
    return zstandard


def _compressor() -> Any:
    zstd = _zstandard()
    comp = getattr(_local, "compressor", None)
    if comp is None:
        comp = _local.compressor = zstd.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True)
    return comp


def _decompress(body: bytes) -> bytes:
    zstd = _zstandard()
    dec = getattr(_local, "decompressor", None)
    if dec is None:
        dec = _local.decompressor = zstd.ZstdDecompressor()
    try:
        size = zstd.frame_content_size(body)
        if size > MAX_BODY_BYTES:
            raise CodecError(f"compressed body declares {size} bytes, over the {MAX_BODY_BYTES}-byte limit")
        if size < 0:  # size not in the frame header: cap the output buffer
            out = dec.decompress(body, max_output_size=MAX_BODY_BYTES, allow_extra_data=False)
        else:
            out = dec.decompress(body, allow_extra_data=False)
    except zstd.ZstdError as exc:
        raise CodecError(f"malformed zstd body (or over the {MAX_BODY_BYTES}-byte limit): {exc}") from None
    if len(out) > MAX_BODY_BYTES:  # pragma: no cover - the checks above prevent it
        raise CodecError(f"decompressed body over the {MAX_BODY_BYTES}-byte limit")
    return bytes(out)


# -- typed arrays ------------------------------------------------------------------------------


def _ext(code: int, data: bytes) -> msgpack.ExtType:
    """``msgpack.ExtType(code, data)`` without its Python-level argument checks (ours are valid)."""
    return tuple.__new__(msgpack.ExtType, (code, data))


def _floats(values: np.ndarray, f32: bool) -> msgpack.ExtType:
    """A float array (any shape, row-major) as a float16 blob, or float32 when asked or needed.

    An array with a finite value that float16 would turn into an infinity (``|x| >= 65520``)
    is written float32 whatever ``f32`` says.
    """
    arr = np.asarray(values)
    if not f32:
        if arr.size <= 64:  # struct is quicker on a few values, and raises on overflow
            flat = arr.ravel().tolist()
            try:
                return _ext(_EXT_F16, struct.pack(f"<{len(flat)}e", *flat))
            except OverflowError:
                pass
        else:
            with np.errstate(over="ignore"):
                half = arr.astype("<f2")
            if np.isfinite(half).all() or not (np.isinf(half) & np.isfinite(arr)).any():
                return _ext(_EXT_F16, half.tobytes())
    return _ext(_EXT_F32, arr.astype("<f4").tobytes())


def _uints(values: np.ndarray, *, checked: bool = False) -> msgpack.ExtType:
    """Non-negative integers in the narrowest of uint8 / uint16 / uint32 (``checked``: known >= 0)."""
    arr = np.asarray(values)
    if arr.size == 0:
        return _ext(3, b"")
    if not checked and int(arr.min()) < 0:
        raise CodecError(f"run-length values and counts must be >= 0, got {int(arr.min())}")
    top = 0xFF if arr.dtype == np.uint8 else int(arr.max())
    if top > 0xFFFFFFFF:
        raise CodecError(f"run-length value or count {top} does not fit in 32 bits")
    code = 3 if top <= 0xFF else 4 if top <= 0xFFFF else 5
    return _ext(code, arr.astype(EXT_DTYPES[code]).tobytes())


_UINT_FORMATS = {3: "B", 4: "H", 5: "I"}


def _ext_len(ext: msgpack.ExtType) -> int:
    """The element count of a typed-array extension."""
    return len(ext.data) // EXT_DTYPES[ext.code].itemsize


def _uints_from_list(values: Any, what: str) -> msgpack.ExtType:
    """:func:`_uints` of a JSON list of integers, without numpy (3-4x quicker on RLE lists)."""
    if type(values) is not list or not values:
        return _uints(_int_array(values, what))
    try:
        low, top = min(values), max(values)
        if low < 0 or top > 0xFFFFFFFF:
            raise OverflowError
        code = 3 if top <= 0xFF else 4 if top <= 0xFFFF else 5
        # struct refuses floats and strings (struct.error / TypeError): numpy then names the problem
        return _ext(code, struct.pack(f"<{len(values)}{_UINT_FORMATS[code]}", *values))
    except (TypeError, OverflowError, struct.error):
        return _uints(_int_array(values, what))


def _ext_hook(code: int, data: bytes) -> np.ndarray:
    """A typed array from a msgpack extension (read-only, a view of the payload)."""
    try:
        dtype = EXT_DTYPES[code]
    except KeyError:
        raise ValueError(f"unknown msgpack extension type {code} (typed arrays are 1-{max(EXT_DTYPES)})") from None
    arr = np.frombuffer(data, dtype=dtype)  # ValueError unless len(data) is a multiple of the item size
    if code == 11 and arr.size and int(arr.view(np.uint8).max()) > 1:
        raise ValueError("a bool array holds bytes other than 0 and 1")
    return arr


def _rle(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(values, counts)`` of a row-major run-length encoding (same runs as ``results.encode_rle``)."""
    flat = mask.ravel()
    if flat.size == 0:
        return flat[:0], np.zeros(0, dtype=np.int64)
    change = np.flatnonzero(flat[1:] != flat[:-1])
    last = np.empty(change.size + 1, dtype=np.int64)  # index of the last pixel of each run
    last[:-1] = change
    last[-1] = flat.size - 1
    counts = last.copy()
    counts[0] += 1
    counts[1:] -= last[:-1]
    return flat[last], counts


# -- encoding ----------------------------------------------------------------------------------


def _label_table(labels: Sequence[str]) -> tuple[list[str], list[int]]:
    table: dict[str, int] = {}
    index = [table.setdefault(label, len(table)) for label in labels]
    return list(table), index


def _strs(values: Any, what: str) -> list[str]:
    out = list(values)
    if not all(isinstance(v, str) for v in out):
        raise CodecError(f"{what} must be strings, got {out!r:.120}")
    return out


def _same_len(what: str, *lengths: int) -> None:
    if len(set(lengths)) > 1:
        raise CodecError(f"{what}: arrays of different lengths {list(lengths)}")


def _enc_classification(labels: Sequence[str], class_ids: np.ndarray, scores: np.ndarray, f32: bool) -> dict:
    _same_len("classification labels / class_ids / scores", len(labels), len(class_ids), len(scores))
    return {"y": "c", "n": _strs(labels, "labels"), "i": class_ids.tolist(), "p": _floats(scores, f32)}


def _enc_detections(
    xyxy: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, labels: Sequence[str], f32: bool
) -> dict:
    if xyxy.ndim != 2 or xyxy.shape[1] != 4:
        raise CodecError(f"detection boxes must have shape (n, 4), got {xyxy.shape}")
    _same_len("detections xyxy / scores / class_ids / labels", len(xyxy), len(scores), len(class_ids), len(labels))
    table, index = _label_table(_strs(labels, "labels"))
    return {
        "y": "d",
        "b": _floats(xyxy, f32),
        "p": _floats(scores, f32),
        "i": class_ids.tolist(),
        "n": table,
        "j": index,
    }


def _enc_segmentation(
    classes: Sequence[str],
    areas: Mapping[str, float],
    frame_size: Sequence[int],
    region: Any,
    shape: Sequence[int],
    values: np.ndarray | msgpack.ExtType,
    counts: np.ndarray | msgpack.ExtType,
    f32: bool,
    checked: bool = False,
) -> dict:
    names = _strs(classes, "classes")
    position = {c: i for i, c in enumerate(names)}
    try:
        area_index = [position[c] for c in areas]
    except KeyError as exc:
        raise CodecError(f"class_areas names unknown class {exc.args[0]!r} (classes {names})") from None
    out: dict[str, Any] = {
        "y": "s",
        "n": names,
        "a": _floats(np.fromiter(areas.values(), dtype=np.float64, count=len(areas)), f32),
        "ai": area_index,
        "z": [int(frame_size[0]), int(frame_size[1])],
    }
    if region is not None:
        out["g"] = _floats(np.asarray(region, dtype=np.float64).reshape(4), f32)
    out["h"] = [int(shape[0]), int(shape[1])]
    out["v"] = values if isinstance(values, msgpack.ExtType) else _uints(values, checked=checked)
    out["k"] = counts if isinstance(counts, msgpack.ExtType) else _uints(counts, checked=checked)
    _same_len("rle values / counts", _ext_len(out["v"]), _ext_len(out["k"]))
    return out


def _enc_landmarks(names: Sequence[str], points: np.ndarray, scores: np.ndarray | None, f32: bool) -> dict:
    if points.ndim != 2 or points.shape[1] != 2:
        raise CodecError(f"landmark points must have shape (k, 2), got {points.shape}")
    _same_len("landmark names / points", len(names), len(points), *(() if scores is None else (len(scores),)))
    out = {"y": "l", "n": _strs(names, "names"), "q": _floats(points, f32)}
    if scores is not None:
        out["p"] = _floats(scores, f32)
    return out


def _enc_regression(names: Sequence[str], values: np.ndarray, box: np.ndarray | None, f32: bool) -> dict:
    _same_len("regression names / values", len(names), len(values))
    out = {"y": "r", "n": _strs(names, "names"), "v": _floats(values, f32)}
    if box is not None:
        if box.shape != (4,):
            raise CodecError(f"a regression box must have 4 values, got shape {box.shape}")
        out["b"] = _floats(box, f32)
    return out


def _enc_raw_tensor(tensor: np.ndarray, f32: bool) -> dict:
    out: dict[str, Any] = {"h": list(tensor.shape), "t": str(tensor.dtype)}
    if np.issubdtype(tensor.dtype, np.floating):
        out["v"] = _floats(tensor, f32)
    elif tensor.dtype.kind in "biu":
        code = _EXT_CODES[(tensor.dtype.kind, tensor.dtype.itemsize)]
        out["v"] = _ext(code, tensor.astype(EXT_DTYPES[code]).tobytes())
    else:
        out["v"] = str(tensor.tolist())
    return out


def _encode_result(result: HeadResult, f32: bool) -> dict:
    """The wire form of one typed head result."""
    if isinstance(result, Classification):
        return _enc_classification(result.labels, result.class_ids, result.scores, f32)
    if isinstance(result, Detections):
        return _enc_detections(result.xyxy, result.scores, result.class_ids, result.labels, f32)
    if isinstance(result, Segmentation):
        values, counts = _rle(result.mask)
        w_h = (result.frame_width, result.frame_height)
        return _enc_segmentation(
            result.classes, result.class_areas, w_h, result.region, result.mask.shape, values, counts, f32, True
        )
    if isinstance(result, Landmarks):
        return _enc_landmarks(result.names, result.points, result.scores, f32)
    if isinstance(result, Regression):
        return _enc_regression(result.names, result.values, result.box, f32)
    if isinstance(result, Embedding):
        return {"y": "e", "v": _floats(result.vector, f32)}
    if isinstance(result, RawOutput):
        return {"y": "x", "o": {name: _enc_raw_tensor(t, f32) for name, t in result.tensors.items()}}
    raise CodecError(f"cannot encode a {type(result).__name__} (known: {', '.join(t.__name__ for t in _TYPE_CODES)})")


def _f32_array(values: Any, what: str) -> np.ndarray:
    """A JSON float list as float32, like the result dataclasses hold it (``None`` becomes NaN)."""
    try:
        return np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise CodecError(f"{what}: not a float array ({exc})") from None


def _int_array(values: Any, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise CodecError(f"{what}: not a list of integers: {values!r:.120}")
    return arr.astype(np.int64)


def _encode_head_dict(name: str, head: Mapping[str, Any], f32: bool) -> dict:
    """The wire form of one head from its JSON form (``HeadResult.to_dict()``)."""
    keys = set(head)
    if all(isinstance(v, Mapping) and {"shape", "dtype", "data"} <= set(v) for v in head.values()):
        tensors = {}
        for out_name, t in head.items():
            dtype = str(t["dtype"])
            shape = [int(d) for d in t["shape"]]
            if isinstance(t["data"], str):
                tensors[out_name] = {"h": shape, "t": dtype, "v": t["data"]}
                continue
            try:
                arr = np.asarray(t["data"], dtype=np.float64 if "float" in dtype else dtype).reshape(shape)
            except (TypeError, ValueError) as exc:
                raise CodecError(f"head {name!r}, output {out_name!r}: {exc}") from None
            tensors[out_name] = _enc_raw_tensor(arr, f32)
            tensors[out_name]["t"] = dtype
        return {"y": "x", "o": tensors}
    if keys == {"labels", "class_ids", "scores"}:
        return _enc_classification(
            head["labels"], _int_array(head["class_ids"], "class_ids"), _f32_array(head["scores"], "scores"), f32
        )
    if keys == {"xyxy", "scores", "class_ids", "labels"}:
        xyxy = _f32_array(head["xyxy"], "xyxy")
        return _enc_detections(
            xyxy.reshape(0, 4) if xyxy.size == 0 else xyxy,
            _f32_array(head["scores"], "scores"),
            _int_array(head["class_ids"], "class_ids"),
            head["labels"],
            f32,
        )
    if "rle" in keys:
        rle = head["rle"]
        return _enc_segmentation(
            head["classes"],
            {str(k): (math.nan if v is None else float(v)) for k, v in head.get("class_areas", {}).items()},
            head["frame_size"],
            None if head.get("region") is None else _f32_array(head["region"], "region"),
            rle["shape"],
            _uints_from_list(rle["values"], "rle values"),
            _uints_from_list(rle["counts"], "rle counts"),
            f32,
        )
    if keys in ({"names", "points"}, {"names", "points", "scores"}):
        points = _f32_array(head["points"], "points")
        return _enc_landmarks(
            head["names"],
            points.reshape(0, 2) if points.size == 0 else points,
            None if "scores" not in head else _f32_array(head["scores"], "scores"),
            f32,
        )
    if keys in ({"names", "values"}, {"names", "values", "box"}):
        box = None if "box" not in head else _f32_array(head["box"], "box")
        return _enc_regression(head["names"], _f32_array(head["values"], "values"), box, f32)
    if keys == {"vector"}:
        return {"y": "e", "v": _floats(_f32_array(head["vector"], "vector"), f32)}
    raise CodecError(f"head {name!r}: keys {sorted(keys)} match no result type")


def _check_ids(device: Any, epoch: Any, seq: Any) -> None:
    if not isinstance(device, str) or not isinstance(epoch, str):
        raise CodecError(f"device and epoch must be strings, got {device!r} and {epoch!r}")
    if isinstance(seq, bool) or not isinstance(seq, (int, np.integer)) or not 0 <= seq < 2**64:
        raise CodecError(f"seq must be an integer in 0..2**64-1, got {seq!r}")


def _frame_body(
    device: str, epoch: str, seq: int, frame_id: int, ts: float, heads: dict, latency: Mapping[str, float]
) -> dict:
    return {
        "d": device,
        "e": epoch,
        "s": int(seq),
        "f": int(frame_id),
        "t": round(float(ts), 6),
        "r": heads,
        "ln": list(latency),
        "lv": _ext(_EXT_F32, np.fromiter(latency.values(), np.float32, len(latency)).tobytes()),
    }


def _pack(body: Any) -> bytes:
    try:
        return msgpack.packb(body, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"cannot encode the body: {exc}") from None


def _json_bytes(form: Mapping[str, Any]) -> bytes:
    try:
        return json.dumps(form, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise CodecError(f"cannot encode as JSON: {exc}") from None


def encode_frame(
    result: FrameResult,
    *,
    device: str,
    epoch: str,
    seq: int,
    mode: str = "msgpack",
    compression: str | None = None,
    float32_heads: Collection[str] = (),
) -> bytes:
    """One frame's results as a payload.

    ``mode``: ``"msgpack"`` (compact) or ``"json"`` (the JSON line behind the header, for
    debugging); ``compression``: ``None`` or ``"zstd"``; heads named in ``float32_heads`` keep
    float32 precision (others float16). Raises :class:`CodecError` on a bad option or value.
    """
    mode = _check_mode(mode)
    comp = _check_compression(compression)
    _check_ids(device, epoch, seq)
    if mode == "json":
        form = result.to_dict(device=device, seq=seq)
        form["epoch"] = epoch
        return _wrap(_json_bytes(form), mode, comp, "frame")
    heads = {name: _encode_result(r, name in float32_heads) for name, r in result.results.items()}
    body = _frame_body(device, epoch, seq, result.frame_id, result.timestamp, heads, result.latency_ms)
    return _wrap(_pack(body), mode, comp, "frame")


def encode_heartbeat(
    device: str,
    epoch: str,
    seq: int,
    ts: float,
    heads: Mapping[str, Any],
    *,
    mode: str = "msgpack",
    compression: str | None = None,
) -> bytes:
    """A report-by-exception heartbeat: the device is alive, ``heads`` says what it is holding back.

    ``heads`` maps head names to JSON-compatible values (the publisher defines their content).
    A heartbeat takes a ``seq`` like any published message.
    """
    mode = _check_mode(mode)
    comp = _check_compression(compression)
    _check_ids(device, epoch, seq)
    if not isinstance(ts, (int, float)) or isinstance(ts, bool) or not math.isfinite(ts):
        raise CodecError(f"heartbeat ts must be a finite number, got {ts!r}")
    heads = dict(heads)
    _check_jsonable(heads, "heartbeat heads")
    if mode == "json":
        form = {"kind": "heartbeat", "device": device, "epoch": epoch, "seq": int(seq), "ts": round(float(ts), 6)}
        form["heads"] = heads
        return _wrap(_json_bytes(form), mode, comp, "heartbeat")
    body = {"d": device, "e": epoch, "s": int(seq), "t": round(float(ts), 6), "h": heads}
    return _wrap(_pack(body), mode, comp, "heartbeat")


def encode_line(
    line: Mapping[str, Any],
    *,
    mode: str = "msgpack",
    compression: str | None = None,
    float32_heads: Collection[str] = (),
) -> bytes:
    """Encode an already-built JSON line: a frame (``to_dict`` + ``epoch``) or a decoded heartbeat.

    ``encode_line(decode_payload(p))`` re-encodes a decoded payload (byte-identical when the
    values are exact in float16, as in the test vectors of ``docs/protocol.md``).
    """
    mode = _check_mode(mode)
    comp = _check_compression(compression)
    if not isinstance(line, Mapping):
        raise CodecError(f"a line must be a mapping, got {type(line).__name__}")
    try:
        if line.get("kind") == "heartbeat":
            return encode_heartbeat(
                line["device"],
                line["epoch"],
                line["seq"],
                line["ts"],
                line["heads"],
                mode=mode,
                compression=compression,
            )
        _check_ids(line["device"], line["epoch"], line["seq"])
        ts = line["ts"]
        if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
            raise CodecError(f"ts must be a finite number, got {ts!r}")
        frame_id = line["frame_id"]
        if isinstance(frame_id, bool) or not isinstance(frame_id, int) or frame_id < 0:
            raise CodecError(f"frame_id must be an integer >= 0, got {frame_id!r}")
        results, latency = line["results"], line["latency_ms"]
        if mode == "json":
            return _wrap(_json_bytes(line), mode, comp, "frame")
        heads = {str(n): _encode_head_dict(n, h, n in float32_heads) for n, h in results.items()}
        body = _frame_body(line["device"], line["epoch"], line["seq"], frame_id, ts, heads, latency)
        return _wrap(_pack(body), mode, comp, "frame")
    except KeyError as exc:
        raise CodecError(f"the line has no {exc.args[0]!r} field") from None
    except (TypeError, ValueError, AttributeError, IndexError) as exc:
        raise CodecError(f"cannot encode the line: {exc}") from None


# -- decoding ----------------------------------------------------------------------------------


_STR, _INT = {str}, {int}


def _get(body: Mapping[str, Any], key: str, kinds: tuple[type, ...], what: str) -> Any:
    """``body[key]`` if its type is exactly one of ``kinds`` (so ``bool`` is no ``int``)."""
    try:
        value = body[key]
    except KeyError:
        raise CodecError(f"malformed body: {what} has no field {key!r}") from None
    if type(value) not in kinds:
        raise CodecError(f"malformed body: {what} field {key!r} is a {type(value).__name__}")
    return value


def _dec_strs(body: Mapping[str, Any], key: str, what: str) -> list[str]:
    values = _get(body, key, (list,), what)
    if not set(map(type, values)) <= _STR:
        raise CodecError(f"malformed body: {what} field {key!r} must hold strings")
    return values


def _dec_ints(body: Mapping[str, Any], key: str, what: str) -> list[int]:
    values = _get(body, key, (list, np.ndarray), what)
    if type(values) is np.ndarray:
        if values.dtype.kind not in "iu":
            raise CodecError(f"malformed body: {what} field {key!r} must be integers")
        return values.tolist()
    if not set(map(type, values)) <= _INT:
        raise CodecError(f"malformed body: {what} field {key!r} must hold integers")
    return values


def _dec_floats(body: Mapping[str, Any], key: str, what: str, size: int | None = None) -> np.ndarray:
    arr = _get(body, key, (np.ndarray,), what)
    if arr.dtype.kind != "f":
        raise CodecError(f"malformed body: {what} field {key!r} must be a float16/float32 array")
    if size is not None and arr.size != size:
        raise CodecError(f"malformed body: {what} field {key!r} has {arr.size} values, expected {size}")
    return arr


def _dec_uints(body: Mapping[str, Any], key: str, what: str) -> np.ndarray:
    arr = _get(body, key, (np.ndarray,), what)
    if arr.dtype.kind != "u":
        raise CodecError(f"malformed body: {what} field {key!r} must be an unsigned integer array")
    return arr


def _round_list(arr: np.ndarray, decimals: int = DECIMALS) -> Any:
    """``results.rounded(arr, decimals)`` (same numbers, NaN/inf as ``None``), quicker on small arrays."""
    with np.errstate(invalid="ignore", over="ignore"):  # inf/NaN are mapped to None below
        a = arr.astype(np.float64).round(decimals)
    flat = a.tolist() if a.ndim == 1 else a.ravel().tolist()
    if not math.isfinite(sum(flat)):  # float16/float32 values cannot overflow a float64 sum
        return rounded(arr, decimals)
    return flat if a.ndim == 1 else a.tolist()


def _dec_classification(b: Mapping[str, Any]) -> dict[str, Any]:
    labels = _dec_strs(b, "n", "classification")
    ids = _dec_ints(b, "i", "classification")
    scores = _dec_floats(b, "p", "classification", len(labels))
    _same_len("classification labels / class_ids", len(labels), len(ids))
    return {"labels": labels, "class_ids": ids, "scores": _round_list(scores)}


def _dec_detections(b: Mapping[str, Any]) -> dict[str, Any]:
    scores = _dec_floats(b, "p", "detections")
    n = scores.size
    xyxy = _dec_floats(b, "b", "detections", 4 * n)
    ids = _dec_ints(b, "i", "detections")
    table = _dec_strs(b, "n", "detections")
    index = _dec_ints(b, "j", "detections")
    _same_len("detections scores / class_ids / label indices", n, len(ids), len(index))
    if index and (min(index) < 0 or max(index) >= len(table)):
        raise CodecError("malformed body: detections label index outside its label table")
    return {
        "xyxy": _round_list(xyxy.reshape(n, 4), PIXEL_DECIMALS),
        "scores": _round_list(scores),
        "class_ids": ids,
        "labels": [table[i] for i in index],
    }


def _dec_segmentation(b: Mapping[str, Any]) -> dict[str, Any]:
    classes = _dec_strs(b, "n", "segmentation")
    area_index = _dec_ints(b, "ai", "segmentation")
    areas = _dec_floats(b, "a", "segmentation", len(area_index))
    if area_index and (min(area_index) < 0 or max(area_index) >= len(classes)):
        raise CodecError("malformed body: segmentation area index outside its classes")
    frame_size = _dec_ints(b, "z", "segmentation")
    shape = _dec_ints(b, "h", "segmentation")
    if len(frame_size) != 2 or len(shape) != 2 or min(shape) < 0:
        raise CodecError("malformed body: segmentation frame size and mask shape must be 2 integers >= 0")
    values = _dec_uints(b, "v", "segmentation").tolist()
    counts = _dec_uints(b, "k", "segmentation").tolist()
    _same_len("segmentation rle values / counts", len(values), len(counts))
    if sum(counts) != shape[0] * shape[1]:
        raise CodecError(f"malformed body: run lengths add up to {sum(counts)}, but the mask shape is {shape}")
    out: dict[str, Any] = {
        "classes": classes,
        "class_areas": {
            classes[i]: (round(a, DECIMALS) if math.isfinite(a) else None)
            for i, a in zip(area_index, areas.tolist(), strict=True)
        },
        "frame_size": frame_size,
    }
    if "g" in b:
        out["region"] = _round_list(_dec_floats(b, "g", "segmentation", 4), PIXEL_DECIMALS)
    out["rle"] = {"shape": shape, "values": values, "counts": counts}
    return out


def _dec_landmarks(b: Mapping[str, Any]) -> dict[str, Any]:
    names = _dec_strs(b, "n", "landmarks")
    points = _dec_floats(b, "q", "landmarks", 2 * len(names))
    out: dict[str, Any] = {"names": names, "points": _round_list(points.reshape(len(names), 2), PIXEL_DECIMALS)}
    if "p" in b:
        out["scores"] = _round_list(_dec_floats(b, "p", "landmarks", len(names)))
    return out


def _dec_regression(b: Mapping[str, Any]) -> dict[str, Any]:
    names = _dec_strs(b, "n", "regression")
    out: dict[str, Any] = {"names": names, "values": _round_list(_dec_floats(b, "v", "regression", len(names)))}
    if "b" in b:
        out["box"] = _round_list(_dec_floats(b, "b", "regression", 4), PIXEL_DECIMALS)
    return out


def _dec_embedding(b: Mapping[str, Any]) -> dict[str, Any]:
    return {"vector": _round_list(_dec_floats(b, "v", "embedding"))}


def _dec_raw(b: Mapping[str, Any]) -> dict[str, Any]:
    outputs = _get(b, "o", (dict,), "raw output")
    out: dict[str, Any] = {}
    for name, t in outputs.items():
        if not isinstance(t, dict):
            raise CodecError(f"malformed body: raw output {name!r} is not a map")
        shape = _dec_ints(t, "h", "raw output")
        dtype = _get(t, "t", (str,), "raw output")
        data = _get(t, "v", (np.ndarray, str), "raw output")
        if isinstance(data, np.ndarray):
            if min(shape, default=0) < 0 or data.size != math.prod(shape):
                raise CodecError(f"malformed body: raw output {name!r} has {data.size} values for shape {shape}")
            data = _round_list(data.reshape(shape)) if data.dtype.kind == "f" else data.reshape(shape).tolist()
        out[name] = {"shape": shape, "dtype": dtype, "data": data}
    return out


_HEAD_DECODERS = {
    "c": _dec_classification, "d": _dec_detections, "s": _dec_segmentation, "l": _dec_landmarks,
    "r": _dec_regression, "e": _dec_embedding, "x": _dec_raw,
}  # fmt: skip


def _decode_head(name: str, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise CodecError(f"malformed body: head {name!r} is not a map")
    kind = body.get("y")
    decoder = _HEAD_DECODERS.get(kind) if isinstance(kind, str) else None
    if decoder is None:
        raise CodecError(
            f"head {name!r} has result type {kind!r}, which this decoder does not know "
            f"(known: {', '.join(_HEAD_DECODERS)}); upgrade the subscriber"
        )
    return decoder(body)


def _dec_ts(value: float) -> float:
    if not math.isfinite(value):
        raise CodecError(f"malformed body: ts must be finite, got {value}")
    return round(value, 6)


def _dec_uint(body: Mapping[str, Any], key: str, what: str) -> int:
    value = _get(body, key, (int,), what)
    if value < 0:
        raise CodecError(f"malformed body: {what} field {key!r} must be >= 0, got {value}")
    return int(value)


def _decode_frame(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise CodecError(f"malformed body: a frame body must be a map, got {type(obj).__name__}")
    what = "frame"
    device = _get(obj, "d", (str,), what)
    epoch = _get(obj, "e", (str,), what)
    seq = _dec_uint(obj, "s", what)
    frame_id = _dec_uint(obj, "f", what)
    ts = _dec_ts(float(_get(obj, "t", (float, int), what)))
    heads = _get(obj, "r", (dict,), what)
    stages = _dec_strs(obj, "ln", what)
    latency = _dec_floats(obj, "lv", what, len(stages)).tolist()
    return {
        "device": device,
        "seq": seq,
        "frame_id": frame_id,
        "ts": ts,
        "results": {name: _decode_head(name, head) for name, head in heads.items()},
        "latency_ms": {s: (round(v, 3) if math.isfinite(v) else None) for s, v in zip(stages, latency, strict=True)},
        "epoch": epoch,
    }


def _check_jsonable(value: Any, what: str, depth: int = 0) -> None:
    if depth > 32:
        raise CodecError(f"{what}: nested deeper than 32 levels")
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CodecError(f"{what}: {value} is not valid JSON")
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_jsonable(item, what, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CodecError(f"{what}: keys must be strings, got {key!r}")
            _check_jsonable(item, what, depth + 1)
        return
    raise CodecError(f"{what}: a {type(value).__name__} is not JSON-compatible")


def _decode_heartbeat(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise CodecError(f"malformed body: a heartbeat body must be a map, got {type(obj).__name__}")
    what = "heartbeat"
    out = {
        "kind": "heartbeat",
        "device": _get(obj, "d", (str,), what),
        "epoch": _get(obj, "e", (str,), what),
        "seq": _dec_uint(obj, "s", what),
        "ts": _dec_ts(float(_get(obj, "t", (float, int), what))),
        "heads": _get(obj, "h", (dict,), what),
    }
    _check_jsonable(out["heads"], "heartbeat heads")
    return out


_JSON_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "frame": {
        "device": (str,), "seq": (int,), "frame_id": (int,), "ts": (int, float), "results": (dict,),
        "latency_ms": (dict,), "epoch": (str,),
    },
    "heartbeat": {
        "kind": (str,), "device": (str,), "epoch": (str,), "seq": (int,), "ts": (int, float), "heads": (dict,),
    },
}  # fmt: skip


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _decode_json(body: bytes, kind: str) -> dict[str, Any]:
    form = loads_bounded(body, parse_constant=_reject_constant)
    if not isinstance(form, dict):
        raise CodecError(f"malformed JSON body: an object expected, got {type(form).__name__}")
    for key, kinds in _JSON_FIELDS[kind].items():
        _get(form, key, kinds, f"JSON {kind}")
    if kind == "heartbeat" and form["kind"] != "heartbeat":
        raise CodecError(f"malformed JSON body: the header says heartbeat, the body says kind {form['kind']!r}")
    return form


def decode_payload(payload: bytes) -> dict[str, Any]:
    """The JSON form of a payload: the result line of a frame, or a heartbeat (``"kind": "heartbeat"``).

    Raises :class:`CodecError` (and nothing else) on anything that is not a valid payload.
    """
    header = read_header(payload)
    body = bytes(payload[HEADER_SIZE:])
    if header.compression == "zstd":
        body = _decompress(body)
    elif len(body) > MAX_BODY_BYTES:
        raise CodecError(f"body of {len(body)} bytes is over the {MAX_BODY_BYTES}-byte limit")
    if not body:
        raise CodecError("truncated payload: the body is empty")
    try:
        if header.mode == "json":
            return _decode_json(body, header.kind)
        obj = msgpack.unpackb(body, raw=False, ext_hook=_ext_hook, strict_map_key=True)
        return _decode_heartbeat(obj) if header.kind == "heartbeat" else _decode_frame(obj)
    except CodecError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError, msgpack.UnpackException) as exc:
        # ValueError covers msgpack's ExtraData / FormatError / StackError, bad UTF-8, bad JSON.
        reason = "truncated" if "incomplete input" in str(exc) else "malformed"
        raise CodecError(f"{reason} {header.mode} body: {exc}") from None


# -- CLI ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m edge_runtime.codec.wire [FILE | --hex HEX]``: print a payload's JSON form."""
    parser = argparse.ArgumentParser(prog="python -m edge_runtime.codec.wire", description=main.__doc__)
    parser.add_argument("file", nargs="?", type=Path, help="a file holding one payload (default: stdin)")
    parser.add_argument("--hex", help="the payload as hex digits instead")
    args = parser.parse_args(argv)
    try:
        if args.hex is not None:
            payload = bytes.fromhex("".join(args.hex.split()))
        elif args.file is not None:
            payload = args.file.read_bytes()
        else:
            payload = sys.stdin.buffer.read()
        header = read_header(payload)
        form = decode_payload(payload)
    except (CodecError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"# version {header.version}, {header.mode}, compression {header.compression}, {header.kind}", file=sys.stderr
    )
    print(json.dumps(form))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
