"""`genserve deploy kubernetes`: kustomize-ready manifests for a models directory.

    genserve deploy kubernetes --models-dir models --out deploy/k8s                      # TF Serving, GPU
    genserve deploy kubernetes --models-dir models --out deploy/k8s --runtime genserve --pvc models
    genserve deploy kubernetes --models-dir models --out deploy/kserve --kserve --storage-uri gs://b/models

See docs/deploy.md. Imports no TensorFlow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from genserve.cli.common import check_directory, fail

deploy_app = typer.Typer(help="Deployment manifests (Kubernetes, KServe) for a models directory.",
                         no_args_is_help=True)


def register(app, train_app, export_app, eval_app, plot_app) -> None:
    """Add `genserve deploy ...` to the app."""
    app.add_typer(deploy_app, name="deploy")


@deploy_app.command("kubernetes")
def kubernetes(
    models_dir: Annotated[Path, typer.Option("--models-dir", help="Models directory (models.config and <name>/<version>/) to deploy.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the YAML files and kustomization.yaml.")],
    runtime: Annotated[str, typer.Option(help="tf-serving: TensorFlow Serving on GPUs (the Dockerfile.serving image); genserve: `genserve serve` on CPU/arm64 (the Dockerfile image).")] = "tf-serving",
    kserve: Annotated[bool, typer.Option("--kserve", help="Write KServe objects (InferenceService; ServingRuntime for genserve) instead of Deployment/Services.")] = False,
    replicas: Annotated[int, typer.Option(min=1, max=1000, help="Replicas (the HPA's minimum).")] = 2,
    max_replicas: Annotated[Optional[int], typer.Option(min=1, max=1000, help="The HPA's maximum (default 3 x --replicas).")] = None,
    image: Annotated[Optional[str], typer.Option(help="Container image (default genserve-serving:latest or genserve:latest: build and push it first).")] = None,
    name: Annotated[str, typer.Option(help="Name of the Deployment, Services, ConfigMap... (a DNS label).")] = "genserve",
    namespace: Annotated[Optional[str], typer.Option(help="Namespace written into kustomization.yaml.")] = None,
    pvc: Annotated[Optional[str], typer.Option(help="PersistentVolumeClaim holding the models directory, mounted read-only at /models (default: the models are in the image).")] = None,
    model_base_uri: Annotated[Optional[str], typer.Option(help="tf-serving only: read models from gs://... or s3://... (<uri>/<name> in models.config) instead of /models.")] = None,
    storage_uri: Annotated[Optional[str], typer.Option(help="--kserve: where KServe downloads models from (gs://, s3://, pvc://claim/path; default pvc://<--pvc>).")] = None,
    gpus: Annotated[int, typer.Option(min=1, max=16, help="GPUs per replica (tf-serving).")] = 1,
    drain_seconds: Annotated[int, typer.Option(min=0, max=3600, help="Longest request a stopping replica still finishes (sets the grace period).")] = 30,
    force: Annotated[bool, typer.Option("--force", help="Overwrite files already in --out.")] = False,
) -> None:
    """Write a kustomize-ready set of Kubernetes (or KServe) manifests serving MODELS_DIR."""
    import re

    from genserve.deploy.kserve import kserve_objects
    from genserve.deploy.kubernetes import DeployError, DeploySpec, core_objects
    from genserve.deploy.render import write_manifests
    from genserve.repository import ConfigError, locate_models

    check_directory(models_dir, "--models-dir")
    check_directory(out, "--out")
    if not re.fullmatch(r"[a-z]([-a-z0-9]{0,40}[a-z0-9])?", name):
        raise fail(f"--name must be a lowercase DNS label (letters, digits, '-'), got {name!r}")
    if namespace is not None and not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", namespace):
        raise fail(f"--namespace must be a lowercase DNS label (letters, digits, '-'), got {namespace!r}")
    if storage_uri is not None and not kserve:
        raise fail("--storage-uri is for --kserve manifests (tf-serving reads gs:// or s3:// with --model-base-uri)")
    if out.resolve() == models_dir.resolve() or models_dir.resolve() in out.resolve().parents:
        raise fail(f"--out {out} is inside --models-dir {models_dir}; write the manifests elsewhere "
                   "(the server would scan them as models)")
    try:
        located = locate_models(models_dir)
    except (FileNotFoundError, ConfigError, OSError) as e:
        raise fail(str(e))
    refused = [m.error for m in located.values() if m.error]
    if refused:  # a manifest must not ship a config the server would refuse
        raise fail(f"model {refused[0]}")
    try:
        spec = DeploySpec(runtime=runtime, models=[m.entry for m in located.values()], name=name,
                          image=image, replicas=replicas, max_replicas=max_replicas, gpus=gpus, pvc=pvc,
                          model_base_uri=model_base_uri, drain_seconds=drain_seconds)
        files = kserve_objects(spec, storage_uri) if kserve else core_objects(spec)
        written = write_manifests(files, out, namespace=namespace, force=force)
    except (DeployError, FileExistsError) as e:
        raise fail(str(e))
    except OSError as e:
        raise fail(f"cannot write {out}: {e.strerror or e}")
    for path in written:
        typer.echo(str(path))
    typer.echo(f"apply with: kubectl apply -k {out}")
