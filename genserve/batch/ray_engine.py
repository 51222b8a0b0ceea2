"""The Ray Data engine: the same chunks as the local engine, run by an actor pool (`pip install 'genserve[batch]'`).

    genserve batch run job.jsonl --out out/batch --target lb.example:8500 --engine ray --address auto
    genserve batch run job.jsonl --out /shared/batch --models-dir /shared/models --engine ray --concurrency 8

The driver validates the job (nothing runs on a bad file), skips items already ok in DIR/results.jsonl,
pins each model's version once, and groups the rest into chunks (genserve.batch.plan) exactly as the
local engine does. The chunks are written as JSON lines to DIR/.batch-plan.jsonl and read back with
`ray.data.read_json`; `map_batches` hands them one at a time to an `ActorPoolStrategy` pool whose
actors each hold ONE backend for their whole life: a gRPC client to a server (TF Serving replicas
behind a load balancer, or genserve servers) or the SavedModels loaded once per actor in a graph
Session. Each actor writes its items' files into DIR (so DIR must be on a filesystem every node sees)
and returns the records; the driver appends them to DIR/results.jsonl as they stream in, so resume,
--force and exit codes behave as with the local engine, and both engines give the same files.

Measured traps (Ray 2.60, TF 2.21, 2 cores): an actor pool that claims every logical CPU can hang
with no error (ray-project/ray#44687), so actors ask for a fraction of a CPU (`actor_cpus`), and
in-process TensorFlow inside an actor is capped to one intra-op and one inter-op thread unless
--models-dir threads are given; `concurrency=` on map_batches is deprecated since Ray 2.51: the pool is
`compute=ActorPoolStrategy(size=...)`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from genserve.batch.local import (JobOptions, Summary, pin_versions, record_all, run_chunk, select,
                                  unavailable_records)
from genserve.batch.plan import Chunk, make_plan
from genserve.batch.results import Progress, Results
from genserve.batch.schema import Item, validate_job

PLAN_FILE = ".batch-plan.jsonl"
RAY_VERSION = "2.60.0"  # the version pyproject's `batch` extra pins


class RayUnavailable(RuntimeError):
    """Ray is not installed (or cannot start)."""


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
    """One actor of the pool: a backend made once, then one chunk per call."""

    def __init__(self, out: str, target: str | None, models_dir: str | None, versions: dict,
                 timeout: float, threads: tuple, max_rows: int | None):
        from genserve.batch.backends import make_backend

        self.out, self.max_rows = Path(out), max_rows
        self.backend = make_backend(target, models_dir, timeout, tuple(threads), versions=versions)

    def __call__(self, batch: dict) -> dict:
        records, requests = [], []
        for payload in batch["chunk"]:
            before = self.backend.requests
            records.append(json.dumps(run_chunk(self.backend, _chunk_from_json(str(payload)),
                                                self.out, self.max_rows)))
            requests.append(self.backend.requests - before)
        return {"records": records, "requests": requests}


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise RayUnavailable(f"--engine ray needs Ray Data: pip install 'genserve[batch]' "
                             f"(ray[data]=={RAY_VERSION}) ({e})") from None
    return ray


def start_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect to (address) or start a local Ray unless one is up; True when this call started it."""
    ray = _ray()
    if ray.is_initialized():
        return False
    kwargs = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, **kwargs)
    return True


def run_job_ray(job, opts: JobOptions, items: list[Item] | None = None, actor_cpus: float = 0.5) -> Summary:
    """Run a job file on Ray Data (arguments as genserve.batch.local.run_job).

    Args:
        actor_cpus: logical CPUs each actor reserves (a fraction, so the pool never claims them all).

    Raises:
        RayUnavailable: Ray is not installed.
        genserve.batch.schema.JobError: the job file is invalid.
    """
    from genserve.batch.backends import make_backend

    ray = _ray()
    started = time.perf_counter()
    items = items if items is not None else validate_job(job)
    results = Results(Path(opts.out))
    todo, skipped = select(items, results, opts.force)
    summary = Summary(items=len(items), skipped=skipped)
    progress = Progress(len(todo), label="batch (ray)", enabled=opts.progress)
    if not todo:
        results.close()
        summary.seconds = time.perf_counter() - started
        return summary
    pinner = make_backend(opts.target, opts.models_dir, opts.timeout)  # LocalBackend loads nothing to pin
    try:
        pinned, missing = pin_versions(pinner, todo)
    finally:
        pinner.close()
    summary.versions = pinned
    record_all(results, unavailable_records(todo, missing), summary, progress)
    chunks = make_plan([i for i in todo if i.model not in missing], opts.max_rows, min_chunks=opts.concurrency)
    summary.chunks = len(chunks)
    plan_path = results.out / PLAN_FILE
    from genserve.batch.results import atomic_write

    atomic_write(plan_path, "".join(json.dumps({"chunk": _chunk_to_json(c)}) + "\n" for c in chunks).encode())
    ours = start_ray(opts.address)
    try:
        from ray.data import ActorPoolStrategy, DataContext

        context = DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        threads = opts.threads if any(opts.threads) else (1, 1)
        dataset = ray.data.read_json(str(plan_path), override_num_blocks=max(1, min(len(chunks), 64)))
        dataset = dataset.map_batches(
            ChunkActor, batch_size=1, batch_format="numpy", num_cpus=actor_cpus,
            compute=ActorPoolStrategy(size=max(1, min(opts.concurrency, len(chunks)))),
            fn_constructor_kwargs=dict(out=str(results.out.resolve()), target=opts.target,
                                       models_dir=None if opts.models_dir is None else str(Path(opts.models_dir).resolve()),
                                       versions=pinned, timeout=opts.timeout, threads=threads,
                                       max_rows=opts.max_rows))
        for row in dataset.iter_rows():
            record_all(results, json.loads(str(row["records"])), summary, progress)
            summary.requests += int(row["requests"])
    finally:
        results.close()
        plan_path.unlink(missing_ok=True)
        if ours:
            ray.shutdown()
    summary.seconds = time.perf_counter() - started
    return summary
