"""Batch stylize items over a real embedded server (tiny `random-small` style export, port 0).

    .venv/bin/python -m pytest tests/test_batch_style.py -q
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    from genserve.export.style import export_style
    from genserve.serving.server import serve
    from genserve.training.style import StyleConfig

    root = tmp_path_factory.mktemp("style_models")
    export_style(StyleConfig(backbone="random-small"), root)
    with serve(root, poll_seconds=0) as address:
        yield address


def test_items_sharing_a_style_share_one_targets_request(target, tmp_path):
    from genserve.batch.backend import Backend
    from genserve.batch.driver import JobOptions, run_job

    rng = np.random.default_rng(0)
    for name, size in (("c1.png", (40, 32)), ("c2.png", (40, 32)), ("wave.png", (30, 30))):
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    job = tmp_path / "job.jsonl"
    common = {"kind": "stylize", "style": "wave.png", "height": 32, "iterations": 1, "evals_per_iteration": 2}
    job.write_text("".join(json.dumps({"id": i, "content": c, **common}) + "\n"
                           for i, c in (("a", "c1.png"), ("b", "c2.png"), ("bad", "broken.png"))))
    backend = Backend(target)
    try:
        summary = run_job(job, JobOptions(out=tmp_path / "out", concurrency=1, progress=False), backend=backend)
    finally:
        backend.close()
    assert (summary.ok, summary.failed) == (2, 1)
    assert backend.calls[("style", "targets")] == 1  # both items in one request (2 rows)
    assert backend.calls[("style", "step")] >= 4
    records = {json.loads(line)["id"]: json.loads(line) for line in (tmp_path / "out" / "results.jsonl").open()}
    assert "not a readable image" in records["bad"]["error"]
    assert records["a"]["outputs"] == ["a.png"] and records["a"]["final_loss"] <= records["a"]["initial_loss"]
    with Image.open(tmp_path / "out" / "a.png") as im:
        assert im.size == (40, 32)
