"""edge_runtime.frames.png: PNG encode/decode with numpy and zlib alone, and read_image's PNG fallback.

Files are written three ways: by :func:`encode_png`, by Pillow (its adaptive filters), and by
:func:`make_png` here, which filters each row with the filter asked for by a slow pure-Python
reference of the PNG specification, so every filter type, colour type and bit depth is covered
whatever Pillow chooses. Decoded pixels are compared exactly with Pillow's own decode, or with the
array that was written.
"""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edge_runtime.frames.images as images
import edge_runtime.frames.png as png
from edge_runtime.errors import BackendUnavailableError, ConfigError
from edge_runtime.frames.images import ImageReadError, image_decoder, read_image
from edge_runtime.frames.png import MAX_PIXELS, PNG_SIGNATURE, PNGFormatError, decode_png, encode_png

try:  # the device venv has no Pillow: the tests that compare with it skip there, the others run
    from PIL import Image as PILImage
except ImportError:
    PILImage = None


def _pillow() -> Any:
    """Pillow's Image module, or skip the test (comparing with Pillow needs the images extra)."""
    return pytest.importorskip("PIL.Image", reason="comparing with Pillow needs Pillow (the images extra)")


WHERE = "selftest/frame0.png"


# --------------------------------------------------------------------------- helpers


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def header(width: int, height: int, depth: int = 8, color_type: int = 2, interlace: int = 0) -> bytes:
    return chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, interlace))


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, body) of each chunk of a well-formed PNG."""
    found, position = [], len(PNG_SIGNATURE)
    while position < len(data):
        (length,) = struct.unpack_from(">I", data, position)
        found.append((data[position + 4 : position + 8], data[position + 8 : position + 8 + length]))
        position += 12 + length
    return found


def filter_types(data: bytes) -> list[int]:
    """The filter type of each row of a well-formed PNG."""
    parts = chunks(data)
    (height,) = struct.unpack(">I", parts[0][1][4:8])
    raw = zlib.decompress(b"".join(body for kind, body in parts if kind == b"IDAT"))
    return list(np.frombuffer(raw, np.uint8).reshape(height, -1)[:, 0])


def reference_filter(kind: int, row: bytes, prior: bytes, bpp: int) -> bytes:
    """One scanline filtered with ``kind`` as the PNG specification writes it, byte by byte."""
    out = bytearray([kind])
    for i, value in enumerate(row):
        a = row[i - bpp] if i >= bpp else 0
        b = prior[i]
        c = prior[i - bpp] if i >= bpp else 0
        if kind == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            predicted = a if pa <= pb and pa <= pc else b if pb <= pc else c
        else:
            predicted = (0, a, b, (a + b) // 2)[kind]
        out.append((value - predicted) % 256)
    return bytes(out)


def make_png(
    samples: np.ndarray,
    color_type: int,
    kinds: Sequence[int],
    *,
    palette: bytes | None = None,
    idat_pieces: int = 1,
    extra: Sequence[bytes] = (),
) -> bytes:
    """A PNG of ``samples`` ((H, W, C) uint8 or uint16), row ``r`` filtered with ``kinds[r % len(kinds)]``."""
    height, width, channels = samples.shape
    depth = 16 if samples.dtype == np.uint16 else 8
    bpp = channels * depth // 8
    rows = samples.astype(">u2" if depth == 16 else np.uint8).reshape(height, -1)
    prior, lines = bytes(width * bpp), []
    for r in range(height):
        row = rows[r].tobytes()
        lines.append(reference_filter(kinds[r % len(kinds)], row, prior, bpp))
        prior = row
    compressed = zlib.compress(b"".join(lines))
    step = -(-len(compressed) // idat_pieces)
    idat = [chunk(b"IDAT", compressed[i : i + step]) for i in range(0, len(compressed), step)]
    plte = [chunk(b"PLTE", palette)] if palette is not None else []
    body = [header(width, height, depth, color_type), *extra, *plte, *idat, chunk(b"IEND", b"")]
    return PNG_SIGNATURE + b"".join(body)


def as_rgb(samples: np.ndarray) -> np.ndarray:
    """What decode_png returns for ``samples`` ((H, W, C), C = 1 to 4): RGB, grey replicated, alpha dropped."""
    if samples.dtype == np.uint16:
        samples = (samples >> 8).astype(np.uint8)
    return np.repeat(samples[..., :1], 3, axis=2) if samples.shape[2] <= 2 else samples[..., :3]


def photo(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """A photo-like image: smooth shading, an edge, a little noise (so Pillow mixes its filters)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    shading = 110 + 60 * np.sin(x / 9.0) * np.cos(y / 13.0) + 40 * (x + 2 * y > width)
    image = shading[..., None] + 25 * np.arange(channels) + rng.normal(0, 3, (height, width, channels))
    return np.clip(image, 0, 255).astype(np.uint8)


def pillow_png(image: Any, **options: Any) -> bytes:
    _pillow()
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **options)
    return buffer.getvalue()


def pillow_rgb(data: bytes) -> np.ndarray:
    PILImage = _pillow()
    with PILImage.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


# --------------------------------------------------------------------------- round trips


SHAPES = [(1, 1), (1, 23), (19, 1), (17, 13), (13, 17), (32, 48)]


@pytest.mark.parametrize("channels", [0, 3, 4])  # 0: an (H, W) grey array
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("content", ["random", "photo"])
def test_round_trip_through_decode_png_and_pillow(content: str, shape: tuple[int, int], channels: int) -> None:
    height, width = shape
    image = (
        np.random.default_rng(height * width).integers(0, 256, (height, width, max(channels, 1)), dtype=np.uint8)
        if content == "random"
        else photo(height, width, max(channels, 1))
    )
    if channels == 0:
        image = image[..., 0]

    data = encode_png(image)
    decoded = decode_png(data, WHERE)

    assert decoded.shape == (height, width, 3) and decoded.dtype == np.uint8 and decoded.flags.c_contiguous
    np.testing.assert_array_equal(decoded, as_rgb(image.reshape(height, width, -1)))
    if PILImage is not None:  # and Pillow reads back exactly the input
        with PILImage.open(io.BytesIO(data)) as opened:
            assert opened.mode == {0: "L", 3: "RGB", 4: "RGBA"}[channels]
            np.testing.assert_array_equal(np.asarray(opened), image)


def test_encode_is_deterministic_and_ignores_the_memory_layout() -> None:
    image = photo(40, 56)
    flipped = image[:, ::-1]  # a view with negative strides

    assert encode_png(image) == encode_png(image.copy())
    assert encode_png(flipped) == encode_png(np.ascontiguousarray(flipped))


def test_encode_filters_rows_and_compresses_about_as_well_as_pillow() -> None:
    PILImage = _pillow()
    image = photo(120, 160)
    unfiltered = np.concatenate([np.zeros((120, 1), np.uint8), image.reshape(120, -1)], axis=1)

    data = encode_png(image)

    assert len(set(filter_types(data))) > 1  # filtered per row, not all None
    assert len(data) < 0.8 * len(zlib.compress(unfiltered.tobytes(), 6))
    assert len(data) < 1.2 * len(pillow_png(PILImage.fromarray(image)))  # Pillow's zlib strategy suits noise
    assert chunks(data)[0][0] == b"IHDR" and chunks(data)[-1] == (b"IEND", b"")


def test_encode_splits_large_image_data_over_several_idat_chunks() -> None:
    image = np.random.default_rng(3).integers(0, 256, (200, 200, 3), dtype=np.uint8)

    data = encode_png(image)

    assert sum(kind == b"IDAT" for kind, _ in chunks(data)) > 1
    np.testing.assert_array_equal(decode_png(data, WHERE), image)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((4, 4, 3), np.float32), "uint8 pixels"),
        (np.zeros((4, 4, 5), np.uint8), r"\(H, W\), \(H, W, 3\) or \(H, W, 4\)"),
        (np.zeros((4,), np.uint8), r"\(H, W\), \(H, W, 3\) or \(H, W, 4\)"),
        (np.zeros((0, 4, 3), np.uint8), "non-empty"),
    ],
)
def test_encode_refuses_what_it_cannot_write(image: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_png(image)


def test_the_frames_package_exports_the_png_functions() -> None:
    import edge_runtime.frames as frames

    assert frames.encode_png is encode_png and frames.decode_png is decode_png
    assert frames.PNGFormatError is PNGFormatError and issubclass(PNGFormatError, ConfigError)


# --------------------------------------------------------------------------- files written by Pillow


@pytest.mark.parametrize("mode", ["RGB", "L", "LA", "RGBA", "P"])
@pytest.mark.parametrize("optimize", [False, True])
def test_pillow_pngs_decode_as_pillow_decodes_them(mode: str, optimize: bool) -> None:
    PILImage = _pillow()
    rgb = photo(37, 53, seed=5)
    image = PILImage.fromarray(rgb)
    if mode == "P":
        image = image.quantize(256, dither=PILImage.Dither.NONE)
        image.putpalette(bytes(np.random.default_rng(6).integers(0, 256, 768, dtype=np.uint8)))  # 256 entries: 8 bits
    elif mode == "LA":
        image = PILImage.merge("LA", (image.convert("L"), image.getchannel("B")))
    else:
        image = image.convert(mode)
    data = pillow_png(image, optimize=optimize)

    np.testing.assert_array_equal(decode_png(data, WHERE), pillow_rgb(data))


def test_pillow_16_bit_grey_keeps_the_high_byte() -> None:
    PILImage = _pillow()
    grey = np.random.default_rng(7).integers(0, 65536, (21, 34), dtype=np.uint16)
    data = pillow_png(PILImage.fromarray(grey))
    assert data[24:26] == b"\x10\x00"  # 16-bit grey
    with PILImage.open(io.BytesIO(data)) as opened:
        pillow = np.asarray(opened)

    np.testing.assert_array_equal(decode_png(data, WHERE), np.repeat((pillow >> 8).astype(np.uint8)[..., None], 3, 2))


def filter_showcase() -> np.ndarray:
    """Rows built so that a min-sum-of-absolute-values encoder picks each of the five filters."""
    rng = np.random.default_rng(8)
    width = 32
    noise1, noise2, left_noise = (rng.integers(0, 256, (n, 3)) for n in (width, width, width // 2))
    ramp = 10 + 3 * np.arange(width)[:, None] + np.array([0, 40, 80])
    average = np.zeros((width, 3), np.int64)  # each pixel the mean of its left and upper neighbours
    for x in range(width):
        average[x] = ((average[x - 1] if x else 0) + noise2[x]) // 2
    edges_above = np.concatenate([left_noise, np.full((width // 2, 3), 30)])  # Paeth: noise left, flat right
    edges = np.concatenate([left_noise, np.full((width // 2, 3), 200)])
    rows = [np.zeros((width, 3)), noise1, noise1, ramp, noise2, average, edges_above, edges, np.zeros((width, 3))]
    return np.stack(rows).astype(np.uint8)  # None, ?, Up, Sub, ?, Average, ?, Paeth, None


def test_pillow_writes_every_filter_type_and_each_decodes() -> None:
    PILImage = _pillow()
    image = filter_showcase()
    data = pillow_png(PILImage.fromarray(image), optimize=True)  # Pillow tries Average only when optimizing

    kinds = filter_types(data)

    assert set(kinds) == {0, 1, 2, 3, 4}, kinds
    assert [kinds[i] for i in (0, 2, 3, 5, 7, 8)] == [0, 2, 1, 3, 4, 0]
    np.testing.assert_array_equal(decode_png(data, WHERE), image)
    assert set(filter_types(encode_png(image))) == {0, 1, 2, 3, 4}  # encode_png chooses the same way


def test_a_pillow_photo_decodes_with_its_adaptive_filters() -> None:
    PILImage = _pillow()
    image = photo(96, 128, seed=9)
    data = pillow_png(PILImage.fromarray(image), optimize=True)
    assert {1, 4} <= set(filter_types(data))

    np.testing.assert_array_equal(decode_png(data, WHERE), image)


# --------------------------------------------------------------------------- rows filtered here


KIND_SEQUENCES = [[0], [1], [2], [3], [4], [0, 1, 2, 3, 4], [4, 3, 4, 1, 2, 2, 0, 3, 3]]


@pytest.mark.parametrize(("color_type", "channels"), [(0, 1), (2, 3), (4, 2), (6, 4)])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("kinds", KIND_SEQUENCES)
def test_every_filter_colour_type_and_depth(color_type: int, channels: int, dtype: Any, kinds: list[int]) -> None:
    samples = np.random.default_rng(len(kinds) * 10 + color_type).integers(
        0, np.iinfo(dtype).max + 1, (13, 17, channels), dtype=dtype
    )
    samples[4:9, 3:12] = samples[4, 3]  # a flat patch: Paeth picks every neighbour somewhere

    data = make_png(samples, color_type, kinds)

    np.testing.assert_array_equal(decode_png(data, WHERE), as_rgb(samples))
    if PILImage is not None and (dtype == np.uint8 or channels == 1):  # Pillow reads 8-bit, 16-bit grey as is
        with PILImage.open(io.BytesIO(data)) as opened:
            pillow = np.asarray(opened)
        np.testing.assert_array_equal(pillow, samples.reshape(pillow.shape))


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (2, 2)])
def test_tiny_images_with_every_filter(shape: tuple[int, int]) -> None:
    samples = np.random.default_rng(11).integers(0, 256, (*shape, 3), dtype=np.uint8)
    for kind in range(5):
        np.testing.assert_array_equal(decode_png(make_png(samples, 2, [kind]), WHERE), samples)


def test_palette_images_are_looked_up() -> None:
    _pillow()
    palette = np.random.default_rng(12).integers(0, 256, (40, 3), dtype=np.uint8)
    indices = np.random.default_rng(13).integers(0, 40, (11, 14, 1), dtype=np.uint8)
    text = chunk(b"tEXt", b"Comment\x00ignored")

    data = make_png(indices, 3, [0, 1, 4], palette=palette.tobytes(), extra=[text])

    np.testing.assert_array_equal(decode_png(data, WHERE), palette[indices[..., 0]])
    np.testing.assert_array_equal(decode_png(data, WHERE), pillow_rgb(data))


def test_image_data_over_several_idat_chunks_and_ancillary_chunks() -> None:
    samples = photo(30, 20, 4)
    extra = [chunk(b"gAMA", struct.pack(">I", 45455)), chunk(b"tEXt", b"Title\x00frame")]

    data = make_png(samples, 6, [4, 3, 1], idat_pieces=5, extra=extra)

    assert sum(kind == b"IDAT" for kind, _ in chunks(data)) == 5
    np.testing.assert_array_equal(decode_png(data, WHERE), samples[..., :3])


@pytest.mark.parametrize("band_rows", [1, 2, 3, 7])
def test_bands_of_rows_join_up(band_rows: int, monkeypatch: pytest.MonkeyPatch) -> None:
    samples = np.random.default_rng(14).integers(0, 256, (15, 10, 3), dtype=np.uint8)
    monkeypatch.setattr(png, "_BAND_BYTES", band_rows * 4 * (30 + 3))  # bands of band_rows rows

    for kinds in ([4, 3, 1, 2, 0], [1, 2, 1, 0, 2, 2, 3], [2, 2, 2, 4]):
        np.testing.assert_array_equal(decode_png(make_png(samples, 2, kinds), WHERE), samples)


def test_a_paeth_photo_decodes_quickly() -> None:
    PILImage = _pillow()
    samples = photo(240, 320)
    data = pillow_png(PILImage.fromarray(samples))
    assert filter_types(data).count(4) > 50  # Pillow's Paeth rows: decoded along anti-diagonals

    started = time.perf_counter()
    decoded = decode_png(data, WHERE)
    elapsed = time.perf_counter() - started

    np.testing.assert_array_equal(decoded, samples)
    assert elapsed < 1.0  # about 0.02 s here; a per-pixel Python loop takes seconds


# --------------------------------------------------------------------------- malformed files


def valid() -> bytes:
    return make_png(photo(8, 10), 2, [1, 4])


def corrupt_idat_crc(data: bytes) -> bytes:
    position = data.index(b"IDAT") + 4
    return data[:position] + bytes([data[position] ^ 1]) + data[position + 1 :]


def with_idat(body: bytes, width: int = 16, height: int = 16, color_type: int = 2) -> bytes:
    return PNG_SIGNATURE + header(width, height, 8, color_type) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def unknown_critical() -> bytes:
    parts = chunks(valid())
    return PNG_SIGNATURE + b"".join(chunk(k, b) for k, b in [parts[0], (b"ABCD", b""), *parts[1:]])


MALFORMED: list[tuple[str, Callable[[], bytes], str]] = [
    ("empty", lambda: b"", "not a PNG file (empty data)"),
    ("gif", lambda: b"GIF89a" + bytes(40), "not a PNG file (bad signature"),
    ("idat crc", lambda: corrupt_idat_crc(valid()), "CRC mismatch in chunk IDAT"),
    ("ihdr crc", lambda: valid()[:29] + b"\0\0\0\0" + valid()[33:], "CRC mismatch in chunk IHDR"),
    ("only a signature", lambda: PNG_SIGNATURE, "truncated PNG: the data ends after 8 bytes"),
    ("cut in idat", lambda: valid()[:60], "truncated PNG: chunk IDAT at offset 33 needs"),
    ("no iend", lambda: valid()[:-12], "truncated PNG: the data ends after"),
    ("interlaced", lambda: PNG_SIGNATURE + header(8, 8, interlace=1), "interlaced PNG is not supported"),
    ("huge", lambda: PNG_SIGNATURE + header(100_000, 100_000), f"over the {MAX_PIXELS} limit"),
    ("zero width", lambda: PNG_SIGNATURE + header(0, 8), "invalid image size 0x8"),
    ("colour type 5", lambda: PNG_SIGNATURE + header(8, 8, 8, 5), "invalid colour type 5"),
    ("16-bit palette", lambda: PNG_SIGNATURE + header(8, 8, 16, 3), "invalid bit depth 16 for colour type 3"),
    ("4-bit grey", lambda: PNG_SIGNATURE + header(8, 8, 4, 0), "4-bit grey PNG is not supported"),
    ("short ihdr", lambda: PNG_SIGNATURE + chunk(b"IHDR", bytes(12)), "IHDR chunk of 12 bytes, 13 expected"),
    ("idat first", lambda: PNG_SIGNATURE + chunk(b"IDAT", b"x"), "the first chunk is IDAT, not IHDR"),
    ("no idat", lambda: PNG_SIGNATURE + header(4, 4) + chunk(b"IEND", b""), "no IDAT chunk"),
    ("bad chunk name", lambda: PNG_SIGNATURE + chunk(b"I\0AT", b""), "malformed chunk"),
    ("critical chunk", unknown_critical, "unknown critical chunk ABCD"),
    ("zip bomb", lambda: with_idat(zlib.compress(bytes(20_000_000), 9)), "exceeds the 784 bytes the header implies"),
    ("short data", lambda: with_idat(zlib.compress(bytes(700))), "image data is short: 700 of the 784 bytes"),
    ("cut stream", lambda: with_idat(zlib.compress(bytes(784))[:-6]), "truncated image data"),
    ("not zlib", lambda: with_idat(b"definitely not deflate"), "corrupt compressed image data"),
    ("filter 5", lambda: with_idat(zlib.compress(b"\x05" + bytes(48), 9), 16, 1), "unknown filter type 5 in row 0"),
    ("no palette", lambda: make_png(np.zeros((2, 2, 1), np.uint8), 3, [0]), "palette image without a PLTE chunk"),
    ("palette index", lambda: make_png(np.full((2, 2, 1), 9, np.uint8), 3, [0], palette=bytes(12)), "palette index 9"),
]


@pytest.mark.parametrize(("name", "make", "reason"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_data_is_one_line_naming_where_and_what(name: str, make: Callable[[], bytes], reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        decode_png(make(), WHERE)

    message = str(caught.value)
    assert message.startswith(f"{WHERE}: ") and reason in message and "\n" not in message
    assert isinstance(caught.value, PNGFormatError) and caught.value.where == WHERE


def test_a_zip_bomb_is_not_inflated() -> None:
    bomb = with_idat(zlib.compress(bytes(50_000_000), 9))  # 50 kB that inflates to 50 MB
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError, match="exceeds the 784 bytes"):
            decode_png(bomb, WHERE)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000


def test_low_bit_depth_pillow_files_are_refused_clearly() -> None:
    PILImage = _pillow()
    bilevel = pillow_png(PILImage.fromarray(np.eye(8, dtype=bool)))
    four_colours = PILImage.frombytes("P", (5, 4), bytes(i % 4 for i in range(20)))
    four_colours.putpalette(bytes(range(12)))

    with pytest.raises(ConfigError, match="1-bit grey PNG is not supported"):
        decode_png(bilevel, WHERE)
    with pytest.raises(ConfigError, match="2-bit palette PNG is not supported"):
        decode_png(pillow_png(four_colours), WHERE)


# --------------------------------------------------------------------------- read_image without OpenCV or Pillow


@pytest.fixture
def numpy_only(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Neither OpenCV nor Pillow (as on a bare device); returns the ``where`` of each decode_png call."""
    monkeypatch.setattr(images, "_cv2", lambda: None)
    monkeypatch.setattr(images, "_pillow", lambda: None)
    calls: list[str] = []

    def spy(data: bytes, where: str) -> np.ndarray:
        calls.append(where)
        return decode_png(data, where)

    monkeypatch.setattr(images, "decode_png", spy)
    assert image_decoder() == "numpy"
    return calls


def test_read_image_decodes_png_with_numpy_alone(tmp_path: Path, numpy_only: list[str]) -> None:
    PILImage = _pillow()
    rgb = photo(24, 40)
    path = tmp_path / "frame.png"
    path.write_bytes(pillow_png(PILImage.fromarray(rgb), optimize=True))

    np.testing.assert_array_equal(read_image(path), rgb)
    bgr = read_image(path, color="BGR")
    np.testing.assert_array_equal(bgr, rgb[:, :, ::-1])
    assert bgr.flags.c_contiguous and numpy_only == [str(path)] * 2


def test_read_image_knows_a_png_by_its_signature(tmp_path: Path, numpy_only: list[str]) -> None:
    rgb = photo(10, 12)
    path = tmp_path / "frame.img"
    path.write_bytes(encode_png(rgb))

    np.testing.assert_array_equal(read_image(path), rgb)
    assert numpy_only == [str(path)]


def test_read_image_says_why_a_png_is_unreadable(tmp_path: Path, numpy_only: list[str]) -> None:
    (tmp_path / "text.png").write_bytes(b"this is text, not a PNG")
    (tmp_path / "bad.png").write_bytes(corrupt_idat_crc(valid()))

    for name, reason in (
        ("text.png", "not a PNG file"),
        ("bad.png", "CRC mismatch in chunk IDAT"),
        ("gone.png", "cannot read"),
    ):
        with pytest.raises(ImageReadError) as caught:
            read_image(tmp_path / name)
        assert str(caught.value).startswith(f"{tmp_path / name}: {reason}") and caught.value.reason.startswith(reason)


def test_read_image_still_reads_bmp_and_refuses_jpeg(tmp_path: Path, numpy_only: list[str]) -> None:
    PILImage = _pillow()
    rgb = photo(10, 12)
    PILImage.fromarray(rgb).save(tmp_path / "a.bmp")
    PILImage.fromarray(rgb).save(tmp_path / "a.jpg")

    np.testing.assert_array_equal(read_image(tmp_path / "a.bmp"), rgb)
    with pytest.raises(BackendUnavailableError, match=r"decoding \.jpg images needs OpenCV or Pillow.*only \.png and"):
        read_image(tmp_path / "a.jpg")
    assert numpy_only == []
