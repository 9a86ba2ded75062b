"""The result wire format: envelope, arrays and per-type head encodings (docs/protocol.md).

Public names are imported from their module on first use (:mod:`edge_runtime.lazy_exports`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_runtime.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from edge_runtime.codec.wire import (
        CodecError as CodecError,
    )
    from edge_runtime.codec.wire import (
        Header as Header,
    )
    from edge_runtime.codec.wire import (
        content_type as content_type,
    )
    from edge_runtime.codec.wire import (
        decode_payload as decode_payload,
    )
    from edge_runtime.codec.wire import (
        encode_frame as encode_frame,
    )
    from edge_runtime.codec.wire import (
        encode_heartbeat as encode_heartbeat,
    )
    from edge_runtime.codec.wire import (
        encode_line as encode_line,
    )
    from edge_runtime.codec.wire import (
        read_header as read_header,
    )

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "wire": (
            "CodecError",
            "Header",
            "content_type",
            "read_header",
            "encode_frame",
            "encode_heartbeat",
            "encode_line",
            "decode_payload",
        ),
    },
)
