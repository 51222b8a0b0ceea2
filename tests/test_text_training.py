"""Text corpus handling and a tiny-config training smoke test (with resume), on synthetic text."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from genserve.data import DataError
from genserve.data.text import Vocabulary, load_corpus, markdown_play_to_text
from genserve.training.text import TEXT_PRESETS, TextConfig, preset
from genserve.training.text_data import split_ids

TINY_TEXT = "the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs.\n" * 30
TINY = dataclasses.replace(TextConfig(), maxlen=10, step=3, units=16, batch_size=32, epochs=1)


def test_markdown_play_becomes_speaker_lines():
    md = ("# Hamlet\n\n## ACT I\n\n### SCENE I. Elsinore.\n\n_Enter BERNARDO and FRANCISCO_\n\n"
          "**BERNARDO**  \nWho's there?\n\n**FRANCISCO**  \nNay, answer me: stand, and unfold  \nyourself \\[aside\\].\n")
    assert markdown_play_to_text(md) == ("BERNARDO:\nWho's there?\n\nFRANCISCO:\n"
                                         "Nay, answer me: stand, and unfold\nyourself [aside].\n")


def test_file_corpus_lower_and_max_chars(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("Hello World\n", encoding="utf-8")
    assert load_corpus(path) == "hello world\n"
    assert load_corpus(path, lower=False, max_chars=5) == "Hello"


@pytest.mark.parametrize("content", [b"", b"x", b"\xff\xfe\x00bad"])
def test_empty_short_or_binary_corpus_is_a_clear_error(tmp_path, content):
    path = tmp_path / "c.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match="too short|UTF-8"):
        load_corpus(path)


def test_unknown_corpus_name_lists_the_choices():
    with pytest.raises(DataError, match="shakespeare"):
        load_corpus("no-such-corpus-or-file")


def test_vocabulary_round_trip_and_unknowns():
    vocab = Vocabulary.from_text("banana")
    assert vocab.chars == ("a", "b", "n")
    assert vocab.decode(vocab.encode("nab")) == "nab"
    assert Vocabulary.from_json(vocab.to_json()) == vocab
    with pytest.raises(ValueError, match="'xz'"):
        vocab.encode("bxzx")


def test_split_is_contiguous_and_checks_length():
    ids = np.arange(1000, dtype=np.int32)
    train, val = split_ids(ids, TINY)
    assert len(train) == 900 and train[-1] + 1 == val[0]
    with pytest.raises(ValueError, match="too short"):
        split_ids(ids[:50], TINY)


def test_dataset_windows_are_the_next_character():
    from genserve.training.text_data import make_dataset

    ids = np.arange(100, dtype=np.int32)
    x, y = next(iter(make_dataset(ids, TINY, shuffle=False)))
    x, y = x.numpy(), y.numpy()
    assert x.shape == (30, 10) and x.dtype == np.int32  # (100 - 10) / 3 = 30 windows, one batch
    np.testing.assert_array_equal(x[:, 0], np.arange(0, 90, 3))
    np.testing.assert_array_equal(y, x[:, -1] + 1)


def test_training_smoke_then_resume(tmp_path):
    from genserve.training.text import load_checkpoint, train

    lines = []
    result = train(TINY, tmp_path, verbose=0, log=lines.append, text=TINY_TEXT)
    assert result["epochs"] == 1 and math.isfinite(result["best_val_loss"])
    assert len(lines) == 1 and "nats/char" in lines[0] and "bits/char" in lines[0]
    for name in ("best.keras", "last.keras", "config.json", "vocabulary.json", "history.csv"):
        assert (tmp_path / name).exists(), name
    saved = TextConfig.from_json((tmp_path / "config.json").read_text())
    assert saved.units == 16 and saved.maxlen == 10

    result2 = train(dataclasses.replace(TINY, epochs=3), tmp_path, resume=True, verbose=0,
                    log=lines.append, text=TINY_TEXT)
    assert result2["epochs"] == 3
    assert [ln.split(":")[0] for ln in lines] == ["epoch 1/1", "epoch 2/3", "epoch 3/3"]
    assert result2["best_val_loss"] < result["best_val_loss"]  # resumed weights kept learning
    assert len((tmp_path / "history.csv").read_text().splitlines()) == 1 + 3
    model, cfg, vocab = load_checkpoint(tmp_path)
    assert cfg.epochs == 3 and len(vocab) == len(set(TINY_TEXT))
    assert json.loads((tmp_path / "state.json").read_text())["epoch"] == 3


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    from genserve.training.text import train

    with pytest.raises(FileNotFoundError, match="train first"):
        train(TINY, tmp_path, resume=True, verbose=0, text=TINY_TEXT)


def test_early_stopping_and_plateau_schedule(tmp_path):
    """A learning rate too small to move the weights: no epoch after the first improves, so the rate
    halves after epoch 2 (plateau) and training stops after `patience` = 2 epochs without improvement."""
    from genserve.training.text import train

    cfg = dataclasses.replace(TINY, epochs=6, patience=2, schedule="plateau", learning_rate=1e-12)
    lines = []
    result = train(cfg, tmp_path, verbose=0, log=lines.append, text=TINY_TEXT)
    assert result["epochs"] == 3 and result["early_stopped"]
    assert lines[-1].startswith("early stop: no better val loss for 2 epochs (patience 2)")
    rates = [float(r.split(",")[4]) for r in (tmp_path / "history.csv").read_text().splitlines()[1:]]
    assert rates == [1e-12, 1e-12, 5e-13]
    assert json.loads((tmp_path / "state.json").read_text())["epochs_since_best"] == 2


@pytest.mark.parametrize("change, message", [
    ({"layers": 0}, "layers must be >= 1"), ({"dropout": 1.0}, "dropout"), ({"schedule": "linear"}, "schedule"),
    ({"optimizer": "sgd"}, "optimizer"), ({"targets": "some"}, "targets"), ({"patience": 0}, "patience"),
    ({"recurrent_dropout": -0.1}, "recurrent_dropout"), ({"weight_decay": 0.1}, "weight_decay needs optimizer 'adamw'"),
])
def test_config_rejects_bad_values(change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(TINY, **change)


def test_cosine_schedule_with_warmup():
    cfg = dataclasses.replace(TINY, epochs=6, schedule="cosine", warmup_epochs=1, learning_rate=0.01,
                              min_lr_fraction=0.1)
    rates = [cfg.epoch_learning_rate(e) for e in range(6)]
    assert rates[0] == pytest.approx(0.005) and rates[1] == pytest.approx(0.01)
    assert rates[-1] == pytest.approx(0.001) and all(a > b for a, b in zip(rates[1:], rates[2:]))


@pytest.mark.parametrize("name", sorted(TEXT_PRESETS))
def test_each_preset_trains_and_resumes_from_the_cli(tmp_path, name):
    """`train text --preset NAME` at the preset's real sizes, one epoch of a tiny corpus (a few steps),
    then `--resume --epochs 2` continues with the saved recipe (config.json), not the defaults. A
    preset's extra training corpus is a tiny one too, continuing the tiny corpus (as shakespeare-full
    continues shakespeare)."""
    from typer.testing import CliRunner

    from genserve.cli import app
    from genserve.training.text import load_checkpoint

    corpus, extra = tmp_path / "corpus.txt", tmp_path / "extra.txt"
    corpus.write_text(TINY_TEXT[:1800], encoding="utf-8")  # preset "best": ~2 steps of 64 windows
    extra.write_text(TINY_TEXT[:2400], encoding="utf-8")
    work = tmp_path / "work"
    common = ["train", "text", "--workdir", str(work), "--quiet"]
    changes = {"step": 30} if name == "book" else {}
    if TEXT_PRESETS[name].get("extra_train"):
        changes["extra_train"] = str(extra)
    options = [x for k, v in changes.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    result = CliRunner().invoke(app, [*common, "--preset", name, "--corpus", str(corpus), "--epochs", "1", *options])
    assert result.exit_code == 0, result.output
    assert TextConfig.from_json((work / "config.json").read_text()) == preset(
        name, corpus=str(corpus), epochs=1, **changes)
    result = CliRunner().invoke(app, [*common, "--resume", "--epochs", "2"])
    assert result.exit_code == 0, result.output
    assert "epoch 2/2" in result.stdout
    model, cfg, _ = load_checkpoint(work, "last.keras")
    assert cfg == preset(name, corpus=str(corpus), epochs=2, **changes)
    lstm = model.get_layer("lstm")
    assert (lstm.units, lstm.recurrent_dropout) == (cfg.units, cfg.recurrent_dropout)
    assert type(model.optimizer).__name__.lower() == cfg.optimizer


def test_best_preset_extra_corpus_can_be_switched_off(tmp_path):
    """`--preset best --extra-train none`: only --corpus (the preset's shakespeare-full would not
    continue a corpus of one's own)."""
    from typer.testing import CliRunner

    from genserve.cli import app

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TINY_TEXT[:1800], encoding="utf-8")
    work = tmp_path / "work"
    result = CliRunner().invoke(app, ["train", "text", "--workdir", str(work), "--quiet", "--preset", "best",
                                      "--corpus", str(corpus), "--epochs", "1", "--extra-train", "none",
                                      "--units", "8"])
    assert result.exit_code == 0, result.output
    assert TextConfig.from_json((work / "config.json").read_text()).extra_train is None


def test_unknown_preset_is_a_one_line_error(tmp_path):
    from typer.testing import CliRunner

    from genserve.cli import app

    result = CliRunner().invoke(app, ["train", "text", "--preset", "nope", "--workdir", str(tmp_path / "w")])
    assert result.exit_code == 1 and result.stderr.startswith("error: unknown text preset 'nope'; known: book, best")


def _marked_corpus():
    """A corpus whose held-out tail (its last 10 %) alone holds the characters 'X' and 'Y', and an
    extra corpus that continues it (as shakespeare-full continues shakespeare)."""
    body = TINY_TEXT[:900]
    cut = int(round(1000 * 0.9))
    text = body[:cut] + ("XY" * 50)[: 1000 - cut]  # 1,000 characters, the last 100 held out
    extra = text + TINY_TEXT[::-1][:700]
    return text, extra


def test_extra_training_text_never_holds_a_held_out_character():
    """With an extra corpus, the training stream is the corpus's first 90 % and the extra corpus beyond
    the corpus, as separate streams: no training window (input or target) ever holds a held-out character,
    while validation still is exactly the corpus's last 10 %."""
    from genserve.training.text_data import extra_training_text, make_dataset

    text, extra = _marked_corpus()
    rest = extra_training_text(text, extra, 0.1)
    assert rest == extra[len(text):] and "X" not in rest
    vocab = Vocabulary.from_text(text + rest)
    train_ids, val_ids = split_ids(vocab.encode(text), TINY)
    assert vocab.decode(val_ids) == text[900:]
    held = {vocab.index()["X"], vocab.index()["Y"]}
    seen = 0
    for targets in ("last", "all"):
        for x, y in make_dataset([train_ids, vocab.encode(rest)], dataclasses.replace(TINY, step=1), shuffle=True,
                                 targets=targets):
            ids = np.concatenate([x.numpy().ravel(), y.numpy().ravel()])
            assert not held & set(ids.tolist())
            seen += len(x)
    # every window of both streams: (900 - 10) + (700 - 10) starts, once per targets mode
    assert seen == 2 * ((900 - 10) + (700 - 10))


def test_extra_training_text_refuses_overlap_and_nothing_new():
    from genserve.training.text_data import extra_training_text

    text, extra = _marked_corpus()
    with pytest.raises(ValueError, match="adds no text beyond"):
        extra_training_text(text, text, 0.1)
    other = "a different book. " * 40
    assert extra_training_text(text, other, 0.1) == other  # holds none of the held-out text: used whole
    leaky = other + text[850:]  # not a continuation, and it holds the held-out tail
    with pytest.raises(ValueError, match="contains the held-out text"):
        extra_training_text(text, leaky, 0.1)


def test_extra_train_from_the_cli_trains_on_both_and_resumes(tmp_path):
    """`--extra-train FILE`: the vocabulary covers both corpora (the extra one's new characters too),
    validation is the corpus's own tail, --resume reloads both; bad values are one-line errors."""
    from typer.testing import CliRunner

    from genserve.cli import app
    from genserve.training.text import load_checkpoint

    text, extra = _marked_corpus()
    corpus, more = tmp_path / "corpus.txt", tmp_path / "more.txt"
    corpus.write_text(text, encoding="utf-8")
    more.write_text(extra + "0123456789\n" * 3, encoding="utf-8")
    work = tmp_path / "work"
    common = ["train", "text", "--workdir", str(work), "--quiet", "--maxlen", "10", "--units", "8",
              "--step", "5", "--batch-size", "64"]
    result = CliRunner().invoke(app, [*common, "--corpus", str(corpus), "--extra-train", str(more), "--epochs", "1"])
    assert result.exit_code == 0, result.output
    _, cfg, vocab = load_checkpoint(work, "last.keras")
    assert cfg.extra_train == str(more) and set("0123456789xy") <= set(vocab.chars)  # lower-cased
    result = CliRunner().invoke(app, ["train", "text", "--workdir", str(work), "--quiet", "--resume", "--epochs", "2"])
    assert result.exit_code == 0 and "epoch 2/2" in result.stdout, result.output
    for bad, message in ((str(tmp_path / "nope.txt"), "error: --extra-train: corpus "),
                         (str(corpus), "error: --extra-train " + str(corpus) + " adds no text beyond --corpus")):
        result = CliRunner().invoke(app, [*common, "--corpus", str(corpus), "--extra-train", bad, "--force"])
        assert result.exit_code == 1 and result.stderr.startswith(message), result.output
        assert len(result.stderr.strip().splitlines()) == 1
