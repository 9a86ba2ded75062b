"""JSON parsing with a bound on nesting, for everything the device reads from outside.

``json.loads`` recurses once per nesting level: a manifest, a command or an update's
metadata nested 100,000 levels deep raises ``RecursionError`` (a traceback, or an "internal
error" in a long-running daemon). :func:`loads_bounded` checks the nesting first, in one
linear pass over the brackets outside strings, and raises :class:`JsonNestingError` (a
``ValueError``, like ``json.JSONDecodeError``) before the parser recurses.

Example::

    from edge_runtime.bounded_json import loads_bounded
    data = loads_bounded(path.read_bytes())            # ValueError when malformed or too deep
    data = loads_bounded(text, max_depth=8, parse_constant=reject)
"""

from __future__ import annotations

import json
import re
from typing import Any

#: Deepest nesting accepted (objects and arrays). Manifests, commands and status messages
#: nest fewer than 10 levels.
MAX_DEPTH = 64

# A JSON string (escapes included, written as an unrolled loop: linear, no backtracking), or one
# bracket. Brackets inside strings are matched as part of the string and so not counted.
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)


class JsonNestingError(ValueError):
    """A JSON document nests objects/arrays deeper than the limit."""


def check_depth(text: str, max_depth: int = MAX_DEPTH) -> None:
    """Raise :class:`JsonNestingError` when ``text`` opens more than ``max_depth`` nested
    objects/arrays at some point (malformed text is left to the parser)."""
    depth = 0
    for match in _TOKENS.finditer(text):
        char = text[match.start()]
        if char in "[{":
            depth += 1
            if depth > max_depth:
                raise JsonNestingError(f"nested deeper than {max_depth} levels (at character {match.start()})")
        elif char in "]}":
            depth -= 1


def loads_bounded(data: str | bytes | bytearray, *, max_depth: int = MAX_DEPTH, **kwargs: Any) -> Any:
    """``json.loads(data, **kwargs)`` after :func:`check_depth`. Bytes must be UTF-8.

    Raises ``ValueError``: :class:`JsonNestingError`, ``json.JSONDecodeError`` or
    ``UnicodeDecodeError`` (both ``ValueError`` subclasses)."""
    text = bytes(data).decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
    check_depth(text, max_depth)
    try:
        return json.loads(text, **kwargs)
    except RecursionError as exc:  # an object_hook or parse_* callback recursing: still a bad document
        raise JsonNestingError(f"nested too deeply to parse (limit {max_depth} levels)") from exc


__all__ = ["MAX_DEPTH", "JsonNestingError", "check_depth", "loads_bounded"]
