"""Issue 17: Ctrl-C anywhere prints one line saying where the work stopped, what was kept and the
command to continue, and exits 130; progress written to a pipe is plain lines (no ANSI escape, no
carriage return). Real `genserve` subprocesses get a real SIGINT once a line on their output shows
they are at work (no sleeps)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading

import pytest

from conftest import genserve_as_at_a_terminal

pytest.importorskip("tensorflow")


def interrupt(args, ready, cwd, timeout: float = 180.0, signum=signal.SIGINT) -> tuple[str, int]:
    """Run `genserve ARGS` (stdout and stderr into one pipe), send SIGINT (or `signum`) after the first
    line for which `ready(line)` holds, and return (everything it wrote, exit code)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen(genserve_as_at_a_terminal(*args), cwd=cwd, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # bytes: a \r stays visible
    watchdog = threading.Timer(timeout, process.kill)  # a hung child fails the test, never the suite
    watchdog.start()
    try:
        seen = []
        for raw in process.stdout:
            line = raw.decode("utf-8", "replace")
            seen.append(line)
            if ready(line):
                process.send_signal(signum)
                break
        else:
            pytest.fail("the command ended before it was interrupted:\n" + "".join(seen))
        seen.append(process.stdout.read().decode("utf-8", "replace"))
        return "".join(seen), process.wait()
    finally:
        watchdog.cancel()


def assert_plain(output: str) -> None:
    assert "\x1b[" not in output and "\r" not in output, repr(output[-600:])


def last_line(output: str) -> str:
    lines = output.strip("\n").split("\n")
    return lines[-1]


def test_ctrl_c_during_train_text_names_the_checkpoint_and_the_resume_command(tmp_path, cli):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("to be, or not to be, that is the question. " * 60)
    work = tmp_path / "work"
    args = ["train", "text", "--workdir", work, "--corpus", corpus, "--epochs", "1000", "--maxlen", "10",
            "--units", "8", "--batch-size", "64"]
    output, code = interrupt(args, lambda line: line.startswith("epoch 1/1000:"), tmp_path)
    assert code == 130, output
    assert_plain(output)  # Keras's ANSI bar no longer lands in logs
    assert re.search(r"^epoch 1/1000 \[[#.]+\] \d+/\d+ steps  loss \d", output, re.M), output  # a progress line
    match = re.fullmatch(rf"interrupted at epoch (\d+) step (\d+); checkpoint of epoch (\d+) kept in {work}; "
                         rf"continue with: (genserve train text .* --resume)", last_line(output))
    assert match, output
    kept = int(match.group(3))  # the epoch it stopped in, or the one before when its checkpoint is not there
    assert kept >= 1 and int(match.group(1)) in (kept, kept + 1)
    assert json.loads((work / "state.json").read_text())["epoch"] == kept
    assert (work / "last.keras").is_file() and (work / "best.keras").is_file()
    command = match.group(4).split()[1:]
    assert command[command.index("--epochs") + 1] == "1000" and "--units" in command
    # the printed command continues the run (one more epoch here)
    command[command.index("--epochs") + 1] = str(kept + 1)
    result = cli(*command, "--quiet")
    assert result.exit_code == 0, result.output
    assert f"epoch {kept + 1}/{kept + 1}:" in result.stdout
    assert json.loads((work / "state.json").read_text())["epoch"] == kept + 1


def test_sigterm_during_train_gan_says_the_same_and_exits_143(tmp_path):
    """`kill` (or a scheduler's stop) of a training run: the Ctrl-C line, exit 143 (128 + SIGTERM), the
    last finished epoch kept. A background job of a non-interactive shell ignores SIGINT, so SIGTERM is
    how such a run is stopped; it used to end the process without a word."""
    work = tmp_path / "work"
    args = ["train", "gan", "--workdir", work, "--dataset", "synthetic", "--epochs", "1000", "--batch-size", "32"]
    output, code = interrupt(args, lambda line: line.startswith("epoch 2/1000"), tmp_path, signum=signal.SIGTERM)
    assert code == 143, output
    match = re.fullmatch(rf"interrupted at epoch (\d+) step (\d+); checkpoint of epoch (\d+) kept in {work}; "
                         rf"continue with: genserve train gan .* --resume", last_line(output))
    assert match, output
    assert json.loads((work / "state.json").read_text())["epoch"] == int(match.group(3)) >= 1


def test_ctrl_c_during_stylize_names_the_images_kept(tmp_path, cli_export, serve_dir):
    from PIL import Image

    from conftest import ramp_image

    target = serve_dir(cli_export("style", "--backbone", "random-small"))
    content, style = tmp_path / "content.png", tmp_path / "style.png"
    Image.fromarray(ramp_image(32, 40)).save(content)
    Image.fromarray(ramp_image(32, 40, (1, 4, 2))).save(style)
    out = tmp_path / "out" / "cat.png"
    args = ["stylize", content, style, "-o", out, "--target", target, "--height", "32", "--iterations", "10000",
            "--evals-per-iteration", "2"]
    output, code = interrupt(args, lambda line: line.startswith("stylize ["), tmp_path, timeout=60)
    assert code == 130, output
    assert_plain(output)
    match = re.fullmatch(rf"interrupted after (\d+) of 10000 iterations; kept {out.parent}/cat_iter01.png"
                         rf"( \.\. {out.parent}/cat_iter(\d+).png)?; {out} not written", last_line(output))
    assert match, output
    done = int(match.group(1))
    assert done >= 1 and (out.parent / f"cat_iter{done:02d}.png").is_file() and not out.exists()
