"""The loader runs a signature as TF Serving's Session::Run does: one TF_SessionRun per request.

Same answers as the public Session.run path (with and without RunOptions, feeds converted to the
placeholder's dtype as Session.run converts them), and a closed session refuses instead of crashing.
"""

from __future__ import annotations

import numpy as np
import pytest

from genserve import contract as C


@pytest.fixture
def toy_signature(toy_models_dir):
    from genserve.serving.loader import load_saved_model

    model = load_saved_model(toy_models_dir / "toy" / "2")
    yield model, model.signature(C.TOY.default.name)
    model.close()


def test_run_equals_session_run(toy_signature):
    model, sig = toy_signature
    graph = model.session.graph
    x = np.array([[1.0], [2.5], [-3.0]], np.float32)
    keys = tuple(sorted(sig.outputs))
    expected = model.session.run([graph.get_tensor_by_name(sig.outputs[k].tensor_name) for k in keys],
                                 feed_dict={graph.get_tensor_by_name(sig.inputs["x"].tensor_name): x})
    for timeout_ms in (0, 5000):  # without and with RunOptions
        got = sig.run({"x": x}, keys, timeout_ms)
        assert list(got) == list(keys)
        for key, want in zip(keys, expected):
            np.testing.assert_array_equal(got[key], want)
    # fed in another dtype, converted as Session.run converts it
    np.testing.assert_array_equal(sig.run({"x": x.astype(np.float64)})["y"], expected[keys.index("y")])


def test_closed_session_refuses(toy_signature):
    model, sig = toy_signature
    sig.run({"x": np.zeros((1, 1), np.float32)})
    model.close()
    with pytest.raises(RuntimeError, match="closed Session"):
        sig.run({"x": np.zeros((1, 1), np.float32)})


def test_malloc_arena_cap_leaves_an_explicit_setting(monkeypatch):
    from genserve.serving.service import limit_malloc_arenas

    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    assert limit_malloc_arenas() is False
