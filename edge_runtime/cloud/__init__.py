"""The cloud side: the subscriber (decode, de-duplicate, gaps, writers).

Public names are imported from their module on first use (:mod:`edge_runtime.lazy_exports`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_runtime.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from edge_runtime.cloud.subscriber import (
        CSV_COLUMNS as CSV_COLUMNS,
    )
    from edge_runtime.cloud.subscriber import (
        FORMATS as FORMATS,
    )
    from edge_runtime.cloud.subscriber import (
        SUBSCRIBE_EXAMPLES as SUBSCRIBE_EXAMPLES,
    )
    from edge_runtime.cloud.subscriber import (
        CsvWriter as CsvWriter,
    )
    from edge_runtime.cloud.subscriber import (
        FdTextSink as FdTextSink,
    )
    from edge_runtime.cloud.subscriber import (
        JsonLinesWriter as JsonLinesWriter,
    )
    from edge_runtime.cloud.subscriber import (
        ResultStream as ResultStream,
    )
    from edge_runtime.cloud.subscriber import (
        StreamTracker as StreamTracker,
    )
    from edge_runtime.cloud.subscriber import (
        SubscribeOptions as SubscribeOptions,
    )
    from edge_runtime.cloud.subscriber import (
        add_subscribe_arguments as add_subscribe_arguments,
    )
    from edge_runtime.cloud.subscriber import (
        iter_results as iter_results,
    )
    from edge_runtime.cloud.subscriber import (
        open_writer as open_writer,
    )
    from edge_runtime.cloud.subscriber import (
        options_from_args as options_from_args,
    )
    from edge_runtime.cloud.subscriber import (
        run_subscribe as run_subscribe,
    )
    from edge_runtime.cloud.subscriber import (
        topic_device as topic_device,
    )

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "subscriber": (
            "CSV_COLUMNS",
            "FORMATS",
            "SUBSCRIBE_EXAMPLES",
            "CsvWriter",
            "FdTextSink",
            "JsonLinesWriter",
            "ResultStream",
            "StreamTracker",
            "SubscribeOptions",
            "add_subscribe_arguments",
            "iter_results",
            "open_writer",
            "options_from_args",
            "run_subscribe",
            "topic_device",
        ),
    },
)
