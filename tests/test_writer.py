"""The versioned export writer: layout, atomicity, models.config and warmup records.

    .venv/bin/python -m pytest tests/test_writer.py -q
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from genserve.repository import (
    ConfigError,
    list_versions,
    parse_models_config,
    read_models_config,
    resolve_base_path,
)


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_layout_models_config_and_warmup(toy_models_dir):
    from genserve.export.verify import read_warmup_file
    import tensorflow as tf

    assert list_versions(toy_models_dir / "toy") == [1, 2]
    for version in (1, 2):
        folder = toy_models_dir / "toy" / str(version)
        for rel in ("saved_model.pb", "variables/variables.index", "assets.extra/tf_serving_warmup_requests"):
            assert (folder / rel).is_file(), rel
    assert not [p for p in (toy_models_dir / "toy").iterdir() if p.name.startswith(".")]

    entries = read_models_config(toy_models_dir)
    assert [(e.name, e.base_path) for e in entries] == [("toy", "/models/toy")]
    text = (toy_models_dir / "models.config").read_text()
    assert 'model_platform: "tensorflow"' in text and "model_config_list" in text

    records = read_warmup_file(toy_models_dir / "toy" / "2" / "assets.extra" / "tf_serving_warmup_requests")
    assert [r.predict_log.request.model_spec.signature_name for r in records] == ["affine", "scale"]
    request = records[1].predict_log.request
    assert request.model_spec.name == "toy"
    np.testing.assert_array_equal(tf.make_ndarray(request.inputs["x"]), [[1.0], [2.0]])
    np.testing.assert_array_equal(tf.make_ndarray(request.inputs["factor"]), [1, 3])


def test_export_reloads_with_named_signatures_at_two_batch_sizes(toy_models_dir):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(toy_models_dir / "toy" / "2"))
    assert set(loaded.signatures) == {"serving_default", "affine", "scale"}
    for batch in (1, 5):
        x = np.arange(batch, dtype=np.float32).reshape(batch, 1)  # (B, 1)
        default = loaded.signatures["serving_default"](x=tf.constant(x))
        affine = loaded.signatures["affine"](x=tf.constant(x))
        np.testing.assert_allclose(default["y"].numpy(), 2 * x + 2)
        np.testing.assert_allclose(affine["y"].numpy(), default["y"].numpy())
        np.testing.assert_allclose(affine["wx"].numpy(), 2 * x)
        factor = np.full(batch, 3, np.int32)
        scaled = loaded.signatures["scale"](x=tf.constant(x), factor=tf.constant(factor))
        np.testing.assert_allclose(scaled["y"].numpy(), 6 * x)


def test_next_version_explicit_version_and_no_overwrite(toy_models_copy):
    from genserve.export.toy import ToyConfig, export_toy
    from genserve.export.writer import ExportError

    assert export_toy(toy_models_copy, ToyConfig(bias=3.0)) == toy_models_copy / "toy" / "3"
    assert export_toy(toy_models_copy, version=10, warmup=False) == toy_models_copy / "toy" / "10"
    assert export_toy(toy_models_copy, warmup=False).name == "11"
    before = (toy_models_copy / "toy" / "3" / "saved_model.pb").read_bytes()
    with pytest.raises(ExportError, match="version 3 of model 'toy' already exists"):
        export_toy(toy_models_copy, version=3)
    assert (toy_models_copy / "toy" / "3" / "saved_model.pb").read_bytes() == before
    assert list_versions(toy_models_copy / "toy") == [1, 2, 3, 10, 11]
    # A second model is added to models.config; the first keeps its entry.
    export_toy(toy_models_copy, name="toy2", warmup=False)
    assert [e.name for e in read_models_config(toy_models_copy)] == ["toy", "toy2"]


def test_failure_midway_leaves_no_visible_version(toy_models_copy, monkeypatch):
    """The SavedModel is already written to the temporary folder when the warmup step fails."""
    from genserve.export import writer
    from genserve.export.toy import export_toy

    def broken(path, *args, **kwargs):
        assert any(p.name == "saved_model.pb" for p in path.parents[1].iterdir())  # save happened
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(writer, "write_warmup_file", broken)
    before = _tree(toy_models_copy)
    with pytest.raises(OSError, match="simulated"):
        export_toy(toy_models_copy)
    assert _tree(toy_models_copy) == before  # no version 3, no .tmp-* left, models.config unchanged
    assert list_versions(toy_models_copy / "toy") == [1, 2]


def test_stale_temp_of_dead_writer_is_invisible_and_cleaned(toy_models_copy):
    from genserve.export.toy import export_toy
    from genserve.repository import discover

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = toy_models_copy / "toy" / f".tmp-3-{dead.pid}"
    (stale / "variables").mkdir(parents=True)
    (stale / "saved_model.pb").write_bytes(b"half written")
    live = toy_models_copy / "toy" / f".tmp-7-{os.getpid()}"  # a concurrent writer: left alone
    live.mkdir()
    assert list_versions(toy_models_copy / "toy") == [1, 2]
    assert list(discover(toy_models_copy)) == ["toy"]
    assert export_toy(toy_models_copy, warmup=False).name == "3"
    assert not stale.exists() and live.exists()


def test_version_labels_survive_new_exports(toy_models_copy):
    from genserve.export.toy import export_toy
    from genserve.repository import ConfigError, set_version_labels

    set_version_labels(toy_models_copy, "toy", {"stable": 1, "canary": 2})
    export_toy(toy_models_copy, warmup=False)
    (entry,) = read_models_config(toy_models_copy)
    assert entry.version_labels == {"stable": 1, "canary": 2}
    with pytest.raises(ConfigError, match="no version 9"):
        set_version_labels(toy_models_copy, "toy", {"stable": 9})
    set_version_labels(toy_models_copy, "toy", {"canary": None})
    assert read_models_config(toy_models_copy)[0].version_labels == {"stable": 1}


def test_rejects_bad_signatures_and_warmup(tmp_path):
    import tensorflow as tf

    from genserve.export.toy import build_toy
    from genserve.export.writer import ExportError, save_version

    module, sigs = build_toy()
    with pytest.raises(ExportError, match="default signature 'nope'"):
        save_version(module, tmp_path, "toy", sigs, default="nope")
    with pytest.raises(ExportError, match="must be letters"):
        save_version(module, tmp_path, "../evil", sigs, default="affine")
    with pytest.raises(ExportError, match="unknown signature 'missing'"):
        save_version(module, tmp_path, "toy", sigs, default="affine",
                     warmup=[("missing", {"x": np.zeros((1, 1), np.float32)})])
    with pytest.raises(ExportError, match=r"has inputs \['x'\], the signature takes \['factor', 'x'\]"):
        save_version(module, tmp_path, "toy", sigs, default="affine",
                     warmup=[("scale", {"x": np.zeros((1, 1), np.float32)})])
    bare = tf.function(lambda x: 2 * x, input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    with pytest.raises(ExportError, match="must return a dict"):
        save_version(module, tmp_path, "toy", {"bare": bare.get_concrete_function()}, default="bare")
    assert list_versions(tmp_path / "toy") == []


def test_assets_extra_files(tmp_path):
    from genserve.export.toy import build_toy
    from genserve.export.writer import save_version

    module, sigs = build_toy()
    path = save_version(module, tmp_path, "toy", sigs, default="affine",
                        assets={"config.json": b'{"w": 2}', "vocab/chars.txt": b"ab"})
    assert (path / "assets.extra" / "config.json").read_bytes() == b'{"w": 2}'
    assert (path / "assets.extra" / "vocab" / "chars.txt").read_bytes() == b"ab"
    assert not (path / "assets.extra" / "tf_serving_warmup_requests").exists()


def test_base_path_resolution_and_config_errors(tmp_path):
    assert resolve_base_path("/models/toy", tmp_path) == tmp_path / "toy"
    assert resolve_base_path("/models", tmp_path) == tmp_path
    assert resolve_base_path("toy", tmp_path) == tmp_path / "toy"
    # Outside the models directory only when the operator allows it (--allow-external-base-paths).
    assert resolve_base_path("/srv/other/toy", tmp_path, allow_external=True) == Path("/srv/other/toy")
    assert resolve_base_path("/models2/toy", tmp_path, allow_external=True) == Path("/models2/toy")
    for outside in ("/srv/other/toy", "/models2/toy", "../elsewhere", "/models/../../etc"):
        with pytest.raises(ConfigError, match="outside the models directory"):
            resolve_base_path(outside, tmp_path)
    assert resolve_base_path("/opt/m/toy", tmp_path, prefix="/opt/m") == tmp_path / "toy"
    with pytest.raises(ConfigError, match="not a text-format ModelServerConfig"):
        parse_models_config("model_config_list { config { nme: 'x' } }")
    with pytest.raises(ConfigError, match="listed twice"):
        parse_models_config("model_config_list { config { name: 'a' } config { name: 'a' } }")
    with pytest.raises(ConfigError, match="platform"):
        parse_models_config("model_config_list { config { name: 'a' model_platform: 'tflite' } }")
    (entry,) = parse_models_config(
        "model_config_list { config { name: 'a' base_path: '/models/a' "
        "version_labels { key: 'stable' value: 3 } } }")
    assert entry.version_labels == {"stable": 3}


def test_toy_export_matches_contract(toy_models_dir):
    import tensorflow as tf

    from genserve.contract import TOY

    loaded = tf.saved_model.load(str(toy_models_dir / "toy" / "1"))
    for sig in TOY.signatures:
        fn = loaded.signatures[sig.name]
        inputs = {k: (s.dtype.name, tuple(s.shape.as_list()))
                  for k, s in fn.structured_input_signature[1].items()}
        outputs = {k: (s.dtype.name, tuple(s.shape.as_list())) for k, s in fn.structured_outputs.items()}
        assert inputs == {s.key: (s.dtype, s.shape) for s in sig.inputs}
        assert outputs == {s.key: (s.dtype, s.shape) for s in sig.outputs}


def test_writer_refuses_a_model_folder_outside_the_models_dir(toy_models_copy, tmp_path):
    from genserve.export.toy import export_toy
    from genserve.export.writer import ExportError

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (toy_models_copy / "ext").symlink_to(elsewhere)
    with pytest.raises(ExportError, match="outside the models directory"):
        export_toy(toy_models_copy, name="ext", warmup=False)
    assert list(elsewhere.iterdir()) == []  # nothing written where the user did not point


def test_side_files_are_written_whole(tmp_path):
    from genserve.export.toy import build_toy
    from genserve.export.writer import BATCHABLE_FIXED_SHAPE, save_version

    module, sigs = build_toy()
    path = save_version(module, tmp_path, "toy", sigs, default="affine", batching=BATCHABLE_FIXED_SHAPE,
                        assets={"config.json": b"{}"})
    assert (path / "batching_params.pbtxt").read_text() == BATCHABLE_FIXED_SHAPE
    leftovers = [p for p in path.rglob(".*")] + [p for p in tmp_path.glob(".*")]
    assert leftovers == []  # no temporary sibling of any side file or of models.config
