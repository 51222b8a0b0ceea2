"""The first-hour audit (issue 17): ~150 deliberate mistakes a new user makes, each run as a real
`genserve` subprocess (plus a few example-script and `genserve.clients` calls), classified.

    .venv/bin/python scripts/first_hour_audit.py                 # everything, 2 cases at a time
    .venv/bin/python scripts/first_hour_audit.py --only grid     # cases whose name contains "grid"
    .venv/bin/python scripts/first_hour_audit.py --workdir /tmp/fha --jobs 1   # keep (and reuse) the setup

It is an audit, not a test: it prints one line per case and the tally, and exits 0. It runs the
checkout it lives in (PYTHONPATH = this repository). Setup (in a temp dir, or --workdir, reused when
complete): a toy model (versions 1 and 2), tiny text / VAE / GAN models trained for one epoch with
`genserve train` (a small corpus file; `--dataset synthetic`) and exported with `genserve export`,
random-small style and dream exports, a throw-away CA and certificates (the `openssl` command, as
tests/test_tls.py), then a real `genserve serve` (gRPC + REST on free ports) and a TLS one.

Each case declares whether the command should fail (the mistakes) or succeed (a few controls), and is
classified, first match wins:

| class     | meaning                                                                                |
|-----------|----------------------------------------------------------------------------------------|
| traceback | a Python traceback on stderr/stdout                                                     |
| silent    | exit 0 (or a server that starts) where the command should fail, or an input was damaged |
| broken    | a control that should succeed failed                                                    |
| slow      | spent more than --slow s (default 2) beyond importing modules and beyond what a bare     |
|           | refused command costs now (measured first), or was killed at its time limit, for a     |
|           | cause that waiting cannot fix                                                           |
| noisy     | failed, but with more than 2 message lines on stderr, or a TF/gRPC/absl log line or a   |
|           | Python warning among them                                                               |
| clean     | failed fast with at most 2 message lines (or a control that succeeded)                  |

Message lines are the non-empty stderr lines, except click's usage boilerplate around a usage error
("Usage: ...", "Try '... --help' for help.", the box's borders; a wrapped box counts as one line).
Cases marked retryable (nothing listening yet) are given a short --timeout and are never "slow".
Each case runs under `python -X importtime`: the seconds spent importing modules (TensorFlow's ~5 s on
an idle 2-core machine, far more under load) are measured and left out of "slow", so a loaded machine
does not turn every refusal slow; the line shows them, and "TF" when the command imported TensorFlow
before failing (a refusal that could have come before that import is worth a look). Compare runs on
the same machine and load.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
CORPUS = "to be, or not to be, that is the question: whether 'tis nobler in the mind to suffer\n" * 40
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|─ Traceback ")
# A log line of TensorFlow/gRPC/absl (I1205 01:44:09.548122 ...), their start-up notices, a Python warning.
NOISE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d|^WARNING: All log messages before absl|oneDNN|"
                   r"\w+Warning: |^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] ", re.M)
BOILERPLATE = re.compile(r"^(Usage: |Try '.*' for help\.$|[╭╰]─.*[╮╯]$)")
CATEGORIES = ("clean", "traceback", "silent", "broken", "slow", "noisy")


@dataclass(frozen=True)
class Case:
    """One deliberate mistake (expect="fail") or control (expect="ok").

    argv: `genserve` arguments; or ("@py", code) for `python -c`; or ("@script", path, *args).
    prep(cwd): makes the case's files in its own empty working directory (relative paths in argv).
    check(cwd): after the run, a damage description (an input overwritten...) or None.
    retryable: the cause may pass with time (nothing listening yet): never classified slow.
    started: a server command; this text on stdout means it started serving (silent if it should fail).
    interrupt: send SIGINT once this text is in the output (elapsed then counts from the SIGINT).
    """
    name: str
    argv: tuple
    expect: str = "fail"
    prep: Callable[[Path], None] | None = None
    check: Callable[[Path], str | None] | None = None
    retryable: bool = False
    started: str | None = None
    interrupt: str | None = None
    timeout: float = 60.0


@dataclass
class Outcome:
    case: Case
    rc: int
    seconds: float
    stderr: str
    stdout: str
    imports: float = 0.0  # seconds spent importing modules (python -X importtime, top-level packages)
    tensorflow: bool = False  # whether TensorFlow was imported
    category: str = ""
    lines: int = 0
    note: str = ""
    first: str = field(default="")
    damage: str = ""  # what case.check found wrong afterwards (an input overwritten, an output missing)


# -- setup ----------------------------------------------------------------------------------------------
def environment() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENSERVE_")}
    env.update(PYTHONPATH=str(REPO), COLUMNS="80", PYTHONUNBUFFERED="1")
    return env


def genserve(*args) -> list[str]:
    return [PY, "-m", "genserve", *map(str, args)]


def run_setup(argv: list[str], log: Path) -> None:
    with open(log, "ab") as out:
        done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=environment(), cwd=log.parent)
    if done.returncode != 0:
        sys.exit(f"setup failed: {' '.join(argv)} (see {log})")


def make_certs(folder: Path) -> None:
    """ca.pem/.key, other.pem (an unrelated CA), server.pem/.key (localhost, 127.0.0.1, signed by ca)."""
    from benchmarks.harness import make_ca, make_signed  # the tests' throw-away CA

    folder.mkdir(parents=True, exist_ok=True)
    for ca in ("ca", "other"):
        make_ca(folder, ca)
    make_signed(folder, "server", "ca", "subjectAltName=DNS:localhost,IP:127.0.0.1")


def setup(root: Path, jobs: int) -> None:
    """The models, workdirs and certificates (skipped when `root/.complete` exists)."""
    if (root / ".complete").exists():
        return
    for sub in ("work", "models", "toy_models", "logs"):
        shutil.rmtree(root / sub, ignore_errors=True)
        (root / sub).mkdir(parents=True)
    (root / "corpus.txt").write_text(CORPUS)
    make_certs(root / "certs")
    from genserve.serving.tls import make_ssl_config, ssl_config_text  # the server's own SSLConfig writer

    certs = root / "certs"
    config = make_ssl_config((certs / "server.key").read_text(), (certs / "server.pem").read_text())
    (root / "ssl.config").write_text(ssl_config_text(config))
    work, models, logs = root / "work", root / "models", root / "logs"
    chains = {
        "text": [genserve("train", "text", "--workdir", work / "text", "--corpus", root / "corpus.txt",
                          "--epochs", 1, "--maxlen", 10, "--units", 8, "--batch-size", 64, "--quiet"),
                 genserve("export", "text", "--workdir", work / "text", "--models-dir", models)],
        "vae": [genserve("train", "vae", "--workdir", work / "vae", "--dataset", "synthetic", "--epochs", 1,
                         "--train-limit", 64, "--test-limit", 32, "--quiet"),
                genserve("export", "vae", "--workdir", work / "vae", "--models-dir", models)],
        "gan": [genserve("train", "gan", "--workdir", work / "gan", "--dataset", "synthetic", "--epochs", 1,
                         "--latent-dim", 8, "--batch-size", 32, "--train-limit", 128, "--quiet"),
                genserve("export", "gan", "--workdir", work / "gan", "--models-dir", models)],
        "images": [genserve("export", "style", "--backbone", "random-small", "--models-dir", models),
                   genserve("export", "dream", "--backbone", "random-small", "--models-dir", models),
                   genserve("export", "toy", "--models-dir", root / "toy_models")],
    }

    def chain(name):
        for argv in chains[name]:
            run_setup(argv, logs / f"{name}.log")

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        list(pool.map(chain, chains))
    # Last and alone: it lists every model folder in models.config (the parallel exports raced on it).
    for bias in (1, 2):
        run_setup(genserve("export", "toy", "--bias", bias, "--models-dir", models), logs / "toy.log")
    (root / ".complete").write_text("ok\n")


def tls_models(root: Path) -> Path:
    """toy and text beside each other for the TLS server (text: so a client command can succeed over TLS)."""
    from genserve.repository.config import write_models_config

    folder = root / "tls_models"
    if not (folder / "models.config").exists():
        for name in ("toy", "text"):
            shutil.copytree(root / "models" / name, folder / name, dirs_exist_ok=True)
        write_models_config(folder)
    return folder


class Server:
    """A `genserve serve` subprocess; .grpc and .rest are its "127.0.0.1:PORT" once it has said so."""

    def __init__(self, root: Path, name: str, *args):
        self.log = root / "logs" / f"{name}.log"
        self.proc = subprocess.Popen(genserve("serve", "--port", 0, "--poll-seconds", 0, *args),
                                     stdout=subprocess.PIPE, stderr=open(self.log, "wb"), text=True,
                                     env=environment(), cwd=root)
        self.grpc = self.rest = None
        deadline = time.monotonic() + 300
        for line in self.proc.stdout:  # the banner: "serving DIR on HOST:PORT (...)", "REST API on http://..."
            if m := re.search(r" on (127\.0\.0\.1:\d+) \(", line):
                self.grpc = m.group(1)
            if m := re.search(r"REST API on https?://([^/]+)/", line):
                self.rest = m.group(1)
            if self.grpc and ("--rest-port" not in args or self.rest):
                break
            if time.monotonic() > deadline:
                break
        if not self.grpc:
            self.stop()
            sys.exit(f"setup failed: the server did not start (see {self.log})")
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # keep its pipe drained

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# -- running and classifying ------------------------------------------------------------------------------
def command(case: Case, importtime: bool = False) -> list[str]:
    py = [PY, "-X", "importtime"] if importtime else [PY]
    if case.argv[0] == "@py":
        return [*py, "-c", case.argv[1]]
    if case.argv[0] == "@script":
        return [*py, *map(str, case.argv[1:])]
    return [*py, "-m", "genserve", *case.argv]


def split_importtime(stderr: str) -> tuple[str, float, bool]:
    """(stderr without `-X importtime` lines, seconds of top-level imports, TensorFlow imported?)."""
    kept, micros, tf = [], 0, False
    for line in stderr.splitlines(keepends=True):
        if not line.startswith("import time:"):
            kept.append(line)
            continue
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            name = parts[2].rstrip("\n")
            if name.startswith(" ") and not name.startswith("  "):  # a top-level import: its cumulative time
                micros += int(parts[1])
            tf = tf or name.strip() == "tensorflow"
    return "".join(kept), micros / 1e6, tf


def run_case(case: Case, cases_dir: Path) -> Outcome:
    cwd = cases_dir / re.sub(r"[^A-Za-z0-9_.-]+", "_", case.name)
    shutil.rmtree(cwd, ignore_errors=True)
    cwd.mkdir(parents=True)
    if case.prep:
        case.prep(cwd)
    proc = subprocess.Popen(command(case, importtime=True), cwd=cwd, env=environment(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")
    chunks = {"out": [], "err": []}
    seen = threading.Event()
    marker = case.started or case.interrupt

    def pump(stream, key):
        for line in stream:
            chunks[key].append(line)
            if marker and marker in line:
                seen.set()

    readers = [threading.Thread(target=pump, args=(proc.stdout, "out"), daemon=True),
               threading.Thread(target=pump, args=(proc.stderr, "err"), daemon=True)]
    for t in readers:
        t.start()
    start = time.monotonic()
    note, started = "", False
    while proc.poll() is None and time.monotonic() - start < case.timeout:
        if seen.wait(0.05):
            if case.started:
                started = True
                proc.send_signal(signal.SIGINT)
                break
            if case.interrupt:
                start = time.monotonic()  # elapsed (and the time limit) count from the Ctrl-C
                proc.send_signal(signal.SIGINT)
                seen.clear()
                marker, note = None, "Ctrl-C sent"
    timed_out = False
    try:
        proc.wait(timeout=max(1.0, case.timeout - (time.monotonic() - start)))
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.kill()
        proc.wait()
    seconds = time.monotonic() - start
    for t in readers:
        t.join(timeout=5)
    stderr, imports, tf = split_importtime("".join(chunks["err"]))
    out = Outcome(case, proc.returncode, seconds, stderr, "".join(chunks["out"]),
                  0.0 if case.interrupt else imports, tf)
    if started:
        out.rc, note = 0, "started serving"
    elif timed_out:
        note = f"killed after {case.timeout:g} s" + (f" ({note})" if note else "")
    elif case.interrupt and not note:
        note = "ended before the Ctrl-C"
    if case.check and (damage := case.check(cwd)):
        out.damage, note = damage, f"{note}; {damage}" if note else damage
    out.note = note
    return out


def message_lines(stderr: str) -> list[str]:
    """stderr's non-empty lines without click's usage boilerplate; a wrapped box body counts once."""
    lines, in_box = [], False
    for raw in stderr.splitlines():
        line = raw.strip()
        if not line or BOILERPLATE.match(line):
            in_box = line.startswith("╭") if line else in_box
            continue
        if line.startswith("│") and in_box:
            if lines and lines[-1].startswith("│"):
                lines[-1] += " " + line.strip("│ ")
                continue
        lines.append(line)
    return lines


def overhead(cases_dir: Path, runs: int = 3) -> float:
    """Seconds a bare refused `genserve` command spends beyond its imports on this machine now (median
    of `runs`): interpreter start-up and building the CLI, inflated by load like every case."""
    probe = Case("baseline: unknown command", ("nosuch",))
    return sorted(o.seconds - o.imports for o in (run_case(probe, cases_dir) for _ in range(runs)))[runs // 2]


def classify(out: Outcome, slow: float) -> Outcome:
    case = out.case
    lines = message_lines(out.stderr)
    out.lines = len(lines)
    out.first = (lines[0] if lines else (out.stdout.strip().splitlines() or [""])[0])[:160]
    damaged = bool(out.damage)
    if TRACEBACK.search(out.stderr) or TRACEBACK.search(out.stdout):
        raised = [ln for ln in (out.stderr + out.stdout).splitlines()  # the exception's own line
                  if re.match(r"[\w.]+(Error|Exception|Interrupt|Exit)\b", ln)]
        out.category, out.first = "traceback", (raised[-1] if raised else out.first)[:160]
    elif case.expect == "fail" and (out.rc == 0 or damaged):
        out.category = "silent"
    elif case.expect == "ok" and (out.rc != 0 or damaged):
        out.category = "broken"
    elif out.note.startswith("killed") or (case.expect == "fail" and not case.retryable
                                            and out.seconds - out.imports > slow):
        out.category = "slow"
    elif case.expect == "fail" and (out.lines > 2 or NOISE.search(out.stderr)):
        out.category = "noisy"
    else:
        out.category = "clean"
    return out


def shown(case: Case) -> str:
    """The case's command as a user would type it."""
    if case.argv[0] == "@py":
        return "python -c '" + " ".join(case.argv[1].split())[:200] + "'"
    if case.argv[0] == "@script":
        return "python " + " ".join(map(str, case.argv[1:]))
    return "genserve " + " ".join(a if a and " " not in a else repr(a) for a in case.argv)


def show(out: Outcome) -> str:
    """`category rc seconds (import seconds, TF) lines name`, and for a finding its command and first line."""
    tf = "TF" if out.tensorflow else "  "
    head = (f"{out.category:<9} rc={out.rc:<4} {out.seconds:5.1f}s (imports {out.imports:4.1f}s {tf}) "
            f"{out.lines:>2}l  {out.case.name}")
    detail = f"\n          $ {shown(out.case)[:240]}\n          > {out.first}" if out.category != "clean" else ""
    return head + (f"  [{out.note}]" if out.note else "") + detail


# -- main -----------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2, help="cases run at once (default 2)")
    parser.add_argument("--only", default="", help="run only the cases whose name contains this")
    parser.add_argument("--workdir", type=Path, help="keep the setup here and reuse it (default: a temp dir)")
    parser.add_argument("--slow", type=float, default=2.0, help="seconds beyond which a failure is slow")
    args = parser.parse_args(argv)
    # A shell starts a background job with SIGINT ignored, and an ignored signal stays ignored in every
    # child: the Ctrl-C cases (and stopping the servers) need Python's own handler here, so that the
    # children start with the default one.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if shutil.which("openssl") is None:
        sys.exit("the audit needs the openssl command (for the TLS cases)")
    sys.path[:0] = [str(Path(__file__).resolve().parent), str(REPO)]
    from benchmarks.harness import free_port  # after the repository is on sys.path
    from first_hour_cases import build_cases  # scripts/first_hour_cases.py

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="first-hour-")
        root = Path(tmp.name)
    else:
        root = args.workdir.resolve()
        root.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    print(f"setup in {root} (load average {os.getloadavg()[0]:.1f}) ...", flush=True)
    setup(root, args.jobs)
    main_server = Server(root, "server", "--models-dir", root / "models", "--rest-port", free_port())
    tls_server = Server(root, "tls-server", "--models-dir", tls_models(root), "--ssl-config-file",
                        root / "ssl.config")
    print(f"setup done in {time.monotonic() - t0:.0f} s: gRPC {main_server.grpc}, REST {main_server.rest}, "
          f"TLS {tls_server.grpc}", flush=True)
    try:
        ctx = {"root": root, "grpc": main_server.grpc, "rest": main_server.rest, "tls": tls_server.grpc,
               "closed": f"127.0.0.1:{free_port()}", "repo": REPO}
        cases = [c for c in build_cases(ctx) if args.only in c.name]
        names = [c.name for c in cases]
        assert len(names) == len(set(names)), "case names must be unique"
        outcomes = []
        pool = ThreadPoolExecutor(max(1, args.jobs))
        try:
            base = overhead(root / "cases")
            print(f"a bare refusal costs {base:.1f} s beyond its imports now: slow = more than "
                  f"{args.slow:g} s beyond imports + {base:.1f} s", flush=True)
            for out in pool.map(lambda c: classify(run_case(c, root / "cases"), args.slow + base), cases):
                print(show(out), flush=True)
                outcomes.append(out)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)  # Ctrl-C: no queued case starts
    finally:
        main_server.stop()
        tls_server.stop()
    tally = {k: sum(o.category == k for o in outcomes) for k in CATEGORIES}
    print(f"\n{len(outcomes)} cases in {time.monotonic() - t0:.0f} s: "
          + ", ".join(f"{k} {v}" for k, v in tally.items()))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
