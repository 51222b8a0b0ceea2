"""Issue 17: an output from an earlier run is replaced only when the user named it (-o) or passed
--force; no output is one of the command's inputs; a fresh `train` never silently starts over in a
default workdir that holds a trained model. Every refusal is one line, exit 1, before any request
(the --target below has no server: a refusal that came after a request would say so)."""

from __future__ import annotations

from pathlib import Path

import pytest

NO_SERVER = ["--target", "127.0.0.1:1", "--timeout", "1"]
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "images"

DEFAULT_OUTPUTS = [
    (["grid", *NO_SERVER], "out/vae_grid.png"),
    (["encode", "--dataset", "synthetic", *NO_SERVER], "out/vae_scatter.png"),
    (["gan-grid", *NO_SERVER], "out/gan_grid.png"),
    (["gan-interpolate", *NO_SERVER], "out/gan_strip.png"),
    (["plot", "temperatures"], "out/temperatures.png"),
]


@pytest.mark.parametrize("args, default", DEFAULT_OUTPUTS, ids=[Path(d).stem for _, d in DEFAULT_OUTPUTS])
def test_an_earlier_runs_default_output_is_not_overwritten(cli, tmp_path, monkeypatch, args, default):
    monkeypatch.chdir(tmp_path)
    earlier = tmp_path / default
    earlier.parent.mkdir()
    earlier.write_bytes(b"an earlier run's picture")
    result = cli(*args)
    assert result.exit_code == 1, result.output
    assert result.stderr == (f"error: {default} exists (from an earlier run?); pass --out {default} to "
                             "replace it, or --force, or choose another file\n")
    assert earlier.read_bytes() == b"an earlier run's picture"


@pytest.mark.parametrize("how", [["--force"], ["--out", "out/temperatures.png"]])
def test_force_or_naming_the_file_replaces_it(cli, tmp_path, monkeypatch, how):
    monkeypatch.chdir(tmp_path)
    earlier = tmp_path / "out" / "temperatures.png"
    earlier.parent.mkdir()
    earlier.write_bytes(b"old")
    result = cli("plot", "temperatures", *how)
    assert result.exit_code == 0, result.output
    assert earlier.read_bytes().startswith(b"\x89PNG")


def test_force_lets_a_default_output_past_the_check(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "gan_grid.png").write_bytes(b"old")
    result = cli("gan-grid", "--force", *NO_SERVER)  # gets as far as the (absent) server
    assert result.exit_code == 1 and "exists" not in result.stderr and "127.0.0.1:1" in result.stderr


@pytest.mark.parametrize("content_name", ["cat_side_by_side.png", "cat_iter02.png", "cat.png"])
def test_stylize_never_writes_over_an_input(cli, tmp_path, content_name):
    content = tmp_path / content_name
    content.write_bytes((EXAMPLES / "chelsea-cat.jpg").read_bytes())
    before = content.read_bytes()
    result = cli("stylize", content, EXAMPLES / "hokusai-great-wave.jpg", "-o", tmp_path / "cat.png",
                 "--iterations", "3", *NO_SERVER)
    assert result.exit_code == 1, result.output
    assert "is also an input of this command" in result.stderr and len(result.stderr.splitlines()) == 1
    assert content.read_bytes() == before


def test_stylize_intermediate_names_beyond_the_iterations_are_no_conflict(cli, tmp_path):
    content = tmp_path / "cat_iter09.png"  # --iterations 3 writes cat_iter01..03 only
    content.write_bytes((EXAMPLES / "chelsea-cat.jpg").read_bytes())
    result = cli("stylize", content, EXAMPLES / "hokusai-great-wave.jpg", "-o", tmp_path / "cat.png",
                 "--iterations", "3", "--height", "32", *NO_SERVER)
    assert "also an input" not in result.stderr and "127.0.0.1:1" in result.stderr


def test_dream_output_may_not_be_its_input_even_through_a_hard_link(cli, tmp_path):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes((EXAMPLES / "chelsea-cat.jpg").read_bytes())
    (tmp_path / "link.jpg").hardlink_to(photo)
    result = cli("dream", photo, "-o", tmp_path / "link.jpg", *NO_SERVER)
    assert result.exit_code == 1 and "is also an input" in result.stderr


def test_batch_records_never_land_in_the_job_file(cli, tmp_path):
    job = tmp_path / "results.jsonl"
    job.write_text('{"id": "a", "kind": "text", "seed": "to be", "length": 3}\n')
    result = cli("batch", "run", job, "--out", tmp_path, *NO_SERVER[:2])
    assert result.exit_code == 1 and "is also an input" in result.stderr
    assert job.read_text() == '{"id": "a", "kind": "text", "seed": "to be", "length": 3}\n'


@pytest.mark.parametrize("family", ["vae", "gan", "text"])
def test_a_fresh_train_does_not_wipe_the_default_workdirs_model(cli, tmp_path, monkeypatch, family):
    monkeypatch.chdir(tmp_path)
    workdir = tmp_path / "work" / family
    workdir.mkdir(parents=True)
    (workdir / "state.json").write_text('{"epoch": 3}')
    result = cli("train", family, "--epochs", "1")
    assert result.exit_code == 1, result.output
    assert result.stderr == (f"error: work/{family} holds a trained {family} model; continue it with --resume, "
                             f"or start over with --workdir work/{family} or --force\n")
    assert (workdir / "state.json").read_text() == '{"epoch": 3}'


@pytest.mark.parametrize("args, message", [
    (["train", "text", "--learning-rate", "0"], "--learning-rate must be > 0"),
    (["grid", "--low", "0.9", "--high", "0.1", *NO_SERVER], "low"),
    (["gan-interpolate", "--steps", "1", *NO_SERVER], "--steps must be from 2"),
    (["generate", "--length", "0", *NO_SERVER], "--length"),
    (["dream", str(EXAMPLES / "chelsea-cat.jpg"), "-o", "x.png", "--octaves", "0", *NO_SERVER], "--octaves"),
])
def test_impossible_ranges_are_refused(cli, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = cli(*args)
    assert result.exit_code == 1 and message in result.stderr and len(result.stderr.splitlines()) == 1
    assert "127.0.0.1:1" not in result.stderr  # refused before any request


def test_ctrl_c_in_any_command_is_one_line_and_exit_130(cli, tmp_path, monkeypatch):
    """A command without its own interrupt line (here `plot temperatures`, stopped while it saves)
    still ends with one line and 130, not click's "Aborted!" and exit 1."""
    import genserve.clients.images

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(genserve.clients.images, "save_figure", interrupted)
    result = cli("plot", "temperatures", "--out", tmp_path / "t.png")
    assert result.exit_code == 130 and result.stderr == "interrupted\n"
    assert not (tmp_path / "t.png").exists()
