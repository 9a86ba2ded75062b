"""docs/configuration.md, generated from the settings tables: ``python -m edge_runtime.settings
> docs/configuration.md`` (tests/test_settings.py fails when the committed page is stale).

Example::

    text = render_markdown()     # the whole page, one section per command, one table per group
"""

from __future__ import annotations

from collections.abc import Iterator

from edge_runtime.settings.run import HEAD_GROUP, HEADS, RUN
from edge_runtime.settings.subscribe import SUBSCRIBE
from edge_runtime.settings.table import Setting, Table

COMMAND = "python -m edge_runtime.settings > docs/configuration.md"
_KINDS = {"paths": "path list", "table": "table"}

_INTRO = f"""\
# Configuration

<!-- Generated from edge_runtime/settings/ by `{COMMAND}`: do not edit by hand. -->

Every setting is declared once, in `edge_runtime/settings/` (`run.py` for `edge-runtime run`,
`subscribe.py` for `edge-runtime subscribe`); the file keys, environment variables, flags, the
checks and this page all come from there.

**Where a value comes from**, lowest precedence first:

1. the bundle manifest (per-head schedule, QoS and expiry) and the defaults below;
2. the config file (`--config FILE`: TOML, YAML or JSON, the keys below);
3. environment variables (`EDGE_RUNTIME_<KEY>` for `run`, `EDGE_RUNTIME_SUBSCRIBE_<KEY>` for
   `subscribe`; a list of paths is comma-separated);
4. command-line flags;
5. signed remote commands (docs/protocol.md §9), for the settings whose *remote command* column
   names one: they act on the running daemon only and are not persisted, so a restart starts
   from the configuration again.

Every value is checked where it comes from, and an error names the key and its origin
(`config.toml: heads.box.expiry_s must be a number >= 1, got 0`,
`EDGE_RUNTIME_STATUS_INTERVAL_S: status_interval_s must be a finite number > 0, got nan`).
Numbers must be finite (NaN and infinity are refused); an unknown key or variable is an error
with close matches. Defaults marked *the device profile's* come from the board's profile
(`edge-runtime device` shows which one applies and why).
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _plain(text: str) -> str:
    """Text outside code spans: ``<name>`` must not read as an HTML tag."""
    return text.replace("<", "&lt;").replace(">", "&gt;").replace("&gt;=", ">=")


def _values(row: Setting) -> str:
    if row.choices is not None:
        return ", ".join(f"`{c}`" for c in row.choices)
    return ", ".join(text for text in (row.bounds(), row.limit_text()) if text)


def _rows(table: Table, rows: list[Setting], with_commands: bool) -> Iterator[str]:
    header = ["key", "type", "default", "values", "environment", "flag"]
    if with_commands:
        header.append("remote command")
    header.append("description")
    yield "| " + " | ".join(header) + " |"
    yield "|" + "---|" * len(header)
    for row in rows:
        env, flag = table.env_name(row), table.flag(row)
        if row.kind == "bool" and flag:
            flag_text = f"`{flag}` / `--no-{flag[2:]}`"
        else:
            flag_text = f"`{flag} {table.metavar(row)}`" if flag else "—"
        default = row.default_text()
        default = f"`{default}`" if row.default_doc is None and not row.required else _plain(default)
        cells = [
            f"`{table.key_prefix}{row.name}`",
            _KINDS.get(row.kind, row.kind),
            default,
            _values(row),
            f"`{env}`" if env else "—",
            flag_text,
        ]
        if with_commands:
            cells.append(", ".join(f"`{c}`" for c in row.commands) or "—")
        cells.append(_plain(row.help))
        yield "| " + " | ".join(_cell(c) for c in cells) + " |"


def _section(title: str, text: str, table: Table) -> Iterator[str]:
    yield f"## {title}"
    yield ""
    yield text
    groups: dict[str, list[Setting]] = {}
    for row in table.rows:
        groups.setdefault(row.group, []).append(row)
    for group, rows in groups.items():
        yield ""
        yield f"### {group}"
        yield ""
        yield from _rows(table, rows, any(row.commands for row in rows))


def render_markdown() -> str:
    """The text of docs/configuration.md."""
    lines = [_INTRO]
    lines += _section(
        "`edge-runtime run`",
        "`edge-runtime run --config FILE` reads the keys below from FILE; `run --help` lists the flags in "
        "the same groups. `--validate` checks the configuration, the bundle and the source, then exits.",
        Table(RUN.prefix, [row for row in RUN.rows if row.name != "heads"], ignore=RUN.ignore),
    )
    lines += ["", f"### {HEAD_GROUP}", ""]
    lines.append(
        "`[heads.<name>]` tables override the bundle manifest's schedule and publishing for one head "
        "(head names: `edge-runtime inspect BUNDLE`); file-only, and the remote commands named here "
        "change them at run time."
    )
    lines.append("")
    lines += _rows(HEADS, list(HEADS.rows), True)
    lines.append("")
    lines += _section(
        "`edge-runtime subscribe`",
        "`edge-runtime subscribe --config FILE` reads the keys below from FILE (`run`'s settings are not "
        "read, and `run` ignores `EDGE_RUNTIME_SUBSCRIBE_*`).",
        SUBSCRIBE,
    )
    return "\n".join(lines) + "\n"


__all__ = ["COMMAND", "render_markdown"]
