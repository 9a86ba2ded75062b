"""Fuzzing the parsers a user or a network can feed: every failure is a typed
:class:`~edge_runtime.errors.EdgeRuntimeError` whose message names the file or field, never a
bare ``KeyError``/``TypeError``/``ValueError``/``AttributeError`` or a runtime's own exception.

Covered: ``manifest.json`` (arbitrary JSON, mutations of the demo manifest, random and truncated
bytes on disk), the runtime config (arbitrary and mutated mappings, random TOML files,
``EDGE_RUNTIME_*`` values), the codec (truncation at every offset of valid payloads and single
bit flips; random bytes and byte edits are in ``tests/test_codec.py``), and corrupted ONNX and
TFLite model files whose manifest hash was recomputed so that only the model loader sees them.

Hypothesis runs derandomized (same examples every run, no example database), with modest
budgets: the whole file runs in well under a minute.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_runtime.bundle.manifest import Manifest
from edge_runtime.bundle.reader import load_bundle, read_manifest
from edge_runtime.codec import CodecError, decode_payload, encode_frame, encode_heartbeat
from edge_runtime.config import RuntimeConfig, environment_settings, parse_env_value
from edge_runtime.errors import BundleError, ConfigError, EdgeRuntimeError, ModelError
from edge_runtime.inference.engine import Engine, EngineOptions
from edge_runtime.inference.results import Classification, Detections, FrameResult, Regression, Segmentation

try:  # the TFLite bundle writer (the models: conftest's tflite_models fixture, built once per session)
    from tests.test_tflite_backend import write_bundle
except pytest.skip.Exception:  # no TFLite runtime: the TFLite test below skips
    write_bundle = None  # type: ignore[assignment]

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
WHERE = "fuzz/manifest.json"


Kind = type[EdgeRuntimeError] | tuple[type[EdgeRuntimeError], ...]


def check_typed(exc: BaseException, *names: str, kind: Kind = EdgeRuntimeError) -> None:
    """``exc`` is a ``kind`` with a non-empty message naming one of ``names`` (file or field)."""
    assert isinstance(exc, kind), f"{type(exc).__name__} escaped instead of {kind}: {exc!r}"
    message = str(exc)
    assert message.strip(), f"{type(exc).__name__} with an empty message"
    assert any(name in message for name in names), f"message names none of {names}: {message!r}"


def expect_typed(call: Callable[[], Any], *names: str, kind: Kind = EdgeRuntimeError) -> BaseException | None:
    """Run ``call``; a success is fine, a failure must satisfy :func:`check_typed`."""
    try:
        call()
    except Exception as exc:
        check_typed(exc, *names, kind=kind)
        return exc
    return None


# -- values ----------------------------------------------------------------------------------------

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
#: Arbitrary JSON-like values (NaN and huge ints included: Python's json reads both).
JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=25,
)
#: A value of any kind, to replace a valid one: wrong types, negative and huge numbers, huge strings.
ODD_VALUES = (
    JSON
    | st.sampled_from([-1, 0, -(10**30), 10**30, math.nan, math.inf, -0.5, "", "x" * 100_000, [], {}, [[]], [None]])
    | st.lists(st.integers(-(10**6), 10**6), max_size=6)
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path (dict keys and list indexes) inside a JSON value."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _paths(item, (*prefix, i))


def _mutated(base: dict[str, Any], path: tuple[Any, ...], action: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(base)
    parent: Any = data
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if action == "delete":
        del parent[last]
    else:
        parent[last] = value
    return data


def _mutations(base: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    paths = [p for p in _paths(base) if p]
    return st.builds(
        _mutated,
        st.just(base),
        st.sampled_from(paths),
        st.sampled_from(["delete", "replace", "replace"]),
        ODD_VALUES,
    )


def _first_key(path: tuple[Any, ...]) -> str:
    return str(path[0])


# -- manifest ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_manifest(demo_bundle: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((demo_bundle / "manifest.json").read_text())
    Manifest.from_mapping(data, WHERE)  # the base is valid
    return data


@FUZZ
@given(value=JSON)
def test_manifest_from_arbitrary_json_raises_bundle_error(value: Any) -> None:
    expect_typed(lambda: Manifest.from_mapping(value, WHERE), WHERE, kind=BundleError)


@FUZZ
@given(data=st.data())
def test_manifest_mutations_raise_bundle_error_naming_the_field(demo_manifest: dict[str, Any], data: Any) -> None:
    paths = [p for p in _paths(demo_manifest) if p]
    path = data.draw(st.sampled_from(paths), label="path")
    action = data.draw(st.sampled_from(["delete", "replace", "replace"]), label="action")
    value = data.draw(ODD_VALUES, label="value") if action == "replace" else None
    mutated = _mutated(demo_manifest, path, action, value)
    exc = expect_typed(lambda: Manifest.from_mapping(mutated, WHERE), WHERE, kind=BundleError)
    if exc is not None:
        # the top-level section (``heads``, ``trunk``, ``input``, ``files``...) or the key itself
        names = {str(p) for p in path if isinstance(p, str)}
        assert any(name in str(exc) for name in names) or "manifest must be" in str(exc), (path, str(exc))


@FUZZ
@given(data=st.binary(max_size=400) | st.text(max_size=400).map(lambda s: s.encode("utf-8", "surrogatepass")))
def test_read_manifest_of_random_bytes_raises_bundle_error(tmp_path_factory: Any, data: bytes) -> None:
    root = tmp_path_factory.mktemp("random-manifest")
    (root / "manifest.json").write_bytes(data)
    expect_typed(lambda: read_manifest(root), str(root / "manifest.json"), kind=BundleError)


def test_read_manifest_truncated_at_every_offset(demo_bundle: Path, tmp_path: Path) -> None:
    text = (demo_bundle / "manifest.json").read_bytes()
    root = tmp_path / "bundle"
    shutil.copytree(demo_bundle, root)
    step = max(1, len(text) // 400)
    for cut in range(0, len(text) - 1, step):
        (root / "manifest.json").write_bytes(text[:cut])
        try:
            load_bundle(root)
        except Exception as exc:
            check_typed(exc, str(root / "manifest.json"), kind=BundleError)
        else:  # pragma: no cover - a prefix of a JSON object is never a JSON object
            pytest.fail(f"a manifest truncated at {cut} of {len(text)} bytes was accepted")


# -- runtime config ----------------------------------------------------------------------------

VALID_CONFIG: dict[str, Any] = {
    "bundle": "b",
    "source": "synthetic",
    "backend": "onnxruntime",
    "precision": "int8",
    "threads": 2,
    "profile": "auto",
    "device_id": "dev-1",
    "max_frames": 10,
    "state_dir": "/tmp/state",
    "fps": 25.0,
    "loop": True,
    "queue_size": 4,
    "status_interval_s": 10,
    "heartbeat_interval_s": 5.0,
    "heads": {"box": {"enabled": True, "every_n_frames": 2, "qos": 1, "expiry_s": 30, "deadband": 0.5}},
    "broker": "mqtt://127.0.0.1:1883",
    "topic_prefix": "edge",
    "spool_max_rows": 1000,
    "spool_synchronous": "full",
    "codec": "json",
    "compression": "none",
    "metrics_port": 9100,
}
CONFIG_WHERE = "fuzz/config.toml"


def test_valid_config_base_is_valid() -> None:
    RuntimeConfig.from_mapping(VALID_CONFIG, CONFIG_WHERE)


@FUZZ
@given(value=st.dictionaries(st.sampled_from(RuntimeConfig.keys()) | st.text(max_size=10), JSON, max_size=6))
def test_config_from_arbitrary_mappings_raises_config_error(value: dict[str, Any]) -> None:
    expect_typed(lambda: RuntimeConfig.from_mapping(value, CONFIG_WHERE), CONFIG_WHERE, kind=ConfigError)


@FUZZ
@given(mutated=_mutations(VALID_CONFIG))
def test_config_mutations_raise_config_error_naming_the_key(mutated: dict[str, Any]) -> None:
    exc = expect_typed(lambda: RuntimeConfig.from_mapping(mutated, CONFIG_WHERE), CONFIG_WHERE, kind=ConfigError)
    if exc is not None:
        changed = [k for k in VALID_CONFIG if mutated.get(k, ...) != VALID_CONFIG[k]]
        assert any(key in str(exc) for key in changed), (changed, str(exc))


_TOML_LINE = st.one_of(
    st.text(max_size=60),
    st.builds(
        "{} = {}".format,
        st.sampled_from([*RuntimeConfig.keys(), "bogus", "[heads]", "heads.x"]),
        st.sampled_from(['"x"', "1", "-1", "0", "1.5e400", "true", "[1, 2]", "{a = 1}", '"""', "nan", "inf", ""]),
    ),
    st.sampled_from(["[heads.box]", "[heads]", "[[heads]]", "[x", "bundle = 'a'", "source = 'synthetic'"]),
)


@FUZZ
@given(
    content=st.one_of(
        st.binary(max_size=200),
        st.lists(_TOML_LINE, max_size=8).map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass")),
    )
)
def test_config_toml_files_of_random_content_raise_config_error(tmp_path_factory: Any, content: bytes) -> None:
    path = tmp_path_factory.mktemp("cfg") / "config.toml"
    path.write_bytes(content)
    expect_typed(lambda: RuntimeConfig.load(path, environ={}), str(path), kind=ConfigError)


@FUZZ
@given(raw=st.text(max_size=30), kind=st.sampled_from([int, float, bool, str]))
def test_parse_env_value_of_random_strings(raw: str, kind: type) -> None:
    name = "EDGE_RUNTIME_FUZZ"
    try:
        value = parse_env_value(raw, name, kind)
    except Exception as exc:
        check_typed(exc, name, kind=ConfigError)
    else:
        assert isinstance(value, kind)


@FUZZ
@given(
    environ=st.dictionaries(
        st.sampled_from([f"EDGE_RUNTIME_{k.upper()}" for k in RuntimeConfig.keys()] + ["EDGE_RUNTIME_BOGUS", "HOME"]),
        st.text(max_size=20),
        max_size=5,
    )
)
def test_environment_settings_of_random_values(environ: dict[str, str]) -> None:
    def load() -> None:
        settings_ = environment_settings(environ)
        RuntimeConfig.from_mapping({"bundle": "b", "source": "synthetic", **settings_}, "environment")

    expect_typed(load, "EDGE_RUNTIME_", "environment", kind=ConfigError)


# -- codec: what tests/test_codec.py does not cover --------------------------------------------

_MASK = np.zeros((6, 8), np.uint8)
_MASK[2:4, 3:6] = 1
_FRAME = FrameResult(
    frame_id=3,
    timestamp=1764000000.5,
    results={
        "shape": Classification(np.array([1, 0]), np.array([0.75, 0.25]), ("square", "circle")),
        "people": Detections(np.array([[1.0, 2.0, 30.5, 40.25]]), np.array([0.9]), np.array([0]), ("person",)),
        "mask": Segmentation(_MASK, ("bg", "fg"), Segmentation.areas(_MASK, ("bg", "fg")), 64, 48),
        "box": Regression(np.array([0.1, 0.2, 0.3, 0.4]), ("x1", "y1", "x2", "y2")),
    },
    latency_ms={"trunk": 1.5, "total": 2.0},
)
VALID_PAYLOADS = {
    "msgpack": encode_frame(_FRAME, device="pi-01", epoch="e1", seq=7),
    "msgpack-f32": encode_frame(_FRAME, device="pi-01", epoch="e1", seq=7, float32_heads={"box", "people"}),
    "json": encode_frame(_FRAME, device="pi-01", epoch="e1", seq=7, mode="json"),
    "zstd": encode_frame(_FRAME, device="pi-01", epoch="e1", seq=7, compression="zstd"),
    "heartbeat": encode_heartbeat("pi-01", "e1", 8, 3.0, {"shape": {"a": [1, 2.5, None]}}),
}


@pytest.mark.parametrize("name", list(VALID_PAYLOADS))
def test_codec_payload_truncated_at_every_offset_raises_codec_error(name: str) -> None:
    payload = VALID_PAYLOADS[name]
    decode_payload(payload)  # the base decodes
    for cut in range(len(payload)):
        try:
            json.dumps(decode_payload(payload[:cut]), allow_nan=False)
        except Exception as exc:
            check_typed(exc, "payload", "body", "header", "msgpack", "JSON", "zstd", "frame", kind=CodecError)
        else:
            pytest.fail(f"{name} truncated at {cut} of {len(payload)} bytes decoded")


@pytest.mark.parametrize("name", list(VALID_PAYLOADS))
def test_codec_every_single_bit_flip_raises_codec_error_or_decodes(name: str) -> None:
    payload = VALID_PAYLOADS[name]
    step = max(1, len(payload) * 8 // 2000)  # at most ~2000 flips per payload
    for bit in range(0, len(payload) * 8, step):
        data = bytearray(payload)
        data[bit // 8] ^= 1 << (bit % 8)
        try:
            json.dumps(decode_payload(bytes(data)), allow_nan=False)  # a flip in a value may still decode
        except CodecError as exc:
            assert str(exc).strip()
        except Exception as exc:
            pytest.fail(f"{name}, bit {bit} flipped: {type(exc).__name__} escaped: {exc!r}")


# -- corrupted model files ----------------------------------------------------------------------


def _corruptions(data: bytes, seed: int) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(seed)
    out = [("empty", b""), ("random", rng.bytes(4096)), ("text", b"this is not a model\n")]
    for frac in (0.01, 0.1, 0.5, 0.9, 0.999):
        out.append((f"truncated-{frac}", data[: int(len(data) * frac)]))
    for i in range(6):  # a burst of bytes overwritten at a random place in the first part (the structure)
        flipped = bytearray(data)
        at = int(rng.integers(0, min(len(data), 4096) - 16))
        flipped[at : at + 16] = rng.bytes(16)
        out.append((f"overwritten-{at}-{i}", bytes(flipped)))
    return out


def _rehash(root: Path, rel: str) -> None:
    """Recompute ``files[rel]`` in the manifest, so that only the model loader sees the damage."""
    manifest_path = root / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][rel] = "sha256:" + hashlib.sha256((root / rel).read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest, indent=2))


def _check_corrupted_bundle(root: Path, rel: str, options: EngineOptions) -> list[str]:
    original = (root / rel).read_bytes()
    loaded = []
    for label, content in _corruptions(original, seed=len(original)):
        (root / rel).write_bytes(content)
        _rehash(root, rel)
        try:
            with Engine.from_bundle(root, options) as engine:
                loaded.append(label)  # damage in the weights can leave a loadable model: then it runs
                expect_typed(lambda: engine.infer(np.zeros((48, 64, 3), np.uint8)), "trunk", kind=ModelError)
        except Exception as exc:
            check_typed(exc, str(root / rel), rel, kind=(ModelError, BundleError))
    return loaded


def test_corrupted_onnx_trunk_raises_model_error_naming_the_file(demo_bundle: Path, tmp_path: Path) -> None:
    root = tmp_path / "bundle"
    shutil.copytree(demo_bundle, root)
    loaded = _check_corrupted_bundle(root, "trunk.fp32.onnx", EngineOptions(precision="fp32", threads=1))
    assert "empty" not in loaded and "random" not in loaded and "truncated-0.5" not in loaded, loaded


@pytest.mark.skipif(write_bundle is None, reason="no TFLite runtime: install edge-runtime[tflite]")
def test_corrupted_tflite_trunk_raises_model_error_naming_the_file(tmp_path: Path, tflite_models: Path) -> None:
    root = write_bundle(tmp_path / "bundle", tflite_models, "fp32")  # conftest's models, built once per session
    loaded = _check_corrupted_bundle(root, "tflite/trunk.fp32.tflite", EngineOptions(backend="tflite", threads=1))
    assert "empty" not in loaded and "random" not in loaded and "truncated-0.5" not in loaded, loaded
