"""Memory: glibc's mmap threshold stays fixed, so freed image buffers leave the process."""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import sys
import textwrap

import pytest

from gateway.runtime.memory import ENV_OVERRIDE, tune_malloc

pytestmark = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc" or not hasattr(ctypes.CDLL(None), "mallinfo2"),
    reason="glibc malloc only (mallinfo2: glibc 2.33 or later)",
)

# Frees an 8 MiB block (which, untuned, raises glibc's mmap threshold to 8 MiB), then
# allocates another and prints whether it is a mapping of its own (mallinfo2's hblkhd):
# only then does freeing it give the memory back to the system.
PROBE = textwrap.dedent(
    """
    import ctypes, sys
    from gateway.runtime.memory import tune_malloc

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.mallinfo2.restype = MallInfo2
    if sys.argv[1] == "tuned":
        assert tune_malloc()
    size = 8 << 20
    libc.free(libc.malloc(size))
    second = libc.malloc(size)
    print("mapped" if libc.mallinfo2().hblkhd >= size else "heap")
    """
)


def probe(mode: str) -> str:
    """Run PROBE in a fresh interpreter without the glibc environment override."""
    env = {k: v for k, v in os.environ.items() if k != ENV_OVERRIDE}
    result = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, env=env, check=True
    )
    return result.stdout.strip()


def test_untuned_glibc_serves_a_large_block_from_the_heap_after_one_was_freed() -> None:
    # the behaviour the daemon's memory grew by (and proof the probe can tell)
    assert probe("untuned") == "heap"


def test_tuned_glibc_maps_every_large_block_so_freeing_returns_it() -> None:
    assert probe("tuned") == "mapped"


def test_the_environment_override_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_OVERRIDE, "65536")
    assert tune_malloc() is False


TRIM_PROBE = textwrap.dedent(
    """
    import ctypes
    from gateway.runtime.memory import trim_malloc

    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    def rss_kib():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

    blocks = [libc.malloc(32 << 10) for _ in range(1000)]   # 32 MiB of heap
    for block in blocks:
        ctypes.memset(block, 1, 32 << 10)
    for block in blocks[:-1]:   # the last one pins the top of the heap
        libc.free(block)
    before = rss_kib()
    print(trim_malloc(), before - rss_kib())
    """
)


def test_trim_gives_freed_heap_pages_back() -> None:
    env = {k: v for k, v in os.environ.items() if k != ENV_OVERRIDE}
    result = subprocess.run(
        [sys.executable, "-c", TRIM_PROBE], capture_output=True, text=True, env=env, check=True
    )
    released, kib = result.stdout.split()
    assert released == "True"
    assert int(kib) > 24 * 1024  # most of the freed 32 MiB left the process
