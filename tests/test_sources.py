"""Frame sources (edge_runtime.frames.sources, .source, .synthetic, .folders, .capture): synthetic frames,
image folders, video files, cameras and streams.

Image and video files are written by the tests (OpenCV's PNG/BMP encoders or Pillow, an MJPG .avi);
the camera tests use an index that does not exist and scripted fake captures.
"""

from __future__ import annotations

import itertools
import logging
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_runtime.errors import BackendUnavailableError, ConfigError
from edge_runtime.frames.capture import ReconnectOptions, StreamSource, check_gstreamer
from edge_runtime.frames.frame import Frame, optional_cv2
from edge_runtime.frames.images import read_bmp
from edge_runtime.frames.source import FrameSource
from edge_runtime.frames.sources import open_source
from edge_runtime.frames.synthetic import SyntheticSource

cv2: Any = optional_cv2()  # the camera extra is optional: None without it

needs_cv2 = pytest.mark.skipif(cv2 is None, reason="OpenCV (the camera extra) is not installed")
TINY_BACKOFF = ReconnectOptions(initial_delay_s=0.01, max_delay_s=0.04)


@pytest.fixture
def no_cv2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import cv2`` fail, as on a numpy-only device."""
    monkeypatch.setitem(sys.modules, "cv2", None)


@pytest.fixture
def no_pillow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import PIL.ImageOps`` fail, as without the images (or export) extra."""
    monkeypatch.setitem(sys.modules, "PIL", None)
    monkeypatch.setitem(sys.modules, "PIL.ImageOps", None)  # already imported by an earlier test, maybe


def write_images(folder: Path, count: int, suffix: str = ".png", size: tuple[int, int] = (24, 16)) -> list[int]:
    """``img_000.png``… each a constant BGR image whose blue value is ``10 * (i + 1)``; returns the values."""
    assert cv2 is not None
    folder.mkdir(parents=True, exist_ok=True)
    values = [10 * (i + 1) for i in range(count)]
    # Written in reverse so that creation order differs from name order.
    for i in reversed(range(count)):
        image = np.zeros((size[1], size[0], 3), np.uint8)
        image[:, :, 0] = values[i]
        assert cv2.imwrite(str(folder / f"img_{i:03d}{suffix}"), image)
    return values


def write_video(path: Path, frames: int, size: tuple[int, int] = (64, 48)) -> None:
    """An MJPG .avi whose frame ``i`` is uniformly grey ``20 * i``; skips the test if OpenCV cannot write it."""
    assert cv2 is not None
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, size)
    if not writer.isOpened():
        pytest.skip("this OpenCV cannot write MJPG .avi files (no video backend)")
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), 20 * i, np.uint8))
    writer.release()
    check = cv2.VideoCapture(str(path))
    opened = check.isOpened()
    check.release()
    if not opened:
        pytest.skip("this OpenCV wrote an .avi that it cannot read back (no video backend)")


def collect(source: FrameSource) -> list[Frame]:
    with source:
        return list(source)


# --------------------------------------------------------------------------- synthetic


def test_synthetic_frames_count_ids_shape_and_colour() -> None:
    frames = collect(open_source("synthetic", max_frames=5))

    assert [f.frame_id for f in frames] == [0, 1, 2, 3, 4]
    assert all(f.image.shape == (480, 640, 3) and f.image.dtype == np.uint8 for f in frames)
    assert {f.color for f in frames} == {"RGB"}
    assert {f.source for f in frames} == {"synthetic:640x480"}
    assert all(a.timestamp <= b.timestamp for a, b in itertools.pairwise(frames))
    assert abs(frames[-1].timestamp - time.time()) < 5


@pytest.mark.parametrize(
    ("spec", "options", "shape"),
    [
        ("synthetic:320x240", {}, (240, 320, 3)),
        ("SYNTHETIC:33x7", {}, (7, 33, 3)),
        ("synthetic", {"width": 100, "height": 50}, (50, 100, 3)),
        ("synthetic:100x50", {"width": 100}, (50, 100, 3)),
        ("synthetic:1x1", {}, (1, 1, 3)),
        ("synthetic:2x3", {}, (3, 2, 3)),
    ],
)
def test_synthetic_sizes(spec: str, options: dict[str, Any], shape: tuple[int, ...]) -> None:
    frames = collect(open_source(spec, max_frames=3, **options))

    assert [f.image.shape for f in frames] == [shape] * 3


def test_synthetic_frames_are_deterministic_and_move() -> None:
    first = collect(open_source("synthetic:160x120", max_frames=4))
    again = collect(open_source("synthetic:160x120", max_frames=4))

    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
    assert not np.array_equal(first[0].image, first[1].image)
    # The shapes are there: saturated red, green and blue pixels on a grey background.
    image = first[0].image.astype(int)
    for channel in range(3):
        others = [c for c in range(3) if c != channel]
        assert ((image[:, :, channel] > 180) & (image[:, :, others].max(axis=2) < 80)).sum() > 20


def test_synthetic_fps_paces_frames() -> None:
    start = time.monotonic()
    frames = collect(open_source("synthetic:32x32", fps=50, max_frames=6))

    assert len(frames) == 6
    assert time.monotonic() - start >= 5 / 50 - 0.01


def test_max_frames_zero_gives_nothing_and_closed_sources_stop() -> None:
    assert collect(open_source("synthetic", max_frames=0)) == []
    source = open_source("synthetic:8x8")
    next(source)
    source.close()
    source.close()  # twice is fine
    assert source.closed
    with pytest.raises(StopIteration):
        next(source)


def test_synthetic_render_is_reusable() -> None:
    source = SyntheticSource(64, 48)

    np.testing.assert_array_equal(source.render(7), source.render(7))
    assert source.render(7) is not source.render(7)


# --------------------------------------------------------------------------- image folders


@needs_cv2
def test_image_folder_in_name_order_then_ends(tmp_path: Path) -> None:
    values = write_images(tmp_path / "imgs", 5)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    (tmp_path / "imgs" / "sub").mkdir()

    frames = collect(open_source(str(tmp_path / "imgs")))

    assert [int(f.image[0, 0, 0]) for f in frames] == values
    assert [f.frame_id for f in frames] == list(range(5))
    assert {f.color for f in frames} == {"BGR"}
    assert frames[0].image.shape == (16, 24, 3)
    assert frames[0].source == f"folder:{tmp_path / 'imgs'}"


@needs_cv2
def test_image_folder_loops_and_max_frames_stops_it(tmp_path: Path) -> None:
    values = write_images(tmp_path, 3)

    frames = collect(open_source(str(tmp_path), loop=True, max_frames=8))

    assert [int(f.image[0, 0, 0]) for f in frames] == (values * 3)[:8]
    assert [f.frame_id for f in frames] == list(range(8))


@needs_cv2
def test_image_folder_skips_unreadable_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    values = write_images(tmp_path, 3)
    (tmp_path / "img_001b.png").write_bytes(b"\x89PNG broken")

    with caplog.at_level(logging.WARNING, logger="edge_runtime.frames.folders"):
        frames = collect(open_source(str(tmp_path)))

    assert [int(f.image[0, 0, 0]) for f in frames] == values
    assert "skipping img_001b.png" in caplog.text


@needs_cv2
def test_a_single_image_file_is_a_one_frame_source(tmp_path: Path) -> None:
    write_images(tmp_path, 1, suffix=".jpg")

    frames = collect(open_source(str(tmp_path / "img_000.jpg")))

    assert len(frames) == 1
    assert frames[0].source.startswith("image:")


@needs_cv2
@pytest.mark.parametrize(
    ("shape", "name"), [((5, 7, 3), "odd width: padded rows"), ((6, 9), "grey: 8-bit palette"), ((4, 3, 4), "BGRA")]
)
def test_numpy_bmp_decoder_matches_opencv(tmp_path: Path, shape: tuple[int, ...], name: str) -> None:
    assert cv2 is not None
    image = np.random.default_rng(len(shape)).integers(0, 256, shape, dtype=np.uint8)
    path = tmp_path / "x.bmp"
    assert cv2.imwrite(str(path), image)

    np.testing.assert_array_equal(read_bmp(path), cv2.imread(str(path), cv2.IMREAD_COLOR), err_msg=name)


@needs_cv2
def test_without_opencv_or_pillow_bmp_and_npy_folders_still_work(tmp_path: Path, no_cv2: None, no_pillow: None) -> None:
    values = write_images(tmp_path, 2, suffix=".bmp")
    np.save(tmp_path / "img_002.npy", np.full((16, 24, 3), 99, np.uint8))

    frames = collect(open_source(str(tmp_path)))

    assert [(int(f.image[0, 0, 0]), f.color) for f in frames] == [(values[0], "BGR"), (values[1], "BGR"), (99, "RGB")]


def test_without_opencv_png_folders_are_read_with_pillow(tmp_path: Path, no_cv2: None) -> None:
    pil_image: Any = pytest.importorskip("PIL.Image", reason="Pillow (the images extra) is not installed")
    rgb = [np.full((16, 24, 3), (10 * (i + 1), 50, 200), np.uint8) for i in range(3)]
    for i, image in enumerate(rgb):
        pil_image.fromarray(image).save(tmp_path / f"img_{i:03d}.png")
    (tmp_path / "img_001b.png").write_bytes(b"\x89PNG broken")

    frames = collect(open_source(str(tmp_path)))

    assert [f.color for f in frames] == ["BGR"] * 3  # as with OpenCV
    for frame, image in zip(frames, rgb, strict=True):
        np.testing.assert_array_equal(frame.image, image[:, :, ::-1])


def test_without_opencv_or_pillow_jpeg_folders_name_the_file_and_extras(
    tmp_path: Path, no_cv2: None, no_pillow: None
) -> None:
    np.save(tmp_path / "img_000.npy", np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "img_001.jpg").write_bytes(b"\xff\xd8\xff not decoded: no decoder is installed")

    with pytest.raises(BackendUnavailableError) as caught:
        open_source(str(tmp_path))

    message = str(caught.value)
    assert "\n" not in message
    assert f"{tmp_path / 'img_001.jpg'}: decoding .jpg images needs OpenCV or Pillow" in message
    assert "pip install 'edge-runtime[camera]' (OpenCV) or 'edge-runtime[images]' (Pillow)" in message


# --------------------------------------------------------------------------- video files


@needs_cv2
def test_video_file_frames_then_end(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    write_video(path, 12)

    frames = collect(open_source(str(path)))

    assert len(frames) == 12
    assert [f.frame_id for f in frames] == list(range(12))
    assert {f.color for f in frames} == {"BGR"}
    assert frames[0].image.shape == (48, 64, 3)
    means = [float(f.image.mean()) for f in frames]
    np.testing.assert_allclose(means, [20 * i for i in range(12)], atol=4)  # JPEG-compressed greys


@needs_cv2
def test_video_file_loops(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    write_video(path, 4)

    frames = collect(open_source(str(path), loop=True, max_frames=10))

    assert [f.frame_id for f in frames] == list(range(10))
    np.testing.assert_allclose([f.image.mean() for f in frames], [20 * (i % 4) for i in range(10)], atol=4)


# --------------------------------------------------------------------------- bad specs


def make_bad_paths(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "empty").mkdir()
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("x")
    (tmp_path / "clip.avi").write_bytes(b"this is not a video")
    return {"empty": tmp_path / "empty", "texts": tmp_path / "texts", "clip": tmp_path / "clip.avi"}


@pytest.mark.parametrize(
    ("spec", "options", "match"),
    [
        ("", {}, "non-empty"),
        ("   ", {}, "non-empty"),
        ("/no/such/folder", {}, r"'/no/such/folder': no such file or folder; SOURCE is synthetic"),
        ("synthtic", {}, "did you mean 'synthetic'"),
        ("synthetic:abc", {}, "synthetic:WIDTHxHEIGHT"),
        ("synthetic:0x10", {}, "1..16384"),
        ("synthetic:64x48", {"width": 32}, "disagrees with width=32"),
        ("camera:", {}, "camera:N"),
        ("camera:front", {}, "camera:N"),
        ("gst:", {}, "needs a pipeline"),
        ("synthetic", {"fps": 0}, "fps must be a positive number"),
        ("synthetic", {"fps": float("nan")}, "fps must be a positive number"),
        ("synthetic", {"max_frames": -1}, "max_frames must be an integer >= 0"),
        ("synthetic", {"width": 0}, "width must be an integer >= 1"),
        ("{empty}", {}, "image folder .*empty has no images"),
        ("{texts}", {}, "image folder .*texts has no images"),
    ],
)
def test_bad_sources_are_config_errors(tmp_path: Path, spec: str, options: dict[str, Any], match: str) -> None:
    spec = spec.format(**make_bad_paths(tmp_path))

    with pytest.raises(ConfigError, match=match):
        open_source(spec, **options)


@needs_cv2
def test_a_file_that_is_not_a_video_is_a_config_error(tmp_path: Path) -> None:
    path = make_bad_paths(tmp_path)["clip"]

    with pytest.raises(ConfigError, match=re.escape(str(path))):
        open_source(str(path))


@pytest.mark.parametrize(("initial", "maximum"), [(0, 1), (-1, 1), (1, 0.5), (float("inf"), float("inf"))])
def test_bad_reconnect_options(initial: float, maximum: float) -> None:
    with pytest.raises(ConfigError, match="reconnect"):
        ReconnectOptions(initial, maximum)


@pytest.mark.parametrize(
    "spec", ["camera:0", "rtsp://cam.local/stream", "http://cam.local/video.mjpg", "gst:videotestsrc ! appsink"]
)
def test_sources_that_need_opencv_name_the_extra(spec: str, no_cv2: None) -> None:
    with pytest.raises(BackendUnavailableError, match=r"pip install 'edge-runtime\[camera\]'"):
        open_source(spec)


@needs_cv2
def test_video_files_need_opencv_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "clip.avi"
    write_video(path, 2)
    monkeypatch.setitem(sys.modules, "cv2", None)

    with pytest.raises(BackendUnavailableError, match=r"edge-runtime\[camera\]"):
        open_source(str(path))


# --------------------------------------------------------------------------- cameras and streams


@needs_cv2
def test_missing_camera_retries_with_backoff_and_close_stops_it(caplog: pytest.LogCaptureFixture) -> None:
    source = open_source("camera:97", reconnect=TINY_BACKOFF)  # returns at once: opened on the first read
    result: list[Any] = []
    reader = threading.Thread(target=lambda: result.append(next(source, "ended")))

    with caplog.at_level(logging.WARNING, logger="edge_runtime.frames.capture"):
        reader.start()
        deadline = time.monotonic() + 5
        while caplog.text.count("retrying") < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        source.close()
        reader.join(timeout=2)

    assert not reader.is_alive()
    assert time.monotonic() - started < 1.0
    assert result == ["ended"]
    delays = [float(d) for d in re.findall(r"retrying in ([\d.]+) s", caplog.text)]
    assert delays[:5] == [0.01, 0.02, 0.04, 0.04, 0.04]  # doubling, capped
    assert "camera:97: cannot open" in caplog.text


class FakeCapture:
    """A capture that plays a script: True = a frame, False = a failed read, "block" = wait for ``gate``."""

    def __init__(self, script: list[Any], gate: threading.Event | None = None, opened: bool = True) -> None:
        self.script = script
        self.gate = gate
        self.opened = opened
        self.reads = 0
        self.grabs = 0
        self.released = 0
        self.reading = threading.Event()

    def isOpened(self) -> bool:  # OpenCV's spelling
        return self.opened

    def read(self) -> tuple[bool, np.ndarray | None]:
        self.reads += 1
        step = self.script.pop(0) if self.script else True
        if step == "block":
            self.reading.set()
            assert self.gate is not None
            self.gate.wait(5)
            step = True
        return (True, np.full((4, 6, 3), self.reads, np.uint8)) if step else (False, None)

    def grab(self) -> bool:
        self.grabs += 1
        return True

    def release(self) -> None:
        self.released += 1


def scripted_opener(captures: list[FakeCapture]) -> Iterator[FakeCapture]:
    yield from captures
    while True:
        yield FakeCapture([], opened=False)


def test_a_lost_stream_reconnects_and_frame_ids_continue(caplog: pytest.LogCaptureFixture) -> None:
    first = FakeCapture([True, True, False])
    second = FakeCapture([True, True])
    opener = scripted_opener([FakeCapture([], opened=False), first, second])
    source = StreamSource("camera:9", lambda: next(opener), reconnect=TINY_BACKOFF, max_frames=4)

    with caplog.at_level(logging.INFO, logger="edge_runtime.frames.capture"):
        frames = collect(source)

    assert [f.frame_id for f in frames] == [0, 1, 2, 3]
    assert [f.source for f in frames] == ["camera:9"] * 4
    assert first.released == 1 and second.released == 1
    assert "camera:9: cannot open; retrying in 0.01 s (attempt 1)" in caplog.text
    assert "read failed (stream lost?); retrying in 0.01 s (attempt 1)" in caplog.text
    assert "reconnected after 1 failed attempt(s)" in caplog.text


def test_close_during_a_blocking_read_returns_at_once_and_releases_once() -> None:
    gate = threading.Event()
    capture = FakeCapture(["block"], gate=gate)
    source = StreamSource("rtsp://cam/stream", lambda: capture, reconnect=TINY_BACKOFF)
    reader = threading.Thread(target=lambda: next(source, None))
    reader.start()
    assert capture.reading.wait(2)

    started = time.monotonic()
    source.close()
    closing_took = time.monotonic() - started
    assert capture.released == 0  # the reader still holds it
    gate.set()
    reader.join(2)

    assert closing_took < 0.1
    assert not reader.is_alive()
    assert capture.released == 1
    with pytest.raises(StopIteration):
        next(source)


def test_live_fps_drops_early_frames_instead_of_queueing_them() -> None:
    capture = FakeCapture([])
    start = time.monotonic()

    frames = collect(StreamSource("camera:1", lambda: capture, fps=25, max_frames=4))

    assert len(frames) == 4
    assert time.monotonic() - start >= 3 / 25 - 0.01
    assert capture.grabs > 0  # dropped without decoding


def test_stream_descriptions_hide_passwords() -> None:
    if cv2 is None:
        pytest.skip("OpenCV (the camera extra) is not installed")
    with open_source("rtsp://admin:s3cret@10.0.0.7:554/live", reconnect=TINY_BACKOFF) as source:
        assert source.description == "rtsp://admin:***@10.0.0.7:554/live"
        assert source.live


def test_gst_without_gstreamer_is_a_clear_error() -> None:
    class OpenCVWithoutGStreamer:
        __version__ = "4.10.0"

        @staticmethod
        def getBuildInformation() -> str:  # OpenCV's spelling
            return "  Video I/O:\n    FFMPEG:                      YES\n    GStreamer:                   NO\n"

    with pytest.raises(BackendUnavailableError, match=r"built without it .*'GStreamer: NO'.*Jetson.*system OpenCV"):
        check_gstreamer(OpenCVWithoutGStreamer())


@needs_cv2
def test_gst_source_with_the_installed_opencv() -> None:
    assert cv2 is not None
    if re.search(r"GStreamer:\s*YES", cv2.getBuildInformation()):
        pytest.skip("the installed OpenCV has GStreamer: the 'without GStreamer' error cannot happen here")

    with pytest.raises(BackendUnavailableError, match="GStreamer"):
        open_source("gst:videotestsrc ! videoconvert ! appsink")
