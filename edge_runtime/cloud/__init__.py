"""The cloud side: the subscriber (decode, de-duplicate, gaps, writers).

Public names are imported from their module on first use (:mod:`edge_runtime.lazy_exports`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_runtime.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from edge_runtime.cloud.cli import (
        SUBSCRIBE_EXAMPLES as SUBSCRIBE_EXAMPLES,
    )
    from edge_runtime.cloud.cli import (
        add_subscribe_arguments as add_subscribe_arguments,
    )
    from edge_runtime.cloud.cli import (
        options_from_args as options_from_args,
    )
    from edge_runtime.cloud.cli import (
        run_subscribe as run_subscribe,
    )
    from edge_runtime.cloud.options import (
        ENV_PREFIX as ENV_PREFIX,
    )
    from edge_runtime.cloud.options import (
        FLAGS as FLAGS,
    )
    from edge_runtime.cloud.options import (
        MAX_SESSION_EXPIRY_S as MAX_SESSION_EXPIRY_S,
    )
    from edge_runtime.cloud.options import (
        SubscribeOptions as SubscribeOptions,
    )
    from edge_runtime.cloud.options import (
        environment_settings as environment_settings,
    )
    from edge_runtime.cloud.stream import (
        CONNECT_TIMEOUT_S as CONNECT_TIMEOUT_S,
    )
    from edge_runtime.cloud.stream import (
        QUEUE_MAX_BYTES as QUEUE_MAX_BYTES,
    )
    from edge_runtime.cloud.stream import (
        QUEUE_MAX_MESSAGES as QUEUE_MAX_MESSAGES,
    )
    from edge_runtime.cloud.stream import (
        ResultStream as ResultStream,
    )
    from edge_runtime.cloud.stream import (
        iter_results as iter_results,
    )
    from edge_runtime.cloud.stream import (
        topic_device as topic_device,
    )
    from edge_runtime.cloud.tracker import (
        MAX_PENDING as MAX_PENDING,
    )
    from edge_runtime.cloud.tracker import (
        Key as Key,
    )
    from edge_runtime.cloud.tracker import (
        StreamTracker as StreamTracker,
    )
    from edge_runtime.cloud.writers import (
        CSV_COLUMNS as CSV_COLUMNS,
    )
    from edge_runtime.cloud.writers import (
        FORMATS as FORMATS,
    )
    from edge_runtime.cloud.writers import (
        CsvWriter as CsvWriter,
    )
    from edge_runtime.cloud.writers import (
        FdTextSink as FdTextSink,
    )
    from edge_runtime.cloud.writers import (
        JsonLinesWriter as JsonLinesWriter,
    )
    from edge_runtime.cloud.writers import (
        Writer as Writer,
    )
    from edge_runtime.cloud.writers import (
        open_writer as open_writer,
    )
    from edge_runtime.cloud.writers import (
        stdout_sink as stdout_sink,
    )

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "cli": ("SUBSCRIBE_EXAMPLES", "add_subscribe_arguments", "options_from_args", "run_subscribe"),
        "options": ("ENV_PREFIX", "FLAGS", "MAX_SESSION_EXPIRY_S", "SubscribeOptions", "environment_settings"),
        "stream": (
            "CONNECT_TIMEOUT_S",
            "QUEUE_MAX_BYTES",
            "QUEUE_MAX_MESSAGES",
            "ResultStream",
            "iter_results",
            "topic_device",
        ),
        "tracker": ("MAX_PENDING", "Key", "StreamTracker"),
        "writers": (
            "CSV_COLUMNS",
            "FORMATS",
            "CsvWriter",
            "FdTextSink",
            "JsonLinesWriter",
            "Writer",
            "open_writer",
            "stdout_sink",
        ),
    },
)
