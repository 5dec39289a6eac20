"""Publisher registry: how each ``[[publishers]]`` entry becomes a publisher.

To add a backend, write ``gateway/publishers/<type>.py`` with a publisher class
satisfying :class:`gateway.publishers.base.Publisher` and a ``build(config, ctx)``
function, add its config class to :mod:`gateway.config.publishers`, and add its
``build`` to :data:`BUILDERS` below.  Backends never import each other; what they
share is in :mod:`~gateway.publishers.base`, :mod:`~gateway.publishers.http`,
:mod:`~gateway.publishers.payload` and :mod:`~gateway.publishers.threads`.
Backend modules import nothing heavy at module level: their dependencies (httpx,
oauthlib, apprise, ...) load inside ``build()``, only when the backend is configured.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.config.publishers import PUBLISHER_TYPES, AnyPublisherConfig, PublisherConfigs
from gateway.publishers import apprise, bluesky, console, file, mastodon, mqtt, webhook, x
from gateway.publishers.base import Capabilities, Publisher, PublisherContext

BUILDERS: dict[str, Callable[[Any, PublisherContext], Publisher]] = {
    "console": console.build,
    "file": file.build,
    "webhook": webhook.build,
    "mqtt": mqtt.build,
    "mastodon": mastodon.build,
    "bluesky": bluesky.build,
    "x": x.build,
    "apprise": apprise.build,
}
"""Each ``type``'s ``build(config, ctx)``."""


def build_publisher(config: AnyPublisherConfig, ctx: PublisherContext) -> Publisher:
    """Create the publisher a config entry describes (no network is touched)."""
    return BUILDERS[config.type](config, ctx)


__all__ = [
    "BUILDERS",
    "PUBLISHER_TYPES",
    "AnyPublisherConfig",
    "Capabilities",
    "Publisher",
    "PublisherConfigs",
    "PublisherContext",
    "build_publisher",
]
