"""ONNX Runtime backend: CPU here, CUDA / TensorRT execution providers where present (Jetson).

Sessions are created with thread spinning off (``session.intra_op.allow_spinning = 0``:
spinning trunk and head sessions fight each other) and a bounded number of
intra-op threads. Values flow between sessions as numpy arrays: on the CPU provider ONNX
Runtime wraps a contiguous input array's buffer and hands outputs back as arrays over its
own buffer, so a head reads the trunk's features without a copy. (``run_with_ort_values``
was measured 50 % slower per call for small heads: wrapping outputs in ``OrtValue``
objects costs more in Python than it saves.)

Example::

    backend = OnnxRuntimeBackend()
    trunk = backend.load(Path("bundle/trunk.fp32.onnx"), BackendOptions(threads=2), "trunk")
    features = trunk.run({"image": x})            # {"features": np.ndarray}
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from edge_runtime.bundle.specs import Artifact
from edge_runtime.errors import BackendUnavailableError, ModelError
from edge_runtime.inference.backends.base import BackendOptions

logger = logging.getLogger(__name__)

#: Providers in order of preference when none is requested.
PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def choose_providers(requested: Sequence[str] | None, available: Sequence[str]) -> list[str]:
    """Requested providers (all must be available), else the preferred ones that are."""
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise BackendUnavailableError(
                f"execution provider(s) {', '.join(missing)} not available in this onnxruntime build "
                f"(available: {', '.join(available)}); on Jetson install the onnxruntime-gpu wheel for JetPack"
            )
        return list(requested)
    chosen = [p for p in PREFERRED_PROVIDERS if p in available]
    return chosen or list(available)


def prefer_providers(wanted: Sequence[str], available: Sequence[str], who: str) -> tuple[list[str], str | None]:
    """Providers a device profile (``who``) prefers, keeping those this build has.

    Unlike an explicit request (:func:`choose_providers`), a preference falls back: the result
    is the available ones in the profile's order (CPU appended when none is left), and a
    message naming what was missing and what is used instead, or None when nothing was.
    """
    chosen = [p for p in wanted if p in available]
    if not chosen:
        chosen = ["CPUExecutionProvider"] if "CPUExecutionProvider" in available else list(available)
    missing = [p for p in wanted if p not in available]
    if not missing:
        return chosen, None
    return chosen, (
        f"{who} asks for execution provider(s) {', '.join(missing)}, which this onnxruntime "
        f"{ort.__version__} does not have (available: {', '.join(available)}); using {', '.join(chosen)} instead. "
        "On Jetson install NVIDIA's onnxruntime-gpu wheel for your JetPack in place of the PyPI onnxruntime"
    )


class OnnxRuntimeSession:
    """One ONNX graph in an ``InferenceSession``; values are ``OrtValue``."""

    def __init__(self, session: ort.InferenceSession, what: str) -> None:
        self._session = session
        self.what = what
        self.input_names = tuple(i.name for i in session.get_inputs())
        self.output_names = tuple(o.name for o in session.get_outputs())
        self._run_options = ort.RunOptions()

    def run(self, feeds: Mapping[str, Any], outputs: Sequence[str] | None = None) -> dict[str, Any]:
        names = list(outputs) if outputs is not None else list(self.output_names)
        try:
            result = self._session.run(names, dict(feeds), self._run_options)
        except Exception as exc:
            raise ModelError(f"{self.what}: inference failed: {exc}") from exc
        return dict(zip(names, result, strict=True))

    def to_numpy(self, value: Any) -> np.ndarray:
        return value.numpy() if isinstance(value, ort.OrtValue) else np.asarray(value)

    def close(self) -> None:
        del self._session


class OnnxRuntimeBackend:
    """Loads ``.onnx`` artifacts into ONNX Runtime sessions."""

    name = "onnxruntime"
    artifact_format = "onnx"

    def __init__(self) -> None:
        self.available = tuple(ort.get_available_providers())
        self.providers: list[str] = []
        self.threads: dict[str, int] = {}
        self._announced = False

    def load(
        self, path: Path, options: BackendOptions, what: str, artifact: Artifact | None = None
    ) -> OnnxRuntimeSession:
        # ``artifact``: an ONNX file needs nothing from its manifest entry.
        providers = choose_providers(options.providers, self.available)
        session_options = ort.SessionOptions()
        session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session_options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        threads = options.threads or os.cpu_count() or 1
        session_options.intra_op_num_threads = threads
        session_options.inter_op_num_threads = 1
        session_options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No memory pattern: the planned activation block cost ~2 MiB more peak RSS on the
        # MobileNetV2-sized bundle (FP32 and INT8), for no measurable speed (benchmarks/README.md).
        session_options.enable_mem_pattern = False
        session_options.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(path), session_options, providers=providers)
        except Exception as exc:
            raise ModelError(f"{what} ({path}): onnxruntime {ort.__version__} cannot load it: {exc}") from exc
        self.providers = session.get_providers()
        self.threads[what] = threads
        if not self._announced:
            logger.info("%s", self.describe())
            self._announced = True
        return OnnxRuntimeSession(session, what)

    def describe(self) -> str:
        providers = ", ".join(self.providers) or "not loaded yet"
        return (
            f"onnxruntime {ort.__version__}: providers {providers} "
            f"(available: {', '.join(self.available)}); intra-op threads "
            f"{', '.join(f'{k} {v}' for k, v in self.threads.items()) or '-'}; spinning off"
        )
