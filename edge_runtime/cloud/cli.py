"""``edge-runtime subscribe``: write the results of a broker's devices as JSON lines or CSV.

CLI::

    edge-runtime subscribe --broker mqtt://broker.local:1883
    edge-runtime subscribe --broker mqtt://broker.local --share workers --format csv --output results.csv
    edge-runtime subscribe --broker mqtt://broker.local --client-id cloud-1 --session-expiry 3600

Options come from flags > ``EDGE_RUNTIME_SUBSCRIBE_<KEY>`` environment variables > a
``--config`` file (TOML/YAML/JSON, the keys of :class:`~edge_runtime.cloud.options.SubscribeOptions`)
> defaults. At exit (SIGINT/SIGTERM) the counters and gaps go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Mapping
from typing import Any

from edge_runtime.cloud.options import SubscribeOptions
from edge_runtime.cloud.tracker import StreamTracker
from edge_runtime.cloud.writers import open_writer
from edge_runtime.settings.subscribe import SUBSCRIBE


def options_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> SubscribeOptions:
    """The options of ``edge-runtime subscribe``: flags > ``EDGE_RUNTIME_SUBSCRIBE_*``
    (``environ``, default ``os.environ``) > the ``--config`` file > defaults."""
    flags = SUBSCRIBE.flag_values(args)
    return SubscribeOptions.load(config_file=getattr(args, "config", None), flags=flags, environ=environ)


def run_subscribe(args: argparse.Namespace, *, stop: threading.Event | None = None) -> int:
    """``edge-runtime subscribe``: write results until SIGINT/SIGTERM (or ``stop``), then the
    lines already received, then print the summary to stderr and return 0.
    :class:`ConfigError` / :class:`TransportError` (one line each) when the options are wrong
    or the broker cannot be reached or refuses the connection."""
    from edge_runtime.cloud.stream import ResultStream  # paho, only when subscribing

    options = options_from_args(args)
    stop = stop or threading.Event()
    tracker = StreamTracker(gap_reports=options.share is None)
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():

        def handler(signum: int, frame: Any) -> None:
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    try:
        # The output first: a persistent session hands over its queued messages on connect.
        with open_writer(options.output, options.format) as writer, ResultStream(options, tracker) as stream:
            resumed = " (session resumed)" if stream.session_present else ""
            print(f"subscribed to {options.subscription!r} on {stream.where}{resumed}", file=sys.stderr)
            for line in stream.lines(stop=stop):
                writer.write(line)
            stream.close()  # nothing more arrives; write what was received (and acknowledged)
            for line in stream.drain():
                writer.write(line)
    except BrokenPipeError:  # stdout closed (| head): a clean stop
        with contextlib.suppress(Exception):
            sys.stdout = open(os.devnull, "w")
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    print(tracker.summary(), file=sys.stderr)
    return 0


def add_subscribe_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``subscribe`` flags, for ``edge_runtime.cli``. None is required here:
    each one can also come from ``--config`` or ``EDGE_RUNTIME_SUBSCRIBE_*``."""
    parser.add_argument("--config", metavar="FILE", help="TOML/YAML/JSON file with the keys below (e.g. broker)")
    SUBSCRIBE.add_flags(parser)


SUBSCRIBE_EXAMPLES = """examples:
  edge-runtime subscribe --broker mqtt://broker.local:1883
  edge-runtime subscribe --broker mqtt://127.0.0.1:1883 --topic 'edge/cam1/results' --format csv --output r.csv
  edge-runtime subscribe --broker mqtts://user:pass@broker.example.com --share workers
  edge-runtime subscribe --broker mqtt://broker.local --client-id cloud-1 --session-expiry 3600 --output r.jsonl
  edge-runtime subscribe --config subscribe.toml --heartbeats
  EDGE_RUNTIME_SUBSCRIBE_BROKER=mqtt://broker.local EDGE_RUNTIME_SUBSCRIBE_FORMAT=csv edge-runtime subscribe

De-duplicates on (device, epoch, seq) and reports gaps per (device, epoch) at exit (Ctrl-C);
heartbeats take a seq too, so they fill the sequence whether written or not. Under --share
each subscriber sees part of every stream, so gap reports are off.

Every flag is also a config-file key (broker, topic, share, output, format, client_id, qos,
heartbeats, session_expiry_s) and an EDGE_RUNTIME_SUBSCRIBE_<KEY> environment variable
(EDGE_RUNTIME_SUBSCRIBE_SESSION_EXPIRY_S=3600); flags win over the environment, which wins
over the file. With --session-expiry the broker keeps the subscription and queues QoS 1
results while the subscriber is away (up to its max_queued_messages); they arrive on the
next start with the same --client-id. MQTT 3.1.1 has no expiry: the session is kept
(clean session off) as long as the broker's persistent_client_expiration allows.
"""


__all__ = ["SUBSCRIBE_EXAMPLES", "add_subscribe_arguments", "options_from_args", "run_subscribe"]
