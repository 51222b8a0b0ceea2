"""Versioned, atomic SavedModel writer in TF Serving's layout, plus `models.config` and warmup records.

    <models_dir>/
      models.config                      text-format ModelServerConfig listing every model
      <name>/<version>/saved_model.pb    one complete SavedModel per integer version
      <name>/<version>/assets.extra/tf_serving_warmup_requests   (optional) PredictionLog TFRecords

A version is written into a hidden temporary sibling (`<name>/.tmp-<version>-<pid>`) and renamed into
place, so a server polling the folder never sees half an export; a failed save removes its temporary
folder, and temporary folders left by dead processes are removed by the next save.

    python -c "from genserve.export.toy import export_toy; print(export_toy('out/models'))"

References: TF Serving's SavedModel warmup (https://www.tensorflow.org/tfx/serving/saved_model_warmup)
and model server config (https://www.tensorflow.org/tfx/serving/serving_config).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
from pathlib import Path

import numpy as np

from genserve.contract import DEFAULT_SIGNATURE_KEY
from genserve.data import atomic_write_bytes
from genserve.layout import (
    ASSETS_EXTRA,
    BATCHING_PARAMS_FILE,
    MAX_VERSION,
    MAX_WARMUP_RECORDS,
    TMP_RE,
    WARMUP_FILE,
    parse_version,
)
from genserve.serving.config import (
    DOCKER_PREFIX,
    MODELS_CONFIG,
    ModelEntry,
    list_versions,
    read_models_config,
    render_models_config,
    scan_model_dirs,
)

log = logging.getLogger(__name__)

WARMUP_DIR = ASSETS_EXTRA  # kept for callers of the old name
# Requests are concatenated along dim 0; these suit the small fixed-shape signatures (toy, VAE).
# max_batch_size also caps ONE request's rows (no large-batch splitting configured), so it must hold
# the biggest single request genserve sends: a 64x64 latent grid is 4,096 rows.
BATCHABLE_FIXED_SHAPE = """\
# tensorflow.serving.BatchingParameters for this model (text format), written by genserve.
max_batch_size { value: 8192 }
batch_timeout_micros { value: 2000 }
max_enqueued_batches { value: 100 }
"""
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ExportError(RuntimeError):
    """An export cannot be written as asked; the message says why and what to do."""


def input_signature(signature, **shapes) -> list:
    """The `tf.function` input_signature of a contract signature: one tf.TensorSpec per input, in the
    contract's order, named by its key.

    Args:
        signature: a `genserve.contract.SignatureSpec`.
        **shapes: key -> shape, for sizes the trained model fixes (e.g. `z=(None, latent_dim)`).
    Raises:
        ExportError: a shape override names a key the signature does not take.
    """
    import tensorflow as tf

    unknown = set(shapes) - {spec.key for spec in signature.inputs}
    if unknown:
        raise ExportError(f"signature {signature.name!r} has no input {sorted(unknown)}")
    dtype = lambda name: tf.string if name == "string" else tf.as_dtype(name)  # noqa: E731
    return [tf.TensorSpec(shapes.get(spec.key, spec.shape), dtype(spec.dtype), name=spec.key)
            for spec in signature.inputs]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def clean_stale_temps(model_dir: Path) -> list[Path]:
    """Remove `.tmp-<version>-<pid>` folders whose writer process is gone. Returns what was removed."""
    removed = []
    if not Path(model_dir).is_dir():
        return removed
    for path in Path(model_dir).iterdir():
        match = TMP_RE.match(path.name)
        if match and path.is_dir() and not _pid_alive(int(match.group(2))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def next_version(model_dir: Path) -> int:
    """1 + the largest version folder under `model_dir` (complete or not), or 1 for none.

    Only canonical int64 folder names count (genserve.layout.parse_version: "12", never "0012" or
    "²"), so a stray folder cannot push the numbering past what a server can hold.

    Raises:
        ExportError: the largest version is already MAX_VERSION (2**63-1).
    """
    model_dir = Path(model_dir)
    names = [p.name for p in model_dir.iterdir()] if model_dir.is_dir() else []
    taken = [v for v in map(parse_version, names) if v is not None]
    latest = max(taken, default=0)
    if latest >= MAX_VERSION:
        raise ExportError(f"{model_dir} already holds version {latest}, the largest int64; "
                          "give an explicit free --version")
    return latest + 1


def check_model_name(name: str) -> str:
    """A served model name that fits the models-directory layout (genserve.layout): letters, digits,
    '_', '.', '-', starting with a letter or digit, at most 255 characters, and not a file name the
    layout itself uses (models.config, in any case).

    Raises:
        ExportError: saying why.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name) or len(name) > 255:
        raise ExportError(f"model name {name!r} must be letters, digits, '_', '.', '-' "
                          "and start with a letter or digit (at most 255 characters)")
    if name.lower() == MODELS_CONFIG.lower():
        raise ExportError(f"model name {name!r} is the models directory's config file; choose another name")
    return name


def check_models_dir(models_dir) -> Path:
    """A models directory an export can go into: a folder (or nothing yet) whose models.config, if
    any, is a readable ModelServerConfig.

    Raises:
        ExportError: naming the file and what is wrong with it.
    """
    from genserve.serving.config import ConfigError

    models_dir = Path(models_dir)
    if models_dir.exists() and not models_dir.is_dir():
        raise ExportError(f"models directory {models_dir} is a file, not a folder")
    config = models_dir / MODELS_CONFIG
    if config.exists() and not config.is_file():
        raise ExportError(f"{config} is not a file; remove it")
    try:
        read_models_config(models_dir)
    except ConfigError as e:
        raise ExportError(f"{config} is not a valid models.config; fix or delete it "
                          f"({' '.join(str(e).split())[:300]})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ExportError(f"{config} cannot be read ({e}); fix or delete it") from None
    return models_dir


def _input_specs(fn) -> dict:
    """key -> tf.TensorSpec of a signature function's inputs (the keys TF gives the saved signature)."""
    args, kwargs = fn.structured_input_signature
    names = list(fn.function_type.parameters)
    specs = {(spec.name or names[i]): spec for i, spec in enumerate(args)}
    specs.update(kwargs)
    return specs


def track_captured_variables(module, signatures: dict) -> int:
    """Attach every variable the signatures' concrete functions capture to `module`, so the
    SavedModel's checkpoint holds them and its restore op restores them in a graph Session.

    Without this, a `tf.Module` holding Keras 3 models restores fine eagerly (`tf.saved_model.load`)
    but TF Serving's graph-mode loader leaves some variables uninitialised ("Resource .../bias does
    not exist"; keras-team/keras#20095, tensorflow/tensorflow#72963). Keras' `ExportArchive` does the
    same: it lists the tracked layers' variables on its trackable.

    Returns:
        How many variables were attached.
    """
    seen: dict[int, object] = {}
    for fn in signatures.values():
        for var in fn.graph.variables:  # the variables whose handles the function captures
            seen.setdefault(id(var), var)
    variables = list(seen.values())
    # A plain list attribute is tracked by tf.Module / AutoTrackable (wrapped in a ListWrapper).
    setattr(module, "_genserve_captured_variables", variables)
    return len(variables)


def _check_signatures(signatures: dict, default: str) -> None:
    if not signatures:
        raise ExportError("no signatures given")
    if default not in signatures:
        raise ExportError(f"default signature {default!r} is not among {sorted(signatures)}")
    if DEFAULT_SIGNATURE_KEY in signatures:
        raise ExportError(f"do not name a signature {DEFAULT_SIGNATURE_KEY!r}; pass default= instead")
    for name, fn in signatures.items():
        _input_specs(fn)
        if not isinstance(fn.structured_outputs, dict):
            raise ExportError(f"signature {name!r} must return a dict of named tensors "
                              f"(the contract's output keys), got {type(fn.structured_outputs).__name__}")


def _check_warmup(name: str, signatures: dict, default: str,
                  warmup: list[tuple[str, dict[str, np.ndarray]]]) -> None:
    if len(warmup) > MAX_WARMUP_RECORDS:
        raise ExportError(f"{len(warmup)} warmup requests; TF Serving reads at most {MAX_WARMUP_RECORDS}")
    for sig_name, inputs in warmup:
        fn = signatures[default] if sig_name == DEFAULT_SIGNATURE_KEY else signatures.get(sig_name)
        if fn is None:
            raise ExportError(f"warmup request for model {name!r} names unknown signature {sig_name!r}")
        expected = set(_input_specs(fn))
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

    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
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


def save_version(module, models_dir, name: str, signatures: dict, default: str,
                 version: int | None = None,
                 warmup: list[tuple[str, dict[str, np.ndarray]]] | None = None,
                 assets: dict[str, bytes] | None = None,
                 base_path_prefix: str = DOCKER_PREFIX,
                 batching: str | None = None) -> Path:
    """Write `module` as version `version` of model `name`, atomically, and refresh models.config.

    Args:
        module: the tf.Module (or Keras ExportArchive-like trackable) holding the variables.
        models_dir: root of the served tree (created if missing).
        name: model name (the folder name and the served name).
        signatures: signature name -> ConcreteFunction returning a dict keyed by output names.
        default: which of `signatures` is also registered as "serving_default".
        version: explicit version number; None = next after the largest existing one.
        warmup: (signature name, {input key: array}) requests for assets.extra/tf_serving_warmup_requests.
        assets: extra files (relative path -> bytes) written under assets.extra/ (e.g. config.json).
        base_path_prefix: prefix of base_path in models.config ("/models" for Dockerfile.serving).
        batching: a text-format BatchingParameters written as `<version>/batching_params.pbtxt`, which
            TF Serving reads with --enable_per_model_batching_parameters (Dockerfile.serving sets it).
            Give it only to models whose signatures have fixed non-batch dimensions: TF Serving's
            batcher fails a whole batch whose requests differ past dim 0 (BATCHABLE_FIXED_SHAPE).
            `genserve serve` batches those models the same way (genserve/serving/batching.py).
    Returns:
        The final version folder `<models_dir>/<name>/<version>`.
    Raises:
        ExportError: bad name, signatures, warmup or assets, or the version already exists.
    """
    import tensorflow as tf

    check_model_name(name)
    check_models_dir(models_dir)
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)
                                or not 1 <= version <= MAX_VERSION):
        raise ExportError(f"version must be an integer from 1 to {MAX_VERSION} (int64), got {version!r}")
    _check_signatures(signatures, default)
    if warmup:
        _check_warmup(name, signatures, default, warmup)
    for rel in assets or {}:
        if Path(rel).is_absolute() or ".." in Path(rel).parts or not rel:
            raise ExportError(f"asset path {rel!r} must be relative, inside assets.extra/")

    model_dir = Path(models_dir) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    for stale in clean_stale_temps(model_dir):
        log.info("removed stale temporary export %s", stale)
    if version is None:
        version = next_version(model_dir)
    final = model_dir / str(version)
    if final.exists():
        raise ExportError(f"version {version} of model {name!r} already exists at {final}; "
                          "versions are immutable: omit the version to write the next one")

    tmp = model_dir / f".tmp-{version}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        served = {DEFAULT_SIGNATURE_KEY: signatures[default], **signatures}
        track_captured_variables(module, signatures)
        tf.saved_model.save(module, str(tmp), signatures=served)
        if warmup:
            write_warmup_file(tmp / WARMUP_DIR / WARMUP_FILE, name, warmup)
        if batching is not None:
            (tmp / BATCHING_PARAMS_FILE).write_text(batching, encoding="utf-8")
        for rel, data in (assets or {}).items():
            target = tmp / WARMUP_DIR / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        verify_export(tmp, name)
        try:
            os.rename(tmp, final)  # atomic; fails if another writer took the number meanwhile
        except OSError as e:
            raise ExportError(f"could not move the export into {final} ({e.strerror}); "
                              "another writer may have taken that version") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("exported %s version %d to %s", name, version, final)
    write_models_config(models_dir, base_path_prefix)
    return final


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


def write_models_config(models_dir, base_path_prefix: str = DOCKER_PREFIX) -> Path:
    """(Re)write `<models_dir>/models.config` for every model folder in `models_dir`.

    Entries already in the file (their base_path and version_labels) are kept; model folders not yet
    listed are added with base_path `<prefix>/<name>`.

    Returns:
        The path of models.config.
    Raises:
        ConfigError: an existing models.config cannot be parsed (it is left untouched).
    """
    models_dir = Path(models_dir)
    entries = list(read_models_config(models_dir) or [])
    listed = {e.name for e in entries}
    prefix = base_path_prefix.rstrip("/")
    for name in scan_model_dirs(models_dir):
        if name not in listed:
            entries.append(ModelEntry(name, f"{prefix}/{name}" if prefix else name))
    path = models_dir / MODELS_CONFIG
    atomic_write_bytes(path, render_models_config(entries).encode())
    return path


def set_version_labels(models_dir, name: str, labels: dict[str, int]) -> Path:
    """Set (or, with value None, remove) version labels of model `name` in models.config.

    Raises:
        ExportError: the model is not in models.config, or a label names a version not on disk.
    """
    models_dir = Path(models_dir)
    write_models_config(models_dir)
    entries = read_models_config(models_dir) or []
    by_name = {e.name: e for e in entries}
    if name not in by_name:
        raise ExportError(f"model {name!r} is not in {models_dir / MODELS_CONFIG}")
    on_disk = set(list_versions(models_dir / name))
    merged = dict(by_name[name].version_labels)
    for label, version in labels.items():
        if version is None:
            merged.pop(label, None)
        elif version not in on_disk:
            raise ExportError(f"label {label!r}: model {name!r} has no version {version} "
                              f"(on disk: {sorted(on_disk)})")
        else:
            merged[label] = version
    entries = [dataclasses.replace(e, version_labels=merged) if e.name == name else e for e in entries]
    path = models_dir / MODELS_CONFIG
    atomic_write_bytes(path, render_models_config(entries).encode())
    return path


def set_version_policy(models_dir, name: str, policy: tuple) -> Path:
    """Set model `name`'s model_version_policy in models.config: ("latest", n), ("all",) or
    ("specific", (v, ...)). TF Serving serves only the latest version unless told otherwise.

    Raises:
        ExportError: the model is not in models.config or the policy is malformed.
    """
    models_dir = Path(models_dir)
    write_models_config(models_dir)
    entries = read_models_config(models_dir) or []
    if name not in {e.name for e in entries}:
        raise ExportError(f"model {name!r} is not in {models_dir / MODELS_CONFIG}")
    ok = (policy == ("all",) or (len(policy) == 2 and policy[0] == "latest" and int(policy[1]) >= 1)
          or (len(policy) == 2 and policy[0] == "specific" and policy[1]
              and all(int(v) >= 1 for v in policy[1])))
    if not ok:
        raise ExportError(f"bad version policy {policy!r}: use ('latest', n), ('all',) or ('specific', (v, ...))")
    if policy[0] == "specific":
        policy = ("specific", tuple(sorted(set(int(v) for v in policy[1]))))
    entries = [dataclasses.replace(e, version_policy=tuple(policy)) if e.name == name else e for e in entries]
    path = models_dir / MODELS_CONFIG
    atomic_write_bytes(path, render_models_config(entries).encode())
    return path
