"""The server process's glibc heap: at most MALLOC_ARENAS malloc arenas, and what a burst of requests
freed handed back to the OS once the server has been idle for a moment (IdleTrim). Off glibc (macOS,
musl) both do nothing.

    python -c "from genserve.serving.memory import trim_heap; print(trim_heap())"

Why the trim: glibc keeps the memory a burst freed (batched runs' tensors, request buffers, answers)
inside its heap for the next burst; only the top of a heap goes back by itself. `malloc_trim(0)` also
gives back the free pages in the middle of every arena (madvise MADV_DONTNEED). Measured on the VAE
with batching on, in process, after 64 threads x 100 decode requests: 722 MB RSS, 704 MB after one
trim (benchmarks/README.md, session 10). TF Serving and KServe do not do this; it costs one call after
each busy period, when no request is waiting for it: 1.8-2.5 ms right after that load, 0.2-0.3 ms on a
trimmed heap.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from typing import Callable

# glibc malloc arenas of the server process (M_ARENA_MAX; glibc's default: 8 per core): a thread that
# allocates while another holds an arena may get its own, and a loaded server has dozens of threads.
# VAE, one process after 64-client gRPC + REST load (2 cores, A/B): 823 MB RSS by default, 735 MB with 2.
MALLOC_ARENAS = 2
M_ARENA_MAX = -8  # glibc malloc.h


def _glibc(name: str):
    """The glibc function `name` of this process, or None (not Linux, not glibc)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None


def limit_malloc_arenas(count: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas for this process unless MALLOC_ARENA_MAX is set in the environment
    (which then rules). Returns True when the cap was set; False off glibc."""
    mallopt = _glibc("mallopt")
    if os.environ.get("MALLOC_ARENA_MAX") or mallopt is None:
        return False
    return bool(mallopt(M_ARENA_MAX, count))


def trim_heap() -> bool:
    """glibc's malloc_trim(0): the free memory of every arena back to the OS. Returns True when some
    was released; False when none was, or off glibc. ctypes releases the GIL for the call."""
    malloc_trim = _glibc("malloc_trim")
    return malloc_trim is not None and bool(malloc_trim(0))


class IdleTrim:
    """Calls trim_heap() once after each busy period: when requests began since the last trim, none
    began during the last `seconds` and none is in flight. A daemon thread looks every `seconds`.

    Args:
        activity: () -> (requests begun so far, requests in flight); e.g. ModelService's counters.
        seconds: the idle time before a trim (<= 0: never; nothing is started).
    """

    def __init__(self, activity: Callable[[], tuple[int, int]], seconds: float = 1.0):
        self.activity = activity
        self.seconds = seconds
        self.trims = 0  # trims made (tests, benchmarks)
        self._trimmed: int | None = None  # `begun` at the last trim (None: none yet: trim after the load)
        self._last: int | None = None  # `begun` at the last look
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.seconds > 0 and _glibc("malloc_trim") is not None and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="genserve-trim", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.seconds):
            self.look()

    def look(self) -> bool:
        """One look (what the thread does every `seconds`): trim if a busy period has ended. Returns
        True when it trimmed."""
        begun, inflight = self.activity()
        idle = begun == self._last and not inflight
        self._last = begun
        if not idle or begun == self._trimmed:
            return False
        trim_heap()
        self._trimmed = begun
        self.trims += 1
        return True

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
