"""Every setting declared once: the tables of ``edge-runtime run`` (:data:`RUN`, :data:`HEADS`) and
``edge-runtime subscribe`` (:data:`SUBSCRIBE`), the :class:`Setting` row and the :class:`Table`
that derives file validation, environment variables, flags and docs/configuration.md from them.

Public names are imported from their module on first use (:mod:`edge_runtime.lazy_exports`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_runtime.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from edge_runtime.settings.heads import HEADS as HEADS
    from edge_runtime.settings.heads import MAX_MESSAGE_EXPIRY_S as MAX_MESSAGE_EXPIRY_S
    from edge_runtime.settings.heads import check_head_value as check_head_value
    from edge_runtime.settings.page import render_markdown as render_markdown
    from edge_runtime.settings.run import RUN as RUN
    from edge_runtime.settings.run import default_state_dir as default_state_dir
    from edge_runtime.settings.subscribe import SUBSCRIBE as SUBSCRIBE
    from edge_runtime.settings.table import Setting as Setting
    from edge_runtime.settings.table import Table as Table
    from edge_runtime.settings.table import parse_env_value as parse_env_value

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "heads": ("HEADS", "MAX_MESSAGE_EXPIRY_S", "check_head_value"),
        "page": ("render_markdown",),
        "run": ("RUN", "default_state_dir"),
        "subscribe": ("SUBSCRIBE",),
        "table": ("Setting", "Table", "parse_env_value"),
    },
)
