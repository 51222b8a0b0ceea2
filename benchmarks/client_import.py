"""The thin client's cost next to TensorFlow Serving's Python API: import time and installed size.

    .venv/bin/python benchmarks/client_import.py [--runs 7] [--skip-footprint]

Import time: each statement runs in fresh subprocesses (after one warm-up run that fills the .pyc
caches); we report the median in-process wall time of the import, the median total of
`python -X importtime` (sum of every module's self time) and how many modules the import loaded.
Footprint: a throwaway venv in /tmp gets `pip install <genserve>` without extras (the base
dependencies are grpcio, protobuf and numpy only); its site-packages size is set beside the size of
the tensorflow and tensorflow_serving packages in this interpreter's environment.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "genserve.clients (Client)": "from genserve.clients import Client",
    "tensorflow_serving.apis (stub)": "import tensorflow_serving.apis.prediction_service_pb2_grpc",
}
PROBE = ("import time, sys\n"
         "t = time.perf_counter()\n"
         "{statement}\n"
         "print(time.perf_counter() - t, len(sys.modules))\n")


def _run(python: str, statement: str, importtime: bool) -> tuple[float, int, float]:
    """(import wall seconds, modules loaded, -X importtime total seconds or 0) of one fresh process."""
    cmd = [python] + (["-X", "importtime"] if importtime else []) + [
        "-c", PROBE.format(statement=statement)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, check=True)
    wall, modules = result.stdout.split()[-2:]
    total_us = 0
    for line in result.stderr.splitlines():  # "import time:  self [us] | cumulative | name"
        if line.startswith("import time:") and "|" in line:
            field = line.split(":", 1)[1].split("|")[0].strip()
            if field.isdigit():
                total_us += int(field)
    return float(wall), int(modules), total_us / 1e6


def measure_imports(runs: int) -> dict[str, tuple[float, float, int]]:
    """statement label -> (median wall s, median -X importtime total s, modules)."""
    results = {}
    for label, statement in CASES.items():
        _run(sys.executable, statement, importtime=False)  # warm the .pyc caches
        walls, modules = [], 0
        for _ in range(runs):
            wall, modules, _ = _run(sys.executable, statement, importtime=False)
            walls.append(wall)
        totals = [_run(sys.executable, statement, importtime=True)[2] for _ in range(max(3, runs // 2))]
        results[label] = (statistics.median(walls), statistics.median(totals), modules)
    return results


def tree_size(path: Path) -> int:
    """Bytes of all regular files under `path` (links not followed)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(folder, name))
            if not os.path.islink(os.path.join(folder, name)):
                total += st.st_size
    return total


def site_packages(python: str) -> Path:
    out = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def measure_footprint() -> dict[str, float]:
    """Sizes in MB: the thin install vs TensorFlow + TF Serving in this environment."""
    sizes = {}
    work = Path(tempfile.mkdtemp(prefix="genserve-footprint-", dir="/tmp"))
    try:
        source = work / "src"  # a clean copy: no .venv, no build/ or egg-info left in the repo
        source.mkdir()
        shutil.copy2(ROOT / "pyproject.toml", source)
        readme = ROOT / "README.md"
        (source / "README.md").write_text(readme.read_text() if readme.exists() else "genserve\n")
        shutil.copytree(ROOT / "genserve", source / "genserve",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        venv = work / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = str(venv / "bin" / "python")
        start = time.perf_counter()
        subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        str(source)], check=True)
        install_s = time.perf_counter() - start
        thin = site_packages(python)
        tooling = sum(tree_size(p) for p in thin.iterdir()
                      if p.name.split("-")[0] in ("pip", "setuptools", "_distutils_hack"))
        sizes["thin install, site-packages (MB)"] = tree_size(thin) / 1e6
        sizes["thin install, without pip/setuptools (MB)"] = (tree_size(thin) - tooling) / 1e6
        sizes["thin install, pip install time (s)"] = install_s
        check = subprocess.run(
            [python, "-c", PROBE.format(statement="from genserve.clients import Client")
             + "import importlib.util as u; print(u.find_spec('tensorflow') is None)"],
            capture_output=True, text=True, check=True, cwd=work)
        wall, _, no_tf = check.stdout.split()
        sizes["thin install, import Client (s)"] = float(wall)
        assert no_tf == "True", "tensorflow ended up in the thin install"
    finally:
        shutil.rmtree(work, ignore_errors=True)
    fat = site_packages(sys.executable)
    tf_size = sum(tree_size(fat / name) for name in ("tensorflow", "tensorflow_serving"))
    sizes["tensorflow + tensorflow_serving in .venv (MB)"] = tf_size / 1e6
    sizes["whole .venv site-packages (MB)"] = tree_size(fat) / 1e6
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="fresh processes per statement")
    parser.add_argument("--skip-footprint", action="store_true", help="only the import times")
    args = parser.parse_args()

    results = measure_imports(args.runs)
    print(f"import time, median of {args.runs} fresh processes (python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs)")
    print(f"{'import':34s} {'wall s':>8s} {'-X importtime s':>16s} {'modules':>8s}")
    for label, (wall, total, modules) in results.items():
        print(f"{label:34s} {wall:8.3f} {total:16.3f} {modules:8d}")
    (ours, ours_x, ours_n), (theirs, theirs_x, theirs_n) = results.values()
    print(f"{'ratio (TF Serving / genserve)':34s} {theirs / ours:7.1f}x {theirs_x / ours_x:15.1f}x "
          f"{theirs_n / ours_n:7.1f}x")

    if not args.skip_footprint:
        print("\ninstalled footprint")
        sizes = measure_footprint()
        for label, value in sizes.items():
            print(f"{label:46s} {value:10.1f}" if "(MB)" in label else f"{label:46s} {value:10.2f}")
        thin = sizes["thin install, site-packages (MB)"]
        print(f"{'ratio (TF + TF Serving / thin install)':46s} "
              f"{sizes['tensorflow + tensorflow_serving in .venv (MB)'] / thin:9.1f}x")


if __name__ == "__main__":
    main()
