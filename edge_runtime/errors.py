"""One exception hierarchy for the device runtime and the exporter.

Every error a user can cause derives from :class:`EdgeRuntimeError`; the command-line entry
points catch it, print its message and exit with a non-zero code, so a user mistake never
ends in a bare traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class EdgeRuntimeError(Exception):
    """Base class of every error raised on purpose by edge-runtime."""


class ConfigError(EdgeRuntimeError):
    """A configuration file, spec file or command-line value is invalid."""


class BundleError(EdgeRuntimeError):
    """A bundle is missing, malformed, or fails its checksum or signature check."""


class ModelError(EdgeRuntimeError):
    """A model file cannot be read, split or verified."""


class BackendUnavailableError(EdgeRuntimeError):
    """The requested inference backend (or one of its extras) is not installed."""


class TransportError(EdgeRuntimeError):
    """Publishing or subscribing to results failed."""


def close_matches(word: str, choices: Iterable[str], n: int = 3) -> str:
    """Return a ``" (did you mean 'a', 'b'?)"`` suffix for an error message, or ``""``."""
    matches = difflib.get_close_matches(word, list(choices), n=n, cutoff=0.5)
    if not matches:
        return ""
    return " (did you mean " + ", ".join(repr(m) for m in matches) + "?)"
