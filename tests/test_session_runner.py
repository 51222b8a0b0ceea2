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
    from genserve.serving.memory import limit_malloc_arenas

    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    assert limit_malloc_arenas() is False


def test_serving_process_imports_tensorflow_without_keras(toy_models_dir):
    """The loader imports TensorFlow without the Keras that `import tensorflow` loads eagerly (with
    pandas, matplotlib, PIL... when installed: ~110 MB of RSS a server never uses); a model still loads
    and runs, and Keras still imports afterwards (tf.keras included) for code that wants it."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys\n"
        "from genserve.serving.loader import load_saved_model\n"
        f"model = load_saved_model({str(toy_models_dir / 'toy' / '2')!r})\n"
        "import numpy as np\n"
        f"print(model.signature({C.TOY.default.name!r}).run({{'x': np.ones((2, 1), np.float32)}})['y'].shape)\n"
        "print(sorted(m for m in ('keras', 'pandas', 'matplotlib', 'PIL') if m in sys.modules))\n"
        "import tensorflow as tf\n"
        "print(type(tf.keras.layers.Dense(1)).__name__)\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[:3] == ["(2, 1)", "[]", "Dense"], out.stdout


def test_output_budget_is_per_limits_on_the_same_signature(toy_signature):
    """execute.prepare bounds a request's rows by the output budget (--max-output-mb); computed once per
    (signature, limits), so two servers' limits over one signature still each get their own answer."""
    from tensorflow_serving.apis import predict_pb2

    from genserve.serving import execute
    from genserve.serving.errors import ServingError
    from genserve.serving.options import Limits
    from genserve.wire.codec import fill_tensor_proto

    model, sig = toy_signature
    request = predict_pb2.PredictRequest()
    request.model_spec.signature_name = sig.name
    fill_tensor_proto(request.inputs["x"], np.ones((3, 1), np.float32))
    per_row = (1 << 30) // Limits(max_output_bytes=1 << 30).max_rows(sig)  # output bytes per row
    tight = Limits(max_output_bytes=per_row * 2 + per_row // 2)  # a budget of 2 rows
    for _ in range(2):  # the second time from the memo
        _, arrays, _ = execute.prepare(model, "toy", 2, request)
        np.testing.assert_array_equal(arrays["x"], np.ones((3, 1), np.float32))
        with pytest.raises(ServingError, match="accepts at most 2 rows") as e:
            execute.prepare(model, "toy", 2, request, tight)
        assert e.value.code == "RESOURCE_EXHAUSTED"


def test_remembered_headers_keep_every_check(toy_signature):
    """execute.prepare remembers the headers (keys, dtypes, shapes) of requests that passed its checks;
    a request with remembered headers still has its values decoded and checked, and any other header
    (another dtype, shape or key, or other limits) is checked again."""
    from tensorflow_serving.apis import predict_pb2

    from genserve.serving import execute
    from genserve.serving.errors import ServingError
    from genserve.serving.options import Limits
    from genserve.wire.codec import fill_tensor_proto

    model, sig = toy_signature

    def request(array, key="x"):
        r = predict_pb2.PredictRequest()
        r.model_spec.signature_name = sig.name
        fill_tensor_proto(r.inputs[key], array)
        return r

    def code_of(r, limits=execute.DEFAULT_LIMITS):
        try:
            execute.prepare(model, "toy", 2, r, limits)
        except ServingError as e:
            return e.code, e.message
        return "OK", ""

    good = request(np.ones((2, 1), np.float32))
    for _ in range(2):
        assert code_of(good) == ("OK", "")
    short = request(np.ones((2, 1), np.float32))
    short.inputs["x"].tensor_content = short.inputs["x"].tensor_content[:4]  # same header, 4 bytes short
    code, message = code_of(short)
    assert code == "INVALID_ARGUMENT" and "cannot decode the TensorProto" in message
    assert code_of(request(np.ones((2, 1), np.float64)))[0] == "INVALID_ARGUMENT"  # dtype
    assert code_of(request(np.ones((2, 3), np.float32)))[0] == "INVALID_ARGUMENT"  # shape
    assert code_of(request(np.ones((2, 1), np.float32), key="z"))[0] == "INVALID_ARGUMENT"  # key
    assert code_of(good, Limits(max_request_elements=1))[0] == "RESOURCE_EXHAUSTED"  # other limits
    assert code_of(good) == ("OK", "")


def test_inline_runs_unless_the_pool_is_clearly_faster():
    """The first INLINE_TRIALS runs of a signature without control flow alternate the calling thread and
    TF's inter-op pool; the pool is kept only when its median (each mode's first, warm-up run left out)
    is below POOL_MARGIN x the inline one. A pool a little faster by its runs' own time costs the process
    more (its threads spin on the cores gRPC needs), and a server that picked it used ~250 us more CPU per
    step; one slow first run must not decide either."""
    from genserve.serving.loader import INLINE_TRIALS, POOL_MARGIN, GraphSignature

    def decided(inline_seconds: list, pool_seconds: list, inline_ok: bool = True):
        sig = GraphSignature("s", {}, {}, inline_ok=inline_ok)
        for a, b in zip(inline_seconds, pool_seconds):  # run() alternates the modes, inline first
            sig._decide(True, a)
            sig._decide(False, b)
        return sig.inline

    half = INLINE_TRIALS // 2
    assert decided([0.09] + [150e-6] * (half - 1), [170e-6] * half) is True
    # the pool a little faster (by less than the margin): inline all the same
    assert decided([0.09] + [150e-6] * (half - 1), [150e-6 * (POOL_MARGIN + 0.05)] * half) is True
    # the pool clearly faster (a convnet that gains from inter-op parallelism): the pool
    assert decided([0.09] + [150e-6] * (half - 1), [150e-6 * (POOL_MARGIN - 0.1)] * half) is False
    # a slow first pool run (its warm-up) does not count against it
    assert decided([150e-6] * half, [0.5] + [100e-6] * (half - 1)) is False
    # still measuring until both modes have their runs
    assert decided([150e-6] * (half - 1), [100e-6] * (half - 1)) is None
    # control flow: never inline
    assert decided([150e-6], [0.5], inline_ok=False) is False
