"""Server-side request batching, as TF Serving's batching session does it. No gRPC import.

    python -m genserve.serving.batching models/vae/1     # prints the parsed batching parameters

A model version is batched when its folder holds `batching_params.pbtxt` (layout.BATCHING_PARAMS_FILE,
a text-format `tensorflow.serving.BatchingParameters`), as `tensorflow_model_server
--enable_batching --enable_per_model_batching_parameters` does (Dockerfile.serving sets both); versions
without the file are never batched. What TF Serving does and genserve with it
(tensorflow_serving/batching/batching_session.cc, servables/tensorflow/bundle_factory_util.cc,
tensorflow/core/kernels/batching_util/shared_batch_scheduler.h):
- one queue per (signature, fetched outputs) — TF Serving keys its queues by the input and output tensor
  names, so requests with different `output_filter`s never share a batch — served by the model's
  `num_batch_threads` threads;
- a request is one task of `rows` = its inputs' common dim-0 size (unequal sizes: INVALID_ARGUMENT;
  more than max_batch_size rows: INVALID_ARGUMENT "Task size N is larger than maximum input batch size
  M"); a task that does not fit the open batch closes it and opens a new one, and when
  max_enqueued_batches batches are already queued the task is refused with UNAVAILABLE "The batch
  scheduling queue to which this task was submitted is full";
- a batch is run when it is full or its first task has waited batch_timeout_micros — a lone request
  waits the whole timeout even when every batch thread is idle: in shared_batch_scheduler.h (tensorflow
  commit de30797, with the priority-queue options of the 2.2x releases),
  `Queue::PeekBatchPriorityImpl` makes the open batch schedulable only when `closed_ ||
  effective_batch_size >= max_execution_batch_size() || env_->NowMicros() >= effective_start_time_micros
  + effective_batch_timeout_micros`, and an idle thread's `ThreadLogic` just waits 1 ms and asks again
  (`WaitForMilliseconds(&l, &schedulable_batch_cv_, kTimeoutMillis)`); no option of BatchingParameters
  changes that (the priority-queue options are not in it). So a 1-client latency with batching on is
  the timeout plus an unbatched run on TF Serving too; compare batching off for it. The tasks' inputs
  are concatenated along dim 0, padded up to the smallest allowed_batch_sizes entry that holds them
  (padding rows = the first row of the last task, as batching_session.cc does), run ONCE with the
  largest remaining deadline of its tasks (RunOptions.timeout_in_ms), and the outputs are split back;
- a task whose deadline passed while queued is answered DEADLINE_EXCEEDED (TF Serving answers
  RESOURCE_EXHAUSTED "Run() timeout exceeded while waiting in batching queue" when all of a batch's
  tasks expired; its gRPC client has seen DEADLINE_EXCEEDED by then anyway).
One deliberate difference: TF Serving fails a whole batch with FAILED_PRECONDITION when two of its
tasks differ past dim 0 (pad_variable_length_inputs off); genserve never puts such tasks in one batch
(the queue key includes the shapes past dim 0), so each is answered as if unbatched.
pad_variable_length_inputs and enable_large_batch_splitting are read but not implemented (a warning).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genserve.repository import BATCHING_PARAMS_FILE
from genserve.serving.errors import ServingError
from genserve.textproto import parse_text_proto

log = logging.getLogger("genserve.serving")

# SharedBatchScheduler::QueueOptions defaults, used for fields the file leaves out.
DEFAULT_MAX_BATCH_SIZE = 1000
DEFAULT_BATCH_TIMEOUT_MICROS = 0
DEFAULT_MAX_ENQUEUED_BATCHES = 10
DEFAULT_NUM_BATCH_THREADS = 4  # genserve/deploy/batching_parameters.txt's shared pool size


def batching_parameters_class():
    """tensorflow.serving.BatchingParameters (servables/tensorflow/session_bundle_config.proto, same
    field numbers), built in a private descriptor pool: the tensorflow-serving-api wheel ships no
    Python module for it."""
    global _PARAMS_CLASS
    if _PARAMS_CLASS is None:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

        F = descriptor_pb2.FieldDescriptorProto
        pool = descriptor_pool.DescriptorPool()
        wrappers = descriptor_pb2.FileDescriptorProto()
        wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
        pool.Add(wrappers)
        f = descriptor_pb2.FileDescriptorProto(name="genserve_batching_parameters.proto",
                                               package="tensorflow.serving", syntax="proto3",
                                               dependency=["google/protobuf/wrappers.proto"])
        msg = f.message_type.add(name="BatchingParameters")
        for number, name, kind in [(1, "max_batch_size", "Int64Value"), (2, "batch_timeout_micros", "Int64Value"),
                                   (3, "max_enqueued_batches", "Int64Value"),
                                   (4, "num_batch_threads", "Int64Value"), (5, "thread_pool_name", "StringValue"),
                                   (8, "enable_large_batch_splitting", "BoolValue"),
                                   (9, "max_execution_batch_size", "Int64Value")]:
            msg.field.add(name=name, number=number, label=F.LABEL_OPTIONAL, type=F.TYPE_MESSAGE,
                          type_name=f".google.protobuf.{kind}")
        msg.field.add(name="allowed_batch_sizes", number=6, label=F.LABEL_REPEATED, type=F.TYPE_INT64)
        msg.field.add(name="pad_variable_length_inputs", number=7, label=F.LABEL_OPTIONAL, type=F.TYPE_BOOL)
        pool.Add(f)
        _PARAMS_CLASS = message_factory.GetMessageClass(
            pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))
    return _PARAMS_CLASS


_PARAMS_CLASS = None


@dataclass(frozen=True)
class BatchingParams:
    """The fields of a BatchingParameters genserve uses (defaults: TF Serving's queue defaults)."""

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    batch_timeout_micros: int = DEFAULT_BATCH_TIMEOUT_MICROS
    max_enqueued_batches: int = DEFAULT_MAX_ENQUEUED_BATCHES
    num_batch_threads: int = DEFAULT_NUM_BATCH_THREADS
    allowed_batch_sizes: tuple = ()

    def __post_init__(self) -> None:
        """Raises ValueError as TF Serving refuses the load (bundle_factory_util.cc)."""
        if self.max_batch_size < 1 or self.max_enqueued_batches < 1 or self.num_batch_threads < 1:
            raise ValueError("max_batch_size, max_enqueued_batches and num_batch_threads must be >= 1")
        if self.batch_timeout_micros < 0:
            raise ValueError("batch_timeout_micros must be >= 0")
        sizes = self.allowed_batch_sizes
        if sizes:
            if any(b <= a for a, b in zip(sizes, sizes[1:])) or sizes[0] < 1:
                raise ValueError("allowed_batch_sizes entries must be positive and increasing")
            if sizes[-1] != self.max_batch_size:
                raise ValueError(f"Last entry in allowed_batch_sizes must match max_batch_size; last entry "
                                 f"was {sizes[-1]}; expected {self.max_batch_size}")

    def padded_size(self, rows: int) -> int:
        """The smallest allowed batch size >= rows (rows itself when none are configured)."""
        for size in self.allowed_batch_sizes:
            if size >= rows:
                return size
        return rows


def read_batching_params(version_dir, default_threads: int = DEFAULT_NUM_BATCH_THREADS) -> BatchingParams | None:
    """The version's batching parameters, or None when it has no batching_params.pbtxt.

    Raises:
        ValueError: the file does not parse as a BatchingParameters, or its values are impossible.
    """
    path = Path(version_dir) / BATCHING_PARAMS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    proto = parse_text_proto(text, batching_parameters_class()(), str(path))
    for name in ("pad_variable_length_inputs", "enable_large_batch_splitting"):
        value = getattr(proto, name)
        if getattr(value, "value", value):
            log.warning("%s: %s is not implemented by genserve; ignored", path, name)

    def get(name, default):
        return getattr(proto, name).value if proto.HasField(name) else default

    try:
        return BatchingParams(get("max_batch_size", DEFAULT_MAX_BATCH_SIZE),
                              get("batch_timeout_micros", DEFAULT_BATCH_TIMEOUT_MICROS),
                              get("max_enqueued_batches", DEFAULT_MAX_ENQUEUED_BATCHES),
                              get("num_batch_threads", default_threads), tuple(proto.allowed_batch_sizes))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


class _Task:
    __slots__ = ("arrays", "rows", "enqueued", "deadline", "future")

    def __init__(self, arrays: dict, rows: int, enqueued: float, deadline: float | None):
        self.arrays, self.rows, self.enqueued, self.deadline = arrays, rows, enqueued, deadline
        self.future: futures.Future = futures.Future()  # its share of the batch's outputs


class _Queue:
    """One queue: `batches[-1]` is the open batch (TF's SharedBatchScheduler::Queue layout)."""

    def __init__(self, key: tuple, sig, keys: tuple):
        self.key, self.sig, self.keys = key, sig, keys
        self.batches = deque([[]])  # lists of _Task
        self.open_rows = 0
        self.open_since = 0.0


class Batcher:
    """Batches one model version's Predict runs; `runner` is execute.predict's `runner` hook.

    Attributes (counters, for tests and metrics): `runs` Session runs made for batches, `tasks`
    requests answered by them, `padded_rows` rows of padding added.
    """

    def __init__(self, params: BatchingParams, name: str = ""):
        self.params = params
        self.name = name
        self.runs = 0
        self.tasks = 0
        self.padded_rows = 0
        self._queues: dict = {}
        self._cond = threading.Condition()
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"genserve-batch-{name}-{i}", daemon=True)
                         for i in range(params.num_batch_threads)]
        for thread in self._threads:
            thread.start()

    # -- the runner hook --------------------------------------------------------------------------
    def runner(self, sig, arrays: dict, keys: tuple, timeout_ms: int = 0) -> dict:
        """Queue one request and wait for its share of a batched run (blocking form of `submit`)."""
        return self.submit(sig, arrays, keys, timeout_ms).result()

    def submit(self, sig, arrays: dict, keys: tuple, timeout_ms: int = 0) -> futures.Future:
        """Queue one request; the Future gets its share of a batched run. Waiting on it holds no
        thread of the caller's choosing (the service awaits it on its event loop).

        Raises (at once, or through the Future):
            ServingError: INVALID_ARGUMENT (unequal dim 0, too many rows), UNAVAILABLE (queue full),
                DEADLINE_EXCEEDED (expired while queued), or the batch's run error.
        """
        rows = _task_rows(arrays)
        limit = self.params.max_batch_size
        if rows > limit:
            raise ServingError("INVALID_ARGUMENT",
                               f"Task size {rows} is larger than maximum input batch size {limit}")
        if rows == 0:
            return _run_now(sig, arrays, keys, timeout_ms)  # nothing to merge
        now = time.monotonic()
        task = _Task(arrays, rows, now, now + timeout_ms / 1000 if timeout_ms > 0 else None)
        key = (sig.name, tuple(keys), tuple((k, a.dtype.str, a.shape[1:]) for k, a in sorted(arrays.items())))
        with self._cond:
            if self._closed:  # unloaded while this request was resolving: run it alone
                closed = True
            else:
                closed = False
                queue = self._queues.get(key)
                if queue is None:
                    queue = self._queues[key] = _Queue(key, sig, tuple(keys))
                if queue.open_rows + rows > limit:
                    if len(queue.batches) >= self.params.max_enqueued_batches:
                        raise ServingError(
                            "UNAVAILABLE", "The batch scheduling queue to which this task was submitted is "
                            f"full; currently {len(queue.batches)} batches enqueued and max_enqueued_batches "
                            f"is {self.params.max_enqueued_batches}")
                    queue.batches.append([])
                    queue.open_rows = 0
                opened = not queue.batches[-1]
                if opened:
                    queue.open_since = now
                queue.batches[-1].append(task)
                queue.open_rows += rows
                # Wake a batch thread only when what it waits for changed (TF's Queue::Schedule calls
                # schedulable_batch_callback_ only when a batch becomes schedulable): a new open batch
                # (a new timeout to wait for), a closed or full one, or no timeout at all. A task
                # joining a waiting open batch changes nothing: a waiting thread is timed for it.
                if opened or len(queue.batches) > 1 or queue.open_rows >= limit or not self.params.batch_timeout_micros:
                    self._cond.notify()
        if closed:
            return _run_now(sig, arrays, keys, timeout_ms)
        return task.future

    # -- batch threads ----------------------------------------------------------------------------
    def _next_batch(self):
        """(queue, tasks) of the batch to run now, or (None, seconds to wait). Called with the lock."""
        timeout = self.params.batch_timeout_micros / 1e6
        now = time.monotonic()
        best, best_since, wait = None, None, None
        for queue in self._queues.values():
            head = queue.batches[0]
            if not head:
                continue
            if len(queue.batches) == 1:  # only the open batch: ready when full or timed out
                due = queue.open_since + timeout
                if not (self._closed or queue.open_rows >= self.params.max_batch_size or now >= due):
                    wait = due - now if wait is None else min(wait, due - now)
                    continue
            since = head[0].enqueued  # the oldest ready batch over all queues runs first
            if best is None or since < best_since:
                best, best_since = queue, since
        if best is None:
            return None, wait
        tasks = best.batches.popleft()
        if not best.batches:  # that was the open batch: the queue is empty now; drop it (shapes vary)
            del self._queues[best.key]
        return best, tasks

    def _work(self) -> None:
        while True:
            with self._cond:
                while True:
                    queue, found = self._next_batch()
                    if queue is not None:
                        break
                    if self._closed:
                        return
                    self._cond.wait(found)  # found: seconds until an open batch times out, or None
                if self._queues:  # tasks left: a waiting thread takes over their timeout
                    self._cond.notify()
            tasks = found
            self._process(queue, tasks)

    def _process(self, queue: _Queue, tasks: list) -> None:
        now = time.monotonic()
        live = []
        for task in tasks:
            if task.future.cancelled():
                continue  # its caller is gone
            if task.deadline is not None and now >= task.deadline:
                _settle(task.future, error=ServingError("DEADLINE_EXCEEDED",
                                                        "deadline passed while queued for batching"))
            else:
                live.append(task)
        if not live:
            return
        try:
            deadlines = [t.deadline for t in live]
            timeout_ms = 0 if None in deadlines else max(1, int((max(deadlines) - now) * 1000))
            rows = sum(t.rows for t in live)
            padded = self.params.padded_size(rows)
            if len(live) == 1 and padded == rows:
                merged = live[0].arrays
            else:
                merged = {}
                for key in live[0].arrays:
                    parts = [t.arrays[key] for t in live]
                    if padded > rows:  # copies of the last task's first row (batching_session.cc)
                        parts.append(np.repeat(parts[-1][:1], padded - rows, axis=0))
                    merged[key] = np.concatenate(parts, axis=0)
            outputs = queue.sig.run(merged, queue.keys, timeout_ms)
            for key, value in outputs.items():
                if np.ndim(value) == 0 or np.shape(value)[0] != padded:
                    raise ServingError("FAILED_PRECONDITION",
                                       f"Batched output tensor {key!r}'s 0th dimension does not equal the sum "
                                       "of the 0th dimension sizes of the input tensors")
            with self._cond:
                self.runs += 1
                self.tasks += len(live)
                self.padded_rows += padded - rows
            start = 0
            for task in live:
                _settle(task.future, result={k: v[start:start + task.rows] for k, v in outputs.items()})
                start += task.rows
        except ServingError as e:
            for task in live:
                _settle(task.future, error=e)
        except Exception as e:  # a bug: answer every task, keep the thread alive
            log.exception("batch of %s failed", self.name)
            for task in live:
                _settle(task.future, error=ServingError("INTERNAL", f"internal error: {type(e).__name__}: {e}"))

    def stop(self, timeout: float = 10.0) -> None:
        """Run what is queued, then end the batch threads; later requests run unbatched."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout)


def _settle(future: futures.Future, result=None, error=None) -> None:
    """Answer a task unless its caller cancelled it meanwhile."""
    if future.set_running_or_notify_cancel():
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def _run_now(sig, arrays: dict, keys: tuple, timeout_ms: int) -> futures.Future:
    """An unbatched run, answered through a Future like a batched one."""
    future: futures.Future = futures.Future()
    future.set_running_or_notify_cancel()
    try:
        future.set_result(sig.run(arrays, keys, timeout_ms))
    except BaseException as e:
        future.set_exception(e)
    return future


def _task_rows(arrays: dict) -> int:
    """The request's batch size: the common dim 0 of its inputs (batching_util.cc's rule)."""
    sizes = set()
    for key, array in arrays.items():
        if np.ndim(array) == 0:
            raise ServingError("INVALID_ARGUMENT",
                               f"Batching Run() input tensors must have at least one dimension (input '{key}')")
        sizes.add(np.shape(array)[0])
    if len(sizes) > 1:
        raise ServingError("INVALID_ARGUMENT", "Batching Run() input tensors must have equal 0th-dimension "
                                               f"size (got {sorted(sizes)})")
    return sizes.pop() if sizes else 0


def main(argv=None) -> int:
    path = Path((argv or sys.argv[1:] or ["."])[0])
    params = read_batching_params(path)
    print(params if params is not None else f"{path}: no {BATCHING_PARAMS_FILE}; not batched")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
