"""HotThreadPool: the thread that went idle last runs the next call; bounded threads, arrival order
beyond them, futures as ThreadPoolExecutor's, shutdown and interpreter exit; the servers use it."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from concurrent import futures

import pytest

from genserve.serving.hot_pool import HotThreadPool


def _until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.001)


def _warm(pool: HotThreadPool, n: int) -> list[int]:
    """Make `n` threads and let them go idle one after another; returns their idents in that order."""
    gates = [threading.Event() for _ in range(n)]
    started = []
    lock = threading.Lock()

    def hold(gate):
        with lock:
            started.append(threading.get_ident())
        gate.wait(5)
        return threading.get_ident()

    jobs = [pool.submit(hold, gate) for gate in gates]
    _until(lambda: len(started) == n)
    order = []
    for gate, job in zip(gates, jobs):
        gate.set()
        order.append(job.result(5))
        _until(lambda: pool.idle == len(order))
    return order


def test_the_thread_idle_last_runs_the_next_call_and_keeps_a_lone_callers_calls():
    pool = HotThreadPool(8, thread_name_prefix="t")
    try:
        order = _warm(pool, 4)
        assert len(set(order)) == 4 and pool.threads == 4
        ran = []
        for _ in range(20):  # one caller, one call at a time: always the hottest thread
            ran.append(pool.submit(threading.get_ident).result(5))
            _until(lambda: pool.idle == 4)
        assert ran == [order[-1]] * 20  # a FIFO pool (ThreadPoolExecutor) goes round all four
        assert pool.threads == 4  # none made while one was idle
    finally:
        pool.shutdown()


def test_threads_are_bounded_and_waiting_work_runs_in_arrival_order():
    pool = HotThreadPool(2)
    gate = threading.Event()
    try:
        blockers = [pool.submit(gate.wait, 5) for _ in range(5)]
        _until(lambda: pool.threads == 2)
        assert sum(job.running() for job in blockers) == 2
        gate.set()
        assert all(job.result(5) for job in blockers) and pool.threads == 2
    finally:
        pool.shutdown()

    pool = HotThreadPool(1)
    gate = threading.Event()
    ran = []
    try:
        blocker = pool.submit(gate.wait, 5)
        queued = [pool.submit(ran.append, i) for i in range(5)]
        assert ran == [] and not any(job.done() for job in queued)
        gate.set()
        for job in [blocker, *queued]:
            job.result(5)
        assert ran == [0, 1, 2, 3, 4]
    finally:
        pool.shutdown()


def test_futures_carry_results_and_exceptions_and_a_cancelled_call_never_runs():
    pool = HotThreadPool(1)
    gate = threading.Event()
    ran = []
    try:
        assert pool.submit(lambda a, b=0: a + b, 2, b=3).result(5) == 5
        with pytest.raises(ZeroDivisionError):
            pool.submit(lambda: 1 / 0).result(5)
        with pytest.raises(KeyboardInterrupt):  # a BaseException reaches the caller too
            pool.submit(_raise, KeyboardInterrupt()).result(5)
        blocker = pool.submit(gate.wait, 5)
        later = pool.submit(ran.append, "later")
        assert later.cancel()
        gate.set()
        blocker.result(5)
        pool.submit(ran.append, "next").result(5)
        assert ran == ["next"] and later.cancelled()
    finally:
        pool.shutdown()


def _raise(error):
    raise error


def test_shutdown_ends_idle_threads_runs_or_cancels_what_waits_and_refuses_new_work():
    pool = HotThreadPool(1)
    gate = threading.Event()
    ran = []
    blocker = pool.submit(gate.wait, 5)
    kept = pool.submit(ran.append, "kept")
    pool.shutdown(wait=False)
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(ran.append, "refused")
    gate.set()
    blocker.result(5)
    kept.result(5)
    _until(lambda: pool.threads == 0)
    assert ran == ["kept"]

    pool = HotThreadPool(1)
    gate = threading.Event()
    blocker = pool.submit(gate.wait, 5)
    dropped = pool.submit(ran.append, "dropped")
    threading.Timer(0.05, gate.set).start()
    pool.shutdown(wait=True, cancel_futures=True)
    assert blocker.result(0) is True and dropped.cancelled() and pool.threads == 0
    assert ran == ["kept"]

    pool = HotThreadPool(3)
    _warm(pool, 3)
    pool.shutdown(wait=True)  # idle threads wake and end
    assert pool.threads == 0


def test_a_pool_nobody_keeps_is_collected_and_its_idle_threads_end():
    import gc

    pool = HotThreadPool(3, thread_name_prefix="dropped-pool")
    _warm(pool, 3)
    assert sum(t.name.startswith("dropped-pool") for t in threading.enumerate()) == 3
    del pool
    gc.collect()
    _until(lambda: not any(t.name.startswith("dropped-pool") for t in threading.enumerate()))


def test_a_pool_dropped_with_work_queued_still_runs_that_work():
    import gc

    pool = HotThreadPool(1, thread_name_prefix="dropped-busy")
    gate = threading.Event()
    blocker = pool.submit(gate.wait, 5)
    queued = [pool.submit(lambda i=i: i * 2) for i in range(3)]
    del pool
    gc.collect()
    gate.set()
    assert blocker.result(5) is True
    assert [job.result(5) for job in queued] == [0, 2, 4]
    _until(lambda: not any(t.name.startswith("dropped-busy") for t in threading.enumerate()))


def test_a_pool_left_running_does_not_hold_the_interpreter_at_exit():
    code = ("import threading, time\n"
            "from genserve.serving.hot_pool import HotThreadPool\n"
            "pool = HotThreadPool(4)\n"
            "gate = threading.Event()\n"
            "jobs = [pool.submit(gate.wait, 5) for _ in range(3)]\n"
            "gate.set(); [j.result() for j in jobs]\n"
            "slow = pool.submit(lambda: (time.sleep(0.3), print('finished', flush=True)))\n"
            "print('leaving', flush=True)\n")
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["leaving", "finished"]  # running work finishes, as with TPE
    assert time.monotonic() - start < 20


def test_the_servers_thread_pools_are_hot_pools(tmp_path):
    from genserve.export.toy import export_toy
    from genserve.serving.server import ModelServer

    export_toy(tmp_path / "models")
    server = ModelServer(tmp_path / "models", port=0, host="127.0.0.1", poll_seconds=0)
    server.start()
    try:
        assert isinstance(server._grpc._pool, HotThreadPool)
        assert isinstance(server.service.work, HotThreadPool)
        assert isinstance(server.service._gate("toy").executor, HotThreadPool)
        assert not isinstance(server._grpc._pool, futures.ThreadPoolExecutor)
    finally:
        server.stop(0)
