"""`genserve rollout` (issue 18): a new version onto every replica of a shared models directory,
without breaking pinned sessions.

    .venv/bin/python -m pytest tests/test_rollout.py -q

Covers: the Done-when of issue 18 on three `genserve serve` processes (a rolling update v1 -> v2 driven
by the command while a text session pinned through the label `stable` and a `batch run --target a,b,c`
run: no request fails, no session or job gets answers from two versions, a session pinned after the
label moved gets v2 everywhere, `--finish` unloads v1); and on in-process replicas: --drain-seconds
(steps 2-5 in one command), the stops that change nothing (an unreachable replica, a version not
exported, --finish before the label moved or with another label on the old version) and a replica
that never loads the new version (a one-line error after --timeout, the label left on v1).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from benchmarks.harness import ServerProcess, export_untrained_text, free_port
from tests.conftest import wait_until

REPO = Path(__file__).resolve().parents[1]
ALPHABET = "abcdefghijklmnopqrstuvwxyz ,.;'\n"


def _genserve(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "GENSERVE_TARGET": ""}
    return subprocess.run([sys.executable, "-m", "genserve", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)


def _config(models_dir: Path, name: str):
    from genserve.repository import read_models_config

    return next(e for e in read_models_config(models_dir) if e.name == name)


# -- three `genserve serve` replicas, a text session and a batch job --------------------------------
@pytest.fixture(scope="module")
def text_fleet(tmp_path_factory):
    """Three `genserve serve` processes (0.2 s polls) over one models directory holding a tiny untrained
    text model at versions 1 and 2, models.config serving version 1 only with label stable -> 1
    (docs/deploy.md step 1; version 2 is step 2's export, which no replica loads yet)."""
    from genserve.repository import set_version_labels, set_version_policy
    from genserve.training.text import TextConfig

    root = tmp_path_factory.mktemp("rollout")
    models = root / "models"
    cfg = dataclasses.replace(TextConfig(), maxlen=12, units=16)
    first = export_untrained_text(models, root / "work", cfg, alphabet=ALPHABET)
    # Version 2 has the same weights (the answers' model_spec tells the versions apart): a copy costs
    # no second export.
    shutil.copytree(first, first.parent / "2")
    set_version_policy(models, "text", ("specific", (1,)))
    set_version_labels(models, "text", {"stable": 1})
    with ExitStack() as stack:
        servers = []
        for i in range(3):
            server = ServerProcess(models, "--disable-batching", "--enable-grpc-healthcheck-service",
                                   poll_seconds=0.2, log=root / f"replica{i}.log")
            stack.callback(server.kill)
            servers.append(server.start())
        for server in servers:
            server.wait_ready("text", timeout=180)
        yield models, servers


def _session(client, versions: list, errors: list, stop: threading.Event) -> None:
    """A text session pinned through `stable`: prime once, then step after step (the state carried
    from answer to answer, as `genserve generate` does), a server-side generate now and then; the
    version of every answer (its model_spec) goes to `versions`, any failure to `errors`."""
    import numpy as np

    try:
        pin = client.pinned("text", version_label="stable")
        reply = pin.predict_response({"ids": np.array([[1, 2, 3]], np.int32)}, signature="prime")
        versions.append(reply.model_spec.version.value)
        h, c = reply.outputs["h"], reply.outputs["c"]
        from genserve.wire.codec import from_tensor_proto

        h, c = from_tensor_proto(h), from_tensor_proto(c)
        n = 0
        while not stop.is_set():
            n += 1
            if n % 10 == 0:
                reply = pin.predict_response({"ids": np.array([[1, 2]], np.int32),
                                              "temperature": np.ones(1, np.float32),
                                              "length": np.full(1, 4, np.int32), "seed": np.full(1, n, np.int64)},
                                             signature="generate")
            else:
                reply = pin.predict_response({"ids": np.array([n % 5], np.int32), "h": h, "c": c},
                                             signature="step")
                h, c = from_tensor_proto(reply.outputs["h"]), from_tensor_proto(reply.outputs["c"])
            versions.append(reply.model_spec.version.value)
            stop.wait(0.01)  # pacing, so the replicas' polls and loads get the two cores
    except Exception as e:  # noqa: BLE001 - any failure must fail the test, not end a thread silently
        errors.append(e)


def test_a_rolling_update_fails_no_request_and_mixes_no_versions(text_fleet, tmp_path):
    """The job is larger than the rollout needs (it cannot end first on a busy machine); once the
    rollout is done and the job has run across it, SIGINT ends the job the documented way: no new
    chunk, each finished item recorded (exit 130)."""
    import signal

    import numpy as np

    from genserve.clients import Client

    models, servers = text_fleet
    target = ",".join(s.target for s in servers)
    started = time.monotonic()
    items = 5000
    job = tmp_path / "job.jsonl"
    job.write_text("".join(json.dumps({"id": f"t{i}", "kind": "text", "seed_text": "to be or not",
                                       "length": 4, "temperature": 1.0, "seed": i}) + "\n"
                           for i in range(items)))
    out = tmp_path / "out"
    results = out / "results.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    batch = subprocess.Popen([sys.executable, "-m", "genserve", "batch", "run", str(job), "--out", str(out),
                              "--target", target, "--max-rows", "2", "--concurrency", "2", "--timeout", "60",
                              "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    versions, errors, stop = [], [], threading.Event()
    done = lambda: len(results.read_text().splitlines()) if results.exists() else 0  # noqa: E731
    with Client(target, timeout=30) as client:
        session = threading.Thread(target=_session, args=(client, versions, errors, stop))
        session.start()
        try:
            wait_until(lambda: (done() >= 5 and len(versions) >= 5) or batch.poll() is not None or errors,
                       timeout=60, what="the job and the session under way")
            at_start = done()
            rolled = _genserve("rollout", "--models-dir", models, "--model", "text", "--version", 2,
                               "--target", target, "--poll-interval", "0.1", "--timeout", "60")
            at_label, seen = done(), len(versions)
            batch_running = batch.poll() is None
            assert rolled.returncode == 0, rolled.stdout + rolled.stderr
            new = client.pinned("text", version_label="stable")
            new_versions = {new.predict_response({"ids": np.array([[1, 2, 3]], np.int32)},
                                                 signature="prime").model_spec.version.value for _ in range(9)}
            wait_until(lambda: done() > at_label or batch.poll() is not None, timeout=30, what="the job goes on")
            wait_until(lambda: len(versions) > seen + 3 or errors, timeout=30, what="the session goes on")
            batch.send_signal(signal.SIGINT)
            output, _ = batch.communicate(timeout=60)
        finally:
            stop.set()
            session.join(timeout=30)
            if batch.poll() is None:
                batch.kill()
    finished = _genserve("rollout", "--models-dir", models, "--model", "text", "--version", 2,
                         "--target", target, "--poll-interval", "0.1", "--timeout", "60", "--finish")
    print(f"\nrolling update across a session and a batch job: {time.monotonic() - started:.1f} s "
          f"(records at start/label/end: {at_start}/{at_label}/{done()}, session answers {len(versions)})\n"
          + rolled.stdout + finished.stdout)
    lines = rolled.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["step 2", "step 3"] + ["step 3"] * 3 + ["step 4"] * 4 \
        + ["done"], rolled.stdout
    assert all(s.target in rolled.stdout for s in servers)
    assert batch_running and at_label < items, "the job did not run across the rollout: nothing was tested"
    assert not errors, errors
    assert len(versions) > 10 and set(versions) == {1}  # pinned through stable before it moved: 1 only
    assert new.version == 2 and new_versions == {2}
    assert batch.returncode == 130, output  # stopped by the SIGINT above, not by a failure
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(records) == len({r["id"] for r in records}) > at_label
    assert {(r["status"], r["version"]) for r in records} == {("ok", 1)}  # the job's version, every item
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert all(f"step 5: {s.target} serves version 2 only" in finished.stdout for s in servers)
    assert "(unloading: 1)" in finished.stdout, finished.stdout
    entry = _config(models, "text")
    assert entry.version_policy == ("specific", (2,)) and entry.version_labels == {"stable": 2}
    with Client(servers[0].target, timeout=10) as client:
        assert {s.version for s in client.status("text") if s.state == "AVAILABLE"} == {2}


# -- in-process replicas over a toy models directory ------------------------------------------------
@pytest.fixture
def toy_fleet(toy_models_copy):
    """(models_dir, [three in-process servers polling every 0.05 s]) over toy versions 1 and 2, with
    models.config serving version 1 only and stable -> 1."""
    from genserve.repository import set_version_labels, set_version_policy
    from genserve.serving.server import serve

    set_version_policy(toy_models_copy, "toy", ("specific", (1,)))
    set_version_labels(toy_models_copy, "toy", {"stable": 1})
    with ExitStack() as stack:
        yield toy_models_copy, [stack.enter_context(serve(toy_models_copy, poll_seconds=0.05)) for _ in range(3)]


def _available(target: str) -> set[int]:
    from genserve.clients import Client

    with Client(target, timeout=10) as client:
        return {s.version for s in client.status("toy") if s.state == "AVAILABLE"}


def test_drain_seconds_runs_all_steps_in_one_command(cli, toy_fleet):
    models, targets = toy_fleet
    result = cli("rollout", "--models-dir", models, "--model", "toy", "--version", 2, "--target",
                 ",".join(targets), "--poll-interval", "0.05", "--drain-seconds", "0")
    assert result.exit_code == 0, result.output
    print(result.stdout)
    assert "waiting 0 s (--drain-seconds) for the sessions pinned to 1" in result.stdout
    assert all(f"step 5: {t} serves version 2 only" in result.stdout for t in targets), result.stdout
    assert _config(models, "toy").version_labels == {"stable": 2}
    assert all(_available(t) == {2} for t in targets)


def test_a_replica_that_does_not_answer_stops_the_rollout_before_any_write(cli, toy_fleet):
    models, targets = toy_fleet
    before = (models / "models.config").read_bytes()
    dead = f"127.0.0.1:{free_port()}"
    result = cli("rollout", "--models-dir", models, "--model", "toy", "--version", 2, "--target",
                 f"{targets[0]},{dead}")
    assert result.exit_code == 1
    error = result.stderr.strip()
    assert error.startswith(f"error: replica {dead} does not answer") and "nothing was changed" in error
    assert len(error.splitlines()) == 1
    assert (models / "models.config").read_bytes() == before


def test_a_replica_that_never_loads_the_version_times_out_with_the_label_left_on_the_old_one(cli, toy_fleet):
    from genserve.serving.server import serve

    models, targets = toy_fleet
    with serve(models, poll_seconds=0) as frozen:  # reads models.config once: never loads version 2
        start = time.monotonic()
        result = cli("rollout", "--models-dir", models, "--model", "toy", "--version", 2, "--target",
                     f"{targets[0]},{frozen}", "--timeout", "1", "--poll-interval", "0.05")
        assert time.monotonic() - start < 10
    assert result.exit_code == 1
    error = result.stderr.strip()
    assert error.startswith(f"error: step 3: replica {frozen} did not reach 'serves version 2' within 1 s")
    assert "label 'stable' still names 1, which every replica serves" in error and len(error.splitlines()) == 1
    entry = _config(models, "toy")
    assert entry.version_labels == {"stable": 1} and entry.version_policy == ("specific", (1, 2))


def test_the_stops_that_change_nothing(cli, toy_fleet):
    from genserve.repository import set_version_labels

    models, targets = toy_fleet
    target = ",".join(targets)
    before = (models / "models.config").read_bytes()
    base = ("rollout", "--models-dir", models, "--model", "toy", "--target", target)
    cases = {
        (*base, "--version", 3): "version 3 of model 'toy' is not in",
        (*base, "--version", 2, "--finish"): "label 'stable' of 'toy' names 1, not 2",
        (*base, "--version", 2, "--finish", "--drain-seconds", "1"): "give --finish or --drain-seconds",
        ("rollout", "--models-dir", models, "--model", "nope", "--version", 2, "--target", target):
            "model 'nope' is not served from",
    }
    for args, message in cases.items():
        result = cli(*args)
        assert result.exit_code == 1 and message in result.stderr, (args, result.output)
        assert (models / "models.config").read_bytes() == before
    set_version_labels(models, "toy", {"stable": 2, "canary": 1})
    moved = (models / "models.config").read_bytes()
    result = cli(*base, "--version", 2, "--finish")
    assert result.exit_code == 1 and "label(s) canary=1 of 'toy' name a version" in result.stderr
    assert (models / "models.config").read_bytes() == moved


# -- the Ray engine over a replica list -------------------------------------------------------------
class _Predicts:
    """A server observer counting the Predict calls it answered OK."""

    def __init__(self):
        self.ok = 0

    def observe(self, entrypoint, method, model, code, seconds):
        if method == "Predict" and code == "OK":
            self.ok += 1


# ~40 s on the busy 2-core box, most of it ray.init and the actor pool: deselected by default (-m slow).
@pytest.mark.slow
def test_the_ray_engine_spreads_a_job_over_a_replica_list(tmp_path):
    ray = pytest.importorskip("ray", reason="Ray Data is not installed (pip install 'genserve[batch]')")
    from benchmarks.harness import export_untrained_vae
    from genserve.serving.server import ModelServer
    from genserve.training.vae import VAEConfig

    models = tmp_path / "models"
    export_untrained_vae(models, tmp_path / "vae", VAEConfig(conv_filters=(4, 8, 8, 8), dense_units=8))
    servers = [ModelServer(models, poll_seconds=0) for _ in range(2)]
    counters = [_Predicts() for _ in servers]
    for server, counter in zip(servers, counters):
        server.observers.append(counter)
        server.start()
    items = 200
    job = tmp_path / "job.jsonl"
    job.write_text("".join(json.dumps({"id": f"p{i}", "kind": "decode", "points": [[i / items, 0.5]]}) + "\n"
                           for i in range(items)))
    start = time.monotonic()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        from genserve.batch.driver import JobOptions, run_job

        target = ",".join(f"127.0.0.1:{server.port}" for server in servers)
        summary = run_job(job, JobOptions(out=tmp_path / "out", target=target, concurrency=2, engine="ray",
                                          max_rows=4, progress=False))
    finally:
        ray.shutdown()
        for server in servers:
            server.stop(grace=0)
    print(f"\nray engine, {items} items over 2 replicas: {time.monotonic() - start:.1f} s, "
          f"predicts per replica {[c.ok for c in counters]}")
    assert (summary.ok, summary.failed) == (items, 0)
    records = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert len(records) == len({r["id"] for r in records}) == items
    assert sum(c.ok for c in counters) >= items // 4 and all(c.ok >= 5 for c in counters), [c.ok for c in counters]
