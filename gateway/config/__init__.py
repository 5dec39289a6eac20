"""The gateway's configuration: one TOML file, validated into frozen pydantic models.

A leaf of the package: it imports nothing else of the gateway, so anything may
import it.  Where each part lives:

- :mod:`.root`: :class:`GatewayConfig` (the whole file), :func:`load_config`,
  :class:`ConfigError` and its ``path: message`` lines;
- :mod:`.sections`: ``[gateway]``, ``[mqtt]``, ``[state]``, ``[media]``, ``[health]``,
  ``[homeassistant]``;
- :mod:`.sensors`, :mod:`.cameras`, :mod:`.rules`, :mod:`.publishers`: the
  ``[[sensors]]``, ``[[cameras]]``, ``[[rules]]`` and ``[[publishers]]`` entries;
- :mod:`.durations`: ``"90s"``, ``"1h30m"``; :mod:`.secrets`: ``${NAME}`` and masking;
- :mod:`.onepass`: every problem of a file in one run, the broken parts set aside.

Every public name is re-exported here.
"""

from __future__ import annotations

from gateway.config.cameras import (
    CAMERA_SOURCES,
    AnyCameraConfig,
    CameraConfig,
    CameraConfigs,
    CommandCameraConfig,
    FileCameraConfig,
    HttpCameraConfig,
    MqttCameraConfig,
    OnMissing,
    PicameraConfig,
    StreamCameraConfig,
)
from gateway.config.durations import Duration, format_duration, parse_duration
from gateway.config.publishers import (
    PUBLISHER_TYPES,
    AnyPublisherConfig,
    AppriseConfig,
    BlueskyConfig,
    BrokerSettings,
    ConsoleConfig,
    FileConfig,
    HttpConfig,
    MastodonConfig,
    MqttConfig,
    PublisherConfig,
    PublisherConfigs,
    WebhookConfig,
    XConfig,
)
from gateway.config.root import (
    CONFIG_ENV,
    DEFAULT_CONFIG_PATH,
    ENV_PREFIX,
    ConfigError,
    EngineChecks,
    GatewayConfig,
    config_path,
    format_validation_error,
    load_config,
    read_toml,
    validate_config,
)
from gateway.config.rules import (
    ChartSpec,
    ClipSpec,
    ImageSpec,
    OnMessage,
    RuleChecks,
    RuleConfig,
    TimelapseSpec,
)
from gateway.config.secrets import CREDENTIAL_FOLDER_ID, lookup_secret
from gateway.config.sections import (
    GatewaySection,
    HealthSection,
    HomeAssistantSection,
    Identifier,
    MediaSection,
    MqttSection,
    Section,
    Size,
    StateSection,
    TlsSection,
    WebSection,
    parse_size,
)
from gateway.config.sensors import SensorConfig, SensorFormat, id_pattern, topic_captures

__all__ = [
    "CAMERA_SOURCES",
    "CONFIG_ENV",
    "CREDENTIAL_FOLDER_ID",
    "DEFAULT_CONFIG_PATH",
    "ENV_PREFIX",
    "PUBLISHER_TYPES",
    "AnyCameraConfig",
    "AnyPublisherConfig",
    "AppriseConfig",
    "BlueskyConfig",
    "BrokerSettings",
    "CameraConfig",
    "CameraConfigs",
    "ChartSpec",
    "ClipSpec",
    "CommandCameraConfig",
    "ConfigError",
    "ConsoleConfig",
    "Duration",
    "EngineChecks",
    "FileCameraConfig",
    "FileConfig",
    "GatewayConfig",
    "GatewaySection",
    "HealthSection",
    "HomeAssistantSection",
    "HttpCameraConfig",
    "HttpConfig",
    "Identifier",
    "ImageSpec",
    "MastodonConfig",
    "MediaSection",
    "MqttCameraConfig",
    "MqttConfig",
    "MqttSection",
    "OnMessage",
    "OnMissing",
    "PicameraConfig",
    "PublisherConfig",
    "PublisherConfigs",
    "RuleChecks",
    "RuleConfig",
    "Section",
    "SensorConfig",
    "SensorFormat",
    "Size",
    "StateSection",
    "StreamCameraConfig",
    "TimelapseSpec",
    "TlsSection",
    "WebSection",
    "WebhookConfig",
    "XConfig",
    "config_path",
    "format_duration",
    "format_validation_error",
    "id_pattern",
    "load_config",
    "lookup_secret",
    "parse_duration",
    "parse_size",
    "read_toml",
    "topic_captures",
    "validate_config",
]
