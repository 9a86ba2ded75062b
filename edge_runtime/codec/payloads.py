"""Frames and heartbeats as whole payloads: encode them, decode any payload (protocol §4.4, §4.6, §5).

:func:`decode_payload` returns exactly the JSON line that ``edge-runtime run`` prints
(``FrameResult.to_dict(device, seq)`` plus ``"epoch"``), float arrays approximated to float16
precision unless the head was sent float32, or a heartbeat (``"kind": "heartbeat"``).
:func:`encode_line` is its inverse. The envelope around a body is
:mod:`edge_runtime.codec.envelope`, the heads inside a frame :mod:`edge_runtime.codec.heads`.

Example::

    import json
    from edge_runtime.codec import decode_payload, encode_frame

    payload = encode_frame(result, device="pi-01", epoch="9f2c4e1ab07d3356", seq=42,
                           compression="zstd", float32_heads={"embedding"})
    print(json.dumps(decode_payload(payload)))
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping
from typing import Any

import msgpack
import numpy as np

from edge_runtime.bounded_json import loads_bounded
from edge_runtime.codec.arrays import _EXT_F32, _dec_floats, _dec_strs, _ext, _ext_hook, _get
from edge_runtime.codec.envelope import CodecError, _check_compression, _check_mode, _unwrap, _wrap
from edge_runtime.codec.heads import _decode_head, _encode_head_dict, _encode_result
from edge_runtime.inference.results import FrameResult

# -- encoding ----------------------------------------------------------------------------------


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
        raise CodecError(f"cannot encode the body: {exc}") from exc


def _json_bytes(form: Mapping[str, Any]) -> bytes:
    try:
        return json.dumps(form, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise CodecError(f"cannot encode as JSON: {exc}") from exc


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
        raise CodecError(f"the line has no {exc.args[0]!r} field") from exc
    except (TypeError, ValueError, AttributeError, IndexError) as exc:
        raise CodecError(f"cannot encode the line: {exc}") from exc


# -- decoding ----------------------------------------------------------------------------------


def _dec_ts(value: float) -> float:
    if not math.isfinite(value):
        raise CodecError(f"malformed body: ts must be finite, got {value}")
    return round(value, 6)


def _dec_uint(body: Mapping[str, Any], key: str, what: str) -> int:
    value = _get(body, key, (int,), what)
    if not 0 <= value < 2**64:
        raise CodecError(f"malformed body: {what} field {key!r} must be in 0..2**64-1, got {value}")
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
    for key in ("seq", "frame_id") if kind == "frame" else ("seq",):
        _dec_uint(form, key, f"JSON {kind}")  # as the msgpack body's: a negative seq is malformed
    _dec_ts(float(form["ts"]))
    if kind == "heartbeat" and form["kind"] != "heartbeat":
        raise CodecError(f"malformed JSON body: the header says heartbeat, the body says kind {form['kind']!r}")
    return form


def decode_payload(payload: bytes) -> dict[str, Any]:
    """The JSON form of a payload: the result line of a frame, or a heartbeat (``"kind": "heartbeat"``).

    Raises :class:`CodecError` (and nothing else) on anything that is not a valid payload.
    """
    header, body = _unwrap(payload)
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
        raise CodecError(f"{reason} {header.mode} body: {exc}") from exc
