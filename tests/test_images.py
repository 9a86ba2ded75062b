"""edge_runtime.frames.images: the one image reader (OpenCV, else Pillow, else numpy BMP), RGB or BGR.

The Pillow path is taken by replacing the module's ``_cv2`` seam with ``lambda: None``, the
numpy path by replacing ``_pillow`` too; nothing is uninstalled. Images are written with Pillow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edge_runtime.frames.images as images
from edge_runtime.errors import BackendUnavailableError
from edge_runtime.frames.frame import InvalidFrameError, optional_cv2
from edge_runtime.frames.images import ImageReadError, image_decoder, read_image

PILImage: Any = pytest.importorskip("PIL.Image", reason="writing test images needs Pillow (the images extra)")
cv2: Any = optional_cv2()

needs_cv2 = pytest.mark.skipif(cv2 is None, reason="OpenCV (the camera extra) is not installed")


@pytest.fixture(params=[pytest.param("opencv", marks=needs_cv2), "pillow"])
def decoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with each decoder: OpenCV, and Pillow (OpenCV hidden through the ``_cv2`` seam)."""
    if request.param == "pillow":
        monkeypatch.setattr(images, "_cv2", lambda: None)
    assert image_decoder() == request.param
    return str(request.param)


def hide_decoders(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither OpenCV nor Pillow: numpy alone, as on a bare device."""
    monkeypatch.setattr(images, "_cv2", lambda: None)
    monkeypatch.setattr(images, "_pillow", lambda: None)


def photo(height: int = 40, width: int = 56) -> np.ndarray:
    """A smooth RGB image with distinct channels (JPEG keeps it close), (H, W, 3) uint8."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // (width - 1), y * 255 // (height - 1), (x + y) * 2 % 200 + 20], axis=-1).astype(np.uint8)


def save(path: Path, array: np.ndarray, **options: Any) -> Path:
    PILImage.fromarray(array).save(path, **options)
    return path


def read_both(path: Path, monkeypatch: pytest.MonkeyPatch, color: str = "RGB") -> tuple[np.ndarray, np.ndarray]:
    """``path`` read through OpenCV, then through Pillow (OpenCV hidden)."""
    if cv2 is None:
        pytest.skip("comparing the two decoders needs OpenCV (the camera extra)")
    with_cv2 = read_image(path, color=color)
    with monkeypatch.context() as patch:
        patch.setattr(images, "_cv2", lambda: None)
        with_pillow = read_image(path, color=color)
    return with_cv2, with_pillow


def test_png_reads_the_same_through_opencv_and_pillow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rgb = photo()
    path = save(tmp_path / "a.png", rgb)

    with_cv2, with_pillow = read_both(path, monkeypatch)

    for image in (with_cv2, with_pillow):
        assert image.shape == rgb.shape and image.dtype == np.uint8 and image.flags.c_contiguous
        np.testing.assert_array_equal(image, rgb)  # RGB order, lossless


def test_jpeg_reads_the_same_through_opencv_and_pillow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rgb = photo()
    path = save(tmp_path / "a.jpg", rgb, quality=95)

    with_cv2, with_pillow = read_both(path, monkeypatch)

    assert with_cv2.shape == with_pillow.shape == rgb.shape
    difference = np.abs(with_cv2.astype(int) - with_pillow.astype(int))
    assert difference.mean() < 1.0 and difference.max() <= 8  # two libjpeg builds round differently
    assert np.abs(with_pillow.astype(int) - rgb).mean() < 3.0  # RGB order: a swap would be far off


def test_bgr_is_rgb_reversed_for_each_decoder(tmp_path: Path, decoder: str) -> None:
    rgb = photo()
    path = save(tmp_path / "a.png", rgb)

    bgr = read_image(path, color="BGR")

    np.testing.assert_array_equal(bgr, rgb[:, :, ::-1])
    assert bgr.flags.c_contiguous


def test_grey_and_rgba_pngs_become_three_channels(tmp_path: Path, decoder: str) -> None:
    rgb = photo()
    grey = save(tmp_path / "grey.png", rgb[:, :, 0])
    rgba = save(tmp_path / "rgba.png", np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)]))

    np.testing.assert_array_equal(read_image(grey), np.repeat(rgb[:, :, :1], 3, axis=2))
    np.testing.assert_array_equal(read_image(rgba), rgb)  # alpha dropped, not blended


def test_exif_orientation_is_applied_by_both_decoders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rgb = photo(height=24, width=40)
    exif = PILImage.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    path = save(tmp_path / "phone.jpg", rgb, quality=95, exif=exif.tobytes())

    with_cv2, with_pillow = read_both(path, monkeypatch)

    assert with_cv2.shape == with_pillow.shape == (40, 24, 3)
    assert np.abs(with_cv2.astype(int) - with_pillow.astype(int)).mean() < 1.0


def test_unreadable_files_say_why_and_name_the_file(tmp_path: Path, decoder: str) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_bytes(b"this is text, not a JPEG")

    for name, reason in (("empty.png", "empty file"), ("text.jpg", "not an image"), ("gone.png", "cannot read")):
        with pytest.raises(ImageReadError) as caught:
            read_image(tmp_path / name)
        assert str(caught.value).startswith(f"{tmp_path / name}: {reason}")
        assert caught.value.reason.startswith(reason) and caught.value.path == tmp_path / name
        assert isinstance(caught.value, InvalidFrameError)


def test_without_opencv_or_pillow_bmp_is_still_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rgb = photo()
    path = save(tmp_path / "a.bmp", rgb)
    hide_decoders(monkeypatch)

    assert image_decoder() == "numpy"
    np.testing.assert_array_equal(read_image(path), rgb)
    np.testing.assert_array_equal(read_image(path, color="BGR"), rgb[:, :, ::-1])


def test_without_opencv_or_pillow_a_jpeg_is_one_line_naming_the_file_and_extras(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save(tmp_path / "a.jpg", photo())
    hide_decoders(monkeypatch)

    with pytest.raises(BackendUnavailableError) as caught:
        read_image(path)

    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: decoding .jpg images needs OpenCV or Pillow")
    assert "pip install 'edge-runtime[camera]' (OpenCV) or 'edge-runtime[images]' (Pillow)" in message


def test_an_unknown_colour_order_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="color must be one of RGB, BGR, got 'GRAY'"):
        read_image(tmp_path / "a.png", color="GRAY")
