"""edge-runtime: run multi-task networks on embedded devices and stream their results.

The device side needs only numpy, onnxruntime, paho-mqtt and msgpack. The public API::

    from edge_runtime import Engine, EngineOptions
    with Engine.from_bundle("build/demo_bundle", EngineOptions(threads=2)) as engine:
        result = engine.infer(frame)          # (H, W, 3) uint8 RGB array or a Frame
        print(result.to_dict(device="cam-1", seq=0))

CLI: ``edge-runtime run --bundle build/demo_bundle --source synthetic --max-frames 10``
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from edge_runtime.bundle.manifest import Manifest
from edge_runtime.bundle.reader import Bundle, load_bundle
from edge_runtime.bundle.specs import InputSpec
from edge_runtime.config import RuntimeConfig
from edge_runtime.errors import (
    BackendUnavailableError,
    BundleError,
    ConfigError,
    EdgeRuntimeError,
    ModelError,
    TransportError,
)
from edge_runtime.frames.frame import Frame, InvalidFrameError
from edge_runtime.frames.sources import open_source
from edge_runtime.inference.engine import Engine, EngineOptions
from edge_runtime.inference.results import (
    Classification,
    Detections,
    Embedding,
    FrameResult,
    Landmarks,
    RawOutput,
    Regression,
    Segmentation,
)

try:
    __version__ = version("edge-runtime")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "BackendUnavailableError",
    "Bundle",
    "BundleError",
    "Classification",
    "ConfigError",
    "Detections",
    "EdgeRuntimeError",
    "Embedding",
    "Engine",
    "EngineOptions",
    "Frame",
    "FrameResult",
    "InputSpec",
    "InvalidFrameError",
    "Landmarks",
    "Manifest",
    "ModelError",
    "RawOutput",
    "Regression",
    "RuntimeConfig",
    "Segmentation",
    "TransportError",
    "__version__",
    "load_bundle",
    "open_source",
]
