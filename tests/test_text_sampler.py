"""The temperature sampler as a pure function, against fake step functions (no server, no TensorFlow)."""

from __future__ import annotations

import numpy as np
import pytest

from genserve.clients.text import check_temperatures, reweight, sample, sample_next

V = 12


def fixed_logits(b: int) -> np.ndarray:
    """(b, V) logits with a clear order: id 3 best, then 7, then the rest by index."""
    base = np.linspace(-2.0, 0.0, V)
    base[3], base[7] = 3.0, 2.0
    return np.tile(base, (b, 1))


def fake_step(ids, state):
    """A deterministic 'model': the next logits depend on the previous id and a step counter."""
    (count,) = state
    b = ids.shape[0]
    logits = np.sin(np.arange(V)[None, :] * (ids[:, None] + 1) + count[:, None])  # (B, V)
    return logits * 3.0, (count + 1,)


def entropy_of_samples(ids: np.ndarray) -> float:
    counts = np.bincount(ids.reshape(-1), minlength=V).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def test_zero_temperature_is_argmax():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(64, V))
    ids = sample_next(logits, np.zeros(64), rng)
    np.testing.assert_array_equal(ids, np.argmax(logits, axis=-1))


def test_zero_temperature_stream_follows_greedy_path():
    b, n = 2, 20
    state = (np.zeros(b),)
    out = sample(fake_step, state, fixed_logits(b), n, np.zeros(b), np.random.default_rng(1))
    # replay greedily by hand
    logits, st, expect = fixed_logits(1), (np.zeros(1),), []
    for _ in range(n):
        i = int(np.argmax(logits[0]))
        expect.append(i)
        logits, st = fake_step(np.array([i]), st)
    np.testing.assert_array_equal(out[0], expect)
    np.testing.assert_array_equal(out[1], expect)


def test_entropy_rises_with_temperature():
    temps = np.array([0.0, 0.2, 0.5, 1.0, 1.2, 3.0])
    rng = np.random.default_rng(2)
    draws = np.stack([sample_next(fixed_logits(len(temps)), temps, rng) for _ in range(3000)], axis=1)
    entropies = [entropy_of_samples(row) for row in draws]  # one per temperature
    assert entropies[0] == 0.0
    assert all(a < b for a, b in zip(entropies, entropies[1:])), entropies


def test_samples_follow_softmax_at_temperature_one():
    logits = fixed_logits(1)[0]
    p = np.exp(logits - logits.max())
    p /= p.sum()
    rng = np.random.default_rng(3)
    ids = sample_next(np.tile(logits, (20000, 1)), np.ones(20000), rng)
    freq = np.bincount(ids, minlength=V) / 20000
    # 4 standard errors of a binomial proportion with n = 20000
    assert np.all(np.abs(freq - p) <= 4 * np.sqrt(p * (1 - p) / 20000) + 1e-3), (freq, p)


def test_same_seed_same_text_different_seed_different_text():
    b, n = 4, 50
    temps = np.array([0.5, 1.0, 1.0, 1.2])
    run = lambda seed: sample(fake_step, (np.zeros(b),), fixed_logits(b), n, temps, np.random.default_rng(seed))
    np.testing.assert_array_equal(run(7), run(7))
    assert not np.array_equal(run(7), run(8))


def test_top_k_never_leaves_the_top_k():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(500, V))
    top2 = np.argsort(logits, axis=-1)[:, -2:]
    ids = sample_next(logits, np.full(500, 5.0), rng, top_k=2)  # a hot temperature spreads mass
    assert all(ids[i] in top2[i] for i in range(500))
    assert len(set(ids.tolist())) > 2  # it is really sampling, not a constant


def test_one_step_call_per_character_for_all_streams():
    calls = []

    def counting_step(ids, state):
        calls.append(ids.shape)
        return fake_step(ids, state)

    out = sample(counting_step, (np.zeros(8),), fixed_logits(8), 10, np.full(8, 0.7), np.random.default_rng(5))
    assert out.shape == (8, 10) and out.dtype == np.int32
    assert calls == [(8,)] * 9  # the last character needs no step


def test_reweight_matches_the_book_formula():
    p = np.array([0.5, 0.3, 0.2])
    for t in (0.2, 0.5, 1.0, 1.2):
        book = np.exp(np.log(p) / t)
        book /= book.sum()
        np.testing.assert_allclose(reweight(p, t), book, rtol=1e-12)
    np.testing.assert_array_equal(reweight(p, 0.0), [1.0, 0.0, 0.0])


@pytest.mark.parametrize("bad", [[], [-0.1], [1.0, float("nan")], [float("inf")]])
def test_bad_temperatures_are_refused(bad):
    with pytest.raises(ValueError, match="temperature"):
        check_temperatures(bad)


def test_client_and_cli_modules_do_not_import_tensorflow():
    import subprocess
    import sys

    code = ("import sys, genserve.clients.text, genserve.cli, genserve.training.text, genserve.data.text; "
            "bad = [m for m in ('tensorflow', 'keras') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
