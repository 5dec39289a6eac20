"""A fake webhook receiver: accepts any POST under ``/hooks/`` and answers with an id."""

from __future__ import annotations

import re

from tests.fakes.server import FakeServer, Recorded, Reply, Route


class FakeWebhook(FakeServer):
    """Records what was POSTed; answers ``{"id": "<n>", "url": ...}``."""

    service = "webhook"

    def routes(self) -> list[tuple[str, str, Route]]:
        """The endpoints this fake serves."""
        return [("POST", r"/hooks/.*", self._receive)]

    def _receive(self, request: Recorded, match: re.Match[str]) -> Reply:
        n = len(self.calls("/hooks/"))
        return Reply(200, {"id": f"evt-{n}", "url": f"{self.url}/events/{n}"})
