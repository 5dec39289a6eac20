"""Memory: glibc's mmap threshold stays fixed, so freed image buffers leave the process."""

from __future__ import annotations

import ctypes
import gc
import os
import platform
import ssl
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.config.publishers import WebhookConfig
from gateway.publishers import BUILDERS
from gateway.publishers.base import PublisherContext
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


def test_http_backends_share_one_tls_context(tmp_path: Path) -> None:
    # Each httpx client used to load the CA bundle into an SSLContext of its own, and
    # OpenSSL 3 does not give all of that memory back (CPython issue #84904): heaptrack
    # on bench/soak.py found one bundle (~240 KiB) still held per reload.
    config = WebhookConfig(id="hook", type="webhook", url="https://127.0.0.1:9/hook")
    ctx = PublisherContext(state_dir=tmp_path, gateway_name="probe")
    backends = [BUILDERS["webhook"](config, ctx) for _ in range(5)]  # five reloads' worth
    try:
        gc.collect()
        contexts = [o for o in gc.get_objects() if isinstance(o, ssl.SSLContext)]
        assert len(contexts) == 1
    finally:
        for backend in backends:
            backend.close()


def test_sqlite_memory_is_capped_for_every_connection() -> None:
    probe = (
        "import sqlite3\n"
        "from gateway.runtime.memory import SQLITE_SOFT_HEAP_LIMIT, limit_sqlite_memory\n"
        "assert limit_sqlite_memory() == SQLITE_SOFT_HEAP_LIMIT\n"
        "other = sqlite3.connect(':memory:')\n"  # the limit is the process's, not one connection's
        "print(other.execute('PRAGMA soft_heap_limit').fetchone()[0])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert int(result.stdout) == 8 * 1024 * 1024
