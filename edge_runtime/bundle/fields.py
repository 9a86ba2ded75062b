"""Checks of manifest fields: key sets, typed values, choices and the bundle path rule.

The spec dataclasses (:mod:`edge_runtime.bundle.specs`) and the manifest
(:mod:`edge_runtime.bundle.manifest`) read their fields with these; spec-file readers
(``exporter/specs.py``) reuse :func:`check_keys` with ``strict=True``. Every error names where
it is (``where``: the file and the field's path) and is raised as ``exc``
(:class:`~edge_runtime.errors.BundleError` unless told otherwise).

Example::

    from edge_runtime.bundle.fields import bundle_path_problem, check_keys, get_field
    check_keys(data, ("name", "shape"), "input.toml", strict=True, exc=ConfigError)
    name = get_field(data, "name", str, "input.toml", ConfigError)
    assert bundle_path_problem("../etc/passwd") is not None
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from edge_runtime.errors import BundleError, EdgeRuntimeError, close_matches

logger = logging.getLogger(__name__)


def field_error(exc: type[EdgeRuntimeError], where: str, message: str) -> EdgeRuntimeError:
    """``exc("<where>: <message>")``, to be raised."""
    return exc(f"{where}: {message}")


def check_keys(
    data: Mapping[str, Any],
    allowed: Sequence[str] | frozenset[str],
    where: str,
    *,
    strict: bool,
    exc: type[EdgeRuntimeError] = BundleError,
) -> None:
    """Reject (``strict``) or log unknown keys of ``data``, naming close matches."""
    for key in data:
        if key in allowed:
            continue
        hint = close_matches(str(key), allowed)
        if strict:
            raise field_error(exc, where, f"unknown key {key!r}{hint}; valid keys: {', '.join(sorted(allowed))}")
        logger.warning("%s: ignoring unknown key %r%s (written by a newer exporter?)", where, key, hint)


def get_field(
    data: Mapping[str, Any],
    key: str,
    kind: type | tuple[type, ...],
    where: str,
    exc: type[EdgeRuntimeError],
    default: Any = ...,
) -> Any:
    """``data[key]`` when it is a ``kind`` (an int is a float; a bool is neither); ``default``
    when missing (``...``: required)."""
    if key not in data:
        if default is ...:
            raise field_error(exc, where, f"missing required key {key!r}")
        return default
    value = data[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise field_error(exc, where, f"{key!r} must be {names}, got {value!r}")
    return value


def check_choice(value: str, choices: Sequence[str], key: str, where: str, exc: type[EdgeRuntimeError]) -> str:
    """``value`` when it is one of ``choices``; the error names close matches."""
    if value not in choices:
        raise field_error(
            exc, where, f"{key}={value!r} is not one of {', '.join(choices)}{close_matches(value, choices)}"
        )
    return value


def number_tuple(value: Any, key: str, where: str, exc: type[EdgeRuntimeError]) -> tuple[float, ...]:
    """A number or a list of numbers, as a tuple of floats."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value),)
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        raise field_error(exc, where, f"{key!r} must be a number or a list of numbers, got {value!r}")
    return tuple(float(v) for v in value)


def name_tuple(value: Any, key: str, where: str, exc: type[EdgeRuntimeError]) -> tuple[str, ...]:
    """A name or a non-empty list of names, as a tuple."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) and v for v in value):
        raise field_error(exc, where, f"{key!r} must be a non-empty list of names, got {value!r}")
    return tuple(value)


#: Names a bundle may not list in ``files``: the manifest and its signature are not hashed files.
RESERVED_NAMES = frozenset({"manifest.json", "manifest.sig"})
#: Longest relative path accepted in a bundle (bytes of UTF-8).
MAX_PATH_BYTES = 1024


def bundle_path_problem(rel: Any) -> str | None:
    """Why ``rel`` is not a safe path inside a bundle, or None when it is one.

    The one rule for every path a manifest names (``files`` keys, artifact and self-test
    paths): a non-empty, normalised, relative POSIX path (``heads/box.fp32.onnx``): no leading
    ``/``, no ``..``, ``.`` or empty component, no backslash, NUL or other control character,
    not ``manifest.json`` / ``manifest.sig``. Resolved against any root it stays below it,
    and it names the same file under every root (updates resolve one path against the staged
    package and the running bundle).
    """
    if not isinstance(rel, str) or not rel:
        return f"must be a non-empty relative path, got {rel!r}"
    if len(rel.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        return f"is longer than {MAX_PATH_BYTES} bytes"
    if any(ord(c) < 0x20 or c in "\\\x7f" for c in rel):
        return f"{rel!r} holds a backslash or a control character"
    if rel.startswith("/"):
        return f"{rel!r} must stay inside the bundle (an absolute path)"
    parts = rel.split("/")
    if ".." in parts:
        return f"{rel!r} must stay inside the bundle (no '..')"
    if any(part in ("", ".") for part in parts):
        return f"{rel!r} is not normalised (empty or '.' component)"
    if rel in RESERVED_NAMES:
        return f"{rel!r} is the manifest or its signature, not a listed file"
    return None


def check_bundle_path(rel: Any, what: str, where: str, exc: type[EdgeRuntimeError] = BundleError) -> str:
    """``rel`` when :func:`bundle_path_problem` finds nothing; else ``exc`` naming ``what``."""
    problem = bundle_path_problem(rel)
    if problem is not None:
        raise field_error(exc, where, f"{what} {problem}")
    return str(rel)
