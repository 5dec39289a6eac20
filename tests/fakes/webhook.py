"""A fake webhook receiver: accepts any POST under ``/hooks/`` and answers with an id.

Like a careful real receiver, it deduplicates by the ``Idempotency-Key`` header: a
repeated key answers with the event the first request created.  ``created`` holds
the events in order, so tests count what was created, not what was sent.
"""

from __future__ import annotations

import re
from typing import Any

from tests.fakes.server import FakeServer, Recorded, Reply, Route


class FakeWebhook(FakeServer):
    """Records what was POSTed; answers ``{"id": "evt-<n>", "url": ...}``."""

    service = "webhook"

    def __init__(self) -> None:
        self.created: list[tuple[Recorded, dict[str, Any]]] = []
        self._by_key: dict[str, dict[str, Any]] = {}
        super().__init__()

    def routes(self) -> list[tuple[str, str, Route]]:
        """The endpoints this fake serves."""
        return [("POST", r"/hooks/.*", self._receive)]

    def _receive(self, request: Recorded, match: re.Match[str]) -> Reply:
        key = request.header("idempotency-key")
        if key and key in self._by_key:
            return Reply(200, self._by_key[key])
        n = len(self.created) + 1
        event = {"id": f"evt-{n}", "url": f"{self.url}/events/{n}"}
        self.created.append((request, event))
        if key:
            self._by_key[key] = event
        return Reply(200, event)
