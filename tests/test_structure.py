"""The layout rules of docs/serving.md's module table and DESIGN's layers, checked on the source text:
layers point down only (the server never imports the clients package), no import circle between
genserve's modules, and no hand-written module over 400 lines.

    .venv/bin/python -m pytest tests/test_structure.py -q
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "genserve"
MAX_LINES = 400

# Lower layers and what they must never import (DESIGN.md: cli -> (playground, deploy, batch, export,
# training) -> (serving, clients) -> (wire, repository, files, contract, data)).
FORBIDDEN = {
    "genserve.serving": ("genserve.clients", "genserve.cli", "genserve.batch", "genserve.training",
                         "genserve.playground"),
    "genserve.clients": ("genserve.serving", "genserve.cli", "genserve.batch", "genserve.training",
                         "genserve.export", "genserve.playground"),
    "genserve.wire": ("genserve.serving", "genserve.clients", "genserve.cli", "genserve.repository"),
    "genserve.repository": ("genserve.serving", "genserve.clients", "genserve.cli", "genserve.export"),
    "genserve.files": ("genserve.serving", "genserve.clients", "genserve.cli"),
    "genserve.contract": ("genserve.serving", "genserve.clients", "genserve.cli"),
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        if path.name.endswith("_pb2.py"):
            continue
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: Path, module: str, top_level_only: bool) -> set[str]:
    """The genserve modules `path` imports (all of them, or only those at module level)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # module-level imports, also inside `if`/`try` blocks at the top
        nodes = [n for stmt in tree.body for n in ast.walk(stmt)
                 if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    found = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("genserve"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.startswith("genserve"):
                found.add(name)
                found.update(f"{name}.{a.name}" for a in node.names)
    return found


def _owner(name: str, modules: dict) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def test_lower_layers_never_import_upper_ones():
    modules = _modules()
    wrong = []
    for module, path in modules.items():
        for layer, forbidden in FORBIDDEN.items():
            if module == layer or module.startswith(layer + "."):
                for name in _imports(path, module, top_level_only=False):
                    if any(name == f or name.startswith(f + ".") for f in forbidden):
                        wrong.append(f"{module} imports {name}")
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_no_import_circle_between_modules():
    modules = _modules()
    graph = {m: {_owner(n, modules) for n in _imports(p, m, top_level_only=True)} - {None, m}
             for m, p in modules.items()}
    # A package's __init__ is imported by its submodules implicitly; an edge from a submodule to its
    # own package is not a circle of ours unless the package imports the submodule back at top level.
    state: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                circles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not circles, "\n".join(" -> ".join(c) for c in circles)


def test_no_hand_written_module_over_400_lines():
    long = {m: n for m, p in _modules().items()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, long


def test_no_subprocess_runs_python_between_fork_and_exec():
    """No `preexec_fn` in genserve, its tests or scripts: it makes subprocess fork the whole (gRPC,
    multi-threaded) process and run Python before exec, where gRPC's fork handlers broke the child
    (tests/conftest.py `genserve_as_at_a_terminal` says how a child gets its signals instead)."""
    root = PACKAGE.parent
    uses = []
    for folder in ("genserve", "tests", "scripts", "benchmarks"):
        for path in sorted((root / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.keyword) and node.arg == "preexec_fn":
                    uses.append(f"{path.relative_to(root)}:{node.value.lineno}")
    assert not uses, uses
