"""The daemon: capture, inference and output threads, hot swaps, remote control.

Public names are imported from their module on first use (:mod:`edge_runtime.lazy_exports`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_runtime.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from edge_runtime.daemon.pipeline import (
        Daemon as Daemon,
    )
    from edge_runtime.daemon.pipeline import (
        JsonLinesSink as JsonLinesSink,
    )
    from edge_runtime.daemon.pipeline import (
        LatestFrameSlot as LatestFrameSlot,
    )
    from edge_runtime.daemon.pipeline import (
        ResultSink as ResultSink,
    )
    from edge_runtime.daemon.pipeline import (
        StageStats as StageStats,
    )
    from edge_runtime.daemon.pipeline import (
        notify_systemd as notify_systemd,
    )
    from edge_runtime.daemon.pipeline import (
        validate as validate,
    )
    from edge_runtime.daemon.remote_control import (
        DaemonController as DaemonController,
    )
    from edge_runtime.daemon.remote_control import (
        attach_commands as attach_commands,
    )
    from edge_runtime.daemon.swaps import (
        UpdateSlotsMixin as UpdateSlotsMixin,
    )

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "pipeline": (
            "ResultSink",
            "JsonLinesSink",
            "LatestFrameSlot",
            "notify_systemd",
            "StageStats",
            "Daemon",
            "validate",
        ),
        "remote_control": ("DaemonController", "attach_commands"),
        "swaps": ("UpdateSlotsMixin",),
    },
)
