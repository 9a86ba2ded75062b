"""Inference backends behind one interface, chosen by name from a plain dict registry.

Each entry imports its runtime lazily: an optional runtime that is not installed makes
:func:`get_backend` raise :class:`BackendUnavailableError` naming the extra to install,
and never breaks the other backends::

    backend = get_backend("onnxruntime")
    session = backend.load(Path("bundle/trunk.fp32.onnx"), BackendOptions(threads=4), "trunk")
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from edge_runtime.errors import BackendUnavailableError, ConfigError, close_matches
from edge_runtime.inference.backends.base import (
    MAX_THREADS,
    THREADS_PER_CPU,
    Backend,
    BackendOptions,
    GraphSession,
    check_threads,
)

#: backend name -> (module, class, pip extra that provides its runtime)
BACKENDS: dict[str, tuple[str, str, str]] = {
    "onnxruntime": ("edge_runtime.inference.backends.onnxruntime", "OnnxRuntimeBackend", "edge-runtime"),
    "tflite": ("edge_runtime.inference.backends.tflite", "TfliteBackend", "edge-runtime[tflite]"),
}


def get_backend(name: str) -> Backend:
    """Create the backend registered as ``name``."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}{close_matches(name, BACKENDS)}; available: {', '.join(BACKENDS)}")
    module_name, class_name, extra = BACKENDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendUnavailableError(
            f"backend {name!r} is not installed ({exc}); install it with: pip install '{extra}'"
        ) from exc
    factory: Callable[[], Backend] = getattr(module, class_name)
    return factory()


__all__ = [
    "BACKENDS",
    "MAX_THREADS",
    "THREADS_PER_CPU",
    "Backend",
    "BackendOptions",
    "GraphSession",
    "check_threads",
    "get_backend",
]
