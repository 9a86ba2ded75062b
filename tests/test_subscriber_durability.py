"""Nothing lost, nothing hidden: ``edge-runtime subscribe`` as a subprocess against a real
mosquitto. A message is acknowledged only once its line is written (a full disk: one line, exit
2, and after a restart with room every result arrives, once); the default session is persistent
under a derived client id (a broker restart loses nothing; a lock refuses a second process; a
session taken over is logged once and not fought over); ``--clean-session`` opts out."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from edge_runtime.cloud.options import SubscribeOptions
from edge_runtime.cloud.session import SessionFiles
from edge_runtime.cloud.writers import OutputError, open_output
from edge_runtime.codec import encode_line
from edge_runtime.errors import ConfigError
from tests.broker import MosquittoBroker, find_mosquitto
from tests.test_subscriber_gaps import (
    ROOT,
    RUNTIME,
    Publisher,
    Subscriber,
    _no_subscriber_left,
    frame,
    mosquitto,
    subscribe_env,
    wait_lines,
)

__all__ = ["_no_subscriber_left", "mosquitto"]  # fixtures, shared with test_subscriber_gaps


def seqs(path: Path) -> list[int]:
    return [json.loads(line)["seq"] for line in path.read_bytes().split(b"\n")[:-1]]


# -- acknowledged only once written: a full disk ------------------------------------------------------


def mount_small_fs(folder: Path) -> None:
    """A 64 KiB tmpfs on ``folder`` (root only), else a skip saying why."""
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("no mount command")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        reason = f"cannot mount a small tmpfs (needs root): {proc.stderr.strip()}"
        print(reason)
        pytest.skip(reason)


def unmount(folder: Path) -> None:
    if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def file_size_limit() -> None:
    """In the subscriber (before exec): files may not grow past 64 KiB (EFBIG, signal ignored)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, resource.RLIM_INFINITY))


@pytest.mark.parametrize("full", ["tmpfs", "rlimit"])
def test_a_full_disk_stops_the_subscriber_and_a_restart_loses_nothing(
    mosquitto: MosquittoBroker, tmp_path: Path, full: str
) -> None:
    """150 results of ~1.6 kB into a 64 KiB filesystem (or, without root, under a 64 KiB file
    size limit): the subscriber stops with one line naming the file and the error (exit 2, no
    traceback), its file holds whole lines only, each once; with room again the next start gets
    every other result from the broker (they were never acknowledged) and reports no gap."""
    folder = tmp_path / "small"
    folder.mkdir()
    if full == "tmpfs":
        mount_small_fs(folder)
    out = folder / "r.jsonl"
    count = 150
    pub = None
    try:
        pub = Publisher(mosquitto)
        first = Subscriber(
            "--broker", mosquitto.url, "--output", str(out), state_home=tmp_path / "state",
            preexec_fn=file_size_limit if full == "rlimit" else None,
        )  # fmt: skip
        for seq in range(count):
            pub.publish(encode_line(frame(seq, pad=1500)))
        try:
            first.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("the subscriber did not stop on a full disk")
        code, err = first.stop()
        assert code == 2, err
        assert "Traceback" not in err
        last = err.strip().splitlines()[-1]
        assert re.fullmatch(
            rf"edge-runtime: error: cannot write (output '{re.escape(str(out))}'|the state file '{re.escape(str(out))}"
            r"\.state\.json'): (No space left on device|File too large).* \(nothing after the last written batch "
            r"was acknowledged: the broker keeps it for the next start\)",
            last,
        ), last
        written = seqs(out)
        assert out.read_bytes().endswith(b"\n")  # the unfinished batch was taken back: whole lines only
        assert 0 < len(written) < count and written == list(range(len(written)))
        if full == "tmpfs":
            subprocess.run(["mount", "-o", "remount,size=4m", str(folder)], check=True)
        again = Subscriber("--broker", mosquitto.url, "--output", str(out), state_home=tmp_path / "state")
        assert "(session resumed)" in again.first
        got = wait_lines(out, count, timeout=30)
        code, err = again.stop()
    finally:
        if pub is not None:
            pub.close()
        if full == "tmpfs":
            unmount(folder)
    assert code == 0, err
    assert [line["seq"] for line in got] == list(range(count))  # every one, once, in order
    assert "cam1 epoch ep1: no gaps" in err and "Traceback" not in err


def test_a_failed_state_save_takes_the_batch_back_out_of_the_output(tmp_path: Path) -> None:
    """The output and the state move together: when the state cannot be saved after a batch was
    written, the batch's lines are cut off again (the broker sends them again; written twice
    they would be duplicates the state does not know)."""
    out = tmp_path / "r.csv"
    with open_output(str(out), "csv") as output:
        output.write(frame(0))
        output.commit()
        committed = out.read_bytes()
        output.write(frame(1))
        output.write(frame(2))

        def state_fails() -> None:
            raise OutputError("cannot write the state file 's': No space left on device")

        with pytest.raises(OutputError) as caught:
            output.commit(state_fails)
    assert out.read_bytes() == committed  # the header and row 0
    assert str(caught.value) == (
        "cannot write the state file 's': No space left on device; the unfinished batch (2 whole line(s)) was "
        f"taken back out of output {str(out)!r}"
    )


def test_the_lock_refuses_a_second_holder_until_released(tmp_path: Path) -> None:
    options = SubscribeOptions(broker="mqtt://h", output=str(tmp_path / "r.jsonl"))
    client_id = options.derived_client_id()
    with SessionFiles.open(options, client_id) as files:
        assert files.lock_path == tmp_path / "r.jsonl.lock"
        assert files.state_path == tmp_path / "r.jsonl.state.json"
        with pytest.raises(ConfigError, match=rf"another subscriber \(pid {os.getpid()}\) is running with client id"):
            SessionFiles.open(options, client_id)
    SessionFiles.open(options, client_id).close()  # released


# -- the default session: persistent, derived client id --------------------------------------------------


def test_a_graceful_broker_restart_loses_nothing(tmp_path: Path) -> None:
    """The default subscriber (no client id given) keeps a persistent session: results
    published right after a broker restart, before the subscriber is back, wait for it in the
    session (mosquitto with persistence) and arrive; none is missing."""
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed")
    out = tmp_path / "r.jsonl"
    with MosquittoBroker(workdir=tmp_path / "mosquitto", persistence=True) as broker:
        sub = Subscriber("--broker", broker.url, "--output", str(out), state_home=tmp_path / "state")
        try:
            assert "(persistent session)" in sub.first
            pub = Publisher(broker, "restart-pub-1")
            for seq in range(50):
                pub.publish(encode_line(frame(seq)))
            pub.close()
            broker.stop()  # SIGTERM: mosquitto saves its sessions and queued messages
            broker.start()
            pub = Publisher(broker, "restart-pub-2")  # before the subscriber reconnects (>= 0.5 s)
            for seq in range(50, 100):
                pub.publish(encode_line(frame(seq)))
            pub.close()
            got = wait_lines(out, 100, timeout=30)
        finally:
            code, err = sub.stop()
    assert code == 0, err
    assert sorted({line["seq"] for line in got}) == list(range(100)) and len(got) == 100
    assert "cam1 epoch ep1: no gaps" in err


def test_the_derived_client_id_resumes_and_clean_session_opts_out(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    """stdout output: the same derived id on each start (state and lock in $XDG_STATE_HOME);
    results published while it is away arrive on the next start. Another --instance is another
    session. --clean-session: a random id, a clean start, nothing kept, no state file."""
    state = tmp_path / "state"
    args = ("--broker", mosquitto.url)
    first = Subscriber(*args, state_home=state)
    match = re.search(r" as (edge-sub-[0-9a-f]{16}) \(persistent session\)", first.first)
    assert match, first.first
    client_id = match.group(1)
    assert first.stop()[0] == 0
    pub = Publisher(mosquitto)
    try:
        pub.publish(encode_line(frame(0)))  # while it is away
        again = Subscriber(*args, state_home=state)
        assert f" as {client_id} (session resumed)" in again.first
        time.sleep(0.3)
        code, err = again.stop()
        assert code == 0 and "received 1 messages: 1 results" in err, err
        files = sorted(p.name for p in (state / "edge-runtime" / "subscribe").iterdir())
        assert files == [f"{client_id}@127.0.0.1_{mosquitto.port}.{ext}" for ext in ("lock", "state.json")]
        other = Subscriber(*args, "--instance", "1", state_home=state)
        assert client_id not in other.first and "(persistent session)" in other.first
        assert other.stop()[0] == 0
        clean = [Subscriber(*args, "--clean-session", state_home=tmp_path / "clean") for _ in range(2)]
        ids = {re.search(r" as (\S+) \(clean session\)", c.first).group(1) for c in clean}  # type: ignore[union-attr]
        assert len(ids) == 2 and client_id not in ids
        for c in clean:
            assert c.stop()[0] == 0
        assert not (tmp_path / "clean").exists()
    finally:
        pub.close()


def test_a_second_subscriber_with_the_same_id_is_refused(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    args = ["subscribe", "--broker", mosquitto.url, "--output", str(out)]
    first = Subscriber(*args[1:], state_home=tmp_path / "state")
    try:
        proc = subprocess.run(
            [*RUNTIME, *args], cwd=ROOT, env=subscribe_env(tmp_path / "state"), capture_output=True, text=True,
            timeout=30, check=False,
        )  # fmt: skip
    finally:
        code, err = first.stop()
    assert code == 0, err
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert re.fullmatch(
        rf"edge-runtime: error: another subscriber \(pid {first.proc.pid}\) is running with client id edge-sub-\w+ "
        rf"or output '{re.escape(str(out))}' \(lock '{re.escape(str(out))}\.lock'\): stop it, or give this one "
        r"another --output or --instance",
        lines[0],
    ), lines[0]


def test_a_session_taken_over_is_logged_once_and_not_fought_over(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    """Two subscribers given the same --client-id (and different outputs, so no lock stops
    them): the broker hands the session to the second; the first says so once and exits 1
    instead of reconnecting for ever (each reconnect throws the other one out)."""
    common = ("--broker", mosquitto.url, "--client-id", "cloud-1")
    first = Subscriber(*common, "--output", str(tmp_path / "a.jsonl"), state_home=tmp_path / "state")
    second = Subscriber(*common, "--output", str(tmp_path / "b.jsonl"), state_home=tmp_path / "state")
    try:
        try:
            first.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail("the first subscriber is still running after its session was taken over")
        code, err = first.stop()
        pub = Publisher(mosquitto)
        try:
            pub.publish(encode_line(frame(0)))
        finally:
            pub.close()
        assert [line["seq"] for line in wait_lines(tmp_path / "b.jsonl", 1)] == [0]  # the second one works on
        assert second.proc.poll() is None
    finally:
        code2, err2 = second.stop()
    assert code == 1, err
    assert err.count("took the session over") == 1 and "Traceback" not in err, err
    # MQTT 5 brokers that say so ("Session taken over"), and those that just close the connection
    # (mosquitto 2.0.11, MQTT 3.1.1): a closed connection right after each reconnect
    assert re.search(
        r"ERROR MQTT broker 127\.0\.0\.1:\d+: (another client connected with client id cloud-1 and took the "
        r"session over|it closed the connection of client id cloud-1 right after each of the last 2 connects: "
        r"most likely another client connected with that id and took the session over); stopping",
        err,
    ), err
    assert code2 == 0 and "took the session over" not in err2, err2
    assert json.loads((tmp_path / "b.jsonl").read_text())["seq"] == 0
