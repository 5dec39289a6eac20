"""Real JPEG files for the publisher tests."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from gateway.model import MediaItem


def jpeg(folder: Path, name: str, size: tuple[int, int], alt: str) -> MediaItem:
    """Write a real JPEG (a colour gradient) and describe it as a MediaItem."""
    width, height = size
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    path = folder / name
    image.save(path, "JPEG", quality=80)
    return MediaItem(path, "image/jpeg", width, height, path.stat().st_size, alt)
