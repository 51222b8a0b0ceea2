"""genserve.progress: a bar on a terminal, plain lines (no ANSI escape, no carriage return) elsewhere.
Pure Python, milliseconds: fake streams stand in for a terminal and a log file."""

from __future__ import annotations

import io

import typer

from genserve import progress as progress_module
from genserve.progress import Progress, TrainingProgress, end_open_line


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_one_plain_line_per_update_with_interval_0():
    log = io.StringIO()
    bar = Progress(3, "stylize", "iterations", stream=log, interval=0)
    for i in range(3):
        bar.update(1, note=f"loss {10 - i}")
    lines = log.getvalue().splitlines()
    assert len(lines) == 3 and lines[0].startswith("stylize [") and "1/3 iterations" in lines[0]
    assert "loss 8" in lines[2] and "3/3 iterations" in lines[2]
    assert "\x1b[" not in log.getvalue() and "\r" not in log.getvalue()


def test_off_a_terminal_lines_are_throttled_but_the_first_and_last_always_come():
    log = io.StringIO()
    bar = Progress(1000, "encode", "images", stream=log)  # 10 s between lines
    for _ in range(1000):
        bar.update(1)
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and "1/1000 images" in lines[0] and "1000/1000 images" in lines[1]


def test_on_a_terminal_the_bar_is_redrawn_in_place_and_ended_once():
    tty = Terminal()
    bar = Progress(2, "batch", "items", stream=tty)
    bar.update(1)
    assert tty.getvalue().startswith("\r") and not tty.getvalue().endswith("\n")
    assert progress_module._open_bar  # a line is open: an error message must start on a new line
    end_open_line()
    assert tty.getvalue().endswith("\n") and not progress_module._open_bar
    bar.update(1)  # the last update ends its line itself
    last = tty.getvalue().rsplit("\r", 1)[1]
    assert "2/2 items" in last and last.endswith("\n")
    assert not progress_module._open_bar


def test_quiet_writes_nothing_but_still_counts():
    log = io.StringIO()
    bar = Progress(5, "encode", "images", stream=log, enabled=False)
    bar.update(3)
    assert log.getvalue() == "" and bar.done == 3


def test_training_progress_knows_where_it_stopped():
    log = io.StringIO()
    run = TrainingProgress(stream=log)
    assert run.epochs_done is None and run.where() == "before the first epoch"
    run.epoch_begin(0, 5, 16)
    run.step_end(1, {"loss": 2.5})
    assert run.where() == "at epoch 1 step 1" and run.epochs_done == 0
    assert log.getvalue().startswith("epoch 1/5 [#.......................] 1/16 steps  loss 2.5000  ETA ")
    run.epoch_end()
    assert run.epochs_done == 0  # the trainer's checkpoint is not written yet
    run.epoch_done(0)
    run.epoch_begin(1, 5, 16)
    run.step_end(7)
    assert run.where() == "at epoch 2 step 7" and run.epochs_done == 1


def test_a_resumed_run_keeps_the_earlier_epochs():
    run = TrainingProgress(enabled=False)
    run.epoch_begin(4, 10, None)  # resumed after epoch 4
    run.step_end(3)
    assert run.epochs_done == 4 and run.where() == "at epoch 5 step 3"


def test_training_bar_on_a_terminal_is_erased_at_epoch_end():
    tty = Terminal()
    run = TrainingProgress(stream=tty)
    run.epoch_begin(0, 1, 4)
    run.step_end(1, {"d_loss": 0.5, "g_loss": 1.25})
    run.epoch_end()  # the trainer's summary line goes where the bar was
    assert "d_loss 0.5000  g_loss 1.2500" in tty.getvalue()
    assert tty.getvalue().endswith("\r\x1b[K") and not progress_module._open_bar


def test_the_interrupt_line_of_a_training_command(tmp_path):
    """genserve.cli.common.training_interrupted on a real typer command: the run's own options are
    repeated (defaults left out), --resume added once, and a run with no finished epoch says so."""
    from typer.testing import CliRunner

    from genserve.cli.common import on_interrupt, training_interrupted

    app = typer.Typer()

    @app.command()
    def train(ctx: typer.Context, workdir: str = "w", epochs: int = 5, units: int = 8, quiet: bool = False,
              resume: bool = typer.Option(False, "--resume"), stop_after: int = 0) -> None:
        run = TrainingProgress(enabled=False)
        with on_interrupt(training_interrupted(ctx, workdir, run, resume)):
            for epoch in range(epochs):
                run.epoch_begin(epoch, epochs, 10)
                run.step_end(3)
                if epoch == stop_after:
                    raise KeyboardInterrupt
                run.epoch_done(epoch)

    app.command("other")(lambda: None)  # a group, so the command path is "prog train"
    result = CliRunner().invoke(app, ["train", "--workdir", "runs/a b", "--units", "4", "--stop-after", "2"],
                                prog_name="genserve")
    assert result.exit_code == 130
    assert result.stderr == ("interrupted at epoch 3 step 3; checkpoint of epoch 2 kept in runs/a b; continue "
                             "with: genserve train --workdir 'runs/a b' --units 4 --stop-after 2 --resume\n")
    result = CliRunner().invoke(app, ["train", "--quiet"], prog_name="genserve")
    assert result.exit_code == 130
    assert result.stderr == ("interrupted at epoch 1 step 3; no epoch finished, nothing to resume; start again "
                             "with: genserve train --quiet\n")


def test_a_checkpoint_written_just_before_the_interrupt_counts(tmp_path):
    """Ctrl-C between the trainer's state.json write and the progress's epoch_done: state.json (written
    by this run) names the current epoch, so that one is kept; an older state.json is not believed."""
    import os

    from genserve.cli.common import _checkpointed

    run = TrainingProgress(enabled=False)
    run.epoch_begin(0, 9, 4)
    run.epoch_done(0)
    run.epoch_begin(1, 9, 4)
    run.step_end(4)
    state = tmp_path / "state.json"
    assert _checkpointed(tmp_path, run) == 1  # no state.json
    state.write_text('{"epoch": 2}')
    assert _checkpointed(tmp_path, run) == 2
    os.utime(state, (1, 1))  # an earlier run's file
    assert _checkpointed(tmp_path, run) == 1
