"""No TensorFlow / gRPC / Ray start-up or optimiser lines on stderr unless --verbose (issue 17).

    .venv/bin/python -m pytest tests/test_noise.py -q

Real `genserve` commands and the example script in subprocesses, on a tiny untrained char-LSTM and
synthetic GAN data; Ray's lines are checked by tests/test_batch_engine.py's Ray test (one Ray start-up).
TF_ENABLE_ONEDNN_OPTS=1 makes this machine behave like the CPUs on which TensorFlow turns oneDNN on by
itself (where the "oneDNN supports DT_INT32 only on platforms with AVX-512" and grappler's "remapper
failed" lines were seen); the variables genserve.cli.quiet sets are removed from the children's
environment, so the test sees what genserve does, not what the caller set.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import genserve_as_at_a_terminal, wait_until

pytest.importorskip("tensorflow")

ROOT = Path(__file__).resolve().parents[1]
TEXT = "a rose by any other name would smell as sweet; so romeo would, were he not romeo call'd.\n" * 30
# A C++ log line (absl's `util.cc:131]`, Ray's `core_worker.cc:2465:`), absl's preamble, TF's CPU and
# oneDNN notes, Ray Data's progress-bar warning.
NOISE = re.compile(r"\w+\.cc:\d+[\]:]|absl::InitializeLog|oneDNN|cpu_feature_guard|rebuild TensorFlow"
                   r"|Progress bars disabled|remapper failed")


def child_env(**extra: str) -> dict:
    from genserve.cli.quiet import QUIET_ENV, VERBOSE_ENV

    env = {k: v for k, v in os.environ.items() if k not in QUIET_ENV and k != VERBOSE_ENV}
    env["TF_ENABLE_ONEDNN_OPTS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return {**env, **extra}


def genserve(*args, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "genserve", *map(str, args)], env=child_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def assert_quiet(stderr: str) -> None:
    noise = [line for line in stderr.splitlines() if NOISE.search(line)]
    assert not noise, "noise on stderr:\n" + "\n".join(noise)


@pytest.fixture(scope="module")
def text_work(tmp_path_factory) -> tuple[Path, Path]:
    """(workdir, models_dir) of a tiny untrained char-LSTM exported as text version 1."""
    from benchmarks.harness import export_untrained_text
    from genserve.training.text import TextConfig

    root = tmp_path_factory.mktemp("noise")
    cfg = dataclasses.replace(TextConfig(), maxlen=12, units=16)
    export_untrained_text(root / "models", root / "work", cfg, alphabet=TEXT)
    return root / "work", root / "models"


def test_export_text_prints_only_its_result(text_work, tmp_path):
    work, _ = text_work
    done = genserve("export", "text", "--workdir", work, "--models-dir", tmp_path / "m")
    assert done.returncode == 0, done.stderr
    assert_quiet(done.stderr)


def test_verbose_keeps_tensorflows_lines(tmp_path):
    done = genserve("--verbose", "export", "toy", "--models-dir", tmp_path / "m")
    assert done.returncode == 0, done.stderr
    assert "absl::InitializeLog" in done.stderr  # the start-up lines the quiet mode hides


def stderr_after_ctrl_c(args, ready) -> tuple[int, str]:
    """Start `genserve ARGS`, wait for ready(process), send SIGINT (Ctrl-C): (exit code, stderr)."""
    process = subprocess.Popen(genserve_as_at_a_terminal(*args), env=child_env(), cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready(process)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, stderr


def test_serve_loading_text_logs_only_its_own_lines(text_work):
    def serving(process) -> None:
        banner = process.stdout.readline()  # printed once every model is loaded (warmup included)
        assert "serving text" in banner, process.stderr.read() if process.poll() is not None else banner

    _, stderr = stderr_after_ctrl_c(["serve", "--models-dir", text_work[1], "--port", "0", "--poll-seconds", "0"],
                                    serving)
    assert "loaded model text version 1" in stderr  # genserve's own log stays
    assert_quiet(stderr)


def test_train_gan_prints_no_grappler_error(tmp_path):
    done = genserve("train", "gan", "--workdir", tmp_path / "gan", "--dataset", "synthetic", "--epochs", "1",
                    "--quiet")
    assert done.returncode == 0, done.stderr
    assert_quiet(done.stderr)


def test_tls_client_against_a_plaintext_server_prints_one_line(toy_server):
    done = genserve("generate", "--target", toy_server, "--tls", "--timeout", "10")
    assert done.returncode == 1, done.stderr
    assert_quiet(done.stderr)  # gRPC's ssl_transport_security.cc handshake line


def test_stub_client_example_prints_only_its_answers(toy_server):
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "tf_serving_stub_client.py"), toy_server],
                          env=child_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "answers are correct" in done.stdout, done.stdout + done.stderr
    assert_quiet(done.stderr)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to see where fd 2 points")
def test_ctrl_c_while_tensorflow_loads_does_not_dump_its_start_up_lines(text_work, tmp_path):
    def importing_tensorflow(process) -> None:  # fd 2 points at the quiet import's (deleted) temp file
        fd2 = f"/proc/{process.pid}/fd/2"

        def capturing() -> bool:
            try:
                return "(deleted)" in os.readlink(fd2) and os.stat(fd2).st_size > 0
            except OSError:
                return False

        wait_until(capturing, timeout=120, what="TensorFlow's import under the quiet hook")

    code, stderr = stderr_after_ctrl_c(["export", "text", "--workdir", text_work[0], "--models-dir", tmp_path / "m"],
                                       importing_tensorflow)
    assert code != 0
    assert_quiet(stderr)
