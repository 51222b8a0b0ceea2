"""`make check-serving`: run every family's export on the TensorFlow runtime of the pinned TF Serving image.

    make check-serving                                  # the whole check (side venv built once)
    .venv/bin/python scripts/check_serving.py prepare DIR        # 1. export + record expected outputs
    .venv-serving/bin/python scripts/check_serving.py verify DIR # 2. load and run them there

TF Serving's image (Dockerfile.serving, tag from genserve/deploy/TF_SERVING_VERSION) links the TensorFlow of
its own release, older than the TensorFlow that writes genserve's exports. A SavedModel can use ops or
op attributes an older runtime lacks; this script proves it does not. Step 1 runs in genserve's venv:
it exports tiny versions of every family (toy, vae, text, style, dream, gan and the conditional gan) and records
each signature's inputs and outputs on the graph-Session path. Step 2 runs in a side venv holding
`tensorflow-cpu==<that release's TF version>` and nothing of genserve: it loads each export the way
tensorflow_model_server does (graph Session, tag `serve`, SignatureDef tensor names), runs the same
inputs and compares. Exit code 0 only if every signature of every export runs and matches.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import numpy as np

TEXT = "she sells sea shells by the sea shore; the shells she sells are surely sea shells.\n" * 30


def _families(models: Path, work: Path) -> dict:
    """family -> (export path, {signature: inputs}) for tiny exports of every family."""
    from genserve.export.style import StyleModule, export_style
    from genserve.export.text import export_text
    from genserve.export.toy import ToyConfig, export_toy
    from genserve.export.vae import export_vae
    from genserve.training import text as text_training
    from genserve.training import vae as vae_training
    from genserve.training.style import StyleConfig

    rng = np.random.default_rng(0)
    out = {}
    out["toy"] = (export_toy(models, ToyConfig(bias=1.0)),
                  {"affine": {"x": rng.normal(size=(3, 1)).astype(np.float32)},
                   "scale": {"x": rng.normal(size=(2, 1)).astype(np.float32),
                             "factor": np.array([2, 3], np.int32)}})

    cfg = dataclasses.replace(vae_training.VAEConfig(), dataset="synthetic", epochs=1, batch_size=32)
    vae_training.train(cfg, work / "vae", verbose=0)
    out["vae"] = (export_vae(work / "vae", models),
                  {"decode": {"z": rng.normal(size=(5, 2)).astype(np.float32)},
                   "encode": {"images": rng.uniform(size=(2, 28, 28, 1)).astype(np.float32)}})

    tcfg = dataclasses.replace(text_training.TextConfig(), maxlen=20, step=3, units=16, batch_size=32,
                               epochs=1)
    text_training.train(tcfg, work / "text", verbose=0, log=lambda line: None, text=TEXT)
    path = export_text(work / "text", models)
    vocab = json.loads((path / "assets.extra" / "vocabulary.json").read_text())["chars"]
    ids = np.array([[vocab.index(ch) for ch in TEXT[i:i + 20]] for i in (0, 7)], np.int32)  # (2, 20)
    out["text"] = (path, {
        "next_char": {"ids": ids},
        "prime": {"ids": ids},
        "info": {"ids": np.zeros(2, np.int32)},
        "step": {"ids": ids[:, -1], "h": np.zeros((2, 16), np.float32), "c": np.zeros((2, 16), np.float32)},
        "generate": {"ids": ids, "temperature": np.array([0.0, 1.0], np.float32),
                     "length": np.array([25, 25], np.int32), "seed": np.array([3, 4], np.int64)},
    })

    scfg = StyleConfig(backbone="random-small", seed=3)
    module = StyleModule(scfg)
    spath = export_style(scfg, models, extractor=module.extractor)
    content = rng.uniform(0, 255, (1, 32, 40, 3)).astype(np.float32)
    style = rng.uniform(0, 255, (1, 36, 36, 3)).astype(np.float32)
    targets = _graph_run(spath, {"targets": {"content_image": content, "style_image": style}})["targets"]
    image = rng.uniform(0, 255, (1, 32, 40, 3)).astype(np.float32)
    out["style"] = (spath, {"targets": {"content_image": content, "style_image": style},
                            "step": {"image": image, **targets}})

    from genserve.data import mnist
    from genserve.export.dream import DreamConfig, DreamModule, export_dream
    from genserve.export.gan import export_gan
    from genserve.training import gan as gan_training

    dcfg = DreamConfig(backbone="random-small", seed=1)
    dmodule = DreamModule(dcfg)
    image = rng.uniform(0, 255, (1, 40, 48, 3)).astype(np.float32)
    out["dream"] = (export_dream(dcfg, models, features=dmodule.features), {
        "ascend": {"image": image, "step_size": np.array([0.01], np.float32),
                   "iterations": np.array([3], np.int32), "max_loss": np.array([np.inf], np.float32)},
        "gradient": {"image": image}})

    digits = mnist.synthetic(128, 8, seed=0)
    for family, classes in (("gan", 0), ("gan-conditional", 10)):  # the class drawn from z: argmax, one-hot
        gcfg = dataclasses.replace(gan_training.GANConfig(), dataset="synthetic", epochs=1, batch_size=32,
                                   latent_dim=16, gen_filters=(16, 8), disc_filters=(8, 16), grid=2,
                                   classes=classes)
        gan_training.train(gcfg, work / family, data=digits.x_train[..., None], labels=digits.y_train, verbose=0)
        out[family] = (export_gan(work / family, models, name=family), {
            "generate": {"z": rng.normal(size=(3, 16)).astype(np.float32)},
            "sample": {"seed": np.array([1, 2, 3], np.int64)}})
    return out


def _graph_run(path: Path, inputs_by_sig: dict) -> dict:
    """Run each signature on the graph-Session path. Returns {signature: {output: array}}."""
    import tensorflow as tf

    graph = tf.Graph()
    with tf.compat.v1.Session(graph=graph) as session:
        with graph.as_default():
            meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(path))
        results = {}
        for name, inputs in inputs_by_sig.items():
            sig = meta.signature_def[name]
            keys = sorted(sig.outputs)
            feed = {sig.inputs[k].name: v for k, v in inputs.items()}
            values = session.run([sig.outputs[k].name for k in keys], feed_dict=feed)
            # strings come back as object arrays of bytes: store them as fixed-width bytes
            results[name] = {k: v.astype("S") if v.dtype == object else v for k, v in zip(keys, values)}
    return results


def prepare(root: Path) -> None:
    """Export every family into root/models and record inputs + expected outputs in root/cases.npz."""
    import tensorflow as tf

    root.mkdir(parents=True, exist_ok=True)
    cases = {}
    index = {}
    for family, (path, inputs_by_sig) in _families(root / "models", root / "work").items():
        expected = _graph_run(path, inputs_by_sig)
        index[family] = {"path": str(Path(path).resolve().relative_to(root.resolve())), "signatures": {}}
        for sig, inputs in inputs_by_sig.items():
            keys_in = sorted(inputs)
            keys_out = sorted(expected[sig])
            index[family]["signatures"][sig] = {"inputs": keys_in, "outputs": keys_out}
            for k in keys_in:
                cases[f"{family}/{sig}/in/{k}"] = inputs[k]
            for k in keys_out:
                cases[f"{family}/{sig}/out/{k}"] = expected[sig][k]
    np.savez(root / "cases.npz", **cases)
    (root / "index.json").write_text(json.dumps({"tensorflow": tf.__version__, "families": index}, indent=1))
    print(f"prepared {len(index)} exports with TensorFlow {tf.__version__} in {root}")


def verify(root: Path) -> int:
    """Load every recorded export in this interpreter's TensorFlow and compare. Returns failures."""
    import tensorflow as tf

    index = json.loads((root / "index.json").read_text())
    cases = np.load(root / "cases.npz")
    failures = 0
    print(f"exports written by TensorFlow {index['tensorflow']}, run here on TensorFlow {tf.__version__}")
    for family, entry in index["families"].items():
        sigs = entry["signatures"]
        inputs_by_sig = {s: {k: cases[f"{family}/{s}/in/{k}"] for k in v["inputs"]} for s, v in sigs.items()}
        try:
            got = _graph_run(root / entry["path"], inputs_by_sig)
        except Exception as e:  # noqa: BLE001 - reported, counted
            print(f"FAIL {family}: {type(e).__name__}: {str(e).strip().splitlines()[0][:300]}")
            failures += 1
            continue
        for sig, spec in sigs.items():
            worst = 0.0
            ok = True
            for key in spec["outputs"]:
                want, have = cases[f"{family}/{sig}/out/{key}"], got[sig][key]
                if want.dtype.kind in "fc":
                    ok &= have.shape == want.shape and np.allclose(have, want, rtol=1e-4, atol=1e-4)
                    if have.shape == want.shape and want.size:
                        worst = max(worst, float(np.max(np.abs(have - want))))
                else:
                    ok &= have.shape == want.shape and np.array_equal(have, want)
            failures += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {family}/{sig}  (max abs diff {worst:.2e})")
    print("all exports run on this runtime" if not failures else f"{failures} failure(s)")
    return failures


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("prepare", "verify"):
        print(__doc__)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    root = Path(argv[1])
    if argv[0] == "prepare":
        prepare(root)
        return 0
    return 1 if verify(root) else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
