"""edge-runtime: run multi-task networks on embedded devices and stream their results.

The device side needs only numpy, onnxruntime, paho-mqtt and msgpack. The public API::

    from edge_runtime import load_bundle
    bundle = load_bundle("build/demo_bundle")
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from edge_runtime.bundle import Bundle, load_bundle
from edge_runtime.errors import (
    BackendUnavailableError,
    BundleError,
    ConfigError,
    EdgeRuntimeError,
    ModelError,
    TransportError,
)
from edge_runtime.manifest import InputSpec, Manifest

try:
    __version__ = version("edge-runtime")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "BackendUnavailableError",
    "Bundle",
    "BundleError",
    "ConfigError",
    "EdgeRuntimeError",
    "InputSpec",
    "Manifest",
    "ModelError",
    "TransportError",
    "__version__",
    "load_bundle",
]
