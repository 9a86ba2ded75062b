"""Real MQTT brokers for tests: their own config in a temp dir, a free loopback port.

mosquitto runs the broker configuration the product ships, ``devices/mosquitto/mosquitto.conf``
(:func:`mosquitto_test_config`): a test replaces only where it listens (its port, on 127.0.0.1),
where it saves (its temp dir), where it logs, and who may connect (anonymous, unless the test
asks for passwords, an ACL or TLS). Every other setting (persistence, autosave, queue and
in-flight limits, TCP_NODELAY) is the shipped one.

Example::

    with MosquittoBroker() as broker:        # started, port accepting connections
        publish_to("127.0.0.1", broker.port)
        broker.stop()                          # graceful stop + wait (clients see a disconnect)
        broker.start()                         # again, on the same port

    pki = make_test_pki(tmp_path / "pki")      # throwaway CA, server and client certificates
    with MosquittoBroker(tls=pki.server, passwords={"user": "pw"}) as broker:
        connect_to(broker.url)                 # mqtts://127.0.0.1:PORT, user and password required

Two brokers, one API (``port``, ``url``, ``protocols``, ``start``, ``stop``, ``kill``,
``running``, ``log_tail``, ``cleanup``, a context manager): :class:`MosquittoBroker` (Debian
``mosquitto``, MQTT 3.1.1 and 5, TLS, passwords, persistence) and :class:`AmqttBroker` (the
pure-Python ``amqtt`` package as a subprocess, MQTT 3.1.1 only: it refuses an MQTT 5 CONNECT
with "Unsupported protocol version"; no TLS, passwords or persistence here).

:func:`started_broker` is the body of the ``broker`` fixture in ``tests/conftest.py``: mosquitto
when installed, else amqtt, else the test is skipped with the reason. ``EDGE_TEST_BROKER=amqtt``
forces the fallback (and makes :func:`find_mosquitto` answer ``None``, as on a machine without
mosquitto); ``EDGE_TEST_BROKER=mosquitto`` refuses the fallback. Tests that need MQTT 5 take
``@pytest.mark.mqtt5`` (or call :func:`require_mqtt5`): skipped, with the reason printed, on
amqtt.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, ClassVar, NoReturn, TypeVar

HOST = "127.0.0.1"
BROKER_ENV = "EDGE_TEST_BROKER"
#: The broker configuration the product ships; test brokers derive theirs from it.
SHIPPED_MOSQUITTO_CONF = Path(__file__).resolve().parent.parent / "devices" / "mosquitto" / "mosquitto.conf"
#: Options of the shipped file a test broker sets itself (or leaves out): where it listens,
#: saves and logs, who may connect, and the host's service files (pid file, user, conf.d).
TEST_OWNED_OPTIONS = frozenset(
    {
        "listener", "persistence_location", "log_dest", "log_type", "pid_file", "user", "include_dir",
        "allow_anonymous", "password_file", "acl_file", "cafile", "certfile", "keyfile", "require_certificate",
        "tls_version",
    }
)  # fmt: skip
BROKER_CHOICES = ("auto", "mosquitto", "amqtt")

_B = TypeVar("_B", bound="BrokerProcess")


def broker_choice() -> str:
    """``EDGE_TEST_BROKER``: ``auto`` (default: mosquitto when installed, else amqtt),
    ``mosquitto`` or ``amqtt``."""
    value = os.environ.get(BROKER_ENV, "").strip().lower() or "auto"
    if value not in BROKER_CHOICES:
        raise ValueError(f"{BROKER_ENV}={value!r} is not one of {', '.join(BROKER_CHOICES)}")
    return value


def find_mosquitto() -> str | None:
    """The mosquitto executable (``/usr/sbin/mosquitto`` or on PATH), or ``None`` (also when
    ``EDGE_TEST_BROKER=amqtt`` asks the tests to behave as if it were not installed)."""
    if broker_choice() == "amqtt":
        return None
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("mosquitto")


def find_mosquitto_passwd() -> str | None:
    for candidate in ("/usr/bin/mosquitto_passwd", "/usr/local/bin/mosquitto_passwd"):
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("mosquitto_passwd")


def read_mosquitto_conf(path: Path = SHIPPED_MOSQUITTO_CONF) -> list[tuple[str, str]]:
    """The options of a mosquitto config file, in order: ``(name, value)`` per line that is not
    blank or a comment."""
    options = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition(" ")
            options.append((name, value.strip()))
    return options


def mosquitto_test_config(
    port: int,
    workdir: Path,
    *,
    persistence: bool | None = None,
    log_path: Path | None = None,
    auth_lines: Sequence[str] = ("allow_anonymous true",),
    listener_lines: Sequence[str] = (),
    shipped: Path = SHIPPED_MOSQUITTO_CONF,
) -> list[str]:
    """The lines of a test broker's config: ``shipped``'s options, except those of
    :data:`TEST_OWNED_OPTIONS`, which become ``listener PORT 127.0.0.1`` (followed by
    ``listener_lines``: TLS), ``persistence_location WORKDIR/``, ``log_dest file LOG_PATH`` and
    ``auth_lines`` (who may connect). ``persistence`` None keeps the shipped setting."""
    options = read_mosquitto_conf(shipped)
    if sum(name == "listener" for name, _ in options) != 1:
        raise ValueError(f"{shipped}: a test broker derives from a config with exactly one listener")
    lines: list[str] = []
    for name, value in options:
        if name == "listener":  # in its place: options after it may belong to it
            lines += [f"listener {port} {HOST}", *listener_lines]
        elif name == "persistence" and persistence is not None:
            lines.append(f"persistence {'true' if persistence else 'false'}")
        elif name not in TEST_OWNED_OPTIONS:
            lines.append(f"{name} {value}".rstrip())
    lines.append(f"persistence_location {workdir}/")
    if log_path is not None:
        lines += [f"log_dest file {log_path}", "log_type error", "log_type warning", "log_type notice"]
        lines.append("log_type information")
    lines += auth_lines
    if os.geteuid() == 0:  # else it drops to user mosquitto, who cannot write here
        lines.append("user root")
    return lines


def amqtt_installed() -> bool:
    """Whether this interpreter can run ``amqtt`` (the ``dev`` extra installs it)."""
    return importlib.util.find_spec("amqtt") is not None


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


class BrokerProcess:
    """One broker process on ``127.0.0.1:port`` (a free port unless given), started and
    stopped by the methods below; subclasses write the config and name the command."""

    name: ClassVar[str] = "broker"
    protocols: ClassVar[tuple[str, ...]] = ("3.1.1", "5")  # as MqttConfig.protocol spells them
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM

    def __init__(self, port: int | None = None, *, workdir: Path | None = None) -> None:
        self.port = port if port is not None else free_port()
        self._own_dir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.name}-")) if workdir is None else Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"{self.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None

    # what a subclass provides
    def command(self) -> list[str]:
        raise NotImplementedError

    def _process_output(self) -> IO[bytes] | int:
        """Where the process's stdout and stderr go (mosquitto logs to its own file)."""
        return subprocess.DEVNULL

    @property
    def scheme(self) -> str:
        return "mqtt"

    # the shared API
    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def url(self) -> str:
        return f"{self.scheme}://{HOST}:{self.port}"

    def supports(self, protocol: str) -> bool:
        """Whether clients speaking ``protocol`` (``"5"`` or ``"3.1.1"``) can connect."""
        return protocol in self.protocols

    def start(self: _B, timeout: float = 10.0) -> _B:
        """Start (again, on the same port) and wait until the port accepts connections."""
        if self.running:
            return self
        deadline = time.monotonic() + timeout
        while True:  # the old listening socket may linger for a moment after a restart
            output = self._process_output()
            self._proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=output, stderr=output, cwd=self.workdir
            )
            while time.monotonic() < deadline and self._proc.poll() is None:
                if port_open(self.port):
                    return self
                time.sleep(0.02)
            if self._proc.poll() is None or time.monotonic() >= deadline:
                self.kill()
                raise RuntimeError(
                    f"{self.name} did not listen on {HOST}:{self.port} in {timeout} s: {self.log_tail()}"
                )
            time.sleep(0.1)  # it exited (address in use?): try again until the deadline

    def stop(self, timeout: float = 5.0) -> None:
        """Stop gracefully and wait (SIGKILL if it does not exit in ``timeout``)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            self._close_output()
            return
        proc.send_signal(self.stop_signal)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        self._close_output()

    def kill(self) -> None:
        """SIGKILL and reap."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)
        self._close_output()

    def _close_output(self) -> None:
        output, self._output = self._output, None
        if output is not None:
            output.close()

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def cleanup(self) -> None:
        self.kill()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self: _B) -> _B:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url})"


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of one TLS identity: the CA that signed it, its certificate and its key."""

    ca: Path
    cert: Path
    key: Path


class MosquittoBroker(BrokerProcess):
    """One mosquitto process on ``127.0.0.1:port``, configured as the shipped
    ``devices/mosquitto/mosquitto.conf`` (see :func:`mosquitto_test_config`) with anonymous
    clients allowed unless told otherwise.

    ``persistence``: None (default) as shipped (on: sessions and their queued messages survive
    ``stop``/``start``; across ``kill`` only what the last autosave held), True / False to
    force it. ``tls``: the server's CA, certificate and key make the listener TLS (``url`` is
    then ``mqtts://``); ``require_certificate=True`` also demands a client certificate signed
    by ``tls.ca``. ``passwords``: user -> password, written with ``mosquitto_passwd``;
    anonymous clients are then refused. ``acl_file``: a mosquitto ACL file (``acl_file`` line);
    ``extra_lines``: more config lines, appended as given."""

    name = "mosquitto"
    protocols = ("3.1.1", "5")
    stop_signal = signal.SIGTERM  # saves persistence, sends clients a disconnect

    def __init__(
        self,
        port: int | None = None,
        *,
        executable: str | None = None,
        workdir: Path | None = None,
        persistence: bool | None = None,
        tls: TlsFiles | None = None,
        require_certificate: bool = False,
        passwords: Mapping[str, str] | None = None,
        acl_file: Path | None = None,
        extra_lines: Sequence[str] = (),
    ) -> None:
        exe = executable or find_mosquitto()
        if exe is None:
            raise FileNotFoundError("mosquitto is not installed (looked at /usr/sbin/mosquitto and PATH)")
        if require_certificate and tls is None:
            raise ValueError("require_certificate needs tls= (the CA that signs the client certificates)")
        super().__init__(port, workdir=workdir)
        self.executable = exe
        self.tls = tls
        self.config_path = self.workdir / "mosquitto.conf"
        listener: list[str] = []
        if tls is not None:
            listener += [f"cafile {tls.ca}", f"certfile {tls.cert}", f"keyfile {tls.key}"]
            listener.append(f"require_certificate {'true' if require_certificate else 'false'}")
        if passwords:
            auth = ["allow_anonymous false", f"password_file {self._write_passwords(passwords)}"]
        else:
            auth = ["allow_anonymous true"]
        if acl_file is not None:
            auth.append(f"acl_file {acl_file}")
        lines = mosquitto_test_config(
            self.port,
            self.workdir,
            persistence=persistence,
            log_path=self.log_path,
            auth_lines=auth,
            listener_lines=listener,
        )
        self.config_path.write_text("\n".join([*lines, *extra_lines]) + "\n")

    @property
    def scheme(self) -> str:
        return "mqtts" if self.tls is not None else "mqtt"

    def command(self) -> list[str]:
        return [self.executable, "-c", str(self.config_path)]

    def _write_passwords(self, passwords: Mapping[str, str]) -> Path:
        tool = find_mosquitto_passwd()
        if tool is None:
            raise FileNotFoundError("mosquitto_passwd is not installed (it comes with mosquitto)")
        path = self.workdir / "passwd"
        for i, (user, password) in enumerate(passwords.items()):
            create = ["-c"] if i == 0 else []
            subprocess.run(
                [tool, "-b", *create, str(path), user, password], check=True, capture_output=True, timeout=30
            )
        return path


class AmqttBroker(BrokerProcess):
    """One ``amqtt`` broker (``python -m amqtt.scripts.broker_script``) on ``127.0.0.1:port``,
    anonymous, MQTT 3.1.1 only. It logs to ``amqtt.log`` in the work dir; ``stop`` sends SIGINT
    (amqtt's own clean shutdown)."""

    name = "amqtt"
    protocols = ("3.1.1",)
    stop_signal = signal.SIGINT

    def __init__(
        self,
        port: int | None = None,
        *,
        python: str | None = None,
        workdir: Path | None = None,
        persistence: bool = False,
    ) -> None:
        if persistence:
            raise ValueError("AmqttBroker keeps no sessions across stop/start: use MosquittoBroker(persistence=True)")
        if python is None and not amqtt_installed():
            raise FileNotFoundError("amqtt is not installed (pip install -e '.[dev]')")
        super().__init__(port, workdir=workdir)
        self.python = python or sys.executable
        self.config_path = self.workdir / "amqtt.yaml"
        config: dict[str, Any] = {
            "listeners": {"default": {"type": "tcp", "bind": f"{HOST}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        self.config_path.write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML

    def command(self) -> list[str]:
        return [self.python, "-m", "amqtt.scripts.broker_script", "-c", str(self.config_path)]

    def _process_output(self) -> IO[bytes] | int:
        self._close_output()
        self._output = self.log_path.open("ab")
        return self._output


def _skip(reason: str) -> NoReturn:
    import pytest

    print(reason)
    pytest.skip(reason)


def require_mqtt5(broker: BrokerProcess) -> None:
    """Skip the calling test (printing why) when ``broker`` does not speak MQTT 5."""
    if not broker.supports("5"):
        _skip(
            f"needs MQTT 5 (properties, session expiry, shared subscriptions); {broker.name} speaks "
            f"{', '.join(broker.protocols)} only (the fallback broker: install mosquitto to run this)"
        )


def choose_broker_class() -> type[BrokerProcess]:
    """The broker the ``broker`` fixture starts (see :func:`broker_choice`), or a skip."""
    choice = broker_choice()
    if choice in ("auto", "mosquitto") and find_mosquitto() is not None:
        return MosquittoBroker
    if choice in ("auto", "amqtt") and amqtt_installed():
        return AmqttBroker
    if choice == "mosquitto":
        _skip(f"{BROKER_ENV}=mosquitto but mosquitto is not installed (apt-get install mosquitto)")
    if choice == "amqtt":
        _skip(f"{BROKER_ENV}=amqtt but amqtt is not installed (pip install -e '.[dev]')")
    _skip("no MQTT broker: install mosquitto (apt-get install mosquitto) or amqtt (pip install -e '.[dev]')")


def started_broker(tmp_path: Path, *, mqtt5: bool = False) -> Iterator[BrokerProcess]:
    """Fixture body: a started broker (mosquitto, else amqtt) under ``tmp_path``, cleaned up
    after the test; ``mqtt5=True`` skips when the chosen broker does not speak MQTT 5."""
    cls = choose_broker_class()
    broker = cls(workdir=tmp_path / cls.name)
    try:
        if mqtt5:
            require_mqtt5(broker)
        broker.start()
        yield broker
    finally:
        with contextlib.suppress(Exception):
            broker.cleanup()


# -- throwaway certificates ----------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """A CA, a server identity for 127.0.0.1 / localhost and a client identity it signed, plus
    an unrelated CA (for "wrong CA" tests)."""

    server: TlsFiles
    client: TlsFiles
    other_ca: Path

    @property
    def ca(self) -> Path:
        return self.server.ca


def _openssl(*args: str | Path, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(map(str, args))} failed: {proc.stderr.strip()}")


_EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def _make_ca(folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    _openssl(
        "req", "-x509", *_EC_KEY, "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN=edge-runtime test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )  # fmt: skip
    return cert, key


def _make_leaf(folder: Path, name: str, ca: tuple[Path, Path], extensions: list[str]) -> TlsFiles:
    cert, key, csr, ext = (folder / f"{name}{suffix}" for suffix in (".pem", ".key", ".csr", ".ext"))
    _openssl("req", "-new", *_EC_KEY, "-keyout", key, "-out", csr, "-subj", f"/CN={name}", cwd=folder)
    ext.write_text(
        "\n".join(
            [
                "basicConstraints=critical,CA:FALSE",
                "keyUsage=critical,digitalSignature,keyEncipherment",
                "subjectKeyIdentifier=hash",
                "authorityKeyIdentifier=keyid,issuer",
                *extensions,
            ]
        )
        + "\n"
    )
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial", "-out", cert, "-days", "2",
        "-sha256", "-extfile", ext,
        cwd=folder,
    )  # fmt: skip
    return TlsFiles(ca=ca[0], cert=cert, key=key)


def make_test_pki(folder: Path) -> Pki:
    """Write a throwaway PKI (EC P-256, valid 2 days) with ``openssl`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    ca = _make_ca(folder, "ca")
    server = _make_leaf(
        folder, "server", ca, ["subjectAltName=IP:127.0.0.1,DNS:localhost", "extendedKeyUsage=serverAuth"]
    )
    client = _make_leaf(folder, "client", ca, ["extendedKeyUsage=clientAuth"])
    other_ca, _ = _make_ca(folder, "other-ca")
    return Pki(server=server, client=client, other_ca=other_ca)


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds passed; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
