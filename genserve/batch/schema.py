"""The batch job file: one JSON object per line, each an item with an `id` and a `kind`.

    genserve batch run job.jsonl --out out/batch --dry-run      # validate only, no request

    {"id": "rose-1", "kind": "text", "seed_text": "a rose by any other name", "length": 400, "temperatures": [0.2, 1.0], "seed": 7}
    {"id": "grid-a", "kind": "grid", "n": 15, "range": [0.05, 0.95]}
    {"id": "pts", "kind": "decode", "points": [[0, 0], [1.5, -0.5]]}
    {"id": "cat", "kind": "stylize", "content": "cat.jpg", "style": "wave.jpg", "height": 200, "iterations": 3}

A kind is ONE registered entry (`register_kind(Kind(...))`, the built-in ones in
genserve/batch/catalog.py): its default served model, its fields
(each a checker that returns the normalised value or raises ValueError saying why), how many request
rows an item contributes, the key under which items may share a request, and the dotted name of the
runner that executes a chunk of such items (imported only when a job runs, so validation needs neither
gRPC nor TensorFlow). `validate_job` reads the whole file and reports EVERY bad line at once
(line number, field, why) before any request is made.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # ids name output files
COMMON_FIELDS = ("id", "kind", "model")
MAX_GRID = 64  # genserve.clients.vae.MAX_GRID (not imported: that module pulls numpy only, but keep this light)


class JobError(ValueError):
    """The job file is unusable; `problems` lists every bad line as (line, field, why)."""

    def __init__(self, problems: list[tuple[int, str, str]]):
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) in the job file")

    def lines(self, path: str | Path = "") -> list[str]:
        prefix = f"{path}:" if path else "line "
        return [f"{prefix}{line}: {name}: {why}" if name else f"{prefix}{line}: {why}"
                for line, name, why in self.problems]


@dataclass(frozen=True)
class Field:
    """One item field: `check(value) -> normalised value` (raises ValueError with the reason)."""

    name: str
    check: Callable[[Any], Any]
    required: bool = False
    default: Any = None
    path: bool = False  # a file path: relative paths are taken from the job file's folder


@dataclass(frozen=True)
class Kind:
    """A registered item kind.

    Attributes:
        name: the `kind` value in the job file.
        model: the served model name used when an item gives no `model`.
        fields: the kind's own fields (besides id, kind, model).
        runner: "module:function" running a chunk of items: fn(backend, items, options) -> records.
        group: item params -> a key; items with equal keys (and the same runner) may share requests.
        rows: item params -> request rows the item adds to a shared request (for chunking).
        check: optional cross-field check of the normalised params (raises ValueError "field: why").
        max_rows: default cap of rows per request for this kind's runner.
        chunk_rows: rows per chunk (the unit a worker takes; several requests of max_rows each);
            None = max_rows.
    """

    name: str
    model: str
    fields: tuple[Field, ...]
    runner: str
    group: Callable[[dict], tuple]
    rows: Callable[[dict], int]
    check: Callable[[dict], None] | None = None
    max_rows: int = 1024
    chunk_rows: int | None = None


KINDS: dict[str, Kind] = {}


def register_kind(kind: Kind) -> Kind:
    """Add (or replace) a kind; returns it."""
    KINDS[kind.name] = kind
    return kind


@dataclass(frozen=True)
class Item:
    """One validated job line."""

    id: str
    kind: str
    line: int  # 1-based line number in the job file
    params: dict = field(hash=False)  # normalised fields, `model` included
    fingerprint: str = ""  # sha256 of the normalised item: a changed item is not skipped on resume

    @property
    def model(self) -> str:
        return self.params["model"]


# ---------------------------------------------------------------------------------------------------
# Field checkers.
# ---------------------------------------------------------------------------------------------------
def integer(low: int | None = None, high: int | None = None) -> Callable[[Any], int]:
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"must be an integer, got {v!r}")
        if (low is not None and v < low) or (high is not None and v > high):
            raise ValueError(f"must be in [{low}, {high if high is not None else '...'}], got {v}")
        return v
    return check


def number(low: float | None = None, high: float | None = None) -> Callable[[Any], float]:
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"must be a finite number, got {v!r}")
        if (low is not None and v < low) or (high is not None and v > high):
            raise ValueError(f"must be in [{low}, {high if high is not None else '...'}], got {v}")
        return float(v)
    return check


def text(allow_empty: bool = False, single_char: bool = False) -> Callable[[Any], str]:
    def check(v):
        if not isinstance(v, str):
            raise ValueError(f"must be a string, got {type(v).__name__}")
        if not v and not allow_empty:
            raise ValueError("must not be empty")
        if single_char and len(v) != 1:
            raise ValueError(f"must be exactly one character, got {v!r}")
        return v
    return check


def number_list(low: float | None = None, min_len: int = 1, max_len: int = 64) -> Callable[[Any], list]:
    each = number(low)

    def check(v):
        if not isinstance(v, list) or not min_len <= len(v) <= max_len:
            raise ValueError(f"must be a list of {min_len}..{max_len} numbers, got {v!r}"[:200])
        return [each(x) for x in v]
    return check


def points(v) -> list:
    """A non-empty list of equally long, non-empty lists of finite numbers (latent points)."""
    if not isinstance(v, list) or not v or not all(isinstance(p, list) and p for p in v):
        raise ValueError("must be a non-empty list of points, each a non-empty list of numbers")
    if len({len(p) for p in v}) != 1:
        raise ValueError("all points must have the same size")
    if len(v) > MAX_GRID * MAX_GRID:
        raise ValueError(f"at most {MAX_GRID * MAX_GRID} points per item, got {len(v)}")
    each = number()
    return [[each(x) for x in p] for p in v]


def one_of(*choices: str) -> Callable[[Any], str]:
    def check(v):
        if v not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {v!r}")
        return v
    return check


def existing_file(v) -> str:
    """A path string (existence is checked when the item runs: a missing image fails that item only)."""
    return text()(v)


def default_seed(item_id: str) -> int:
    """The seed of an item that gives none: derived from its id, so reruns repeat it."""
    return int.from_bytes(hashlib.sha256(item_id.encode("utf-8")).digest()[:7], "big")


# ---------------------------------------------------------------------------------------------------
# Validation.
# ---------------------------------------------------------------------------------------------------
def _fingerprint(kind: str, params: dict) -> str:
    blob = json.dumps({"kind": kind, **params}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def validate_line(obj: Any, line: int,
                  base: str | Path | None = None) -> tuple[Item | None, list[tuple[int, str, str]]]:
    """One parsed JSON line -> (Item or None, problems)."""
    if not isinstance(obj, dict):
        return None, [(line, "", f"must be a JSON object, got {type(obj).__name__}")]
    problems = []
    item_id = obj.get("id")
    if not isinstance(item_id, str) or not ID_PATTERN.match(item_id):
        problems.append((line, "id", "must be a string of letters, digits, '.', '_' or '-' (1-128, "
                                     f"starting with a letter or digit), got {item_id!r}"))
    kind = KINDS.get(obj.get("kind"))
    if kind is None:
        problems.append((line, "kind", f"must be one of {', '.join(sorted(KINDS))}, got {obj.get('kind')!r}"))
        return None, problems
    params: dict[str, Any] = {}
    model = obj.get("model", kind.model)
    if not isinstance(model, str) or not model:
        problems.append((line, "model", f"must be a non-empty string, got {model!r}"))
    params["model"] = model
    known = {f.name for f in kind.fields} | set(COMMON_FIELDS)
    for name in sorted(set(obj) - known):
        problems.append((line, name, f"unknown field for kind {kind.name!r} "
                                     f"(known: {', '.join(f.name for f in kind.fields)})"))
    for spec in kind.fields:
        if spec.name not in obj or obj[spec.name] is None:
            if spec.required:
                problems.append((line, spec.name, "is required"))
            params[spec.name] = spec.default
            continue
        try:
            params[spec.name] = spec.check(obj[spec.name])
            if spec.path and base is not None:
                params[spec.name] = str(Path(base) / params[spec.name])
        except ValueError as e:
            problems.append((line, spec.name, str(e)))
    if not problems and kind.check is not None:
        try:
            kind.check(params)
        except ValueError as e:
            name, _, why = str(e).partition(": ")
            problems.append((line, name if why else "", why or name))
    if problems:
        return None, problems
    if "seed" in {f.name for f in kind.fields} and params.get("seed") is None:
        params["seed"] = default_seed(item_id)
    return Item(item_id, kind.name, line, params, _fingerprint(kind.name, params)), []


def parse_job(lines, base: str | Path | None = None) -> list[Item]:
    """Validate every line (blank lines and lines starting with '#' are skipped).

    Args:
        lines: the job file's lines.
        base: folder that relative file paths in items are taken from (default: as given).

    Raises:
        JobError: listing every problem of every line (bad JSON, fields, duplicate ids, empty job).
    """
    items, problems, seen = [], [], {}
    for number_, raw in enumerate(lines, start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            obj = json.loads(stripped)
        except json.JSONDecodeError as e:
            problems.append((number_, "", f"not valid JSON ({e.msg} at column {e.colno})"))
            continue
        item, found = validate_line(obj, number_, base)
        problems.extend(found)
        item_id = obj.get("id") if isinstance(obj, dict) else None
        if isinstance(item_id, str):
            if item_id in seen:
                problems.append((number_, "id", f"duplicate id {item_id!r} (first on line {seen[item_id]})"))
                continue
            seen[item_id] = number_
        if item is not None:
            items.append(item)
    if not items and not problems:
        problems.append((0, "", "the job file has no items"))
    if problems:
        raise JobError(problems)
    return items


def validate_job(path: str | Path) -> list[Item]:
    """Read and validate a job file.

    Raises:
        JobError: every bad line; or (line 0) an unreadable file.
    """
    path = Path(path)
    try:
        content = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise JobError([(0, "", f"cannot read {path}: {e}")]) from None
    return parse_job(content.splitlines(), base=path.parent)


from genserve.batch import catalog as _catalog  # noqa: E402,F401 - registers the built-in kinds
