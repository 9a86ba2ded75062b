"""The one place a paho MQTT client is built (the publisher, the subscriber, the operator CLI).

:func:`make_client` returns a paho client (VERSION2 callbacks) speaking the config's protocol
(MQTT 5 or 3.1.1), logged in with the URL's user and password, with TLS set up from the
``tls_*`` files (an unreadable or invalid one is a :class:`ConfigError` naming it), the
config's reconnect delays and TCP_NODELAY. :meth:`MqttClient.connect_broker` connects with the
session settings given to the factory; :attr:`MqttClient.last_connect_exception` keeps why the
last attempt failed (paho's ``on_connect_fail`` is not told).

Example::

    client = make_client(config, "edge-sub-1", clean_start=False, session_expiry_s=3600)
    client.on_message = handle
    client.connect_broker()      # OSError / ValueError as paho raises them
    client.loop_start()
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
from collections.abc import Callable
from typing import Any, cast

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_runtime.delivery.mqtt.settings import MqttConfig
from edge_runtime.errors import ConfigError


class MqttClient(paho.Client):
    """paho's client with its connection settings; keeps the exception of the last failed
    connection attempt (paho retries silently and tells ``on_connect_fail`` only that it failed)."""

    last_connect_exception: BaseException | None = None

    def __init__(self, config: MqttConfig, client_id: str, *, clean_start: bool, session_expiry_s: int | None) -> None:
        if config.protocol == "5":
            super().__init__(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
        else:
            super().__init__(
                CallbackAPIVersion.VERSION2,
                client_id=client_id,
                protocol=MQTTProtocolVersion.MQTTv311,
                clean_session=clean_start,
            )
        self.config = config
        self.clean_start = clean_start
        self.session_expiry_s = session_expiry_s

    def reconnect(self) -> MQTTErrorCode:
        try:
            return super().reconnect()
        except OSError as exc:
            self.last_connect_exception = exc
            raise

    def connect_broker(self, *, background: bool = False) -> None:
        """Connect to the config's broker (``background``: ``connect_async``, for
        ``loop_start``). MQTT 5: clean start and the session expiry given to
        :func:`make_client`; MQTT 3.1.1 took clean session from it already."""
        cfg = self.config
        connect = self.connect_async if background else self.connect
        if cfg.protocol != "5":
            connect(cfg.host, cfg.port, cfg.keepalive)
            return
        props = None
        if self.session_expiry_s is not None:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.session_expiry_s
        connect(cfg.host, cfg.port, cfg.keepalive, clean_start=self.clean_start, properties=props)


def make_client(
    config: MqttConfig, client_id: str, *, clean_start: bool = True, session_expiry_s: int | None = None
) -> MqttClient:
    """A client for ``config`` (protocol, login, TLS, reconnect delays, TCP_NODELAY).

    ``clean_start``: False asks the broker to resume the client id's session (MQTT 3.1.1: clean
    session off); ``session_expiry_s`` (MQTT 5): how long the broker keeps the session after a
    disconnect (None: not sent, the session ends with the connection). :class:`ConfigError`
    naming the file when a ``tls_*`` file cannot be read or loaded."""
    client = MqttClient(config, client_id, clean_start=clean_start, session_expiry_s=session_expiry_s)
    if config.username is not None:
        client.username_pw_set(config.username, config.password)
    if config.uses_tls:
        client.tls_set_context(tls_context(config))
        client.tls_insecure_set(False)
    client.reconnect_delay_set(cast(int, config.reconnect_min_s), cast(int, config.reconnect_max_s))
    client.on_socket_open = _no_delay
    return client


def tls_context(config: MqttConfig) -> ssl.SSLContext:
    """The context paho's ``tls_set`` builds (TLS client; the broker's certificate and host
    name verified against ``tls_ca``, else the system's CAs; ``tls_cert`` + ``tls_key`` as the
    client certificate), loading each file here so that a problem names it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cert, key, ca = config.tls_cert, config.tls_key, config.tls_ca
    if cert is not None:
        _load(context.load_cert_chain, {"tls_cert": cert, "tls_key": key})
    context.verify_mode = ssl.CERT_REQUIRED
    if ca is not None:
        _load(context.load_verify_locations, {"tls_ca": ca})
    else:
        context.load_default_certs()
    return context


def _load(load: Callable[..., Any], files: dict[str, str | None]) -> None:
    """``load(*files)``; :class:`ConfigError` naming the file (or files) when that fails."""
    for name, path in files.items():
        try:
            with open(str(path), "rb"):
                pass
        except OSError as exc:
            raise ConfigError(f"MQTT TLS setup: {name} {path!r}: {exc.strerror or exc}") from exc
    try:
        load(*files.values())
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        text = (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or repr(exc)
        reason = re.sub(r" \(_ssl\.c:\d+\)$", "", text)
        shown = " / ".join(f"{name} {path!r}" for name, path in files.items())
        raise ConfigError(f"MQTT TLS setup: {shown}: cannot load it: {reason}") from exc


def _no_delay(client: paho.Client, userdata: Any, sock: Any) -> None:
    """TCP_NODELAY on the broker connection (paho leaves Nagle's algorithm on): a result is a
    small packet that should leave now, not wait for the ACK of the previous one."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


__all__ = ["MqttClient", "make_client", "tls_context"]
