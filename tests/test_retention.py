"""Media retention: by age, by disk budget, oldest first, never files being written."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from gateway.media.retention import enforce_retention

NOW = 1_800_000_000.0


def make(folder: Path, name: str, size: int, age: float) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, (NOW - age, NOW - age))
    return path


def names(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_age_limit(tmp_path: Path) -> None:
    make(tmp_path, "old.jpg", 100, age=3 * 86400)
    make(tmp_path, "2026/11/older.jpg", 50, age=4 * 86400)
    make(tmp_path, "new.jpg", 10, age=3600)
    result = enforce_retention(tmp_path, max_age=timedelta(days=2), max_bytes=None, now=NOW)
    assert (result.deleted_files, result.freed_bytes, result.kept_bytes) == (2, 150, 10)
    assert names(tmp_path) == {"new.jpg"}


def test_budget_deletes_oldest_first(tmp_path: Path) -> None:
    for i in range(10):
        make(tmp_path, f"f{i}.jpg", 100, age=1000 - i * 10)  # f0 is the oldest
    result = enforce_retention(tmp_path, max_age=None, max_bytes=450, now=NOW)
    assert result.deleted_files == 6
    assert result.freed_bytes == 600
    assert names(tmp_path) == {f"f{i}.jpg" for i in range(6, 10)}


def test_recent_files_and_temp_files_survive(tmp_path: Path) -> None:
    make(tmp_path, "just-arrived.jpg", 1000, age=2)
    make(tmp_path, ".render.jpg.abc.tmp", 1000, age=1)
    make(tmp_path, "old.jpg", 10, age=100)
    result = enforce_retention(tmp_path, max_age=timedelta(seconds=1), max_bytes=0, now=NOW)
    assert names(tmp_path) == {"just-arrived.jpg", ".render.jpg.abc.tmp"}
    assert result.deleted_files == 1


def test_stale_temp_files_are_removed(tmp_path: Path) -> None:
    make(tmp_path, ".frame.jpg.x.tmp", 500, age=2 * 3600)
    result = enforce_retention(tmp_path, max_age=None, max_bytes=None, now=NOW)
    assert result.deleted_files == 1
    assert names(tmp_path) == set()


def test_within_limits_nothing_happens(tmp_path: Path) -> None:
    make(tmp_path, "a.jpg", 100, age=60)
    result = enforce_retention(tmp_path, max_age=timedelta(days=1), max_bytes=1000, now=NOW)
    assert (result.deleted_files, result.freed_bytes, result.kept_bytes) == (0, 0, 100)


def test_empty_dated_folders_go_but_the_root_stays(tmp_path: Path) -> None:
    make(tmp_path, "2026/10/a.jpg", 10, age=90 * 86400)
    enforce_retention(tmp_path, max_age=timedelta(days=30), max_bytes=None, now=NOW + 3600)
    assert tmp_path.is_dir()
    assert not (tmp_path / "2026" / "10").exists()


def test_symlinks_are_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = make(outside, "keep.jpg", 100, age=10 * 86400)
    media = tmp_path / "media"
    media.mkdir()
    (media / "link.jpg").symlink_to(target)
    enforce_retention(media, max_age=timedelta(days=1), max_bytes=0, now=NOW)
    assert target.exists()


def test_missing_folder(tmp_path: Path) -> None:
    result = enforce_retention(tmp_path / "nope", max_age=None, max_bytes=0)
    assert result.deleted_files == 0
