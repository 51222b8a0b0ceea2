"""The char-LSTM's data split and windows: the held-out tail of `--corpus`, the training text (the rest
of the corpus plus, with `extra_train`, the part of a larger corpus that is not the held-out text), and
the `tf.data` windows cut from int32 id arrays.

    python -c "from genserve.training.text_data import *; print(extra_training_text('abcdef', 'abcdefgh', 1))"
"""

from __future__ import annotations

import numpy as np

OVERLAP_PIECE = 200  # an extra corpus holding any 200-character piece of the held-out text is refused


def split_cut(length: int, val_fraction: float) -> int:
    """Index where the held-out tail starts: the last `val_fraction` of `length` characters."""
    return int(round(length * (1.0 - val_fraction)))


def split_ids(ids: np.ndarray, cfg) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous split: the first (1 - val_fraction) for training, the tail for validation.

    Raises:
        ValueError: when either part is shorter than one window plus its target.
    """
    cut = split_cut(len(ids), cfg.val_fraction)
    train, val = ids[:cut], ids[cut:]
    need = cfg.maxlen + 1
    if len(train) < need or len(val) < need:
        raise ValueError(
            f"corpus too short: {len(ids)} characters give {len(train)} for training and {len(val)} "
            f"for validation, each needs at least maxlen + 1 = {need}"
        )
    return train, val


def extra_training_text(text: str, extra: str, val_fraction: float, corpus: str = "--corpus",
                        extra_name: str = "--extra-train") -> str:
    """The part of `extra` to train on besides `text`'s own training part, never a held-out character.

    An extra corpus that begins with the whole of `text` (`shakespeare-full` continues `shakespeare`)
    contributes what follows it, a separate stream (no window crosses from the held-out tail into it);
    any other extra corpus is used whole, after checking that it holds no 200-character piece of the
    held-out text.

    Raises:
        ValueError: the extra corpus adds nothing, or it contains part of the held-out text.
    """
    if extra.startswith(text):
        rest = extra[len(text):]
        if not rest:
            raise ValueError(f"{extra_name} adds no text beyond {corpus}")
        return rest
    held = text[split_cut(len(text), val_fraction):]
    for start in range(0, max(len(held) - OVERLAP_PIECE, 0) + 1, OVERLAP_PIECE):
        if held[start:start + OVERLAP_PIECE] in extra:
            raise ValueError(f"{extra_name} contains the held-out text of {corpus} (its last "
                             f"{val_fraction:.0%}); use a corpus that begins with {corpus} or holds none of it")
    return extra


def make_dataset(ids, cfg, shuffle: bool, step: int | None = None, targets: str = "last",
                 batch_size: int | None = None):
    """Windows (x, y) = (ids[s:s+maxlen], ids[s+maxlen]) for s = 0, step, 2*step, ... as a tf.data pipeline.

    Only the int32 id array lives in memory; each batch is gathered on the fly.

    Args:
        ids: (L,) int32 character ids, or a list of such arrays: separate streams (a window never
            spans two of them).
        cfg: the config (maxlen, step, batch_size, seed).
        shuffle: reshuffle the windows every epoch.
        step: stride between windows (default cfg.step).
        targets: "last": y is the character after the window; "all": y = ids[s+1:s+maxlen+1].
        batch_size: default cfg.batch_size.

    Returns:
        A `tf.data.Dataset` of (x (B, maxlen) int32, y (B,) or (B, maxlen) int32).
    """
    import tensorflow as tf

    segments = [ids] if isinstance(ids, np.ndarray) else list(ids)
    bounds = np.cumsum([0] + [len(s) for s in segments])  # (S + 1,)
    starts = np.concatenate([first + np.arange(0, max(len(seg) - cfg.maxlen, 0), step or cfg.step, dtype=np.int64)
                             for first, seg in zip(bounds, segments)])  # (N,)
    table = tf.constant(np.concatenate(segments), dtype=tf.int32)  # (L,)
    offsets = tf.range(cfg.maxlen + 1, dtype=tf.int64)  # (maxlen + 1,)
    ds = tf.data.Dataset.from_tensor_slices(starts)
    if shuffle:
        ds = ds.shuffle(len(starts), seed=cfg.seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size or cfg.batch_size)

    def gather(s):  # s: (B,)
        window = tf.gather(table, s[:, None] + offsets[None, :])  # (B, maxlen + 1)
        return window[:, :-1], (window[:, 1:] if targets == "all" else window[:, -1])

    return ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
