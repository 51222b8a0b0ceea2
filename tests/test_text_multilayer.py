"""A 2-layer char-LSTM (tiny units, sequence targets, dropout): every signature on TF Serving's path
(graph Session, tensor names) equals the in-process Keras model, `saved_model_cli run` runs `step`,
and the unchanged clients work against a real server.

    .venv/bin/python -m pytest -q tests/test_text_multilayer.py
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from genserve.training.text import TextConfig

TEXT = "now is the winter of our discontent made glorious summer by this sun of york.\n" * 30
DEEP = dataclasses.replace(TextConfig(), maxlen=12, step=12, val_step=3, units=8, layers=2, dropout=0.1,
                           targets="all", optimizer="adam", learning_rate=0.01, schedule="cosine",
                           warmup_epochs=1, batch_size=16, epochs=2, patience=2)
SEED = "now is the winter"
TOL = 1e-5

tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def deep(tmp_path_factory):
    """(keras model, cfg, vocab, export path, graph model) of a 2-layer export."""
    from genserve.export.text import export_text
    from genserve.serving.loader import load_saved_model
    from genserve.training.text import load_checkpoint, train

    workdir = tmp_path_factory.mktemp("deep-work")
    models = tmp_path_factory.mktemp("deep-models")
    result = train(DEEP, workdir, verbose=0, log=lambda line: None, text=TEXT)
    assert result["epochs"] == 2 and np.isfinite(result["best_val_loss"])
    path = export_text(workdir, models)
    model, cfg, vocab = load_checkpoint(workdir)
    graph = load_saved_model(path)
    yield model, cfg, vocab, path, graph
    graph.close()


def _keras_last_logits(model, ids):
    out = model.predict(np.asarray(ids, np.int32), verbose=0)  # (B, T, V): targets="all"
    return out[:, -1]


def test_history_and_schedule(deep):
    path = deep[3]
    rows = (path / "assets.extra" / "history.csv").read_text().splitlines()
    assert rows[0] == "epoch,loss_nats,val_loss_nats,val_bits,learning_rate,seconds"
    assert [float(r.split(",")[4]) for r in rows[1:]] == [0.005, 0.01]  # warmup, then the cosine peak


def test_every_signature_on_the_graph_path_equals_keras(deep):
    model, cfg, vocab, _, graph = deep
    sig = graph.signatures
    ids = vocab.encode(TEXT[:36]).reshape(3, cfg.maxlen)  # (3, maxlen)
    expect = _keras_last_logits(model, ids)
    np.testing.assert_allclose(sig["next_char"].run({"ids": ids})["logits"], expect, atol=TOL)
    np.testing.assert_allclose(sig["serving_default"].run({"ids": ids})["logits"], expect, atol=TOL)
    primed = sig["prime"].run({"ids": ids})
    np.testing.assert_allclose(primed["logits"], expect, atol=TOL)
    assert primed["h"].shape == primed["c"].shape == (3, cfg.layers * cfg.units)  # (B, layers*units)
    out = sig["prime"].run({"ids": ids[:, :1]})  # then one step per remaining character
    for t in range(1, cfg.maxlen):
        out = sig["step"].run({"ids": ids[:, t], "h": out["h"], "c": out["c"]})
    np.testing.assert_allclose(out["logits"], expect, atol=TOL)
    np.testing.assert_allclose(out["h"], primed["h"], atol=TOL)
    info = sig["info"].run({"ids": np.zeros(2, np.int32)})
    assert info["layers"].tolist() == [2, 2] and info["units"].tolist() == [8, 8]
    assert info["maxlen"].tolist() == [12, 12]


def test_server_side_generate_equals_sampling_from_keras(deep):
    """Same seeds, same ids: the graph's `generate` against a loop over the Keras model with the same
    Gumbel noise (counter_uniform), at T = 0 (greedy) and T = 0.8."""
    from genserve.export.text import counter_uniform

    model, cfg, vocab, _, graph = deep
    seed_ids = np.tile(vocab.encode(SEED)[None, :], (2, 1))  # (2, T)
    temps, seeds, n = np.array([0.0, 0.8], np.float32), np.array([3, 2**40 + 7], np.int64), 8
    got = graph.signatures["generate"].run({"ids": seed_ids, "temperature": temps,
                                            "length": np.full(2, n, np.int32), "seed": seeds})["ids"]
    seq = seed_ids
    for i in range(n):
        logits = _keras_last_logits(model, seq).astype(np.float32)  # (2, V)
        gumbel = -np.log(-np.log(counter_uniform(tf.constant(seeds), tf.constant(i), len(vocab)).numpy()))
        scaled = np.where(temps[:, None] > 0, logits / np.maximum(temps[:, None], 1e-9) + gumbel, logits)
        seq = np.concatenate([seq, np.argmax(scaled, axis=-1).astype(np.int32)[:, None]], axis=1)
    np.testing.assert_array_equal(got, seq[:, -n:])


def test_saved_model_cli_runs_the_step_signature(deep, tmp_path):
    cfg, path = deep[1], deep[3]
    cli = Path(sys.executable).with_name("saved_model_cli")
    width = cfg.layers * cfg.units  # (B, layers*units) state
    arrays = {"ids": np.array([1, 2], np.int32), "h": np.zeros((2, width), np.float32),
              "c": np.zeros((2, width), np.float32)}
    for key, value in arrays.items():
        np.save(tmp_path / f"{key}.npy", value)
    inputs = ";".join(f"{key}={tmp_path / key}.npy" for key in arrays)
    proc = subprocess.run([str(cli), "run", "--dir", str(path), "--tag_set", "serve", "--signature_def", "step",
                           "--inputs", inputs], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Result for output key h:" in proc.stdout and "Result for output key logits:" in proc.stdout


def test_unchanged_clients_work_for_depth_two(deep):
    from genserve.clients import Client
    from genserve.clients.text import TextModel, generate
    from genserve.serving.server import serve

    model, cfg, vocab, path, graph = deep
    with serve(path.parent.parent, poll_seconds=0) as target, Client(target, timeout=30) as client:
        text_model = TextModel(client)
        assert (text_model.info.layers, text_model.info.units, text_model.info.state_size) == (2, 8, 16)
        assert text_model.version == 1 and text_model.pinned
        greedy = generate(text_model, SEED, length=10, temperatures=[0.0], seed=0)["samples"][0]["text"]
        one_rpc = generate(text_model, SEED, length=10, temperatures=[0.0], seed=0, server_side=True)
        assert one_rpc["samples"][0]["text"] == greedy
        seq = vocab.encode(SEED)[None, :]
        for _ in range(10):  # greedy continuation with the Keras model
            nxt = np.argmax(_keras_last_logits(model, seq), axis=-1).astype(np.int32)
            seq = np.concatenate([seq, nxt[:, None]], axis=1)
        assert greedy == vocab.decode(seq[0, -10:])
        both = generate(text_model, SEED, length=20, temperatures=[0.5, 1.2], samples=2, seed=4)
        assert [len(r["text"]) for r in both["samples"]] == [20] * 4


def test_cli_trains_a_deeper_model_with_the_new_options(tmp_path):
    import json

    from typer.testing import CliRunner

    from genserve.cli import app

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    work = tmp_path / "work"
    result = CliRunner().invoke(app, [
        "train", "text", "--corpus", str(corpus), "--workdir", str(work), "--maxlen", "8", "--units", "4",
        "--layers", "2", "--dropout", "0.1", "--targets", "all", "--step", "8", "--val-step", "3",
        "--optimizer", "adam", "--learning-rate", "0.01", "--schedule", "cosine", "--warmup-epochs", "1",
        "--patience", "1", "--epochs", "1", "--batch-size", "64", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "epoch 1/1: loss" in result.stdout and "lr 0.005" in result.stdout
    saved = json.loads((work / "config.json").read_text())
    assert (saved["layers"], saved["targets"], saved["schedule"], saved["patience"]) == (2, "all", "cosine", 1)
    bad = CliRunner().invoke(app, ["train", "text", "--corpus", str(corpus), "--workdir", str(work),
                                   "--schedule", "linear"])
    assert bad.exit_code == 1 and bad.stderr.startswith("error: schedule must be one of")
