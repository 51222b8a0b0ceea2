"""Batch generation jobs: a JSONL file of items in, one file per item and results.jsonl out.

    genserve batch run job.jsonl --out out/batch --target 127.0.0.1:8500
    genserve batch run job.jsonl --out out/batch --models-dir out/models        # in process
    genserve batch run job.jsonl --out out/batch --target 127.0.0.1:8500 --engine ray

Modules: `schema` (the job file, one registered entry per kind, validation), `plan` (grouping and
chunking), `backends` (a server over gRPC, or SavedModels in process), `kinds` (the runners),
`results` (atomic outputs, results.jsonl, resume, progress), `local` (the thread-pool engine) and
`ray_engine` (the same chunks on Ray Data's actor pool). See docs/batch.md.
"""
