"""Durable file writes: temp file, fsync, rename, fsync the folder.

An SD card that loses power mid-write must leave either the old file or the
new one, never half of each.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entry table so a rename or a new file survives power loss."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic(dest: Path, fill: Callable[[BinaryIO], object]) -> None:
    """Create ``dest`` through a temp file that ``fill`` writes, fsync, rename, fsync the folder."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            fill(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(dest.parent)


def atomic_write(dest: Path, data: bytes) -> None:
    """Write ``data`` to ``dest`` so readers see the old file or the whole new one."""
    _atomic(dest, lambda out: out.write(data))


def atomic_copy(src: Path, dest: Path) -> None:
    """Copy ``src`` to ``dest`` atomically (see :func:`atomic_write`)."""

    def copy(out: BinaryIO) -> None:
        with open(src, "rb") as inp:
            shutil.copyfileobj(inp, out)

    _atomic(dest, copy)
