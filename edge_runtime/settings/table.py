"""Settings declared once: a :class:`Setting` row per setting, a :class:`Table` of rows, and
everything derived from it (file validation with origins, environment, flags, dataclass fields).

A row holds the name, kind, default, check (range, a format's limit, choices or a function),
help, group, environment variable (``PREFIX + NAME``, or none), flag (``--name-with-dashes``
unless given, or none) and the remote commands that may change the setting at run time.

Example::

    TABLE = Table("EDGE_RUNTIME_", (Setting("threads", "int", None, "intra-op threads", minimum=1),))
    merged, origins = TABLE.merge("config.toml", flags={"threads": None}, environ=os.environ)
    values = TABLE.validate(merged, "config.toml", origins)   # {"threads": 4}: converted and checked
    TABLE.add_flags(parser)                                    # --threads N, grouped by row.group
    TABLE.environment({"EDGE_RUNTIME_THREADS": "two"})         # ConfigError: EDGE_RUNTIME_THREADS='two': ...

Errors name the key and where its value came from (the file, the variable or the flag):
``config.toml: status_interval_s must be a finite number > 0, got nan``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.errors import ConfigError, close_matches
from edge_runtime.specfiles import load_mapping_file

#: The kinds a setting may have: how a value is typed in a file, parsed from the environment,
#: taken from a flag and converted.
KINDS = ("str", "int", "float", "bool", "path", "paths", "table")
#: ``flag`` of a row without one (file, environment and remote commands only).
NO_FLAG = None
_DERIVED = ""
_PHRASES = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "path": "a path",
    "paths": "a path or a list of paths",
    "table": "a table",
}


@dataclass(frozen=True)
class Setting:
    """One setting. ``default`` (or ``factory``, called per instance) is the value in force when
    nothing sets it; ``default_doc`` says it in words where it is computed (the host name, the
    device profile's). ``minimum`` / ``maximum`` are inclusive, ``above`` exclusive; ``limit``
    (inclusive) is the largest value the format the setting is sent in can carry (an MQTT v5
    four-byte interval), beyond what the setting means: checked after the range, its error says
    why (``limit_why``); ``choices`` lists the valid values; ``check(value)`` raises
    :class:`ConfigError` (without the origin: the table adds it) and returns the value to keep.
    ``commands``: the remote commands that change it at run time (docs/protocol.md §9; not
    persisted)."""

    name: str
    kind: str
    default: Any = None
    help: str = ""
    group: str = ""
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    limit: float | None = None
    limit_why: str = ""
    choices: tuple[Any, ...] | None = None
    check: Callable[[Any], Any] | None = None
    factory: Callable[[], Any] | None = None
    default_doc: str | Callable[[], str] | None = None
    required: bool = False
    env: bool = True
    flag: str | None = _DERIVED
    metavar: str | None = None
    what: str | None = None
    commands: tuple[str, ...] = ()
    profile_default: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"setting {self.name}: kind {self.kind!r} is not one of {KINDS}")

    @property
    def phrase(self) -> str:
        """What a value must be, in words: ``an integer``, ``true or false``."""
        return self.what or _PHRASES[self.kind]

    def bounds(self) -> str:
        """The range in words (``>= 1``, ``> 0``, ``from 0 to 65535``), or ``""``."""
        if self.minimum is not None and self.maximum is not None:
            return f"from {_number(self.minimum)} to {_number(self.maximum)}"
        if self.above is not None:
            return f"> {_number(self.above)}"
        if self.minimum is not None:
            return f">= {_number(self.minimum)}"
        if self.maximum is not None:
            return f"<= {_number(self.maximum)}"
        return ""

    def limit_text(self) -> str:
        """The format's limit in words (``at most 4294967295 (the largest ...)``), or ``""``."""
        if self.limit is None:
            return ""
        return f"at most {_number(self.limit)}" + (f" ({self.limit_why})" if self.limit_why else "")

    def default_text(self) -> str:
        """The default as the docs and ``--help`` show it."""
        if self.default_doc is not None:
            return self.default_doc if isinstance(self.default_doc, str) else self.default_doc()
        if self.required:
            return "required"
        value = self.default
        if value is None:
            return "not set"
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, tuple) and not value:
            return "none"
        if isinstance(value, (int, float)):
            return _number(value)
        return str(value)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _choice_list(choices: Sequence[Any]) -> str:
    texts = [str(c) for c in choices]
    return texts[0] if len(texts) == 1 else ", ".join(texts[:-1]) + " or " + texts[-1]


class Table:
    """The rows of one command's settings (``run``, ``subscribe``) or of a nested table
    (``heads.<name>``): ``prefix`` starts their environment variables; ``ignore`` lists longer
    prefixes that belong to another table (``EDGE_RUNTIME_SUBSCRIBE_`` is not ``run``'s)."""

    def __init__(
        self,
        prefix: str,
        rows: Iterable[Setting],
        *,
        noun: str = "setting",
        ignore: tuple[str, ...] = (),
        key_prefix: str = "",
    ) -> None:
        self.prefix = prefix
        self.rows = tuple(rows)
        self.noun = noun
        self.ignore = ignore
        #: What names of this table are written with in errors and docs (``heads.<name>.``).
        self.key_prefix = key_prefix
        self.by_name = {row.name: row for row in self.rows}
        if len(self.by_name) != len(self.rows):
            raise ValueError("a setting is declared twice")

    def __getitem__(self, name: str) -> Setting:
        return self.by_name[name]

    def keys(self) -> tuple[str, ...]:
        """Every key, in the table's order."""
        return tuple(self.by_name)

    def env_name(self, row: Setting) -> str | None:
        """``EDGE_RUNTIME_MAX_FRAMES`` for ``max_frames``; None for a file-only row."""
        return self.prefix + row.name.upper() if row.env and self.prefix else None

    @staticmethod
    def flag(row: Setting) -> str | None:
        """``--max-frames`` for ``max_frames`` (unless the row names another), or None."""
        if row.flag == _DERIVED:
            return "--" + row.name.replace("_", "-")
        return row.flag

    @staticmethod
    def metavar(row: Setting) -> str:
        """What the flag's value is called in ``--help`` and the docs: ``N``, ``msgpack|json``."""
        if row.metavar:
            return row.metavar
        if row.choices is not None:
            return "|".join(str(c) for c in row.choices)
        return row.name.upper()

    def ways(self, name: str) -> str:
        """``--client-id, EDGE_RUNTIME_SUBSCRIBE_CLIENT_ID or the config key 'client_id'``."""
        row = self.by_name[name]
        ways = [w for w in (self.flag(row), self.env_name(row)) if w]
        return f"{', '.join(ways)} or the config key {name!r}" if ways else f"the config key {name!r}"

    def field(self, name: str) -> Any:
        """The dataclass field of setting ``name`` (its default or default factory from the row)."""
        row = self.by_name[name]
        if row.required:
            raise ValueError(f"setting {name} is required: declare its field without a default")
        if row.factory is not None:
            return dataclasses.field(default_factory=row.factory)
        return dataclasses.field(default=row.default)

    # -- values ------------------------------------------------------------------------------

    def check_value(self, name: str, value: Any) -> Any:
        """``value`` checked and converted for setting ``name``; :class:`ConfigError` without
        the origin (``threads must be an integer >= 1, got 0``)."""
        row = self.by_name[name]
        key = self.key_prefix + name
        given, value = value, self._typed(row, key, value)
        if row.choices is not None and value not in row.choices:
            if isinstance(value, str) and all(isinstance(c, str) for c in row.choices):
                raise ConfigError(
                    f"{key} {value!r} is not one of {', '.join(row.choices)}{close_matches(value, row.choices)}"
                )
            raise ConfigError(f"{key} must be {_choice_list(row.choices)}, got {value!r}")
        if row.kind in ("int", "float"):
            low_ok = (row.minimum is None or value >= row.minimum) and (row.above is None or value > row.above)
            if not low_ok or (row.maximum is not None and value > row.maximum):
                raise ConfigError(f"{key} must be {row.phrase} {row.bounds()}, got {given!r}")
            if row.limit is not None and value > row.limit:
                raise ConfigError(f"{key} must be {row.limit_text()}, got {given!r}")
        if row.check is not None:
            value = row.check(value)
        return value

    def _typed(self, row: Setting, key: str, value: Any) -> Any:
        kind = row.kind

        def wrong() -> ConfigError:
            if row.choices is not None:
                return ConfigError(f"{key} must be {_choice_list(row.choices)}, got {value!r}")
            bounds = f" {row.bounds()}" if kind in ("int", "float") and row.bounds() else ""
            return ConfigError(f"{key} must be {row.phrase}{bounds}, got {value!r}")

        if kind in ("str", "path"):
            if not isinstance(value, (str, Path)) or (kind == "path" and not str(value)):
                raise wrong()
            return Path(value) if kind == "path" else str(value)
        if kind == "bool":
            if not isinstance(value, bool):
                raise wrong()
            return value
        if kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise wrong()
            return value
        if kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise wrong()
            try:
                number = float(value)
            except OverflowError:
                raise ConfigError(f"{key} must be a finite number, got {value!r}") from None
            if not math.isfinite(number):
                bounds = f" {row.bounds()}" if row.bounds() else ""
                raise ConfigError(f"{key} must be a finite number{bounds}, got {value!r}")
            return number
        if kind == "paths":
            items = [value] if isinstance(value, (str, Path)) else value
            if not isinstance(items, (list, tuple)) or not all(isinstance(i, (str, Path)) and str(i) for i in items):
                raise wrong()
            return tuple(Path(i) for i in items)
        if not isinstance(value, Mapping):  # "table": the row's check converts it
            raise wrong()
        return value

    def validate(
        self, data: Mapping[str, Any], where: str = "configuration", origins: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """Every given value of ``data`` checked and converted (``None`` = not given); unknown
        keys and missing required ones are errors. Errors start with the value's origin
        (``origins[key]``, else ``where``)."""
        origins = origins or {}
        keys = self.keys()
        at = f"{self.key_prefix.rstrip('.')}: " if self.key_prefix else ""
        for key in data:
            if key not in keys:
                raise ConfigError(
                    f"{origins.get(key, where)}: {at}unknown key {key!r}{close_matches(str(key), keys)}; "
                    f"valid keys: {', '.join(keys)}"
                )
        for row in self.rows:
            if row.required and data.get(row.name) in (None, ""):
                raise ConfigError(f"{where}: {row.name!r} is required ({self.ways(row.name)})")
        values: dict[str, Any] = {}
        for key, value in data.items():
            if value is None:
                continue
            try:
                values[key] = self.check_value(key, value)
            except ConfigError as exc:
                raise ConfigError(f"{origins.get(key, where)}: {exc}") from exc
        return values

    # -- sources -----------------------------------------------------------------------------

    def environment(self, environ: Mapping[str, str]) -> dict[str, Any]:
        """``EDGE_RUNTIME_MAX_FRAMES=10`` → ``{"max_frames": 10}`` (parsed, not yet checked);
        an unknown name under the prefix is an error with close matches."""
        names = {self.env_name(row): row for row in self.rows if self.env_name(row)}
        settings: dict[str, Any] = {}
        for name, raw in environ.items():
            if not name.startswith(self.prefix) or name.startswith(self.ignore):
                continue
            row = names.get(name)
            if row is None:
                known = sorted(n for n in names if n)
                raise ConfigError(
                    f"environment variable {name} is not a {self.noun}{close_matches(name, known)}; "
                    f"known: {', '.join(known)}"
                )
            if row.kind == "paths":
                settings[row.name] = [part.strip() for part in raw.split(",") if part.strip()]
            else:
                kind = {"int": int, "float": float, "bool": bool}.get(row.kind, str)
                settings[row.name] = parse_env_value(raw, name, kind)
        return settings

    def merge(
        self,
        config_file: str | Path | None,
        flags: Mapping[str, Any] | None,
        environ: Mapping[str, str],
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """The file's values < ``environ``'s < the flags' (``None`` = not given), and the origin
        of each key (the file, the variable, the flag)."""
        merged: dict[str, Any] = {}
        origins: dict[str, str] = {}
        if config_file is not None:
            for key, value in load_mapping_file(config_file).items():
                merged[key], origins[key] = value, str(config_file)
        for key, value in self.environment(environ).items():
            merged[key], origins[key] = value, self.env_name(self.by_name[key]) or key
        for key, value in (flags or {}).items():
            if value is not None:
                merged[key], origins[key] = value, self.flag(self.by_name[key]) or key
        return merged, origins

    def add_flags(self, parser: argparse.ArgumentParser, help_for: Callable[[Setting], str] | None = None) -> None:
        """One flag per row that has one, in argument groups named by ``row.group`` (the
        order and titles of docs/configuration.md). Every flag defaults to None: not given."""
        groups: dict[str, Any] = {}
        for row in self.rows:
            flag = self.flag(row)
            if flag is None:
                continue
            group = groups.get(row.group)
            if group is None:
                group = groups[row.group] = parser.add_argument_group(row.group or None)
            default = (
                "required: here, in the environment or in --config"
                if row.required
                else (f"default: {row.default_text()}")
            )
            text = help_for(row) if help_for is not None else f"{row.help} ({default})"
            kwargs: dict[str, Any] = {"dest": row.name, "default": None, "help": text.replace("%", "%%")}
            metavar = self.metavar(row)
            if row.kind == "bool":
                group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
                continue
            if row.kind == "paths":
                kwargs["action"] = "append"
            elif row.kind in ("int", "float"):
                kwargs["type"] = int if row.kind == "int" else float
            group.add_argument(flag, metavar=metavar, **kwargs)

    def flag_values(self, args: argparse.Namespace) -> dict[str, Any]:
        """The flags of :meth:`add_flags` read back from parsed ``args`` (None: not given)."""
        return {row.name: getattr(args, row.name, None) for row in self.rows if self.flag(row) is not None}


def parse_env_value(raw: str, name: str, kind: type) -> Any:
    """The text of environment variable ``name`` as ``kind`` (int, float, bool or str); a
    ConfigError naming the variable when it is not one."""
    if kind is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}={raw!r}: expected true or false")
    if kind in (int, float):
        try:
            return kind(raw)
        except ValueError as exc:
            raise ConfigError(f"{name}={raw!r}: expected {'an integer' if kind is int else 'a number'}") from exc
    return raw


__all__ = ["KINDS", "NO_FLAG", "Setting", "Table", "parse_env_value"]
