"""Write manifests as YAML files (PyYAML) plus the kustomization.yaml that lists them.

    from genserve.deploy.render import write_manifests
    write_manifests(files, "deploy/k8s")      # files: name -> [objects], from kubernetes / kserve
"""

from __future__ import annotations

from pathlib import Path

import yaml

from genserve.files import atomic_write

KUSTOMIZATION = "kustomization.yaml"


class _Dumper(yaml.SafeDumper):
    """Block style; multi-line strings (models.config, monitoring.config) as literal `|` blocks."""


def _str(dumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(objects: list[dict]) -> str:
    return yaml.dump_all(objects, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def kustomization(files: list[str], namespace: str | None) -> dict:
    out = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}
    if namespace:
        out["namespace"] = namespace
    out["resources"] = list(files)
    return out


def write_manifests(files: dict[str, list[dict]], out_dir, namespace: str | None = None,
                    force: bool = False) -> list[Path]:
    """Write each file and kustomization.yaml into `out_dir` (created if missing).

    Raises:
        FileExistsError: a file to write exists already and `force` is False (nothing is written).
    """
    out_dir = Path(out_dir)
    names = [*files, KUSTOMIZATION]
    existing = [n for n in names if (out_dir / n).exists()]
    if existing and not force:
        raise FileExistsError(f"{out_dir} already has {', '.join(existing)} (use --force to overwrite)")
    written = [atomic_write(out_dir / name, to_yaml(objects)) for name, objects in files.items()]
    written.append(atomic_write(out_dir / KUSTOMIZATION,
                                yaml.dump(kustomization(list(files), namespace), Dumper=_Dumper,
                                          sort_keys=False)))
    return written
