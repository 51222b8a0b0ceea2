"""The dream SavedModel: signatures against the contract, TF Serving's path (graph Session, tensor names)
against the in-process model, `saved_model_cli run`, the max_loss early stop and the iteration checks
inside the graph, and what the export records. Uses the tiny `random-small` backbone.

    .venv/bin/python -m pytest tests/test_dream_export.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from genserve import contract as C  # noqa: E402
from genserve.wire.codec import dtype_name  # noqa: E402
from genserve.export.dream import DreamConfig, DreamModule, export_dream, load_config  # noqa: E402
from genserve.serving.errors import ServingError  # noqa: E402
from genserve.serving.loader import load_saved_model  # noqa: E402

CFG = DreamConfig(backbone="random-small", seed=1)
INF = np.float32(np.inf)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    module = DreamModule(CFG)
    path = export_dream(CFG, tmp_path_factory.mktemp("models"), features=module.features)
    graph = load_saved_model(path)
    yield module, path, graph
    graph.close()


def _ascend_inputs(images, steps, iterations, max_loss):
    return {"image": images.astype(np.float32), "step_size": np.asarray(steps, np.float32),
            "iterations": np.asarray(iterations, np.int32), "max_loss": np.asarray(max_loss, np.float32)}


def test_signatures_match_contract(exported):
    _, path, graph = exported
    assert not (path / "batching_params.pbtxt").exists()  # images of any size: never batched
    assert set(graph.signatures) == {C.DEFAULT_SIGNATURE_KEY, "ascend", "gradient"}
    for name in (C.DEFAULT_SIGNATURE_KEY, "ascend", "gradient"):
        spec = C.DREAM.signature("ascend" if name == C.DEFAULT_SIGNATURE_KEY else name)
        sig = graph.signatures[name]
        for want, got in ((spec.inputs, sig.inputs), (spec.outputs, sig.outputs)):
            assert set(got) == {s.key for s in want}, name
            for s in want:
                assert dtype_name(got[s.key].dtype) == s.dtype, (name, s.key)
                assert got[s.key].shape == s.shape, (name, s.key, got[s.key].shape)


@pytest.mark.parametrize("batch, size", [(1, (48, 64)), (3, (40, 36))])
def test_graph_session_equals_in_process(exported, batch, size):
    module, _, graph = exported
    rng = np.random.default_rng(batch)
    images = rng.uniform(0, 255, (batch, *size, 3)).astype(np.float32)
    steps = np.linspace(0.01, 0.03, batch)
    iterations = np.arange(2, 2 + batch)  # rows run different numbers of steps
    inputs = _ascend_inputs(images, steps, iterations, np.full(batch, INF))
    want = module.ascend(**{k: tf.constant(v) for k, v in inputs.items()})
    got = graph.signatures["ascend"].run(inputs)
    assert got["image"].shape == images.shape and got["losses"].shape == (batch, iterations.max())
    np.testing.assert_array_equal(got["iterations_run"], iterations)
    np.testing.assert_allclose(got["image"], want["image"].numpy(), rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(got["losses"], want["losses"].numpy(), rtol=1e-4)  # NaN where equal
    for row, n in enumerate(iterations):  # NaN exactly where a row did not run
        assert np.all(np.isfinite(got["losses"][row, :n])) and np.all(np.isnan(got["losses"][row, n:]))
        assert np.all(np.diff(got["losses"][row, :n]) > 0)  # ascent: the loss rises
    want_g = module.gradient(tf.constant(images))
    got_g = graph.signatures["gradient"].run({"image": images})
    np.testing.assert_allclose(got_g["loss"], want_g["loss"].numpy(), rtol=1e-5)
    np.testing.assert_allclose(got_g["gradient"], want_g["gradient"].numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got_g["loss"], got["losses"][:, 0], rtol=1e-5)


def test_one_step_is_the_books_update(exported):
    """ascend with 1 step == x + 127.5 * step * g / mean|g|, g from the `gradient` signature."""
    _, _, graph = exported
    image = np.random.default_rng(7).uniform(0, 255, (1, 40, 40, 3)).astype(np.float32)
    g = graph.signatures["gradient"].run({"image": image})["gradient"]
    got = graph.signatures["ascend"].run(_ascend_inputs(image, [0.02], [1], [INF]))
    np.testing.assert_allclose(got["image"], image + C.DREAM_STEP_SCALE * 0.02 * g / np.abs(g).mean(),
                               rtol=1e-5, atol=1e-3)


def test_max_loss_stops_a_row_before_its_update(exported):
    _, _, graph = exported
    rng = np.random.default_rng(3)
    images = rng.uniform(0, 255, (2, 40, 48, 3)).astype(np.float32)
    free = graph.signatures["ascend"].run(_ascend_inputs(images, [0.05, 0.05], [6, 6], [INF, INF]))
    limit = float(free["losses"][0, 2])  # row 0 exceeds it at the loss before step 4
    got = graph.signatures["ascend"].run(_ascend_inputs(images, [0.05, 0.05], [6, 6], [limit * 0.999, INF]))
    np.testing.assert_array_equal(got["iterations_run"], [2, 6])
    assert np.isfinite(got["losses"][0, 2]) and np.all(np.isnan(got["losses"][0, 3:]))
    np.testing.assert_allclose(got["image"][1], free["image"][1], rtol=1e-5, atol=1e-3)  # row 1 unaffected
    two = graph.signatures["ascend"].run(_ascend_inputs(images[:1], [0.05], [2], [INF]))
    np.testing.assert_allclose(got["image"][0], two["image"][0], rtol=1e-5, atol=1e-3)
    zero = graph.signatures["ascend"].run(_ascend_inputs(images, [0.05, 0.05], [0, 0], [INF, INF]))
    np.testing.assert_array_equal(zero["image"], images)
    assert zero["losses"].shape == (2, 0)


@pytest.mark.parametrize("iterations, steps, message", [
    ([-1], [0.01], "iterations must be >= 0"),
    ([C.DREAM_MAX_ITERATIONS + 1], [0.01], f"iterations must be <= {C.DREAM_MAX_ITERATIONS}"),
    ([1], [0.01, 0.02], "step_size needs one entry per image"),
])
def test_bad_iterations_are_invalid_argument(exported, iterations, steps, message):
    _, _, graph = exported
    image = np.zeros((1, 40, 40, 3), np.float32)
    with pytest.raises(ServingError) as e:
        graph.signatures["ascend"].run(_ascend_inputs(image, steps, iterations, [INF] * len(iterations)))
    assert e.value.code == "INVALID_ARGUMENT" and message in str(e.value)


def test_saved_model_cli_runs_ascend(exported, tmp_path):
    _, path, _ = exported
    cli = Path(sys.executable).with_name("saved_model_cli")
    arrays = _ascend_inputs(np.full((1, 40, 40, 3), 120.0), [0.01], [3], [INF])
    for key, value in arrays.items():
        np.save(tmp_path / f"{key}.npy", value)
    inputs = ";".join(f"{key}={tmp_path / key}.npy" for key in arrays)
    proc = subprocess.run([str(cli), "run", "--dir", str(path), "--tag_set", "serve",
                           "--signature_def", "serving_default", "--inputs", inputs],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Result for output key iterations_run:\n[3]" in proc.stdout, proc.stdout[-2000:]
    assert "Result for output key losses:" in proc.stdout


def test_export_records_config_and_warmup(exported):
    _, path, _ = exported
    assert load_config(path) == CFG
    config = json.loads((path / "assets.extra" / "config.json").read_text())
    assert config["backbone"] == "random-small" and config["step_scale"] == C.DREAM_STEP_SCALE
    assert [tuple(p) for p in config["layers"]] == list(CFG.layers) and config["border"] == 2
    from genserve.export.verify import read_warmup_file

    records = read_warmup_file(path / "assets.extra" / "tf_serving_warmup_requests")
    assert [r.predict_log.request.model_spec.signature_name for r in records] == ["ascend", "gradient"]


def test_config_errors():
    with pytest.raises(ValueError, match="unknown backbone"):
        DreamConfig(backbone="vgg99")
    with pytest.raises(ValueError, match="border"):
        DreamConfig(border=-1)
    with pytest.raises(ValueError, match="no layer"):
        DreamModule(DreamConfig(backbone="random-small", layers=(("mixed3", 1.0),)))
    assert DreamConfig(backbone="inception-v3-imagenet").layers == (
        ("mixed2", 0.2), ("mixed3", 3.0), ("mixed4", 2.0), ("mixed5", 1.5))  # the book's
