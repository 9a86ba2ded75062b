"""MQTT settings: the broker URL, the topics of a device, connection errors in words.

Example::

    config = MqttConfig.from_url("mqtts://cam1:secret@broker.local?tls_ca=/etc/edge/ca.pem")
    topics = DeviceTopics(config.topic_prefix, "cam1")     # topics.results == "edge/cam1/results"
    logger.info("broker %s", redact_url(url))              # mqtts://cam1:***@broker.local?...

``describe_refusal`` (a CONNACK reason code) and ``describe_connect_error`` (the exception of a
failed connection attempt) say why a connection failed, with a hint for the usual mistakes.
"""

from __future__ import annotations

import socket
import ssl
import urllib.parse
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from edge_runtime.errors import ConfigError, close_matches
from edge_runtime.names import check_device_id, redact_url

if TYPE_CHECKING:
    from paho.mqtt.reasoncodes import ReasonCode

PROTOCOLS = ("5", "3.1.1")
SCHEMES = {"mqtt": 1883, "mqtts": 8883}
_QUERY_KEYS = (
    "client_id", "protocol", "qos", "keepalive", "session_expiry_s", "tls_ca", "tls_cert", "tls_key",
)  # fmt: skip
#: Parameters a broker URL refuses with a pointer to the setting that says it (the URL's would
#: be overridden by it, or not read at all: never silently ignored).
_SETTING_NOT_PARAMETER = {
    "topic_prefix": "use --topic-prefix or the topic_prefix setting (edge-runtime run, edge-runtime command); "
    "edge-runtime subscribe takes --topic",
}


@dataclass(frozen=True)
class MqttConfig:
    """Where and how to connect. ``protocol``: ``"5"`` (default) or ``"3.1.1"``; TLS is on when
    ``tls`` is true or any ``tls_*`` file is given (``mqtts://`` URLs)."""

    host: str
    port: int = 1883
    client_id: str | None = None
    username: str | None = None
    password: str | None = None
    tls: bool = False
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    protocol: str = "5"
    keepalive: int = 30
    topic_prefix: str = "edge"
    qos: int = 1
    session_expiry_s: int = 3600
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise ConfigError(f"MQTT host must be a non-empty string, got {self.host!r}")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise ConfigError(f"MQTT port must be 1..65535, got {self.port!r}")
        if self.protocol not in PROTOCOLS:
            raise ConfigError(
                f"MQTT protocol {self.protocol!r} is not one of {', '.join(PROTOCOLS)}"
                f"{close_matches(str(self.protocol), PROTOCOLS)}"
            )
        if self.qos not in (0, 1, 2) or isinstance(self.qos, bool):
            raise ConfigError(f"MQTT qos must be 0, 1 or 2, got {self.qos!r}")
        if isinstance(self.keepalive, bool) or not isinstance(self.keepalive, int) or self.keepalive < 1:
            raise ConfigError(f"MQTT keepalive must be a positive integer (seconds), got {self.keepalive!r}")
        if not isinstance(self.session_expiry_s, int) or not 0 <= self.session_expiry_s <= 0xFFFFFFFF:
            raise ConfigError(f"MQTT session_expiry_s must be 0..4294967295, got {self.session_expiry_s!r}")
        if not self.topic_prefix or any(c in self.topic_prefix for c in "+#\0"):
            raise ConfigError(f"MQTT topic prefix {self.topic_prefix!r}: must be non-empty, without + # or NUL")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise ConfigError(
                f"MQTT reconnect delays: need 0 < min <= max, got {self.reconnect_min_s!r}, {self.reconnect_max_s!r}"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("MQTT client certificate: give both tls_cert and tls_key, or neither")

    @property
    def uses_tls(self) -> bool:
        return self.tls or self.tls_ca is not None or self.tls_cert is not None

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> MqttConfig:
        """``mqtt://[user[:pass]@]host[:port][?client_id=..&protocol=..&qos=..]``
        or ``mqtts://`` (TLS, port 8883 by default; ``?tls_ca=PATH`` trusts that CA instead of the
        system's, ``&tls_cert=PATH&tls_key=PATH`` is a client certificate); ``overrides`` set any
        other field. Errors never show the password."""
        if not isinstance(url, str):
            raise ConfigError(f"broker URL must be a string, got {type(url).__name__}")
        shown = redact_url(url)
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port
        except ValueError as exc:
            # urlsplit's error can quote the whole netloc, password included: neither the
            # message nor the traceback (from None) may show it
            reason = str(exc) if shown != "<unparseable URL>" and "@" not in str(exc) else "not a valid URL"
            raise ConfigError(f"broker URL {shown!r}: {reason}") from None
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            hint = close_matches(scheme, SCHEMES)
            raise ConfigError(f"broker URL {shown!r}: scheme must be mqtt:// or mqtts://{hint}")
        if not parts.hostname:
            raise ConfigError(f"broker URL {shown!r}: no host")
        if parts.path not in ("", "/") or parts.fragment:
            raise ConfigError(f"broker URL {shown!r}: unexpected path or fragment")
        values: dict[str, Any] = {
            "host": parts.hostname,
            "port": port if port is not None else SCHEMES[scheme],
            "username": urllib.parse.unquote(parts.username) if parts.username is not None else None,
            "password": urllib.parse.unquote(parts.password) if parts.password is not None else None,
            "tls": scheme == "mqtts",
        }
        for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
            if key in _SETTING_NOT_PARAMETER:
                raise ConfigError(
                    f"broker URL {shown!r}: {key} is not a broker URL parameter: {_SETTING_NOT_PARAMETER[key]}"
                    f" (known parameters: {', '.join(_QUERY_KEYS)})"
                )
            if key not in _QUERY_KEYS:
                raise ConfigError(
                    f"broker URL {shown!r}: unknown parameter {key!r}{close_matches(key, _QUERY_KEYS)}"
                    f" (known: {', '.join(_QUERY_KEYS)})"
                )
            if key in ("qos", "keepalive", "session_expiry_s"):
                try:
                    values[key] = int(value)
                except ValueError as exc:
                    raise ConfigError(f"broker URL {shown!r}: {key} must be an integer, got {value!r}") from exc
            else:
                values[key] = value
        known = {f.name for f in fields(cls)}
        for key in overrides:
            if key not in known:
                raise ConfigError(f"MQTT option {key!r} is unknown{close_matches(key, known)}")
        values.update(overrides)
        try:
            return cls(**values)
        except ConfigError as exc:
            raise ConfigError(f"broker URL {shown!r}: {exc}") from exc


@dataclass(frozen=True)
class DeviceTopics:
    """The topics of one device (``docs/protocol.md``): ``<prefix>/<device>/results`` (result
    payloads), ``status`` (retained JSON), ``cmd`` (signed commands to it), ``reply`` (its
    answers). The device id must pass :func:`edge_runtime.names.check_device_id`."""

    prefix: str
    device: str

    def __post_init__(self) -> None:
        check_device_id(self.device, "MQTT topics", "device id")

    def _topic(self, kind: str) -> str:
        return f"{self.prefix}/{self.device}/{kind}"

    @property
    def results(self) -> str:
        return self._topic("results")

    @property
    def status(self) -> str:
        return self._topic("status")

    @property
    def cmd(self) -> str:
        return self._topic("cmd")

    @property
    def reply(self) -> str:
        return self._topic("reply")


def describe_refusal(reason_code: ReasonCode | int | str) -> str:
    """A CONNACK refusal in words, with a hint for the usual user mistakes."""
    text = str(reason_code)
    lowered = text.lower()
    if "user name or password" in lowered or "not authori" in lowered:
        return f"{text} (check the user and password in the broker URL)"
    if "client identifier" in lowered:
        return f"{text} (check the client id)"
    return text


#: The hint when a TLS connection is cut before the handshake ends: the port likely speaks plain MQTT.
NO_TLS_LISTENER_HINT = " (a port without TLS? mqtts:// needs a TLS listener)"


def describe_connect_error(exc: BaseException, tls: bool = False) -> str:
    """Why a connection attempt failed, in words (TLS verification, refused, name lookup…);
    ``tls``: the attempt was TLS (``mqtts://``), so a connection cut during the handshake gets
    :data:`NO_TLS_LISTENER_HINT` (the daemon and the subscriber say the same)."""
    if tls and isinstance(exc, (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return f"{type(exc).__name__}: {exc}{NO_TLS_LISTENER_HINT}"
    if tls and isinstance(exc, ssl.SSLError) and "WRONG_VERSION_NUMBER" in str(exc.reason or exc):
        return f"TLS handshake failed: {exc.reason or exc}{NO_TLS_LISTENER_HINT}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {exc.verify_message or exc} (check tls_ca and the host name)"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc} (is this a TLS port? check the client certificate)"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the broker running and listening on that port?)"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name: {exc.strerror or exc}"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "connection timed out"
    return f"{type(exc).__name__}: {exc}"


__all__ = [
    "NO_TLS_LISTENER_HINT",
    "PROTOCOLS",
    "SCHEMES",
    "DeviceTopics",
    "MqttConfig",
    "describe_connect_error",
    "describe_refusal",
]
