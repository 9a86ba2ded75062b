"""Frames in: sources (camera, stream, video, folder, synthetic), the Frame, geometry and preprocessing.

Public names are imported from their module on first use (:mod:`edge_runtime.lazy_exports`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_runtime.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from edge_runtime.frames.capture import (
        ReconnectOptions as ReconnectOptions,
    )
    from edge_runtime.frames.capture import (
        StreamSource as StreamSource,
    )
    from edge_runtime.frames.capture import (
        VideoFileSource as VideoFileSource,
    )
    from edge_runtime.frames.folders import (
        ImageFolderSource as ImageFolderSource,
    )
    from edge_runtime.frames.frame import (
        Frame as Frame,
    )
    from edge_runtime.frames.frame import (
        InvalidFrameError as InvalidFrameError,
    )
    from edge_runtime.frames.frame import (
        check_color as check_color,
    )
    from edge_runtime.frames.frame import (
        frame_channels as frame_channels,
    )
    from edge_runtime.frames.frame import (
        optional_cv2 as optional_cv2,
    )
    from edge_runtime.frames.frame import (
        require_cv2 as require_cv2,
    )
    from edge_runtime.frames.geometry import (
        FrameGeometry as FrameGeometry,
    )
    from edge_runtime.frames.images import (
        ImageReadError as ImageReadError,
    )
    from edge_runtime.frames.images import (
        read_bmp as read_bmp,
    )
    from edge_runtime.frames.images import (
        read_image as read_image,
    )
    from edge_runtime.frames.png import (
        PNGFormatError as PNGFormatError,
    )
    from edge_runtime.frames.png import (
        decode_png as decode_png,
    )
    from edge_runtime.frames.png import (
        encode_png as encode_png,
    )
    from edge_runtime.frames.preprocess import (
        Preprocessor as Preprocessor,
    )
    from edge_runtime.frames.preprocess import (
        numpy_resize_bilinear as numpy_resize_bilinear,
    )
    from edge_runtime.frames.source import (
        FrameSource as FrameSource,
    )
    from edge_runtime.frames.sources import (
        open_source as open_source,
    )
    from edge_runtime.frames.synthetic import (
        SyntheticSource as SyntheticSource,
    )

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "capture": ("ReconnectOptions", "VideoFileSource", "StreamSource"),
        "folders": ("ImageFolderSource",),
        "frame": ("InvalidFrameError", "check_color", "frame_channels", "Frame", "optional_cv2", "require_cv2"),
        "geometry": ("FrameGeometry",),
        "images": ("ImageReadError", "read_bmp", "read_image"),
        "png": ("PNGFormatError", "decode_png", "encode_png"),
        "preprocess": ("numpy_resize_bilinear", "Preprocessor"),
        "source": ("FrameSource",),
        "sources": ("open_source",),
        "synthetic": ("SyntheticSource",),
    },
)
