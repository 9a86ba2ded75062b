"""MQTT: connection settings from a URL, the publisher of the spool.

Public names are imported from their module on first use (:mod:`edge_runtime.lazy_exports`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_runtime.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from edge_runtime.delivery.mqtt.publisher import (
        MqttConfig as MqttConfig,
    )
    from edge_runtime.delivery.mqtt.publisher import (
        MqttPublisher as MqttPublisher,
    )
    from edge_runtime.delivery.mqtt.publisher import (
        describe_connect_error as describe_connect_error,
    )
    from edge_runtime.delivery.mqtt.publisher import (
        describe_refusal as describe_refusal,
    )
    from edge_runtime.delivery.mqtt.publisher import (
        parse_status as parse_status,
    )
    from edge_runtime.delivery.mqtt.publisher import (
        redact_url as redact_url,
    )
    from edge_runtime.delivery.mqtt.publisher import (
        status_payload as status_payload,
    )

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "publisher": (
            "MqttConfig",
            "MqttPublisher",
            "describe_connect_error",
            "describe_refusal",
            "parse_status",
            "redact_url",
            "status_payload",
        ),
    },
)
