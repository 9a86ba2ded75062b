"""The wire form of a segmentation head (``"s"``, protocol §4.5): class names, class areas,
the frame size, the optional content region and the run-length encoded mask (run values and
lengths as the narrowest unsigned integer arrays). :data:`edge_runtime.codec.heads.HEAD_CODECS`
uses these functions for :class:`~edge_runtime.inference.results.Segmentation`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import msgpack
import numpy as np

from edge_runtime.codec.arrays import (
    _dec_floats,
    _dec_ints,
    _dec_strs,
    _dec_uints,
    _ext_len,
    _f32_array,
    _floats,
    _round_list,
    _same_len,
    _strs,
    _uints,
    _uints_from_list,
)
from edge_runtime.codec.envelope import CodecError
from edge_runtime.inference.results import DECIMALS, PIXEL_DECIMALS, Segmentation, rle_runs

_Body = dict[str, Any]


def enc_segmentation(
    classes: Sequence[str],
    areas: Mapping[str, float],
    frame_size: Sequence[int],
    region: Any,
    shape: Sequence[int],
    values: np.ndarray | msgpack.ExtType,
    counts: np.ndarray | msgpack.ExtType,
    f32: bool,
    checked: bool = False,
) -> _Body:
    names = _strs(classes, "classes")
    position = {c: i for i, c in enumerate(names)}
    try:
        area_index = [position[c] for c in areas]
    except KeyError as exc:
        raise CodecError(f"class_areas names unknown class {exc.args[0]!r} (classes {names})") from exc
    out: _Body = {
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


def result_segmentation(result: Segmentation, f32: bool) -> _Body:
    values, counts = rle_runs(result.mask)
    w_h = (result.frame_width, result.frame_height)
    return enc_segmentation(
        result.classes, result.class_areas, w_h, result.region, result.mask.shape, values, counts, f32, True
    )


def json_segmentation(name: str, head: Mapping[str, Any], f32: bool) -> _Body:
    rle = head["rle"]
    return enc_segmentation(
        head["classes"],
        {str(k): (math.nan if v is None else float(v)) for k, v in head.get("class_areas", {}).items()},
        head["frame_size"],
        None if head.get("region") is None else _f32_array(head["region"], "region"),
        rle["shape"],
        _uints_from_list(rle["values"], "rle values"),
        _uints_from_list(rle["counts"], "rle counts"),
        f32,
    )


def dec_segmentation(b: Mapping[str, Any]) -> _Body:
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
    out: _Body = {
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
