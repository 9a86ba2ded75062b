"""MQTT: connection settings from a URL, the publisher of the spool.

Public names are imported from their module on first use (:mod:`edge_runtime.lazy_exports`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_runtime.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from edge_runtime.delivery.mqtt.client import (
        MqttClient as MqttClient,
    )
    from edge_runtime.delivery.mqtt.client import (
        make_client as make_client,
    )
    from edge_runtime.delivery.mqtt.client import (
        tls_context as tls_context,
    )
    from edge_runtime.delivery.mqtt.publisher import (
        MqttPublisher as MqttPublisher,
    )
    from edge_runtime.delivery.mqtt.settings import (
        PROTOCOLS as PROTOCOLS,
    )
    from edge_runtime.delivery.mqtt.settings import (
        SCHEMES as SCHEMES,
    )
    from edge_runtime.delivery.mqtt.settings import (
        DeviceTopics as DeviceTopics,
    )
    from edge_runtime.delivery.mqtt.settings import (
        MqttConfig as MqttConfig,
    )
    from edge_runtime.delivery.mqtt.settings import (
        describe_connect_error as describe_connect_error,
    )
    from edge_runtime.delivery.mqtt.settings import (
        describe_refusal as describe_refusal,
    )
    from edge_runtime.delivery.mqtt.status import (
        OFFLINE as OFFLINE,
    )
    from edge_runtime.delivery.mqtt.status import (
        ONLINE as ONLINE,
    )
    from edge_runtime.delivery.mqtt.status import (
        STATUS_CONTENT_TYPE as STATUS_CONTENT_TYPE,
    )
    from edge_runtime.delivery.mqtt.status import (
        parse_status as parse_status,
    )
    from edge_runtime.delivery.mqtt.status import (
        status_payload as status_payload,
    )

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "client": ("MqttClient", "make_client", "tls_context"),
        "publisher": ("MqttPublisher",),
        "settings": (
            "PROTOCOLS",
            "SCHEMES",
            "DeviceTopics",
            "MqttConfig",
            "describe_connect_error",
            "describe_refusal",
        ),
        "status": ("OFFLINE", "ONLINE", "STATUS_CONTENT_TYPE", "parse_status", "status_payload"),
    },
)
