"""Signed remote commands: the verifier's refusals (table-driven and fuzzed), the processor
with a small recording controller, the worked example of ``docs/protocol.md`` §9, and end to
end over a real broker: ``edge-runtime command`` → MqttPublisher(on_command) → reply; the
example ACL (``devices/mosquitto/acl.conf``) on a real mosquitto."""

from __future__ import annotations

import json
import math
import queue
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge_runtime.cli import main
from edge_runtime.delivery.mqtt.publisher import MqttPublisher
from edge_runtime.delivery.mqtt.settings import MqttConfig
from edge_runtime.delivery.mqtt.status import parse_status
from edge_runtime.delivery.spool import Spool
from edge_runtime.delivery.spool_file import SpoolOptions
from edge_runtime.errors import ConfigError
from edge_runtime.trust.command_verify import (
    FIELDS,
    CommandVerifier,
    NonceStore,
    canonical_body,
    encode_command,
    sign_command,
)
from edge_runtime.trust.commands import COMMANDS, REASONS, Command, CommandProcessor, CommandRejected
from edge_runtime.trust.keys import (
    encode_signature,
    generate_keypair,
    load_private_key,
    load_public_keys,
    public_key_from_pem,
    public_key_of,
    sign,
    verify,
)
from tests.broker import HOST, BrokerProcess, MosquittoBroker, find_mosquitto, find_mosquitto_passwd, wait_for

pytest.importorskip("cryptography", reason="signed commands need the signing extra (cryptography)")

ROOT = Path(__file__).resolve().parent.parent
DEVICE = "cam-1"
NOW = 1_763_900_000.0


# -- keys and helpers ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("keys")
    generate_keypair(folder / "operator")
    generate_keypair(folder / "stranger")
    return folder


@pytest.fixture(scope="module")
def operator(keydir: Path) -> Any:
    return load_private_key(keydir / "operator.key")


@pytest.fixture(scope="module")
def stranger(keydir: Path) -> Any:
    return load_private_key(keydir / "stranger.key")


def make_verifier(keydir: Path, nonce_store: Path | None = None, now: float = NOW) -> CommandVerifier:
    return CommandVerifier(
        load_public_keys([keydir / "operator.pub"]), DEVICE, nonce_store=nonce_store, clock=lambda: now
    )


def resign(key: Any, message: dict[str, Any]) -> dict[str, Any]:
    """``message`` with ``sig`` made again over its current fields."""
    body = {k: v for k, v in message.items() if k != "sig"}
    return {**body, "sig": encode_signature(sign(key, canonical_body(body)))}


def nonce() -> str:
    return uuid.uuid4().hex


def cmd(key: Any, name: str = "disable_head", args: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    kw.setdefault("ts", NOW)
    kw.setdefault("nonce", nonce())
    device = kw.pop("device", DEVICE)
    return sign_command(key, device, name, {"head": "box"} if args is None else args, **kw)


# -- the verifier, table-driven -------------------------------------------------------------------

Build = Callable[[Any, Any], bytes]


def _edit(**changes: Any) -> Build:
    """Change fields after signing (the signature no longer matches)."""
    return lambda op, other: encode_command({**cmd(op), **changes})


def _resigned(**changes: Any) -> Build:
    """Change fields and sign again (a valid signature over a bad command)."""
    return lambda op, other: encode_command(resign(op, {**cmd(op), **changes}))


def _without(field: str) -> Build:
    def build(op: Any, other: Any) -> bytes:
        message = cmd(op)
        del message[field]
        return encode_command(resign(op, message) if field != "sig" else message)

    return build


CASES: list[tuple[str, Build, str | None, str]] = [
    # (id, payload builder, expected reason or None = accepted, text the error must contain)
    ("valid", lambda op, other: encode_command(cmd(op)), None, ""),
    (
        "valid-set-schedule",
        lambda op, other: encode_command(cmd(op, "set_schedule", {"head": "mask", "every_n_frames": 5})),
        None,
        "",
    ),
    ("valid-status", lambda op, other: encode_command(cmd(op, "status", {})), None, ""),
    ("valid-update-url", lambda op, other: encode_command(cmd(op, "update", {"source": "https://x/b.tar"})), None, ""),
    ("oversized", lambda op, other: b" " * 8193, "too_large", "8193 bytes"),
    ("oversized-signed", lambda op, other: encode_command(cmd(op, args={"head": "x" * 9000})), "too_large", ""),
    ("not-json", lambda op, other: b'{"v": 1,', "malformed", "JSON"),
    ("not-utf8", lambda op, other: b'{"v": "\xff"}', "malformed", "UTF-8"),
    ("non-object", lambda op, other: b"[1, 2, 3]", "malformed", "list"),
    ("json-string", lambda op, other: b'"disable_head"', "malformed", "str"),
    ("nan", lambda op, other: encode_command(cmd(op)).replace(b'"ts":1763900000.0', b'"ts":NaN'), "malformed", ""),
    ("duplicate-key", lambda op, other: b'{"v":1,"v":1}', "malformed", "duplicate"),
    ("deep-nesting", lambda op, other: b"[" * 5000 + b"]" * 5000, "too_large", ""),
    ("deep-nesting-small", lambda op, other: b"[" * 4000, "malformed", ""),
    ("unsigned", _without("sig"), "unsigned", "no signature"),
    ("empty-sig", _edit(sig=""), "unsigned", ""),
    ("extra-field", _resigned(prio=1), "malformed", "unknown field 'prio'"),
    ("extra-field-close-match", _resigned(nonse="ab"), "malformed", "did you mean 'nonce'"),
    ("missing-ts", _without("ts"), "malformed", "missing field(s): ts"),
    ("version-2", _resigned(v=2), "malformed", "version 2"),
    ("ts-string", _resigned(ts="now"), "malformed", "'ts' must be a number"),
    ("ts-bool", _resigned(ts=True), "malformed", "'ts' must be a number"),
    ("args-list", _resigned(args=["box"]), "malformed", "'args' must be a JSON object"),
    ("nonce-short", _resigned(nonce="abc"), "malformed", "16 to 32"),
    ("nonce-upper", _resigned(nonce="ABCDEF0123456789"), "malformed", "16 to 32"),
    ("sig-not-base64", _edit(sig="!!!"), "bad_signature", "base64"),
    ("sig-short", _edit(sig="AAAA"), "bad_signature", "3 bytes"),
    ("tampered-args", _edit(args={"head": "mask"}), "bad_signature", "does not match"),
    ("tampered-device", _edit(device="cam-2"), "bad_signature", ""),
    ("other-key-same-id", lambda op, other: encode_command(resign(other, cmd(op))), "bad_signature", ""),
    ("unknown-key", lambda op, other: encode_command(cmd(other)), "unknown_key", "not a trusted"),
    ("wrong-device", lambda op, other: encode_command(cmd(op, device="cam-2")), "wrong_device", "'cam-2'"),
    ("expired", lambda op, other: encode_command(cmd(op, ts=NOW - 61)), "expired", "61.0 s old"),
    ("just-fresh", lambda op, other: encode_command(cmd(op, ts=NOW - 59.9)), None, ""),
    ("future", lambda op, other: encode_command(cmd(op, ts=NOW + 31)), "future", "clock skew"),
    ("unknown-command", lambda op, other: encode_command(cmd(op, "disable_haed")), "unknown_command", "disable_head"),
    ("bad-args-type", lambda op, other: encode_command(cmd(op, args={"head": 3})), "bad_args", "must be a string"),
    ("bad-args-missing", lambda op, other: encode_command(cmd(op, args={})), "bad_args", "'head' is required"),
    (
        "bad-args-extra",
        lambda op, other: encode_command(cmd(op, args={"head": "box", "hed": 1})),
        "bad_args",
        "unknown argument 'hed'",
    ),
    (
        "bad-args-every-zero",
        lambda op, other: encode_command(cmd(op, "set_schedule", {"head": "box", "every_n_frames": 0})),
        "bad_args",
        ">= 1",
    ),
    (
        "bad-args-every-float",
        lambda op, other: encode_command(cmd(op, "set_schedule", {"head": "box", "every_n_frames": 2.5})),
        "bad_args",
        "integer",
    ),
    (
        "bad-args-every-bool",
        lambda op, other: encode_command(cmd(op, "set_schedule", {"head": "box", "every_n_frames": True})),
        "bad_args",
        "integer",
    ),
    (
        "bad-args-update-scheme",
        lambda op, other: encode_command(cmd(op, "update", {"source": "file:///etc/passwd"})),
        "bad_args",
        "http(s)",
    ),
    ("bad-args-status", lambda op, other: encode_command(cmd(op, "status", {"verbose": 1})), "bad_args", "none"),
]


@pytest.mark.parametrize(("build", "reason", "text"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_verifier(keydir: Path, operator: Any, stranger: Any, build: Build, reason: str | None, text: str) -> None:
    verifier = make_verifier(keydir)
    payload = build(operator, stranger)
    if reason is None:
        command = verifier.parse(payload)
        assert isinstance(command, Command)
        assert command.device == DEVICE and command.key_id == public_key_of(operator).key_id
        return
    assert reason in REASONS
    with pytest.raises(CommandRejected) as info:
        verifier.parse(payload)
    assert info.value.reason == reason, str(info.value)
    assert text in str(info.value)


def test_replay_is_refused_also_after_a_restart(keydir: Path, operator: Any, tmp_path: Path) -> None:
    store = tmp_path / "state" / "command-nonces.sqlite"
    payload = encode_command(cmd(operator))
    first = make_verifier(keydir, store)
    first.parse(payload)
    with pytest.raises(CommandRejected, match="seen already") as info:
        first.parse(payload)
    assert info.value.reason == "replayed"
    first.close()
    restarted = make_verifier(keydir, store, now=NOW + 5)
    with pytest.raises(CommandRejected) as info:
        restarted.parse(payload)
    assert info.value.reason == "replayed"
    restarted.parse(encode_command(cmd(operator)))  # a new nonce passes
    # once the command would be expired anyway, its nonce is forgotten (the store stays small)
    later = make_verifier(keydir, store, now=NOW + 200)
    with pytest.raises(CommandRejected) as info:
        later.parse(payload)
    assert info.value.reason == "expired"
    later.parse(encode_command(cmd(operator, ts=NOW + 200)))
    assert len(later.nonces) == 1


def test_the_same_nonce_for_another_device_is_refused_there(keydir: Path, operator: Any) -> None:
    """A command captured for cam-1 cannot be replayed to cam-2: ``device`` is signed."""
    other = CommandVerifier(load_public_keys([keydir / "operator.pub"]), "cam-2", clock=lambda: NOW)
    with pytest.raises(CommandRejected) as info:
        other.parse(encode_command(cmd(operator)))
    assert info.value.reason == "wrong_device"


def test_rejection_carries_the_nonce_and_command(keydir: Path, operator: Any) -> None:
    message = cmd(operator, ts=NOW - 100)
    with pytest.raises(CommandRejected) as info:
        make_verifier(keydir).parse(encode_command(message))
    assert (info.value.nonce, info.value.cmd) == (message["nonce"], "disable_head")


def test_verifier_needs_a_key_and_sane_limits(keydir: Path) -> None:
    keys = load_public_keys([keydir / "operator.pub"])
    with pytest.raises(Exception, match="at least one trusted operator public key"):
        CommandVerifier([], DEVICE)
    with pytest.raises(Exception, match="max_age_s > 0"):
        CommandVerifier(keys, DEVICE, max_age_s=0)


# -- fuzzing: nothing but CommandRejected ever comes out ------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
command_like = st.fixed_dictionaries({}, optional={name: json_values for name in FIELDS})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(max_size=9000))
def test_fuzz_bytes(keydir: Path, payload: bytes) -> None:
    with pytest.raises(CommandRejected):
        make_verifier(keydir).parse(payload)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=json_values | command_like)
def test_fuzz_json(keydir: Path, value: Any) -> None:
    with pytest.raises(CommandRejected) as info:
        make_verifier(keydir).parse(json.dumps(value).encode())
    assert info.value.reason in REASONS


# -- the worked example in docs/protocol.md -------------------------------------------------------


def _doc_block(name: str) -> str:
    text = (ROOT / "docs" / "protocol.md").read_text()
    found = re.search(rf"<!-- command-example: {name} -->\n```[a-z]*\n(.*?)```", text, re.DOTALL)
    assert found, f"docs/protocol.md has no command-example block {name!r}"
    return found.group(1)


def test_worked_example_in_protocol_md() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    seed_key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    private_pem = seed_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert _doc_block("private-key").encode() == private_pem
    public = public_key_from_pem(_doc_block("public-key").encode(), "docs/protocol.md")
    assert public.key_id == public_key_of(seed_key).key_id == "56475aa75463474c"

    wire = _doc_block("message").strip().encode()
    message = json.loads(wire)
    assert canonical_body(message) == _doc_block("signed-body").strip().encode()
    from edge_runtime.trust.keys import decode_signature

    assert verify([public], canonical_body(message), decode_signature(message["sig"], "doc")) == public
    # ed25519 is deterministic: signing the same fields again gives the same bytes on the wire
    again = sign_command(seed_key, "cam-1", "set_schedule", message["args"], ts=message["ts"], nonce=message["nonce"])
    assert encode_command(again) == wire

    verifier = CommandVerifier([public], "cam-1", clock=lambda: message["ts"])
    assert verifier.parse(wire).args == {"head": "mask", "every_n_frames": 5}
    late = CommandVerifier([public], "cam-1", clock=lambda: message["ts"] + 61)
    with pytest.raises(CommandRejected) as info:
        late.parse(wire)
    assert info.value.reason == "expired"


def test_protocol_md_lists_the_commands_of_the_registry() -> None:
    text = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    table = text.split("### 9.2 Commands", 1)[1].split("###", 1)[0]
    assert re.findall(r"^\| `(\w+)` \|", table, re.M)[1:] == list(COMMANDS)  # [0]: the header


# -- the processor with a recording controller ----------------------------------------------------


class RecordingController:
    """A Controller that records its calls; ``update`` waits for ``release`` (a slow update)."""

    def __init__(self, heads: tuple[str, ...] = ("box", "mask")) -> None:
        self.heads = heads
        self.calls: list[tuple[Any, ...]] = []
        self.release = threading.Event()
        self.release.set()
        self.update_started = threading.Event()

    def _head(self, name: str) -> None:
        if name not in self.heads:
            raise ConfigError(f"no head {name!r}; heads: {', '.join(self.heads)}")

    def enable_head(self, name: str) -> dict[str, Any]:
        self._head(name)
        self.calls.append(("enable_head", name))
        return {"head": name, "enabled": True}

    def disable_head(self, name: str) -> dict[str, Any]:
        self._head(name)
        self.calls.append(("disable_head", name))
        return {"head": name, "enabled": False}

    def set_schedule(self, name: str, *, every_n_frames: int) -> dict[str, Any]:
        self._head(name)
        self.calls.append(("set_schedule", name, every_n_frames))
        return {"head": name, "every_n_frames": every_n_frames}

    def status(self) -> dict[str, Any]:
        self.calls.append(("status",))
        return {"heads": list(self.heads), "fps": math.pi}

    def update(self, source: str) -> dict[str, Any]:
        self.calls.append(("update", source))
        self.update_started.set()
        if not self.release.wait(10):
            raise RuntimeError("never released")
        return {"installed": source, "version": "2.0"}

    def rollback(self) -> dict[str, Any]:
        self.calls.append(("rollback",))
        raise ValueError("a bug in the controller")


@pytest.fixture
def processor(keydir: Path) -> Iterator[tuple[CommandProcessor, RecordingController, list[dict[str, Any]]]]:
    controller = RecordingController()
    replies: list[dict[str, Any]] = []
    verifier = CommandVerifier(load_public_keys([keydir / "operator.pub"]), DEVICE)
    proc = CommandProcessor(verifier, controller, replies.append)
    yield proc, controller, replies
    controller.release.set()
    proc.join(5)
    verifier.close()


def live(key: Any, name: str, args: dict[str, Any] | None = None) -> bytes:
    return encode_command(sign_command(key, DEVICE, name, args))


def test_processor_runs_commands_and_replies(processor: Any, operator: Any) -> None:
    proc, controller, replies = processor
    reply = proc.handle(live(operator, "disable_head", {"head": "box"}))
    assert reply["ok"] is True and reply["result"] == {"head": "box", "enabled": False}
    assert reply["cmd"] == "disable_head" and reply["device"] == DEVICE and replies == [reply]
    proc.handle(live(operator, "set_schedule", {"head": "mask", "every_n_frames": 3}))
    proc.handle(live(operator, "enable_head", {"head": "box"}))
    status = proc.handle(live(operator, "status", {}))
    assert status["result"]["heads"] == ["box", "mask"]
    assert controller.calls == [
        ("disable_head", "box"),
        ("set_schedule", "mask", 3),
        ("enable_head", "box"),
        ("status",),
    ]
    failed = proc.handle(live(operator, "disable_head", {"head": "bxo"}))
    assert failed["ok"] is False and failed["reason"] == "failed" and "no head 'bxo'" in failed["error"]
    assert proc.counters() == {"received": 5, "accepted": 5, "failed": 1, "rejected": {}}
    assert proc.last_rejection is None


def test_processor_counts_rejections_and_notifies(keydir: Path, operator: Any) -> None:
    notified: list[dict[str, Any]] = []
    verifier = CommandVerifier(load_public_keys([keydir / "operator.pub"]), DEVICE)
    proc = CommandProcessor(verifier, RecordingController(), lambda r: None, on_rejection=notified.append)
    unsigned = sign_command(operator, DEVICE, "status", {})
    del unsigned["sig"]
    reply = proc.handle(encode_command(unsigned))
    assert reply["ok"] is False and reply["reason"] == "unsigned" and reply["nonce"] == unsigned["nonce"]
    assert proc.handle(b"\x80\x04pickle")["reason"] == "malformed"
    assert proc.handle(b"x" * 10_000)["reason"] == "too_large"
    counters = proc.counters()
    assert counters["rejected"] == {"unsigned": 1, "malformed": 1, "too_large": 1} and counters["accepted"] == 0
    assert proc.last_rejection is not None and proc.last_rejection["reason"] == "too_large"
    assert len(notified) == 1  # at most once per notify_interval_s
    fields = proc.status_fields()["commands"]
    assert fields["rejected"]["unsigned"] == 1 and fields["last_rejection"]["reason"] == "too_large"


def test_long_commands_run_on_a_worker_one_at_a_time(processor: Any, operator: Any) -> None:
    proc, controller, replies = processor
    controller.release.clear()
    first = proc.handle(live(operator, "update", {"source": "/tmp/b.tar"}))
    assert first["ok"] is True and first["pending"] is True
    assert controller.update_started.wait(5)
    busy = proc.handle(live(operator, "update", {"source": "/tmp/c.tar"}))
    assert busy["ok"] is False and busy["reason"] == "busy"
    quick = proc.handle(live(operator, "status", {}))  # short commands still run meanwhile
    assert quick["ok"] is True
    controller.release.set()
    proc.join(5)
    final = [r for r in replies if r["nonce"] == first["nonce"] and not r.get("pending")]
    assert final and final[0]["ok"] is True and final[0]["result"] == {"installed": "/tmp/b.tar", "version": "2.0"}
    bug = proc.handle(live(operator, "rollback", {}))
    proc.join(5)
    outcome = [r for r in replies if r["nonce"] == bug["nonce"]][-1]
    assert outcome["ok"] is False and outcome["reason"] == "failed" and "ValueError" in outcome["error"]


def test_a_failing_reply_publisher_does_not_raise(keydir: Path, operator: Any) -> None:
    def broken(reply: dict[str, Any]) -> None:
        raise OSError("socket gone")

    verifier = CommandVerifier(load_public_keys([keydir / "operator.pub"]), DEVICE)
    proc = CommandProcessor(verifier, RecordingController(), broken)
    assert proc.handle(live(operator, "status", {}))["ok"] is True


@pytest.mark.parametrize(
    ("cmd_name", "pairs", "expected"),
    [
        ("set_schedule", ["head=box", "every_n_frames=5"], {"head": "box", "every_n_frames": 5}),
        ("update", ["source=https://example.com/b.tar?x=1"], {"source": "https://example.com/b.tar?x=1"}),
        ("status", [], {}),
        ("set_schedule", ["head=box", "every_n_frames=five"], "not a whole number"),
        ("set_schedule", ["head=box"], "'every_n_frames' is required"),
        ("disable_head", ["hed=box"], "did you mean 'head'"),
        ("disable_head", ["box"], "not ARG=VALUE"),
        ("disabel_head", [], "did you mean 'disable_head'"),
    ],
)
def test_cli_arguments(cmd_name: str, pairs: list[str], expected: Any) -> None:
    from edge_runtime.trust.command_cli import parse_command_args

    if isinstance(expected, dict):
        assert parse_command_args(cmd_name, pairs) == expected
    else:
        with pytest.raises(ConfigError, match=re.escape(expected)):
            parse_command_args(cmd_name, pairs)


# -- over a real broker ---------------------------------------------------------------------------


def _protocol(broker: BrokerProcess) -> str:
    return "5" if broker.supports("5") else "3.1.1"


def _url(broker: BrokerProcess, user: str | None = None, password: str | None = None) -> str:
    auth = f"{user}:{password}@" if user else ""
    return f"mqtt://{auth}{HOST}:{broker.port}?protocol={_protocol(broker)}"


class Device:
    """An MqttPublisher with a CommandProcessor behind its command topic (the daemon's wiring)."""

    def __init__(self, broker: BrokerProcess, tmp_path: Path, keydir: Path, **url: Any) -> None:
        self.spool = Spool.open(tmp_path / f"spool-{uuid.uuid4().hex[:6]}.sqlite", SpoolOptions())
        config = MqttConfig.from_url(_url(broker, **url), reconnect_max_s=1.0)
        self.publisher = MqttPublisher(config, DEVICE, self.spool, epoch="e1")
        self.controller = RecordingController()
        verifier = CommandVerifier(
            load_public_keys([keydir / "operator.pub"]), DEVICE, nonce_store=tmp_path / "nonces.sqlite"
        )
        self.processor = CommandProcessor(
            verifier,
            self.controller,
            self.publisher.publish_reply,
            on_rejection=lambda reply: self.publisher.publish_status(),
        )
        self.publisher.on_command = self.processor.handle
        self.publisher.status_extra = self.processor.status_fields
        self.publisher.start()
        assert self.publisher.wait_connected(10), self.publisher.last_error

    def close(self) -> None:
        self.publisher.close(timeout=2)
        self.spool.close()


class Client:
    """A plain paho client keeping every message it receives; ``subscribe`` returns the SUBACK codes."""

    def __init__(self, broker: BrokerProcess, user: str | None = None, password: str | None = None) -> None:
        version = MQTTProtocolVersion.MQTTv5 if _protocol(broker) == "5" else MQTTProtocolVersion.MQTTv311
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}", protocol=version)
        if user is not None:
            self.client.username_pw_set(user, password)
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.subacks: queue.Queue[list[Any]] = queue.Queue()
        self.connected = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: self.connected.set() if not rc.is_failure else None
        self.client.on_message = lambda c, u, msg: self.messages.put(msg)
        self.client.on_subscribe = lambda c, u, mid, codes, p: self.subacks.put(list(codes))
        self.client.connect(HOST, broker.port, 10)
        self.client.loop_start()
        assert self.connected.wait(10), "the test client could not connect"

    def subscribe(self, topic: str) -> list[Any]:
        self.client.subscribe(topic, qos=1)
        return self.subacks.get(timeout=10)

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def received(self, timeout: float) -> list[paho.MQTTMessage]:
        out = []
        try:
            while True:
                out.append(self.messages.get(timeout=timeout))
                timeout = 0.2
        except queue.Empty:
            return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_cli_command_round_trip_and_unsigned_rejection(
    broker: BrokerProcess, tmp_path: Path, keydir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    device = Device(broker, tmp_path, keydir)
    observer = Client(broker)
    try:
        base = ["command", "--broker", _url(broker), "--device", DEVICE, "--key", str(keydir / "operator.key")]
        assert main([*base, "disable_head", "head=box"]) == 0
        reply = json.loads(capsys.readouterr().out)
        assert reply["ok"] is True and reply["result"] == {"head": "box", "enabled": False}
        assert device.controller.calls == [("disable_head", "box")]

        assert main([*base, "set_schedule", "head=nope", "every_n_frames=2"]) == 1
        captured = capsys.readouterr()
        assert json.loads(captured.out)["reason"] == "failed" and "no head 'nope'" in captured.err

        # an unsigned command: a rejection on the reply topic, counted, and shown in the status
        observer.subscribe(f"edge/{DEVICE}/reply")
        unsigned = sign_command(load_private_key(keydir / "operator.key"), DEVICE, "status", {})
        del unsigned["sig"]
        observer.subscribe(f"edge/{DEVICE}/status")
        observer.received(0.5)  # the retained status
        observer.publish(f"edge/{DEVICE}/cmd", encode_command(unsigned))
        messages = observer.received(5)
        replies = [json.loads(m.payload) for m in messages if m.topic.endswith("/reply")]
        assert [(r["ok"], r["reason"], r["nonce"]) for r in replies] == [(False, "unsigned", unsigned["nonce"])]
        statuses = [parse_status(m.payload) for m in messages if m.topic.endswith("/status")]
        assert statuses and statuses[-1]["commands"]["rejected"] == {"unsigned": 1}
        assert statuses[-1]["commands"]["last_rejection"]["reason"] == "unsigned"
        if broker.supports("5"):
            assert messages[0].properties.ContentType == "application/json"
        assert wait_for(lambda: device.processor.counters()["rejected"].get("unsigned") == 1, 5)
    finally:
        observer.close()
        device.close()


def test_cli_as_a_process_and_without_a_device(broker: BrokerProcess, tmp_path: Path, keydir: Path) -> None:
    device = Device(broker, tmp_path, keydir)
    try:
        base = [sys.executable, "-m", "edge_runtime.cli", "command", "--broker", _url(broker)]
        key = ["--key", str(keydir / "operator.key")]
        done = subprocess.run(
            [*base, "--device", DEVICE, *key, "status"], capture_output=True, text=True, timeout=60, cwd=ROOT
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["result"]["heads"] == ["box", "mask"]
        nobody = subprocess.run(
            [*base, "--device", "cam-9", *key, "--timeout", "1", "status"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        assert nobody.returncode == 2 and "no reply from device 'cam-9'" in nobody.stderr
    finally:
        device.close()


def test_cli_connection_and_usage_errors(keydir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.broker import free_port

    key = str(keydir / "operator.key")
    url = f"mqtt://{HOST}:{free_port()}"
    assert main(["command", "--broker", url, "--device", DEVICE, "--key", key, "status"]) == 2
    assert "connection refused" in capsys.readouterr().err
    assert main(["command", "--broker", url, "--device", DEVICE, "--key", key, "reboot"]) == 2
    assert "unknown command 'reboot'" in capsys.readouterr().err
    pub = str(keydir / "operator.pub")
    assert main(["command", "--broker", url, "--device", DEVICE, "--key", pub, "status"]) == 2
    assert "PUBLIC key" in capsys.readouterr().err


def test_cli_unreadable_tls_ca_is_one_line_naming_the_file(keydir: Path) -> None:
    """An unreadable ``tls_ca`` in the broker URL: exit 2 and one line naming the file, no traceback."""
    done = subprocess.run(
        [sys.executable, "-m", "edge_runtime.cli", "command", "--broker", "mqtts://127.0.0.1:1?tls_ca=/nonexistent.pem",
         "--device", DEVICE, "--key", str(keydir / "operator.key"), "status"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "edge-runtime: error: MQTT TLS setup: tls_ca '/nonexistent.pem': No such file or directory"
    ]


def test_cli_device_id_rule_is_the_runtime_one(keydir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = str(keydir / "operator.key")
    for device in ("cam/1", "cam+", "cam\nFAKE", ""):
        assert main(["command", "--broker", "mqtt://127.0.0.1:1", "--device", device, "--key", key, "status"]) == 2
        err = capsys.readouterr().err
        assert f"edge-runtime command: --device {device!r} must" in err and len(err.splitlines()) == 1


# -- the example ACL on a real mosquitto ----------------------------------------------------------

USERS = {"operator": "op-pw", "cam-1": "pw-1", "cam-2": "pw-2"}


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    if find_mosquitto() is None or find_mosquitto_passwd() is None:
        reason = "the ACL tests need mosquitto and mosquitto_passwd (apt-get install mosquitto); amqtt has no ACLs"
        print(reason)
        pytest.skip(reason)
    broker = MosquittoBroker(
        workdir=tmp_path / "mosquitto-acl", passwords=USERS, acl_file=ROOT / "devices" / "mosquitto" / "acl.conf"
    )
    with broker:
        yield broker


def _granted(codes: list[Any]) -> bool:
    return not any(getattr(code, "is_failure", False) or code == 128 for code in codes)


def _publish_once(broker: BrokerProcess, user: str, topic: str, payload: bytes) -> None:
    """Publish from a client of its own, without waiting for a PUBACK the broker may not send."""
    client = Client(broker, user, USERS[user])
    try:
        client.client.publish(topic, payload, qos=1)
        wait_for(lambda: False, 0.3)
    finally:
        client.close()


def test_acl_keeps_devices_apart(acl_broker: MosquittoBroker) -> None:
    operator = Client(acl_broker, "operator", USERS["operator"])
    cam1 = Client(acl_broker, "cam-1", USERS["cam-1"])
    try:
        assert _granted(operator.subscribe("edge/+/results"))
        # not allowed: dropped by the broker (mosquitto 2.0.11 also closes the connection)
        _publish_once(acl_broker, "cam-1", "edge/cam-2/results", b"forged")
        _publish_once(acl_broker, "cam-1", "edge/cam-1/cmd", b"self-command")  # devices never write commands
        cam1.publish("edge/cam-1/results", b"mine")
        got = operator.received(3)
        assert [(m.topic, bytes(m.payload)) for m in got] == [("edge/cam-1/results", b"mine")]

        # mosquitto's ACL file grants the SUBACK of a foreign topic (2.0.11) but never delivers
        # anything on it: "cannot subscribe" is checked by what arrives
        cam1.subscribe("edge/cam-2/cmd")
        cam1.subscribe("edge/+/results")
        assert _granted(cam1.subscribe("edge/cam-1/cmd"))
        operator.publish("edge/cam-2/cmd", b"for cam-2")
        _publish_once(acl_broker, "cam-2", "edge/cam-2/results", b"cam-2 result")
        operator.publish("edge/cam-1/cmd", b"for cam-1")
        got = cam1.received(3)
        assert [(m.topic, bytes(m.payload)) for m in got] == [("edge/cam-1/cmd", b"for cam-1")]
        assert [bytes(m.payload) for m in operator.received(1)] == [b"cam-2 result"]  # cam-2's own: allowed
    finally:
        operator.close()
        cam1.close()


def test_acl_allows_the_command_round_trip(
    acl_broker: MosquittoBroker, tmp_path: Path, keydir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    device = Device(acl_broker, tmp_path, keydir, user="cam-1", password=USERS["cam-1"])
    try:
        url = _url(acl_broker, "operator", USERS["operator"])
        args = ["command", "--broker", url, "--device", DEVICE, "--key", str(keydir / "operator.key")]
        assert main([*args, "enable_head", "head=mask"]) == 0
        assert json.loads(capsys.readouterr().out)["result"] == {"head": "mask", "enabled": True}
        # the device user cannot send commands to another device, even with a stolen key
        intruder = ["command", "--broker", _url(acl_broker, "cam-2", USERS["cam-2"]), "--device", DEVICE]
        assert main([*intruder, "--key", str(keydir / "operator.key"), "--timeout", "2", "status"]) == 2
        assert "no reply" in capsys.readouterr().err  # the command never reached the device
        assert device.controller.calls == [("enable_head", "mask")]
    finally:
        device.close()


def test_config_keys_env_and_flag(tmp_path: Path) -> None:
    from edge_runtime.config import RuntimeConfig

    base = {"bundle": "b", "source": "synthetic"}
    config = RuntimeConfig.load(flags=base, environ={"EDGE_RUNTIME_COMMAND_KEYS": "a.pub, b.pub"})
    assert config.command_keys == (Path("a.pub"), Path("b.pub")) and config.command_max_age_s == 60.0
    config = RuntimeConfig.load(
        flags={**base, "command_keys": ["op.pub"]}, environ={"EDGE_RUNTIME_COMMAND_MAX_AGE_S": "30"}
    )
    assert config.command_keys == (Path("op.pub"),) and config.command_max_age_s == 30.0
    assert RuntimeConfig.load(flags=base, environ={}).command_keys == ()
    with pytest.raises(ConfigError, match=r"test\.toml: command_keys must be a path or a list"):
        RuntimeConfig.from_mapping({**base, "command_keys": 3}, "test.toml")
    with pytest.raises(ConfigError, match="command_max_age_s"):
        RuntimeConfig.from_mapping({**base, "command_max_age_s": 0}, "test.toml")


def test_a_corrupt_nonce_store_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    store = tmp_path / "command-nonces.sqlite"
    store.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigError, match=r"command-nonces.sqlite: the command nonce store cannot be used"):
        NonceStore(store)
