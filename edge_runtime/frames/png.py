"""Lossless PNG with numpy and zlib alone: frames a device reads and writes without OpenCV or Pillow.

:func:`encode_png` writes a ``(H, W)`` grey, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA uint8 array as
an 8-bit, non-interlaced PNG: each row is filtered with whichever of None, Sub, Up, Average and
Paeth gives the smallest sum of absolute residuals (the heuristic libpng uses), the rows are
compressed with zlib level 6, and the same array always gives the same bytes.

:func:`decode_png` reads any standard non-interlaced PNG of 8 or 16 bits per sample (16-bit samples
keep their high byte, as ``cv2.imread`` does): grey, RGB, grey + alpha, RGBA and 8-bit palette
images, all five filter types, the image data split over any number of IDAT chunks. It returns
``(H, W, 3)`` uint8 RGB: grey is replicated, alpha is dropped (not blended), palettes are looked up.
Everything else raises :class:`PNGFormatError` (a :class:`~edge_runtime.errors.ConfigError`), one
line ``"<where>: <what is wrong>"``: a bad signature, a CRC mismatch, truncated data, an interlaced
image, a bit depth under 8, an unknown critical chunk… The work is bounded before it starts:
images over :data:`MAX_PIXELS` are refused from their header, and the image data is inflated with
a limit of the size the header implies, so a small "zip bomb" cannot exhaust memory.

Rows filtered with Average or Paeth depend on the pixel to their left, so they cannot be decoded
with one numpy operation per row; :func:`decode_png` decodes such images along anti-diagonals
(a pixel needs only its left, upper and upper-left neighbours, so all the pixels of one
anti-diagonal can be decoded together): ``width + height`` numpy steps instead of a Python loop
over pixels.

Example::

    import numpy as np
    from edge_runtime.frames.png import decode_png, encode_png

    rgb = np.zeros((480, 640, 3), np.uint8)
    data = encode_png(rgb)                            # bytes of a .png file
    assert (decode_png(data, "frame0.png") == rgb).all()
    decode_png(b"GIF89a...", "frame1.png")            # ConfigError: frame1.png: not a PNG file (...)
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from edge_runtime.errors import ConfigError

#: The eight bytes every PNG file starts with.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: The largest image (width × height) :func:`decode_png` and :func:`encode_png` accept: 64 Mi pixels (8192 × 8192).
MAX_PIXELS = 64 * 1024 * 1024
#: The zlib level :func:`encode_png` compresses with.
ZLIB_LEVEL = 6

_IDAT_CHUNK_BYTES = 1 << 16  # encode_png splits its image data into IDAT chunks of this size
_MAX_CHUNK_LENGTH = (1 << 31) - 1  # the PNG specification's limit on a chunk's length (and on width, height)
_BAND_BYTES = 64 << 20  # the anti-diagonal decoder works on bands of rows using about this much memory
# Colour type → (samples per pixel, name, allowed bit depths) per the PNG specification.
_COLOR_TYPES = {
    0: (1, "grey", (1, 2, 4, 8, 16)),
    2: (3, "RGB", (8, 16)),
    3: (1, "palette", (1, 2, 4, 8)),
    4: (2, "grey+alpha", (8, 16)),
    6: (4, "RGBA", (8, 16)),
}
_FILTER_NAMES = ("None", "Sub", "Up", "Average", "Paeth")


class PNGFormatError(ConfigError):
    """PNG data that :func:`decode_png` cannot or will not decode; ``str()`` is ``"<where>: <reason>"``."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


# --------------------------------------------------------------------------- encoding


def encode_png(image: np.ndarray) -> bytes:
    """The bytes of an 8-bit, non-interlaced PNG file holding ``image``.

    ``image`` is uint8, ``(H, W)`` or ``(H, W, 1)`` grey, ``(H, W, 3)`` RGB or ``(H, W, 4)``
    RGBA (``(H, W, 2)`` is grey + alpha). Each row is filtered with the cheapest of the five PNG
    filters, the result compressed with zlib level :data:`ZLIB_LEVEL`; the output is deterministic.
    Raises ``ValueError`` for any other shape or dtype, an empty image or one over :data:`MAX_PIXELS`.
    """
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"encode_png needs uint8 pixels, got dtype {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"encode_png needs an (H, W), (H, W, 3) or (H, W, 4) array, got shape {array.shape}")
    height, width, channels = array.shape
    if height == 0 or width == 0:
        raise ValueError(f"encode_png needs a non-empty image, got shape {array.shape}")
    if height * width > MAX_PIXELS:
        raise ValueError(f"{width}x{height} image has {height * width} pixels, over the {MAX_PIXELS} limit")
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = np.ascontiguousarray(array).reshape(height, width * channels)
    compressed = zlib.compress(_filter_rows(rows, channels).tobytes(), ZLIB_LEVEL)
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    chunks = [_chunk(b"IHDR", header)]
    chunks += [
        _chunk(b"IDAT", compressed[start : start + _IDAT_CHUNK_BYTES])
        for start in range(0, len(compressed), _IDAT_CHUNK_BYTES)
    ]
    chunks.append(_chunk(b"IEND", b""))
    return PNG_SIGNATURE + b"".join(chunks)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The Paeth predictor of int16 arrays: whichever of left ``a``, up ``b``, upper-left ``c`` is
    closest to ``a + b - c`` (ties in that order)."""
    up_distance = b - c  # |p - a| with p = a + b - c
    left_distance = a - c  # |p - b|
    corner = np.abs(up_distance + left_distance)  # |p - c|
    up_distance = np.abs(up_distance)
    left_distance = np.abs(left_distance)
    return np.where(
        (up_distance <= left_distance) & (up_distance <= corner), a, np.where(left_distance <= corner, b, c)
    )


def _filter_rows(rows: np.ndarray, bpp: int) -> np.ndarray:
    """The PNG scanlines of ``rows`` ((H, S) uint8): (H, 1 + S) uint8, each row's filter type then
    its residuals, the filter chosen per row by the smallest sum of |residual| (as signed bytes)."""
    raw = rows.astype(np.int16)
    left = np.zeros_like(raw)
    left[:, bpp:] = raw[:, :-bpp]
    up = np.zeros_like(raw)
    up[1:] = raw[:-1]
    upper_left = np.zeros_like(raw)
    upper_left[1:, bpp:] = raw[:-1, :-bpp]
    predictions = (None, left, up, (left + up) >> 1, _paeth(left, up, upper_left))
    out = np.empty((rows.shape[0], rows.shape[1] + 1), np.uint8)
    best_cost = np.full(rows.shape[0], np.iinfo(np.int64).max, np.int64)
    for kind, prediction in enumerate(predictions):
        residual = raw if prediction is None else raw - prediction
        signed = (residual + 128) & 0xFF  # the residual as a signed byte, shifted by 128
        cost = np.abs(signed - 128).sum(axis=1, dtype=np.int64)
        better = cost < best_cost  # ties keep the earlier (simpler) filter: deterministic
        best_cost[better] = cost[better]
        out[better, 0] = kind
        out[better, 1:] = residual[better] & 0xFF
    return out


# --------------------------------------------------------------------------- decoding


def decode_png(data: bytes, where: str) -> np.ndarray:
    """Decode the PNG file ``data`` to ``(H, W, 3)`` uint8 RGB; ``where`` names it in errors.

    Reads non-interlaced PNGs of 8 or 16 bits per sample (the high byte is kept) of colour type
    0 (grey), 2 (RGB), 3 (palette, 8-bit), 4 (grey + alpha) and 6 (RGBA), with any of the five
    filter types. Grey is replicated to three channels, alpha dropped. Raises
    :class:`PNGFormatError` (a :class:`~edge_runtime.errors.ConfigError`; one line
    ``"<where>: <reason>"``) for data that is not a PNG, is malformed or truncated, fails a CRC,
    is interlaced or under 8 bits per sample, has more than :data:`MAX_PIXELS` pixels or more image
    data than its header implies.
    """
    data = bytes(data)
    width, height, depth, color_type, palette, compressed = _read_chunks(data, where)
    channels = _COLOR_TYPES[color_type][0]
    bpp = channels * depth // 8
    stride = width * bpp
    raw = _inflate(compressed, height * (stride + 1), where)
    scanlines = np.frombuffer(raw, np.uint8).reshape(height, stride + 1)
    filters = scanlines[:, 0]
    unknown = np.flatnonzero(filters >= len(_FILTER_NAMES))
    if unknown.size:
        row = int(unknown[0])
        raise PNGFormatError(where, f"unknown filter type {filters[row]} in row {row}")
    pixels = _unfilter(scanlines[:, 1:], filters, bpp).reshape(height, width, channels, depth // 8)[..., 0]
    if palette is not None:
        indices = pixels[..., 0]
        highest = int(indices.max())
        if highest >= len(palette):
            raise PNGFormatError(where, f"palette index {highest} out of range (PLTE has {len(palette)} entries)")
        return palette[indices]
    if channels <= 2:
        return np.ascontiguousarray(np.repeat(pixels[..., :1], 3, axis=2))
    return np.ascontiguousarray(pixels[..., :3])


def _read_chunks(data: bytes, where: str) -> tuple[int, int, int, int, np.ndarray | None, bytes]:
    """Walk the chunks of ``data``: (width, height, bit depth, colour type, palette or None, the
    concatenated IDAT data), checking the signature, every CRC and the header."""
    if data[: len(PNG_SIGNATURE)] != PNG_SIGNATURE:
        reason = "empty data" if not data else f"bad signature {data[:8]!r}"
        raise PNGFormatError(where, f"not a PNG file ({reason})")
    header: tuple[int, int, int, int] | None = None
    palette: np.ndarray | None = None
    idat: list[bytes] = []
    position = len(PNG_SIGNATURE)
    while True:
        if position + 8 > len(data):
            raise PNGFormatError(where, f"truncated PNG: the data ends after {len(data)} bytes, before an IEND chunk")
        length, kind = struct.unpack_from(">I4s", data, position)
        name = kind.decode("latin-1")
        if not kind.isalpha() or length > _MAX_CHUNK_LENGTH:
            raise PNGFormatError(where, f"malformed chunk {name!r} of length {length} at offset {position}")
        end = position + 12 + length
        if end > len(data):
            raise PNGFormatError(
                where, f"truncated PNG: chunk {name} at offset {position} needs {end} bytes, the data has {len(data)}"
            )
        body = data[position + 8 : end - 4]
        (crc,) = struct.unpack_from(">I", data, end - 4)
        if zlib.crc32(body, zlib.crc32(kind)) != crc:
            raise PNGFormatError(where, f"CRC mismatch in chunk {name}")
        position = end
        if header is None and kind != b"IHDR":
            raise PNGFormatError(where, f"the first chunk is {name}, not IHDR")
        if kind == b"IHDR":
            if header is not None:
                raise PNGFormatError(where, "a second IHDR chunk")
            header = _read_header(body, where)
        elif kind == b"PLTE":
            if length % 3 or not 3 <= length <= 768:
                raise PNGFormatError(where, f"PLTE chunk of {length} bytes (1 to 256 RGB entries expected)")
            palette = np.frombuffer(body, np.uint8).reshape(-1, 3)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        elif kind[0] & 0x20 == 0:  # an upper-case first letter: a chunk a decoder must understand
            raise PNGFormatError(where, f"unknown critical chunk {name}")
    assert header is not None  # the loop only breaks after an IHDR
    width, height, depth, color_type = header
    if not idat:
        raise PNGFormatError(where, "no IDAT chunk (the PNG holds no image data)")
    if color_type != 3:
        palette = None  # a suggested palette for a true-colour image: not needed
    elif palette is None:
        raise PNGFormatError(where, "palette image without a PLTE chunk")
    return width, height, depth, color_type, palette, b"".join(idat)


def _read_header(body: bytes, where: str) -> tuple[int, int, int, int]:
    """(width, height, bit depth, colour type) of an IHDR chunk, refusing what decode_png does not read."""
    if len(body) != 13:
        raise PNGFormatError(where, f"IHDR chunk of {len(body)} bytes, 13 expected")
    width, height, depth, color_type, compression, filter_method, interlace = struct.unpack(">IIBBBBB", body)
    if not (0 < width <= _MAX_CHUNK_LENGTH and 0 < height <= _MAX_CHUNK_LENGTH):
        raise PNGFormatError(where, f"invalid image size {width}x{height} in IHDR")
    if color_type not in _COLOR_TYPES:
        raise PNGFormatError(where, f"invalid colour type {color_type} in IHDR")
    _channels, color_name, depths = _COLOR_TYPES[color_type]
    if depth not in depths:
        raise PNGFormatError(where, f"invalid bit depth {depth} for colour type {color_type} ({color_name})")
    if compression != 0 or filter_method != 0:
        raise PNGFormatError(where, f"unknown compression method {compression} or filter method {filter_method}")
    if interlace == 1:
        raise PNGFormatError(where, "interlaced PNG is not supported (save it non-interlaced)")
    if interlace != 0:
        raise PNGFormatError(where, f"unknown interlace method {interlace}")
    if depth < 8:
        raise PNGFormatError(
            where, f"{depth}-bit {color_name} PNG is not supported (only 8 and 16 bits per sample are read)"
        )
    if width * height > MAX_PIXELS:
        raise PNGFormatError(where, f"{width}x{height} image has {width * height} pixels, over the {MAX_PIXELS} limit")
    return width, height, depth, color_type


def _inflate(compressed: bytes, expected: int, where: str) -> bytes:
    """The ``expected`` bytes of scanlines ``compressed`` holds, never inflating more than one byte beyond."""
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(compressed, expected + 1)
    except zlib.error as exc:
        raise PNGFormatError(where, f"corrupt compressed image data ({exc})") from None
    if len(raw) > expected:
        raise PNGFormatError(where, f"decompressed image data exceeds the {expected} bytes the header implies")
    if not inflater.eof:
        raise PNGFormatError(
            where, f"truncated image data: the compressed stream ends early ({len(raw)} of {expected} bytes)"
        )
    if len(raw) < expected:
        raise PNGFormatError(where, f"image data is short: {len(raw)} of the {expected} bytes the header implies")
    return raw


def _unfilter(lines: np.ndarray, filters: np.ndarray, bpp: int) -> np.ndarray:
    """Undo the PNG filters of ``lines`` ((H, S) uint8, row ``r`` filtered with ``filters[r]``): (H, S) uint8.

    Bands of rows without Average or Paeth are decoded a row at a time; the other bands along
    anti-diagonals (:func:`_unfilter_diagonals`).
    """
    height, stride = lines.shape
    out = np.empty((height, stride), np.uint8)
    prior = np.zeros(stride, np.uint8)
    band = max(1, _BAND_BYTES // (4 * (stride + bpp)))  # two int16 copies of the band, padded
    for start in range(0, height, band):
        stop = min(height, start + band)
        kinds = filters[start:stop]
        if (kinds >= 3).any():
            out[start:stop] = _unfilter_diagonals(lines[start:stop], kinds, bpp, prior)
        else:
            for row in range(start, stop):
                kind, line = filters[row], lines[row]
                if kind == 0:
                    out[row] = line
                elif kind == 1:
                    out[row] = np.cumsum(line.reshape(-1, bpp), axis=0, dtype=np.uint8).reshape(-1)
                else:
                    np.add(line, prior, out=out[row])
                prior = out[row]
        prior = out[stop - 1]
    return out


def _unfilter_diagonals(lines: np.ndarray, kinds: np.ndarray, bpp: int, prior: np.ndarray) -> np.ndarray:
    """Undo any filters of ``lines`` ((n, S) uint8) below the decoded row ``prior``, one anti-diagonal at a time.

    The band is laid out with the prior row on top and a zero pixel left of each row, flat, one
    pixel of ``bpp`` bytes per element: pixel (R, x) sits at ``R * (W + 1) + x + 1``. The pixels of
    the anti-diagonal ``R + x = k`` then sit ``W`` elements apart (a plain strided slice), and their
    left, upper and upper-left neighbours are the same slice shifted by 1, ``W + 1`` and ``W + 2``.
    """
    rows, stride = lines.shape
    width = stride // bpp
    pitch = width + 1
    decoded = np.zeros((rows + 1, pitch, bpp), np.int16)
    decoded[0, 1:] = prior.reshape(width, bpp)
    filtered = np.zeros_like(decoded)
    filtered[1:, 1:] = lines.reshape(rows, width, bpp)
    flat, residual = decoded.reshape(-1, bpp), filtered.reshape(-1, bpp)
    padded = np.concatenate([[0], kinds]).astype(np.int16)[:, np.newaxis]  # index R: the kind of band row R - 1
    is_sub, is_up, is_average, is_paeth = ((padded == kind).astype(np.int16) for kind in (1, 2, 3, 4))
    any_paeth = bool(is_paeth.any())
    for diagonal in range(1, rows + width):
        first, last = max(1, diagonal - width + 1), min(rows, diagonal)
        start, stop = first * width + diagonal + 1, last * width + diagonal + 2
        left = flat[start - 1 : stop - 1 : width]
        up = flat[start - pitch : stop - pitch : width]
        upper_left = flat[start - pitch - 1 : stop - pitch - 1 : width]
        selected = slice(first, last + 1)
        prediction = is_sub[selected] * left + is_up[selected] * up + is_average[selected] * ((left + up) >> 1)
        if any_paeth:
            prediction += is_paeth[selected] * _paeth(left, up, upper_left)
        flat[start:stop:width] = (residual[start:stop:width] + prediction) & 0xFF
    return decoded[1:, 1:].reshape(rows, stride).astype(np.uint8)
