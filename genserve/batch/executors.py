"""The executors: where the driver's chunks run. Both yield each finished chunk's records as it ends.

    ThreadExecutor   `--engine local`: `--concurrency` chunks at a time on a thread pool, sharing the
                     driver's backend (one gRPC channel)
    RayExecutor      `--engine ray` (pip install 'genserve[batch]'): the chunks go to DIR/.batch-plan.jsonl,
                     are read with `ray.data.read_json`, and `map_batches` hands them one per call to an
                     `ActorPoolStrategy(size=--concurrency)` pool whose actors each open ONE backend for
                     their life (a gRPC client to --target, or genserve's server started in the actor
                     over --models-dir) and write the items' files into DIR (a folder every node mounts)

Stopping: the thread pool takes no new chunk once the job's StopFlag is set. Ray's actors live in other
processes, so the driver's StopFlag also creates DIR/.batch-stop, which every actor checks before each
chunk and each request; the driver keeps reading the pool's output until it ends, so every chunk that
finished is recorded.

Measured traps (Ray 2.60, TF 2.21, 2 cores): an actor pool that claims every logical CPU can hang
with no error (ray-project/ray#44687), so actors ask for a fraction of a CPU (`actor_cpus`);
`concurrency=` on map_batches is deprecated since Ray 2.51: the pool is `compute=ActorPoolStrategy(...)`.
Same bytes from both engines (a stylized PNG differed by up to 3 grey levels): float sums depend on
how many threads split them. (1) With --models-dir, the Session's intra-op thread count (the style
`targets` and `step` outputs differ in the last bits between 1 and 2 threads): the local engine's server
and every actor's run with the SAME count (`models_dir_threads`: the one given, else what TensorFlow
picks on the driver's machine); only the inter-op count, which does not change results, is capped to 1
in actors. (2) The client's L-BFGS-B (scipy over OpenBLAS) in each actor: Ray sets OMP_NUM_THREADS=1 in
its workers, so actors get the driver's OpenBLAS thread count (`blas_threads`) in OPENBLAS_NUM_THREADS.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Iterator

from genserve.batch.backend import STOP_FILE, StopFlag, open_backend
from genserve.batch.job import Item
from genserve.batch.plan import Chunk
from genserve.batch.runners import run_chunk
from genserve.files import atomic_write

PLAN_FILE = ".batch-plan.jsonl"
RAY_VERSION = "2.60.0"  # the version pyproject's `batch` extra pins


class RayUnavailable(RuntimeError):
    """Ray is not installed, or the cluster cannot be reached."""


def models_dir_threads(threads: tuple[int, int] = (0, 0)) -> tuple[int, int]:
    """The (intra-op, inter-op) threads of a --models-dir server, the intra-op count made explicit.

    0 intra-op means what TensorFlow picks (TF_NUM_INTRAOP_THREADS, else the CPUs this process may run
    on: tensorflow/core/common_runtime/process_util.cc, port::MaxParallelism); it is resolved HERE, on
    the driver, so that the local engine and every Ray actor (other processes, maybe other nodes) sum
    in the same order and write the same bytes. Inter-op stays as given (0: TF picks).
    """
    intra, inter = threads
    return (intra if intra > 0 else _thread_count("TF_NUM_INTRAOP_THREADS")), inter


def _thread_count(*variables: str) -> int:
    """The first of these environment variables set to a positive integer, else the CPUs this process
    may run on (the default of both TensorFlow's intra-op pool and OpenBLAS)."""
    for name in variables:
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class ThreadExecutor:
    """Chunks on a thread pool, at most `concurrency` in flight, submitted one by one as others end."""

    def __init__(self, backend, out: Path, max_rows: int | None, concurrency: int):
        self.backend, self.out, self.max_rows = backend, Path(out), max_rows
        self.concurrency = max(1, concurrency)
        self.requests = 0  # counted by the shared backend itself

    def run(self, chunks: list[Chunk]) -> Iterator[list[dict]]:
        pending = iter(chunks)
        running: set = set()
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="batch") as pool:
            def fill() -> None:
                while len(running) < self.concurrency and not self.backend.stop.is_set():
                    chunk = next(pending, None)
                    if chunk is None:
                        return
                    running.add(pool.submit(run_chunk, self.backend, chunk, self.out, self.max_rows))

            fill()
            while running:
                done, _ = wait(running, timeout=1.0, return_when=FIRST_COMPLETED)  # signals run meanwhile
                for future in done:
                    running.discard(future)
                    yield future.result()
                fill()

    def close(self) -> None:
        pass


def _chunk_to_json(chunk: Chunk) -> str:
    return json.dumps({"index": chunk.index, "runner": chunk.runner, "key": list(chunk.key),
                       "rows": chunk.rows,
                       "items": [{"id": i.id, "kind": i.kind, "line": i.line, "params": i.params,
                                  "fingerprint": i.fingerprint} for i in chunk.items]})


def _chunk_from_json(text: str) -> Chunk:
    d = json.loads(text)
    items = tuple(Item(i["id"], i["kind"], i["line"], i["params"], i["fingerprint"]) for i in d["items"])
    return Chunk(d["index"], d["runner"], tuple(d["key"]), items, d["rows"])


class ChunkActor:
    """One actor of Ray's pool: a backend opened once, then one chunk per call."""

    def __init__(self, out: str, target: str | None, models_dir: str | None, versions: dict,
                 timeout: float, threads: tuple, max_rows: int | None, tls=None):
        self.out, self.max_rows = Path(out), max_rows
        self.stop = StopFlag(self.out / STOP_FILE)
        self.backend = open_backend(target, models_dir, timeout, versions=versions, stop=self.stop,
                                    threads=tuple(threads), tls=tls)

    def __call__(self, batch: dict) -> dict:
        records, requests, stopped = [], [], []
        for payload in batch["chunk"]:
            before = self.backend.requests
            records.append(json.dumps(run_chunk(self.backend, _chunk_from_json(str(payload)),
                                                self.out, self.max_rows)))
            requests.append(self.backend.requests - before)
            stopped.append(self.stop.reason if self.stop.exit_code else "")  # set here: unreachable
        return {"records": records, "requests": requests, "stopped": stopped}


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise RayUnavailable(f"--engine ray needs Ray Data: pip install 'genserve[batch]' "
                             f"(ray[data]=={RAY_VERSION}) ({e})") from None
    return ray


def start_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect to (address) or start a local Ray unless one is up; True when this call started it.

    Ray's init installs its own SIGTERM handler in the driver; the caller's handlers are put back.

    Raises:
        RayUnavailable: Ray is missing, cannot start (its start-up has a fixed 30 s wait for the raylet,
            which a loaded machine can miss) or the cluster at `address` does not answer (one line).
    """
    ray = _ray()
    if ray.is_initialized():
        return False
    kwargs = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        ray.init(**kwargs, **({"address": address} if address else {"num_cpus": num_cpus}))
    except Exception as e:  # noqa: BLE001 - Ray's node start-up timeout is a bare Exception; OSError, ...
        hint = ("; on a busy machine start Ray first (`ray start --head`) and pass --address auto"
                if not address and "timed out" in str(e).lower() else "")
        raise RayUnavailable(f"cannot start or reach Ray{f' at {address}' if address else ''}: "
                             f"{str(e).splitlines()[0] if str(e) else type(e).__name__}{hint}") from None
    finally:
        for s, h in handlers.items():
            if h is not None:
                signal.signal(s, h)
    return True


def blas_threads() -> int:
    """The OpenBLAS thread count of this process (numpy's and scipy's wheels): OPENBLAS_NUM_THREADS,
    GOTO_NUM_THREADS or OMP_NUM_THREADS, the first one set, else one per CPU (OpenBLAS's own rule)."""
    return _thread_count("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")


def actor_env() -> dict[str, str]:
    """Environment variables every Ray actor gets (`runtime_env`): this process's OpenBLAS threads."""
    return {"OPENBLAS_NUM_THREADS": str(blas_threads())}


def actor_threads(threads: tuple[int, int] = (0, 0)) -> tuple[int, int]:
    """A Ray actor's --models-dir threads: the local engine's intra-op count, inter-op capped to 1."""
    intra, inter = models_dir_threads(threads)
    return intra, inter or 1


class RayExecutor:
    """The chunks on Ray Data's actor pool (see the module docstring)."""

    def __init__(self, opts, stop: StopFlag, out: Path, versions: dict, actor_cpus: float = 0.5):
        self.opts, self.stop, self.out, self.versions = opts, stop, Path(out), dict(versions)
        self.actor_cpus = actor_cpus
        self.requests = 0
        self.plan_path = self.out / PLAN_FILE
        self._ours = start_ray(opts.address)

    def run(self, chunks: list[Chunk]) -> Iterator[list[dict]]:
        import ray
        from ray.data import ActorPoolStrategy, DataContext

        if not chunks:
            return
        atomic_write(self.plan_path, "".join(json.dumps({"chunk": _chunk_to_json(c)}) + "\n" for c in chunks))
        context = DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        # Ray Data's INFO lines hidden; its warnings too when the CLI is quiet (genserve.cli.quiet).
        logging.getLogger("ray.data").setLevel(os.environ.get("RAY_DATA_LOG_LEVEL", "WARNING").upper())
        opts = self.opts
        models_dir = None if opts.models_dir is None else str(Path(opts.models_dir).resolve())
        dataset = ray.data.read_json(str(self.plan_path), override_num_blocks=max(1, min(len(chunks), 64)))
        dataset = dataset.map_batches(
            ChunkActor, batch_size=1, batch_format="numpy", num_cpus=self.actor_cpus,
            runtime_env={"env_vars": actor_env()},
            # No actor restarts: Ray Data keeps the constructor arguments in the object store, where a
            # restart cannot count on them (Ray logs so in an ERROR line at each actor's creation;
            # github.com/ray-project/ray/issues/53727). A failed job resumes from results.jsonl instead.
            max_restarts=0,
            compute=ActorPoolStrategy(size=max(1, min(opts.concurrency, len(chunks)))),
            fn_constructor_kwargs=dict(out=str(self.out.resolve()), target=opts.target, models_dir=models_dir,
                                       versions=self.versions, timeout=opts.timeout,
                                       threads=actor_threads(opts.threads),
                                       max_rows=opts.max_rows, tls=opts.tls))
        try:
            for row in dataset.iter_rows():
                self.requests += int(row["requests"])
                if str(row["stopped"]):
                    self.stop.set(str(row["stopped"]), 1)
                yield json.loads(str(row["records"]))
        except Exception as e:  # noqa: BLE001 - e.g. workers killed by the same Ctrl-C
            if not self.stop.is_set():
                raise
            logging.getLogger("genserve.batch").debug("Ray stopped: %s", e)

    def close(self) -> None:
        self.plan_path.unlink(missing_ok=True)
        if self._ours:
            import ray

            ray.shutdown()


def make_executor(opts, backend, out: Path, versions: dict):
    """A ThreadExecutor for engine "local", a RayExecutor for "ray"."""
    if opts.engine == "ray":
        return RayExecutor(opts, backend.stop, out, versions)
    return ThreadExecutor(backend, out, opts.max_rows, opts.concurrency)
