"""Text family hardening (issue 12): the client pins the model version for a whole session, client-side
length cap, atomic and verified checkpoints, output paths checked before any request.

    .venv/bin/python -m pytest -q tests/test_text_hardening.py
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from genserve.training.text import TextConfig

TEXT = "o romeo, romeo, wherefore art thou romeo? deny thy father and refuse thy name.\n" * 30
TINY = dataclasses.replace(TextConfig(), maxlen=10, step=3, units=16, batch_size=32, epochs=1)
SEED = "o romeo, romeo"
NOWHERE = "127.0.0.1:9"  # discard port: nothing answers; commands must fail before connecting

tf = pytest.importorskip("tensorflow")


def _run(args):
    from genserve.cli import app

    return CliRunner().invoke(app, args)


def _one_line_error(result, *needles):
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.stderr, result.stderr


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    from genserve.training.text import train

    work = tmp_path_factory.mktemp("text-work")
    train(TINY, work, verbose=0, log=lambda line: None, text=TEXT)
    return work


@pytest.fixture(scope="module")
def staged(tmp_path_factory, workdir) -> tuple[Path, Path]:
    """Two exports to copy into servers' folders: (models dir holding text/1 [units 16],
    a version folder of another model [units 8] to drop in as text/2)."""
    from genserve.export.text import export_text
    from genserve.training.text import train

    first = tmp_path_factory.mktemp("stage1")
    export_text(workdir, first)
    other = tmp_path_factory.mktemp("other-work")
    train(dataclasses.replace(TINY, units=8, seed=7), other, verbose=0, log=lambda line: None, text=TEXT)
    second = export_text(other, tmp_path_factory.mktemp("stage2"), version=2)
    return first, second


def _drop_in(version_dir: Path, models: Path) -> None:
    """Copy a version folder into models/text/ as a server sees a finished export: rename into place."""
    tmp = models / "text" / f".incoming-{version_dir.name}"
    shutil.copytree(version_dir, tmp)
    os.replace(tmp, models / "text" / version_dir.name)


def _wait(client, predicate, seconds=90.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate({s.version: s.state for s in client.status("text")}):
            return
        time.sleep(0.1)
    raise AssertionError(f"server state never matched: {client.status('text')}")


def test_session_keeps_its_pinned_version_while_a_new_one_loads(tmp_path, staged):
    """Policy all: version 2 (another model, another state size) appears mid-generation; the session
    stays on version 1 and gives exactly what an explicit version-1 session gives."""
    from genserve.clients import Client
    from genserve.clients.text import TextModel, generate
    from genserve.repository import set_version_policy
    from genserve.serving.server import serve

    models = tmp_path / "models"
    shutil.copytree(staged[0], models)
    set_version_policy(models, "text", ("all",))
    with serve(models, poll_seconds=0.2) as target, Client(target, timeout=30) as client:
        text_model = TextModel(client)

        def on_step(i, ids):
            if i == 3:
                _drop_in(staged[1], models)
                _wait(client, lambda states: states.get(2) == "AVAILABLE")

        result = generate(text_model, SEED, length=12, temperatures=[0.7, 1.0], seed=5, on_step=on_step)
        assert text_model.version == 1 and text_model.pinned
        fixed = generate(TextModel(client, version=1), SEED, length=12, temperatures=[0.7, 1.0], seed=5)
        assert result["samples"] == fixed["samples"]
        latest = TextModel(client)
        assert latest.info.units == 8 and latest.version == 2  # a new session takes the new version


def test_pinned_version_that_vanishes_is_one_clear_error(tmp_path, staged):
    """TF Serving's default policy serves only the latest: version 1 is unloaded once 2 is in. The
    session ends with NOT_FOUND naming version 1 (not an IndexError, not a mix of two models)."""
    from genserve.clients import Client, GenserveError
    from genserve.clients.text import TextModel, generate
    from genserve.serving.server import serve

    models = tmp_path / "models"
    shutil.copytree(staged[0], models)
    streamed = []
    with serve(models, poll_seconds=0.2) as target, Client(target, timeout=30) as client:
        text_model = TextModel(client)

        def on_step(i, ids):
            streamed.append(int(ids[0]))
            if i == 3:
                _drop_in(staged[1], models)
                _wait(client, lambda states: states.get(2) == "AVAILABLE" and states.get(1) != "AVAILABLE")

        with pytest.raises(GenserveError) as err:
            generate(text_model, SEED, length=12, temperatures=[1.0], seed=5, on_step=on_step)
    assert err.value.code.name == "NOT_FOUND"
    assert "version 1 of model 'text'" in err.value.details and "no longer served" in err.value.details
    assert len(streamed) == 4  # what was produced before the swap was delivered


def test_generate_length_is_capped_client_side_before_any_request(tmp_path):
    t0 = time.monotonic()
    result = _run(["generate", "--target", NOWHERE, "--length", "10000000"])
    _one_line_error(result, "--length", "20,000")
    assert time.monotonic() - t0 < 5  # no connection attempts, no retries
    from genserve.clients.text import check_length

    with pytest.raises(ValueError, match="from 1 to 20,000"):
        check_length(20_001)
    assert check_length(20_000) == 20_000


def test_output_paths_are_checked_before_any_request(tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    for args, needle in [
        (["generate", "--json", str(tmp_path)], "is a directory"),
        (["generate", "--json", str(a_file / "out.json")], "is a file, not a folder"),
        (["plot", "temperatures", "--out", str(tmp_path)], "is a directory"),
    ]:
        result = _run(args[:1] + ["--target", NOWHERE] + args[1:] if args[0] == "generate" else args)
        _one_line_error(result, needle)
        assert "UNAVAILABLE" not in result.stderr
    result = _run(["train", "text", "--workdir", str(a_file), "--corpus", str(a_file)])
    _one_line_error(result, "--workdir", "is a file, not a folder")
    result = _run(["export", "text", "--workdir", str(a_file)])
    _one_line_error(result, "--workdir", "is a file, not a folder")
    from genserve.training.text import train

    with pytest.raises(ValueError, match="is a file, not a folder"):
        train(TINY, a_file, verbose=0, text=TEXT)


def test_checkpoints_are_written_atomically(workdir):
    names = sorted(p.name for p in workdir.iterdir())
    assert names == ["best.keras", "config.json", "history.csv", "last.keras", "state.json", "vocabulary.json"]
    state = json.loads((workdir / "state.json").read_text())
    assert state["epoch"] == 1 and state["epochs_since_best"] == 0


def test_truncated_last_checkpoint_breaks_resume_with_one_clear_line(tmp_path, workdir):
    from genserve.training.text import CheckpointError, train

    work = tmp_path / "work"
    shutil.copytree(workdir, work)
    data = (work / "last.keras").read_bytes()
    (work / "last.keras").write_bytes(data[: len(data) // 2])  # a SIGKILL mid-write, before the fix
    with pytest.raises(CheckpointError, match=r"checkpoint last.keras .* is unreadable \(truncated\?\); "
                                               r"delete it .* or train without --resume"):
        train(dataclasses.replace(TINY, epochs=2), work, resume=True, verbose=0, text=TEXT)
    result = _run(["train", "text", "--resume", "--epochs", "2", "--workdir", str(work), "--quiet"])
    _one_line_error(result, "last.keras", "unreadable", "without --resume")
    (work / "state.json").write_text('{"epoch": 1, "best_')  # a half-written state file
    (work / "last.keras").write_bytes(data)
    with pytest.raises(CheckpointError, match="state.json .* is unreadable"):
        train(dataclasses.replace(TINY, epochs=2), work, resume=True, verbose=0, text=TEXT)


def test_corrupt_best_checkpoint_breaks_export_with_one_clear_line(tmp_path, workdir):
    from genserve.export.text import export_text
    from genserve.training.text import CheckpointError

    work = tmp_path / "work"
    shutil.copytree(workdir, work)
    data = bytearray((work / "best.keras").read_bytes())
    data[len(data) // 3: len(data) // 3 + 64] = b"\0" * 64  # bytes flipped inside a member: CRC mismatch
    (work / "best.keras").write_bytes(bytes(data))
    result = _run(["export", "text", "--workdir", str(work), "--models-dir", str(tmp_path / "models")])
    _one_line_error(result, "best.keras", "unreadable", "retrain")
    assert not (tmp_path / "models" / "text").exists()
    (work / "best.keras").write_bytes(bytes(data[:100]))
    with pytest.raises(CheckpointError, match="best.keras"):
        export_text(work, tmp_path / "models")
