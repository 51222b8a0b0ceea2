"""CLI: `genserve batch run` — a JSONL job file of text / decode / grid / gan_grid / stylize items in, files out.

    genserve batch run job.jsonl --out out/batch --target 127.0.0.1:8500
    genserve batch run job.jsonl --out out/batch --models-dir models        # genserve's server, in process
    genserve batch run job.jsonl --out out/batch --dry-run                      # validate only
    genserve batch run job.jsonl --out out/batch --engine ray [--address auto]  # pip install 'genserve[batch]'

Exit codes: 0 every item ok (or already ok), 1 some item failed (see DIR/results.jsonl) or the server
stayed unreachable, 2 the job file is invalid (every bad line is listed, nothing is sent), 130 stopped
by SIGINT/SIGTERM (every finished item is recorded). Rerunning the same command resumes: items whose
record is ok are skipped (`--force` redoes them). With --target nothing imports TensorFlow.
"""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from genserve.cli.common import check_not_input, fail, on_interrupt
from genserve.cli.options import DEFAULT_TARGET
from genserve.cli.remote import current_tls

batch_app = typer.Typer(help="Batch generation jobs (JSONL in, files + results.jsonl out).",
                        no_args_is_help=True)


class Engine(str, Enum):
    local = "local"
    ray = "ray"


def register(app, train_app, export_app, eval_app, plot_app) -> None:
    """Add `genserve batch ...` to the app."""
    app.add_typer(batch_app, name="batch")


@batch_app.command("run")
def run(
    job: Annotated[Path, typer.Argument(help="Job file: one JSON object per line, each with an id and a kind (text, decode, grid, gan_grid, stylize).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: one file per item and results.jsonl.")],
    target: Annotated[Optional[str], typer.Option(help="Server host:port (TF Serving or `genserve serve`); default $GENSERVE_TARGET, else 127.0.0.1:8500.")] = None,
    models_dir: Annotated[Optional[Path], typer.Option(help="Serve this models folder in process (genserve's own server on 127.0.0.1, same versions and checks as `genserve serve`) instead of asking one (imports TensorFlow).")] = None,
    engine: Annotated[Engine, typer.Option(help="local (threads in this process) or ray (Ray Data actor pool; needs genserve\\[batch]).")] = Engine.local,
    address: Annotated[Optional[str], typer.Option(help="Ray cluster address (e.g. auto, or ray://head:10001); default: a local Ray.")] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Requests (chunks) in flight at once; with --engine ray, actors.")] = 2,
    max_rows: Annotated[Optional[int], typer.Option(min=1, help="Rows per request (default per kind: text 512, decode/grid/gan_grid 256, stylize 8).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Redo items whose record is already ok.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only validate the job file and print the plan; no request.")] = False,
    timeout: Annotated[float, typer.Option(help="Deadline per request, seconds.")] = 120.0,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Run a batch job: validate it all, group compatible items into shared requests, write results."""
    from genserve.batch.job import JobError, validate_job
    from genserve.batch.plan import describe, make_plan
    from genserve.batch.results import check_out_dir

    if target is not None and models_dir is not None:
        raise fail("give --target or --models-dir, not both")
    check_not_input(out / "results.jsonl", job, option="--out")  # the records must not land in the job
    try:  # before --dry-run too: a dry run promises that the real run can write there
        check_out_dir(out, create=False)
    except ValueError as e:
        raise fail(str(e)) from None
    try:
        items = validate_job(job)
    except JobError as e:
        for line in e.lines(job):
            typer.echo(line, err=True)
        raise fail(f"{job}: {len(e.problems)} problem(s); nothing was run", code=2) from None
    if dry_run:
        typer.echo(f"{job}: {len(items)} item(s) valid")
        typer.echo(describe(make_plan(items, max_rows, min_chunks=concurrency)))
        return
    if models_dir is None:
        target = target or os.environ.get("GENSERVE_TARGET") or DEFAULT_TARGET
    elif not models_dir.is_dir():
        raise fail(f"--models-dir {models_dir} is not a folder")
    from genserve.batch.backend import BackendError
    from genserve.batch.driver import JobOptions, run_job
    from genserve.batch.executors import RayUnavailable

    opts = JobOptions(out=out, target=target, models_dir=models_dir, concurrency=concurrency,
                      max_rows=max_rows, force=force, timeout=timeout, progress=not quiet,
                      engine=engine.value, address=address, tls=current_tls())
    # a first Ctrl-C stops the job cleanly (its summary line says what is done); a second one ends it here
    with on_interrupt(f"interrupted; every finished item is recorded in {out / 'results.jsonl'}; "
                      "run the same command to finish"):
        try:
            summary = run_job(job, opts, items=items)
        except (BackendError, RayUnavailable, ValueError) as e:
            raise fail(str(e)) from None
    for item_id, message in summary.errors[:5]:
        typer.echo(f"failed: {item_id}: {message}", err=True)
    if summary.failed > 5:
        typer.echo(f"... and {summary.failed - 5} more failed item(s): see {out / 'results.jsonl'}", err=True)
    if summary.stopped:
        typer.echo(summary.line(), err=True)  # one line: what is done, what is left, how to finish
    else:
        typer.echo(summary.line())
        typer.echo(f"results: {out / 'results.jsonl'}")
    sys.stdout.flush()
    if summary.exit_code:
        raise typer.Exit(code=summary.exit_code)
