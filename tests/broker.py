"""A real mosquitto broker for tests: its own config in a temp dir, a free loopback port.

Example::

    with MosquittoBroker() as broker:        # started, port accepting connections
        publish_to("127.0.0.1", broker.port)
        broker.stop()                          # SIGTERM + wait (clients see a disconnect)
        broker.start()                         # again, on the same port

``mosquitto_broker`` is a pytest fixture factory: ``broker = pytest.fixture(mosquitto_broker)``
in a test module (or conftest) gives a started broker, or skips the test (with the reason)
when no mosquitto executable is installed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

HOST = "127.0.0.1"


def find_mosquitto() -> str | None:
    """The mosquitto executable (``/usr/sbin/mosquitto`` or on PATH), or ``None``."""
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("mosquitto")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def port_open(port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


class MosquittoBroker:
    """One mosquitto process on ``127.0.0.1:port`` (a free port unless given).

    ``persistence=True`` keeps sessions and their queued messages across ``stop``/``start``
    (not across ``kill``)."""

    def __init__(
        self,
        port: int | None = None,
        *,
        executable: str | None = None,
        workdir: Path | None = None,
        persistence: bool = False,
    ) -> None:
        exe = executable or find_mosquitto()
        if exe is None:
            raise FileNotFoundError("mosquitto is not installed (looked at /usr/sbin/mosquitto and PATH)")
        self.executable = exe
        self.port = port if port is not None else free_port()
        self._own_dir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="mosquitto-")) if workdir is None else Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "mosquitto.log"
        self.config_path = self.workdir / "mosquitto.conf"
        lines = [
            f"listener {self.port} {HOST}",
            "allow_anonymous true",
            f"persistence {'true' if persistence else 'false'}",
            "max_queued_messages 0",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
        ]
        if persistence:  # saved on SIGTERM (stop), restored by start: sessions and queued messages
            lines.append(f"persistence_location {self.workdir}/")
        if os.geteuid() == 0:
            lines.append("user root")
        self.config_path.write_text("\n".join(lines) + "\n")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def url(self) -> str:
        return f"mqtt://{HOST}:{self.port}"

    def start(self, timeout: float = 10.0) -> MosquittoBroker:
        """Start (again, on the same port) and wait until the port accepts connections."""
        if self.running:
            return self
        deadline = time.monotonic() + timeout
        while True:  # the old listening socket may linger for a moment after a restart
            self._proc = subprocess.Popen(
                [self.executable, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            while time.monotonic() < deadline and self._proc.poll() is None:
                if port_open(self.port):
                    return self
                time.sleep(0.02)
            if self._proc.poll() is None or time.monotonic() >= deadline:
                self.kill()
                raise RuntimeError(f"mosquitto did not listen on {HOST}:{self.port} in {timeout} s: {self.log_tail()}")
            time.sleep(0.1)  # it exited (address in use?): try again until the deadline

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM and wait (SIGKILL if it does not exit in ``timeout``)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def kill(self) -> None:
        """SIGKILL and reap."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.kill()
        proc.wait(5)

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def cleanup(self) -> None:
        self.kill()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()


def mosquitto_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """Fixture body: ``broker = pytest.fixture(mosquitto_broker)``; skips without mosquitto."""
    import pytest

    if find_mosquitto() is None:
        reason = "mosquitto is not installed (apt-get install mosquitto); skipping the MQTT tests"
        print(reason)
        pytest.skip(reason)
    broker = MosquittoBroker(workdir=tmp_path / "mosquitto")
    try:
        broker.start()
        yield broker
    finally:
        with contextlib.suppress(Exception):
            broker.cleanup()
