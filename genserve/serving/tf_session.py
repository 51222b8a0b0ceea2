"""The TensorFlow Session settings of a served model: TensorFlow imported without Keras, the
ConfigProto TF Serving's thread flags build, and each version's own inter-op pool for its loops.

    python -c "from genserve.serving.tf_session import session_config, with_loop_pool; print(with_loop_pool(session_config(), 4))"
"""

from __future__ import annotations

import sys

# Signatures with loops (`generate`, `ascend`, `next_char`) run on an inter-op pool of their model's
# own (LOOP_POOL). TensorFlow's executor runs a loop's next ops on the thread that ran the previous
# ones, so each running loop holds one inter-op thread until it ends; with the one shared pool (TF's
# default: as many threads as cores, TF Serving's too) two 20,000-character generations on 2 cores left
# every other model's requests queued behind them: a toy Predict waited out its 5 s deadline in 10 of
# 12 tries, and answered in 5-96 ms in 8 of 8 with a pool per model. Pool 0 stays the one shared pool.
LOOP_POOL = 1
SHARED_POOL_NAME = "genserve-inter-op"


def import_tensorflow():
    """`import tensorflow` without the Keras 3 it loads eagerly (TF 2.21's `__init__` imports
    `keras.src.optimizers` in a `try/except ImportError`, pulling pandas, pyarrow, matplotlib, PIL when
    installed), which graph Sessions never use: ~110 MB less RSS. `import keras`, `tf.keras` work later."""
    hide = "tensorflow" not in sys.modules and "keras" not in sys.modules
    if hide:  # `import keras...` then raises ImportError, which TF ignores
        sys.modules["keras"] = None
    try:
        import tensorflow as tf
    finally:
        if hide and sys.modules.get("keras", 0) is None:
            del sys.modules["keras"]
    return tf


def session_config(intra_op_threads: int = 0, inter_op_threads: int = 0):
    """The ConfigProto TF Serving's flags build (--tensorflow_intra_op_parallelism, ...; 0 = TF picks)."""
    tf = import_tensorflow()

    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=intra_op_threads,
                                      inter_op_parallelism_threads=inter_op_threads,
                                      allow_soft_placement=True)
    config.gpu_options.allow_growth = True
    return config


def with_loop_pool(config, threads: int):
    """A copy of the ConfigProto `config` whose Session has two inter-op pools: 0, shared by every
    Session made this way (inter_op_parallelism_threads threads, 0 = one per core, as TF's default
    pool), and LOOP_POOL, `threads` threads of the Session's own, for its signatures with loops. A
    config that already lists pools, or threads < 1, is returned as is."""
    if threads < 1 or len(config.session_inter_op_thread_pool):
        return config
    copy = type(config)()
    copy.CopyFrom(config)
    shared = copy.session_inter_op_thread_pool.add()
    shared.num_threads = config.inter_op_parallelism_threads
    shared.global_name = SHARED_POOL_NAME
    copy.session_inter_op_thread_pool.add().num_threads = threads
    return copy
