"""Publisher registry: every backend's config class, and how to build one.

To add a backend, write ``gateway/publishers/<name>.py`` with a config class
(``type: Literal["<name>"]``, a ``build(ctx)`` method) and a publisher class
satisfying :class:`gateway.publishers.base.Publisher`, then add the config class
to :data:`AnyPublisherConfig` below; :data:`PUBLISHER_TYPES` follows by itself.
Config modules must import nothing heavy at module level: a backend's dependencies
(httpx, oauthlib, ...) load only when it is configured, inside ``build()``.
"""

from __future__ import annotations

from typing import Annotated, get_args

from pydantic import Field

from gateway.publishers.apprise import AppriseConfig
from gateway.publishers.base import Capabilities, Publisher, PublisherContext
from gateway.publishers.bluesky import BlueskyConfig
from gateway.publishers.console import ConsoleConfig
from gateway.publishers.file import FileConfig
from gateway.publishers.mastodon import MastodonConfig
from gateway.publishers.mqtt import MqttConfig
from gateway.publishers.webhook import WebhookConfig
from gateway.publishers.x import XConfig

AnyPublisherConfig = (
    ConsoleConfig
    | FileConfig
    | WebhookConfig
    | MqttConfig
    | MastodonConfig
    | BlueskyConfig
    | XConfig
    | AppriseConfig
)
"""Every backend's config class."""

PublisherConfigs = Annotated[AnyPublisherConfig, Field(discriminator="type")]
"""The ``[[publishers]]`` entries: a union keyed by ``type``."""

PUBLISHER_TYPES: tuple[str, ...] = tuple(
    get_args(cls.model_fields["type"].annotation)[0] for cls in get_args(AnyPublisherConfig)
)
"""Every ``type`` value, used to drop the union tag from error paths."""


def build_publisher(config: AnyPublisherConfig, ctx: PublisherContext) -> Publisher:
    """Create the publisher a config entry describes."""
    return config.build(ctx)


__all__ = [
    "PUBLISHER_TYPES",
    "AnyPublisherConfig",
    "Capabilities",
    "Publisher",
    "PublisherConfigs",
    "PublisherContext",
    "build_publisher",
]
