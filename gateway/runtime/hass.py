"""Home Assistant MQTT discovery of the gateway's own health.

With ``[homeassistant] enabled = true`` the gateway publishes, retained, one
discovery config per entity under
``<discovery_prefix>/<component>/<node_id>/<object_id>/config`` and then a JSON
state document to ``<status_prefix>/<name>/health`` every ``interval``.  Every
entity's availability is the gateway's retained ``online``/``offline`` status
topic (its MQTT last will), so Home Assistant greys them out when it stops.
See https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gateway import __version__
from gateway.config import GatewayConfig
from gateway.ingest.mqtt import status_topic
from gateway.runtime.health import OutboxSummary


@dataclass(frozen=True)
class Entity:
    """One Home Assistant entity exposed by the gateway."""

    component: str
    object_id: str
    name: str
    extra: tuple[tuple[str, Any], ...] = ()


ENTITIES = (
    Entity(
        "binary_sensor",
        "online",
        "Online",
        (("device_class", "connectivity"), ("payload_on", "online"), ("payload_off", "offline")),
    ),
    Entity(
        "sensor",
        "readings_per_s",
        "Readings per second",
        (("unit_of_measurement", "readings/s"), ("state_class", "measurement")),
    ),
    Entity(
        "sensor",
        "outbox_depth",
        "Outbox depth",
        (("unit_of_measurement", "posts"), ("state_class", "measurement")),
    ),
    Entity("sensor", "last_post_at", "Last post", (("device_class", "timestamp"),)),
    Entity("sensor", "last_post_url", "Last post URL"),
    Entity(
        "sensor",
        "failed_deliveries",
        "Failed deliveries",
        (("state_class", "measurement"),),
    ),
)


MENTION_ENTITIES = tuple(
    Entity(
        "sensor",
        f"mentions_{outcome}",
        f"Mentions {outcome} (24 h)",
        (("unit_of_measurement", "mentions"), ("state_class", "measurement")),
    )
    for outcome in ("seen", "answered", "skipped")
)
"""With ``[conversations]`` on: mentions (and MQTT questions) of the last 24 hours."""


def entities(config: GatewayConfig) -> tuple[Entity, ...]:
    """The entities this gateway exposes."""
    return ENTITIES + (MENTION_ENTITIES if config.conversations.enabled else ())


def node_id(config: GatewayConfig) -> str:
    """The discovery node id: configured, else the gateway name made topic-safe."""
    configured = config.homeassistant.node_id
    return configured or "".join(c if c.isalnum() else "_" for c in config.gateway.name)


def health_topic(config: GatewayConfig) -> str:
    """Where the health state JSON is published."""
    return f"{config.mqtt.status_prefix}/{config.gateway.name}/health"


def discovery_messages(config: GatewayConfig) -> list[tuple[str, str]]:
    """``(topic, JSON payload)`` of every entity's retained discovery config."""
    node = node_id(config)
    prefix = config.homeassistant.discovery_prefix
    device = {
        "identifiers": [f"things_gateway_{node}"],
        "name": f"things-gateway {config.gateway.name}",
        "manufacturer": "things-gateway",
        "model": "things-gateway",
        "sw_version": __version__,
    }
    out = []
    for entity in entities(config):
        payload: dict[str, Any] = {
            "name": entity.name,
            "unique_id": f"{node}_{entity.object_id}",
            "object_id": f"{node}_{entity.object_id}",
            "availability_topic": status_topic(config),
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": device,
            "origin": {"name": "things-gateway", "sw_version": __version__},
        }
        if entity.object_id == "online":
            payload["state_topic"] = status_topic(config)
        else:
            payload["state_topic"] = health_topic(config)
            payload["value_template"] = f"{{{{ value_json.{entity.object_id} }}}}"
        payload.update(entity.extra)
        topic = f"{prefix}/{entity.component}/{node}/{entity.object_id}/config"
        out.append((topic, json.dumps(payload, separators=(",", ":"))))
    return out


def state_payload(
    rate: float, summary: OutboxSummary, mentions: dict[str, int] | None = None
) -> str:
    """The health state document every entity's ``value_template`` reads;
    ``mentions``: seen/answered/skipped in the last 24 hours (conversations on)."""
    document: dict[str, Any] = {
        "readings_per_s": round(rate, 2),
        "outbox_depth": summary.depth,
        "last_post_at": summary.last_post_at,
        "last_post_url": summary.last_post_url or "",
        "failed_deliveries": summary.failed + summary.dead,
    }
    for outcome, count in (mentions or {}).items():
        document[f"mentions_{outcome}"] = count
    return json.dumps(document, separators=(",", ":"))
