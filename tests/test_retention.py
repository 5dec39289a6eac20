"""Media retention: by age, by disk budget, oldest first, never files being written nor
media of posts still waiting for delivery."""

from __future__ import annotations

import logging
import os
import random
from datetime import timedelta
from pathlib import Path

import pytest
from PIL import Image

from gateway.media.retention import _doomed, _Entry, enforce_retention

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


# -- media of posts still waiting for delivery ---------------------------------


def jpeg(folder: Path, name: str, age: float, seed: int = 0) -> Path:
    """A real JPEG of noise (so sizes differ and are not tiny), with its mtime ``age`` ago."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    im = Image.frombytes("RGB", (48, 32), bytes(rng.randrange(256) for _ in range(48 * 32 * 3)))
    im.save(path, "JPEG", quality=90)
    os.utime(path, (NOW - age, NOW - age))
    return path


def size(*paths: Path) -> int:
    return sum(p.stat().st_size for p in paths)


def test_kept_files_survive_the_age_limit(tmp_path: Path) -> None:
    waiting = jpeg(tmp_path, "posts/p1/photo.jpg", age=5 * 86400)
    done = jpeg(tmp_path, "posts/p0/photo.jpg", age=5 * 86400, seed=1)
    result = enforce_retention(
        tmp_path, max_age=timedelta(days=1), max_bytes=None, now=NOW, keep={waiting}
    )
    assert waiting.exists()
    assert not done.exists()
    assert (result.deleted_files, result.kept_bytes) == (1, size(waiting))


def test_kept_files_count_toward_the_budget_and_others_go_first(tmp_path: Path) -> None:
    waiting = jpeg(tmp_path, "posts/p1/photo.jpg", age=3000)  # the oldest of all
    frames = [jpeg(tmp_path, f"frames/cam/f{i}.jpg", age=2000 - i * 100, seed=i) for i in range(5)]
    # room for the kept photo and the two newest frames only
    budget = size(waiting, frames[3], frames[4])
    result = enforce_retention(
        tmp_path, max_age=None, max_bytes=budget, now=NOW, keep=[waiting.resolve()]
    )
    assert waiting.exists()
    assert [f.exists() for f in frames] == [False, False, False, True, True]
    assert result.kept_bytes == budget


def test_only_kept_files_over_budget_are_left_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kept = [jpeg(tmp_path, f"posts/p{i}/photo.jpg", age=86400, seed=i) for i in range(3)]
    caplog.set_level(logging.INFO, logger="gateway.media.retention")
    result = enforce_retention(tmp_path, max_age=None, max_bytes=1, now=NOW, keep=kept)
    assert all(p.exists() for p in kept)
    assert (result.deleted_files, result.kept_bytes) == (0, size(*kept))
    (line,) = [r.getMessage() for r in caplog.records]
    assert "still waiting for delivery" in line


def test_keep_matches_through_a_symlinked_or_relative_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = tmp_path / "real"
    waiting = jpeg(real, "media/posts/p1/photo.jpg", age=5 * 86400)
    (tmp_path / "link").symlink_to(real)
    monkeypatch.chdir(tmp_path)
    # the outbox may hold "link/media/..." (state_dir = "link"), retention scan another spelling
    keep = {Path("link/media/posts/p1/photo.jpg")}
    enforce_retention(
        Path("link/media"), max_age=timedelta(days=1), max_bytes=0, now=NOW, keep=keep
    )
    assert waiting.exists()


def test_doomed_spares_kept_entries_by_age_and_by_budget(tmp_path: Path) -> None:
    old = [_Entry(tmp_path / f"old{i}.jpg", NOW - 9 * 86400, 100) for i in range(2)]
    new = [_Entry(tmp_path / f"new{i}.jpg", NOW - 3600 + i, 100) for i in range(3)]
    keep = frozenset({old[0].path, new[0].path})
    doomed = _doomed([*old, *new], NOW, timedelta(days=1), 300, keep)
    # old1 is too old (old0 is kept); 400 bytes remain, the oldest unkept one goes: new1
    assert [e.path.name for e in doomed] == ["old1.jpg", "new1.jpg"]
