"""Image files as a frame source: a folder of images (or one image), decoded by :func:`read_image`.

``SOURCE`` ``path/to/folder`` reads its images in sorted file-name order (jpg, png, bmp, tif,
webp, ppm, pgm, npy; BGR, an ``.npy`` array is RGB or GRAY), ``path/to/image.png`` that one
image. A file that cannot be decoded (empty, truncated, corrupt, an ``.npy`` that is not uint8
pixels) or is over ``max_pixels`` (checked from the header before decoding: ``.npy``, PNG, BMP,
JPEG…) is skipped with a warning naming it and counted in ``frames_skipped``; it never stops the
source. Images are decoded by
:func:`edge_runtime.frames.images.read_image`: OpenCV (``pip install 'edge-runtime[camera]'``),
else Pillow (``pip install 'edge-runtime[images]'``); with neither, only ``.npy``,
``.png`` and uncompressed ``.bmp`` are read, and a folder with other images is refused up front.

Example::

    paths = sorted(Path("calibration").glob("*.png"))
    with ImageFolderSource(paths, "folder:calibration", loop=True, max_frames=500) as source:
        for frame in source:
            ...  # frame.color == "BGR"
"""

from __future__ import annotations

import functools
import io
import logging
from pathlib import Path

import numpy as np

from edge_runtime.errors import BackendUnavailableError
from edge_runtime.frames.frame import InvalidFrameError, frame_channels
from edge_runtime.frames.images import (
    DEFAULT_MAX_IMAGE_PIXELS,
    NUMPY_IMAGE_SUFFIXES,
    ImageReadError,
    check_pixels,
    read_image,
    require_image_decoder,
)
from edge_runtime.frames.source import FrameSource, color_of

logger = logging.getLogger(__name__)

#: Image files a folder source reads (case-insensitive).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".npy")


class ImageFolderSource(FrameSource):
    """The images of a folder (or one image), in sorted name order; skips files it cannot decode.

    Raises :class:`~edge_runtime.errors.BackendUnavailableError` naming the first file and the
    extras when some image needs OpenCV or Pillow and neither is installed.
    """

    def __init__(
        self,
        paths: list[Path],
        description: str,
        *,
        loop: bool = False,
        fps: float | None = None,
        max_frames: int | None = None,
        max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> None:
        super().__init__(description, fps=fps, max_frames=max_frames)
        self.paths = paths
        self.loop = loop
        self.max_pixels = max_pixels
        needs = next((p for p in paths if p.suffix.lower() not in (*NUMPY_IMAGE_SUFFIXES, ".npy")), None)
        if needs is not None:
            require_image_decoder(needs, f"{description}: ")
        self._index = 0
        self._decoded_this_pass = 0

    def _decode(self, path: Path) -> tuple[np.ndarray, str]:
        if path.suffix.lower() == ".npy":
            image = read_npy_image(path, self.max_pixels)
            return image, color_of(image, "RGB")
        return read_image(path, color="BGR", max_pixels=self.max_pixels), "BGR"

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
            except BackendUnavailableError:
                raise  # nothing installed decodes it: a setup problem, refused up front
            except Exception as exc:  # one bad file is one lost frame, never the end of the source
                reason = exc.reason if isinstance(exc, ImageReadError) else _reason(exc)
                self.skip(path.name, reason)
                continue
            self._decoded_this_pass += 1
            return image, color
        return None


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, (InvalidFrameError, OSError)):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


#: Longest .npy header read (numpy writes 128 bytes or a multiple of 64 for long shapes).
_MAX_NPY_HEADER = 1 << 16


@functools.lru_cache(maxsize=32)
def _npy_header(head: bytes) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` of an .npy file's header bytes; raises as numpy does."""
    stream = io.BytesIO(head)
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        found = np.lib.format.read_array_header_1_0(stream)
    else:
        found = np.lib.format.read_array_header_2_0(stream)
    if stream.read(1):
        raise ValueError("header longer than its length field")
    return found


def read_npy_image(path: Path, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """An ``.npy`` file of uint8 pixels, ``(H, W)`` or ``(H, W, C)``; its header is checked (dtype,
    shape, ``max_pixels``, the data's length) before any pixel is read, so a header that claims a
    huge array allocates nothing. Raises :class:`ImageReadError` naming the file."""
    try:
        with path.open("rb") as file:
            start = file.read(12)
            if not start:
                raise ImageReadError(path, "empty file")
            # the whole header (magic, version, length, dict), parsed once per distinct header:
            # the frames of a folder share one, and parsing it costs as much as reading the pixels
            length = (
                10 + int.from_bytes(start[8:10], "little")
                if start[6:7] == b"\x01"
                else 12 + int.from_bytes(start[8:12], "little")
            )
            file.seek(0)
            try:
                shape, fortran, dtype = _npy_header(file.read(min(length, _MAX_NPY_HEADER)))
            except (ValueError, EOFError, SyntaxError) as exc:
                raise ImageReadError(path, f"not a .npy array ({_reason(exc)})") from None
            if dtype != np.uint8:
                raise ImageReadError(path, f"array of dtype {dtype}; expected uint8 pixels")
            try:
                frame_channels(tuple(shape))
            except InvalidFrameError as exc:
                raise ImageReadError(path, str(exc)) from None
            check_pixels(path, int(shape[1]), int(shape[0]), max_pixels)
            pixels = np.empty(int(np.prod(shape)), np.uint8)
            got = file.readinto(pixels.data)
    except OSError as exc:
        raise ImageReadError(path, f"cannot read ({exc.strerror or exc})") from None
    if got != pixels.size:
        raise ImageReadError(path, f"truncated .npy: {got} bytes of pixels, its header says {pixels.size}")
    return np.ascontiguousarray(pixels.reshape(shape, order="F" if fortran else "C"))
