"""The one small interface every inference backend implements.

A backend loads one graph file of its format into a :class:`GraphSession`; the engine
feeds sessions by tensor *name* and passes the values one session returns straight into
the next (values of the backend's choosing: numpy arrays for ONNX Runtime, ``TfliteValue``
for TFLite), so the trunk's features reach every head without another copy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edge_runtime.bundle.specs import Artifact


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
