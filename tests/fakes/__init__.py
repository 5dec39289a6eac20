"""Fake HTTP services for the publisher tests, one per service, on 127.0.0.1."""

from tests.fakes.server import FakeServer, Fault, Part, Recorded, Reply

__all__ = ["FakeServer", "Fault", "Part", "Recorded", "Reply"]
