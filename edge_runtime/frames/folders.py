"""Image files: a folder of images (or one image) as a frame source, and a numpy BMP decoder.

``SOURCE`` ``path/to/folder`` reads its images in sorted file-name order (jpg, png, bmp, tif,
webp, ppm, pgm, npy; BGR, an ``.npy`` array is RGB or GRAY), ``path/to/image.png`` that one
image. Files that cannot be decoded are skipped with a warning. OpenCV decodes them;
without it (``pip install 'edge-runtime[camera]'``) only ``.npy`` and uncompressed ``.bmp``
(:func:`read_bmp`) are read.

Example::

    paths = sorted(Path("calibration").glob("*.png"))
    with ImageFolderSource(paths, "folder:calibration", loop=True, max_frames=500) as source:
        for frame in source:
            ...  # frame.color == "BGR"
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import numpy as np

from edge_runtime.errors import BackendUnavailableError
from edge_runtime.frames.frame import CAMERA_EXTRA_HINT, InvalidFrameError, frame_channels, optional_cv2
from edge_runtime.frames.source import FrameSource, color_of

logger = logging.getLogger(__name__)

#: Image files a folder source reads (case-insensitive).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".npy")
#: Image files numpy decodes without OpenCV.
NUMPY_IMAGE_SUFFIXES = (".npy", ".bmp")


def read_bmp(path: str | Path) -> np.ndarray:
    """Decode an uncompressed BMP (8-bit palette, 24 or 32 bit) with numpy: (H, W, 3) uint8 BGR.

    Like ``cv2.imread(path, cv2.IMREAD_COLOR)``; raises :class:`InvalidFrameError` for
    compressed or unusual BMPs (use OpenCV for those).
    """
    data = Path(path).read_bytes()
    if len(data) < 54 or data[:2] != b"BM":
        raise InvalidFrameError(f"{path}: not a BMP file")
    (offset,) = struct.unpack_from("<I", data, 10)
    header, width, height, _planes, bits, compression = struct.unpack_from("<IiiHHI", data, 14)
    (colors_used,) = struct.unpack_from("<I", data, 46)
    if header < 40 or width <= 0 or height == 0:
        raise InvalidFrameError(f"{path}: unsupported BMP header (size {header}, {width}x{height})")
    if compression not in (0, 3) or bits not in (8, 24, 32) or (compression == 3 and bits != 32):
        raise InvalidFrameError(
            f"{path}: BMP with {bits} bits per pixel and compression {compression} needs OpenCV: {CAMERA_EXTRA_HINT}"
        )
    if compression == 3:  # BI_BITFIELDS: only the standard BGRA byte order
        masks = struct.unpack_from("<III", data, 54)
        if masks != (0x00FF0000, 0x0000FF00, 0x000000FF):
            raise InvalidFrameError(f"{path}: BMP with colour masks {[hex(m) for m in masks]} needs OpenCV")
    rows = abs(height)
    stride = (width * bits + 31) // 32 * 4
    if offset + stride * rows > len(data):
        raise InvalidFrameError(f"{path}: BMP is truncated ({len(data)} bytes for {width}x{rows}x{bits} bits)")
    pixels = np.frombuffer(data, np.uint8, count=stride * rows, offset=offset).reshape(rows, stride)
    if bits == 8:
        count = colors_used or 256
        palette = np.frombuffer(data, np.uint8, count=4 * count, offset=14 + header).reshape(count, 4)[:, :3]
        image = palette[np.minimum(pixels[:, :width], count - 1)]
    else:
        image = pixels[:, : width * bits // 8].reshape(rows, width, bits // 8)[:, :, :3]
    if height > 0:  # bottom-up rows
        image = image[::-1]
    return np.ascontiguousarray(image)


class ImageFolderSource(FrameSource):
    """The images of a folder (or one image), in sorted name order; skips files it cannot decode."""

    def __init__(
        self,
        paths: list[Path],
        description: str,
        *,
        loop: bool = False,
        fps: float | None = None,
        max_frames: int | None = None,
    ) -> None:
        super().__init__(description, fps=fps, max_frames=max_frames)
        self.paths = paths
        self.loop = loop
        self._cv2 = optional_cv2()
        if self._cv2 is None:
            needs = next((p for p in paths if p.suffix.lower() not in NUMPY_IMAGE_SUFFIXES), None)
            if needs is not None:
                raise BackendUnavailableError(
                    f"{description}: decoding {needs.suffix} images ({needs.name}) needs OpenCV, which is not "
                    f"installed: {CAMERA_EXTRA_HINT} (without it only .npy and uncompressed .bmp are read)"
                )
        self._index = 0
        self._decoded_this_pass = 0

    def _decode(self, path: Path) -> tuple[np.ndarray, str]:
        suffix = path.suffix.lower()
        if suffix == ".npy":
            image = np.load(path, allow_pickle=False)
            if image.dtype != np.uint8:
                raise InvalidFrameError(f"array of dtype {image.dtype}; expected uint8 pixels")
            frame_channels(image.shape)
            return image, color_of(image, "RGB")
        if self._cv2 is None:
            return read_bmp(path), "BGR"
        image = self._cv2.imdecode(np.fromfile(path, np.uint8), self._cv2.IMREAD_COLOR)
        if image is None:
            raise InvalidFrameError("OpenCV cannot decode it")
        return image, "BGR"

    def _capture(self) -> tuple[np.ndarray, str] | None:
        while not self._closed.is_set():
            if self._index >= len(self.paths):
                if not (self.loop and self._decoded_this_pass):
                    return None
                self._index, self._decoded_this_pass = 0, 0
            path = self.paths[self._index]
            self._index += 1
            try:
                image, color = self._decode(path)
            except (OSError, ValueError, InvalidFrameError) as exc:
                logger.warning("%s: skipping %s: %s", self.description, path.name, exc)
                continue
            self._decoded_this_pass += 1
            return image, color
        return None
