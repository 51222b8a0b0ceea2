"""Batch stylize items over a real embedded server (tiny `random-small` style export, port 0).

    .venv/bin/python -m pytest tests/test_batch_style.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

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


def test_a_ray_actor_s_environment_writes_the_same_bytes_as_the_local_engine(tmp_path):
    """`--engine ray` and `--engine local` write the same stylized PNG with --models-dir.

    Two float sums used to differ between them (by up to 3 grey levels in a 120-pixel image): the
    in-process server's intra-op threads (actors had 1) and the client's OpenBLAS threads in L-BFGS-B
    (Ray sets OMP_NUM_THREADS=1 in its workers). Ray itself costs ~30 s to start here, so the actor's
    side runs in a subprocess with exactly what a Ray worker has: OMP_NUM_THREADS=1, the RayExecutor's
    `actor_env()` and `actor_threads()`.
    """
    import os
    import subprocess
    import sys

    from genserve.batch.driver import JobOptions, run_job
    from genserve.batch.executors import actor_env, blas_threads
    from genserve.export.style import export_style
    from genserve.training.style import StyleConfig

    if blas_threads() < 2:
        pytest.skip("one CPU: neither TensorFlow nor OpenBLAS splits a sum across threads")
    models = tmp_path / "models"
    export_style(StyleConfig(backbone="random-small"), models)
    images = Path(__file__).resolve().parents[1] / "examples" / "images"
    job = tmp_path / "job.jsonl"  # 80 x 120: big enough for both sums to be split (a smooth ramp was not)
    job.write_text(json.dumps({"id": "a", "kind": "stylize", "content": str(images / "chelsea-cat.jpg"),
                               "style": str(images / "hokusai-great-wave.jpg"), "height": 80, "iterations": 1,
                               "evals_per_iteration": 10}) + "\n")
    actor_side = (
        "import sys; from pathlib import Path; from genserve.batch.driver import JobOptions, run_job\n"
        "from genserve.batch.executors import actor_threads\n"
        "s = run_job(Path(sys.argv[1]), JobOptions(out=Path(sys.argv[2]), models_dir=Path(sys.argv[3]),\n"
        "            threads=actor_threads(), progress=False))\n"
        "sys.exit(0 if s.ok == 1 else 1)\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", **actor_env()}
    done = subprocess.run([sys.executable, "-c", actor_side, str(job), str(tmp_path / "ray"), str(models)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = run_job(job, JobOptions(out=tmp_path / "local", models_dir=models, progress=False))
    assert summary.ok == 1
    losses = [json.loads((tmp_path / side / "results.jsonl").read_text())["final_loss"] for side in ("ray", "local")]
    assert losses[0] == losses[1]  # the same L-BFGS path to the last bit, not only after rounding to 8 bits
    assert (tmp_path / "ray" / "a.png").read_bytes() == (tmp_path / "local" / "a.png").read_bytes()
