"""Batch generation jobs: a JSONL file of items in, one file per item and results.jsonl out.

    genserve batch run job.jsonl --out out/batch --target 127.0.0.1:8500
    genserve batch run job.jsonl --out out/batch --models-dir models        # server in process
    genserve batch run job.jsonl --out out/batch --target 127.0.0.1:8500 --engine ray

Modules, each importing only those listed before it: `fields` (field checkers, the Kind record, name
rules), `kinds` (the catalogue: one register_kind entry per kind), `job` (reading and validating the
job file), `plan` (grouping and chunking), `backend` (one server over gRPC: --target, or genserve's own
started in process for --models-dir), `results` (results.jsonl, resume, progress), `runners` (one per
kind family, over the family clients), `executors` (threads, Ray's actor pool) and `driver` (the one
driver). See docs/batch.md.
"""
