"""Image files as a frame source: a folder of images (or one image), decoded by :func:`read_image`.

``SOURCE`` ``path/to/folder`` reads its images in sorted file-name order (jpg, png, bmp, tif,
webp, ppm, pgm, npy; BGR, an ``.npy`` array is RGB or GRAY), ``path/to/image.png`` that one
image. Files that cannot be decoded are skipped with a warning. Images are decoded by
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

import logging
from pathlib import Path

import numpy as np

from edge_runtime.frames.frame import InvalidFrameError, frame_channels
from edge_runtime.frames.images import NUMPY_IMAGE_SUFFIXES, ImageReadError, read_image, require_image_decoder
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
    ) -> None:
        super().__init__(description, fps=fps, max_frames=max_frames)
        self.paths = paths
        self.loop = loop
        needs = next((p for p in paths if p.suffix.lower() not in (*NUMPY_IMAGE_SUFFIXES, ".npy")), None)
        if needs is not None:
            require_image_decoder(needs, f"{description}: ")
        self._index = 0
        self._decoded_this_pass = 0

    def _decode(self, path: Path) -> tuple[np.ndarray, str]:
        if path.suffix.lower() == ".npy":
            image = np.load(path, allow_pickle=False)
            if image.dtype != np.uint8:
                raise InvalidFrameError(f"array of dtype {image.dtype}; expected uint8 pixels")
            frame_channels(image.shape)
            return image, color_of(image, "RGB")
        return read_image(path, color="BGR"), "BGR"

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
                reason = exc.reason if isinstance(exc, ImageReadError) else exc
                logger.warning("%s: skipping %s: %s", self.description, path.name, reason)
                continue
            self._decoded_this_pass += 1
            return image, color
        return None
