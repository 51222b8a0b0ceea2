"""The core Kubernetes objects for serving a models directory: ConfigMap, Deployment, two Services
(ClusterIP and headless), PodDisruptionBudget and HorizontalPodAutoscaler, as plain dicts.

    from genserve.deploy.kubernetes import DeploySpec, core_objects
    objs = core_objects(DeploySpec(runtime="tf-serving", models=read_models_config("models")))

How models reach the pods (DeploySpec): baked into the image (the default: Dockerfile.serving or
Dockerfile with MODELS_DIR), a PersistentVolumeClaim mounted read-only at /models (`pvc`), or, for TF
Serving only, its own file systems (`model_base_uri="gs://bucket/models"`, also s3://). Probes, drain
and grace period: docs/deploy.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from genserve.deploy import args as A
from genserve.deploy.args import DeployError
from genserve.repository import DOCKER_PREFIX, MODELS_CONFIG
from genserve.repository import ModelEntry, render_models_config

RUNTIMES = ("tf-serving", "genserve")
DEFAULT_IMAGES = {"tf-serving": "genserve-serving:latest", "genserve": "genserve:latest"}
URI_SCHEMES = ("gs://", "s3://")  # file systems TF Serving's own builds read base paths from
PRESTOP_SECONDS = 10  # endpoint removal reaching kube-proxy, ingresses and DNS before the server stops
CONFIG_VOLUME, MODELS_VOLUME = "config", "models"


@dataclass(frozen=True)
class DeploySpec:
    """What to deploy. `models`: the models.config entries of the models directory."""

    runtime: str
    models: list[ModelEntry]
    name: str = "genserve"
    image: str | None = None
    replicas: int = 2
    max_replicas: int | None = None  # HPA ceiling; default 3 x replicas
    gpus: int = 1  # per replica, tf-serving only
    pvc: str | None = None
    model_base_uri: str | None = None
    drain_seconds: int = 30  # longest request a stopping replica still finishes
    cpu_target_percent: int = 70
    extra_labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if self.runtime not in RUNTIMES:
            raise DeployError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        if not self.models:
            raise DeployError("no models to deploy (models.config lists none and no <name>/<version>/ "
                              "folder exists); export one first")
        if self.replicas < 1 or (self.max_replicas is not None and self.max_replicas < self.replicas):
            raise DeployError(f"need 1 <= --replicas <= --max-replicas, got {self.replicas}, "
                              f"{self.max_replicas}")
        if self.pvc and self.model_base_uri:
            raise DeployError("--pvc and --model-base-uri are two ways for models to reach the pods; "
                              "give one")
        if self.model_base_uri:
            if self.runtime != "tf-serving":
                raise DeployError("--model-base-uri needs --runtime tf-serving (genserve serve reads a "
                                  "local directory: use --pvc or bake the models into the image)")
            if not self.model_base_uri.startswith(URI_SCHEMES):
                raise DeployError(f"--model-base-uri must start with {' or '.join(URI_SCHEMES)}, got "
                                  f"{self.model_base_uri!r}")
        deployed_models_config(self)  # every base path must be reachable from the pods

    @property
    def image_ref(self) -> str:
        return self.image or DEFAULT_IMAGES[self.runtime]

    @property
    def labels(self) -> dict[str, str]:
        return {"app.kubernetes.io/name": self.name, "app.kubernetes.io/component": "model-server",
                **self.extra_labels}

    @property
    def grace_seconds(self) -> int:
        """preStop + the drain + 5 s for the process to exit (TF Serving never exits on SIGTERM: it is
        SIGKILLed at the end of this, after its in-flight requests had the drain to finish)."""
        return PRESTOP_SECONDS + self.drain_seconds + 5


def deployed_models_config(spec: DeploySpec) -> str:
    """models.config for the pods: every base path under /models (image, PVC) or the base URI."""
    root = (spec.model_base_uri or DOCKER_PREFIX).rstrip("/")
    entries = []
    for entry in spec.models:
        base = entry.base_path
        if base == DOCKER_PREFIX or base.startswith(DOCKER_PREFIX + "/"):
            rel = base[len(DOCKER_PREFIX):].strip("/")
        elif not base.startswith("/") and "://" not in base:
            rel = base.strip("/")
        else:
            raise DeployError(f"model {entry.name!r}: base_path {base!r} is outside the models directory; "
                              "the pods cannot reach it")
        entries.append(ModelEntry(entry.name, f"{root}/{rel}", entry.version_labels, entry.version_policy))
    return render_models_config(entries)


def _meta(spec: DeploySpec, name: str) -> dict:
    return {"name": name, "labels": dict(spec.labels)}


def config_map(spec: DeploySpec) -> dict:
    data = {A.MONITORING_FILE: A.packaged_text(A.MONITORING_FILE)}
    if spec.runtime == "tf-serving":  # genserve serve reads models.config from --models-dir, batching per version
        data[MODELS_CONFIG] = deployed_models_config(spec)
        data[A.BATCHING_FILE] = A.packaged_text(A.BATCHING_FILE)
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(spec, f"{spec.name}-config"),
            "data": data}


def _probes(spec: DeploySpec) -> dict:
    if spec.runtime == "tf-serving":
        # TF Serving opens its ports only after the initial models loaded, and then says SERVING for
        # "", "ModelService" and "PredictionService" (server.cc): the startup probe waits for loading.
        ready = {"grpc": {"port": A.GRPC_PORT, "service": "PredictionService"}}
        live = {"grpc": {"port": A.GRPC_PORT}}
    else:
        # genserve: NOT_SERVING until every configured model has an AVAILABLE version and from the start
        # of a drain (genserve.serving.health); liveness only asks that the process still listens, so a
        # drain never turns into a restart.
        ready = {"httpGet": {"path": A.READY_PATH, "port": A.REST_PORT}}
        live = {"tcpSocket": {"port": A.GRPC_PORT}}
    startup = {"grpc": {"port": A.GRPC_PORT, "service": "PredictionService" if spec.runtime == "tf-serving"
                        else "tensorflow.serving.PredictionService"}}
    return {
        "startupProbe": {**startup, "periodSeconds": 5, "failureThreshold": 120, "timeoutSeconds": 3},
        "readinessProbe": {**ready, "periodSeconds": 5, "failureThreshold": 2, "timeoutSeconds": 3},
        "livenessProbe": {**live, "periodSeconds": 10, "failureThreshold": 6, "timeoutSeconds": 5},
    }


def container(spec: DeploySpec, models_dir: str = DOCKER_PREFIX) -> dict:
    """The server container (also the KServe ServingRuntime's, with models_dir=/mnt/models)."""
    if spec.runtime == "tf-serving":
        command = ["tensorflow_model_server"]
        argv = A.tf_serving_args(model_config_file=f"{A.CONFIG_DIR}/{MODELS_CONFIG}")
        resources = {"requests": {"cpu": "2", "memory": "8Gi"},
                     "limits": {"memory": "16Gi", "nvidia.com/gpu": str(spec.gpus)}}
    else:
        command = ["genserve"]
        argv = A.genserve_args(models_dir, drain_seconds=spec.drain_seconds)
        resources = {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "8Gi"}}
    mounts = [{"name": CONFIG_VOLUME, "mountPath": A.CONFIG_DIR, "readOnly": True}]
    if spec.pvc:
        mounts.append({"name": MODELS_VOLUME, "mountPath": DOCKER_PREFIX, "readOnly": True})
    return {
        "name": "server",
        "image": spec.image_ref,
        "command": command,
        "args": argv,
        "ports": [{"name": "grpc", "containerPort": A.GRPC_PORT, "protocol": "TCP"},
                  {"name": "http", "containerPort": A.REST_PORT, "protocol": "TCP"}],
        **_probes(spec),
        # Sleep while the endpoint removal spreads; then SIGTERM: genserve drains for --drain-seconds
        # and exits, TF Serving (PID 1 without a SIGTERM handler) keeps answering until SIGKILL.
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SECONDS)]}}},
        "resources": resources,
        "volumeMounts": mounts,
        "securityContext": {"allowPrivilegeEscalation": False},
    }


def deployment(spec: DeploySpec) -> dict:
    volumes = [{"name": CONFIG_VOLUME, "configMap": {"name": f"{spec.name}-config"}}]
    if spec.pvc:
        volumes.append({"name": MODELS_VOLUME,
                        "persistentVolumeClaim": {"claimName": spec.pvc, "readOnly": True}})
    pod = {
        "terminationGracePeriodSeconds": spec.grace_seconds,
        "containers": [container(spec)],
        "volumes": volumes,
    }
    if spec.runtime == "tf-serving":
        pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(spec, spec.name),
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": dict(spec.labels)},
            # One new replica at a time and never fewer ready than asked: see docs/deploy.md, rollouts.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "minReadySeconds": 5,
            "template": {
                "metadata": {"labels": dict(spec.labels), "annotations": {
                    "prometheus.io/scrape": "true", "prometheus.io/port": str(A.REST_PORT),
                    "prometheus.io/path": A.prometheus_path()}},
                "spec": pod,
            },
        },
    }


def _ports() -> list[dict]:
    return [{"name": "grpc", "port": A.GRPC_PORT, "targetPort": "grpc", "protocol": "TCP",
             "appProtocol": "kubernetes.io/h2c"},
            {"name": "http", "port": A.REST_PORT, "targetPort": "http", "protocol": "TCP",
             "appProtocol": "http"}]


def services(spec: DeploySpec) -> list[dict]:
    """A ClusterIP Service (kube-proxy spreads connections) and a headless one, whose DNS name lists
    the ready pods' addresses, for clients that balance per call: `dns:///<name>-headless:8500`."""
    selector = dict(spec.labels)
    cluster = {"apiVersion": "v1", "kind": "Service", "metadata": _meta(spec, spec.name),
               "spec": {"type": "ClusterIP", "selector": selector, "ports": _ports()}}
    headless = {"apiVersion": "v1", "kind": "Service", "metadata": _meta(spec, f"{spec.name}-headless"),
                "spec": {"clusterIP": "None", "publishNotReadyAddresses": False, "selector": selector,
                         "ports": _ports()}}
    return [cluster, headless]


def pod_disruption_budget(spec: DeploySpec) -> dict:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": _meta(spec, spec.name),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": dict(spec.labels)}}}


def autoscaler(spec: DeploySpec) -> dict:
    """CPU utilisation against the requests (needs metrics-server). On the GPU runtime CPU is a proxy
    for load; a custom metric (e.g. request rate from Prometheus) fits better where an adapter exists."""
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": _meta(spec, spec.name),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": spec.name},
            "minReplicas": spec.replicas,
            "maxReplicas": spec.max_replicas or 3 * spec.replicas,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization", "averageUtilization": spec.cpu_target_percent}}}],
            # Scale down slowly: a removed replica drops its clients' connections.
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300,
                                       "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}},
        },
    }


def core_objects(spec: DeploySpec) -> dict[str, list[dict]]:
    """File name -> the objects in it."""
    return {
        "configmap.yaml": [config_map(spec)],
        "deployment.yaml": [deployment(spec)],
        "service.yaml": services(spec),
        "pdb.yaml": [pod_disruption_budget(spec)],
        "hpa.yaml": [autoscaler(spec)],
    }
