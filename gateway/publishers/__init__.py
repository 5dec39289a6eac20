"""Publisher registry: how each ``[[publishers]]`` entry becomes a publisher.

To add a backend, write ``gateway/publishers/<type>.py`` with a publisher class
satisfying :class:`gateway.publishers.base.Publisher` and a ``build(config, ctx)``
function, add its config class to :mod:`gateway.config.publishers`, and add its
module name to :data:`MODULES` below.  A backend's module is imported when a
publisher of its type is built, so a gateway loads only the backends it configures;
backend modules import nothing heavy at module level either: their dependencies
(httpx, oauthlib, apprise, ...) load inside ``build()``.  Backends never import each
other; what they share is in :mod:`~gateway.publishers.base`,
:mod:`~gateway.publishers.http`, :mod:`~gateway.publishers.payload` and
:mod:`~gateway.publishers.threads`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from gateway.config.publishers import PUBLISHER_TYPES, AnyPublisherConfig, PublisherConfigs
from gateway.publishers.base import Capabilities, Publisher, PublisherContext

Builder = Callable[[Any, PublisherContext], Publisher]

MODULES: dict[str, str] = {
    "console": "gateway.publishers.console",
    "file": "gateway.publishers.file",
    "webhook": "gateway.publishers.webhook",
    "mqtt": "gateway.publishers.mqtt",
    "mastodon": "gateway.publishers.mastodon",
    "bluesky": "gateway.publishers.bluesky",
    "x": "gateway.publishers.x",
    "apprise": "gateway.publishers.apprise",
}
"""Each ``type``'s module, which has its ``build(config, ctx)``."""


class _Builders(Mapping[str, Builder]):
    """``type`` → ``build``, importing a backend's module on first lookup."""

    def __getitem__(self, kind: str) -> Builder:
        module = importlib.import_module(MODULES[kind])
        builder: Builder = module.build
        return builder

    def __iter__(self) -> Iterator[str]:
        return iter(MODULES)

    def __len__(self) -> int:
        return len(MODULES)


BUILDERS: Mapping[str, Builder] = _Builders()
"""Each ``type``'s ``build(config, ctx)``; its module is imported when first looked up."""


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
