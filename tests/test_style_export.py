"""The style SavedModel: signatures against the contract, a round trip at two image sizes, and what
the export records (config.json, warmup requests). Uses the tiny `random-small` backbone.

    .venv/bin/python -m pytest tests/test_style_export.py -q
"""

from __future__ import annotations

import json

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from genserve import contract as C  # noqa: E402
from genserve.export.style import StyleModule, export_style, load_config  # noqa: E402
from genserve.training.style import StyleConfig  # noqa: E402

CFG = StyleConfig(backbone="random-small", seed=3)
GRAM_CHANNELS = {"block1_conv1": 8, "block2_conv1": 16, "block3_conv1": 16, "block4_conv1": 32,
                 "block5_conv1": 32}  # random-small's widths


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    module = StyleModule(CFG)
    path = export_style(CFG, tmp_path_factory.mktemp("models"), extractor=module.extractor)
    return module, path, tf.saved_model.load(str(path))


def _dtype_name(spec) -> str:
    return "string" if spec.dtype == tf.string else spec.dtype.as_numpy_dtype().dtype.name


def test_signatures_match_contract(exported):
    _, path, loaded = exported
    assert not (path / "batching_params.pbtxt").exists()  # images of any size: never batched by TF Serving
    assert set(loaded.signatures) == {C.DEFAULT_SIGNATURE_KEY, "step", "targets"}
    gram_keys = {C.style_gram_key(layer) for layer in CFG.style_layers}
    for name in (C.DEFAULT_SIGNATURE_KEY, "step", "targets"):
        spec = C.STYLE.signature("step" if name == C.DEFAULT_SIGNATURE_KEY else name)
        fn = loaded.signatures[name]
        inputs = fn.structured_input_signature[1]
        outputs = fn.structured_outputs
        extra_in = gram_keys if spec.name == "step" else set()
        extra_out = gram_keys if spec.name == "targets" else set()
        assert set(inputs) == {s.key for s in spec.inputs} | extra_in
        assert set(outputs) == {s.key for s in spec.outputs} | extra_out
        for specs, actual in ((spec.inputs, inputs), (spec.outputs, outputs)):
            for s in specs:
                assert _dtype_name(actual[s.key]) == s.dtype, (name, s.key)
                assert actual[s.key].shape.rank == len(s.shape), (name, s.key)
                for want, got in zip(s.shape, actual[s.key].shape):
                    assert want is None or want == got, (name, s.key)
        for key in gram_keys:
            layer = key[len(C.STYLE_GRAM_PREFIX):]
            gram = (inputs if spec.name == "step" else outputs).get(key)
            if gram is not None:
                assert gram.dtype == tf.float32 and gram.shape.as_list() == [None, GRAM_CHANNELS[layer],
                                                                            GRAM_CHANNELS[layer]]
    assert C.style_layers_from_keys(loaded.signatures["targets"].structured_outputs) == CFG.style_layers


@pytest.mark.parametrize("size", [(32, 48), (64, 40)])
def test_round_trip_two_sizes(exported, size):
    module, _, loaded = exported
    rng = np.random.default_rng(sum(size))
    content = rng.uniform(0, 255, (2, *size, 3)).astype(np.float32)
    style = rng.uniform(0, 255, (2, 40, 40, 3)).astype(np.float32)  # style may have another size
    image = rng.uniform(0, 255, (2, *size, 3)).astype(np.float32)
    want_t = module.targets(tf.constant(content), tf.constant(style))
    got_t = loaded.signatures["targets"](content_image=content, style_image=style)
    for key in want_t:
        np.testing.assert_allclose(got_t[key].numpy(), want_t[key].numpy(), rtol=1e-5, err_msg=key)
    want = module.step(image=tf.constant(image), **want_t)
    got = loaded.signatures["step"](image=image, **got_t)
    assert got["gradient"].shape == (2, *size, 3) and got["loss"].shape == (2,)
    for key in want:
        np.testing.assert_allclose(got[key].numpy(), want[key].numpy(), rtol=1e-4, atol=1e-4, err_msg=key)
    assert np.all(got["loss"].numpy() > 0) and np.any(got["gradient"].numpy() != 0)


def test_export_records_config_and_warmup(exported):
    _, path, _ = exported
    assert load_config(path) == CFG
    config = json.loads((path / "assets.extra" / "config.json").read_text())
    assert config["backbone"] == "random-small" and config["gram_channels"] == GRAM_CHANNELS
    from genserve.export.verify import read_warmup_file

    records = read_warmup_file(path / "assets.extra" / "tf_serving_warmup_requests")
    names = [r.predict_log.request.model_spec.signature_name for r in records]
    assert names == ["targets", "step"]
    step_inputs = set(records[1].predict_log.request.inputs)
    assert step_inputs == {"image", C.STYLE_CONTENT_FEATURES} | {C.style_gram_key(l) for l in CFG.style_layers}
    assert (path.parent.parent / "models.config").is_file()
