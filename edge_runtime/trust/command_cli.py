"""``edge-runtime command``: sign a remote command, publish it, wait for the device's reply.

Exit codes: 0 the device did it, 1 the device refused it or it failed there (the reply says
why), 2 a usage, key or connection error, or no reply within ``--timeout``.

Example::

    edge-runtime command --broker mqtt://broker:1883 --device cam1 --key operator.key disable_head head=box
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import sys
import textwrap
import uuid
from typing import Any

from edge_runtime.bounded_json import loads_bounded
from edge_runtime.errors import ConfigError, TransportError, close_matches
from edge_runtime.names import check_device_id
from edge_runtime.trust.commands import COMMANDS, CommandRejected, check_args

logger = logging.getLogger(__name__)

_COMMANDS_HELP = textwrap.fill(
    f"Commands: {', '.join(spec.usage() for spec in COMMANDS.values())}. Keys: `edge-export keygen operator` "
    "writes operator.key (keep it here) and operator.pub (the device's command_keys). Prints the reply as one "
    "JSON line.",
    width=100,
)
COMMAND_EXAMPLES = f"""examples:
  edge-runtime command --broker mqtt://broker:1883 --device cam1 --key operator.key status
  edge-runtime command --broker mqtts://op:secret@broker:8883 --device cam1 --key operator.key disable_head head=box
  edge-runtime command ... set_schedule head=mask every_n_frames=5
  edge-runtime command ... update source=https://bundles.example/demo-v2.tar  --timeout 600
  edge-runtime command ... rollback

{_COMMANDS_HELP}
Exit 0: done; 1: refused or failed on the device; 2: usage, key or connection error, no reply."""


def add_command_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", required=True, metavar="URL", help="mqtt://[user:pass@]host:port or mqtts://...")
    parser.add_argument("--device", required=True, metavar="ID", help="the device id")
    parser.add_argument("--key", required=True, metavar="PRIVATE_KEY", help="the operator's ed25519 key (PEM)")
    parser.add_argument("--topic-prefix", default="edge", help="topics <prefix>/<device>/cmd|reply (default: edge)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the reply (default: 10)")
    parser.add_argument("cmd", metavar="CMD", help=", ".join(COMMANDS))
    parser.add_argument("args", nargs="*", metavar="ARG=VALUE", help="the command's arguments")


def parse_command_args(cmd: str, pairs: list[str]) -> dict[str, Any]:
    """``["head=box", "every_n_frames=5"]`` → typed arguments of ``cmd`` (ConfigError when wrong)."""
    if cmd not in COMMANDS:
        raise ConfigError(f"unknown command {cmd!r}{close_matches(cmd, COMMANDS)}; commands: {', '.join(COMMANDS)}")
    spec = COMMANDS[cmd].args
    args: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            raise ConfigError(f"{cmd}: argument {pair!r} is not ARG=VALUE")
        if key not in spec:
            raise ConfigError(
                f"{cmd}: unknown argument {key!r}{close_matches(key, spec)}; arguments: {', '.join(spec) or 'none'}"
            )
        kind = spec[key].kind
        try:
            args[key] = int(text) if kind is int else float(text) if kind is float else text
        except ValueError as exc:
            raise ConfigError(f"{cmd}: {key}={text!r} is not a {'whole ' if kind is int else ''}number") from exc
    try:
        return check_args(cmd, args)
    except CommandRejected as exc:
        raise ConfigError(str(exc)) from exc


def send_command(
    broker: str,
    device: str,
    message: dict[str, Any],
    *,
    topic_prefix: str = "edge",
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Publish a signed ``message`` (:func:`edge_runtime.trust.command_verify.sign_command`) and return the
    device's final reply (pending replies are logged); TransportError on connection problems
    or when no reply came within ``timeout``."""
    import paho.mqtt.client as paho

    from edge_runtime.delivery.mqtt.client import make_client
    from edge_runtime.delivery.mqtt.settings import DeviceTopics, MqttConfig, describe_connect_error, describe_refusal
    from edge_runtime.trust.command_verify import encode_command

    config = MqttConfig.from_url(broker, topic_prefix=topic_prefix)
    topics = DeviceTopics(config.topic_prefix, device)  # ConfigError when not a valid device id
    cmd_topic, reply_topic = topics.cmd, topics.reply
    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    client = make_client(config, config.client_id or f"edge-runtime-operator-{uuid.uuid4().hex[:12]}")

    def on_connect(c: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            events.put(("error", f"refused the connection: {describe_refusal(reason_code)}"))
            return
        c.subscribe(reply_topic, qos=1)

    def on_subscribe(c: paho.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        if any(code.is_failure for code in reason_codes):
            events.put(("error", f"may not subscribe to {reply_topic} (broker ACL?)"))
        else:
            events.put(("subscribed", None))

    def on_message(c: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            reply = loads_bounded(msg.payload)  # from the broker: bounded nesting, never a RecursionError
        except ValueError:
            return
        if isinstance(reply, dict) and reply.get("nonce") == message["nonce"]:
            events.put(("reply", reply))

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    where = f"MQTT broker {config.host}:{config.port}"
    try:
        client.connect_broker()
    except (OSError, ValueError) as exc:
        raise TransportError(f"{where}: {describe_connect_error(exc)}") from exc
    client.loop_start()
    try:
        kind, value = _next_event(events, timeout, f"{where}: no answer to connect/subscribe in {timeout:g} s")
        if kind == "error":
            raise TransportError(f"{where}: {value}")
        client.publish(cmd_topic, encode_command(message), qos=1)
        while True:
            kind, value = _next_event(events, timeout, f"no reply from device {device!r} in {timeout:g} s")
            if kind == "error":
                raise TransportError(f"{where}: {value}")
            if kind == "reply" and value.get("pending"):
                logger.info("the device accepted %s; waiting for the outcome", message["cmd"])
                continue
            if kind == "reply":
                return dict(value)
    finally:
        client.disconnect()
        client.loop_stop()


def _next_event(events: queue.Queue[tuple[str, Any]], timeout: float, message: str) -> tuple[str, Any]:
    try:
        return events.get(timeout=timeout)
    except queue.Empty as exc:
        raise TransportError(message) from exc


def run_command(args: argparse.Namespace) -> int:
    """``edge-runtime command``: exit 0 ok, 1 refused/failed, 2 via EdgeRuntimeError in ``main``."""
    from edge_runtime.trust.command_verify import sign_command
    from edge_runtime.trust.keys import load_private_key

    command_args = parse_command_args(args.cmd, list(args.args))
    check_device_id(args.device, "edge-runtime command", "--device")
    message = sign_command(load_private_key(args.key), args.device, args.cmd, command_args)
    reply = send_command(args.broker, args.device, message, topic_prefix=args.topic_prefix, timeout=args.timeout)
    print(json.dumps(reply, ensure_ascii=False), flush=True)
    if not reply.get("ok"):
        print(f"edge-runtime command: {reply.get('reason')}: {reply.get('error')}", file=sys.stderr)
        return 1
    return 0
