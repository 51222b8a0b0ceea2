"""Kubernetes and KServe manifests for a models directory, for TF Serving or `genserve serve`.

    genserve deploy kubernetes --models-dir models --out deploy/k8s [--runtime genserve] [--kserve]

`args` names the two servers' command lines once (Dockerfile.serving and the manifests both follow it),
`kubernetes` builds the core objects, `kserve` the InferenceService / ServingRuntime, `render` writes
them as YAML files. See docs/deploy.md.
"""
