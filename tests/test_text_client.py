"""Text client and `genserve generate` against a real embedded server on 127.0.0.1 port 0."""

from __future__ import annotations

import dataclasses
import json

import grpc
import numpy as np
import pytest
from typer.testing import CliRunner

from genserve.training.text import TextConfig

TEXT = "a rose by any other name would smell as sweet; so romeo would, were he not romeo call'd.\n" * 30
TINY = dataclasses.replace(TextConfig(), maxlen=12, step=3, units=16, batch_size=32, epochs=1)
SEED = "a rose by any other name"

tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def export_path(tiny_text_export):
    return tiny_text_export(TINY, TEXT)[2]


@pytest.fixture(scope="module")
def target(export_path):
    from genserve.serving.server import serve

    with serve(export_path.parent.parent) as address:
        yield address


@pytest.fixture()
def text_model(target):
    from genserve.clients import Client
    from genserve.clients.text import TextModel

    with Client(target, timeout=30) as client:
        yield TextModel(client)


def test_info_comes_from_the_server(text_model):
    info = text_model.info
    assert info.vocabulary == tuple(sorted(set(TEXT)))
    assert (info.maxlen, info.units) == (12, 16)


def test_all_streams_advance_together_one_request_per_step(text_model):
    from genserve.clients.text import generate

    text_model.info  # the info call is made once, up front
    result = generate(text_model, SEED, length=30, temperatures=[0.2, 0.5, 1.0, 1.2], samples=2, seed=1)
    assert result["requests"] == 1 + 29  # prime + one step per character after the first
    assert [(r["temperature"], r["sample"]) for r in result["samples"]] == [
        (t, k) for t in (0.2, 0.5, 1.0, 1.2) for k in (0, 1)]
    vocab = set(text_model.info.vocabulary)
    assert all(len(r["text"]) == 30 and set(r["text"]) <= vocab for r in result["samples"])
    assert result["seed"] == SEED[-12:]
    again = generate(text_model, SEED, length=30, temperatures=[0.2, 0.5, 1.0, 1.2], samples=2, seed=1)
    assert again["samples"] == result["samples"]  # same seed -> same text


def test_greedy_over_the_wire_equals_greedy_in_process(text_model, export_path):
    from genserve.clients.text import generate

    got = generate(text_model, SEED, length=25, temperatures=[0.0], seed=0)["samples"][0]["text"]
    loaded = tf.saved_model.load(str(export_path))
    ids = np.array([[text_model.info.vocabulary.index(ch) for ch in SEED[-12:]]], np.int32)
    out = loaded.signatures["prime"](ids=tf.constant(ids))
    expect = []
    for _ in range(25):
        nxt = int(np.argmax(out["logits"].numpy()[0]))
        expect.append(text_model.info.vocabulary[nxt])
        out = loaded.signatures["step"](ids=tf.constant([nxt], tf.int32), h=out["h"], c=out["c"])
    assert got == "".join(expect)


def test_google_stub_speaks_to_the_export_unchanged(target, text_model):
    """The `step` signature through tensorflow_serving.apis, as a TF Serving client would call it."""
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    h = np.random.default_rng(0).normal(size=(3, 16)).astype(np.float32)
    c = np.zeros((3, 16), np.float32)
    ids = np.array([0, 1, 2], np.int32)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "text"
    request.model_spec.signature_name = "step"
    for key, value in {"ids": ids, "h": h, "c": c}.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    with grpc.insecure_channel(target) as channel:
        reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    logits_tf = tf.make_ndarray(reply.outputs["logits"])
    logits_ours, (h_ours, _) = text_model.step(ids, (h, c))
    np.testing.assert_array_equal(logits_tf, logits_ours)
    np.testing.assert_array_equal(tf.make_ndarray(reply.outputs["h"]), h_ours)
    assert {"logits", "probabilities", "h", "c"} <= set(reply.outputs)


def test_bad_inputs_are_clear_errors(text_model, target):
    from genserve.clients import Client, GenserveError
    from genserve.clients.text import TextModel, UnknownCharactersError, generate

    with pytest.raises(UnknownCharactersError, match="'Z'.*'#'"):
        generate(text_model, "a Zoo#", length=5)
    assert generate(text_model, "a Zoo#", length=5, replace_unknown=" ", seed=0)["seed"] == "a  oo "
    with pytest.raises(ValueError, match="empty"):
        generate(text_model, "", length=5)
    with pytest.raises(ValueError, match="temperature"):
        generate(text_model, SEED, length=5, temperatures=[0.5, -1.0])
    with Client(target) as client, pytest.raises(GenserveError) as err:
        generate(TextModel(client, model="no-such-model"), SEED, length=5)
    assert err.value.code == grpc.StatusCode.NOT_FOUND


def test_server_side_generation_is_one_request_and_greedy_matches_stepping(text_model):
    from genserve.clients.text import generate

    text_model.info
    result = generate(text_model, SEED, length=25, temperatures=[0.0, 0.7], samples=2, seed=5,
                      server_side=True)
    assert result["requests"] == 1  # prime, sampling and stepping all inside one `generate` call
    stepped = generate(text_model, SEED, length=25, temperatures=[0.0], seed=0)["samples"][0]["text"]
    rows = result["samples"]
    assert [(r["temperature"], r["sample"]) for r in rows] == [(0.0, 0), (0.0, 1), (0.7, 0), (0.7, 1)]
    assert rows[0]["text"] == rows[1]["text"] == stepped  # T = 0 is argmax on both sides
    vocab = set(text_model.info.vocabulary)
    assert all(len(r["text"]) == 25 and set(r["text"]) <= vocab for r in rows)
    again = generate(text_model, SEED, length=25, temperatures=[0.0, 0.7], samples=2, seed=5, server_side=True)
    assert again["samples"] == rows  # same seed -> same text
    with pytest.raises(ValueError, match="top_k"):
        generate(text_model, SEED, length=5, top_k=3, server_side=True)


def test_server_side_generation_bad_arguments_are_invalid_argument(text_model):
    from genserve.clients import GenserveError

    with pytest.raises(GenserveError) as err:
        text_model.client.predict("text", {"ids": np.zeros((2, 3), np.int32),
                                           "temperature": np.ones(2, np.float32),
                                           "length": np.array([4, 5], np.int32),
                                           "seed": np.zeros(2, np.int64)}, signature="generate")
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "length must be the same in every row" in err.value.details


def _run(args):
    from genserve.cli import app

    return CliRunner().invoke(app, args)


def test_cli_generate_prints_the_book_shape_and_writes_json(target, tmp_path):
    out = tmp_path / "gen.json"
    result = _run(["generate", "--target", target, "--seed-text", SEED, "--length", "40",
                   "-t", "0.2", "-t", "1.0", "--seed", "3", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert f'--- seed: "{SEED[-12:]}"' in result.stdout
    assert "--- temperature 0.2" in result.stdout and "--- temperature 1.0" in result.stdout
    data = json.loads(out.read_text())
    assert data["requests"] == 1 + 1 + 39  # info + prime + one step per character after the first
    assert [r["temperature"] for r in data["samples"]] == [0.2, 1.0]
    assert data["samples"][0]["text"] in result.stdout


def test_cli_generate_server_side(target, tmp_path):
    out = tmp_path / "gen.json"
    result = _run(["generate", "--target", target, "--seed-text", SEED, "--length", "30", "-t", "0",
                   "-t", "1.0", "--seed", "3", "--server-side", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "--- temperature 0.0" in result.stdout and "--- temperature 1.0" in result.stdout
    data = json.loads(out.read_text())
    assert data["requests"] == 1 + 1  # info + generate
    assert all(len(r["text"]) == 30 for r in data["samples"])
    result = _run(["generate", "--target", target, "--length", "5", "--server-side", "--top-k", "3"])
    assert result.exit_code == 1 and result.stderr.startswith("error: ") and "--top-k" in result.stderr


def test_cli_single_stream_streams_characters(target):
    result = _run(["generate", "--target", target, "--seed-text", SEED, "--length", "15", "-t", "0"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[1] == "--- temperature 0.0"


@pytest.mark.parametrize("args, message", [
    (["--seed-text", "a Zoo#"], "not in the model's vocabulary: 'Z' '#'"),
    (["--seed-text", ""], "seed text is empty"),
    (["-t", "-0.5"], "temperatures must be finite and >= 0"),
    (["--model", "no-such-model"], "NOT_FOUND"),
    (["--replace-unknown", "ab"], "exactly one character"),
])
def test_cli_bad_inputs_exit_nonzero_without_traceback(target, args, message):
    result = _run(["generate", "--target", target, "--length", "5", *args])
    assert result.exit_code == 1
    assert message in result.stderr and result.stderr.startswith("error: ")
    assert "Traceback" not in result.output


def test_cli_train_and_export_errors(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    result = _run(["train", "text", "--corpus", str(empty), "--workdir", str(tmp_path / "w")])
    assert result.exit_code == 1 and "too short" in result.stderr
    result = _run(["export", "text", "--workdir", str(tmp_path / "nothing"), "--models-dir", str(tmp_path)])
    assert result.exit_code == 1 and "train first" in result.stderr
    result = _run(["train", "text", "--resume", "--workdir", str(tmp_path / "nothing")])
    assert result.exit_code == 1 and "nothing to resume" in result.stderr


def test_cli_plot_temperatures(tmp_path):
    (tmp_path / ".t.tmp.png").mkdir()  # the fixed temporary name the plot once used: taken
    result = _run(["plot", "temperatures", "--out", str(tmp_path / "t.png")])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".t.tmp.png", "t.png"]  # no temporary left
    assert result.exit_code == 0, result.output
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_train_resume_and_export_happy_path(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    work, models = tmp_path / "work", tmp_path / "models"
    common = ["--workdir", str(work), "--maxlen", "8", "--units", "8", "--batch-size", "64", "--quiet"]
    result = _run(["train", "text", "--corpus", str(corpus), "--epochs", "1", *common])
    assert result.exit_code == 0, result.output
    assert "epoch 1/1: loss" in result.stdout and "best val loss" in result.stdout
    result = _run(["train", "text", "--resume", "--epochs", "2", *common])
    assert result.exit_code == 0, result.output
    assert "epoch 2/2: loss" in result.stdout and "epoch 1/" not in result.stdout
    result = _run(["export", "text", "--workdir", str(work), "--models-dir", str(models), "--version", "7"])
    assert result.exit_code == 0, result.output
    assert (models / "text" / "7" / "saved_model.pb").exists()
    result = _run(["export", "text", "--workdir", str(work), "--models-dir", str(models), "--version", "7"])
    assert result.exit_code == 1 and "already exists" in result.stderr
