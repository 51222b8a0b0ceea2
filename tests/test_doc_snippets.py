"""Every code block of README.md and docs/*.md marked runnable is run, against a served toy model.

    .venv/bin/python -m pytest tests/test_doc_snippets.py -q

The marker: an HTML comment `<!-- runnable -->` (invisible on GitHub) on the line right before a
```bash or ```python fence. Mark a block when a reader can paste it, as written, while the docs'
toy server runs (`genserve export toy --models-dir models` twice, the second with `--bias 2`, then
`genserve serve --models-dir models --port 8500 --rest-port 8501 --monitoring-config-file
genserve/deploy/monitoring.config`); a block that starts a server itself or needs another model stays
unmarked.

What the test provides, so the block runs unchanged:
- one embedded server over toy versions 1 (b = 1) and 2 (b = 2) under TF Serving's default version
  policy (latest 1: only version 2 is served), with REST and the Prometheus page, on free ports; the
  block's `localhost:8500` / `127.0.0.1:8500` become its gRPC address and `...:8501` its REST address
  (the only rewrite), and `GENSERVE_TARGET` names it;
- a fresh working folder per block holding `models` (a private copy of the served folder: blocks
  that edit it do not touch the server's or each other's), `examples/` (this checkout's), and
  `.venv/bin/python` / `.venv/bin/genserve` plus `python` / `genserve` on PATH, all running this
  interpreter with this checkout first on PYTHONPATH;
- bash blocks run with `set -e -o pipefail`, and `curl` fails on an HTTP error status
  (`--fail-with-body`); without a curl binary, blocks that call it are skipped;
- each block has 90 s; a failure names the doc file and the line of its fence.
Blocks run in document order (README.md, then docs/*.md by name) against the one server, so a block
that changes what it serves (the reload snippet) must leave toy version 2 served as before.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- runnable -->"
TIMEOUT = 90.0


class Snippet(NamedTuple):
    path: str  # relative to ROOT
    line: int  # 1-based line of the opening fence
    lang: str  # "bash" or "python"
    code: str


def runnable_snippets(paths) -> list[Snippet]:
    """The fenced blocks preceded by MARKER, in document order.

    Raises:
        ValueError: a marker not followed by a ```bash / ```python fence, or a fence never closed.
    """
    found = []
    for path in paths:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        full = Path(path).resolve()
        rel = str(full.relative_to(ROOT)) if full.is_relative_to(ROOT) else str(full)
        for i, line in enumerate(lines):
            if line.strip() != MARKER:
                continue
            fence = lines[i + 1].strip() if i + 1 < len(lines) else ""
            match = re.fullmatch(r"```(bash|python)", fence)
            if match is None:
                raise ValueError(f"{rel}:{i + 1}: {MARKER} must be followed by a ```bash or ```python fence")
            end = next((j for j in range(i + 2, len(lines)) if lines[j].strip() == "```"), None)
            if end is None:
                raise ValueError(f"{rel}:{i + 2}: the fence is never closed")
            found.append(Snippet(rel, i + 2, match.group(1), "\n".join(lines[i + 2:end]) + "\n"))
    return found


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SNIPPETS = runnable_snippets(DOCS)


def rewrite_ports(code: str, grpc_port: int, rest_port: int) -> str:
    """The docs' fixed ports (8500 gRPC, 8501 REST) on localhost / 127.0.0.1 -> the test server's."""
    code = re.sub(r"\b(localhost|127\.0\.0\.1):8500\b", rf"\g<1>:{grpc_port}", code)
    return re.sub(r"\b(localhost|127\.0\.0\.1):8501\b", rf"\g<1>:{rest_port}", code)


@pytest.fixture(scope="module")
def docs_server(tmp_path_factory):
    """The docs' toy server: versions 1 and 2, default policy, gRPC + REST + metrics on free ports."""
    pytest.importorskip("tensorflow")
    from genserve.export.toy import ToyConfig, export_toy
    from genserve.serving.server import ModelServer

    models = tmp_path_factory.mktemp("docs") / "models"
    export_toy(models, ToyConfig(bias=1.0))
    export_toy(models, ToyConfig(bias=2.0))
    server = ModelServer(models, poll_seconds=0, rest_port=0, prometheus_path="/monitoring/prometheus/metrics")
    server.start()
    try:
        yield models, server.port, server.rest_port
    finally:
        server.stop(grace=0.5)


def _workspace(base: Path, models: Path) -> tuple[Path, dict]:
    """A fresh folder for one block and the environment it runs with (see the module docstring)."""
    work = base / "work"
    shutil.copytree(models, work / "models")
    (work / "examples").symlink_to(ROOT / "examples")
    bins = {"python": f'exec "{sys.executable}" "$@"', "genserve": f'exec "{sys.executable}" -m genserve "$@"'}
    for folder in (work / ".venv" / "bin", base / "bin"):
        folder.mkdir(parents=True)
        for name, body in bins.items():
            (folder / name).write_text(f"#!/bin/sh\n{body}\n")
            (folder / name).chmod(0o755)
    env = dict(os.environ, PATH=f"{base / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    return work, env


def run_snippet(snippet: Snippet, base: Path, models: Path, grpc_port: int, rest_port: int):
    """Run one block in a fresh workspace; returns the CompletedProcess."""
    work, env = _workspace(base, models)
    env["GENSERVE_TARGET"] = f"127.0.0.1:{grpc_port}"
    code = rewrite_ports(snippet.code, grpc_port, rest_port)
    if snippet.lang == "bash":
        prelude = 'set -e -o pipefail\ncurl() { command curl --fail-with-body "$@"; }\n'
        (work / "snippet.sh").write_text(prelude + code)
        argv = ["bash", "snippet.sh"]
    else:
        (work / "snippet.py").write_text(code)
        argv = [sys.executable, "snippet.py"]
    return subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=TIMEOUT)


def test_snippets_are_found_where_the_docs_promise_them():
    """The blocks the docs rely on are marked (a marker lost in an edit would silently stop the check)."""
    where = {(s.path, s.lang) for s in SNIPPETS}
    assert ("README.md", "bash") in where and ("README.md", "python") in where
    texts = "".join(s.code for s in SNIPPETS if s.path == "docs/serving.md")
    for needle in ("HandleReloadConfigRequest", 'c.predict("toy"', "c.pinned", "curl -s localhost:8501/v1/models/toy"):
        assert needle in texts, needle


def test_a_marker_without_a_fence_is_an_error(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text(f"{MARKER}\ntext\n")
    with pytest.raises(ValueError, match=r"x.md:1: .* must be followed by"):
        runnable_snippets([doc])


def test_ports_are_rewritten_only_on_loopback_hosts():
    code = 'Client("127.0.0.1:8500"); curl -s localhost:8501/v1/models/toy; x = 85001; host:8500'
    assert rewrite_ports(code, 41000, 41001) == (
        'Client("127.0.0.1:41000"); curl -s localhost:41001/v1/models/toy; x = 85001; host:8500')


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[f"{s.path}:{s.line}" for s in SNIPPETS])
def test_runnable_snippet(snippet, docs_server, tmp_path):
    models, grpc_port, rest_port = docs_server
    if snippet.lang == "bash" and re.search(r"\bcurl\b", snippet.code) and shutil.which("curl") is None:
        pytest.skip("curl is not installed: this block calls it")
    done = run_snippet(snippet, tmp_path, models, grpc_port, rest_port)
    assert done.returncode == 0, (
        f"{snippet.path}:{snippet.line}: the {snippet.lang} block exited {done.returncode}\n"
        f"{textwrap.indent(snippet.code, '    ')}\n--- stdout (end)\n{done.stdout[-2000:]}\n"
        f"--- stderr (end)\n{done.stderr[-3000:]}")
