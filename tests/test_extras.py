"""A command whose pyproject extra is not installed says which extra to install, in one line (exit 1).

The missing packages are simulated in a fresh interpreter by a finder that refuses to import them (what
a `pip install genserve` or `pip install 'genserve[client]'` environment looks like to the code).

    .venv/bin/python -m pytest tests/test_extras.py -q
"""

from __future__ import annotations

import subprocess
import sys

import pytest

BLOCK = """
import sys
class Missing:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Missing())
sys.argv = ["genserve", *{args!r}]
from genserve.cli import main
main()
"""


def _run(blocked: set, *args: str) -> subprocess.CompletedProcess:
    code = BLOCK.format(blocked=sorted(blocked), args=list(args))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("blocked, args, extra", [
    ({"typer", "click"}, ["--help"], "client"),  # `pip install genserve`: the thin client only
    ({"tensorflow", "keras", "tensorflow_serving"}, ["export", "toy", "--models-dir", "m"], "tf"),  # [client]
    ({"gradio", "gradio_client"}, ["playground", "--target", "127.0.0.1:1"], "playground"),
])
def test_missing_extra_is_one_line(blocked, args, extra, tmp_path):
    result = _run(blocked, *args)
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"pip install 'genserve[{extra}]'" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_client_commands_need_no_tensorflow_serving():
    """`--version` is checked against the models directory's int64 range (genserve.repository) without
    TF Serving's protos: a thin client install runs `grid --version 2` up to the connection."""
    result = _run({"tensorflow", "keras", "tensorflow_serving"},
                  "grid", "--version", "2", "--target", "127.0.0.1:1", "--timeout", "1", "--out", "/tmp/_g.png")
    assert result.returncode == 1, result.stderr
    assert "genserve[tf]" not in result.stderr and "Traceback" not in result.stderr, result.stderr
