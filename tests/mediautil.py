"""Helpers for media tests: real JPEG bytes and a gateway built from a config text.

The gateway is the real :class:`~gateway.runtime.app.Gateway` (outbox, composer, frame store,
publishers); tests fire rules and run delivery steps by hand instead of starting
the scheduler and MQTT, so nothing depends on timing.
"""

from __future__ import annotations

import io
import os
import tomllib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image

from devices.simulate import make_frame
from gateway.runtime.app import Gateway
from gateway.runtime.loading import validate_config


def scene_jpeg(at: datetime | None = None, size: tuple[int, int] = (640, 480)) -> bytes:
    """A simulated pool camera frame (JPEG) at ``at``."""
    return make_frame(at or datetime.now(UTC), *size)


def noisy_jpeg(size: tuple[int, int], quality: int = 95) -> bytes:
    """A JPEG of random pixels: large for its size, so byte budgets really bite."""
    im = Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def gateway_from(tmp_path: Path, body: str) -> Gateway:
    """A Gateway whose config is ``body`` plus a [gateway] table with state in tmp_path."""
    text = f'[gateway]\nname = "t"\ntimezone = "Europe/London"\nstate_dir = "{tmp_path}"\n'
    return Gateway(validate_config(tomllib.loads(text + body)))


def deliver_all(gateway: Gateway) -> None:
    """Run every delivery worker until nothing is due."""
    for worker in gateway.workers.values():
        while worker.step() == 0.0:
            pass


def image_size(path: Path) -> tuple[int, int]:
    """Width and height of an image file."""
    with Image.open(path) as im:
        return im.size


@pytest.fixture
def make_gateway(tmp_path: Path) -> Iterator[Callable[[str], Gateway]]:
    """Build gateways with :func:`gateway_from` in tmp_path; their outboxes close at teardown."""
    made: list[Gateway] = []

    def make(body: str) -> Gateway:
        gateway = gateway_from(tmp_path / "state", body)
        made.append(gateway)
        return gateway

    yield make
    for gateway in made:
        gateway.outbox.close()


def camera_jpeg(size: tuple[int, int], *, progressive: bool = False, quality: int = 85) -> bytes:
    """A JPEG like a camera's: a scene with gradients and sensor noise, 4:2:0, at ``size``.

    Baseline by default (what cameras write); ``progressive`` as some web tools re-save.
    """
    w, h = size
    small = (max(1, w // 8), max(1, h // 8))
    red = Image.linear_gradient("L").resize(small)
    green = Image.radial_gradient("L").resize(small)
    blue = Image.effect_mandelbrot(small, (-2.0, -1.2, 1.0, 1.2), 60)
    scene = Image.merge("RGB", (red, green, blue)).resize(size, Image.Resampling.BILINEAR)
    noise = Image.effect_noise(size, 24).convert("RGB")
    im = Image.blend(scene, noise, 0.0 if progressive else 0.1)
    del scene, noise
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, progressive=progressive, optimize=progressive)
    return buf.getvalue()


def flat_png(size: tuple[int, int]) -> bytes:
    """A huge, almost empty greyscale PNG: tens of KB that decode to ``w*h`` pixels."""
    im = Image.new("L", size, 200)
    im.paste(0, (0, 0, size[0], 8))
    buf = io.BytesIO()
    im.save(buf, "PNG", compress_level=9)
    return buf.getvalue()
