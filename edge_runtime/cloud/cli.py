"""``edge-runtime subscribe``: write the results of a broker's devices as JSON lines or CSV.

CLI::

    edge-runtime subscribe --broker mqtt://broker.local:1883 --output results.jsonl
    edge-runtime subscribe --broker mqtt://broker.local --share workers --format csv --output results.csv
    edge-runtime subscribe --broker mqtt://broker.local --clean-session        # nothing kept while away

Options come from flags > ``EDGE_RUNTIME_SUBSCRIBE_<KEY>`` environment variables > a
``--config`` file (TOML/YAML/JSON, the keys of :class:`~edge_runtime.cloud.options.SubscribeOptions`)
> defaults. At exit (SIGINT/SIGTERM) the counters and gaps go to stderr.

Nothing lost, nothing hidden: by default the session is persistent (a client id derived from
the host, output, share group and ``--instance``; a lock refuses a second process with it), a
message is acknowledged only once its line is written and fsynced (``fsync``), the tracker's
state is saved beside the output before that, and a write error stops the subscriber with one
line, exit code 2, the unwritten messages left with the broker.
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
from edge_runtime.cloud.session import SessionFiles
from edge_runtime.cloud.tracker import StreamTracker
from edge_runtime.cloud.writers import Output, OutputError, open_output
from edge_runtime.settings.subscribe import SUBSCRIBE


def options_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> SubscribeOptions:
    """The options of ``edge-runtime subscribe``: flags > ``EDGE_RUNTIME_SUBSCRIBE_*``
    (``environ``, default ``os.environ``) > the ``--config`` file > defaults."""
    flags = SUBSCRIBE.flag_values(args)
    return SubscribeOptions.load(config_file=getattr(args, "config", None), flags=flags, environ=environ)


def run_subscribe(args: argparse.Namespace, *, stop: threading.Event | None = None) -> int:
    """``edge-runtime subscribe``: write results until SIGINT/SIGTERM (or ``stop``), then the
    lines already received, then print the summary to stderr and return 0 (1 when the broker
    handed the session to another client).
    :class:`ConfigError` / :class:`TransportError` (one line each) when the options are wrong,
    another subscriber holds the lock, or the broker cannot be reached or refuses the
    connection; :class:`OutputError` (one line) when the output or the state file cannot be
    written (what was not written is not acknowledged: the broker keeps it)."""
    options = options_from_args(args)
    stop = stop or threading.Event()
    tracker = StreamTracker(gap_reports=options.share is None)
    client_id = options.session_client_id
    files = SessionFiles.open(options, client_id) if options.persistent and client_id is not None else None
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():

        def handler(signum: int, frame: Any) -> None:
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    try:
        if files is not None:
            files.resume(tracker)
        failure = _subscribe(options, tracker, files, client_id, stop)
    except OutputError as exc:
        after = (
            "nothing after the last written batch was acknowledged: the broker keeps it for the next start"
            if files is not None
            else "nothing after the last written batch was acknowledged (a clean session: the broker drops it)"
        )
        raise OutputError(f"{exc} ({after})") from exc
    finally:
        if files is not None:
            files.close()
        for sig, old in previous.items():
            signal.signal(sig, old)
    print(tracker.summary(), file=sys.stderr)
    return 1 if failure else 0


def _subscribe(
    options: SubscribeOptions,
    tracker: StreamTracker,
    files: SessionFiles | None,
    client_id: str | None,
    stop: threading.Event,
) -> str | None:
    """Receive and write until ``stop``; the stream's failure (session taken over) or None."""
    from edge_runtime.cloud.stream import ResultStream  # paho, only when subscribing

    fsync, batch = options.fsync_every

    def commit(out: Output) -> None:
        # The lines durable (per fsync), then what the tracker knows of them; then the acks.
        out.commit(None if files is None else lambda: files.save(tracker, sync=fsync))

    try:
        # The output first: a persistent session hands over its queued messages on connect.
        with (
            open_output(options.output, options.format, fsync=fsync) as out,
            ResultStream(options, tracker, client_id=client_id) as stream,
        ):
            print(_subscribed_line(options, stream), file=sys.stderr)
            for line in stream.lines(stop=stop, commit=lambda: commit(out), batch=batch):
                out.write(line)
            if stream.failure is not None:
                commit(out)
                return stream.failure
            stream.close()  # nothing more arrives; write what was received (not acknowledged now)
            for line in stream.drain():
                out.write(line)
            commit(out)
    except BrokenPipeError:  # stdout closed (| head): a clean stop
        with contextlib.suppress(Exception):
            sys.stdout = open(os.devnull, "w")
    return None


def _subscribed_line(options: SubscribeOptions, stream: Any) -> str:
    if not stream.persistent:
        session = "clean session"
    else:
        session = "session resumed" if stream.session_present else "persistent session"
    status = f"; device status from {stream.status_subscription!r}" if stream.status_subscription else ""
    return f"subscribed to {options.subscription!r} on {stream.where} as {stream.client_id} ({session}){status}"


def add_subscribe_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``subscribe`` flags, for ``edge_runtime.cli``. None is required here:
    each one can also come from ``--config`` or ``EDGE_RUNTIME_SUBSCRIBE_*``."""
    parser.add_argument("--config", metavar="FILE", help="TOML/YAML/JSON file with the keys below (e.g. broker)")
    SUBSCRIBE.add_flags(parser)


SUBSCRIBE_EXAMPLES = """examples:
  edge-runtime subscribe --broker mqtt://broker.local:1883 --output results.jsonl
  edge-runtime subscribe --broker mqtt://127.0.0.1:1883 --topic 'edge/cam1/results' --format csv --output r.csv
  edge-runtime subscribe --broker mqtts://user:pass@broker.example.com --share workers --instance 1
  edge-runtime subscribe --broker mqtt://broker.local --client-id cloud-1 --session-expiry 3600 --output r.jsonl
  edge-runtime subscribe --broker mqtt://broker.local --clean-session
  edge-runtime subscribe --config subscribe.toml --heartbeats
  EDGE_RUNTIME_SUBSCRIBE_BROKER=mqtt://broker.local EDGE_RUNTIME_SUBSCRIBE_FORMAT=csv edge-runtime subscribe

De-duplicates on (device, epoch, seq) and reports gaps per (device, epoch) at exit (Ctrl-C);
heartbeats take a seq too, so they fill the sequence whether written or not. The devices'
status messages (<prefix>/+/status, subscribed too) add the gaps before the first seq seen
and after the last one (split into "no longer on the device" and "not received"). Under --share
each subscriber sees part of every stream, so gap reports are off.

The session is persistent by default: the client id is derived from the host, the output, the
share group and --instance (a lock beside the output, or in --state-dir for stdout, refuses a
second process with it); the broker keeps the subscription and queues QoS 1 results for
--session-expiry seconds (default a day) while the subscriber is away (up to its
max_queued_messages). A message is acknowledged only once its line is written and fsynced
(--fsync batch|never|N), and the subscriber's state (<output>.state.json) is saved before,
so a restart goes on where it stopped: seqs it already wrote are duplicates, a hole is a gap.
A write error (disk full) ends it with one line and exit code 2; what it did not write stays
with the broker. --clean-session: a random client id, a clean start, no lock or state.

Every flag is also a config-file key (broker, topic, share, output, format, client_id,
instance, clean_session, qos, heartbeats, session_expiry_s, fsync, state_dir) and an
EDGE_RUNTIME_SUBSCRIBE_<KEY> environment variable (EDGE_RUNTIME_SUBSCRIBE_SESSION_EXPIRY_S=3600);
flags win over the environment, which wins over the file. MQTT 3.1.1 has no expiry: the
session is kept (clean session off) as long as the broker's persistent_client_expiration allows.
"""


__all__ = ["SUBSCRIBE_EXAMPLES", "add_subscribe_arguments", "options_from_args", "run_subscribe"]
