"""One model's admission (ModelGate): at most `max_concurrent` runs at once and `max_queue` more
waiting, the next request refused with UNAVAILABLE at once; service.py keeps one gate per model name
(its module docstring says why, and what it measured).

    python -c "from genserve.serving.gate import ModelGate; g = ModelGate('vae', 1, 0); g.admit(); print(g.run(None, sum, [1, 2]))"
"""

from __future__ import annotations

import queue
import threading
import time

from genserve.serving.errors import ServingError, short
from genserve.serving.hot_pool import HotThreadPool


class ModelGate:
    """One model's admission: at most `max_concurrent` runs at once and `max_queue` more waiting; the
    next request is refused with UNAVAILABLE at once. Its own threads serve the async front end."""

    def __init__(self, name: str, max_concurrent: int, max_queue: int):
        self.max_concurrent, self.max_queue = max_concurrent, max_queue
        self.what = f"model {short(name)}"  # how its errors name the model
        self.executor = HotThreadPool(max_concurrent, thread_name_prefix="genserve-model")
        self.admitted = 0  # running + waiting
        self._slots = queue.SimpleQueue()  # one token per run slot (C: cheaper than threading.Semaphore)
        for _ in range(max_concurrent):
            self._slots.put(None)
        self._lock = threading.Lock()

    def admit(self) -> None:
        """Count one request in, or raise UNAVAILABLE when running + waiting is at the limit."""
        with self._lock:
            if self.admitted >= self.max_concurrent + self.max_queue:
                queued = self.admitted - self.max_concurrent
                raise ServingError("UNAVAILABLE", f"{self.what}: server busy ({self.max_concurrent} executions "
                                                  f"running, {queued} queued); retry later")
            self.admitted += 1

    def release(self, _future=None) -> None:
        with self._lock:
            self.admitted -= 1

    def run(self, deadline: float | None, fn, *args):
        """On the calling thread: wait for a run slot (until `deadline`), then `fn(*args)`."""
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            self._slots.get(timeout=timeout)
        except queue.Empty:
            raise ServingError("DEADLINE_EXCEEDED", f"{self.what}: deadline passed while queued") from None
        try:
            return fn(*args)
        finally:
            self._slots.put(None)
