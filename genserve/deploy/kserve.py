"""KServe objects: an InferenceService per model on KServe's own TF Serving runtime, or one
InferenceService for the whole models directory on a `genserve` ServingRuntime.

What KServe expects, from its source (kserve/kserve, 2026-08, aaac4e2):
- config/runtimes/kserve-tensorflow-serving.yaml: the built-in runtime serves ONE model,
  `--model_name={{.Name}} --port=9000 --rest_api_port=8080 --model_base_path=/mnt/models`, and is picked
  for `modelFormat: tensorflow` (versions "1" and "2"); so the InferenceService's name is the model's.
- pkg/.../reconcilers/service/service_reconciler.go: a container port whose name contains "grpc" or
  "h2c" is served as gRPC (appProtocol kubernetes.io/h2c); Knative (serverless mode) accepts only the
  names "http1" and "h2c", so gRPC is exposed as `h2c`.
- storageUri is downloaded to /mnt/models by the storage initializer (gs://, s3://, pvc://, ...).
"""

from __future__ import annotations

from genserve.deploy import args as A
from genserve.deploy.kubernetes import DeployError, DeploySpec, container

API = "serving.kserve.io"
# The KServe release these manifests target; its SDK wheel on PyPI (pinned by sha256) is where the tests
# take KServe's types from to validate them (`make test-data` fetches it into the cache before pytest).
SCHEMA_WHEEL = ("kserve", "0.21.0", "df9bc5888704d9085015e08f1a8fced5ff0698f3becc6212d4e7b8234c71623b")
TFS_GRPC_PORT = 9000  # kserve-tensorflow-serving's --port
KSERVE_MODEL_DIR = "/mnt/models"
RUNTIME_NAME = "genserve"


def _isvc(spec: DeploySpec, name: str, model: dict) -> dict:
    return {
        "apiVersion": f"{API}/v1beta1", "kind": "InferenceService",
        "metadata": {"name": name, "labels": dict(spec.labels)},
        "spec": {"predictor": {"minReplicas": spec.replicas,
                               "maxReplicas": spec.max_replicas or 3 * spec.replicas,
                               "model": model}},
    }


def inference_services(spec: DeploySpec, storage_uri: str) -> list[dict]:
    """tf-serving: one per model, storageUri <uri>/<name>; genserve: one for the models directory."""
    uri = storage_uri.rstrip("/")
    if spec.runtime == "genserve":
        model = {"modelFormat": {"name": "tensorflow", "version": "2"}, "runtime": RUNTIME_NAME,
                 "storageUri": uri}
        return [_isvc(spec, spec.name, model)]
    out = []
    for entry in spec.models:
        if entry.name != entry.name.lower() or not entry.name[:1].isalpha():
            raise DeployError(f"model {entry.name!r}: a KServe InferenceService name must be a lowercase "
                              "DNS label starting with a letter")
        model = {
            "modelFormat": {"name": "tensorflow", "version": "2"},
            "storageUri": f"{uri}/{entry.name}",
            "runtimeVersion": f"{A.tf_serving_version()}-gpu",
            # Appended to the runtime's own arguments; the health service as in Dockerfile.serving.
            "args": [a for a in A.tf_serving_args() if a.startswith("--enable_grpc_healthcheck_service")],
            "ports": [{"name": "h2c", "containerPort": TFS_GRPC_PORT, "protocol": "TCP"}],
            "resources": {"requests": {"cpu": "2", "memory": "8Gi"},
                          "limits": {"memory": "16Gi", "nvidia.com/gpu": str(spec.gpus)}},
        }
        out.append(_isvc(spec, entry.name, model))
    return out


def serving_runtime(spec: DeploySpec) -> dict:
    """The `genserve` ServingRuntime: `genserve serve` over /mnt/models, gRPC exposed as h2c."""
    server = container(spec, models_dir=KSERVE_MODEL_DIR)
    kept = ("image", "command", "args", "resources", "readinessProbe", "livenessProbe", "startupProbe",
            "lifecycle", "securityContext")
    runtime_container = {"name": "kserve-container", **{k: server[k] for k in kept}}
    runtime_container["ports"] = [{"name": "h2c", "containerPort": A.GRPC_PORT, "protocol": "TCP"}]
    return {
        "apiVersion": f"{API}/v1alpha1", "kind": "ServingRuntime",
        "metadata": {"name": RUNTIME_NAME, "labels": dict(spec.labels)},
        "spec": {
            "annotations": {"prometheus.kserve.io/port": str(A.REST_PORT),
                            "prometheus.kserve.io/path": A.prometheus_path()},
            "supportedModelFormats": [{"name": "tensorflow", "version": "2", "autoSelect": False}],
            "protocolVersions": ["v1", "grpc-v1"],
            "containers": [runtime_container],
        },
    }


def kserve_objects(spec: DeploySpec, storage_uri: str | None) -> dict[str, list[dict]]:
    """File name -> objects. storage_uri: where KServe downloads models from (default pvc://<pvc>)."""
    if not storage_uri:
        if not spec.pvc:
            raise DeployError("--kserve needs --storage-uri (gs://..., s3://..., pvc://claim/path) or --pvc")
        storage_uri = f"pvc://{spec.pvc}"
    files = {"inferenceservice.yaml": inference_services(spec, storage_uri)}
    if spec.runtime == "genserve":
        files["servingruntime.yaml"] = [serving_runtime(spec)]
    return files
