"""The servers' command lines, named once: TF Serving's (Dockerfile.serving's ENTRYPOINT and the
Kubernetes Deployment) and `genserve serve`'s (the `Dockerfile` image and its Deployment).

    python -m genserve.deploy.args          # prints both argument lists

tests/test_deploy.py fails when Dockerfile.serving's ENTRYPOINT differs from `tf_serving_args()`, when a
flag here is not one of TF Serving's (TF_SERVING_FLAGS, from main.cc) or when a `genserve serve` flag here
is not a parameter of the real CLI command. The files both images and the manifests carry
(batching_parameters.txt, monitoring.config, TF_SERVING_VERSION) are package data beside this module.
"""

from __future__ import annotations

from pathlib import Path

from genserve.repository import DOCKER_PREFIX, MODELS_CONFIG
from genserve.serving.options import READY_PATH  # noqa: F401 - the manifests' readiness probe path

GRPC_PORT = 8500  # both servers: PredictionService, ModelService, grpc.health.v1.Health
REST_PORT = 8501  # REST API and /monitoring/prometheus/metrics
CONFIG_DIR = "/etc/genserve"  # where the image (and the ConfigMap in Kubernetes) puts the text configs
BATCHING_FILE = "batching_parameters.txt"
MONITORING_FILE = "monitoring.config"
VERSION_FILE = "TF_SERVING_VERSION"  # the pinned TF Serving release (Dockerfile.serving, Makefile, KServe)
# The one copy of the two text protos and the release pin: package data beside this module, so an
# installed genserve writes the same ConfigMap as a checkout (Dockerfile.serving and Dockerfile COPY
# them from genserve/deploy/, `make` reads the pin there).
PACKAGE_DIR = Path(__file__).resolve().parent


class DeployError(ValueError):
    """The options cannot make a working deployment (one line, for the CLI)."""


def packaged_text(name: str) -> str:
    """The text of one of the files above (BATCHING_FILE, MONITORING_FILE, VERSION_FILE).

    Raises:
        DeployError: the installed package lacks it.
    """
    try:
        return (PACKAGE_DIR / name).read_text(encoding="utf-8")
    except OSError as e:
        raise DeployError(f"cannot read {PACKAGE_DIR / name}, part of the genserve package "
                          f"({e.strerror or e}); reinstall genserve") from None


def tf_serving_version() -> str:
    """The pinned TF Serving release, e.g. "2.19.1" (its image tag without -gpu)."""
    return packaged_text(VERSION_FILE).strip()

# Every flag of tensorflow_model_server, as tensorflow_serving/model_servers/main.cc defines them at the
# pinned release (tag 2.19.1, commit eab9c35; unchanged at master 9d981c5, July 2026). The one list:
# tests/test_dockerfile.py and tests/test_deploy.py check Dockerfile.serving and the manifests against it.
TF_SERVING_FLAGS = frozenset({
    "allow_version_labels_for_unavailable_models", "batching_parameters_file", "enable_batching",
    "enable_grpc_healthcheck_service", "enable_model_warmup", "enable_per_model_batching_parameters",
    "enable_profiler", "enable_serialization_as_tensor_content", "enable_signature_method_name_check",
    "file_system_poll_wait_seconds", "flush_filesystem_caches", "grpc_channel_arguments",
    "grpc_max_threads", "grpc_socket_path", "load_retry_interval_micros", "max_num_load_retries",
    "mixed_precision", "model_base_path", "model_config_file", "model_config_file_poll_wait_seconds",
    "model_name", "monitoring_config_file", "num_load_threads", "num_request_iterations_for_warmup",
    "num_tflite_interpreters_per_pool", "num_tflite_pools", "num_unload_threads",
    "per_process_gpu_memory_fraction", "platform_config_file", "port", "prefer_tflite_model",
    "remove_unused_fields_from_bundle_metagraph", "rest_api_enable_cors_support", "rest_api_num_threads",
    "rest_api_port", "rest_api_timeout_in_ms", "saved_model_tags", "skip_initialize_tpu",
    "ssl_config_file", "tensorflow_inter_op_parallelism", "tensorflow_intra_op_parallelism",
    "tensorflow_session_config_file", "tensorflow_session_parallelism", "thread_pool_factory_config_file",
    "use_alts_credentials", "version", "xla_cpu_compilation_enabled", "xla_gpu_compilation_enabled",
})

# TF Serving's settings for genserve's exports, in ENTRYPOINT order. Why each: docs/serving.md.
# enable_grpc_healthcheck_service (TF Serving >= 2.15.1) registers grpc.health.v1 for "", "ModelService"
# and "PredictionService" (server.cc), all SERVING once the port opens, which TF Serving does only after
# ServerCore has loaded the initial config's models (server_core.cc, WaitUntilModelsAvailable).
TF_SERVING_SETTINGS: tuple[tuple[str, str], ...] = (
    ("port", str(GRPC_PORT)),
    ("rest_api_port", str(REST_PORT)),
    ("model_config_file", f"{DOCKER_PREFIX}/{MODELS_CONFIG}"),
    ("model_config_file_poll_wait_seconds", "60"),
    ("file_system_poll_wait_seconds", "5"),
    ("enable_batching", "true"),
    ("enable_per_model_batching_parameters", "true"),
    ("batching_parameters_file", f"{CONFIG_DIR}/{BATCHING_FILE}"),
    ("enable_model_warmup", "true"),
    ("monitoring_config_file", f"{CONFIG_DIR}/{MONITORING_FILE}"),
    ("enable_grpc_healthcheck_service", "true"),
)


def tf_serving_args(**overrides: str) -> list[str]:
    """`tensorflow_model_server`'s arguments (`--name=value`), with `overrides` replacing settings.

    Raises:
        ValueError: an override is not a setting above.
    """
    settings = dict(TF_SERVING_SETTINGS)
    unknown = set(overrides) - set(settings)
    if unknown:
        raise ValueError(f"not a TF Serving setting of genserve: {sorted(unknown)}")
    settings.update(overrides)
    return [f"--{name}={value}" for name, value in settings.items()]




def genserve_args(models_dir: str = DOCKER_PREFIX, drain_seconds: int = 20) -> list[str]:
    """`genserve serve`'s arguments for a container: all interfaces, TF Serving's ports, batching,
    Prometheus metrics, the health service, and a drain that outlasts the longest request."""
    return [
        "serve",
        "--models-dir", models_dir,
        "--host", "0.0.0.0",
        "--port", str(GRPC_PORT),
        "--rest-port", str(REST_PORT),
        "--poll-seconds", "5",
        "--enable-batching",
        "--monitoring-config-file", f"{CONFIG_DIR}/{MONITORING_FILE}",
        "--drain-seconds", str(drain_seconds),
        "--enable-grpc-healthcheck-service",
    ]


def prometheus_path() -> str:
    """The metrics path of genserve/deploy/monitoring.config (the file both images and the ConfigMap
    carry)."""
    from genserve.serving.metrics import parse_monitoring_config

    source = PACKAGE_DIR / MONITORING_FILE
    try:
        path = parse_monitoring_config(packaged_text(MONITORING_FILE), source=str(source))
    except ValueError as e:  # DeployError (a missing file) is one too
        raise DeployError(str(e)) from None
    if path is None:
        raise DeployError(f"{source} does not enable Prometheus metrics")
    return path


if __name__ == "__main__":
    print("tensorflow_model_server", " ".join(tf_serving_args()))
    print("genserve", " ".join(genserve_args()))
