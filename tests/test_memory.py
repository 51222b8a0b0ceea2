"""The server's heap (genserve.serving.memory): freed memory goes back to the OS once after each busy
period, and only then.

    .venv/bin/python -m pytest tests/test_memory.py -q
"""

from __future__ import annotations

import platform
import subprocess
import sys
import time

import numpy as np
import pytest

from genserve.serving.memory import IdleTrim

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")


def test_idle_trim_trims_once_after_each_busy_period():
    script = iter([
        ((0, 0), False),  # the first look: nothing to compare with yet
        ((0, 0), True),  # idle since start: what the start-up load freed
        ((0, 0), False),  # still idle: trimmed already
        ((5, 2), False),  # busy
        ((9, 0), False),  # requests began since the last look
        ((9, 1), False),  # one still in flight
        ((9, 0), True),  # the busy period is over
        ((9, 0), False),
    ])
    expected = []
    trim = IdleTrim(lambda: expected.append(next(script)) or expected[-1][0], seconds=60)
    for _ in range(8):
        assert trim.look() is expected[-1][1], expected
    assert trim.trims == 2


@glibc
def test_trim_heap_hands_freed_heap_back_to_the_os():
    """200 MB malloc'ed in 64 KB blocks (below glibc's mmap threshold: in the heap), all but every
    16th freed (the kept ones pin the heap's top, so glibc cannot shrink it by itself): RSS drops by at
    least 100 MB at the trim, not before."""
    code = r"""
import ctypes
from genserve.serving.memory import trim_heap
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def rss():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:")) // 1024
blocks = [libc.malloc(64 << 10) for _ in range(3200)]
for b in blocks:
    ctypes.memset(b, 1, 64 << 10)
for i, b in enumerate(blocks):
    if i % 16:
        libc.free(b)
before = rss()
released = trim_heap()
print(before, rss(), released)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    before, after, released = out.stdout.split()
    assert released == "True" and int(before) - int(after) >= 100, out.stdout


@glibc
def test_the_server_trims_after_its_load_and_after_a_busy_period(toy_models_dir):
    from genserve.clients import Client
    from genserve.serving.server import ModelServer

    def wait_for(trims: int) -> None:
        deadline = time.monotonic() + 20
        while server.trim.trims < trims:
            assert time.monotonic() < deadline, f"{server.trim.trims} trims, expected {trims}"
            time.sleep(0.02)

    server = ModelServer(toy_models_dir, poll_seconds=0, idle_trim_seconds=0.05)
    server.start()
    try:
        wait_for(1)  # what the start-up load freed
        with Client(server.target, timeout=30) as client:
            for _ in range(3):
                client.predict("toy", {"x": np.ones((2, 1), np.float32)})
        wait_for(2)
    finally:
        server.stop(0)
    assert server.trim._thread is None


def test_no_trim_thread_when_turned_off(toy_models_dir):
    from genserve.serving.server import ModelServer

    server = ModelServer(toy_models_dir, poll_seconds=0, idle_trim_seconds=0)
    server.start()
    try:
        assert server.trim._thread is None
    finally:
        server.stop(0)
