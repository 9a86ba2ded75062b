"""edge_runtime.codec: the result envelope (docs/protocol.md), its test vectors and its errors."""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_runtime.codec import (
    CONTENT_TYPE,
    CONTENT_TYPE_JSON,
    FLAG_HEARTBEAT,
    FLAG_ZSTD,
    MAX_BODY_BYTES,
    CodecError,
    Header,
    content_type,
    decode_payload,
    encode_frame,
    encode_heartbeat,
    encode_line,
    read_header,
)
from edge_runtime.codec.__main__ import main
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.inference.results import (
    Classification,
    Detections,
    Embedding,
    FrameResult,
    HeadResult,
    Landmarks,
    RawOutput,
    Regression,
    Segmentation,
)

P = pytest.param
PROTOCOL = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
DEVICE, EPOCH = "pi-01", "9f2c4e1ab07d3356"
HEADER = b"\xedR\x01"


def _mask(rows: list[str]) -> np.ndarray:
    return np.array([[int(c) for c in row] for row in rows], dtype=np.uint8)


MASK = _mask(["000000", "001100", "001100", "001100"])

#: One sample of every result type (and the optional parts of each), as ``(id, result)``.
SAMPLES: list[tuple[str, HeadResult]] = [
    ("classification", Classification([1, 0, 2], [0.7312, 0.2001, 0.0687], ("square", "circle", "triangle"))),
    ("classification-empty", Classification(np.zeros(0, np.int64), np.zeros(0, np.float32), ())),
    (
        "detections",
        Detections(
            [[10.5, 20.25, 110.75, 220.0], [300.0, 40.0, 380.5, 90.25], [1.0, 2.0, 3.0, 4.0]],
            [0.91, 0.5, 0.25],
            [0, 2, 0],
            ("person", "car", "person"),
        ),
    ),
    ("detections-empty", Detections(np.zeros((0, 4)), [], np.zeros(0, np.int64), ())),
    (
        "detections-keypoints",
        Detections(
            [[10.5, 20.25, 110.75, 220.0], [1.0, 2.0, 3.0, 4.0]],
            [0.91, 0.25],
            [0, 0],
            ("person", "person"),
            keypoints=[[[20.5, 30.25], [-2.0, 700.5]], [[1.5, 2.5], [3.0, 3.75]]],
            keypoint_scores=[[0.875, 0.25], [0.5, 0.0625]],
            keypoint_names=("nose", "left_eye"),
        ),
    ),
    (
        "detections-keypoints-no-scores",
        Detections([[1.0, 2.0, 3.0, 4.0]], [0.5], [1], ("face",), keypoints=[[[1.5, 2.5]]], keypoint_names=("tip",)),
    ),
    (
        "detections-keypoints-empty",
        Detections(
            np.zeros((0, 4)),
            [],
            np.zeros(0, np.int64),
            (),
            keypoints=np.zeros((0, 3, 2)),
            keypoint_names=("a", "b", "c"),
        ),
    ),
    (
        "segmentation",
        Segmentation(MASK, ("background", "shape"), Segmentation.areas(MASK, ("background", "shape")), 640, 480),
    ),
    (
        "segmentation-region-int32",
        Segmentation(
            MASK.astype(np.int32) * 300,
            tuple(f"c{i}" for i in range(301)),
            {"c0": 0.75, "c300": 0.25},
            640,
            480,
            region=(80.0, 0.0, 560.0, 480.0),
        ),
    ),
    ("segmentation-empty-mask", Segmentation(np.zeros((0, 0), np.uint8), ("background",), {}, 64, 48)),
    ("landmarks", Landmarks([[12.5, 30.25], [-4.0, 700.5]], [0.875, 0.25], ("nose", "ear"))),
    ("landmarks-no-scores", Landmarks([[1.0, 2.0]], None, ("tip",))),
    ("landmarks-presence", Landmarks([[1.0, 2.0]], [0.5], ("tip",), presence=0.875)),
    ("landmarks-absent", Landmarks(np.zeros((0, 2)), None, (), presence=0.125)),
    ("regression-box", Regression([0.25, 0.5, 0.75, 1.0], ("x1", "y1", "x2", "y2"), box=[160.0, 120.0, 480.0, 360.0])),
    ("regression", Regression([21.5, -3.25], ("temperature", "tilt"))),
    ("regression-nan", Regression([math.nan, math.inf, 1.5], ("a", "b", "c"))),
    ("embedding", Embedding(np.linspace(-0.5, 0.5, 16))),
    (
        "raw",
        RawOutput(
            {
                "logits": np.array([[0.5, -1.25], [2.0, 3.5]], np.float32),
                "ids": np.array([3, -7, 2**40], np.int64),
                "flags": np.array([True, False]),
                "small": np.array([1, 255], np.uint8),
                "scalar": np.array(2.5, np.float64),
                "names": np.array(["a", "b"]),
            }
        ),
    ),
]
SAMPLE_IDS = [name for name, _ in SAMPLES]
LATENCY = {"preprocess": 0.5, "trunk": 2.5, "decode": 0.125, "total": 4.25}


def _frame(results: dict[str, HeadResult], latency: dict[str, float] | None = None) -> FrameResult:
    return FrameResult(
        frame_id=7, timestamp=1764000000.25, results=results, latency_ms=LATENCY if latency is None else latency
    )


def _expected(frame: FrameResult, seq: int = 42) -> dict[str, Any]:
    line = frame.to_dict(device=DEVICE, seq=seq)
    line["epoch"] = EPOCH
    return line


def _assert_close(got: Any, want: Any, rel: float, abs_tol: float, path: str = "") -> None:
    """Same structure and strings/ints, floats within ``rel * |want| + abs_tol``."""
    if isinstance(want, float) and not isinstance(got, bool) and isinstance(got, (int, float)):
        assert abs(got - want) <= rel * abs(want) + abs_tol, f"{path}: {got} vs {want}"
    elif isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want), f"{path}: keys {list(got)} vs {list(want)}"
        for key in want:
            _assert_close(got[key], want[key], rel, abs_tol, f"{path}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{path}: {got!r:.80} vs {want!r:.80}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _assert_close(g, w, rel, abs_tol, f"{path}[{i}]")
    else:
        assert got == want and type(got) is type(want), f"{path}: {got!r} vs {want!r}"


# -- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "result"), SAMPLES, ids=SAMPLE_IDS)
def test_round_trip_float32_head_is_exactly_the_json_line(name: str, result: HeadResult) -> None:
    frame = _frame({name: result})
    payload = encode_frame(frame, device=DEVICE, epoch=EPOCH, seq=42, float32_heads={name})
    decoded = decode_payload(payload)
    assert decoded == _expected(frame)
    json.dumps(decoded, allow_nan=False)


@pytest.mark.parametrize(("name", "result"), SAMPLES, ids=SAMPLE_IDS)
def test_round_trip_float16_is_close_to_the_json_line(name: str, result: HeadResult) -> None:
    frame = _frame({name: result, "cls": SAMPLES[0][1]})
    decoded = decode_payload(encode_frame(frame, device=DEVICE, epoch=EPOCH, seq=42))
    _assert_close(decoded, _expected(frame), rel=2**-11, abs_tol=0.0101)
    json.dumps(decoded, allow_nan=False)


@pytest.mark.parametrize(("name", "result"), SAMPLES, ids=SAMPLE_IDS)
def test_encode_line_round_trips_the_json_line(name: str, result: HeadResult) -> None:
    line = _expected(_frame({name: result}))
    assert decode_payload(encode_line(line, float32_heads={name})) == line
    assert decode_payload(encode_line(line, mode="json")) == line


@pytest.mark.parametrize(
    ("decimals", "low", "high", "make"),
    [
        (4, 0.0, 1.0, lambda v: Classification(np.arange(len(v)), np.sort(v)[::-1], tuple(map(str, range(len(v)))))),
        (4, -50.0, 50.0, lambda v: Embedding(v)),
        (
            2,
            0.0,
            4000.0,
            lambda v: Detections(
                v.reshape(-1, 4), np.zeros(len(v) // 4), np.zeros(len(v) // 4), ("a",) * (len(v) // 4)
            ),
        ),
        (2, -100.0, 2000.0, lambda v: Landmarks(v.reshape(-1, 2), None, tuple(map(str, range(len(v) // 2))))),
    ],
    ids=["scores", "embedding", "boxes", "points"],
)
def test_float16_and_float32_precision_bounds(decimals: int, low: float, high: float, make: Callable) -> None:
    values = np.random.default_rng(decimals).uniform(low, high, 400).astype(np.float32)
    frame = _frame({"h": make(values)})
    want = _expected(frame)["results"]["h"]
    half = decode_payload(encode_frame(frame, device=DEVICE, epoch=EPOCH, seq=0))["results"]["h"]
    full = decode_payload(encode_frame(frame, device=DEVICE, epoch=EPOCH, seq=0, float32_heads=["h"]))["results"]["h"]
    assert full == want  # float32 on the wire: the JSON line exactly
    # float16: half an ulp (2^-11 relative) plus the decimal rounding of both sides
    _assert_close(half, want, rel=2**-11, abs_tol=10.0**-decimals)
    key = {"Classification": "scores", "Embedding": "vector", "Detections": "xyxy", "Landmarks": "points"}
    field = key[type(frame.results["h"]).__name__]
    assert half[field] != want[field], "float16 should have lost some precision here"


def test_float16_overflow_is_sent_float32_not_infinite() -> None:
    frame = _frame({"r": Regression([1e6, -70000.0, 0.5], ("a", "b", "c"))})
    decoded = decode_payload(encode_frame(frame, device=DEVICE, epoch=EPOCH, seq=0))
    assert decoded["results"]["r"]["values"] == [1e6, -70000.0, 0.5]
    big = Embedding(np.full(100, 1e5, np.float32))  # the numpy path (> 64 values)
    decoded = decode_payload(encode_frame(_frame({"e": big}), device=DEVICE, epoch=EPOCH, seq=0))
    assert decoded["results"]["e"]["vector"] == [1e5] * 100


def test_demo_like_frame_sizes_and_key_order() -> None:
    yy, xx = np.mgrid[:96, :128]
    mask = (((yy - 40) ** 2 + (xx - 70) ** 2) < 400).astype(np.uint8)
    seg = Segmentation(mask, ("background", "shape"), Segmentation.areas(mask, ("background", "shape")), 640, 480)
    frame = _frame({"shape": SAMPLES[0][1], "box": SAMPLES[9][1], "mask": seg})
    payload = encode_frame(frame, device=DEVICE, epoch=EPOCH, seq=9)
    naive = json.dumps(_expected(frame, 9), separators=(",", ":")).encode()
    assert len(payload) < len(naive) / 1.5
    decoded = decode_payload(payload)
    assert list(decoded) == ["device", "seq", "frame_id", "ts", "results", "latency_ms", "epoch"]
    assert decoded["results"]["mask"]["rle"] == seg.rle()


# -- modes, compression, heartbeats, header ---------------------------------------------------


def test_json_mode_is_the_json_line_behind_the_header() -> None:
    frame = _frame({name: r for name, r in SAMPLES[:5]})
    payload = encode_frame(frame, device=DEVICE, epoch=EPOCH, seq=3, mode="json")
    assert payload[:4] == HEADER + b"\x01" and payload[4:5] == b"{"
    assert json.loads(payload[4:]) == _expected(frame, 3) == decode_payload(payload)
    assert read_header(payload) == Header(1, "json", "none", "frame")


@pytest.fixture
def zstandard() -> Any:
    return pytest.importorskip("zstandard", reason="zstandard not installed: pip install 'edge-runtime[zstd]'")


@pytest.mark.parametrize("mode", ["msgpack", "json"])
def test_zstd_on_and_off(zstandard: Any, mode: str) -> None:
    big = Segmentation(np.tile(MASK, (24, 20)), ("background", "shape"), {"background": 0.75, "shape": 0.25}, 640, 480)
    frame = _frame({"mask": big, "cls": SAMPLES[0][1]})
    plain = encode_frame(frame, device=DEVICE, epoch=EPOCH, seq=1, mode=mode)
    packed = encode_frame(frame, device=DEVICE, epoch=EPOCH, seq=1, mode=mode, compression="zstd")
    assert packed[3] & FLAG_ZSTD and not plain[3] & FLAG_ZSTD
    assert len(packed) < len(plain)
    assert decode_payload(packed) == decode_payload(plain)
    assert zstandard.ZstdDecompressor().decompress(packed[4:]) == plain[4:]
    assert read_header(packed).compression == "zstd"


def test_zstd_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch, zstandard: Any) -> None:
    packed = encode_frame(_frame({}), device=DEVICE, epoch=EPOCH, seq=1, compression="zstd")
    monkeypatch.setitem(sys.modules, "zstandard", None)  # import zstandard now raises ImportError
    with pytest.raises(CodecError, match=re.escape("pip install 'edge-runtime[zstd]'")):
        encode_frame(_frame({}), device=DEVICE, epoch=EPOCH, seq=1, compression="zstd")
    with pytest.raises(CodecError, match=re.escape("pip install 'edge-runtime[zstd]'")):
        decode_payload(packed)
    assert decode_payload(encode_frame(_frame({}), device=DEVICE, epoch=EPOCH, seq=1))["seq"] == 1


@pytest.mark.parametrize("mode", ["msgpack", "json"])
def test_heartbeat_round_trip(mode: str) -> None:
    heads = {"shape": {"since_seq": 40, "unchanged": True}, "mask": {"since_seq": 38, "note": None, "x": [1.5]}}
    payload = encode_heartbeat(DEVICE, EPOCH, 44, 1764000001.1234567, heads, mode=mode)
    assert read_header(payload).kind == "heartbeat" and payload[3] & FLAG_HEARTBEAT
    decoded = decode_payload(payload)
    assert decoded == {
        "kind": "heartbeat",
        "device": DEVICE,
        "epoch": EPOCH,
        "seq": 44,
        "ts": 1764000001.123457,
        "heads": heads,
    }
    assert encode_line(decoded, mode=mode) == payload


_NO_HEADS = _expected(_frame({}))
_BAD_LENGTHS = {"h": {"labels": ["a"], "class_ids": [1, 2], "scores": [0.5]}}
ENCODE_ERRORS = [
    P(
        lambda: encode_frame(_frame({}), device=DEVICE, epoch=EPOCH, seq=0, mode="msgpak"),
        "did you mean 'msgpack'",
        id="mode",
    ),
    P(
        lambda: encode_frame(_frame({}), device=DEVICE, epoch=EPOCH, seq=0, compression="gzip"),
        "choose one of",
        id="compression",
    ),
    P(lambda: encode_frame(_frame({}), device=DEVICE, epoch=EPOCH, seq=-1), "seq must be", id="negative-seq"),
    P(lambda: encode_frame(_frame({}), device=DEVICE, epoch=EPOCH, seq=True), "seq must be", id="bool-seq"),
    P(lambda: encode_frame(_frame({}), device=1, epoch=EPOCH, seq=0), "must be strings", id="device-type"),
    P(lambda: encode_heartbeat(DEVICE, EPOCH, 0, 1.0, {"h": {1, 2}}), "not JSON-compatible", id="heartbeat-set"),
    P(lambda: encode_heartbeat(DEVICE, EPOCH, 0, 1.0, {"h": math.nan}), "not valid JSON", id="heartbeat-nan"),
    P(lambda: encode_heartbeat(DEVICE, EPOCH, 0, math.inf, {}), "finite", id="heartbeat-ts"),
    P(lambda: encode_line({"device": DEVICE}), "no 'epoch' field", id="line-missing-field"),
    P(lambda: encode_line([1, 2]), "must be a mapping", id="line-not-mapping"),
    P(
        lambda: encode_line({**_NO_HEADS, "results": {"h": {"what": 1}}}),
        "match no result type",
        id="line-unknown-head",
    ),
    P(lambda: encode_line({**_NO_HEADS, "results": _BAD_LENGTHS}), "different lengths", id="line-lengths"),
]


@pytest.mark.parametrize(("call", "match"), ENCODE_ERRORS)
def test_encode_errors(call: Callable[[], bytes], match: str) -> None:
    with pytest.raises(CodecError, match=match):
        call()


def test_content_type_and_header() -> None:
    assert content_type() == CONTENT_TYPE == "application/vnd.edge-runtime.v1+msgpack"
    assert content_type("json") == CONTENT_TYPE_JSON == "application/vnd.edge-runtime.v1+json"
    with pytest.raises(CodecError, match="choose one of"):
        content_type("xml")
    payload = encode_frame(_frame({}), device=DEVICE, epoch=EPOCH, seq=0)
    assert payload[:4] == b"\xed\x52\x01\x00"
    assert read_header(payload) == Header(1, "msgpack", "none", "frame")
    assert issubclass(CodecError, EdgeRuntimeError)


def _zstd_bomb(size_known: bool) -> bytes:
    zstandard = pytest.importorskip("zstandard", reason="zstandard not installed: pip install 'edge-runtime[zstd]'")
    return zstandard.ZstdCompressor(write_content_size=size_known).compress(b"\x00" * (MAX_BODY_BYTES + 1))


_VALID = encode_frame(_frame({"cls": SAMPLES[0][1]}), device=DEVICE, epoch=EPOCH, seq=5)
_BODY = msgpack.unpackb(_VALID[4:], raw=False, ext_hook=lambda c, d: msgpack.ExtType(c, d))


def _body(**changes: Any) -> bytes:
    body = {**_BODY, **changes}
    return HEADER + b"\x00" + msgpack.packb({k: v for k, v in body.items() if v is not None}, use_bin_type=True)


_BAD_RLE = {
    "y": "s", "n": ["a"], "a": msgpack.ExtType(1, b""), "ai": [], "z": [4, 4], "h": [2, 2],
    "v": msgpack.ExtType(3, b"\0"), "k": msgpack.ExtType(3, b"\5"),
}  # fmt: skip
_LIMIT = "over the 16777216-byte limit"
DECODE_ERRORS = [
    P(lambda: b"", "bad magic", id="empty"),
    P(lambda: b'{"device": "pi-01"}', "bad magic", id="json-text"),
    P(lambda: b"\xed", "bad magic", id="one-byte"),
    P(lambda: b"\xedR", "truncated", id="magic-only"),
    P(lambda: b"\xedR\x01", "truncated", id="no-flags"),
    P(lambda: b"\xedR\x01\x00", "truncated payload: the body is empty", id="no-body"),
    P(lambda: b"\xedR\x02\x00" + _VALID[4:], "unsupported codec version 2", id="version-2"),
    P(lambda: b"\xedR\x00\x00" + _VALID[4:], "unsupported codec version 0", id="version-0"),
    P(lambda: HEADER + b"\x08" + _VALID[4:], "unknown flag bits 0x08", id="flag-bit-3"),
    P(lambda: HEADER + b"\x80" + _VALID[4:], "unknown flag bits 0x80", id="flag-bit-7"),
    P(lambda: _VALID[:-3], "truncated msgpack body", id="truncated"),
    P(lambda: HEADER + b"\x00\xc1garbage", "malformed msgpack body", id="garbage-body"),
    P(lambda: _VALID + b"\x00", "malformed msgpack body", id="extra-data"),
    P(lambda: HEADER + b"\x00" + msgpack.packb([1, 2]), "a frame body must be a map", id="body-not-map"),
    P(lambda: _body(d=None), "has no field 'd'", id="missing-field"),
    P(lambda: _body(s=-1), "field .s. must be in 0", id="negative-seq"),
    P(lambda: _body(s=True), "field 's' is a bool", id="bool-seq"),
    P(lambda: _body(t=math.nan), "ts must be finite", id="nan-ts"),
    P(lambda: _body(lv=msgpack.ExtType(99, b"")), "unknown msgpack extension type 99", id="unknown-ext"),
    P(lambda: _body(lv=msgpack.ExtType(2, b"abc")), "malformed msgpack body", id="ext-size"),
    P(lambda: _body(lv=msgpack.ExtType(11, b"\x02")), "bool array", id="bool-byte"),
    P(lambda: _body(r={"h": {"y": "q"}}), "does not know", id="unknown-head-type"),
    P(
        lambda: _body(r={"h": {"y": "c", "n": ["a"], "i": [1], "p": msgpack.ExtType(1, b"")}}),
        "expected 1",
        id="length",
    ),
    P(
        lambda: _body(r={"h": {"y": "c", "n": [1], "i": [1], "p": msgpack.ExtType(1, b"00")}}),
        "hold strings",
        id="label-type",
    ),
    P(lambda: _body(r={"h": _BAD_RLE}), "run lengths add up to 5", id="rle-sum"),
    P(lambda: HEADER + b"\x01" + b'{"device": NaN}', "malformed json body", id="json-nan"),
    P(lambda: HEADER + b"\x01" + b"[1]", "an object expected", id="json-not-object"),
    P(lambda: HEADER + b"\x01" + b"\xff\xfe", "malformed json body", id="json-not-utf8"),
    P(lambda: HEADER + b"\x05" + json.dumps(_NO_HEADS).encode(), "JSON heartbeat has no field 'kind'", id="json-kind"),
    P(lambda: HEADER + b"\x02" + b"not zstd", "malformed zstd body", id="zstd-garbage"),
    P(lambda: HEADER + b"\x00" + b"\x00" * (MAX_BODY_BYTES + 1), _LIMIT, id="body-over-limit"),
    P(lambda: HEADER + b"\x02" + _zstd_bomb(size_known=True), _LIMIT, id="zip-bomb-sized"),
    P(lambda: HEADER + b"\x02" + _zstd_bomb(size_known=False), _LIMIT, id="zip-bomb-unsized"),
    P(lambda: "ed5201", "must be bytes", id="not-bytes"),
]


@pytest.mark.parametrize(("payload", "match"), DECODE_ERRORS)
def test_decode_errors(payload: Callable[[], bytes], match: str) -> None:
    with pytest.raises(CodecError, match=match):
        decode_payload(payload())


# -- property tests ----------------------------------------------------------------------------

_f32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
_f32_finite = st.floats(-1e4, 1e4, width=32)
_names = st.text(min_size=0, max_size=6)


@st.composite
def _head_results(draw: st.DrawFn) -> HeadResult:
    kind = draw(st.sampled_from(["c", "d", "s", "l", "r", "e", "x"]))
    n = draw(st.integers(0, 5))
    if kind == "c":
        scores = sorted(draw(st.lists(st.floats(0, 1, width=32), min_size=n, max_size=n)), reverse=True)
        return Classification(
            draw(st.lists(st.integers(0, 2**40), min_size=n, max_size=n)),
            scores,
            tuple(draw(st.lists(_names, min_size=n, max_size=n))),
        )
    if kind == "d":
        boxes = draw(st.lists(st.lists(_f32, min_size=4, max_size=4), min_size=n, max_size=n))
        return Detections(
            np.array(boxes, np.float32).reshape(n, 4),
            draw(st.lists(_f32, min_size=n, max_size=n)),
            draw(st.lists(st.integers(0, 1000), min_size=n, max_size=n)),
            tuple(draw(st.lists(st.sampled_from(["a", "b", "ü"]), min_size=n, max_size=n))),
        )
    if kind == "s":
        h, w, k = draw(st.integers(0, 6)), draw(st.integers(0, 6)), draw(st.integers(1, 300))
        values = draw(st.lists(st.integers(0, k - 1), min_size=h * w, max_size=h * w))
        mask = np.array(values, np.uint8 if k <= 256 else np.int32).reshape(h, w)
        classes = tuple(f"c{i}" for i in range(k))
        region = draw(st.none() | st.tuples(_f32_finite, _f32_finite, _f32_finite, _f32_finite))
        return Segmentation(mask, classes, Segmentation.areas(mask, classes), draw(st.integers(1, 5000)), 7, region)
    if kind == "l":
        points = draw(st.lists(st.tuples(_f32, _f32), min_size=n, max_size=n))
        scores = draw(st.none() | st.lists(_f32, min_size=n, max_size=n))
        return Landmarks(np.array(points, np.float32).reshape(n, 2), scores, tuple(f"p{i}" for i in range(n)))
    if kind == "r":
        box = draw(st.none() | st.lists(_f32, min_size=4, max_size=4))
        return Regression(draw(st.lists(_f32, min_size=n, max_size=n)), tuple(f"v{i}" for i in range(n)), box)
    if kind == "e":
        return Embedding(draw(st.lists(_f32, min_size=0, max_size=80)))
    dtype = draw(st.sampled_from(["float32", "float16", "int8", "uint16", "int64", "bool"]))
    shape = draw(st.lists(st.integers(0, 3), max_size=3))
    data = np.asarray(draw(st.lists(st.integers(0, 100), min_size=math.prod(shape), max_size=math.prod(shape))))
    return RawOutput({"out": data.astype(dtype).reshape(shape)})


@st.composite
def _frames(draw: st.DrawFn) -> FrameResult:
    results = draw(st.dictionaries(st.text(max_size=8), _head_results(), max_size=4))
    latency = draw(st.dictionaries(st.text(max_size=8), st.floats(0, 1e4), max_size=6))
    return FrameResult(draw(st.integers(0, 2**63)), draw(st.floats(0, 4e9)), results, latency)


@settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(frame=_frames(), seq=st.integers(0, 2**64 - 1), f32=st.booleans())
def test_property_round_trip(frame: FrameResult, seq: int, f32: bool) -> None:
    payload = encode_frame(frame, device="dév", epoch=EPOCH, seq=seq, float32_heads=frame.results if f32 else ())
    decoded = decode_payload(payload)
    want = frame.to_dict(device="dév", seq=seq)
    want["epoch"] = EPOCH
    want["latency_ms"] = {k: (None if math.isnan(v) else v) for k, v in want["latency_ms"].items()}
    # to_dict rounds the float64 latencies, the wire carries float32: allow that
    _assert_close(decoded, want, rel=2**-22 if f32 else 2**-11, abs_tol=0.0101 if not f32 else 0.00101)
    json.dumps(decoded, allow_nan=False)


@settings(deadline=None, max_examples=300)
@given(st.binary(max_size=300))
def test_property_random_bytes_raise_only_codec_error(data: bytes) -> None:
    try:
        json.dumps(decode_payload(data))
    except CodecError:
        pass


@settings(deadline=None, max_examples=300)
@given(flags=st.integers(0, 7), body=st.binary(max_size=300))
def test_property_random_bodies_raise_only_codec_error(flags: int, body: bytes) -> None:
    try:
        json.dumps(decode_payload(HEADER + bytes([flags]) + body))
    except CodecError:
        pass


_SEED_PAYLOADS = [
    encode_frame(_frame({name: r}), device=DEVICE, epoch=EPOCH, seq=1, float32_heads=("x",) if i % 2 else ())
    for i, (name, r) in enumerate(SAMPLES)
] + [encode_heartbeat(DEVICE, EPOCH, 2, 3.0, {"h": {"a": [1, 2.5, None]}})]


@settings(deadline=None, max_examples=400)
@given(
    seed=st.sampled_from(_SEED_PAYLOADS),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_property_mutated_payloads_raise_only_codec_error(seed: bytes, edits: list[tuple[int, int]]) -> None:
    data = bytearray(seed)
    for where, byte in edits:
        data[where % len(data)] = byte
    try:
        json.dumps(decode_payload(bytes(data)))
    except CodecError:
        pass


# -- docs/protocol.md test vectors -----------------------------------------------------------

_VECTOR = re.compile(
    r"<!-- test-vector: (?P<opts>[^>]*?) -->\s*```hex\n(?P<hex>.*?)```\s*```json\n(?P<json>.*?)```", re.S
)


def _vectors() -> list[tuple[dict[str, str], bytes, dict[str, Any]]]:
    out = []
    text = PROTOCOL.read_text(encoding="utf-8") if PROTOCOL.exists() else ""  # missing: the test below fails
    for m in _VECTOR.finditer(text):
        opts = dict(item.split("=", 1) for item in m["opts"].split())
        out.append((opts, bytes.fromhex("".join(m["hex"].split())), json.loads(m["json"])))
    return out


_V_SHAPE = Classification([1, 0, 2], [0.75, 0.1875, 0.0625], ("square", "circle", "triangle"))
_V_BOX = Regression([0.25, 0.5, 0.75, 1.0], ("x1", "y1", "x2", "y2"), box=[160.0, 120.0, 480.0, 360.0])
_V_MASK = Segmentation(MASK, ("background", "shape"), {"background": 0.75, "shape": 0.25}, 640, 480)
_V_LATENCY = {"preprocess": 0.5, "trunk": 2.5, "head:box": 0.25, "head:mask": 0.75, "decode": 0.125, "total": 4.25}
_V_PEOPLE = Detections(
    [[10.5, 20.25, 110.75, 220.0], [300.0, 40.0, 380.5, 90.25]], [0.875, 0.5], [0, 0], ("person", "person")
)
_V_OTHERS = {
    "people": _V_PEOPLE,
    "pose": Landmarks([[12.5, 30.25]], [0.75], ("nose",)),
    "embed": Embedding([0.6, -0.8]),
    "raw": RawOutput({"ids": np.array([3, -1], np.int32)}),
}
_V_SQUARE = Classification([1], [0.75], ("square",))
_V_KEYPOINTS = {
    "persons": Detections(
        [[10.5, 20.25, 110.75, 220.0]],
        [0.875],
        [0],
        ("person",),
        keypoints=[[[40.5, 30.25], [50.0, 31.5]]],
        keypoint_scores=[[0.9375, 0.25]],
        keypoint_names=("nose", "left_eye"),
    ),
    "face": Landmarks([[12.5, 30.25]], None, ("nose",), presence=0.875),
}
_V_HEADS = {"box": {"since_seq": 43}, "mask": {"since_seq": 43}}

#: What the vectors were made from (typed results), by vector name.
VECTOR_SOURCES: dict[str, Callable[[], bytes]] = {
    "classification": lambda: encode_frame(
        FrameResult(7, 1764000000.5, {"shape": _V_SHAPE}, {"trunk": 2.5, "total": 4.0}),
        device=DEVICE,
        epoch=EPOCH,
        seq=42,
    ),
    "segmentation": lambda: encode_frame(
        FrameResult(8, 1764000000.625, {"box": _V_BOX, "mask": _V_MASK}, _V_LATENCY), device=DEVICE, epoch=EPOCH, seq=43
    ),
    "heartbeat": lambda: encode_heartbeat(DEVICE, EPOCH, 44, 1764000001.0, _V_HEADS),
    "other-types": lambda: encode_frame(
        FrameResult(9, 1764000001.5, _V_OTHERS, {"total": 6.0}),
        device=DEVICE,
        epoch=EPOCH,
        seq=45,
        float32_heads={"embed"},
    ),
    "classification-json": lambda: encode_frame(
        FrameResult(7, 1764000000.5, {"shape": _V_SQUARE}, {"total": 4.0}),
        device=DEVICE,
        epoch=EPOCH,
        seq=46,
        mode="json",
    ),
    "keypoints": lambda: encode_frame(
        FrameResult(10, 1764000002.0, _V_KEYPOINTS, {"total": 5.0}), device=DEVICE, epoch=EPOCH, seq=47
    ),
}


def test_protocol_has_the_vectors() -> None:
    names = [opts["name"] for opts, _, _ in _vectors()]
    assert names == list(VECTOR_SOURCES)
    assert {"classification", "segmentation", "heartbeat"} <= set(names)


@pytest.mark.parametrize("vector", _vectors(), ids=lambda v: v[0]["name"])
def test_protocol_vector(vector: tuple[dict[str, str], bytes, dict[str, Any]]) -> None:
    opts, payload, form = vector
    assert decode_payload(payload) == form
    f32 = [h for h in opts.get("float32_heads", "").split(",") if h]
    assert encode_line(form, mode=opts.get("mode", "msgpack"), float32_heads=f32) == payload
    assert VECTOR_SOURCES[opts["name"]]() == payload


def test_cli_decodes_hex(capsys: pytest.CaptureFixture[str]) -> None:
    payload = VECTOR_SOURCES["heartbeat"]()
    assert main(["--hex", payload.hex()]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == decode_payload(payload) and "heartbeat" in err
    assert main(["--hex", "0011"]) == 1
    assert "bad magic" in capsys.readouterr().err
