"""Batch job validation, planning and the results file: pure, no server, no TensorFlow.

    .venv/bin/python -m pytest tests/test_batch_schema.py -q
"""

from __future__ import annotations

import json

import numpy as np

import pytest
from typer.testing import CliRunner

from genserve.batch import job as schema
from genserve.batch import fields, kinds, plan
from genserve.batch.results import Results, read_records
from genserve.files import temp_sibling


def _run(*args):
    from genserve.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


BAD_JOB = "\n".join([
    '{"id": "ok-1", "kind": "text", "length": 30}',
    '{"id": "ok-1", "kind": "grid"}',  # 2: duplicate id
    '{"id": "x", "kind": "text", "length": 0, "temperature": -1}',  # 3: two bad fields
    'not json',  # 4
    '',  # blank lines are fine
    '# a comment line',
    '{"id": "../evil", "kind": "poem"}',  # 7: bad id and unknown kind
    '{"id": "g", "kind": "grid", "n": 99, "colour": "red"}',  # 8
    '{"id": "d", "kind": "decode"}',  # 9: points missing
    '{"id": "q", "kind": "grid", "range": [0, 2]}',  # 10: quantiles outside (0, 1)
    '{"id": "s", "kind": "stylize", "content": "a.png", "style": "b.png", "iterations": 0}',  # 11
    '[1, 2]',  # 12
])


def test_every_bad_line_is_reported_at_once():
    with pytest.raises(schema.JobError) as err:
        schema.parse_job(BAD_JOB.splitlines())
    found = {(line, field) for line, field, _ in err.value.problems}
    assert found == {(2, "id"), (3, "length"), (3, "temperature"), (4, ""), (7, "id"), (7, "kind"),
                     (8, "n"), (8, "colour"), (9, "points"), (10, "range"), (11, "iterations"), (12, "")}
    text = "\n".join(err.value.lines("job.jsonl"))
    assert "job.jsonl:2: id: duplicate id 'ok-1' (first on line 1)" in text
    assert "job.jsonl:3: length: must be in [1, 20000], got 0" in text
    assert "job.jsonl:4: not valid JSON" in text


def test_defaults_seed_and_relative_paths(tmp_path):
    job = tmp_path / "jobs" / "job.jsonl"
    job.parent.mkdir()
    job.write_text('{"id": "a", "kind": "text"}\n'
                   '{"id": "s", "kind": "stylize", "content": "c.png", "style": "/abs/s.png"}\n')
    a, s = schema.validate_job(job)
    assert a.params["length"] == 400 and kinds.text_temperatures(a.params) == [0.2, 0.5, 1.0, 1.2]
    assert a.params["seed"] == fields.default_seed("a") and a.model == "text"
    assert s.params["content"] == str(job.parent / "c.png") and s.params["style"] == "/abs/s.png"
    again = schema.validate_job(job)
    assert again[0].fingerprint == a.fingerprint  # same line, same fingerprint


def test_grouping_and_chunking():
    lines = [json.dumps({"id": f"t{i}", "kind": "text", "length": 100, "temperatures": [0.2, 1.0]})
             for i in range(6)]
    lines += [json.dumps({"id": "other-length", "kind": "text", "length": 50}),
              json.dumps({"id": "k", "kind": "text", "length": 100, "top_k": 5}),
              json.dumps({"id": "g", "kind": "grid", "n": 15}),
              json.dumps({"id": "d", "kind": "decode", "points": [[0, 0]]}),
              json.dumps({"id": "s1", "kind": "stylize", "content": "a", "style": "wave"}),
              json.dumps({"id": "s2", "kind": "stylize", "content": "b", "style": "wave"}),
              json.dumps({"id": "s3", "kind": "stylize", "content": "b", "style": "other"})]
    items = schema.parse_job(lines)
    chunks = plan.make_plan(items)
    keys = [(c.key, [i.id for i in c.items]) for c in chunks]
    assert keys[0] == (("text", "text", "server", 100), [f"t{i}" for i in range(6)])  # one request
    assert chunks[0].rows == 12
    assert (("vae", "vae"), ["g", "d"]) in keys  # decode + grid share one decode request
    assert (("style", "style", "wave", 400), ["s1", "s2"]) in keys  # shared style image
    assert len(chunks) == 6
    small = plan.make_plan(items, max_rows=5)
    assert [len(c.items) for c in small if c.key == ("text", "text", "server", 100)] == [2, 2, 2]
    assert [c.rows for c in small if c.key == ("vae", "vae")] == [226]  # chunks of 4,096 rows, sent 5 at a time
    big = [json.dumps({"id": f"g{i}", "kind": "grid", "n": 64}) for i in range(3)]  # 4,096 rows each
    assert [c.rows for c in plan.make_plan(schema.parse_job(big))] == [4096] * 3
    spread = plan.make_plan(items[:6], min_chunks=3)
    assert [len(c.items) for c in spread] == [2, 2, 2]
    assert "8 item(s)" not in plan.describe(chunks) and "13 item(s) in 6 group(s)" in plan.describe(chunks)


def test_dry_run_validates_without_any_request(tmp_path):
    job = tmp_path / "job.jsonl"
    job.write_text('{"id": "a", "kind": "text", "length": 30}\n{"id": "g", "kind": "grid", "n": 3}\n')
    out = tmp_path / "out"
    result = _run("batch", "run", job, "--out", out, "--target", "127.0.0.1:1", "--dry-run")
    assert result.exit_code == 0, result.output  # nothing listens on port 1: no request was made
    assert "2 item(s) valid" in result.stdout and "2 chunk(s)" in result.stdout
    assert not out.exists()


def test_bad_job_file_exits_2_listing_every_line(tmp_path):
    job = tmp_path / "job.jsonl"
    job.write_text(BAD_JOB)
    result = _run("batch", "run", job, "--out", tmp_path / "out", "--target", "127.0.0.1:1")
    assert result.exit_code == 2
    assert result.stderr.count(f"{job}:") == 12 + 1  # 12 problems and the closing error line
    assert "error: " in result.stderr and "nothing was run" in result.stderr
    assert not (tmp_path / "out").exists()


def test_torn_last_line_is_ignored_and_cut(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    good = json.dumps({"id": "a", "status": "ok", "outputs": []}) + "\n"
    (out / "results.jsonl").write_text(good + "garbage line\n" + '{"id": "b", "sta')
    temp_sibling(out / "a.txt").write_text("half")  # genserve.files' temporary name
    (out / ".a.txt.tmp-batch-1-2").write_text("half")  # the name earlier versions used
    records, intact = read_records(out / "results.jsonl")
    assert set(records) == {"a"} and intact == len(good) + len("garbage line\n")
    results = Results(out)
    assert results.removed_temporaries == 2 and not list(out.glob(".*tmp-*"))
    results.append({"id": "b", "status": "ok", "outputs": []})
    results.close()
    assert (out / "results.jsonl").read_text().endswith('\n{"id": "b", "outputs": [], "status": "ok"}\n')


def test_out_must_be_a_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    job = tmp_path / "job.jsonl"
    job.write_text('{"id": "g", "kind": "grid", "n": 2}\n')
    result = _run("batch", "run", job, "--out", tmp_path / "file", "--target", "127.0.0.1:1")
    assert result.exit_code == 1 and "is not a folder" in result.stderr


class FakeGan:
    """The GAN client's `sample` call (the runner's only view of the model): seed s -> a digit filled
    with s % 256."""

    def __init__(self, calls):
        self.calls = calls

    def sample(self, seeds):
        self.calls[("gan", "sample")] += 1
        return np.broadcast_to((seeds % 256 / 255.0)[:, None, None, None], (len(seeds), 28, 28, 1))


class FakeGanBackend:
    """A backend whose GAN family client is FakeGan (the runners ask backend.family for it)."""

    def __init__(self):
        from collections import Counter

        from genserve.batch.backend import StopFlag

        self.calls, self.stop = Counter(), StopFlag()

    @property
    def requests(self):
        return sum(self.calls.values())

    def version(self, model):
        return 3

    def family(self, cls, model):
        return FakeGan(self.calls)

    def close(self):
        pass


def test_gan_grids_share_one_sample_request(tmp_path):
    from PIL import Image

    from genserve.batch.driver import JobOptions, run_job

    job = tmp_path / "job.jsonl"
    job.write_text('{"id": "a", "kind": "gan_grid", "n": 2, "seed": 10}\n'
                   '{"id": "b", "kind": "gan_grid", "n": 3, "seed": 20, "scale": 2}\n')
    backend = FakeGanBackend()
    summary = run_job(job, JobOptions(out=tmp_path / "out", concurrency=1, progress=False), backend=backend)
    assert (summary.ok, summary.failed, summary.versions) == (2, 0, {"gan": 3})
    assert dict(backend.calls) == {("gan", "sample"): 1}  # 4 + 9 seeds in one request
    with Image.open(tmp_path / "out" / "a.png") as im:
        pixels = np.asarray(im)
    assert pixels.shape == (56, 56) and pixels[0, 0] == 10 and pixels[0, 28] == 11 and pixels[28, 0] == 12
    with Image.open(tmp_path / "out" / "b.png") as im:
        assert im.size == (3 * 28 * 2, 3 * 28 * 2)


# ---------------------------------------------------------------------------------------------------
# Issue 16: names that collide, paths posing as model names, control characters, a BOM.
# ---------------------------------------------------------------------------------------------------
def _problems(*objs) -> dict:
    with pytest.raises(schema.JobError) as err:
        schema.parse_job([json.dumps(o) for o in objs])
    return {(line, name): why for line, name, why in err.value.problems}


def test_two_items_that_would_write_one_file_are_refused():
    found = _problems({"id": "a", "kind": "text", "temperatures": [0.5, 1.0]},  # a-t0.5-s0.txt, a-t1-s0.txt
                      {"id": "a-t0.5-s0", "kind": "text", "temperature": 0.5})  # a-t0.5-s0.txt too
    assert "writes a-t0.5-s0.txt, as does item 'a' (line 1" in found[(2, "id")]
    found = _problems({"id": "Grid", "kind": "grid"}, {"id": "grid", "kind": "decode", "points": [[0, 0]]})
    assert "writes grid.png, as does item 'Grid'" in found[(2, "id")]  # one file on macOS / Windows
    assert len(schema.parse_job([json.dumps({"id": "a", "kind": "text", "temperatures": [0.5, 1.0]}),
                                 json.dumps({"id": "a-t0.5", "kind": "text"})])) == 2


@pytest.mark.parametrize("model", ["../elsewhere/vae", "/abs/vae", "a/b", "vae\n", "v\x00ae", ".hidden", "", 3])
def test_model_must_be_a_plain_model_name(model):
    found = _problems({"id": "g", "kind": "grid", "model": model})
    assert "must be a served model name" in found[(1, "model")]


@pytest.mark.parametrize("item_id", ["nl\n", "tab\there", "cr\r", "del\x7f", "a/b", "..", ""])
def test_ids_with_control_characters_or_separators_are_refused(item_id):
    found = _problems({"id": item_id, "kind": "grid"})
    assert "must be a string of letters" in found[(1, "id")]


def test_a_job_file_saved_with_a_byte_order_mark_is_read(tmp_path):
    job = tmp_path / "job.jsonl"
    job.write_bytes(b"\xef\xbb\xbf" + b'{"id": "g", "kind": "grid", "n": 2}\n')
    assert [i.id for i in schema.validate_job(job)] == ["g"]
