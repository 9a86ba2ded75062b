"""Read a small settings file (YAML, TOML or JSON, chosen by suffix) into a dict.

Used for ``--input-spec``, ``--head-spec`` and daemon config files. Errors name the file
and, where the parser gives one, the line.

Example::

    from edge_runtime.specfiles import load_mapping_file
    spec = load_mapping_file("examples/demo_input.toml")
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from edge_runtime.bounded_json import loads_bounded
from edge_runtime.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

SUFFIXES = (".json", ".toml", ".yaml", ".yml")


def load_mapping_file(path: str | Path) -> dict[str, Any]:
    """Parse ``path`` by its suffix and return the top-level mapping.

    Raises :class:`ConfigError` for a missing file, an unknown suffix, a syntax error or a
    top level that is not a mapping.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ConfigError(f"{path}: unknown spec file type {suffix!r}; use one of {', '.join(SUFFIXES)}")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    try:
        if suffix == ".json":
            data = loads_bounded(text)
        elif suffix == ".toml":
            data = tomllib.loads(text)
        else:
            try:
                import yaml
            except ImportError as exc:
                raise ConfigError(
                    f"{path}: reading YAML needs PyYAML: pip install 'edge-runtime[yaml]' "
                    "(or write the file as TOML or JSON)"
                ) from exc
            data = yaml.safe_load(text)
    except ConfigError:
        raise
    except Exception as exc:  # each parser has its own error type; all mean a syntax error
        raise ConfigError(f"{path}: not valid {suffix[1:].upper()}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data
