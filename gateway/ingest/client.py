"""Building the paho-mqtt client from ``[mqtt]``: protocol, session, credentials, TLS.

Kept apart from the message handling so the connection policy reads in one place:

- MQTT 5 or 3.1.1; a broker that answers an MQTT 5 connect with "unsupported
  protocol version" (aedes, amqtt, older installations) gets 3.1.1 from then on;
- MQTT 5's CONNECT advertises a Maximum Packet Size (:func:`packet_limit`), and
  larger packets are discarded while read whatever the protocol, so no broker can
  make the gateway buffer more than that; ``persistent_session`` means a fixed client id, no clean
  session (3.1.1) / ``clean_start=False`` with a session expiry (5), so the broker
  queues QoS 1 readings while the gateway is away;
- a retained ``offline`` last will on the status topic;
- reconnects with exponential backoff from ``reconnect_min`` to ``reconnect_max``;
- TLS with a CA file, an optional client certificate, and hostname checks unless
  ``insecure`` is set explicitly.

Secrets (password, key passphrase) are handed to paho and never logged.
"""

from __future__ import annotations

import ssl
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.config import GatewayConfig, MqttSection, TlsSection
from gateway.ingest.fastclient import IngestClient

TOPIC_ALLOWANCE = 4096
"""Bytes allowed for a PUBLISH's topic, packet id and properties above ``max_payload_bytes``."""


class ClientSetupError(ValueError):
    """The MQTT client cannot be configured (e.g. an unreadable TLS file)."""


def client_id(config: GatewayConfig) -> str:
    """``[mqtt].client_id``, else ``<gateway name>-gw``."""
    return config.mqtt.client_id or f"{config.gateway.name}-gw"


def status_topic(config: GatewayConfig) -> str:
    """The retained ``online``/``offline`` topic of this gateway."""
    return f"{config.mqtt.status_prefix}/{config.gateway.name}/status"


def packet_limit(cfg: MqttSection) -> int:
    """The largest inbound packet taken: ``max_payload_bytes`` plus :data:`TOPIC_ALLOWANCE`."""
    return cfg.max_payload_bytes + TOPIC_ALLOWANCE


def make_client(config: GatewayConfig) -> IngestClient:
    """A paho client (with the fast inbound path of :mod:`gateway.ingest.fastclient`) with
    protocol, session, credentials, will, backoff and TLS set."""
    cfg = config.mqtt
    v5 = cfg.protocol == 5
    client = IngestClient(
        CallbackAPIVersion.VERSION2,
        client_id=client_id(config),
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else not cfg.persistent_session,
    )
    if cfg.username:
        password = cfg.password.get_secret_value() if cfg.password else None
        client.username_pw_set(cfg.username, password)
    client.will_set(status_topic(config), "offline", qos=1, retain=True)
    client.reconnect_delay_set(
        min_delay=cfg.reconnect_min.total_seconds(),  # type: ignore[arg-type]
        max_delay=cfg.reconnect_max.total_seconds(),  # type: ignore[arg-type]
    )
    client.max_queued_messages_set(1000)
    client.max_packet_size = packet_limit(cfg)
    client.fallback_clean_session = not cfg.persistent_session
    if cfg.tls is not None:
        apply_tls(client, cfg.tls)
    return client


def apply_tls(client: mqtt.Client, tls: TlsSection) -> None:
    """Require a verified server certificate; present a client certificate if configured."""
    try:
        client.tls_set(
            ca_certs=str(tls.ca_file) if tls.ca_file else None,
            certfile=str(tls.cert_file) if tls.cert_file else None,
            keyfile=str(tls.key_file) if tls.key_file else None,
            keyfile_password=tls.key_password.get_secret_value() if tls.key_password else None,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    except (OSError, ssl.SSLError, ValueError) as exc:
        # str(exc) names files and OpenSSL reasons, never the passphrase itself.
        raise ClientSetupError(f"mqtt.tls: cannot load certificates: {exc}") from None
    if tls.insecure:
        client.tls_insecure_set(True)


def connect_kwargs(cfg: MqttSection) -> dict[str, Any]:
    """Extra ``connect_async`` arguments: MQTT 5's clean start, session expiry and
    Maximum Packet Size."""
    if cfg.protocol != 5:
        return {}
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.MaximumPacketSize = packet_limit(cfg)
    if cfg.persistent_session:
        props.SessionExpiryInterval = int(cfg.session_expiry.total_seconds())
    return {"clean_start": not cfg.persistent_session, "properties": props}
