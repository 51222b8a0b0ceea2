"""The local engine: a batch job in this process, chunks sent concurrently from a thread pool.

    genserve batch run job.jsonl --out out/batch --target 127.0.0.1:8500 --concurrency 2
    genserve batch run job.jsonl --out out/batch --models-dir out/models     # no server: in process

    python -c "from genserve.batch.local import JobOptions, run_job; \\
print(run_job('job.jsonl', JobOptions(out='out/batch', target='127.0.0.1:8500')))"

Order of work: validate the whole job file (nothing is sent before that), read results.jsonl and skip
what is done, pin each model's version once, group and chunk the rest (genserve.batch.plan), then run
the chunks `concurrency` at a time; each finished chunk's records are appended to results.jsonl at once.
With `--target` nothing here imports TensorFlow (a test checks it).
"""

from __future__ import annotations

import importlib
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from genserve.batch.plan import Chunk, make_plan, max_rows_for
from genserve.batch.results import Progress, Results
from genserve.batch.schema import Item, validate_job


@dataclass(frozen=True)
class JobOptions:
    """How to run a job (the `genserve batch run` options)."""

    out: Path
    target: str | None = None  # a server, or ...
    models_dir: Path | None = None  # ... SavedModels run in process
    concurrency: int = 2  # chunks in flight at once
    max_rows: int | None = None  # rows per request (default: each kind's)
    force: bool = False  # redo items already ok
    timeout: float = 120.0  # per request, seconds
    progress: bool = True
    threads: tuple[int, int] = (0, 0)  # --models-dir Session intra/inter-op threads (0 = TF picks)
    engine: str = "local"
    address: str | None = None  # Ray cluster address (engine "ray")


@dataclass
class Summary:
    """What a run did."""

    items: int = 0
    skipped: int = 0
    ok: int = 0
    failed: int = 0
    chunks: int = 0
    requests: int = 0
    seconds: float = 0.0
    versions: dict = field(default_factory=dict)  # model -> pinned version
    errors: list = field(default_factory=list)  # (id, message) of failed items, first few

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def line(self) -> str:
        pinned = ", ".join(f"{m} v{v}" for m, v in sorted(self.versions.items())) or "none"
        rate = (self.ok + self.failed) / self.seconds if self.seconds > 0 else 0.0
        return (f"{self.items} item(s): {self.ok} ok, {self.failed} failed, {self.skipped} skipped (already ok); "
                f"{self.chunks} chunk(s), {self.requests} request(s), {self.seconds:.2f} s "
                f"({rate:.1f} items/s); models: {pinned}")


def runner(name: str):
    """The runner function named "module:function"."""
    module, _, function = name.partition(":")
    return getattr(importlib.import_module(module), function)


def run_chunk(backend, chunk: Chunk, out: Path, max_rows: int | None) -> list[dict]:
    """Run one chunk: requests, files, and one record per item (never raises for an item's failure)."""
    cap = min(max_rows_for(i, max_rows) for i in chunk.items)
    return runner(chunk.runner)(backend, list(chunk.items), out, cap)


def pin_versions(backend, items: list[Item]) -> tuple[dict[str, int], dict[str, str]]:
    """Ask once for each model's version: (model -> version, model -> why it is unavailable)."""
    from genserve.batch.backends import ModelUnavailable

    pinned, missing = {}, {}
    for model in sorted({i.model for i in items}):
        try:
            pinned[model] = backend.version(model)
        except ModelUnavailable as e:
            missing[model] = str(e)
    return pinned, missing


def select(items: list[Item], results: Results, force: bool) -> tuple[list[Item], int]:
    """The items still to run, and how many are skipped as already ok."""
    todo = [i for i in items if force or not results.is_done(i)]
    return todo, len(items) - len(todo)


def unavailable_records(items: list[Item], missing: dict[str, str]) -> list[dict]:
    """Error records for items whose model has no version to serve them."""
    return [{"id": i.id, "kind": i.kind, "line": i.line, "model": i.model, "version": None,
             "fingerprint": i.fingerprint, "status": "error", "outputs": [], "error": missing[i.model],
             "timings": {"started": round(time.time(), 3), "seconds": 0.0}}
            for i in items if i.model in missing]


def record_all(results: Results, records: list[dict], summary: Summary, progress: Progress) -> None:
    if records:
        results.append(*records)
    for record in records:
        if record["status"] == "ok":
            summary.ok += 1
        else:
            summary.failed += 1
            if len(summary.errors) < 20:
                summary.errors.append((record["id"], record.get("error", "")))
    progress.update(len(records), failed=sum(r["status"] != "ok" for r in records))


def run_job(job, opts: JobOptions, backend=None, items: list[Item] | None = None) -> Summary:
    """Run a job file with the local engine.

    Args:
        job: the job file (JSONL).
        opts: JobOptions; exactly one of opts.target / opts.models_dir unless `backend` is given.
        backend: a ready backend (tests pass a counting one); closed by the caller.
        items: already validated items of `job` (skips validating again).

    Returns:
        A Summary; summary.exit_code is 0 when every item is ok, 1 when some failed.

    Raises:
        genserve.batch.schema.JobError: the job file is invalid (nothing was sent).
        ValueError: the output folder is unusable.
    """
    from genserve.batch.backends import make_backend

    started = time.perf_counter()
    items = items if items is not None else validate_job(job)
    results = Results(Path(opts.out))
    todo, skipped = select(items, results, opts.force)
    summary = Summary(items=len(items), skipped=skipped)
    own = backend is None
    if own and todo:
        backend = make_backend(opts.target, opts.models_dir, opts.timeout, opts.threads)
    progress = Progress(len(todo), enabled=opts.progress)
    try:
        if todo:
            pinned, missing = pin_versions(backend, todo)
            summary.versions = pinned
            record_all(results, unavailable_records(todo, missing), summary, progress)
            chunks = make_plan([i for i in todo if i.model not in missing], opts.max_rows,
                               min_chunks=opts.concurrency)
            summary.chunks = len(chunks)
            with ThreadPoolExecutor(max_workers=max(1, opts.concurrency)) as pool:
                futures = [pool.submit(run_chunk, backend, c, results.out, opts.max_rows) for c in chunks]
                for future in as_completed(futures):
                    record_all(results, future.result(), summary, progress)
            summary.requests = backend.requests
    finally:
        results.close()
        if own and backend is not None:
            backend.close()
    summary.seconds = time.perf_counter() - started
    return summary
