"""Model files are routed by content (:mod:`exporter.model_format`), whatever their suffix."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import pytest

from edge_runtime.errors import ModelError
from exporter.cli import main
from exporter.model_format import ACCEPTED, HDF5_SIGNATURE, detect_format, guess_format

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "demo_multitask.onnx"


def _zip(path: Path, members: list[str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for member in members:
            archive.writestr(member, b"{}")
    return path


@pytest.mark.parametrize(
    ("name", "make", "expected"),
    [
        ("model.pt", lambda p: p.write_bytes(DEMO.read_bytes()), "onnx"),
        ("model.onnx", lambda p: p.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(32)), "tflite"),
        ("model.onnx", lambda p: p.write_bytes(HDF5_SIGNATURE + bytes(64)), "keras"),
        ("model.bin", lambda p: p.write_bytes(bytes(512) + HDF5_SIGNATURE + bytes(64)), "keras"),
        ("model.zip", lambda p: _zip(p, ["config.json", "metadata.json", "model.weights.h5"]), "keras"),
        ("model.keras", lambda p: _zip(p, ["archive/data.pkl", "archive/version"]), "torch"),
        ("model.tflite", lambda p: p.write_bytes(pickle.dumps({"a": 1}, protocol=2)), "torch"),
    ],
)
def test_the_content_decides(name: str, make: object, expected: str, tmp_path: Path) -> None:
    path = tmp_path / name
    make(path)  # type: ignore[operator]
    assert detect_format(path) == expected


def test_a_callable_is_pytorch() -> None:
    assert detect_format("mypkg.models:build_model") == "torch"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file, not a model"),
        (b"\xff\xfe not a model at all", "not a model file this exporter reads"),
        (None, "a zip archive that is neither a PyTorch nor a Keras model"),
    ],
)
def test_an_unknown_format_lists_the_accepted_ones(content: bytes | None, message: str, tmp_path: Path) -> None:
    path = tmp_path / "model.dat"
    if content is None:
        _zip(path, ["readme.txt"])
    else:
        path.write_bytes(content)
    with pytest.raises(ModelError, match=message) as info:
        detect_format(path)
    assert ACCEPTED in str(info.value)
    assert guess_format(path) is None


@pytest.mark.parametrize("suffix", [".onnx", ".tflite", ".pt", ".keras"])
def test_unrecognised_content_goes_by_a_known_suffix(suffix: str, tmp_path: Path) -> None:
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"\xff\xfe not a model at all")
    assert detect_format(path) == guess_format(path) == {".pt": "torch", ".keras": "keras"}.get(suffix, suffix[1:])


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("model", "not a model file this exporter reads (accepted: {accepted})"),
        ("model.tflite", "not a TFLite model (no 'TFL3' file identifier)"),
    ],
)
def test_split_of_an_unknown_file_is_one_line(
    name: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / name
    path.write_bytes(b"\xff" * 100)
    assert main(["split", str(path), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"edge-export: error: {path}: {message.format(accepted=ACCEPTED)}"]
    assert not (tmp_path / "out").exists()
