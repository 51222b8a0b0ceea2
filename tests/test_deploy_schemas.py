"""Every file `genserve deploy kubernetes` writes validates offline against the official schemas:
Kubernetes' own (the kubernetes-validate package ships them; strict: unknown fields are errors) for
the core kinds, at 1.27 (gRPC probes went GA) and at the newest release it knows; KServe's published
API types for InferenceService and ServingRuntime.

KServe's types come from its SDK wheel on PyPI (`kserve==0.21.0`, pinned by sha256, downloaded once into
genserve's cache with `pip download --no-deps` like every other registry file genserve reads; set
GENSERVE_CACHE to a cache that has it to run offline). The wheel is read as a zip, never installed or
imported: each `kserve/models/v1*.py` is an OpenAPI-generated class whose `openapi_types` (attribute ->
type) and `attribute_map` (attribute -> JSON key) are parsed with `ast` and turned into a JSON Schema,
recursively; the Kubernetes types they name (V1Container, V1Probe, resource.Quantity, ...) resolve to
kubernetes-validate's strict definitions, and a setter that raises "must not be `None`" makes its field
required. Every object is closed (additionalProperties: false), so a misspelt field is an error.

    .venv/bin/python -m pytest tests/test_deploy_schemas.py -q
"""

from __future__ import annotations

import ast
import copy
import re
import zipfile
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import referencing
import yaml
from kubernetes_validate.utils import latest_version, schema_contents

from genserve.data import DataError, PinnedWheel, fetch_wheel
from genserve.deploy.kserve import SCHEMA_WHEEL
from test_deploy import deploy, models  # noqa: F401 (models is a fixture)

KSERVE = PinnedWheel(*SCHEMA_WHEEL)
KSERVE_KINDS = ("V1beta1InferenceService", "V1alpha1ServingRuntime")  # the wheel's classes for them
K8S_VERSIONS = ("1.27.0", latest_version())
K8S_DEFS_ID = "https://kubernetes.io/api/_definitions.json"
CORE_GROUPS = ("io.k8s.api.core.", "io.k8s.apimachinery.pkg.apis.meta.")
VARIANTS = {
    "tf-serving": [],
    "tf-serving-uri": ["--model-base-uri", "gs://bucket/models", "--replicas", "3"],
    "genserve-pvc": ["--runtime", "genserve", "--pvc", "models"],
    "kserve-tf-serving": ["--kserve", "--storage-uri", "gs://bucket/models"],
    "kserve-genserve": ["--kserve", "--runtime", "genserve", "--pvc", "models"],
}
_VERSIONED = re.compile(r"(V\d+(?:alpha\d+|beta\d+)?)([A-Z]\w*)")
_REQUIRED = re.compile(r"Invalid value for `(\w+)`, must not be `None`")


def _camel(parts: list[str]) -> str:
    return "".join(p[:1].upper() + p[1:] for p in parts)


def _k8s_names(definitions: dict) -> dict[str, str]:
    """OpenAPI generator class name -> Kubernetes definition. The generator camel-cases the Go-style
    name the type had in KServe's swagger: `v1.Container` -> V1Container, `resource.Quantity` ->
    ResourceQuantity, `k8s.io.api.apps.v1.DeploymentStrategy` -> K8sIoApiAppsV1DeploymentStrategy.
    A short name several groups share resolves to core/v1 or meta/v1 (the kubernetes client's rule)."""
    candidates: dict[str, list[str]] = {}
    for key in definitions:
        parts = key.split(".")
        go = ["k8s", "io", *parts[2:]] if parts[:2] == ["io", "k8s"] else parts
        names = {_camel(parts[-n:]) for n in range(2, len(parts) + 1)} | {_camel(go)}
        for name in names:
            candidates.setdefault(name, []).append(key)
    out = {}
    for name, keys in candidates.items():
        if len(keys) > 1:
            keys = [k for k in keys if k.startswith(CORE_GROUPS)]
        if len(keys) == 1:
            out[name] = keys[0]
    return out


class KServeSchemas:
    """JSON Schemas for KServe kinds, from the model classes of the kserve wheel (read, not imported)."""

    def __init__(self, wheel: Path):
        self.classes: dict[str, tuple[dict, dict, set]] = {}  # name -> (types, json keys, required)
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                if member.startswith("kserve/models/") and member.endswith(".py"):
                    self._read_module(archive.read(member).decode())
            constants = ast.parse(archive.read("kserve/constants/constants.py").decode())
        (self.group,) = [ast.literal_eval(n.value) for n in constants.body
                         if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "KSERVE_GROUP"]
        self.k8s_version = latest_version()
        k8s = schema_contents(f"kubernetes-json-schema/v{self.k8s_version}-local-strict/_definitions.json",
                              self.k8s_version)
        assert k8s["$id"] == K8S_DEFS_ID
        self.k8s_names = _k8s_names(k8s["$defs"])
        self.registry = referencing.Registry().with_resource(K8S_DEFS_ID,
                                                             referencing.Resource.from_contents(k8s))
        self.unresolved: set[str] = set()  # types a reachable field names that neither side defines

    def _read_module(self, text: str) -> None:
        for node in ast.parse(text).body:
            if not isinstance(node, ast.ClassDef):
                continue
            found = {stmt.targets[0].id: ast.literal_eval(stmt.value) for stmt in node.body
                     if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name)
                     and stmt.targets[0].id in ("openapi_types", "attribute_map")}
            if len(found) == 2:
                self.classes[node.name] = (found["openapi_types"], found["attribute_map"],
                                           set(_REQUIRED.findall(ast.get_source_segment(text, node))))

    def _type(self, name: str, defs: dict) -> dict | bool:
        """The schema of one openapi_types entry: str, int, bool, float, object, list[T], dict(str, T),
        a KServe class ($defs) or a Kubernetes type ($ref into kubernetes-validate's definitions)."""
        simple = {"str": {"type": "string"}, "int": {"type": "integer"}, "float": {"type": "number"},
                  "bool": {"type": "boolean"}, "object": {}, "datetime": {"type": "string"}}
        if name in simple:
            return simple[name]
        if name.startswith("list[") and name.endswith("]"):
            return {"type": "array", "items": self._type(name[5:-1], defs)}
        if name.startswith("dict(str, ") and name.endswith(")"):
            return {"type": "object", "additionalProperties": self._type(name[10:-1], defs)}
        if name in self.classes:
            if name not in defs:
                defs[name] = True  # placeholder: recursion through a class already being built
                defs[name] = self._object(name, defs)
            return {"$ref": f"#/$defs/{name}"}
        if name in self.k8s_names:
            return {"$ref": f"{K8S_DEFS_ID}#/$defs/{self.k8s_names[name]}"}
        self.unresolved.add(name)
        return False  # nothing validates against a type we cannot see: using the field fails

    def _object(self, name: str, defs: dict) -> dict:
        types, keys, required = self.classes[name]
        assert set(types) == set(keys), name
        return {"type": "object", "additionalProperties": False,
                "properties": {keys[attr]: self._type(kind, defs) for attr, kind in types.items()},
                "required": sorted(keys[attr] for attr in required)}

    def validator(self, class_name: str) -> tuple[str, str, jsonschema.Validator]:
        """(apiVersion, kind, validator) of a top-level class such as V1beta1InferenceService."""
        version, kind = _VERSIONED.fullmatch(class_name).groups()
        defs: dict = {}
        schema = self._object(class_name, defs)
        schema["$defs"] = defs
        jsonschema.Draft202012Validator.check_schema(schema)
        api_version = f"{self.group}/{version.lower()}"
        return api_version, kind, jsonschema.Draft202012Validator(schema, registry=self.registry)


def kserve_validators() -> dict[str, tuple[str, jsonschema.Validator, set[str]]]:
    """kind -> (apiVersion, validator, types its fields name that the wheel does not define), from the
    pinned kserve wheel. No network and no cached wheel is a test failure with pip's reason, never a
    skip: the KServe files would go unchecked."""
    try:
        wheel = fetch_wheel(KSERVE)
    except DataError as e:
        pytest.fail(f"KServe's API types are needed to validate the KServe manifests: {e}", pytrace=False)
    schemas = KServeSchemas(wheel)
    out = {}
    for class_name in KSERVE_KINDS:
        schemas.unresolved = set()
        api_version, kind, validator = schemas.validator(class_name)
        out[kind] = (api_version, validator, schemas.unresolved)
    return out


@pytest.fixture(scope="session")
def kserve():
    return kserve_validators()


def validate(obj: dict, kserve: dict) -> None:
    """Raise on the first schema violation of `obj` (any kind genserve writes)."""
    if obj["kind"] in kserve:
        api_version, validator, _ = kserve[obj["kind"]]
        assert obj["apiVersion"] == api_version
        errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.path))
        if errors:
            raise jsonschema.ValidationError(f"{'.'.join(map(str, errors[0].path))}: {errors[0].message}")
        return
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)


def test_kserve_schemas_come_from_the_wheel(kserve):
    """The wheel's classes describe both kinds down to the fields genserve writes. Three types their
    fields name have no class in the wheel (the SDK's generator skipped them) and no Kubernetes
    definition; a field of such a type validates nothing, so a manifest that used one would fail."""
    api_version, validator, unresolved = kserve["InferenceService"]
    assert api_version == "serving.kserve.io/v1beta1"
    model = validator.schema["$defs"]["V1beta1ModelSpec"]
    written = {"modelFormat", "storageUri", "runtime", "runtimeVersion", "args", "ports", "resources"}
    assert written <= model["properties"].keys()
    assert model["required"] == ["modelFormat"] and model["additionalProperties"] is False
    # status.components.*.traffic (Knative's TrafficTarget); spec.*.autoScaling.metrics[].*.target.*Value
    assert unresolved == {"KnativeDevServingPkgApisServingV1TrafficTarget", "V1beta1MetricQuantity"}
    api_version, validator, unresolved = kserve["ServingRuntime"]
    assert api_version == "serving.kserve.io/v1alpha1"
    assert validator.schema["$defs"]["V1alpha1ServingRuntimeSpec"]["required"] == ["containers"]
    assert unresolved == {"V1alpha1WorkerSpec"}  # spec.workerSpec (multi-node runtimes)


def test_no_wheel_and_no_network_fails_clearly(tmp_path, monkeypatch):
    """Offline with an empty cache: a failure naming the wheel and how to provide it, not a skip."""
    monkeypatch.setenv("GENSERVE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip as on a machine without network
    with pytest.raises(pytest.fail.Exception) as e:
        kserve_validators()
    assert "kserve==0.21.0" in str(e.value) and "GENSERVE_CACHE" in str(e.value)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_generated_file_validates(models, tmp_path, variant, kserve):  # noqa: F811
    files = deploy(models, tmp_path / "out", *VARIANTS[variant])
    kustomization = files.pop("kustomization.yaml")[0]
    # kustomize's own file: not a Kubernetes API object (no published schema); it lists every file.
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization" and sorted(kustomization["resources"]) == sorted(files)
    kinds = []
    for name, docs in files.items():
        for obj in docs:
            validate(obj, kserve)
            kinds.append(obj["kind"])
    if variant.startswith("kserve"):
        assert "InferenceService" in kinds
    else:
        assert sorted(set(kinds)) == ["ConfigMap", "Deployment", "HorizontalPodAutoscaler",
                                      "PodDisruptionBudget", "Service"]


def test_the_validators_catch_mistakes(models, tmp_path, kserve):  # noqa: F811
    """Each validator refuses a plausible slip, so the test above can fail."""
    files = deploy(models, tmp_path / "core")
    dep = files["deployment.yaml"][0]
    bad = copy.deepcopy(dep)
    container = bad["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")  # a typo the API server would drop
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(bad, kserve)
    bad = copy.deepcopy(dep)
    bad["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8500"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(bad, kserve)
    files = deploy(models, tmp_path / "ks", "--kserve", "--runtime", "genserve", "--pvc", "m")
    isvc = copy.deepcopy(files["inferenceservice.yaml"][0])
    isvc["spec"]["predictor"]["model"]["storageURI"] = isvc["spec"]["predictor"]["model"].pop("storageUri")
    with pytest.raises(jsonschema.ValidationError):
        validate(isvc, kserve)
    runtime = copy.deepcopy(files["servingruntime.yaml"][0])
    runtime["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = [8501]
    with pytest.raises(jsonschema.ValidationError):
        validate(runtime, kserve)
    runtime = copy.deepcopy(files["servingruntime.yaml"][0])
    runtime["spec"]["supportedModelFormats"] = "tensorflow"
    with pytest.raises(jsonschema.ValidationError):
        validate(runtime, kserve)


def test_yaml_is_plain(models, tmp_path):  # noqa: F811
    """No Python tags or anchors: any YAML 1.1 reader (kubectl, kustomize) reads the same values."""
    out = tmp_path / "out"
    deploy(models, out, "--runtime", "genserve")
    for path in out.iterdir():
        text = path.read_text()
        assert "!!python" not in text and "&id" not in text and "*id" not in text
        assert list(yaml.safe_load_all(text))
