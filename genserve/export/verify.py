"""Prove an export before anyone can see it: its signatures and warmup requests checked against each
other, TF Serving's warmup file written, and the written folder loaded on TF Serving's own path (a graph
Session with the `serve` tag, every variable restored, the warmup replayed by tensor names).

    python -c "from genserve.export.toy import export_toy; print(export_toy('models'))"  # runs it

Reference: TF Serving's SavedModel warmup (https://www.tensorflow.org/tfx/serving/saved_model_warmup).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genserve.contract import DEFAULT_SIGNATURE_KEY
from genserve.files import atomic_path
from genserve.repository import MAX_WARMUP_RECORDS


class ExportError(RuntimeError):
    """An export cannot be written as asked; the message says why and what to do."""


def input_specs(fn) -> dict:
    """key -> tf.TensorSpec of a signature function's inputs (the keys TF gives the saved signature)."""
    args, kwargs = fn.structured_input_signature
    names = list(fn.function_type.parameters)
    specs = {(spec.name or names[i]): spec for i, spec in enumerate(args)}
    specs.update(kwargs)
    return specs


def check_signatures(signatures: dict, default: str) -> None:
    """Raise ExportError unless `signatures` are named dict-returning functions with `default` among them."""
    if not signatures:
        raise ExportError("no signatures given")
    if default not in signatures:
        raise ExportError(f"default signature {default!r} is not among {sorted(signatures)}")
    if DEFAULT_SIGNATURE_KEY in signatures:
        raise ExportError(f"do not name a signature {DEFAULT_SIGNATURE_KEY!r}; pass default= instead")
    for name, fn in signatures.items():
        input_specs(fn)
        if not isinstance(fn.structured_outputs, dict):
            raise ExportError(f"signature {name!r} must return a dict of named tensors "
                              f"(the contract's output keys), got {type(fn.structured_outputs).__name__}")


def check_warmup(name: str, signatures: dict, default: str,
                 warmup: list[tuple[str, dict[str, np.ndarray]]]) -> None:
    """Raise ExportError unless every warmup request names a signature and gives exactly its inputs."""
    if len(warmup) > MAX_WARMUP_RECORDS:
        raise ExportError(f"{len(warmup)} warmup requests; TF Serving reads at most {MAX_WARMUP_RECORDS}")
    for sig_name, inputs in warmup:
        fn = signatures[default] if sig_name == DEFAULT_SIGNATURE_KEY else signatures.get(sig_name)
        if fn is None:
            raise ExportError(f"warmup request for model {name!r} names unknown signature {sig_name!r}")
        expected = set(input_specs(fn))
        if set(inputs) != expected:
            raise ExportError(f"warmup request for {sig_name!r} has inputs {sorted(inputs)}, "
                              f"the signature takes {sorted(expected)}")


def write_warmup_file(path: Path, model_name: str,
                      requests: list[tuple[str, dict[str, np.ndarray]]]) -> Path:
    """Write TF Serving's warmup file: one PredictionLog (predict_log.request) per TFRecord.

    Args:
        path: the file to write (normally <version>/assets.extra/tf_serving_warmup_requests).
        model_name: goes into each request's model_spec.name.
        requests: (signature name, {input key: array}) pairs.
    Returns:
        `path`.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    with atomic_path(path) as tmp, tf.io.TFRecordWriter(str(tmp)) as writer:
        for sig_name, inputs in requests:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = sig_name
            for key, value in inputs.items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(np.asarray(value)))
            record = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(record.SerializeToString())
    return path


def read_warmup_file(path: Path) -> list:
    """The PredictionLog messages of a warmup file (for tests and for the embedded server's replay)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    records = []
    for raw in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        records.append(prediction_log_pb2.PredictionLog.FromString(raw))
    return records


def verify_export(path: Path, name: str) -> int:
    """Prove a written (not yet renamed) export on TF Serving's path before anyone can see it: load it
    into a graph Session with the `serve` tag, check every variable was restored, and replay its warmup
    requests by the SignatureDefs' tensor names (TF Serving replays them at load, and a failing one
    fails the load).

    Returns:
        How many warmup requests ran.
    Raises:
        ExportError: a variable is not restored or a warmup request fails; the export is discarded.
    """
    from genserve.serving.execute import replay_warmup
    from genserve.serving.loader import load_saved_model

    try:
        model = load_saved_model(path)
    except RuntimeError as e:
        raise ExportError(f"model {name!r}: the export does not load on TF Serving's path: {e}") from None
    try:
        model.require_restored()
        return replay_warmup(model, name)
    except RuntimeError as e:
        raise ExportError(f"model {name!r}: {e}") from None
    finally:
        model.close()
