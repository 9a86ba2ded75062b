"""What one graph can run as on this device: backend, execution provider, precision, threads.

A :class:`GraphConfig` is one such choice; :func:`graph_candidates` lists the ones a bundle
allows here: each installed backend (ONNX Runtime with each available *compute* execution
provider, LiteRT with its default XNNPACK delegate) times each artifact of that backend's format
whose recorded fidelity passed the exporter's gate, and for the trunk each thread count from 1 to
the number of cores (heads are small: one thread each).

Example::

    found = graph_candidates(manifest, "trunk", manifest.trunk, cores=4)
    [c.describe() for c in found]   # ["onnxruntime fp32 x1", "onnxruntime int8 x1", ..., "tflite int8 x4"]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edge_runtime.bundle.specs import PRECISIONS, Artifact, GraphEntry
from edge_runtime.errors import ConfigError
from edge_runtime.inference.artifact_choice import BACKEND_FORMATS, backend_available

#: The ``backend`` / ``precision`` setting that takes the tuning (else the device profile's choice).
AUTO = "auto"
#: Execution providers that compute (others, such as Azure's, only forward requests).
COMPUTE_PROVIDERS = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "ROCMExecutionProvider",
    "CoreMLExecutionProvider",
    "CPUExecutionProvider",
)
#: The provider a config without one names: ONNX Runtime's best available (see the backend).
DEFAULT_PROVIDER = "CPUExecutionProvider"


@dataclass(frozen=True, order=True)
class GraphConfig:
    """How one graph runs: ``backend`` (``onnxruntime`` / ``tflite``), ``precision`` of its
    artifact, intra-op ``threads`` and, for ONNX Runtime, the execution ``provider``."""

    backend: str
    precision: str
    threads: int
    provider: str | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKEND_FORMATS:
            raise ConfigError(f"backend {self.backend!r} is not one of {', '.join(BACKEND_FORMATS)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1:
            raise ConfigError(f"threads must be an integer >= 1, got {self.threads!r}")

    @property
    def providers(self) -> tuple[str, ...] | None:
        """The provider list a session gets (CPU after an accelerator, as ONNX Runtime expects)."""
        if self.provider is None:
            return None
        return (self.provider,) if self.provider == DEFAULT_PROVIDER else (self.provider, DEFAULT_PROVIDER)

    def describe(self) -> str:
        """``onnxruntime int8 x2`` / ``onnxruntime[CUDA] fp16 x1`` / ``tflite int8 x4``."""
        provider = ""
        if self.provider not in (None, DEFAULT_PROVIDER):
            provider = f"[{str(self.provider).removesuffix('ExecutionProvider')}]"
        return f"{self.backend}{provider} {self.precision} x{self.threads}"

    def to_dict(self) -> dict[str, Any]:
        """``{"backend", "precision", "threads", "provider"}`` (what ``tuning.json`` stores)."""
        return {
            "backend": self.backend,
            "precision": self.precision,
            "threads": self.threads,
            "provider": self.provider,
        }

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str) -> GraphConfig:
        """Read a stored config; :class:`ConfigError` naming ``where`` when a field is wrong."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected an object, got {data!r}")
        provider = data.get("provider")
        if provider is not None and not isinstance(provider, str):
            raise ConfigError(f"{where}.provider: expected a string or null, got {provider!r}")
        try:
            return cls(data.get("backend"), data.get("precision"), data.get("threads"), provider)  # type: ignore[arg-type]
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from exc


def passed_gate(artifact: Artifact) -> bool:
    """True when the artifact may be tuned for: FP32, or a recorded fidelity at or above the
    threshold it was judged by (an artifact written without a measurement is not a candidate)."""
    if artifact.precision == "fp32":
        return True
    fidelity = artifact.fidelity or {}
    agreement, threshold = fidelity.get("agreement"), fidelity.get("min_agreement")
    if not isinstance(agreement, (int, float)) or not isinstance(threshold, (int, float)):
        return False
    return float(agreement) >= float(threshold)


def compute_providers(available: Sequence[str]) -> list[str]:
    """The compute execution providers of this ONNX Runtime, best first."""
    return [p for p in COMPUTE_PROVIDERS if p in available]


def installed_backends() -> list[str]:
    """The backends that import here, ONNX Runtime first."""
    return [b for b in BACKEND_FORMATS if backend_available(b)]


def graph_candidates(
    graph: str,
    entry: GraphEntry,
    *,
    cores: int,
    backends: Iterable[str] | None = None,
    providers: Sequence[str] = (DEFAULT_PROVIDER,),
) -> list[GraphConfig]:
    """Every config ``graph`` can run as here: each of ``backends`` (default: the installed ones)
    with an artifact of its format that :func:`passed_gate`, ONNX Runtime once per compute provider
    in ``providers``; the trunk at 1..``cores`` threads, a head at 1."""
    backends = installed_backends() if backends is None else list(backends)
    thread_counts = range(1, max(1, cores) + 1) if graph == "trunk" else (1,)
    found: list[GraphConfig] = []
    for backend in backends:
        artifacts = [a for a in entry.artifacts if a.format == BACKEND_FORMATS[backend] and passed_gate(a)]
        precisions = sorted({a.precision for a in artifacts}, key=PRECISIONS.index)
        for provider in compute_providers(providers) if backend == "onnxruntime" else [None]:
            for precision in precisions:
                found.extend(GraphConfig(backend, precision, threads, provider) for threads in thread_counts)
    return found


__all__ = [
    "AUTO",
    "COMPUTE_PROVIDERS",
    "DEFAULT_PROVIDER",
    "GraphConfig",
    "compute_providers",
    "graph_candidates",
    "installed_backends",
    "passed_gate",
]
