"""The result wire format (docs/protocol.md): envelope, typed arrays, per-type heads, payloads.

:mod:`~edge_runtime.codec.envelope` (header, compression, limits, :class:`CodecError`),
:mod:`~edge_runtime.codec.arrays` (float16/float32 blobs, uint arrays, RLE masks),
:mod:`~edge_runtime.codec.heads` (one encoder/decoder per result type) and
:mod:`~edge_runtime.codec.payloads` (frames and heartbeats); ``python -m edge_runtime.codec
[FILE | --hex HEX]`` decodes one payload. Public names are imported from their module on first
use (:mod:`edge_runtime.lazy_exports`).

Example::

    from edge_runtime.codec import decode_payload, encode_frame

    line = decode_payload(encode_frame(result, device="pi-01", epoch="9f2c4e1ab07d3356", seq=42))
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_runtime.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from edge_runtime.codec.arrays import (
        EXT_DTYPES as EXT_DTYPES,
    )
    from edge_runtime.codec.envelope import (
        COMPRESSIONS as COMPRESSIONS,
    )
    from edge_runtime.codec.envelope import (
        CONTENT_TYPE as CONTENT_TYPE,
    )
    from edge_runtime.codec.envelope import (
        CONTENT_TYPE_JSON as CONTENT_TYPE_JSON,
    )
    from edge_runtime.codec.envelope import (
        FLAG_HEARTBEAT as FLAG_HEARTBEAT,
    )
    from edge_runtime.codec.envelope import (
        FLAG_JSON as FLAG_JSON,
    )
    from edge_runtime.codec.envelope import (
        FLAG_ZSTD as FLAG_ZSTD,
    )
    from edge_runtime.codec.envelope import (
        HEADER_SIZE as HEADER_SIZE,
    )
    from edge_runtime.codec.envelope import (
        KNOWN_FLAGS as KNOWN_FLAGS,
    )
    from edge_runtime.codec.envelope import (
        MAGIC as MAGIC,
    )
    from edge_runtime.codec.envelope import (
        MAX_BODY_BYTES as MAX_BODY_BYTES,
    )
    from edge_runtime.codec.envelope import (
        MODES as MODES,
    )
    from edge_runtime.codec.envelope import (
        VERSION as VERSION,
    )
    from edge_runtime.codec.envelope import (
        ZSTD_HINT as ZSTD_HINT,
    )
    from edge_runtime.codec.envelope import (
        ZSTD_LEVEL as ZSTD_LEVEL,
    )
    from edge_runtime.codec.envelope import (
        CodecError as CodecError,
    )
    from edge_runtime.codec.envelope import (
        Header as Header,
    )
    from edge_runtime.codec.envelope import (
        content_type as content_type,
    )
    from edge_runtime.codec.envelope import (
        read_header as read_header,
    )
    from edge_runtime.codec.heads import (
        HEAD_CODECS as HEAD_CODECS,
    )
    from edge_runtime.codec.heads import (
        HeadCodec as HeadCodec,
    )
    from edge_runtime.codec.payloads import (
        decode_payload as decode_payload,
    )
    from edge_runtime.codec.payloads import (
        encode_frame as encode_frame,
    )
    from edge_runtime.codec.payloads import (
        encode_heartbeat as encode_heartbeat,
    )
    from edge_runtime.codec.payloads import (
        encode_line as encode_line,
    )

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "envelope": (
            "CodecError",
            "Header",
            "content_type",
            "read_header",
            "MAGIC",
            "VERSION",
            "HEADER_SIZE",
            "FLAG_JSON",
            "FLAG_ZSTD",
            "FLAG_HEARTBEAT",
            "KNOWN_FLAGS",
            "MAX_BODY_BYTES",
            "ZSTD_LEVEL",
            "MODES",
            "COMPRESSIONS",
            "CONTENT_TYPE",
            "CONTENT_TYPE_JSON",
            "ZSTD_HINT",
        ),
        "arrays": ("EXT_DTYPES",),
        "heads": (
            "HeadCodec",
            "HEAD_CODECS",
        ),
        "payloads": (
            "encode_frame",
            "encode_heartbeat",
            "encode_line",
            "decode_payload",
        ),
    },
)
