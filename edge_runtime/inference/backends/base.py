"""The one small interface every inference backend implements.

A backend loads one graph file of its format into a :class:`GraphSession`; the engine
feeds sessions by tensor *name* and passes the values one session returns straight into
the next (values of the backend's choosing: numpy arrays for ONNX Runtime, ``TfliteValue``
for TFLite), so the trunk's features reach every head without another copy.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edge_runtime.bundle.specs import Artifact
from edge_runtime.errors import ConfigError

#: The most threads one session may get, per CPU: more only contend, and a huge count makes
#: ONNX Runtime create threads until memory runs out (100000 grew ~45 MB/s; 10**20 is a TypeError).
THREADS_PER_CPU = 4
#: The most threads one session may get on this machine (``threads``, ``head_threads``, ``--threads``).
MAX_THREADS = THREADS_PER_CPU * (os.cpu_count() or 1)


def check_threads(value: int, name: str = "threads") -> int:
    """``value`` when it is an integer from 1 to :data:`MAX_THREADS`; else a ConfigError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_THREADS:
        raise ConfigError(
            f"{name} must be an integer from 1 to {MAX_THREADS} ({THREADS_PER_CPU} x the {os.cpu_count() or 1} "
            f"CPUs here), got {value!r}"
        )
    return value


@dataclass(frozen=True)
class BackendOptions:
    """How to create sessions: ``threads`` per session (None: the device profile decides,
    else all cores); ``providers`` an explicit execution-provider list (None: best available)."""

    threads: int | None = None
    providers: tuple[str, ...] | None = None


class GraphSession(Protocol):
    """One loaded graph (trunk or head)."""

    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    def run(self, feeds: Mapping[str, Any], outputs: Sequence[str] | None = None) -> dict[str, Any]:
        """Run with ``feeds`` (numpy arrays or values from another session of the same
        backend) and return the requested outputs by name, as backend-native values."""
        ...

    def to_numpy(self, value: Any) -> np.ndarray:
        """A numpy view (or copy, where the backend requires) of a returned value."""
        ...

    def close(self) -> None:
        """Release the session's resources."""
        ...


class Backend(Protocol):
    """An inference engine that can load graphs of one artifact format."""

    name: str
    artifact_format: str

    def load(self, path: Path, options: BackendOptions, what: str, artifact: Artifact | None = None) -> GraphSession:
        """Load ``path``; ``what`` names the graph in errors and logs (e.g. "head 'mask'").
        ``artifact`` is the manifest entry the file belongs to, for backends whose files need its
        extra keys (TFLite: the ``signature`` and the logical-name ``tensors`` map); None when
        loading a bare file, and a backend that needs nothing from it ignores it."""
        ...

    def describe(self) -> str:
        """One line: version, execution providers/delegates in use."""
        ...
