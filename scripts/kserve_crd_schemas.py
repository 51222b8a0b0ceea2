"""Extract KServe's published CRDs into the small files tests/test_deploy_schemas.py validates against.

    python scripts/kserve_crd_schemas.py KSERVE_CHECKOUT tests/data/kserve

No registry package ships KServe's CRDs (the kserve wheel and sdist on PyPI hold only the Python SDK's
model classes; there is no npm or Debian package of them), so the CRDs are kept in the repository,
taken unchanged from kserve/kserve's config/crd/full/ except that every `description` is dropped
(2.2 MB of YAML -> 28 kB gzipped JSON). The source commit and the sha256 of each source file go into
SOURCE.json beside them; re-run this script with a newer checkout to update them.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import yaml

CRDS = ("serving.kserve.io_inferenceservices.yaml", "serving.kserve.io_servingruntimes.yaml")


def strip_descriptions(node):
    if isinstance(node, dict):
        return {k: strip_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [strip_descriptions(v) for v in node]
    return node


def main(checkout: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()
    source = {"repository": "kserve/kserve", "commit": commit, "files": {}}
    for name in CRDS:
        raw = (checkout / "config" / "crd" / "full" / name).read_bytes()
        crd = strip_descriptions(yaml.safe_load(raw))
        data = json.dumps(crd, sort_keys=True, separators=(",", ":")).encode()
        target = out / (name.removesuffix(".yaml") + ".json.gz")
        target.write_bytes(gzip.compress(data, mtime=0))
        source["files"][target.name] = {"from": f"config/crd/full/{name}",
                                        "sha256": hashlib.sha256(raw).hexdigest()}
    (out / "SOURCE.json").write_text(json.dumps(source, indent=2) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
