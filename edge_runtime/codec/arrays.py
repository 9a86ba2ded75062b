"""Typed arrays in a msgpack body (protocol §4.2-4.3): float16/float32 blobs, uint arrays, RLE masks.

An array travels as a msgpack extension whose code names a little-endian dtype
(:data:`EXT_DTYPES`) and whose data is the raw elements, row-major. Float arrays are float16
unless a head asks for float32 (or float16 would overflow); run-length values and counts are
the narrowest of uint8 / uint16 / uint32. A segmentation mask travels as the runs of
:func:`edge_runtime.inference.results.rle_runs` (the project's one RLE). The decoding side
turns extensions back into
read-only numpy views (:func:`_ext_hook`, the ``ext_hook`` of ``msgpack.unpackb``) and reads
body fields with exact type checks (:func:`_get` and the ``_dec_*`` readers), raising
:class:`~edge_runtime.codec.envelope.CodecError`.

Example::

    import msgpack
    import numpy as np
    from edge_runtime.codec.arrays import EXT_DTYPES, _ext_hook, _floats

    blob = _floats(np.array([0.5, 1.25]), f32=False)  # ExtType(1, <4 bytes of float16>)
    assert EXT_DTYPES[blob.code] == np.dtype("<f2")
    msgpack.unpackb(msgpack.packb(blob), ext_hook=_ext_hook)  # array([0.5, 1.25], dtype=float16)
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from typing import Any

import msgpack
import numpy as np

from edge_runtime.codec.envelope import CodecError
from edge_runtime.inference.results import DECIMALS, rounded

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
_UINT_FORMATS = {3: "B", 4: "H", 5: "I"}

# -- writing -----------------------------------------------------------------------------------


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


def _f32_array(values: Any, what: str) -> np.ndarray:
    """A JSON float list as float32, like the result dataclasses hold it (``None`` becomes NaN)."""
    try:
        return np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise CodecError(f"{what}: not a float array ({exc})") from exc


def _int_array(values: Any, what: str) -> np.ndarray:
    """A JSON list of integers as int64 (:class:`CodecError` on anything else)."""
    arr = np.asarray(values)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise CodecError(f"{what}: not a list of integers: {values!r:.120}")
    return arr.astype(np.int64)


# -- reading -----------------------------------------------------------------------------------


def _ext_hook(code: int, data: bytes) -> np.ndarray:
    """A typed array from a msgpack extension (read-only, a view of the payload)."""
    try:
        dtype = EXT_DTYPES[code]
    except KeyError as exc:
        raise ValueError(f"unknown msgpack extension type {code} (typed arrays are 1-{max(EXT_DTYPES)})") from exc
    arr = np.frombuffer(data, dtype=dtype)  # ValueError unless len(data) is a multiple of the item size
    if code == 11 and arr.size and int(arr.view(np.uint8).max()) > 1:
        raise ValueError("a bool array holds bytes other than 0 and 1")
    return arr


_STR, _INT = {str}, {int}


def _get(body: Mapping[str, Any], key: str, kinds: tuple[type, ...], what: str) -> Any:
    """``body[key]`` if its type is exactly one of ``kinds`` (so ``bool`` is no ``int``)."""
    try:
        value = body[key]
    except KeyError as exc:
        raise CodecError(f"malformed body: {what} has no field {key!r}") from exc
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


def _strs(values: Any, what: str) -> list[str]:
    out = list(values)
    if not all(isinstance(v, str) for v in out):
        raise CodecError(f"{what} must be strings, got {out!r:.120}")
    return out


def _same_len(what: str, *lengths: int) -> None:
    if len(set(lengths)) > 1:
        raise CodecError(f"{what}: arrays of different lengths {list(lengths)}")
