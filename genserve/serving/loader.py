"""Load a SavedModel the way `tensorflow_model_server` does: graph Session, `serve` tag, tensor names.

    python -m genserve.serving.loader models/vae/1          # lists signatures, checks variables

TF Serving's C++ loader (tensorflow/cc/saved_model/loader.cc, used by
tensorflow_serving/servables/tensorflow/saved_model_bundle_factory.cc) imports the MetaGraphDef tagged
`serve` into a fresh graph, creates a Session, runs the restore op (`saver_def.restore_op_name`) over
`variables/`, then the init op, and afterwards executes each request by feeding the SignatureDef's
input tensor names and fetching its output tensor names. It never rebuilds the Python object graph.
`tf.compat.v1.saved_model.loader.load` is the same loader; on it this module runs each signature as TF
Serving's `Session::Run(run_options, inputs, output_tensor_names, {}, &outputs)` does: one TF_SessionRun
with feeds and fetches resolved once per (signature, outputs) and the request's RunOptions
(`_SessionRunner`), so the server, the export check and the batch engine run exports as TF Serving would.

Nothing here imports gRPC: errors are `ServingError`s with canonical status names.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from genserve.wire.codec import dtype_name
from genserve.contract import DEFAULT_SIGNATURE_KEY
from genserve.serving.errors import ServingError
from genserve.serving.tf_session import LOOP_POOL, import_tensorflow, session_config, with_loop_pool

SERVE_TAG = "serve"
INIT_OP_SIGNATURE = "__saved_model_init_op"  # in every TF2 MetaGraphDef, not a serving signature
# TF's error code numbers (tensorflow/core/protobuf/error_codes.proto) -> canonical status names.
_TF_CODE_NAMES = {1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED",
                  5: "NOT_FOUND", 6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED",
                  9: "FAILED_PRECONDITION", 10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED",
                  13: "INTERNAL", 14: "UNAVAILABLE", 15: "DATA_LOSS", 16: "UNAUTHENTICATED"}


@dataclass(frozen=True)
class ArgSpec:
    """One signature tensor: key, graph tensor name, DataType enum, shape (None = any size; None
    overall = unknown rank)."""

    key: str
    tensor_name: str
    dtype: int
    shape: tuple | None

    def describe(self) -> str:
        if self.shape is None:
            return f"{dtype_name(self.dtype)}[*]"
        return f"{dtype_name(self.dtype)}[{','.join('?' if d is None else str(d) for d in self.shape)}]"

    def check_shape(self, dtype: int, shape: tuple | None) -> None:
        """Compare a request tensor's dtype and shape to this spec (before decoding its values).

        Raises:
            ServingError: INVALID_ARGUMENT naming the key, the expected spec and what came.
        """
        ok = dtype == self.dtype and shape is not None
        if ok and self.shape is not None:
            ok = len(shape) == len(self.shape) and all(
                want is None or want == got for want, got in zip(self.shape, shape))
        if not ok:
            got = dtype_name(dtype) + ("[unknown rank]" if shape is None
                                       else f"[{','.join(map(str, shape))}]")
            raise ServingError("INVALID_ARGUMENT",
                               f"input '{self.key}': expected {self.describe()}, got {got}")


def _arg_spec(key: str, info) -> ArgSpec:
    """ArgSpec of a SignatureDef TensorInfo."""
    shape = None
    if not info.tensor_shape.unknown_rank:
        shape = tuple(None if d.size < 0 else d.size for d in info.tensor_shape.dim)
    return ArgSpec(key, info.name, info.dtype, shape)


# Running a small graph in the calling thread (RunOptions.inter_op_thread_pool = -1) skips the
# hand-offs to TensorFlow's inter-op pool: measured on the char-LSTM `step` signature, in process,
# 177 -> 112 us per call. Two conditions, because an inline run cannot be interrupted by its deadline
# (DirectSession waits for the timeout only after the executor returns): the signature has no control
# flow (no while/cond: its work is bounded by its input size, which admission limits bound), and it is
# not measurably slower that way — the first INLINE_TRIALS runs alternate both modes, and the pool wins
# only when its median is below POOL_MARGIN times the inline median (a big convnet may be faster with
# inter-op parallelism). The margin, and dropping each mode's first run (the graph's warm-up, ~90 ms on
# the step), because a run's own time does not show what the pool costs the rest of the process: its
# threads take the run over and spin after it, on the cores the gRPC threads need. Measured on the
# step in `genserve serve` (2 cores, server CPU per call from /proc): inline ~650 us; a server that had
# picked the pool on a median of 8 runs each, ~830-920 us, 250 us of it in tf_Compute threads.
CONTROL_FLOW_OPS = frozenset({"While", "StatelessWhile", "If", "StatelessIf", "Case", "StatelessCase",
                              "Switch", "Merge", "Enter", "Exit", "NextIteration", "LoopCond"})
INLINE_TRIALS = 32
POOL_MARGIN = 0.8


@dataclass
class GraphSignature:
    """One signature, runnable by tensor names: `run({key: ndarray}) -> {key: ndarray}`."""

    name: str
    inputs: dict  # key -> ArgSpec
    outputs: dict  # key -> ArgSpec
    _session: object = field(repr=False, default=None)
    _callables: dict = field(repr=False, default_factory=dict)  # output keys -> callable
    _lock: threading.Lock = field(repr=False, default_factory=threading.Lock)
    inline_ok: bool = False  # no control flow: may run in the caller's thread
    pool: int = 0  # RunOptions.inter_op_thread_pool when not inline (LOOP_POOL: the model's own)
    inline: bool | None = None  # decided after INLINE_TRIALS runs (None: still measuring)
    _trials: dict = field(repr=False, default_factory=lambda: {True: [], False: []})
    memo: dict = field(repr=False, compare=False, default_factory=dict)  # derived once (execute.py, run)

    def expected(self) -> str:
        return ", ".join(f"'{k}': {s.describe()}" for k, s in sorted(self.inputs.items()))

    def _callable(self, output_keys: tuple) -> "_SessionRunner":
        fn = self._callables.get(output_keys)
        if fn is None:
            with self._lock:
                fn = self._callables.get(output_keys)
                if fn is None:
                    graph = self._session.graph
                    feeds = [graph.get_tensor_by_name(self.inputs[k].tensor_name) for k in self._input_order]
                    fetches = [graph.get_tensor_by_name(self.outputs[k].tensor_name) for k in output_keys]
                    fn = self._callables[output_keys] = _SessionRunner(self._session, feeds, fetches)
        return fn

    @property
    def _input_order(self) -> tuple:
        order = self.memo.get("input order")
        if order is None:
            order = self.memo["input order"] = tuple(sorted(self.inputs))
        return order

    def run(self, arrays: dict, output_keys=None, timeout_ms: int = 0) -> dict:
        """Execute the signature by tensor names.

        Args:
            arrays: input key -> numpy array (already checked against `inputs`).
            output_keys: which outputs to fetch (default: all, in sorted order).
            timeout_ms: RunOptions.timeout_in_ms (0 = none), as TF Serving passes the request deadline.
        Returns:
            output key -> numpy array.
        Raises:
            ServingError: the graph failed; code from the TF error (INTERNAL when it has none).
        """
        import tensorflow as tf

        keys = tuple(output_keys) if output_keys else tuple(sorted(self.outputs))
        fn = self._callable(keys)
        inline = self.inline
        if inline is None:  # measuring: alternate the two modes
            inline = self.inline_ok and len(self._trials[True]) <= len(self._trials[False])
        options = None
        pool = -1 if inline else self.pool
        if timeout_ms > 0 or pool:
            options = tf.compat.v1.RunOptions(timeout_in_ms=max(0, int(timeout_ms)), inter_op_thread_pool=pool)
        start = time.perf_counter()
        try:
            values = fn([arrays[k] for k in self._input_order], options)
        except tf.errors.OpError as e:
            raise ServingError(_TF_CODE_NAMES.get(e.error_code, "INTERNAL"),
                               f"signature {self.name!r} failed: {error_summary(e.message)}") from None
        if self.inline is None:
            self._decide(inline, time.perf_counter() - start)
        return dict(zip(keys, values))

    def _decide(self, inline: bool, seconds: float) -> None:
        if not self.inline_ok:
            self.inline = False
            return
        with self._lock:
            trials = self._trials
            trials[inline].append(seconds)
            if self.inline is None and min(len(trials[True]), len(trials[False])) >= INLINE_TRIALS // 2:
                median = lambda xs: sorted(xs[1:])[(len(xs) - 1) // 2]  # noqa: E731  (first run: warm-up)
                self.inline = median(trials[False]) >= POOL_MARGIN * median(trials[True])


class _SessionRunner:
    """One (signature, fetched outputs) of a graph Session, run as TF Serving runs a request: one
    `TF_SessionRun` with the request's RunOptions (tensorflow_serving/servables/tensorflow/
    predict_util.cc -> Session::Run). `Session.make_callable(..., feed_list=...)` does the same run
    through `Session.run`'s generic Python path (feed/fetch handlers, a graph lock per call):
    measured on the VAE's `decode` (B=1, in process, CPU time) 663 -> 449 us per call. The graph is
    finalized at load, so it is extended into the session once, here. Falls back to make_callable
    when TensorFlow's private session API is not there."""

    def __init__(self, session, feeds: list, fetches: list):
        self._session = session
        try:
            from tensorflow.python.client import pywrap_tf_session as tf_session

            self._new_buffer, self._delete_buffer = tf_session.TF_NewBufferFromString, tf_session.TF_DeleteBuffer
            self._run = tf_session.TF_SessionRun_wrapper
            self._feeds = [(t._as_tf_output(), t.dtype.as_numpy_dtype) for t in feeds]
            self._fetches = [t._as_tf_output() for t in fetches]
            session._extend_graph()
            self._generic = None
        except (ImportError, AttributeError):  # another TensorFlow: its public (slower) path
            self._generic = session.make_callable(fetches, feed_list=feeds, accept_options=True)

    def __call__(self, values: list, options=None) -> list:
        """Run with `values` fed in feed order and a RunOptions (or None); returns the fetched arrays.

        Raises:
            tf.errors.OpError: the run failed (TF's code); RuntimeError: the session is closed.
        """
        if self._generic is not None:
            return self._generic(*values, options=options)
        session = self._session
        if session._closed:
            raise RuntimeError("Attempted to use a closed Session.")  # what Session.run says
        # the dtype conversion Session.run makes (a no-op for arrays decoded against the signature)
        feed = {out: np.asarray(value, dtype) for (out, dtype), value in zip(self._feeds, values)}
        buffer = self._new_buffer(options.SerializeToString()) if options is not None else None
        try:
            return self._run(session._session, buffer, feed, self._fetches, [], None)
        finally:
            if buffer is not None:
                self._delete_buffer(buffer)


@dataclass
class GraphModel:
    """A SavedModel loaded into its own graph and Session (close() frees it)."""

    path: Path
    session: object
    meta_graph: object  # the MetaGraphDef tagged `serve`
    signatures: dict  # name -> GraphSignature (incl. serving_default)
    _var_checks: list = field(repr=False, default_factory=list)  # (variable name, VarIsInitializedOp)

    def signature(self, name: str | None, model: str = "") -> GraphSignature:
        sig = self.signatures.get(name or DEFAULT_SIGNATURE_KEY)
        if sig is None:
            known = ", ".join(sorted(self.signatures))
            raise ServingError("INVALID_ARGUMENT",
                               f"Serving signature name: \"{name}\" not found in signature def"
                               + (f" of {model}" if model else "") + f" (known: {known})")
        return sig

    def unrestored_variables(self) -> list[str]:
        """Names of resource variables the restore and init ops left uninitialised: each would fail
        the first request that reads it with "Resource ... does not exist" on TF Serving."""
        if not self._var_checks:
            return []
        done = self.session.run([op for _, op in self._var_checks])
        return sorted(name for (name, _), ok in zip(self._var_checks, done) if not ok)

    def require_restored(self) -> None:
        """Raise when a variable the signatures read stayed uninitialised after the restore op.

        Raises:
            RuntimeError: naming the variables (at most 8) — TF Serving would fail the first request
                that reads one with "Resource ... does not exist".
        """
        missing = self.unrestored_variables()
        if missing:
            raise RuntimeError(
                f"{len(missing)} variable(s) the signatures read are not restored by the SavedModel's "
                f"restore op (TF Serving's graph-mode load): {', '.join(missing[:8])}"
                f"{' ...' if len(missing) > 8 else ''}; every variable the signatures use must be "
                "reachable from the saved object (genserve.export.writer.save_version tracks them)")

    def close(self) -> None:
        self.session.close()


def error_summary(message: str) -> str:
    """The line of a TF error message that says what went wrong (graph errors start with "Graph
    execution error:", "Detected at node ..." and a stack trace; "[[{{node ...}}]]" tails dropped)."""
    lines = [line for line in (message or "").strip().splitlines() if line.strip()]
    for line in lines:
        if line[0].isspace() or line.startswith(("Graph execution error", "Detected at node",
                                                 "<stack traces unavailable>")):
            continue
        return line.split(" [Op:", 1)[0].split("\t [[", 1)[0].strip()
    return lines[0].strip() if lines else "unknown error"


def load_saved_model(path, tags=(SERVE_TAG,), config=None, loop_threads: int = 0) -> GraphModel:
    """Load `path` into a new graph Session by the MetaGraphDef tagged `tags` (TF Serving's path).

    Args:
        path: a SavedModel directory (`<models_dir>/<name>/<version>`).
        tags: the MetaGraphDef tags to load; TF Serving loads `serve`.
        config: a tf.compat.v1.ConfigProto for the Session (default `session_config()`).
        loop_threads: > 0: signatures with loops run on a pool of this many threads of the model's
            own (`with_loop_pool`; the most runs the model admits at once); 0: on the shared pool.
    Returns:
        A GraphModel with one GraphSignature per SignatureDef.
    Raises:
        RuntimeError: the SavedModel has no such MetaGraph, or its restore/init failed (TF's message).
    """
    tf = import_tensorflow()

    graph = tf.Graph()
    config = with_loop_pool(config or session_config(), loop_threads)
    session = tf.compat.v1.Session(graph=graph, config=config)
    from tensorflow.python.util import deprecation  # the TF1 loader warns it is deprecated; it is TF Serving's path

    try:
        with graph.as_default(), deprecation.silence():
            meta = tf.compat.v1.saved_model.loader.load(session, list(tags), str(path))
    except Exception as e:
        session.close()
        message = getattr(e, "message", None) or str(e)
        raise RuntimeError(f"cannot load {path} with tags {list(tags)}: {error_summary(message)}") from None
    signatures = {}
    for sig_name, sig_def in meta.signature_def.items():
        if sig_name == INIT_OP_SIGNATURE:
            continue
        signatures[sig_name] = GraphSignature(
            sig_name, {k: _arg_spec(k, v) for k, v in sig_def.inputs.items()},
            {k: _arg_spec(k, v) for k, v in sig_def.outputs.items()}, session)
    library = {f.signature.name: f for f in graph.as_graph_def().library.function}
    own_pool = len(config.session_inter_op_thread_pool) > LOOP_POOL
    for sig in signatures.values():
        sig.inline_ok = not _has_control_flow(graph, sig, library)
        sig.pool = LOOP_POOL if own_pool and not sig.inline_ok else 0
    with graph.as_default():  # built before finalize(): one VarIsInitializedOp per variable read
        var_checks = [(op.get_attr("shared_name").decode() or op.name,
                       tf.raw_ops.VarIsInitializedOp(resource=op.outputs[0]))
                      for op in _variables_used(graph, signatures)]
    graph.finalize()  # nothing may add ops after load (running by tensor names does not)
    return GraphModel(Path(path), session, meta, signatures, var_checks)


def _upstream_ops(graph, tensor_names) -> list:
    """Every op the given tensors depend on (data and control inputs), in the main graph."""
    seen, stack, ops = set(), [graph.get_tensor_by_name(name).op for name in tensor_names], []
    while stack:
        op = stack.pop()
        if op.name in seen:
            continue
        seen.add(op.name)
        ops.append(op)
        stack.extend(t.op for t in op.inputs)
        stack.extend(op.control_inputs)
    return ops


def _has_control_flow(graph, sig, library: dict) -> bool:
    """True when the ops behind `sig`'s outputs, or any function they call, include control flow."""
    functions = []
    for op in _upstream_ops(graph, [a.tensor_name for a in sig.outputs.values()]):
        if op.type in CONTROL_FLOW_OPS:
            return True
        functions.extend(v.func.name for v in op.node_def.attr.values() if v.func.name)
        if op.type in library:
            functions.append(op.type)
    visited = set()
    while functions:
        name = functions.pop()
        if name in visited or name not in library:
            continue
        visited.add(name)
        for node in library[name].node_def:
            if node.op in CONTROL_FLOW_OPS:
                return True
            if node.op in library:
                functions.append(node.op)
            functions.extend(v.func.name for v in node.attr.values() if v.func.name)
    return False


def _variables_used(graph, signatures: dict) -> list:
    """The VarHandleOps the signatures' outputs depend on (a TF2 SavedModel's graph also holds handle
    ops nothing reads, as Keras' ExportArchive exports do); only the used ones must be restored."""
    names = [a.tensor_name for sig in signatures.values() for a in sig.outputs.values()]
    return sorted((op for op in _upstream_ops(graph, names) if op.type == "VarHandleOp"),
                  key=lambda op: op.name)


def main(argv=None) -> int:
    path = Path((argv or sys.argv[1:] or ["."])[0])
    model = load_saved_model(path)
    for name, sig in sorted(model.signatures.items()):
        outs = ", ".join(f"'{k}': {s.describe()}" for k, s in sorted(sig.outputs.items()))
        print(f"{name}: {{{sig.expected()}}} -> {{{outs}}}")
    missing = model.unrestored_variables()
    print("variables: all restored" if not missing else f"variables NOT restored: {missing}")
    return 1 if missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
