"""The models directory and SavedModel layout, named once (export writes it, serving reads it).

    <models_dir>/models.config                               text-format ModelServerConfig
    <models_dir>/<name>/<version>/saved_model.pb              one SavedModel per integer version
    <models_dir>/<name>/<version>/variables/                  its checkpoint
    <models_dir>/<name>/<version>/assets.extra/tf_serving_warmup_requests   PredictionLog TFRecords
    <models_dir>/<name>/<version>/batching_params.pbtxt       per-model BatchingParameters
    <models_dir>/<name>/.tmp-<version>-<pid>/                 an export being written (never served)

TF Serving reads the same names: warmup from `assets.extra/tf_serving_warmup_requests`
(servables/tensorflow/saved_model_warmup_util.cc), batching from `batching_params.pbtxt` with
--enable_per_model_batching_parameters (bundle_factory_util.cc). No imports beyond the standard library.
"""

from __future__ import annotations

import re

MODELS_CONFIG = "models.config"
DOCKER_PREFIX = "/models"  # where Dockerfile.serving puts the models directory
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
ASSETS_EXTRA = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
WARMUP_PATH = (ASSETS_EXTRA, WARMUP_FILE)
BATCHING_PARAMS_FILE = "batching_params.pbtxt"
MAX_WARMUP_RECORDS = 1000  # TF Serving reads at most this many warmup records
TMP_PREFIX = ".tmp-"
TMP_RE = re.compile(r"^\.tmp-(\d+)-(\d+)$")
# Versions are int64 in TF Serving (ModelSpec.version is an Int64Value) and folder names are their
# canonical decimal spelling: "12", never "0012", "+12" or "١٢" (str.isdigit() accepts those).
VERSION_RE = re.compile(r"^(0|[1-9][0-9]{0,18})$")
MAX_VERSION = 2**63 - 1


def parse_version(name: str) -> int | None:
    """The version number a folder name spells, or None when it is not a canonical int64 decimal."""
    if not VERSION_RE.match(name):
        return None
    value = int(name)
    return value if 0 < value <= MAX_VERSION else None
