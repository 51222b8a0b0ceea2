"""DCGAN training smoke on synthetic 28x28 data: checkpoint, sample grid, resume, corrupt checkpoint,
and the classifier-based evaluation with a tiny classifier.

    .venv/bin/python -m pytest -q tests/test_gan_training.py
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

tf = pytest.importorskip("tensorflow")

from genserve.data import mnist  # noqa: E402
from genserve.training import gan  # noqa: E402
from genserve.training import mnist_classifier as mc  # noqa: E402
from genserve.training.gan_model import ClassOfLatent  # noqa: E402

TINY = dataclasses.replace(gan.GANConfig(), dataset="synthetic", epochs=1, batch_size=32, latent_dim=8,
                           gen_filters=(16, 8), disc_filters=(8, 16), grid=3)
DATA = mnist.synthetic(96, 64, seed=0)


def test_config_round_trip_and_validation():
    assert gan.GANConfig.from_json(TINY.to_json()) == TINY
    assert 100 <= gan.GANConfig().latent_dim <= 128
    with pytest.raises(ValueError, match="label_noise"):
        gan.GANConfig(label_noise=0.7)
    with pytest.raises(ValueError, match="gen_filters"):
        gan.GANConfig(gen_filters=(8,))


def test_shapes_and_the_stateless_draw():
    cfg = gan.GANConfig(latent_dim=8, gen_filters=(8, 4), disc_filters=(4,))
    g, d = gan.build_generator(cfg), gan.build_discriminator(cfg)
    images = np.asarray(g(np.zeros((3, 8), np.float32)))
    assert images.shape == (3, 28, 28, 1) and 0 <= images.min() and images.max() <= 1
    assert tuple(d(images).shape) == (3, 1)
    z = np.asarray(gan.latent_from_seeds(np.array([1, 2, 1], np.int64), 8))
    assert z.shape == (3, 8)
    np.testing.assert_array_equal(z[0], z[2])
    assert not np.allclose(z[0], z[1])


def test_bce_with_logits_matches_hand_computation():
    logits = np.array([[2.0], [-1.0]], np.float32)
    targets = np.array([[1.0], [0.25]], np.float32)
    s = 1 / (1 + np.exp(-logits))
    expected = -np.mean(targets * np.log(s) + (1 - targets) * np.log(1 - s))
    assert float(gan.bce_with_logits(targets, logits)) == pytest.approx(expected, rel=1e-5)


def test_train_resume_and_corrupt_checkpoint(tmp_path):
    work = tmp_path / "work"
    state = gan.train(TINY, work, data=DATA.x_train[..., None], verbose=0)
    assert state["epoch"] == 1 and set(state["history"][0]) >= {"d_loss", "g_loss", "d_real", "d_fake"}
    assert json.loads((work / "state.json").read_text())["checkpoint"]["file"] == "ckpt-0001.weights.h5"
    assert gan.GANConfig.from_json((work / "config.json").read_text()) == TINY
    with Image.open(work / "samples" / "epoch_0001.png") as im:
        assert im.size == (3 * 28, 3 * 28)
    assert not [p for p in work.iterdir() if p.name.startswith(".")]  # no temporary files left

    # resume: the generator continues from the checkpoint, one more epoch, the old checkpoint is gone
    _, before = gan.load_generator(work)
    z = np.random.default_rng(0).standard_normal((2, TINY.latent_dim)).astype(np.float32)
    state = gan.train(dataclasses.replace(TINY, epochs=2), work, resume=True, data=DATA.x_train[..., None],
                      verbose=0)
    assert state["epoch"] == 2 and [h["epoch"] for h in state["history"]] == [1, 2]
    assert sorted(p.name for p in work.glob("ckpt-*")) == ["ckpt-0002.weights.h5"]
    _, after = gan.load_generator(work)
    assert not np.allclose(np.asarray(before(z)), np.asarray(after(z)))
    assert (work / "samples" / "epoch_0002.png").exists()

    with pytest.raises(ValueError, match="different shape"):
        gan.train(dataclasses.replace(TINY, latent_dim=9, epochs=3), work, resume=True,
                  data=DATA.x_train[..., None], verbose=0)

    # a corrupt checkpoint is refused with a clear message, on resume and on load
    ckpt = work / "ckpt-0002.weights.h5"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(gan.CheckpointError, match="corrupt.*sha256"):
        gan.train(dataclasses.replace(TINY, epochs=3), work, resume=True, data=DATA.x_train[..., None], verbose=0)
    with pytest.raises(gan.CheckpointError, match="corrupt"):
        gan.load_generator(work)
    ckpt.unlink()
    with pytest.raises(gan.CheckpointError, match="missing"):
        gan.load_generator(work)
    with pytest.raises(gan.CheckpointError, match="nothing to resume"):
        gan.train(TINY, tmp_path / "empty", resume=True, data=DATA.x_train[..., None], verbose=0)

    # a fresh run (no --resume) replaces what is there: its own checkpoint and grids only
    (work / "ckpt-0009.weights.h5").write_bytes(b"stale")
    state = gan.train(TINY, work, data=DATA.x_train[..., None], verbose=0)
    assert state["epoch"] == 1 and sorted(p.name for p in work.glob("ckpt-*")) == ["ckpt-0001.weights.h5"]
    assert sorted(p.name for p in (work / "samples").iterdir()) == ["epoch_0001.png"]
    gan.load_generator(work)


def test_classifier_cache_and_evaluation(tmp_path, monkeypatch):
    monkeypatch.setenv("GENSERVE_CACHE", str(tmp_path / "cache"))
    cfg = mc.ClassifierConfig(filters=(4, 8), convs_per_block=1, feature_units=16, epochs=1, batch_size=64)
    model, info = mc.load_or_train("synthetic", data=DATA, cfg=cfg)
    path = tmp_path / "cache" / "synthetic_classifier.keras"
    assert info["path"] == str(path) and path.exists() and not info["cached"]
    assert 0.0 <= info["test_accuracy"] <= 1.0
    again, info2 = mc.load_or_train("synthetic", cfg=cfg)  # from the cache: no data needed
    assert info2["cached"] and info2["test_accuracy"] == info["test_accuracy"]
    probs, feats = mc.classifier_outputs(again, DATA.x_test)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert feats.shape == (64, 16)
    np.testing.assert_allclose(mc.classifier_outputs(model, DATA.x_test)[0], probs, atol=1e-6)

    work = tmp_path / "gan"
    gan.train(TINY, work, data=DATA.x_train[..., None], verbose=0)
    result = gan.evaluate(work, samples=32, classifier=again, test_images=DATA.x_test)
    assert result["generated"] == 32 and result["reference"] == 32
    assert 1.0 <= result["score"] <= 10.0 and 1.0 <= result["real_score"] <= 10.0
    assert result["fid"] >= 0 and result["real_fid"] >= 0
    assert mc.fid(feats, feats) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name", sorted(gan.GAN_PRESETS))
def test_each_preset_trains_a_step_and_resumes(tmp_path, name):
    """The named recipes at their real sizes: one step on synthetic digits, then --resume continues
    with the saved recipe (config.json), and the exported generator is the averaged one when it has one."""
    cfg = gan.preset(name, dataset="synthetic", epochs=1, batch_size=32, monitor_samples=0, grid=2)
    work = tmp_path / name
    gan.train(cfg, work, data=DATA.x_train[:32, ..., None], labels=DATA.y_train[:32], verbose=0)
    resumed = gan.resolve_config(work, "demo", resume=True, epochs=2)  # the preset is not re-applied
    assert resumed == dataclasses.replace(cfg, epochs=2)
    state = gan.train(resumed, work, resume=True, data=DATA.x_train[:32, ..., None], labels=DATA.y_train[:32],
                      verbose=0)
    assert state["epoch"] == 2 and all(np.isfinite(h["d_loss"]) for h in state["history"])
    _, model, _ = gan.load_checkpoint(work)
    _, exported = gan.load_generator(work)
    z = np.random.default_rng(1).standard_normal((4, cfg.latent_dim)).astype(np.float32)
    if cfg.ema_decay:
        assert exported.name == "ema_generator" and ("r1" in state["history"][-1]) == bool(cfg.r1_gamma)
        # the average lags the raw generator: after 2 steps they differ, and it is what the checkpoint holds
        assert not np.allclose(np.asarray(exported(z)), np.asarray(model.generator(z)))
        np.testing.assert_allclose(np.asarray(exported(z)), np.asarray(model.ema_generator(z)), atol=1e-6)
        # what TF Serving's path serves is the averaged generator, alone
        from genserve.export.gan import export_gan
        from genserve.serving.loader import load_saved_model

        graph = load_saved_model(export_gan(work, tmp_path / "models"))
        try:
            assert graph.unrestored_variables() == []
            served = graph.signatures["generate"].run({"z": z})["images"]
        finally:
            graph.close()
        np.testing.assert_allclose(served, np.asarray(exported(z)), atol=1e-5)
    else:
        assert exported.name == "generator"


def test_ema_update_is_the_warmed_up_average(tmp_path):
    """After one step from equal weights: avg = d * w0 + (1 - d) * w1 with d = min(decay, 2 / 11)."""
    cfg = dataclasses.replace(TINY, ema_decay=0.999, dropout=0.0, label_noise=0.0)
    model = gan.new_model(cfg)
    w0 = [np.asarray(w) for w in model.generator.weights]
    model.fit(gan.make_dataset(DATA.x_train[:32, ..., None], cfg), epochs=1, verbose=0)
    w1 = [np.asarray(w) for w in model.generator.weights]
    d = min(0.999, 2 / 11)  # t = 1 generator step
    for avg, a, b in zip(model.ema_generator.weights, w0, w1):
        np.testing.assert_allclose(np.asarray(avg), d * a + (1 - d) * b, rtol=1e-5, atol=1e-6)


def test_r1_penalty_is_the_squared_input_gradient():
    cfg = dataclasses.replace(TINY, r1_gamma=1.0, dropout=0.0, label_noise=0.0)
    model = gan.new_model(cfg)
    real = tf.constant(DATA.x_train[:4, ..., None] / 255.0, tf.float32)
    _, penalty, _, _ = model._d_loss(real, real, 4)
    with tf.GradientTape() as tape:
        tape.watch(real)
        out = tf.reduce_sum(model.discriminator(real, training=True))
    expected = np.mean(np.sum(np.square(tape.gradient(out, real)), axis=(1, 2, 3)))
    assert float(penalty) == pytest.approx(float(expected), rel=1e-4) and float(penalty) > 0


def test_monitor_scores_the_exported_generator_each_epoch(tmp_path, monkeypatch):
    """monitor_samples > 0: every epoch's history holds score, fid and fid_ratio (classifier from the cache)."""
    monkeypatch.setenv("GENSERVE_CACHE", str(tmp_path / "cache"))
    tiny_clf = mc.ClassifierConfig(filters=(4, 8), convs_per_block=1, feature_units=16, epochs=1, batch_size=64)
    classifier, _ = mc.load_or_train("synthetic", data=DATA, cfg=tiny_clf)
    monitor = gan.Monitor(dataclasses.replace(TINY, monitor_samples=16))
    monitor.classifier, monitor.test_images = classifier, DATA.x_test  # what __call__ loads on first use
    out = monitor(gan.build_generator(TINY))
    assert set(out) == {"score", "fid", "fid_ratio"} and 1.0 <= out["score"] <= 10.0 and out["fid"] >= 0


def test_cli_preset_and_resume(tmp_path):
    from typer.testing import CliRunner

    from genserve.cli import app

    work = tmp_path / "w"
    args = ["train", "gan", "--workdir", str(work), "--dataset", "synthetic", "--train-limit", "32",
            "--batch-size", "32", "--epochs", "1", "--quiet"]
    monkey_env = {"GENSERVE_CACHE": str(tmp_path / "cache")}
    result = CliRunner().invoke(app, [*args, "--preset", "nope"], env=monkey_env)
    assert result.exit_code == 1 and "unknown GAN preset 'nope'; known: demo, best, wide, conditional" in result.stderr
    result = CliRunner().invoke(app, [*args, "--preset", "demo", "--label-noise", "0.1"], env=monkey_env)
    assert result.exit_code == 0, result.output
    saved = gan.GANConfig.from_json((work / "config.json").read_text())
    assert saved == gan.preset("demo", dataset="synthetic", train_limit=32, batch_size=32, epochs=1, label_noise=0.1)
    # --resume without the recipe's options keeps the saved recipe (here: label noise 0.1, not the default)
    result = CliRunner().invoke(app, ["train", "gan", "--workdir", str(work), "--resume", "--epochs", "2",
                                      "--quiet"], env=monkey_env)
    assert result.exit_code == 0, result.output
    assert "trained to epoch 2" in result.stdout
    assert gan.GANConfig.from_json((work / "config.json").read_text()).label_noise == 0.1


def test_new_levers_validate_and_old_configs_load():
    """gen_refine / loss / spectral_norm default off, so a config.json written before them still loads
    (and builds the same networks); bad values are refused."""
    old = json.loads(TINY.to_json())
    for key in ("gen_refine", "loss", "spectral_norm"):
        old.pop(key)
    assert gan.GANConfig.from_json(json.dumps(old)) == TINY
    assert [w.path for w in gan.build_discriminator(TINY).weights] == [
        "d_conv1/kernel", "d_conv1/bias", "d_conv2/kernel", "d_conv2/bias", "logit/kernel", "logit/bias"]
    with pytest.raises(ValueError, match="hinge"):
        gan.GANConfig(loss="hinge", label_noise=0.05)
    with pytest.raises(ValueError, match="loss"):
        gan.GANConfig(loss="wasserstein")
    with pytest.raises(ValueError, match="gen_refine"):
        gan.GANConfig(gen_refine=-1)


def test_gen_refine_adds_a_stride_1_layer_at_7x7():
    g = gan.build_generator(dataclasses.replace(TINY, gen_refine=12))
    assert tuple(g.get_layer("g_refine").output.shape) == (None, 7, 7, 12)
    assert np.asarray(g(np.zeros((2, 8), np.float32))).shape == (2, 28, 28, 1)


def test_hinge_losses():
    """D: E relu(1 - D(x)) + E relu(1 + D(G(z))); G: -E D(G(z)) (Lim & Ye 2017)."""
    model = gan.new_model(dataclasses.replace(TINY, loss="hinge", label_noise=0.0, dropout=0.0))
    real = tf.constant(DATA.x_train[:4, ..., None] / 255.0, tf.float32)
    fake = tf.constant(DATA.x_train[4:8, ..., None] / 255.0, tf.float32)
    d_loss, _, real_logits, fake_logits = model._d_loss(real, fake, 4)
    r, f = np.asarray(real_logits), np.asarray(fake_logits)
    expected = np.mean(np.maximum(0, 1 - r)) + np.mean(np.maximum(0, 1 + f))
    assert float(d_loss) == pytest.approx(float(expected), rel=1e-5)


def test_spectral_norm_keeps_each_discriminator_layer_at_unit_norm():
    """After training calls (one power iteration each), every wrapped kernel's largest singular value is ~1;
    without the option a freshly initialised kernel's is not."""
    cfg = dataclasses.replace(TINY, spectral_norm=True, dropout=0.0)
    d = gan.build_discriminator(cfg)
    images = DATA.x_train[:8, ..., None].astype(np.float32) / 255.0

    def sigmas(model):
        kernels = [w for w in model.weights if w.path.endswith("kernel")]
        return [np.linalg.norm(np.asarray(k).reshape(-1, k.shape[-1]), 2) for k in kernels]

    for _ in range(30):
        d(images, training=True)
    assert len(sigmas(d)) == 3 and np.allclose(sigmas(d), 1.0, atol=0.02)
    assert not np.allclose(sigmas(gan.build_discriminator(TINY)), 1.0, atol=0.02)


COND = dataclasses.replace(TINY, classes=4, dropout=0.0, label_noise=0.0)


def test_conditional_generator_reads_its_class_from_z():
    """classes > 0: the one-hot next to z is argmax z[:classes], so the served signature stays z -> image;
    iid N(0, 1) coordinates make the class uniform."""
    g = gan.build_generator(COND)
    z = np.random.default_rng(0).standard_normal((4000, COND.latent_dim)).astype(np.float32)
    one_hot = np.asarray(ClassOfLatent(COND.classes)(z))
    np.testing.assert_array_equal(one_hot.argmax(1), z[:, :COND.classes].argmax(1))
    assert one_hot.sum(1).tolist() == [1.0] * len(z)
    counts = np.bincount(one_hot.argmax(1), minlength=COND.classes) / len(z)
    assert np.all(np.abs(counts - 1 / COND.classes) < 0.03), counts
    assert np.asarray(g(z[:3])).shape == (3, 28, 28, 1)
    assert tuple(g.get_layer("g_dense").input.shape) == (None, COND.latent_dim + COND.classes)
    # moving the largest of the first `classes` coordinates changes the class, and so the image
    a, b = z[:1].copy(), z[:1].copy()
    a[0, :COND.classes], b[0, :COND.classes] = [3, 0, 0, 0], [0, 3, 0, 0]
    assert not np.allclose(np.asarray(g(a)), np.asarray(g(b)))


def test_projection_discriminator_adds_the_class_embedding_dot_features():
    """logit = psi(phi(x)) + <embed(y), phi(x)> (Miyato & Koyama 2018): the same image scored as two
    classes differs by exactly <embed(y1) - embed(y2), phi(x)>."""
    import keras

    d = gan.build_discriminator(COND)
    images = DATA.x_train[:3, ..., None].astype(np.float32) / 255.0
    phi = np.asarray(keras.Model(d.inputs[0], d.get_layer("d_flatten").output)(images))  # (3, F)
    embed = np.asarray(d.get_layer("d_class_embedding").embeddings)  # (classes, F)
    y1, y2 = np.array([0, 1, 2], np.int32), np.array([3, 3, 0], np.int32)
    l1, l2 = np.asarray(d([images, y1])), np.asarray(d([images, y2]))
    np.testing.assert_allclose((l1 - l2)[:, 0], np.sum((embed[y1] - embed[y2]) * phi, 1), rtol=1e-4, atol=1e-5)


def test_conditional_training_feeds_the_labels_and_checks_them(tmp_path):
    """The real labels reach D (its class embedding learns); images without labels are refused; an old
    config.json (no `classes`) loads as unconditional; bad class counts are refused."""
    model = gan.new_model(COND)
    before = np.asarray(model.discriminator.get_layer("d_class_embedding").embeddings).copy()
    gan.train(COND, tmp_path / "c", data=DATA.x_train[:64, ..., None], labels=DATA.y_train[:64] % 4, verbose=0)
    _, trained, _ = gan.load_checkpoint(tmp_path / "c")
    after = np.asarray(trained.discriminator.get_layer("d_class_embedding").embeddings)
    assert not np.allclose(before, after)
    with pytest.raises(ValueError, match="labels"):
        gan.train(COND, tmp_path / "d", data=DATA.x_train[:64, ..., None], verbose=0)
    # labels outside [0, classes) would index past D's class embedding: refused before training
    with pytest.raises(ValueError, match=r"labels must be in \[0, 4\)"):
        gan.train(COND, tmp_path / "d", data=DATA.x_train[:64, ..., None], labels=DATA.y_train[:64], verbose=0)
    with pytest.raises(ValueError, match="one per image"):
        gan.train(COND, tmp_path / "d", data=DATA.x_train[:64, ..., None], labels=DATA.y_train[:63] % 4,
                  verbose=0)
    old = json.loads(TINY.to_json())
    old.pop("classes")
    assert gan.GANConfig.from_json(json.dumps(old)).classes == 0
    for bad in (1, TINY.latent_dim + 1, -2):
        with pytest.raises(ValueError, match="classes"):
            dataclasses.replace(TINY, classes=bad)
