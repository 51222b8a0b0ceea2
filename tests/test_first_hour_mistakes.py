"""First-hour mistakes (issue 17) found by scripts/first_hour_audit.py and fixed in the batch job reader
and the client's TLS settings: each refused in one plain line, fast, through the real `genserve` CLI.

    .venv/bin/python -m pytest -q tests/test_first_hour_mistakes.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.harness import free_port, make_ca, make_signed, openssl  # throw-away CA (openssl), a free port

REPO = Path(__file__).resolve().parents[1]
ITEM = {"id": "a", "kind": "text", "seed_text": "to be", "length": 20}


def _genserve(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENSERVE_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "genserve", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def _job(data) -> bytes:
    return data if isinstance(data, bytes) else data.encode()


JOB_MISTAKES = {  # name -> (job file content, or None: missing / "dir": a folder; what stderr must say)
    "missing": (None, "job.jsonl: cannot read it: No such file or directory"),
    "folder": ("dir", "job.jsonl: is a folder, not a job file"),
    "utf16": ((json.dumps(ITEM) + "\n").encode("utf-16"), "job.jsonl: saved as UTF-16; save it as UTF-8"),
    "array": (json.dumps([ITEM, ITEM]), "job.jsonl: the file is one JSON array of 2 element(s)"),
    "pretty": (json.dumps(ITEM, indent=2), "job.jsonl: the file is one JSON object spread over several lines"),
    "flipped grid range": (json.dumps({"id": "g", "kind": "grid", "n": 3, "range": [0.9, 0.1]}),
                           "job.jsonl:1: range: the range must increase: low 0.9 is not below high 0.1"),
}


@pytest.mark.parametrize("name", list(JOB_MISTAKES))
def test_batch_job_file_mistakes_are_one_plain_line(name, tmp_path):
    content, expected = JOB_MISTAKES[name]
    job = tmp_path / "job.jsonl"
    if content == "dir":
        job.mkdir()
    elif content is not None:
        job.write_bytes(_job(content))
    done = _genserve("batch", "run", "job.jsonl", "-o", "out", "--dry-run", cwd=tmp_path)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr
    assert lines[0].startswith(expected), lines  # before: "job.jsonl:0: cannot read ...: [Errno 2] ..."
    assert lines[1:] == ["error: job.jsonl: 1 problem(s); nothing was run"], lines
    assert "Errno" not in done.stderr and "codec" not in done.stderr and "Traceback" not in done.stderr


def test_a_well_formed_job_file_still_passes(tmp_path):
    job = tmp_path / "job.jsonl"
    job.write_text("\ufeff# a comment\n" + json.dumps(ITEM) + "\n\n" + json.dumps({**ITEM, "id": "b"}) + "\n")
    done = _genserve("batch", "run", job, "-o", tmp_path / "out", "--dry-run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "2 item(s) valid" in done.stdout


def test_dry_run_refuses_a_file_as_the_output_folder(tmp_path):
    job = tmp_path / "job.jsonl"
    job.write_text(json.dumps(ITEM) + "\n")
    done = _genserve("batch", "run", job, "-o", job, "--dry-run", cwd=tmp_path)
    assert done.returncode == 1 and "exists and is not a folder" in done.stderr, done.stderr
    assert job.read_text() == json.dumps(ITEM) + "\n"


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    folder = tmp_path_factory.mktemp("certs")
    make_ca(folder, "ca")
    make_signed(folder, "server", "ca", "subjectAltName=DNS:localhost,IP:127.0.0.1")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
            "self.key", "-out", "self.pem", "-days", "2", "-subj", "/CN=self",
            "-addext", "basicConstraints=critical,CA:FALSE", cwd=folder)
    return folder


def test_leaf_certificate_as_ca_is_refused_at_once(certs, tmp_path):
    """Before: gRPC trusted the server's own certificate given as --ca-cert, silently."""
    started = time.monotonic()
    done = _genserve("generate", "--target", "localhost:1", "--length", 5, "--ca-cert", certs / "server.pem",
                     cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: the CA certificate (--ca-cert) is a server's own certificate, not a CA: give the certificate "
        "of the CA that signed it (e.g. ca.pem, not server.pem)"]
    assert time.monotonic() - started < 30  # no retry until the 30 s deadline


def test_what_a_client_may_trust(certs):
    from genserve.clients import Client
    from genserve.clients.tls import check_ca_certificates

    pem = {name: (certs / name).read_bytes() for name in ("ca.pem", "server.pem", "server.key", "self.pem")}
    check_ca_certificates(pem["ca.pem"])
    check_ca_certificates(pem["self.pem"])  # a self-signed server certificate is its own CA (CA:FALSE too)
    check_ca_certificates(pem["server.pem"] + pem["ca.pem"])  # a bundle holding the CA
    with pytest.raises(ValueError, match="a server's own certificate, not a CA"):
        Client("localhost:1", root_certificates=str(certs / "server.pem"))
    with pytest.raises(ValueError, match="holds no '-----BEGIN CERTIFICATE-----' block"):
        Client("localhost:1", root_certificates=pem["server.key"])


def test_stub_example_without_a_server_is_one_line(tmp_path):
    port = free_port()  # nothing listens there
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENSERVE_")}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run([sys.executable, str(REPO / "examples" / "tf_serving_stub_client.py"), f"127.0.0.1:{port}"],
                          env=env, capture_output=True, text=True, timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: UNAVAILABLE"), done.stderr


def test_train_text_refuses_a_wrong_corpus_before_tensorflow(tmp_path):
    """The corpus is read before TensorFlow is imported (the refusal took 14-43 s under load before)."""
    from test_extras import _run
    (tmp_path / "empty.txt").write_text("")
    for corpus, said in ((tmp_path / "nosuch.txt", "is neither a file nor one of"),
                         (tmp_path / "empty.txt", "is empty or too short"), (tmp_path, "is neither a file")):
        done = _run({"tensorflow", "keras"}, "train", "text", "--corpus", str(corpus),
                    "--workdir", str(tmp_path / "w"))
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == 1 and len(lines) == 1 and said in lines[0], done.stderr
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("args, said", [
    (["train", "text", "--resume"], "nothing to resume in"),
    (["train", "vae", "--resume"], "nothing to resume in"),
    (["train", "gan", "--resume"], "nothing to resume in"),
    (["train", "gan", "--label-noise", "2"], "--label-noise must be in [0, 0.5)"),
])
def test_training_refusals_come_before_tensorflow(args, said, tmp_path):
    from test_extras import _run
    done = _run({"tensorflow", "keras"}, *args, "--workdir", str(tmp_path / "w"))
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1 and len(lines) == 1 and said in lines[0], done.stderr
