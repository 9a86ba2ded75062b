"""Delivery: the spool (store-and-forward, gapless seq) and its file, state, publishing policy and MQTT.

Public names are imported from their module on first use (:mod:`edge_runtime.lazy_exports`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_runtime.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from edge_runtime.delivery.reporting import (
        HeadPolicy as HeadPolicy,
    )
    from edge_runtime.delivery.reporting import (
        Reporter as Reporter,
    )
    from edge_runtime.delivery.reporting import (
        changed as changed,
    )
    from edge_runtime.delivery.spool import (
        Spool as Spool,
    )
    from edge_runtime.delivery.spool import (
        SpooledMessage as SpooledMessage,
    )
    from edge_runtime.delivery.spool import (
        SpoolStats as SpoolStats,
    )
    from edge_runtime.delivery.spool_file import (
        DiskFullError as DiskFullError,
    )
    from edge_runtime.delivery.spool_file import (
        SpoolError as SpoolError,
    )
    from edge_runtime.delivery.spool_file import (
        SpoolOptions as SpoolOptions,
    )
    from edge_runtime.delivery.state import (
        StateDir as StateDir,
    )
    from edge_runtime.delivery.state import (
        read_heartbeat as read_heartbeat,
    )

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "reporting": ("HeadPolicy", "Reporter", "changed"),
        "spool": ("SpooledMessage", "SpoolStats", "Spool"),
        "spool_file": ("DiskFullError", "SpoolError", "SpoolOptions"),
        "state": ("StateDir", "read_heartbeat"),
    },
)
