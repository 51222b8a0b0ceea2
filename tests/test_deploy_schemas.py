"""Every file `genserve deploy kubernetes` writes validates offline against the official schemas:
Kubernetes' own (the kubernetes-validate package ships them; strict: unknown fields are errors) for
the core kinds, at 1.27 (gRPC probes went GA) and at the newest release it knows; KServe's published
CRDs (tests/data/kserve, extracted by scripts/kserve_crd_schemas.py from kserve/kserve's
config/crd/full/) for InferenceService and ServingRuntime.

    .venv/bin/python -m pytest tests/test_deploy_schemas.py -q
"""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from test_deploy import deploy, models  # noqa: F401 (models is a fixture)

KSERVE_DIR = Path(__file__).resolve().parent / "data" / "kserve"
CRD_FILES = {"InferenceService": "serving.kserve.io_inferenceservices.json.gz",
             "ServingRuntime": "serving.kserve.io_servingruntimes.json.gz"}
K8S_VERSIONS = ("1.27.0", f"{latest_version()}.0")
VARIANTS = {
    "tf-serving": [],
    "tf-serving-uri": ["--model-base-uri", "gs://bucket/models", "--replicas", "3"],
    "genserve-pvc": ["--runtime", "genserve", "--pvc", "models"],
    "kserve-tf-serving": ["--kserve", "--storage-uri", "gs://bucket/models"],
    "kserve-genserve": ["--kserve", "--runtime", "genserve", "--pvc", "models"],
}


def _strict(schema):
    """Unknown fields are errors, as `kubectl apply --validate=strict` makes them (the API server would
    otherwise drop them silently): every object schema that lists properties and neither
    additionalProperties nor x-kubernetes-preserve-unknown-fields gets additionalProperties: false."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def _crd_validators() -> dict[str, tuple[str, jsonschema.Validator]]:
    """kind -> (apiVersion, validator of the served version's openAPIV3Schema)."""
    out = {}
    for kind, name in CRD_FILES.items():
        crd = json.loads(gzip.decompress((KSERVE_DIR / name).read_bytes()))
        assert crd["kind"] == "CustomResourceDefinition" and crd["spec"]["names"]["kind"] == kind
        (version,) = [v for v in crd["spec"]["versions"] if v["served"] and v["storage"]]
        schema = _strict(version["schema"]["openAPIV3Schema"])
        out[kind] = (f"{crd['spec']['group']}/{version['name']}", jsonschema.Draft7Validator(schema))
    return out


CRDS = _crd_validators()


def validate(obj: dict) -> None:
    """Raise on the first schema violation of `obj` (any kind genserve writes)."""
    if obj["kind"] in CRDS:
        api_version, validator = CRDS[obj["kind"]]
        assert obj["apiVersion"] == api_version
        errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.path))
        if errors:
            raise jsonschema.ValidationError(f"{'.'.join(map(str, errors[0].path))}: {errors[0].message}")
        return
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)


def test_kserve_schemas_are_the_recorded_ones():
    source = json.loads((KSERVE_DIR / "SOURCE.json").read_text())
    assert source["repository"] == "kserve/kserve" and len(source["commit"]) == 40
    assert set(source["files"]) == set(CRD_FILES.values())


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_generated_file_validates(models, tmp_path, variant):  # noqa: F811
    files = deploy(models, tmp_path / "out", *VARIANTS[variant])
    kustomization = files.pop("kustomization.yaml")[0]
    # kustomize's own file: not a Kubernetes API object (no published schema); it lists every file.
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization" and sorted(kustomization["resources"]) == sorted(files)
    kinds = []
    for name, docs in files.items():
        for obj in docs:
            validate(obj)
            kinds.append(obj["kind"])
    if variant.startswith("kserve"):
        assert "InferenceService" in kinds
    else:
        assert sorted(set(kinds)) == ["ConfigMap", "Deployment", "HorizontalPodAutoscaler",
                                      "PodDisruptionBudget", "Service"]


def test_the_validators_catch_mistakes(models, tmp_path):  # noqa: F811
    """Each validator refuses a plausible slip, so the test above can fail."""
    files = deploy(models, tmp_path / "core")
    dep = files["deployment.yaml"][0]
    bad = copy.deepcopy(dep)
    container = bad["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")  # a typo the API server would drop
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(bad)
    bad = copy.deepcopy(dep)
    bad["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8500"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(bad)
    files = deploy(models, tmp_path / "ks", "--kserve", "--runtime", "genserve", "--pvc", "m")
    isvc = copy.deepcopy(files["inferenceservice.yaml"][0])
    isvc["spec"]["predictor"]["model"]["storageURI"] = isvc["spec"]["predictor"]["model"].pop("storageUri")
    with pytest.raises(jsonschema.ValidationError):
        validate(isvc)
    runtime = copy.deepcopy(files["servingruntime.yaml"][0])
    runtime["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = [8501]
    with pytest.raises(jsonschema.ValidationError):
        validate(runtime)
    runtime = copy.deepcopy(files["servingruntime.yaml"][0])
    runtime["spec"]["supportedModelFormats"] = "tensorflow"
    with pytest.raises(jsonschema.ValidationError):
        validate(runtime)


def test_yaml_is_plain(models, tmp_path):  # noqa: F811
    """No Python tags or anchors: any YAML 1.1 reader (kubectl, kustomize) reads the same values."""
    out = tmp_path / "out"
    deploy(models, out, "--runtime", "genserve")
    for path in out.iterdir():
        text = path.read_text()
        assert "!!python" not in text and "&id" not in text and "*id" not in text
        assert list(yaml.safe_load_all(text))
