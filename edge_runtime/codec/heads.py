"""The wire form of one head's result, per result type (protocol §4.5).

A head body is a msgpack map whose field ``"y"`` names the result type (``"c"``
classification, ``"d"`` detections, ``"s"`` segmentation, ``"l"`` landmarks, ``"r"``
regression, ``"e"`` embedding, ``"x"`` raw output). :data:`HEAD_CODECS` holds, per result
type, its code, its encoders (from the typed result, and from the JSON form that
``HeadResult.to_dict()`` gives) and its decoder (back to that JSON form): a new result type is
one :class:`HeadCodec` entry there, plus its section of the protocol.

Example::

    import numpy as np
    from edge_runtime.codec.heads import HEAD_CODECS
    from edge_runtime.inference.results import Embedding

    codec = HEAD_CODECS[Embedding]
    body = codec.encode(Embedding([0.5, -0.25]), False)  # {"y": "e", "v": ExtType(1, ...)}
    codec.decode({"y": "e", "v": np.array([0.5, -0.25], np.float16)})  # {"vector": [0.5, -0.25]}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_runtime.codec.arrays import (
    _EXT_CODES,
    EXT_DTYPES,
    _dec_floats,
    _dec_ints,
    _dec_strs,
    _ext,
    _f32_array,
    _floats,
    _get,
    _int_array,
    _round_list,
    _same_len,
    _strs,
)
from edge_runtime.codec.envelope import CodecError
from edge_runtime.codec.masks import dec_segmentation, json_segmentation, result_segmentation
from edge_runtime.inference.results import (
    DECIMALS,
    PIXEL_DECIMALS,
    Classification,
    Detections,
    Embedding,
    HeadResult,
    Landmarks,
    RawOutput,
    Regression,
    Segmentation,
)

_Body = dict[str, Any]


@dataclass(frozen=True)
class HeadCodec:
    """How one result type travels: its code (field ``"y"``), its two encoders and its decoder."""

    #: The value of field ``"y"`` in a head body of this type.
    code: str
    #: ``encode(result, f32)``: the head body of a typed result (floats float32 when ``f32``).
    encode: Callable[[Any, bool], _Body]
    #: ``matches(head, keys)``: whether a head's JSON form (``keys``: ``set(head)``) is of this type.
    matches: Callable[[Mapping[str, Any], AbstractSet[str]], bool]
    #: ``encode_json(name, head, f32)``: the head body of the JSON form of head ``name``.
    encode_json: Callable[[str, Mapping[str, Any], bool], _Body]
    #: ``decode(body)``: the JSON form of a head body (:class:`CodecError` when malformed).
    decode: Callable[[Mapping[str, Any]], _Body]


def _label_table(labels: Sequence[str]) -> tuple[list[str], list[int]]:
    table: dict[str, int] = {}
    index = [table.setdefault(label, len(table)) for label in labels]
    return list(table), index


# -- classification ("c") ----------------------------------------------------------------------


def _enc_classification(labels: Sequence[str], class_ids: np.ndarray, scores: np.ndarray, f32: bool) -> _Body:
    _same_len("classification labels / class_ids / scores", len(labels), len(class_ids), len(scores))
    return {"y": "c", "n": _strs(labels, "labels"), "i": class_ids.tolist(), "p": _floats(scores, f32)}


def _json_classification(name: str, head: Mapping[str, Any], f32: bool) -> _Body:
    return _enc_classification(
        head["labels"], _int_array(head["class_ids"], "class_ids"), _f32_array(head["scores"], "scores"), f32
    )


def _dec_classification(b: Mapping[str, Any]) -> _Body:
    labels = _dec_strs(b, "n", "classification")
    ids = _dec_ints(b, "i", "classification")
    scores = _dec_floats(b, "p", "classification", len(labels))
    _same_len("classification labels / class_ids", len(labels), len(ids))
    return {"labels": labels, "class_ids": ids, "scores": _round_list(scores)}


# -- detections ("d") --------------------------------------------------------------------------


def _enc_detections(
    xyxy: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    labels: Sequence[str],
    f32: bool,
    keypoints: np.ndarray | None = None,
    keypoint_scores: np.ndarray | None = None,
    keypoint_names: Sequence[str] = (),
) -> _Body:
    if xyxy.ndim != 2 or xyxy.shape[1] != 4:
        raise CodecError(f"detection boxes must have shape (n, 4), got {xyxy.shape}")
    _same_len("detections xyxy / scores / class_ids / labels", len(xyxy), len(scores), len(class_ids), len(labels))
    table, index = _label_table(_strs(labels, "labels"))
    out = {
        "y": "d",
        "b": _floats(xyxy, f32),
        "p": _floats(scores, f32),
        "i": class_ids.tolist(),
        "n": table,
        "j": index,
    }
    if keypoints is not None:
        k = len(keypoint_names)
        if keypoints.shape != (len(xyxy), k, 2):
            raise CodecError(f"detection keypoints must have shape ({len(xyxy)}, {k}, 2), got {keypoints.shape}")
        out["m"] = _strs(keypoint_names, "keypoint_names")
        out["k"] = _floats(keypoints, f32)
        if keypoint_scores is not None:
            if keypoint_scores.shape != (len(xyxy), k):
                raise CodecError(f"keypoint scores must have shape ({len(xyxy)}, {k}), got {keypoint_scores.shape}")
            out["v"] = _floats(keypoint_scores, f32)
    return out


def _json_detections(name: str, head: Mapping[str, Any], f32: bool) -> _Body:
    xyxy = _f32_array(head["xyxy"], "xyxy")
    n = len(head["scores"])
    keypoints = keypoint_scores = None
    names: Sequence[str] = ()
    if "keypoints" in head:
        names = head["keypoint_names"]
        keypoints = _f32_array(head["keypoints"], "keypoints").reshape(n, len(names), 2)
        if "keypoint_scores" in head:
            keypoint_scores = _f32_array(head["keypoint_scores"], "keypoint_scores").reshape(n, len(names))
    return _enc_detections(
        xyxy.reshape(0, 4) if xyxy.size == 0 else xyxy,
        _f32_array(head["scores"], "scores"),
        _int_array(head["class_ids"], "class_ids"),
        head["labels"],
        f32,
        keypoints,
        keypoint_scores,
        names,
    )


def _dec_detections(b: Mapping[str, Any]) -> _Body:
    scores = _dec_floats(b, "p", "detections")
    n = scores.size
    xyxy = _dec_floats(b, "b", "detections", 4 * n)
    ids = _dec_ints(b, "i", "detections")
    table = _dec_strs(b, "n", "detections")
    index = _dec_ints(b, "j", "detections")
    _same_len("detections scores / class_ids / label indices", n, len(ids), len(index))
    if index and (min(index) < 0 or max(index) >= len(table)):
        raise CodecError("malformed body: detections label index outside its label table")
    out: _Body = {
        "xyxy": _round_list(xyxy.reshape(n, 4), PIXEL_DECIMALS),
        "scores": _round_list(scores),
        "class_ids": ids,
        "labels": [table[i] for i in index],
    }
    if "k" in b:
        names = _dec_strs(b, "m", "detections")
        k = len(names)
        out["keypoint_names"] = names
        out["keypoints"] = _round_list(_dec_floats(b, "k", "detections", 2 * k * n).reshape(n, k, 2), PIXEL_DECIMALS)
        if "v" in b:
            out["keypoint_scores"] = _round_list(_dec_floats(b, "v", "detections", k * n).reshape(n, k))
    return out


# -- landmarks ("l") ---------------------------------------------------------------------------


def _enc_landmarks(
    names: Sequence[str],
    points: np.ndarray,
    scores: np.ndarray | None,
    f32: bool,
    presence: float | None = None,
    z: np.ndarray | None = None,
) -> _Body:
    if points.ndim != 2 or points.shape[1] != 2:
        raise CodecError(f"landmark points must have shape (k, 2), got {points.shape}")
    lengths = [len(a) for a in (scores, z) if a is not None]
    _same_len("landmark names / points / scores / z", len(names), len(points), *lengths)
    out = {"y": "l", "n": _strs(names, "names"), "q": _floats(points, f32)}
    if scores is not None:
        out["p"] = _floats(scores, f32)
    if presence is not None:
        out["a"] = float(np.float32(presence)) if f32 else float(presence)
    if z is not None:
        out["z"] = _floats(z, f32)
    return out


def _json_landmarks(name: str, head: Mapping[str, Any], f32: bool) -> _Body:
    points = _f32_array(head["points"], "points")
    presence = head.get("presence")
    return _enc_landmarks(
        head["names"],
        points.reshape(0, 2) if points.size == 0 else points,
        None if "scores" not in head else _f32_array(head["scores"], "scores"),
        f32,
        None if presence is None else float(presence),
        None if "z" not in head else _f32_array(head["z"], "z").reshape(-1),
    )


def _dec_landmarks(b: Mapping[str, Any]) -> _Body:
    names = _dec_strs(b, "n", "landmarks")
    points = _dec_floats(b, "q", "landmarks", 2 * len(names))
    out: _Body = {"names": names, "points": _round_list(points.reshape(len(names), 2), PIXEL_DECIMALS)}
    if "p" in b:
        out["scores"] = _round_list(_dec_floats(b, "p", "landmarks", len(names)))
    if "a" in b:
        presence = b["a"]
        if not isinstance(presence, (int, float)) or isinstance(presence, bool) or not math.isfinite(presence):
            raise CodecError(f"malformed body: landmarks presence must be a number, got {presence!r:.40}")
        out["presence"] = round(float(presence), DECIMALS)
    if "z" in b:
        out["z"] = _round_list(_dec_floats(b, "z", "landmarks", len(names)), PIXEL_DECIMALS)
    return out


# -- regression ("r") --------------------------------------------------------------------------


def _enc_regression(names: Sequence[str], values: np.ndarray, box: np.ndarray | None, f32: bool) -> _Body:
    _same_len("regression names / values", len(names), len(values))
    out = {"y": "r", "n": _strs(names, "names"), "v": _floats(values, f32)}
    if box is not None:
        if box.shape != (4,):
            raise CodecError(f"a regression box must have 4 values, got shape {box.shape}")
        out["b"] = _floats(box, f32)
    return out


def _json_regression(name: str, head: Mapping[str, Any], f32: bool) -> _Body:
    box = None if "box" not in head else _f32_array(head["box"], "box")
    return _enc_regression(head["names"], _f32_array(head["values"], "values"), box, f32)


def _dec_regression(b: Mapping[str, Any]) -> _Body:
    names = _dec_strs(b, "n", "regression")
    out: _Body = {"names": names, "values": _round_list(_dec_floats(b, "v", "regression", len(names)))}
    if "b" in b:
        out["box"] = _round_list(_dec_floats(b, "b", "regression", 4), PIXEL_DECIMALS)
    return out


# -- embedding ("e") ---------------------------------------------------------------------------


def _json_embedding(name: str, head: Mapping[str, Any], f32: bool) -> _Body:
    return {"y": "e", "v": _floats(_f32_array(head["vector"], "vector"), f32)}


def _dec_embedding(b: Mapping[str, Any]) -> _Body:
    return {"vector": _round_list(_dec_floats(b, "v", "embedding"))}


# -- raw output ("x") --------------------------------------------------------------------------


def _enc_raw_tensor(tensor: np.ndarray, f32: bool) -> _Body:
    out: _Body = {"h": list(tensor.shape), "t": str(tensor.dtype)}
    if np.issubdtype(tensor.dtype, np.floating):
        out["v"] = _floats(tensor, f32)
    elif tensor.dtype.kind in "biu":
        code = _EXT_CODES[(tensor.dtype.kind, tensor.dtype.itemsize)]
        out["v"] = _ext(code, tensor.astype(EXT_DTYPES[code]).tobytes())
    else:
        out["v"] = str(tensor.tolist())
    return out


def _is_raw(head: Mapping[str, Any], keys: AbstractSet[str]) -> bool:
    return all(isinstance(v, Mapping) and {"shape", "dtype", "data"} <= set(v) for v in head.values())


def _json_raw(name: str, head: Mapping[str, Any], f32: bool) -> _Body:
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
            raise CodecError(f"head {name!r}, output {out_name!r}: {exc}") from exc
        tensors[out_name] = _enc_raw_tensor(arr, f32)
        tensors[out_name]["t"] = dtype
    return {"y": "x", "o": tensors}


def _dec_raw(b: Mapping[str, Any]) -> _Body:
    outputs = _get(b, "o", (dict,), "raw output")
    out: _Body = {}
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


_KEYPOINT_KEYS = frozenset({"keypoint_names", "keypoints", "keypoint_scores"})

# -- the result types --------------------------------------------------------------------------

#: Every result type the wire carries, in the order of the protocol's sections.
HEAD_CODECS: dict[type, HeadCodec] = {
    Classification: HeadCodec(
        "c",
        lambda r, f32: _enc_classification(r.labels, r.class_ids, r.scores, f32),
        lambda head, keys: keys == {"labels", "class_ids", "scores"},
        _json_classification,
        _dec_classification,
    ),
    Detections: HeadCodec(
        "d",
        lambda r, f32: _enc_detections(
            r.xyxy, r.scores, r.class_ids, r.labels, f32, r.keypoints, r.keypoint_scores, r.keypoint_names
        ),
        lambda head, keys: keys - _KEYPOINT_KEYS == {"xyxy", "scores", "class_ids", "labels"},
        _json_detections,
        _dec_detections,
    ),
    Segmentation: HeadCodec(
        "s",
        result_segmentation,
        lambda head, keys: "rle" in keys,
        json_segmentation,
        dec_segmentation,
    ),
    Landmarks: HeadCodec(
        "l",
        lambda r, f32: _enc_landmarks(r.names, r.points, r.scores, f32, r.presence, r.z),
        lambda head, keys: {"names", "points"} <= keys <= {"names", "points", "scores", "presence", "z"},
        _json_landmarks,
        _dec_landmarks,
    ),
    Regression: HeadCodec(
        "r",
        lambda r, f32: _enc_regression(r.names, r.values, r.box, f32),
        lambda head, keys: keys in ({"names", "values"}, {"names", "values", "box"}),
        _json_regression,
        _dec_regression,
    ),
    Embedding: HeadCodec(
        "e",
        lambda r, f32: {"y": "e", "v": _floats(r.vector, f32)},
        lambda head, keys: keys == {"vector"},
        _json_embedding,
        _dec_embedding,
    ),
    RawOutput: HeadCodec(
        "x",
        lambda r, f32: {"y": "x", "o": {name: _enc_raw_tensor(t, f32) for name, t in r.tensors.items()}},
        _is_raw,
        _json_raw,
        _dec_raw,
    ),
}
_HEAD_DECODERS = {codec.code: codec.decode for codec in HEAD_CODECS.values()}


def _encode_result(result: HeadResult, f32: bool) -> _Body:
    """The wire form of one typed head result."""
    codec = HEAD_CODECS.get(type(result))
    if codec is None:  # a subclass of a result type?
        codec = next((c for t, c in HEAD_CODECS.items() if isinstance(result, t)), None)
    if codec is None:
        known = ", ".join(t.__name__ for t in HEAD_CODECS)
        raise CodecError(f"cannot encode a {type(result).__name__} (known: {known})")
    return codec.encode(result, f32)


def _encode_head_dict(name: str, head: Mapping[str, Any], f32: bool) -> _Body:
    """The wire form of one head from its JSON form (``HeadResult.to_dict()``)."""
    keys = set(head)
    # a raw output's keys are its model's output names, which may be another type's field names
    # (an output "vector"): the raw form is tried first
    for codec in (HEAD_CODECS[RawOutput], *HEAD_CODECS.values()):
        if codec.matches(head, keys):
            return codec.encode_json(name, head, f32)
    raise CodecError(f"head {name!r}: keys {sorted(keys)} match no result type")


def _decode_head(name: str, body: Any) -> _Body:
    """The JSON form of head ``name`` from its wire form (:class:`CodecError` when malformed)."""
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
