"""A thread pool that gives each call to the thread that went idle last (HotThreadPool).

`concurrent.futures.ThreadPoolExecutor` hands work to whichever idle thread its queue wakes, and the
kernel wakes a queue's waiters in turn: with four idle threads, one client's calls go round all four.
A graph Session run is faster on a thread that ran it a moment ago (presumably its per-thread state
in TensorFlow and the core's caches are still warm): an echo server running the text `step` per
call answered in 0.828 ms with one pool thread and 0.862 ms with four (benchmarks/README.md, session
11). Here the idle threads are a stack, so a lone client's calls stay on one thread, and a burst
uses the fewest threads that keep up; threads are made on demand up to `max_workers`, and work that
finds every thread busy waits in arrival order.

    python -c "from genserve.serving.hot_pool import HotThreadPool; p = HotThreadPool(2); print(p.submit(sum, [1, 2]).result()); p.shutdown()"
"""

from __future__ import annotations

import collections
import threading
import weakref
from concurrent import futures

_live: "weakref.WeakSet[HotThreadPool]" = weakref.WeakSet()


def _at_exit() -> None:
    # As ThreadPoolExecutor does at interpreter exit: idle threads end, running work finishes.
    for pool in list(_live):
        pool.shutdown(wait=True)


if hasattr(threading, "_register_atexit"):  # runs before the interpreter joins non-daemon threads
    threading._register_atexit(_at_exit)
    _DAEMON = False
else:  # pragma: no cover  (another Python: threads that cannot keep it from exiting)
    _DAEMON = True


class _Worker:
    __slots__ = ("wake", "item")

    def __init__(self):
        self.wake = threading.Lock()
        self.wake.acquire()  # released by whoever hands this worker an item (or None: exit)
        self.item = None


class _State:
    """What a pool's threads share with it. The threads hold this, not the pool, so a pool nobody
    keeps is collected (its `__del__` then shuts it down) while its queued work still runs, as
    ThreadPoolExecutor's workers do with its queue."""

    def __init__(self):
        self.lock = threading.Lock()
        self.idle: list[_Worker] = []  # a stack: the last one in is the first one out
        self.backlog: collections.deque = collections.deque()  # (future, fn, args, kwargs) no thread took
        self.threads: set[threading.Thread] = set()
        self.shutdown = False

    def close(self, cancel_futures: bool = False) -> list[threading.Thread]:
        """No new work; idle threads end; returns the threads alive."""
        with self.lock:
            self.shutdown = True
            if cancel_futures:
                while self.backlog:
                    self.backlog.popleft()[0].cancel()
            idle, self.idle = self.idle, []
            threads = list(self.threads)
        for worker in idle:
            worker.item = None
            worker.wake.release()
        return threads


class HotThreadPool(futures.Executor):
    """An Executor whose idle threads are a stack: the most recently idle one runs the next call.

    Args:
        max_workers: threads at most (made on demand); more work waits in arrival order.
        thread_name_prefix: threads are named PREFIX_N.
    """

    def __init__(self, max_workers: int, thread_name_prefix: str = "hot-pool"):
        if max_workers < 1:
            raise ValueError("max_workers must be greater than 0")
        self.max_workers = max_workers
        self._prefix = thread_name_prefix
        self._state = _State()
        self._made = 0
        _live.add(self)

    @property
    def threads(self) -> int:
        """Threads alive (busy or idle)."""
        with self._state.lock:
            return len(self._state.threads)

    @property
    def idle(self) -> int:
        """Threads waiting for work."""
        with self._state.lock:
            return len(self._state.idle)

    def submit(self, fn, /, *args, **kwargs) -> futures.Future:
        future = futures.Future()
        item = (future, fn, args, kwargs)
        state = self._state
        with state.lock:
            if state.shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if state.idle:
                worker = state.idle.pop()
                worker.item = item
                worker.wake.release()
            elif len(state.threads) < self.max_workers:
                self._made += 1
                thread = threading.Thread(target=_work, args=(state, item), daemon=_DAEMON,
                                          name=f"{self._prefix}_{self._made - 1}")
                state.threads.add(thread)
                thread.start()
            else:
                state.backlog.append(item)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new work; idle threads end; queued work still runs unless `cancel_futures`.
        `wait`: block until every thread has ended."""
        threads = self._state.close(cancel_futures)
        if wait:
            current = threading.current_thread()
            for thread in threads:
                if thread is not current:
                    thread.join()

    def __del__(self):
        # Dropped without shutdown(): idle threads end, busy ones after the queued work.
        self._state.close()


def _work(state: _State, item) -> None:
    """A pool thread: run `item`, then the backlog, then wait on the idle stack for the next one."""
    worker = _Worker()
    me = threading.current_thread()
    while item is not None:
        _run(item)
        item = None  # no reference kept to the finished call's arguments while idle
        with state.lock:
            if state.backlog:
                item = state.backlog.popleft()
                continue
            if state.shutdown:
                break
            state.idle.append(worker)
        worker.wake.acquire()
        item, worker.item = worker.item, None
    with state.lock:
        state.threads.discard(me)


def _run(item) -> None:
    future, fn, args, kwargs = item
    if not future.set_running_or_notify_cancel():
        return
    try:
        result = fn(*args, **kwargs)
    except BaseException as e:  # as ThreadPoolExecutor's work items: the caller sees it on the future
        future.set_exception(e)
    else:
        future.set_result(result)
