"""The one batch driver: validate, skip what is done, pin versions, plan chunks, hand them to an
executor (threads, or Ray's actor pool: genserve.batch.executors) and record what comes back.

    genserve batch run job.jsonl --out out/batch --target 127.0.0.1:8500 --concurrency 2

    python -c "from genserve.batch.driver import JobOptions, run_job; \\
print(run_job('job.jsonl', JobOptions(out='out/batch', target='127.0.0.1:8500')).line())"

Order of work: validate the whole job file (nothing is sent before that), read results.jsonl and skip
what is done, pin each model's version once, group and chunk the rest (genserve.batch.plan), then run
the chunks; each finished chunk's records are appended to results.jsonl as it arrives.

Stopping early loses nothing: on SIGINT or SIGTERM (or when the server stays unreachable past the
client's retries) no new chunk starts and no new request is sent; chunks in flight record every item
whose files they wrote and leave the rest unrecorded; the summary line says
"interrupted: N done, M left; run the same command to finish" and the exit code is 130 (1 for an
unreachable server). A rerun skips every recorded item. A second signal acts as usual (it kills).
"""

from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genserve.batch.backend import STOP_FILE, JobStopped, ModelUnavailable, StopFlag, open_backend
from genserve.batch.executors import make_executor, models_dir_threads
from genserve.batch.job import Item, validate_job
from genserve.batch.plan import make_plan
from genserve.batch.results import Results
from genserve.progress import Progress
from genserve.batch.runners import error_records

INTERRUPTED = 130  # the exit code of a job stopped by SIGINT or SIGTERM (128 + SIGINT, as shells do)


@dataclass(frozen=True)
class JobOptions:
    """How to run a job (the `genserve batch run` options)."""

    out: Path
    target: str | None = None  # a server, or ...
    models_dir: Path | None = None  # ... genserve's server started in process over this folder
    concurrency: int = 2  # chunks in flight at once (threads, or Ray actors)
    max_rows: int | None = None  # rows per request (default: each kind's)
    force: bool = False  # redo items already ok
    timeout: float = 120.0  # per request, seconds
    progress: bool = True
    threads: tuple[int, int] = (0, 0)  # --models-dir Session intra/inter-op threads (0 = TF picks;
    # the intra-op count is resolved on the driver, the same for both engines: executors.models_dir_threads)
    engine: str = "local"  # "local" (threads) or "ray"
    address: str | None = None  # Ray cluster address (engine "ray")
    tls: Any = None  # a genserve.clients.TlsSettings for a TLS --target (it pickles: Ray actors get it)


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
    stopped: str | None = None  # why the job stopped early (None: it ran to the end)
    stop_code: int = 0
    left: int = 0  # items without an ok record when the run ended

    @property
    def exit_code(self) -> int:
        if self.stopped:
            return self.stop_code
        return 1 if self.failed else 0

    def line(self) -> str:
        if self.stopped:
            why = "interrupted" if self.stop_code == INTERRUPTED else f"stopped: {self.stopped}"
            return (f"{why}: {self.items - self.left} done, {self.left} left; "
                    "run the same command to finish")
        pinned = ", ".join(f"{m} v{v}" for m, v in sorted(self.versions.items())) or "none"
        rate = (self.ok + self.failed) / self.seconds if self.seconds > 0 else 0.0
        return (f"{self.items} item(s): {self.ok} ok, {self.failed} failed, {self.skipped} skipped (already ok); "
                f"{self.chunks} chunk(s), {self.requests} request(s), {self.seconds:.2f} s "
                f"({rate:.1f} items/s); models: {pinned}")


def pin_versions(backend, items: list[Item]) -> tuple[dict[str, int], dict[str, str]]:
    """Ask once for each model's version: (model -> version, model -> why it is unavailable).

    Raises:
        JobStopped: the server is unreachable (the backend's StopFlag says so).
    """
    pinned, missing = {}, {}
    for model in sorted({i.model for i in items}):
        try:
            pinned[model] = backend.version(model)
        except ModelUnavailable as e:
            missing[model] = str(e)
    return pinned, missing


@contextmanager
def interrupts(stop: StopFlag):
    """While inside: SIGINT and SIGTERM set `stop` (once; the previous handlers come back at once, so
    a second signal acts as usual). Only the main thread can take signals; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    wanted = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.getsignal(s) for s in wanted}

    def handler(signum, frame):
        stop.set(f"interrupted by {signal.Signals(signum).name}", INTERRUPTED)
        for s, h in previous.items():
            signal.signal(s, h)

    for s in wanted:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class _Recorder:
    """Appends records to results.jsonl and keeps the summary and the progress bar up to date."""

    def __init__(self, results: Results, summary: Summary, progress: Progress):
        self.results, self.summary, self.progress = results, summary, progress

    def __call__(self, records: list[dict]) -> None:
        if records:
            self.results.append(*records)
        for record in records:
            if record["status"] == "ok":
                self.summary.ok += 1
            else:
                self.summary.failed += 1
                if len(self.summary.errors) < 20:
                    self.summary.errors.append((record["id"], record.get("error", "")))
        self.progress.update(len(records), failed=sum(r["status"] != "ok" for r in records))


def run_job(job, opts: JobOptions, backend=None, items: list[Item] | None = None) -> Summary:
    """Run a job file.

    Args:
        job: the job file (JSONL).
        opts: JobOptions; exactly one of opts.target / opts.models_dir unless `backend` is given.
        backend: a ready genserve.batch.backend.Backend (tests pass one to count requests); the
            caller closes it.
        items: already validated items of `job` (skips validating again).

    Returns:
        A Summary; summary.exit_code is 0 when every item is ok, 1 when some failed or the server
        stayed unreachable, 130 when a signal stopped the job.

    Raises:
        genserve.batch.job.JobError: the job file is invalid (nothing was sent).
        genserve.batch.backend.BackendError: --models-dir cannot be served.
        genserve.batch.executors.RayUnavailable: engine "ray" without Ray (or its cluster).
        ValueError: the output folder is unusable.
    """
    started = time.perf_counter()
    items = items if items is not None else validate_job(job)
    results = Results(Path(opts.out))
    todo = [i for i in items if opts.force or not results.is_done(i)]
    summary = Summary(items=len(items), skipped=len(items) - len(todo))
    progress = Progress(len(todo), label=f"batch ({opts.engine})" if opts.engine != "local" else "batch",
                        enabled=opts.progress)
    record = _Recorder(results, summary, progress)
    marker = results.out / STOP_FILE
    marker.unlink(missing_ok=True)
    own = backend is None
    executor = None
    try:
        if not todo:
            return summary
        if own:
            stop = StopFlag(marker if opts.engine == "ray" else None)
            backend = open_backend(opts.target, opts.models_dir, opts.timeout, stop=stop,
                                   threads=models_dir_threads(opts.threads), tls=opts.tls)
        stop = backend.stop
        with interrupts(stop):
            try:
                summary.versions, missing = pin_versions(backend, todo)
            except JobStopped:
                missing = {}
            if not stop.is_set():
                record([r for i in todo if i.model in missing for r in error_records([i], missing[i.model])])
                chunks = make_plan([i for i in todo if i.model not in missing], opts.max_rows,
                                   min_chunks=opts.concurrency)
                summary.chunks = len(chunks)
                executor = make_executor(opts, backend, results.out, summary.versions)
                for records in executor.run(chunks):
                    record(records)
            summary.requests = backend.requests + (executor.requests if executor is not None else 0)
        if stop.reason:
            summary.stopped, summary.stop_code = stop.reason, stop.exit_code
    finally:
        progress.finish()
        results.close()
        marker.unlink(missing_ok=True)
        if executor is not None:
            executor.close()
        if own and backend is not None:
            backend.close()
        summary.left = sum(not results.is_done(i) for i in items)
        summary.seconds = time.perf_counter() - started
    return summary
