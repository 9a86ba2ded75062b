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
        DEFAULT_SESSION_EXPIRY_S as DEFAULT_SESSION_EXPIRY_S,
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
    from edge_runtime.cloud.session import (
        SessionFiles as SessionFiles,
    )
    from edge_runtime.cloud.session import (
        session_paths as session_paths,
    )
    from edge_runtime.cloud.stream import (
        BATCH_MAX_MESSAGES as BATCH_MAX_MESSAGES,
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
        is_status_topic as is_status_topic,
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
        RESULTS as RESULTS,
    )
    from edge_runtime.cloud.tracker import (
        Key as Key,
    )
    from edge_runtime.cloud.tracker import (
        StreamGaps as StreamGaps,
    )
    from edge_runtime.cloud.tracker import (
        StreamKey as StreamKey,
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
        FileSink as FileSink,
    )
    from edge_runtime.cloud.writers import (
        JsonLinesWriter as JsonLinesWriter,
    )
    from edge_runtime.cloud.writers import (
        Output as Output,
    )
    from edge_runtime.cloud.writers import (
        OutputError as OutputError,
    )
    from edge_runtime.cloud.writers import (
        Writer as Writer,
    )
    from edge_runtime.cloud.writers import (
        open_output as open_output,
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
        "cli": (
            "SUBSCRIBE_EXAMPLES",
            "add_subscribe_arguments",
            "options_from_args",
            "run_subscribe",
        ),
        "options": (
            "DEFAULT_SESSION_EXPIRY_S",
            "ENV_PREFIX",
            "FLAGS",
            "MAX_SESSION_EXPIRY_S",
            "SubscribeOptions",
            "environment_settings",
        ),
        "session": (
            "SessionFiles",
            "session_paths",
        ),
        "stream": (
            "BATCH_MAX_MESSAGES",
            "CONNECT_TIMEOUT_S",
            "QUEUE_MAX_BYTES",
            "QUEUE_MAX_MESSAGES",
            "ResultStream",
            "is_status_topic",
            "iter_results",
            "topic_device",
        ),
        "tracker": (
            "MAX_PENDING",
            "RESULTS",
            "Key",
            "StreamGaps",
            "StreamKey",
            "StreamTracker",
        ),
        "writers": (
            "CSV_COLUMNS",
            "FORMATS",
            "CsvWriter",
            "FdTextSink",
            "FileSink",
            "JsonLinesWriter",
            "Output",
            "OutputError",
            "Writer",
            "open_output",
            "open_writer",
            "stdout_sink",
        ),
    },
)
