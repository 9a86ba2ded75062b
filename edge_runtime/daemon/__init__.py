"""The daemon: capture, inference and output threads, hot swaps, remote control.

Public names are imported from their module on first use (:mod:`edge_runtime.lazy_exports`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_runtime.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from edge_runtime.daemon.handoff import (
        LatestFrameSlot as LatestFrameSlot,
    )
    from edge_runtime.daemon.handoff import (
        notify_systemd as notify_systemd,
    )
    from edge_runtime.daemon.pipeline import (
        Daemon as Daemon,
    )
    from edge_runtime.daemon.remote_control import (
        DaemonController as DaemonController,
    )
    from edge_runtime.daemon.remote_control import (
        attach_commands as attach_commands,
    )
    from edge_runtime.daemon.sinks import (
        JsonLinesSink as JsonLinesSink,
    )
    from edge_runtime.daemon.sinks import (
        ResultSink as ResultSink,
    )
    from edge_runtime.daemon.status import (
        STAGE_WINDOW as STAGE_WINDOW,
    )
    from edge_runtime.daemon.status import (
        PipelineCounters as PipelineCounters,
    )
    from edge_runtime.daemon.status import (
        StageStats as StageStats,
    )
    from edge_runtime.daemon.swaps import (
        BOOT_OK_FRAMES as BOOT_OK_FRAMES,
    )
    from edge_runtime.daemon.swaps import (
        PROBATION_FRAMES as PROBATION_FRAMES,
    )
    from edge_runtime.daemon.swaps import (
        STATE_POLL_S as STATE_POLL_S,
    )
    from edge_runtime.daemon.swaps import (
        HotSwaps as HotSwaps,
    )
    from edge_runtime.daemon.validation import (
        build_engine as build_engine,
    )
    from edge_runtime.daemon.validation import (
        validate as validate,
    )

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "handoff": ("LatestFrameSlot", "notify_systemd"),
        "pipeline": ("Daemon",),
        "remote_control": ("DaemonController", "attach_commands"),
        "sinks": ("JsonLinesSink", "ResultSink"),
        "status": ("STAGE_WINDOW", "PipelineCounters", "StageStats"),
        "swaps": ("BOOT_OK_FRAMES", "PROBATION_FRAMES", "STATE_POLL_S", "HotSwaps"),
        "validation": ("build_engine", "validate"),
    },
)
