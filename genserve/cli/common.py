"""The checks every `genserve` command runs BEFORE its work, each ending the command with one
`error: ...` line (exit 1), and `fail`, which prints that line.

    check_output_path(path, suffixes=(".png",), option="--out", named=..., force=...)
                                                                  file to write: not a directory,
                                                                  parent created, writable; an existing
                                                                  file only if named or --force
    check_not_input(output, *inputs)                              an output is none of the inputs
    named(ctx, "out")                                             the user gave that option
    with on_interrupt(lambda: "interrupted; kept ..."):           Ctrl-C: one line, exit 130
    training_interrupted(ctx, workdir, progress, resume)          that line for `genserve train ...`
    check_directory(path, option="--models-dir")                  a folder (or nothing yet), not a file
    check_number(value, option, minimum=0.0)                      finite, optionally bounded
    check_export_destination(models_dir, name)                    before an export's work
    check_trained(workdir, "vae")                                 a trained model is there
    check_fresh_workdir(workdir, "vae", resume=, named=, force=)  a new run replaces one only if asked
    report_export(lambda: export(...), *errors)                   an export's errors as one line

The rest of the command line's shared parts: genserve.cli.options (every shared option and default),
genserve.cli.remote (open a client with the --tls options, its errors as one line),
genserve.cli.quiet (TensorFlow's start-up noise hidden). No TensorFlow, no import of the app.

    python -c "from genserve.cli.common import check_number; print(check_number(0.5, '--step', 0.0))"
"""

from __future__ import annotations

import math
import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

import typer


def fail(message: str, code: int = 1) -> "typer.Exit":
    """Print a one-line error to stderr and return the Exit to raise: `raise fail("...")`."""
    from genserve.progress import end_open_line

    end_open_line()  # a terminal progress bar's line, cut short
    typer.echo(f"error: {' '.join(str(message).split())}", err=True)
    return typer.Exit(code=code)


def named(ctx: "typer.Context", parameter: str) -> bool:
    """True when the user gave `parameter` (a command function's argument name) on the command line or
    through its environment variable, False when it holds its default."""
    source = ctx.get_parameter_source(parameter)  # typer vendors click: compare by name
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def check_output_path(path: Path, suffixes: Iterable[str] = (), option: str = "--out", *,
                      named: bool = True, force: bool = False) -> Path:
    """Validate a file the command will write, before any work: not a directory, an allowed suffix,
    a parent folder that exists (created here when missing) and accepts a new file. An existing file
    (an earlier run's result) is replaced only when the user named it (`named`: `-o FILE` given, not
    the default) or passed --force (`force`), the convention of every command (`deploy --force` too).

    Args:
        suffixes: allowed lower-case suffixes such as (".png",); empty = any.
        option: the option's name, for the message.
        named: the path was given by the user (False: it is the option's default).
        force: --force was given.
    Returns:
        `path`.
    Raises:
        typer.Exit: after printing one `error:` line.
    """
    path = Path(path)
    allowed = tuple(s.lower() for s in suffixes)
    if path.is_dir():
        raise fail(f"{option} {path} is a directory; give a file name"
                   + (f" ending in {allowed[0]}" if allowed else ""))
    if allowed and path.suffix.lower() not in allowed:
        raise fail(f"{option} {path}: use a file name ending in {' or '.join(allowed)}")
    parent = path.parent
    for ancestor in (parent, *parent.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                raise fail(f"{option} {path}: {ancestor} is a file, not a folder")
            break
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise fail(f"{option} {path}: cannot create folder {parent} ({e.strerror or e})") from None
    probe = parent / f".{path.name}.probe-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise fail(f"{option} {path}: cannot write into {parent} ({e.strerror or e})") from None
    if path.exists() and not (named or force):
        raise fail(f"{path} exists (from an earlier run?); pass {option} {path} to replace it, "
                   "or --force, or choose another file")
    if path.exists() and not os.access(path, os.W_OK):
        raise fail(f"{option} {path}: the existing file is not writable")
    return path


def check_directory(path: Path, option: str = "--models-dir") -> Path:
    """A folder the command reads or writes: fine if missing (callers that need it say so), an error
    if it is a file. Returns `path`; raises typer.Exit after one `error:` line."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise fail(f"{option} {path} is a file, not a folder")
    for ancestor in path.parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise fail(f"{option} {path}: {ancestor} is a file, not a folder")
            break
    return path


def check_number(value: float, option: str, minimum: float | None = None,
                 strictly_above: bool = False) -> float:
    """A finite number, optionally >= (or >, with strictly_above) `minimum`. Returns it; raises
    typer.Exit after one `error:` line (NaN and Inf are always refused)."""
    if not math.isfinite(value):
        raise fail(f"{option} must be a finite number, got {value}")
    if minimum is not None and (value <= minimum if strictly_above else value < minimum):
        raise fail(f"{option} must be {'>' if strictly_above else '>='} {minimum:g}, got {value:g}")
    return value


def check_export_destination(models_dir: Path, name: str) -> None:
    """Before an export's work: `--models-dir` is a folder (or nothing yet) with a readable
    models.config, and `--name` fits the layout. One-line error (exit 1) otherwise."""
    check_directory(models_dir, "--models-dir")
    from genserve.export.writer import ExportError, check_model_name, check_models_dir

    try:
        check_model_name(name)
        check_models_dir(models_dir)
    except ExportError as e:
        raise fail(str(e)) from None


def check_not_input(output: Path, *inputs: Path, option: str = "--output") -> Path:
    """The file a command writes is none of the files it reads (a typo must never overwrite the user's
    photo). Returns `output`; raises typer.Exit after one `error:` line."""
    for source in inputs:
        same = Path(output).resolve() == Path(source).resolve()
        try:  # a hard link, or another spelling the resolver cannot see through
            same = same or os.path.samefile(output, source)
        except OSError:  # one of them does not exist (yet): not the same file
            pass
        if same:
            raise fail(f"{option} {output} is also an input of this command; write the result elsewhere")
    return output


def check_fresh_workdir(workdir: Path, family: str, *, resume: bool, named: bool, force: bool) -> None:
    """A fresh `genserve train FAMILY` run replaces the model trained in its workdir: the same rule as
    an output file, so only when the user named --workdir or passed --force (--resume continues it).
    Raises typer.Exit after one `error:` line otherwise."""
    if resume and not (Path(workdir) / "state.json").is_file():  # checked here, before TensorFlow loads
        raise fail(f"nothing to resume in {workdir} (no state.json: no epoch finished there); "
                   f"start it without --resume")
    if resume or named or force or not (Path(workdir) / "state.json").is_file():
        return
    raise fail(f"{workdir} holds a trained {family} model; continue it with --resume, or start over "
               f"with --workdir {workdir} or --force")


def check_trained(workdir: Path, family: str, marker: str = "config.json") -> Path:
    """`--workdir` holds a trained `family` model (its `marker` file); else one `error:` line that says
    how to train it. Returns `workdir`."""
    check_directory(workdir, "--workdir")
    if not (Path(workdir) / marker).is_file():
        raise fail(f"{workdir}/{marker} not found: train first with `genserve train {family} --workdir {workdir}`")
    return workdir


def report_export(export: Callable[[], Path], *errors: type[BaseException], note: str = "") -> Path:
    """Run an export (a call with no arguments that returns the version folder written), print `note`
    (if any) and `exported PATH`, and return the path; ExportError, ValueError, FileNotFoundError and
    `errors` end the command with one `error:` line."""
    from genserve.export.writer import ExportError

    try:
        with on_interrupt("interrupted; nothing exported (a version folder appears only once complete)"):
            path = export()
    except (ExportError, ValueError, FileNotFoundError, *errors) as e:
        raise fail(str(e)) from None
    if note:
        typer.echo(note)
    typer.echo(f"exported {path}")
    return path


@contextmanager
def on_interrupt(line: Callable[[], str] | str = "interrupted; nothing written", sigterm: bool = False) -> Iterator[None]:
    """Ctrl-C inside: one line on stderr, `line` (or what `line()` returns when it happens): where the
    work stopped, what was kept and the command to continue; then exit 130 (128 + SIGINT, as shells
    do), no traceback. A terminal progress bar's line is ended first.

    With `sigterm` (the training commands: `kill`, a scheduler or a container stop end long runs), SIGTERM
    does the same and exits 143 (128 + SIGTERM). Background jobs of a non-interactive shell ignore SIGINT,
    so SIGTERM is how such a run gets stopped.
    """
    received: list[int] = []

    def as_interrupt(signum, _frame):
        received.append(signum)
        raise KeyboardInterrupt

    previous = None
    if sigterm and threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, as_interrupt)
    try:
        yield
    except KeyboardInterrupt:
        from genserve.progress import end_open_line

        end_open_line()
        typer.echo(line() if callable(line) else line, err=True)
        raise typer.Exit(code=128 + signal.SIGTERM if received else 130) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def command_line(ctx: "typer.Context", *extra: str) -> str:
    """The running command as the user could type it again: `genserve <subcommand>` and every option
    and argument given explicitly (defaults left out), then `extra` flags not already there."""
    import shlex

    words = ctx.command_path.split()[len(ctx.find_root().info_name.split()):]  # "python -m genserve"
    for param in ctx.command.params:
        if not named(ctx, param.name):
            continue
        value = ctx.params.get(param.name)
        values = value if isinstance(value, (list, tuple)) else [value]
        for item in values:
            item = getattr(item, "value", item)  # an Enum choice
            if not param.opts or not param.opts[0].startswith("-"):  # an argument
                words.append(str(item))
            elif getattr(param, "is_flag", False):
                flags = param.opts if item else param.secondary_opts
                words.extend(flags[:1])
            else:
                words.extend((param.opts[0], str(item)))
    words.extend(flag for flag in extra if flag not in words)
    return shlex.join(["genserve", *words])


def _checkpointed(workdir: Path, progress) -> int | None:
    """The last epoch whose checkpoint the workdir holds: the progress's count, or the current epoch
    when its state.json (written last by every trainer) already names it: a Ctrl-C that lands after
    the trainer's checkpoint but before the progress heard of it."""
    import json
    import time

    done = progress.epochs_done
    state = Path(workdir) / "state.json"
    try:
        if done is not None and done < progress.epoch and state.stat().st_mtime >= time.time() - (
                time.perf_counter() - progress.created):  # written by this run, not an earlier one
            if json.loads(state.read_text(encoding="utf-8")).get("epoch") == progress.epoch:
                return progress.epoch
    except (OSError, ValueError, AttributeError):
        pass
    return done


def training_interrupted(ctx: "typer.Context", workdir: Path, progress, resume: bool) -> Callable[[], str]:
    """The Ctrl-C line of a `genserve train ...` command: where the run stopped (a
    genserve.progress.TrainingProgress), which checkpoint the workdir keeps, the command to continue."""
    def line() -> str:
        done = _checkpointed(workdir, progress)
        if done is None and resume:
            return (f"interrupted before the first epoch; the checkpoint in {workdir} is unchanged; "
                    f"continue with: {command_line(ctx, '--resume')}")
        if not done:
            return (f"interrupted {progress.where()}; no epoch finished, nothing to resume; start again "
                    f"with: {command_line(ctx)}")
        return (f"interrupted {progress.where()}; checkpoint of epoch {done} kept in {workdir}; "
                f"continue with: {command_line(ctx, '--resume')}")

    return line
