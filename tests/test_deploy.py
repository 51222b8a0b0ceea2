"""`genserve deploy kubernetes`: the manifests' args are the servers' real flags, the probes, ports and
grace period fit together, and Dockerfile.serving / Dockerfile cannot drift from the manifests.
Schema validation of every file: tests/test_deploy_schemas.py.

    .venv/bin/python -m pytest tests/test_deploy.py -q
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from genserve.cli.root import app
from genserve.deploy import args as A
from genserve.deploy.kubernetes import PRESTOP_SECONDS
from genserve.repository import parse_models_config
from genserve.serving.health import SERVICES
from test_dockerfile import parse_dockerfile

ROOT = Path(__file__).resolve().parents[1]
MODELS_CONFIG = """model_config_list {
  config { name: "toy" base_path: "/models/toy" model_platform: "tensorflow"
           version_labels { key: "stable" value: 1 } model_version_policy { latest { num_versions: 2 } } }
  config { name: "vae" base_path: "vae" model_platform: "tensorflow" }
}
"""


@pytest.fixture
def models(tmp_path) -> Path:
    """A models directory as the export writer lays it out (no TensorFlow: the deploy command reads
    only models.config and the version folders)."""
    root = tmp_path / "models"
    for name, version in (("toy", 1), ("toy", 2), ("vae", 3)):
        (root / name / str(version)).mkdir(parents=True)
        (root / name / str(version) / "saved_model.pb").write_bytes(b"")
    (root / "models.config").write_text(MODELS_CONFIG)
    return root


def deploy(models: Path, out: Path, *extra: str) -> dict[str, list[dict]]:
    """Run the real CLI; file name -> its YAML documents."""
    result = CliRunner().invoke(app, ["deploy", "kubernetes", "--models-dir", str(models), "--out",
                                      str(out), *extra])
    assert result.exit_code == 0, result.output
    return {p.name: [d for d in yaml.safe_load_all(p.read_text()) if d] for p in sorted(out.iterdir())}


def one(files, kind: str) -> dict:
    (obj,) = [d for docs in files.values() for d in docs if d["kind"] == kind]
    return obj


def serve_command():
    return typer.main.get_command(app).commands["serve"]


def parse_serve_args(argv: list[str]) -> dict:
    """Parse `genserve serve` arguments with the real click command (nothing runs); a renamed or
    missing flag raises NoSuchOption."""
    assert argv[0] == "serve"
    ctx = serve_command().make_context("serve", argv[1:])
    return ctx.params


def test_genserve_args_are_real_serve_flags():
    params = parse_serve_args(A.genserve_args())
    assert params["port"] == A.GRPC_PORT and params["rest_port"] == A.REST_PORT
    assert params["host"] == "0.0.0.0" and str(params["models_dir"]) == "/models"
    assert params["enable_grpc_healthcheck_service"] is True  # the probes and balancers rely on it
    assert str(params["monitoring_config_file"]) == f"{A.CONFIG_DIR}/{A.MONITORING_FILE}"
    assert params["enable_batching"] is True


def test_a_renamed_serve_flag_is_caught():
    with pytest.raises(Exception) as e:  # click's NoSuchOption (typer may vendor click)
        parse_serve_args(["serve", "--rest-api-port", "8501"])
    assert e.typename == "NoSuchOption"


def _entrypoint(path: Path) -> tuple[list[str], list[str]]:
    instructions = parse_dockerfile(path.read_text())
    get = lambda word: [json.loads(a) for w, a in instructions if w == word]  # noqa: E731
    (entrypoint,) = get("ENTRYPOINT")
    return entrypoint, (get("CMD") or [[]])[0]


def test_dockerfile_serving_entrypoint_is_tf_serving_args():
    entrypoint, cmd = _entrypoint(ROOT / "Dockerfile.serving")
    assert entrypoint == ["tensorflow_model_server", *A.tf_serving_args()] and cmd == []
    assert {a[2:].split("=")[0] for a in A.tf_serving_args()} <= A.TF_SERVING_FLAGS


def test_genserve_dockerfile_cmd_is_genserve_args():
    entrypoint, cmd = _entrypoint(ROOT / "Dockerfile")
    assert entrypoint == ["genserve"] and cmd == A.genserve_args()
    dockerignore = (ROOT / "Dockerfile.dockerignore").read_text().split()
    assert "genserve" not in dockerignore and "docker" not in dockerignore
    copies = [shlex.split(a) for w, a in parse_dockerfile((ROOT / "Dockerfile").read_text()) if w == "COPY"]
    for *sources, dest in copies:
        for src in sources:
            assert src.startswith("${MODELS_DIR}") or (ROOT / src).exists(), src
    # The monitoring file the CMD names is the one the image copies to that path.
    assert ["genserve/deploy/monitoring.config", f"{A.CONFIG_DIR}/{A.MONITORING_FILE}"] in copies


def test_tf_serving_deployment(models, tmp_path):
    files = deploy(models, tmp_path / "out")
    assert set(files) == {"configmap.yaml", "deployment.yaml", "service.yaml", "pdb.yaml", "hpa.yaml",
                          "kustomization.yaml"}
    dep = one(files, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    # Same settings as Dockerfile.serving but models.config from the ConfigMap.
    config_path = f"{A.CONFIG_DIR}/models.config"
    assert c["command"] == ["tensorflow_model_server"]
    assert c["args"] == A.tf_serving_args(model_config_file=config_path)
    flags = dict(a[2:].split("=", 1) for a in c["args"])
    assert set(flags) <= A.TF_SERVING_FLAGS and flags["enable_grpc_healthcheck_service"] == "true"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"grpc": int(flags["port"]), "http": int(flags["rest_api_port"])}
    # Probes: gRPC health on the gRPC port, for a service name TF Serving registers (and genserve too).
    for probe in ("startupProbe", "readinessProbe"):
        assert c[probe]["grpc"]["port"] == ports["grpc"] and c[probe]["grpc"]["service"] in SERVICES
    assert c["livenessProbe"]["grpc"]["port"] == ports["grpc"]
    assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] >= 300
    # TF Serving ignores SIGTERM: the grace period is what lets its in-flight requests finish.
    assert c["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(PRESTOP_SECONDS)]
    assert pod["terminationGracePeriodSeconds"] >= PRESTOP_SECONDS + 30
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    # Every file the args name is in the mounted ConfigMap.
    (mount,) = c["volumeMounts"]
    data = one(files, "ConfigMap")["data"]
    for name in ("model_config_file", "batching_parameters_file", "monitoring_config_file"):
        directory, _, base = flags[name].rpartition("/")
        assert directory == mount["mountPath"] and base in data, name
    assert data["batching_parameters.txt"] == A.packaged_text(A.BATCHING_FILE)
    entries = parse_models_config(data["models.config"])
    assert [(e.name, e.base_path) for e in entries] == [("toy", "/models/toy"), ("vae", "/models/vae")]
    assert entries[0].version_labels == {"stable": 1} and entries[0].version_policy == ("latest", 2)
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(ports["http"])
    assert annotations["prometheus.io/path"] == "/monitoring/prometheus/metrics"
    rollout = dep["spec"]["strategy"]["rollingUpdate"]
    assert rollout == {"maxSurge": 1, "maxUnavailable": 0}


def test_services_pdb_hpa(models, tmp_path):
    files = deploy(models, tmp_path / "out", "--replicas", "3", "--name", "gen")
    cluster, headless = files["service.yaml"]
    assert cluster["spec"]["type"] == "ClusterIP" and headless["spec"]["clusterIP"] == "None"
    assert headless["metadata"]["name"] == "gen-headless"
    labels = one(files, "Deployment")["spec"]["template"]["metadata"]["labels"]
    for obj in (cluster, headless):
        assert obj["spec"]["selector"] == labels
        assert {p["port"] for p in obj["spec"]["ports"]} == {A.GRPC_PORT, A.REST_PORT}
    assert one(files, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == labels
    hpa = one(files, "HorizontalPodAutoscaler")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 9)
    assert hpa["scaleTargetRef"]["name"] == "gen"
    assert files["kustomization.yaml"][0]["resources"] == [
        "configmap.yaml", "deployment.yaml", "service.yaml", "pdb.yaml", "hpa.yaml"]


def test_genserve_deployment(models, tmp_path):
    files = deploy(models, tmp_path / "out", "--runtime", "genserve", "--pvc", "models-claim",
                   "--drain-seconds", "40")
    pod = one(files, "Deployment")["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"] == ["genserve"]
    params = parse_serve_args(c["args"])
    assert params["drain_seconds"] == 40
    assert pod["terminationGracePeriodSeconds"] > PRESTOP_SECONDS + params["drain_seconds"]
    assert c["readinessProbe"]["httpGet"] == {"path": A.READY_PATH, "port": params["rest_port"]}
    assert c["startupProbe"]["grpc"]["service"] == "tensorflow.serving.PredictionService"
    assert c["livenessProbe"]["tcpSocket"]["port"] == params["port"]  # a drain never restarts it
    assert "nvidia.com/gpu" not in c["resources"].get("limits", {})
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["models"] == str(params["models_dir"])
    volume = {v["name"]: v for v in pod["volumes"]}["models"]
    assert volume["persistentVolumeClaim"] == {"claimName": "models-claim", "readOnly": True}
    assert set(one(files, "ConfigMap")["data"]) == {"monitoring.config"}


def test_model_base_uri(models, tmp_path):
    files = deploy(models, tmp_path / "out", "--model-base-uri", "gs://bucket/models/")
    entries = parse_models_config(one(files, "ConfigMap")["data"]["models.config"])
    assert [e.base_path for e in entries] == ["gs://bucket/models/toy", "gs://bucket/models/vae"]
    (c,) = one(files, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert [m["name"] for m in c["volumeMounts"]] == ["config"]


def test_kserve_tf_serving(models, tmp_path):
    files = deploy(models, tmp_path / "out", "--kserve", "--storage-uri", "s3://b/models")
    assert set(files) == {"inferenceservice.yaml", "kustomization.yaml"}
    isvcs = {d["metadata"]["name"]: d for d in files["inferenceservice.yaml"]}
    assert set(isvcs) == {"toy", "vae"}  # KServe's TF Serving runtime serves one model, named as the ISVC
    model = isvcs["toy"]["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "tensorflow" and model["storageUri"] == "s3://b/models/toy"
    assert model["ports"] == [{"name": "h2c", "containerPort": 9000, "protocol": "TCP"}]
    assert set(a[2:].split("=")[0] for a in model["args"]) <= A.TF_SERVING_FLAGS


def test_kserve_genserve_runtime(models, tmp_path):
    files = deploy(models, tmp_path / "out", "--kserve", "--runtime", "genserve", "--pvc", "claim")
    (isvc,) = files["inferenceservice.yaml"]
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == "genserve" and model["storageUri"] == "pvc://claim"
    (runtime,) = files["servingruntime.yaml"]
    (c,) = runtime["spec"]["containers"]
    params = parse_serve_args(c["args"])
    assert str(params["models_dir"]) == "/mnt/models"  # where KServe's storage initializer puts them
    assert c["ports"] == [{"name": "h2c", "containerPort": params["port"], "protocol": "TCP"}]
    assert runtime["spec"]["supportedModelFormats"][0]["name"] == "tensorflow"


@pytest.mark.parametrize("extra, message", [
    (["--runtime", "genserve", "--model-base-uri", "gs://b/m"], "needs --runtime tf-serving"),
    (["--model-base-uri", "http://b/m"], "must start with gs:// or s3://"),
    (["--kserve"], "--kserve needs --storage-uri"),
    (["--pvc", "a", "--model-base-uri", "gs://b/m"], "give one"),
    (["--name", "Bad_Name"], "--name must be a lowercase DNS label"),
    (["--replicas", "3", "--max-replicas", "2"], "--replicas <= --max-replicas"),
    (["--namespace", "My Space"], "--namespace must be a lowercase DNS label"),
    (["--storage-uri", "gs://b/m"], "--storage-uri is for --kserve"),
])
def test_bad_options_are_one_line_errors(models, tmp_path, extra, message):
    result = CliRunner().invoke(app, ["deploy", "kubernetes", "--models-dir", str(models), "--out",
                                      str(tmp_path / "out"), *extra])
    assert result.exit_code == 1 and message in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_manifests_are_not_written_into_the_models_dir(models, tmp_path):
    for out in (models, models / "k8s"):
        result = CliRunner().invoke(app, ["deploy", "kubernetes", "--models-dir", str(models), "--out",
                                          str(out), "--force"])
        assert result.exit_code == 1 and "inside --models-dir" in result.output, result.output
    assert not (models / "k8s").exists() and not list(models.glob("*.yaml"))


def test_existing_files_are_kept_without_force(models, tmp_path):
    out = tmp_path / "out"
    deploy(models, out)
    (out / "deployment.yaml").write_text("# edited by hand\n")
    result = CliRunner().invoke(app, ["deploy", "kubernetes", "--models-dir", str(models), "--out", str(out)])
    assert result.exit_code == 1 and "--force" in result.output
    assert (out / "deployment.yaml").read_text() == "# edited by hand\n"
    deploy(models, out, "--force")
    assert "Deployment" in (out / "deployment.yaml").read_text()


@pytest.mark.parametrize("runtime", ["tf-serving", "genserve"])
def test_external_base_path_is_refused(models, tmp_path, runtime):
    (models / "models.config").write_text('model_config_list { config { name: "x" base_path: "/data/x" '
                                          'model_platform: "tensorflow" } }')
    result = CliRunner().invoke(app, ["deploy", "kubernetes", "--models-dir", str(models), "--out",
                                      str(tmp_path / "out"), "--runtime", runtime])
    assert result.exit_code == 1 and "outside the models directory" in result.output


def test_unknown_runtime_is_a_one_line_error(models, tmp_path):
    result = CliRunner().invoke(app, ["deploy", "kubernetes", "--models-dir", str(models), "--out",
                                      str(tmp_path / "out"), "--runtime", "triton"])
    assert result.exit_code == 1 and "--runtime must be one of tf-serving, genserve" in result.output


def _wheel_files() -> set[Path]:
    """What genserve's wheel holds: every module plus the package data that pyproject.toml declares
    (setuptools' rule: glob patterns relative to the package directory). The slow test below checks
    this rule against a wheel setuptools builds."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    package = ROOT / "genserve"
    files = set(package.rglob("*.py")).union(*(package.glob(p) for p in patterns["genserve"]))
    return {path for path in files if "__pycache__" not in path.parts and path.is_file()}


def _install_like_a_wheel(site: Path) -> Path:
    """Copy genserve into `site` as its wheel installs it."""
    for path in _wheel_files():
        target = site / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return site / "genserve"


def _run_installed(site: Path, cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    """`genserve *argv` (the console script's main) with only `site`'s genserve importable."""
    code = ("import sys, genserve; from genserve.cli import main; "
            "assert genserve.__file__.startswith(sys.argv[1]), genserve.__file__; "
            "sys.argv = ['genserve', *sys.argv[2:]]; sys.exit(main())")
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-c", code, str(site), *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_deploy_from_an_installed_package_outside_the_checkout(models, tmp_path):
    """The ConfigMap's batching and monitoring files and KServe's TF Serving release come from the
    installed package, not from a checkout beside it (they once read `docker/` under the repository)."""
    site, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    installed = _install_like_a_wheel(site)
    elsewhere.mkdir()
    for extra in ([], ["--kserve", "--storage-uri", "gs://bucket/models"]):
        out = tmp_path / f"out{len(extra)}"
        result = _run_installed(site, elsewhere, "deploy", "kubernetes", "--models-dir", str(models),
                                "--out", str(out), *extra)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
    data = yaml.safe_load((tmp_path / "out0" / "configmap.yaml").read_text())["data"]
    for name in (A.BATCHING_FILE, A.MONITORING_FILE):
        assert data[name] == (installed / "deploy" / name).read_text() == A.packaged_text(name)
    isvc = next(yaml.safe_load_all((tmp_path / "out3" / "inferenceservice.yaml").read_text()))
    assert isvc["spec"]["predictor"]["model"]["runtimeVersion"] == f"{A.tf_serving_version()}-gpu"
    assert sorted(p.name for p in elsewhere.iterdir()) == []  # nothing written where it ran
    # An install that lost a file says so in one line.
    (installed / "deploy" / A.MONITORING_FILE).unlink()
    result = _run_installed(site, elsewhere, "deploy", "kubernetes", "--models-dir", str(models),
                            "--out", str(tmp_path / "out-broken"))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "monitoring.config, part of the genserve package" in result.stdout + result.stderr


@pytest.mark.slow
def test_the_built_wheel_holds_the_same_files(tmp_path):
    """setuptools' own wheel (built in isolation, so it needs PyPI once) = `_wheel_files()`."""
    import zipfile

    src = tmp_path / "src"
    for name in ("pyproject.toml", "README.md"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / name, src / name)
    shutil.copytree(ROOT / "genserve", src / "genserve", ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                             str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("genserve-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        held = {n for n in archive.namelist() if n.startswith("genserve/")}
    assert held == {str(p.relative_to(ROOT)) for p in _wheel_files()}
    assert {"genserve/deploy/monitoring.config", "genserve/deploy/batching_parameters.txt",
            "genserve/deploy/TF_SERVING_VERSION"} <= held
