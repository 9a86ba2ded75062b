"""Attacks on the update path, the subscriber and the parsers, each with real parts: real
tarballs and keys, a real mosquitto, the subscriber as a real process.

- a head-only package listing ``../../../../secret.txt`` creates nothing outside staging;
- nothing of a package is written before its manifest, signature and member list check out
  (a 64 MiB unlisted member, a member larger than its listed size, 20,000 empty members);
- the subscriber believes the topic, not the payload, about which device speaks; device ids are
  escaped when printed;
- the subscriber's memory stays bounded under 40 payloads of 16 MB, SIGTERM is prompt, and the
  broker keeps what the subscriber could not take (a persistent session gets it all);
- JSON nested 100,000 levels deep is one clear error everywhere, never a RecursionError.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.bounded_json import JsonNestingError, loads_bounded
from edge_runtime.bundle.reader import read_manifest
from edge_runtime.cloud.options import SubscribeOptions
from edge_runtime.cloud.stream import ResultStream
from edge_runtime.cloud.tracker import StreamTracker
from edge_runtime.codec import encode_line
from edge_runtime.errors import BundleError
from edge_runtime.names import printable
from edge_runtime.trust.command_verify import CommandVerifier
from edge_runtime.trust.commands import CommandRejected
from edge_runtime.trust.keys import generate_keypair, load_public_keys
from edge_runtime.trust.update_install import install_update
from edge_runtime.trust.updates import Slots, UpdateError
from exporter.signing import sign_bundle
from tests.broker import BrokerProcess
from tests.test_subscriber import RawPublisher, frame, url_for

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = [sys.executable, "-m", "edge_runtime.cli"]

# -- what a process writes ------------------------------------------------------------------------

_recording: list[list[str]] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _recording:
        return
    if event == "open":
        path, mode, flags = args
        writes = isinstance(mode, str) and any(c in mode for c in "wax+")
        writes = writes or (isinstance(flags, int) and bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)))
        if writes and isinstance(path, (str, bytes, os.PathLike)):
            _recording[-1].append(os.fsdecode(path))
    elif event in ("os.link", "os.symlink"):
        _recording[-1].append(os.fsdecode(args[1]))


sys.addaudithook(_audit)


@contextlib.contextmanager
def recorded_writes() -> Iterator[list[str]]:
    """Every path this process opens for writing (or links) inside the block, from Python's
    audit events; the list fills as the block runs."""
    paths: list[str] = []
    _recording.append(paths)
    try:
        yield paths
    finally:
        _recording.remove(paths)


def written_bytes() -> int:
    """Bytes this process has written with write(2) and friends (``wchar`` of /proc/self/io)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/self/io")


def tree(root: Path, skip: Path | None = None) -> set[str]:
    """Every path under ``root`` (links included), except those under ``skip``."""
    out = set()
    for path in root.rglob("*"):
        if skip is not None and (path == skip or skip in path.parents):
            continue
        out.add(path.relative_to(root).as_posix())
    return out


# -- packages ---------------------------------------------------------------------------------------


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


class _Zeros(io.RawIOBase):
    """``size`` zero bytes as a stream (a big tar member without the memory)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = b"\0" * n
        self.left -= n
        return n


def _add_zeros(tar: tarfile.TarFile, name: str, size: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = size
    tar.addfile(info, io.BufferedReader(_Zeros(size)))


@pytest.fixture
def signed_v1(demo_bundle: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """(bundle, private key, public key): the demo bundle signed by the device owner's key."""
    bundle = Path(shutil.copytree(demo_bundle, tmp_path / "v1"))
    (tmp_path / "keys").mkdir()
    private, public = generate_keypair(tmp_path / "keys" / "owner")
    sign_bundle(bundle, private)
    return bundle, private, public


# -- 1. path traversal in head-only packages -----------------------------------------------------------


@pytest.mark.parametrize("evil", ["../../../../secret.txt", "heads/../../../../../secret.txt"])
@pytest.mark.parametrize("keys", [True, False], ids=["trusted-keys", "no-keys"])
def test_head_only_package_with_a_traversal_key_creates_nothing_outside_staging(
    evil: str, keys: bool, signed_v1: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """The running bundle sits four folders below ``x1``, the staging bundle four below the
    test folder: ``<base>/<evil>`` is ``x1/secret.txt``, ``<staging>/<evil>`` the test folder's
    ``secret.txt``. Before the fix the device hard-linked the one to the other while filling the
    package from the base, and only then refused the package as unsigned. Now a device with
    trusted keys refuses the unsigned package before reading further, and one without refuses
    the manifest's path."""
    v1, _private, public = signed_v1
    base = tmp_path / "x1" / "x2" / "x3" / "x4" / "base"
    shutil.copytree(v1, base)
    secret = tmp_path / "x1" / "secret.txt"
    secret.write_text("the device's secret\n")
    manifest = json.loads((v1 / "manifest.json").read_text())
    manifest["files"][evil] = read_manifest_digest(secret)
    package = tmp_path / "pkg.tar.gz"
    with tarfile.open(package, "w:gz") as tar:
        _add_bytes(tar, "manifest.json", json.dumps(manifest).encode())  # no manifest.sig
    state = tmp_path / "state"
    slots = Slots.open(state)
    before = tree(tmp_path, skip=state)
    with recorded_writes() as writes:
        outcome, _ = install_update(slots, str(package), trusted_keys=[public] if keys else None, base=base)
    assert not outcome.ok
    if keys:
        assert "unsigned: no manifest.sig" in outcome.reason
    else:
        assert "must stay inside the bundle" in outcome.reason and evil in outcome.reason
    assert not (tmp_path / "secret.txt").exists()
    assert tree(tmp_path, skip=state) == before
    assert all(Path(p).resolve().is_relative_to(state.resolve()) for p in writes), writes
    assert not list(slots.root.glob("staging-*"))


def read_manifest_digest(path: Path) -> str:
    from edge_runtime.bundle.reader import sha256_file

    return sha256_file(path)


def test_manifest_paths_follow_one_rule() -> None:
    """Every ``files`` key is a normalised relative path: what the update resolves against the
    package and against the running bundle is the same file."""
    from edge_runtime.bundle.fields import bundle_path_problem

    for good in ("trunk.fp32.onnx", "heads/box.int8.onnx", "selftest/frames.npy", "a b/ü.onnx"):
        assert bundle_path_problem(good) is None, good
    for bad in (
        "", "/etc/hostname", "../x", "a/../../x", "a//b", "./a", "a/./b", "a/", "a\\b", "a\nb", "a\0b",
        "manifest.json", "manifest.sig", 7, None, "x" * 2000,
    ):  # fmt: skip
        assert bundle_path_problem(bad) is not None, bad


# -- 2. nothing written before the manifest, the signature and the members check out ------------------

BIG = 64 << 20


def _bundle_tar(bundle: Path, out: Path, extra: Iterator[tuple[str, int]] | list[tuple[str, int]] = ()) -> Path:
    with tarfile.open(out, "w:gz") as tar:
        for path in sorted(bundle.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=path.relative_to(bundle).as_posix())
        for name, size in extra:
            _add_zeros(tar, name, size)
    return out


def _assert_refused_before_writing(
    slots: Slots, package: Path, reason: str, *, keys: list[Path] | None, base: Path | None = None
) -> None:
    start = written_bytes()
    with recorded_writes() as writes:
        outcome, _ = install_update(slots, str(package), trusted_keys=keys, base=base)
    written = written_bytes() - start
    assert not outcome.ok and reason in outcome.reason, outcome.reason
    assert not [p for p in writes if "big.bin" in p or "/junk/" in p], writes[:5]
    assert all(Path(p).resolve().is_relative_to(slots.root.resolve()) for p in writes), writes
    assert written < 4 << 20, f"{written} bytes written for a refused package"
    assert not list(slots.root.glob("staging-*"))


def test_an_unsigned_package_is_refused_before_anything_is_extracted(
    signed_v1: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    v1, _private, public = signed_v1
    unsigned = tmp_path / "unsigned"
    shutil.copytree(v1, unsigned)
    (unsigned / "manifest.sig").unlink()
    package = _bundle_tar(unsigned, tmp_path / "unsigned.tar.gz", [("big.bin", BIG)])
    _assert_refused_before_writing(Slots.open(tmp_path / "state"), package, "unsigned", keys=[public])


def test_an_unlisted_member_of_a_signed_package_is_refused_before_anything_is_extracted(
    signed_v1: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    v1, _private, public = signed_v1
    package = _bundle_tar(v1, tmp_path / "signed.tar.gz", [("big.bin", BIG)])
    _assert_refused_before_writing(
        Slots.open(tmp_path / "state"), package, "'big.bin' is not listed in the signed manifest.json", keys=[public]
    )


def test_a_member_larger_than_its_listed_size_is_refused_before_it_is_written(
    demo_bundle: Path, tmp_path: Path
) -> None:
    """No trusted keys: the manifest's sizes still bound what is extracted."""
    bundle = Path(shutil.copytree(demo_bundle, tmp_path / "v1"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["big.bin"] = {"sha256": "sha256:" + "0" * 64, "size": 10}
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))
    package = _bundle_tar(bundle, tmp_path / "pkg.tar.gz", [("big.bin", BIG)])
    _assert_refused_before_writing(
        Slots.open(tmp_path / "state"), package, f"big.bin is {BIG} bytes, the manifest lists 10", keys=None
    )


def test_twenty_thousand_empty_members_are_refused_before_one_is_created(demo_bundle: Path, tmp_path: Path) -> None:
    package = _bundle_tar(demo_bundle, tmp_path / "many.tar.gz", [(f"junk/{i:05d}", 0) for i in range(20_000)])
    _assert_refused_before_writing(Slots.open(tmp_path / "state"), package, "more than 4096 members", keys=None)


def test_a_signed_head_update_still_installs_with_sizes_checked(
    signed_v1: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """The safe order changes nothing for a good package: a signed head-only package made by
    ``edge-export head-update`` installs, its listed sizes are in the manifest."""
    from exporter.head_update import write_head_update

    v1, private, public = signed_v1
    v2 = Path(shutil.copytree(v1, tmp_path / "v2"))
    manifest = json.loads((v2 / "manifest.json").read_text())
    manifest["version"] = "2"
    (v2 / "manifest.json").write_text(json.dumps(manifest, indent=2))
    # a changed head: any listed file will do for the package's shape; keep the graphs valid
    rel = "selftest/expected.json"
    (v2 / rel).write_text((v2 / rel).read_text() + "\n")
    manifest["files"][rel] = {"sha256": read_manifest_digest(v2 / rel), "size": (v2 / rel).stat().st_size}
    (v2 / "manifest.json").write_text(json.dumps(manifest, indent=2))
    sign_bundle(v2, private)
    package = write_head_update(v2, base=v1, output=tmp_path / "heads.tar.gz").path
    assert all(isinstance(e, dict) and "size" in e for e in manifest["files"].values())
    slots = Slots.open(tmp_path / "state")
    outcome, _ = install_update(slots, str(package), trusted_keys=[public], base=v1)
    assert outcome.ok, outcome.reason
    active = slots.active_bundle()
    assert active is not None and read_manifest(active).version == "2"
    assert (active / "trunk.fp32.onnx").stat().st_ino == (v1 / "trunk.fp32.onnx").stat().st_ino


# -- 3. the subscriber believes the topic -------------------------------------------------------------


def test_a_payload_for_another_device_is_rejected_and_cannot_preempt_its_seqs(
    broker: BrokerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """A client allowed to publish on ``edge/attacker/results`` pre-publishes seqs 0-4 of
    ``victim``; the real ones must still arrive, and the forgeries be counted and logged."""
    tracker = StreamTracker()
    options = SubscribeOptions(broker=url_for(broker), topic="edge/+/results")
    pub = RawPublisher(broker)
    caplog.set_level(logging.WARNING, logger="edge_runtime.cloud.stream")
    try:
        with ResultStream(options, tracker) as stream:
            for seq in range(5):
                pub.publish(encode_line(frame(seq, device="victim")), topic="edge/attacker/results")
            pub.publish(encode_line(frame(9, device="victim\nFAKE")), topic="edge/attacker/results")
            for seq in range(5):
                pub.publish(encode_line(frame(seq, device="victim")), topic="edge/victim/results")
            lines = list(stream.lines(max_messages=5, timeout=10))
            time.sleep(0.2)
            lines += list(stream.lines(timeout=0.3))
    finally:
        pub.close()
    assert [(line["device"], line["seq"]) for line in lines] == [("victim", s) for s in range(5)]
    assert (tracker.rejected, tracker.results, tracker.duplicates) == (6, 5, 0)
    summary = tracker.summary()
    assert "6 rejected (device differs from the topic's)" in summary
    warnings = [r.getMessage() for r in caplog.records if "another device" in r.getMessage()]
    assert warnings and all("edge/attacker/results" in w and "\n" not in w for w in warnings)


def test_device_ids_are_escaped_in_the_summary() -> None:
    tracker = StreamTracker()
    tracker.count_line({"device": "cam\nFAKE epoch x: no gaps", "epoch": "e\x1b[31m", "seq": 0})
    summary = tracker.summary()
    assert len(summary.splitlines()) == 2
    assert "cam\\nFAKE epoch x: no gaps epoch e\\x1b[31m: no gaps" in summary
    assert printable("plain-id") == "plain-id"


@pytest.mark.parametrize("device", ["cam\n1", "cam\x1b1", "a/b", "+", "#", ""])
def test_config_refuses_device_ids_that_break_topics_or_logs(device: str) -> None:
    from edge_runtime.config import RuntimeConfig
    from edge_runtime.errors import ConfigError

    with pytest.raises(ConfigError, match="device_id"):
        RuntimeConfig.load(flags={"bundle": "b", "source": "synthetic", "device_id": device}, environ={})


# -- 4. bounded subscriber memory, prompt SIGTERM -------------------------------------------------------

PAYLOADS = 40
LABEL_BYTES = 16_000_000  # payloads of 16.0 MB: under the codec's 16 MiB body limit


def _rss_peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def _big_frame(seq: int) -> bytes:
    line = frame(seq, device="cam1")
    line["results"] = {"cls": {"labels": [f"{seq:04d}" + "x" * LABEL_BYTES], "class_ids": [0], "scores": [1.0]}}
    return encode_line(line)


@pytest.mark.mqtt5
def test_subscriber_memory_is_bounded_and_sigterm_prompt_while_the_broker_keeps_the_rest(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    """The subscriber's stdout is a pipe nobody reads (a stalled consumer); 40 payloads of
    16 MB arrive. Its queue stops at its bound (the network thread stops reading), so its peak
    RSS stays far below the 640 MB offered; SIGTERM ends it in seconds; a second run of the
    same persistent session receives what the broker kept: every seq, once or more."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_RUNTIME_")}
    common = ["subscribe", "--broker", broker.url, "--client-id", "bounded-sub", "--session-expiry", "300"]
    first = subprocess.Popen(
        [*RUNTIME, *common], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )  # fmt: skip
    assert first.stderr is not None and first.stdout is not None
    assert b"subscribed to" in first.stderr.readline()
    pub = RawPublisher(broker)
    try:
        for seq in range(PAYLOADS):
            pub.publish(_big_frame(seq))
    finally:
        pub.close()
    time.sleep(3.0)  # let it take in what it will
    peak_mib = _rss_peak_kib(first.pid) / 1024
    seen: set[int] = set()

    def read_stdout() -> None:
        assert first.stdout is not None
        for raw_line in first.stdout:
            seen.add(json.loads(raw_line)["seq"])

    reader = threading.Thread(target=read_stdout, daemon=True)
    reader.start()
    started = time.monotonic()
    first.send_signal(signal.SIGTERM)
    try:
        first.wait(timeout=60)
    except subprocess.TimeoutExpired:
        first.kill()
        raise
    took = time.monotonic() - started
    reader.join(timeout=30)
    summary = first.stderr.read().decode()
    assert first.returncode == 0, summary
    print(f"peak RSS {peak_mib:.0f} MiB, SIGTERM to exit {took:.1f} s, {len(seen)} results in the first run")
    assert peak_mib < 300, f"subscriber peak RSS {peak_mib:.0f} MiB for {PAYLOADS} x 16 MB"
    assert took < 20, f"SIGTERM took {took:.1f} s"
    assert len(seen) < PAYLOADS  # the rest stayed with the broker

    out = tmp_path / "rest.jsonl"
    second = subprocess.Popen(
        [*RUNTIME, *common, "--output", str(out)], cwd=ROOT, env=env, stderr=subprocess.PIPE
    )  # fmt: skip
    deadline = time.monotonic() + 60
    rest: set[int] = set()
    try:
        while time.monotonic() < deadline and seen | rest != set(range(PAYLOADS)):
            time.sleep(0.5)
            if out.exists():  # one snapshot of a growing file: its last piece may be a partial line
                rest = {json.loads(line)["seq"] for line in out.read_bytes().split(b"\n")[:-1]}
    finally:  # never leave the subscriber running, whatever failed above
        second.send_signal(signal.SIGTERM)
        try:
            second.wait(timeout=60)
        except subprocess.TimeoutExpired:
            second.kill()
            second.wait()
    assert second.stderr is not None
    assert seen | rest == set(range(PAYLOADS)), second.stderr.read().decode()


# -- 5. deep JSON ------------------------------------------------------------------------------------------

DEEP = "[" * 100_000 + "]" * 100_000


def test_bounded_json_refuses_deep_nesting_before_parsing() -> None:
    with pytest.raises(JsonNestingError, match="nested deeper than 64 levels"):
        loads_bounded(DEEP)
    with pytest.raises(ValueError):
        loads_bounded(b"\xff")
    brackets_in_a_string = json.dumps({"a": "[" * 72})
    assert loads_bounded(brackets_in_a_string) == {"a": "[" * 72}
    assert loads_bounded("[" * 64 + "]" * 64, max_depth=64) is not None
    with pytest.raises(JsonNestingError):
        loads_bounded("[" * 65 + "]" * 65, max_depth=64)


@pytest.fixture
def deep_bundle(tmp_path: Path) -> Path:
    bundle = tmp_path / "deep"
    bundle.mkdir()
    (bundle / "manifest.json").write_text(DEEP)
    return bundle


@pytest.mark.parametrize(
    "args",
    [
        ["inspect", "{bundle}"],
        ["selftest", "{bundle}"],
        ["run", "--bundle", "{bundle}", "--source", "synthetic", "--validate", "--state-dir", "{state}"],
        ["update", "{bundle}", "--state-dir", "{state}", "--bundle", "{bundle}"],
    ],
    ids=["inspect", "selftest", "run", "update"],
)
def test_a_deeply_nested_manifest_is_one_clear_line(args: list[str], deep_bundle: Path, tmp_path: Path) -> None:
    argv = [a.format(bundle=deep_bundle, state=tmp_path / "state") for a in args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_RUNTIME_")}
    proc = subprocess.run(
        [*RUNTIME, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode in (1, 2), output
    assert "Traceback" not in output and "RecursionError" not in output, output[-2000:]
    assert "nested deeper than 64 levels" in output, output[-2000:]


def test_a_deep_update_package_and_state_file_are_refused_with_a_reason(
    deep_bundle: Path, demo_bundle: Path, tmp_path: Path
) -> None:
    """What a remote ``update`` command reaches: a refused outcome, never an internal error."""
    slots = Slots.open(tmp_path / "state")
    outcome, _ = install_update(slots, str(deep_bundle), base=demo_bundle)
    assert not outcome.ok and "nested deeper than 64 levels" in outcome.reason
    slots.state_path.write_text(DEEP)
    with pytest.raises(UpdateError, match="nested deeper"):
        slots.read_state()
    with pytest.raises(BundleError, match="nested deeper"):
        read_manifest(deep_bundle)


def test_a_deep_command_is_rejected_as_malformed(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    _private, public = generate_keypair(tmp_path / "keys" / "op")
    verifier = CommandVerifier(
        load_public_keys([public]), "cam1", nonce_store=tmp_path / "nonces.sqlite", max_bytes=1 << 20
    )
    try:
        with pytest.raises(CommandRejected) as caught:
            verifier.parse(('{"args":' * 50_000 + "1" + "}" * 50_000).encode())
    finally:
        verifier.close()
    assert caught.value.reason == "malformed" and "nested deeper" in str(caught.value)


@pytest.mark.parametrize("url", ["mqtt://u:s3cret@ho\u2100st", "mqtt://u:s3cret@host:99999", "mqtts://u:s3cret@[::1"])
def test_a_bad_broker_url_never_shows_its_password(url: str) -> None:
    """urlsplit's own error can quote the whole netloc: the message (and the traceback, whose
    cause is dropped on purpose here) must not carry the password."""
    from edge_runtime.delivery.mqtt.settings import MqttConfig
    from edge_runtime.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        MqttConfig.from_url(url)
    assert "s3cret" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_an_update_url_never_shows_its_password(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A refused download names the URL in the outcome, the log and the slots' history: with the
    password redacted (nothing listens on port 1)."""
    slots = Slots.open(tmp_path / "state")
    caplog.set_level(logging.INFO)
    outcome, _ = install_update(slots, "http://ops:s3cret@127.0.0.1:1/v2.tar.gz")
    assert not outcome.ok and "download failed" in outcome.reason and "ops:***@127.0.0.1:1" in outcome.reason
    assert "s3cret" not in outcome.reason + outcome.source + json.dumps(slots.read_state()) + caplog.text
