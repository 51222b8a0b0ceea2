"""Versioned, atomic SavedModel writer in TF Serving's layout (genserve.repository), keeping its
`models.config` up to date.

    <models_dir>/
      models.config                      text-format ModelServerConfig listing every model
      <name>/<version>/saved_model.pb    one complete SavedModel per integer version
      <name>/<version>/assets.extra/tf_serving_warmup_requests   (optional) PredictionLog TFRecords

A version is written into a hidden temporary sibling (`<name>/.tmp-<version>-<pid>`), proven on TF
Serving's path (genserve.export.verify) and renamed into place, so a server polling the folder never
sees half an export; a failed save removes its temporary folder, and temporary folders left by dead
processes are removed by the next save.

    python -c "from genserve.export.toy import export_toy; print(export_toy('models'))"

Reference: TF Serving's model server config (https://www.tensorflow.org/tfx/serving/serving_config).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from genserve.contract import DEFAULT_SIGNATURE_KEY
from genserve.export.verify import (
    ExportError,
    check_signatures,
    check_warmup,
    verify_export,
    write_warmup_file,
)
from genserve.files import atomic_write, fsync_dir
from genserve.repository import (
    ASSETS_EXTRA,
    BATCHING_PARAMS_FILE,
    DOCKER_PREFIX,
    EXPORT_TMP_RE,
    MAX_VERSION,
    MODELS_CONFIG,
    WARMUP_PATH,
    ConfigError,
    RepositoryError,
    export_temp_dir,
    next_free_version,
    outside,
    read_models_config,
    write_models_config,
)
from genserve.repository import check_model_name as _check_name

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


CONFIG_ASSET = "config.json"  # the model's config, under assets.extra/, so a version rebuilds from disk


def config_asset(config: dict) -> dict[str, bytes]:
    """The `assets` entry of save_version that writes `config` as assets.extra/config.json."""
    return {CONFIG_ASSET: (json.dumps(config, indent=2) + "\n").encode()}


def read_config_asset(version_dir) -> str:
    """The text of a version's assets.extra/config.json (see config_asset)."""
    return (Path(version_dir) / ASSETS_EXTRA / CONFIG_ASSET).read_text()


def concrete_signatures(module, *specs) -> dict:
    """signature name -> concrete function, for contract signatures that `module` implements as
    tf.functions of the same name (their input_signature fixed by `input_signature`)."""
    return {spec.name: getattr(module, spec.name).get_concrete_function() for spec in specs}


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
        match = EXPORT_TMP_RE.match(path.name)
        if match and path.is_dir() and not _pid_alive(int(match.group(2))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def next_version(model_dir: Path) -> int:
    """1 + the largest version folder under `model_dir` (complete or not), or 1 for none; only
    canonical int64 folder names count (repository.parse_version), so a stray folder cannot push the
    numbering past what a server can hold.

    Raises:
        ExportError: the largest version is already MAX_VERSION (2**63-1).
    """
    try:
        return next_free_version(model_dir)
    except RepositoryError as e:
        raise ExportError(str(e)) from None


def check_model_name(name: str) -> str:
    """A model name an export may create (genserve.repository.check_model_name).

    Raises:
        ExportError: saying why.
    """
    try:
        return _check_name(name)
    except RepositoryError as e:
        raise ExportError(str(e)) from None


def check_models_dir(models_dir) -> Path:
    """A models directory an export can go into: a folder (or nothing yet) whose models.config, if
    any, is a readable ModelServerConfig.

    Raises:
        ExportError: naming the file and what is wrong with it.
    """
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
    check_signatures(signatures, default)
    if warmup:
        check_warmup(name, signatures, default, warmup)
    for rel in assets or {}:
        if Path(rel).is_absolute() or ".." in Path(rel).parts or not rel:
            raise ExportError(f"asset path {rel!r} must be relative, inside assets.extra/")

    model_dir = Path(models_dir) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    why = outside(model_dir, models_dir)
    if why:  # nothing is written outside where the user pointed
        raise ExportError(f"model folder {why}")
    for stale in clean_stale_temps(model_dir):
        log.info("removed stale temporary export %s", stale)
    if version is None:
        version = next_version(model_dir)
    final = model_dir / str(version)
    if final.exists():
        raise ExportError(f"version {version} of model {name!r} already exists at {final}; "
                          "versions are immutable: omit the version to write the next one")

    tmp = export_temp_dir(model_dir, version)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        served = {DEFAULT_SIGNATURE_KEY: signatures[default], **signatures}
        track_captured_variables(module, signatures)
        tf.saved_model.save(module, str(tmp), signatures=served)
        if warmup:
            write_warmup_file(tmp.joinpath(*WARMUP_PATH), name, warmup)
        if batching is not None:
            atomic_write(tmp / BATCHING_PARAMS_FILE, batching)
        for rel, data in (assets or {}).items():
            atomic_write(tmp / ASSETS_EXTRA / rel, data)
        verify_export(tmp, name)
        try:
            os.rename(tmp, final)  # atomic; fails if another writer took the number meanwhile
            fsync_dir(model_dir)
        except OSError as e:
            raise ExportError(f"could not move the export into {final} ({e.strerror}); "
                              "another writer may have taken that version") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("exported %s version %d to %s", name, version, final)
    try:
        write_models_config(models_dir, base_path_prefix)
    except ConfigError as e:  # checked above; changed meanwhile
        raise ExportError(f"version {version} is written, but models.config was not updated: {e}") from None
    return final
