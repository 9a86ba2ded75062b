"""Image files → pixel arrays: the one image reader of the project (image-folder sources, calibration folders).

:func:`read_image` decodes a file to an ``(H, W, 3)`` uint8 array, RGB (or BGR) order, with the
first decoder that is installed:

1. OpenCV (``pip install 'edge-runtime[camera]'``, opencv-python-headless);
2. Pillow (``pip install 'edge-runtime[images]'``; the ``export`` extra brings it too), with the
   EXIF orientation applied as OpenCV does;
3. numpy alone: PNG (:func:`~edge_runtime.frames.png.decode_png`: 8 and 16 bits, non-interlaced;
   a ``.png`` file or any file that starts with the PNG signature) and uncompressed BMP
   (:func:`read_bmp`).

An image over ``max_pixels`` (width × height; :data:`DEFAULT_MAX_IMAGE_PIXELS`, the
``max_image_pixels`` run setting) is refused before it is decoded wherever its header says its size
(PNG, BMP, JPEG, GIF, PPM/PGM; any format Pillow opens, which reads only the header first), else
right after decoding: a 20000 × 20000 image would take 1.2 GB as pixels.

A file none of them can decode raises :class:`ImageReadError` (``"<path>: <reason>"``); a format
(JPEG, TIFF, WebP…) that needs a decoder when neither OpenCV nor Pillow is installed raises
:class:`~edge_runtime.errors.BackendUnavailableError` naming the file and both extras
(:func:`require_image_decoder` raises it up front). ``_cv2()`` and ``_pillow()`` are the seams
that find the decoders: tests replace them with ``lambda: None`` to take the next one.

Example::

    from edge_runtime.frames.images import read_image

    rgb = read_image("calib/frame0.png")                 # (H, W, 3) uint8, RGB
    bgr = read_image("calib/frame0.png", color="BGR")    # what cv2.imread gives
"""

from __future__ import annotations

import importlib
import io
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import BackendUnavailableError
from edge_runtime.frames.frame import InvalidFrameError, optional_cv2
from edge_runtime.frames.png import PNG_SIGNATURE, PNGFormatError, decode_png

#: What to install to decode JPEG, TIFF, WebP, interlaced PNG… (either one does).
IMAGES_EXTRA_HINT = "pip install 'edge-runtime[camera]' (OpenCV) or 'edge-runtime[images]' (Pillow)"
#: Image files numpy alone decodes (PNG, uncompressed BMP), without OpenCV or Pillow.
NUMPY_IMAGE_SUFFIXES = (".png", ".bmp")
#: The channel orders :func:`read_image` returns.
IMAGE_COLORS = ("RGB", "BGR")
#: The largest image :func:`read_image` decodes by default (width × height): 50 megapixels.
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000


class ImageReadError(InvalidFrameError):
    """An image file that cannot be read or decoded; ``str()`` is ``"<path>: <reason>"``."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


def _cv2() -> Any | None:
    """The ``cv2`` module, or ``None`` without OpenCV (the seam tests replace to hide it)."""
    return optional_cv2()


def _pillow() -> Any | None:
    """Pillow's ``PIL.ImageOps`` module (``.Image`` is ``PIL.Image``), or ``None`` without Pillow (a seam too)."""
    try:
        return importlib.import_module("PIL.ImageOps")
    except ImportError:
        return None


def image_decoder() -> str:
    """The decoder :func:`read_image` uses now: ``"opencv"``, ``"pillow"`` or ``"numpy"`` (PNG and BMP only)."""
    if _cv2() is not None:
        return "opencv"
    return "pillow" if _pillow() is not None else "numpy"


def require_image_decoder(path: str | Path, context: str = "") -> None:
    """Raise :class:`BackendUnavailableError` when nothing installed can decode ``path``'s format.

    One line naming ``context`` (``"folder:calib: "``…), the file and the extras to install.
    """
    suffix = Path(path).suffix.lower()
    if suffix in NUMPY_IMAGE_SUFFIXES or image_decoder() != "numpy":
        return
    raise BackendUnavailableError(
        f"{context}{path}: decoding {suffix or 'these'} images needs OpenCV or Pillow, and neither is installed: "
        f"{IMAGES_EXTRA_HINT} (without them only .png and uncompressed .bmp are read)"
    )


def read_image(path: str | Path, *, color: str = "RGB", max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode the image file ``path`` to ``(H, W, 3)`` uint8 in ``color`` order (``"RGB"`` or ``"BGR"``).

    Grey and palette images are expanded to three channels and alpha is dropped, as
    ``cv2.imread(path, cv2.IMREAD_COLOR)`` does. Without OpenCV and Pillow, a file that starts with
    the PNG signature (or is named ``.png``) is decoded by
    :func:`~edge_runtime.frames.png.decode_png`, anything else as a BMP. Raises
    :class:`ImageReadError` for a file that cannot be read or is not a decodable image,
    :class:`BackendUnavailableError` (see :func:`require_image_decoder`) for a format that needs
    OpenCV or Pillow when neither is installed. An image of more than ``max_pixels`` pixels is an
    :class:`ImageReadError` too, from its header where the format has one (before decoding).
    """
    if color not in IMAGE_COLORS:
        raise ValueError(f"color must be one of {', '.join(IMAGE_COLORS)}, got {color!r}")
    path = Path(path)
    cv2, pillow = _cv2(), None
    if cv2 is None:
        pillow = _pillow()
        if pillow is None and path.suffix.lower() not in NUMPY_IMAGE_SUFFIXES and not _starts_with_png(path):
            require_image_decoder(path)  # a PNG file by another name is decoded all the same
    try:
        data = path.read_bytes()  # not cv2.imread: it cannot say why it failed
    except OSError as exc:
        raise ImageReadError(path, f"cannot read ({exc.strerror or exc})") from None
    if not data:
        raise ImageReadError(path, "empty file")
    size = image_size(data)
    if size is None and cv2 is not None:
        size = _pillow_size(_pillow(), data)  # a format without a header probe here: ask Pillow, if installed
    if size is not None:
        check_pixels(path, *size, max_pixels)
    if cv2 is not None:
        image = _decode_cv2(cv2, data, path, color)
    elif pillow is not None:
        rgb = _decode_pillow(pillow, data, path, max_pixels)
        image = rgb if color == "RGB" else np.ascontiguousarray(rgb[:, :, ::-1])
    elif data.startswith(PNG_SIGNATURE) or (path.suffix.lower() == ".png" and not data.startswith(b"BM")):
        try:
            rgb = decode_png(data, str(path))
        except PNGFormatError as exc:
            raise ImageReadError(path, exc.reason) from None
        image = rgb if color == "RGB" else np.ascontiguousarray(rgb[:, :, ::-1])
    else:
        bgr = _decode_bmp(data, path)
        image = bgr if color == "BGR" else np.ascontiguousarray(bgr[:, :, ::-1])
    check_pixels(path, image.shape[1], image.shape[0], max_pixels)  # formats whose size no header gave
    return image


def check_pixels(path: str | Path, width: int, height: int, max_pixels: int) -> None:
    """Raise :class:`ImageReadError` naming ``path`` when ``width`` × ``height`` is over ``max_pixels``."""
    if width * height > max_pixels:
        pixels = width * height
        raise ImageReadError(path, f"{width}x{height} image has {pixels} pixels, over max_image_pixels = {max_pixels}")


def image_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from the header of a PNG, BMP, JPEG, GIF or binary PPM/PGM file without
    decoding it; ``None`` for other formats or a header too short or malformed to say."""
    try:
        if data.startswith(PNG_SIGNATURE) and data[12:16] == b"IHDR":
            return struct.unpack_from(">II", data, 16)
        if data.startswith(b"BM") and len(data) >= 26:
            width, height = struct.unpack_from("<ii", data, 18)
            return abs(width), abs(height)
        if data.startswith((b"GIF87a", b"GIF89a")) and len(data) >= 10:
            return struct.unpack_from("<HH", data, 6)
        if data[:2] in (b"P5", b"P6"):
            fields = re.match(rb"P[56](?:\s+|#[^\n]*\n)+(\d+)(?:\s+|#[^\n]*\n)+(\d+)", data[:512])
            return None if fields is None else (int(fields.group(1)), int(fields.group(2)))
        if data.startswith(b"\xff\xd8"):
            return _jpeg_size(data)
    except struct.error:
        return None
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """The size in a JPEG's first start-of-frame segment (SOF0..SOF15 but DHT, JPG and DAC)."""
    position = 2
    while position + 9 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack_from(">HH", data, position + 5)
            return width, height
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # standalone markers
            position += 2
            continue
        (length,) = struct.unpack_from(">H", data, position + 2)
        position += 2 + length
    return None


def _pillow_size(image_ops: Any | None, data: bytes) -> tuple[int, int] | None:
    """The size Pillow reads from the header (it decodes nothing until asked); None without Pillow."""
    if image_ops is None:
        return None
    try:
        with image_ops.Image.open(io.BytesIO(data)) as opened:
            width, height = opened.size
            return int(width), int(height)
    except Exception:  # not a format Pillow knows: OpenCV decides
        return None


def _starts_with_png(path: Path) -> bool:
    """Whether the file ``path`` starts with the PNG signature (``False`` when it cannot be read)."""
    try:
        with path.open("rb") as file:
            return file.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE
    except OSError:
        return False


def _decode_cv2(cv2: Any, data: bytes, path: Path, color: str) -> np.ndarray:
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise ImageReadError(path, f"not an image ({str(exc).strip().splitlines()[-1]})") from None
    if image is None or image.size == 0:
        raise ImageReadError(path, "not an image")
    return image if color == "BGR" else np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


def _decode_pillow(image_ops: Any, data: bytes, path: Path, max_pixels: int) -> np.ndarray:
    try:
        with image_ops.Image.open(io.BytesIO(data)) as opened:
            check_pixels(path, opened.size[0], opened.size[1], max_pixels)  # from the header: nothing is decoded yet
            # OpenCV applies the EXIF orientation when it decodes; do the same so both agree.
            image = image_ops.exif_transpose(opened).convert("RGB")
            return np.asarray(image, dtype=np.uint8).copy()
    except ImageReadError:
        raise
    except Exception as exc:  # Pillow raises many kinds for broken files (OSError, SyntaxError, bomb errors)
        reason = "not an image" if "cannot identify" in str(exc) else f"not a readable image ({exc})"
        raise ImageReadError(path, reason) from None


def read_bmp(path: str | Path) -> np.ndarray:
    """Decode an uncompressed BMP (8-bit palette, 24 or 32 bit) with numpy: (H, W, 3) uint8 BGR.

    Like ``cv2.imread(path, cv2.IMREAD_COLOR)``; raises :class:`ImageReadError` for unreadable,
    compressed or unusual BMPs (OpenCV or Pillow decode those).
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageReadError(path, f"cannot read ({exc.strerror or exc})") from None
    return _decode_bmp(data, Path(path))


def _decode_bmp(data: bytes, path: Path) -> np.ndarray:
    try:
        return _decode_bmp_fields(data, path)
    except (struct.error, ValueError) as exc:  # a header whose offsets or counts point past the data
        raise ImageReadError(path, f"malformed BMP ({exc})") from None


def _decode_bmp_fields(data: bytes, path: Path) -> np.ndarray:
    if len(data) < 54 or data[:2] != b"BM":
        raise ImageReadError(path, "not a BMP file")
    (offset,) = struct.unpack_from("<I", data, 10)
    header, width, height, _planes, bits, compression = struct.unpack_from("<IiiHHI", data, 14)
    (colors_used,) = struct.unpack_from("<I", data, 46)
    if header < 40 or width <= 0 or height == 0:
        raise ImageReadError(path, f"unsupported BMP header (size {header}, {width}x{height})")
    if compression not in (0, 3) or bits not in (8, 24, 32) or (compression == 3 and bits != 32):
        raise ImageReadError(
            path,
            f"BMP with {bits} bits per pixel and compression {compression} needs OpenCV or Pillow: {IMAGES_EXTRA_HINT}",
        )
    if compression == 3:  # BI_BITFIELDS: only the standard BGRA byte order
        if len(data) < 66:
            raise ImageReadError(path, f"BMP is truncated ({len(data)} bytes: its colour masks are missing)")
        masks = struct.unpack_from("<III", data, 54)
        if masks != (0x00FF0000, 0x0000FF00, 0x000000FF):
            raise ImageReadError(path, f"BMP with colour masks {[hex(m) for m in masks]} needs OpenCV or Pillow")
    rows = abs(height)
    stride = (width * bits + 31) // 32 * 4
    if offset + stride * rows > len(data):
        raise ImageReadError(path, f"BMP is truncated ({len(data)} bytes for {width}x{rows}x{bits} bits)")
    pixels = np.frombuffer(data, np.uint8, count=stride * rows, offset=offset).reshape(rows, stride)
    if bits == 8:
        count = colors_used or 256
        if count > 256 or 14 + header + 4 * count > len(data):
            raise ImageReadError(path, f"BMP palette of {count} colours does not fit the file ({len(data)} bytes)")
        palette = np.frombuffer(data, np.uint8, count=4 * count, offset=14 + header).reshape(count, 4)[:, :3]
        image = palette[np.minimum(pixels[:, :width], count - 1)]
    else:
        image = pixels[:, : width * bits // 8].reshape(rows, width, bits // 8)[:, :, :3]
    if height > 0:  # bottom-up rows
        image = image[::-1]
    return np.ascontiguousarray(image)
