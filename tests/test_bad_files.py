"""One bad file or frame never stops a source: it is skipped with a warning naming it and counted
(``frames_skipped``); images over ``max_image_pixels`` are refused from their header."""

from __future__ import annotations

import logging
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_runtime.config import RuntimeConfig
from edge_runtime.frames import images
from edge_runtime.frames.capture import StreamSource
from edge_runtime.frames.frame import optional_cv2
from edge_runtime.frames.images import DEFAULT_MAX_IMAGE_PIXELS, ImageReadError, read_image
from edge_runtime.frames.png import encode_png
from edge_runtime.frames.sources import open_source

cv2: Any = optional_cv2()
needs_cv2 = pytest.mark.skipif(cv2 is None, reason="OpenCV (the camera extra) is not installed")


def _good(folder: Path, name: str) -> None:
    np.save(folder / name, np.full((8, 10, 3), 7, np.uint8))


def _run(spec: str, **kw: Any) -> tuple[list[int], int]:
    source = open_source(spec, **kw)
    with source:
        ids = [frame.frame_id for frame in source]
    return ids, source.frames_skipped


def _hide_decoders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "_cv2", lambda: None)
    monkeypatch.setattr(images, "_pillow", lambda: None)


def _npy_header(shape: tuple[int, ...], dtype: str = "|u1") -> bytes:
    header = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {shape}, }}"
    header += " " * (118 - len(header) - 10) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode()


@needs_cv2
def test_empty_npy_is_skipped_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _good(tmp_path, "a.npy")
    (tmp_path / "b.npy").write_bytes(b"")
    _good(tmp_path, "c.npy")
    with caplog.at_level(logging.WARNING):
        assert _run(str(tmp_path)) == ([0, 1], 1)
    assert "skipping b.npy: empty file" in caplog.text


def test_truncated_bitfields_bmp_without_decoders_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _hide_decoders(monkeypatch)
    (tmp_path / "a.png").write_bytes(encode_png(np.zeros((8, 8, 3), np.uint8)))
    bmp = b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, 1, 1, 1, 32, 3, 0, 0, 0, 0, 0)
    assert len(bmp) == 54
    (tmp_path / "b.bmp").write_bytes(bmp)
    with caplog.at_level(logging.WARNING):
        assert _run(str(tmp_path)) == ([0], 1)
    assert "skipping b.bmp: BMP is truncated" in caplog.text
    with pytest.raises(ImageReadError, match=r"b\.bmp"):  # read_image callers (calibration) get one line too
        read_image(tmp_path / "b.bmp")


def test_npy_claiming_a_huge_array_is_refused_from_its_header(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "a.npy").write_bytes(_npy_header((100_000, 100_000, 3)))  # 27.9 GiB claimed, 128 bytes on disk
    (tmp_path / "b.npy").write_bytes(_npy_header((4, 4, 3)) + b"\x01" * 10)  # truncated
    (tmp_path / "c.npy").write_bytes(_npy_header((4, 4, 3), "<f4") + b"\x00" * 192)  # not uint8
    _good(tmp_path, "d.npy")
    with caplog.at_level(logging.WARNING):
        assert _run(str(tmp_path)) == ([0], 3)
    assert "skipping a.npy: 100000x100000 image has 10000000000 pixels, over max_image_pixels" in caplog.text
    assert "skipping b.npy: truncated .npy" in caplog.text
    assert "skipping c.npy: array of dtype float32" in caplog.text


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares ``width`` x ``height`` (and no image data: nothing to decode)."""
    import zlib

    body = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(body)) + b"IHDR" + body + struct.pack(">I", zlib.crc32(b"IHDR" + body))
    return b"\x89PNG\r\n\x1a\n" + chunk


@pytest.fixture(params=[pytest.param("opencv", marks=needs_cv2), "pillow", "numpy"])
def decoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param != "opencv":
        monkeypatch.setattr(images, "_cv2", lambda: None)
    if request.param == "numpy":
        monkeypatch.setattr(images, "_pillow", lambda: None)
    return str(request.param)


def test_pixel_limit_from_headers_with_every_decoder(tmp_path: Path, decoder: str) -> None:
    big = tmp_path / "big.png"
    big.write_bytes(_png_header_only(20_000, 20_000))
    with pytest.raises(ImageReadError, match=r"big.png: 20000x20000 image has 400000000 pixels, over max_image_pixels"):
        read_image(big)
    small = tmp_path / "small.png"
    small.write_bytes(encode_png(np.zeros((30, 40, 3), np.uint8)))
    assert read_image(small, max_pixels=1200).shape == (30, 40, 3)
    with pytest.raises(ImageReadError, match="40x30 image has 1200 pixels"):
        read_image(small, max_pixels=1199)
    bmp = tmp_path / "small.bmp"
    row = b"\x00" * (40 * 3)
    bmp.write_bytes(
        b"BM" + struct.pack("<IHHI", 54 + len(row) * 30, 0, 0, 54)
        + struct.pack("<IiiHHIIiiII", 40, 40, 30, 1, 24, 0, 0, 0, 0, 0, 0) + row * 30
    )  # fmt: skip
    with pytest.raises(ImageReadError, match=r"small\.bmp: 40x30 image"):
        read_image(bmp, max_pixels=1000)


@needs_cv2
def test_pixel_limit_of_a_jpeg_folder_source_and_the_setting(tmp_path: Path) -> None:
    assert cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((30, 40, 3), np.uint8))
    assert cv2.imwrite(str(tmp_path / "b.jpg"), np.zeros((10, 10, 3), np.uint8))
    assert _run(str(tmp_path), max_image_pixels=500) == ([0], 1)
    assert images.image_size((tmp_path / "a.jpg").read_bytes()) == (40, 30)
    config = RuntimeConfig.load(flags={"bundle": "b", "source": "s"}, environ={})
    assert config.max_image_pixels == DEFAULT_MAX_IMAGE_PIXELS == 50_000_000
    flagged = RuntimeConfig.load(flags={"bundle": "b", "source": "s", "max_image_pixels": 1000}, environ={})
    assert flagged.max_image_pixels == 1000


@needs_cv2
def test_corrupt_frames_of_a_real_video_are_skipped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(20):
        writer.write(np.full((48, 64, 3), i * 10, np.uint8))
    writer.release()
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]
    assert len(starts) == 20
    for k in (5, 6, 7):  # wipe three frames' JPEG data
        data[starts[k] : starts[k + 1] - 20] = bytes(starts[k + 1] - 20 - starts[k])
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        ids, skipped = _run(str(path))
    assert skipped == 3 and len(ids) == 17  # before: the video ended at its first bad frame
    assert "skipping 3 frame(s) after frame 5: unreadable video data" in caplog.text


class _Capture:
    """A capture that gives good frames with a wrong-shaped one, a None and a failed read among them."""

    def __init__(self) -> None:
        good = np.zeros((12, 16, 3), np.uint8)
        self.reads: list[tuple[bool, Any]] = [
            (True, good), (True, np.zeros((12, 16, 2), np.uint8)), (True, good), (True, None),
            (True, np.zeros((5,), np.uint8)), (True, good.astype(np.float32)), (True, good),
        ]  # fmt: skip

    def isOpened(self) -> bool:
        return True

    def read(self) -> tuple[bool, Any]:
        return self.reads.pop(0) if self.reads else (True, np.zeros((12, 16, 3), np.uint8))

    def release(self) -> None:
        pass


def test_corrupt_frames_of_a_stream_are_skipped_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    from edge_runtime.frames.capture import ReconnectOptions

    capture = _Capture()
    source = StreamSource("camera:7", lambda: capture, reconnect=ReconnectOptions(0.001, 0.001), max_frames=4)
    with caplog.at_level(logging.WARNING), source:
        frames = list(source)
    assert [f.frame_id for f in frames] == [0, 1, 2, 3]
    assert source.frames_skipped == 4  # 2 channels, a None read, a 1-D array, float pixels
    assert "camera:7: skipping the frame after frame 0" in caplog.text


def test_the_daemon_counts_skipped_frames_and_applies_the_pixel_limit(demo_bundle: Path, tmp_path: Path) -> None:
    """The daemon opens its source with ``max_image_pixels`` and reports what the source skipped:
    in the heartbeat file, the status counters and the status line."""
    import json

    from edge_runtime.daemon.pipeline import Daemon

    frames = tmp_path / "frames"
    frames.mkdir()
    _good(frames, "a.npy")
    (frames / "b.npy").write_bytes(b"")  # unreadable: skipped
    np.save(frames / "c.npy", np.zeros((40, 50, 3), np.uint8))  # 2000 pixels: over the limit below
    _good(frames, "d.npy")
    flags = {
        "bundle": str(demo_bundle),
        "source": str(frames),
        "state_dir": str(tmp_path / "state"),
        "output": str(tmp_path / "out.jsonl"),
        "max_image_pixels": 1000,
    }
    daemon = Daemon(RuntimeConfig.load(flags=flags, environ={}))
    assert daemon.run(install_signals=False) == 0
    beat = json.loads((tmp_path / "state" / "heartbeat.json").read_text())
    assert (beat["frames"], beat["skipped"], beat["results"]) == (2, 2, 2)
    assert daemon.counters.status_fields(dropped=0, reporter=None)["skipped_frames"] == 2
    assert "2 skipped" in daemon.counters.status_line(dropped=0)
