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
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []  # a stack: the last one in is the first one out
        self._backlog: collections.deque = collections.deque()  # (future, fn, args, kwargs) no thread took
        self._threads: set[threading.Thread] = set()
        self._made = 0
        self._shutdown = False
        _live.add(self)

    @property
    def threads(self) -> int:
        """Threads alive (busy or idle)."""
        with self._lock:
            return len(self._threads)

    @property
    def idle(self) -> int:
        """Threads waiting for work."""
        with self._lock:
            return len(self._idle)

    def submit(self, fn, /, *args, **kwargs) -> futures.Future:
        future = futures.Future()
        item = (future, fn, args, kwargs)
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if self._idle:
                worker = self._idle.pop()
                worker.item = item
                worker.wake.release()
            elif len(self._threads) < self.max_workers:
                self._made += 1
                thread = threading.Thread(target=_work, args=(weakref.ref(self), item), daemon=_DAEMON,
                                          name=f"{self._prefix}_{self._made - 1}")
                self._threads.add(thread)
                thread.start()
            else:
                self._backlog.append(item)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new work; idle threads end; queued work still runs unless `cancel_futures`.
        `wait`: block until every thread has ended."""
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while self._backlog:
                    self._backlog.popleft()[0].cancel()
            idle, self._idle = self._idle, []
            threads = list(self._threads)
        for worker in idle:
            worker.item = None
            worker.wake.release()
        if wait:
            current = threading.current_thread()
            for thread in threads:
                if thread is not current:
                    thread.join()

    def __del__(self):
        # Dropped without shutdown(): an idle thread holds no reference to its pool, so this runs;
        # wake the idle ones to end (a busy one ends when it finds the pool gone).
        for worker in self._idle:
            worker.item = None
            worker.wake.release()


def _work(pool_ref, item) -> None:
    """A pool thread: run `item`, then the backlog, then wait on the idle stack for the next one.
    Holds its pool only while it takes work, so a pool nobody keeps can be collected (as
    ThreadPoolExecutor's workers do)."""
    worker = _Worker()
    me = threading.current_thread()
    while item is not None:
        _run(item)
        item = None  # no reference kept to the finished call's arguments while idle
        pool = pool_ref()
        if pool is None:
            return
        with pool._lock:
            if pool._backlog:
                item = pool._backlog.popleft()
            elif pool._shutdown:
                pool._threads.discard(me)
                return
            else:
                pool._idle.append(worker)
        del pool
        if item is None:
            worker.wake.acquire()
            item, worker.item = worker.item, None
    pool = pool_ref()
    if pool is not None:
        with pool._lock:
            pool._threads.discard(me)


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
