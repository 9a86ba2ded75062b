"""The envelope of a result payload: the 4-byte header, versioning, compression and limits (protocol §1-3).

Every payload is a header (magic ``ED 52``, version ``1``, flags) and a body; the body is
msgpack or, with :data:`FLAG_JSON`, UTF-8 JSON, either zstd-compressed with :data:`FLAG_ZSTD`,
and at most :data:`MAX_BODY_BYTES` once decompressed. This module reads and writes that frame
around a body; what the body holds is :mod:`edge_runtime.codec.payloads`. Every decoding error
of the codec is a :class:`CodecError`.

Example::

    from edge_runtime.codec.envelope import CodecError, content_type, read_header

    header = read_header(payload)  # Header(version=1, mode="msgpack", compression="zstd", kind="frame")
    properties.ContentType = content_type(header.mode)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from edge_runtime.errors import EdgeRuntimeError, close_matches

#: First two bytes of every payload: non-ASCII, invalid as UTF-8, so never JSON by accident.
MAGIC = b"\xedR"
#: The envelope version written in byte 2; a decoder rejects any other.
VERSION = 1
HEADER_SIZE = 4
#: Flag bits (byte 3). Bits 3-7 are reserved and must be 0.
FLAG_JSON = 0x01
FLAG_ZSTD = 0x02
FLAG_HEARTBEAT = 0x04
KNOWN_FLAGS = FLAG_JSON | FLAG_ZSTD | FLAG_HEARTBEAT
#: Largest body accepted, after decompression (stops zip bombs).
MAX_BODY_BYTES = 16 * 1024 * 1024
#: zstd level written by the encoders (any level decodes).
ZSTD_LEVEL = 3

MODES = ("msgpack", "json")
COMPRESSIONS = ("none", "zstd")
CONTENT_TYPE = "application/vnd.edge-runtime.v1+msgpack"
CONTENT_TYPE_JSON = "application/vnd.edge-runtime.v1+json"
ZSTD_HINT = "pip install 'edge-runtime[zstd]'"


class CodecError(EdgeRuntimeError):
    """A payload cannot be decoded (or a result cannot be encoded)."""


@dataclass(frozen=True)
class Header:
    """The 4-byte envelope header of a payload."""

    version: int
    mode: str  # "msgpack" | "json"
    compression: str  # "none" | "zstd"
    kind: str  # "frame" | "heartbeat"


def content_type(mode: str = "msgpack") -> str:
    """The MQTT v5 content type of payloads encoded in ``mode``."""
    return {"msgpack": CONTENT_TYPE, "json": CONTENT_TYPE_JSON}[_check_mode(mode)]


# -- header ------------------------------------------------------------------------------------


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise CodecError(f"unknown codec mode {mode!r}{close_matches(str(mode), MODES)}; choose one of {MODES}")
    return mode


def _check_compression(compression: str | None) -> str:
    name = "none" if compression is None else compression
    if name not in COMPRESSIONS:
        raise CodecError(
            f"unknown compression {compression!r}{close_matches(str(name), COMPRESSIONS)}; "
            f"choose one of {COMPRESSIONS} (or None)"
        )
    return name


def read_header(payload: bytes) -> Header:
    """Parse and check the header; :class:`CodecError` on a payload that is not ours."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise CodecError(f"a payload must be bytes, got {type(payload).__name__}")
    head = bytes(payload[:HEADER_SIZE])
    if len(head) < 2 or head[:2] != MAGIC:
        shown = head[:2].hex() or "nothing"
        raise CodecError(f"not an edge-runtime payload: bad magic {shown} (expected {MAGIC.hex()})")
    if len(head) < HEADER_SIZE:
        raise CodecError(f"truncated payload: {len(head)} bytes, the header alone is {HEADER_SIZE}")
    if head[2] != VERSION:
        raise CodecError(f"unsupported codec version {head[2]} (this decoder reads version {VERSION}); upgrade it")
    flags = head[3]
    if flags & ~KNOWN_FLAGS:
        raise CodecError(
            f"unknown flag bits 0x{flags & ~KNOWN_FLAGS:02x} in 0x{flags:02x} (known: 0x{KNOWN_FLAGS:02x})"
        )
    return Header(
        version=head[2],
        mode="json" if flags & FLAG_JSON else "msgpack",
        compression="zstd" if flags & FLAG_ZSTD else "none",
        kind="heartbeat" if flags & FLAG_HEARTBEAT else "frame",
    )


def _wrap(body: bytes, mode: str, compression: str, kind: str) -> bytes:
    """The payload of an encoded ``body``: header, then the body (compressed when asked)."""
    flags = (FLAG_JSON if mode == "json" else 0) | (FLAG_HEARTBEAT if kind == "heartbeat" else 0)
    if len(body) > MAX_BODY_BYTES:
        raise CodecError(f"encoded body is {len(body)} bytes, over the {MAX_BODY_BYTES}-byte limit")
    if compression == "zstd":
        flags |= FLAG_ZSTD
        body = _compressor().compress(body)
    return bytes((MAGIC[0], MAGIC[1], VERSION, flags)) + body


def _unwrap(payload: bytes) -> tuple[Header, bytes]:
    """The checked header of ``payload`` and its body (decompressed, non-empty, within the limit)."""
    header = read_header(payload)
    body = bytes(payload[HEADER_SIZE:])
    if header.compression == "zstd":
        body = _decompress(body)
    elif len(body) > MAX_BODY_BYTES:
        raise CodecError(f"body of {len(body)} bytes is over the {MAX_BODY_BYTES}-byte limit")
    if not body:
        raise CodecError("truncated payload: the body is empty")
    return header, body


# -- zstd (optional) ---------------------------------------------------------------------------

_local = threading.local()


def _zstandard() -> Any:
    try:
        import zstandard
    except ImportError as exc:
        raise CodecError(f"zstd compression needs the zstandard package: {ZSTD_HINT}") from exc
    return zstandard


def _compressor() -> Any:
    zstd = _zstandard()
    comp = getattr(_local, "compressor", None)
    if comp is None:
        comp = _local.compressor = zstd.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True)
    return comp


def _decompress(body: bytes) -> bytes:
    zstd = _zstandard()
    dec = getattr(_local, "decompressor", None)
    if dec is None:
        dec = _local.decompressor = zstd.ZstdDecompressor()
    try:
        size = zstd.frame_content_size(body)
        if size > MAX_BODY_BYTES:
            raise CodecError(f"compressed body declares {size} bytes, over the {MAX_BODY_BYTES}-byte limit")
        if size < 0:  # size not in the frame header: cap the output buffer
            out = dec.decompress(body, max_output_size=MAX_BODY_BYTES, allow_extra_data=False)
        else:
            out = dec.decompress(body, allow_extra_data=False)
    except zstd.ZstdError as exc:
        raise CodecError(f"malformed zstd body (or over the {MAX_BODY_BYTES}-byte limit): {exc}") from exc
    if len(out) > MAX_BODY_BYTES:  # pragma: no cover - the checks above prevent it
        raise CodecError(f"decompressed body over the {MAX_BODY_BYTES}-byte limit")
    return bytes(out)
