"""The pieces a batch kind is made of: `Field` checkers, the `Kind` record and the name rules.

    python -c "from genserve.batch.fields import integer; print(integer(1, 9)(3))"

A checker takes the raw JSON value and returns the normalised one, or raises ValueError saying why (the
message becomes `job.jsonl:LINE: FIELD: why`). Nothing here imports the catalogue (genserve.batch.kinds)
or the job reader (genserve.batch.job): both import this module, never the other way round.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Any, Callable

MAX_GRID = 64  # genserve.clients.vae.MAX_GRID (not imported: validation stays free of numpy and grpc)
# An item id names its output files: no separators, no control characters, no leading dot (the
# temporary siblings of genserve.files and the Ray plan are hidden files). fullmatch: `$` would let a
# trailing newline through.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_id(value: Any) -> str:
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise ValueError("must be a string of letters, digits, '.', '_' or '-' (1-128, starting with a "
                         f"letter or digit), got {value!r}")
    return value


def check_model(value: Any) -> str:
    """A name an export can create (genserve.repository's rule): never a path out of the models dir."""
    from genserve.repository import RepositoryError, check_model_name

    try:
        return check_model_name(value)
    except RepositoryError:
        raise ValueError("must be a served model name: letters, digits, '.', '_' or '-', starting with a "
                         f"letter or digit (no path), got {value!r}"[:300]) from None


@dataclass(frozen=True)
class Field:
    """One item field: `check(value) -> normalised value` (raises ValueError with the reason)."""

    name: str
    check: Callable[[Any], Any]
    required: bool = False
    default: Any = None
    path: bool = False  # a file path: relative paths are taken from the job file's folder


def single_output(item_id: str, params: dict) -> list[str]:
    """The output of a kind that writes one PNG per item: `<id>.png`."""
    return [f"{item_id}.png"]


@dataclass(frozen=True)
class Kind:
    """A registered item kind.

    Attributes:
        name: the `kind` value in the job file.
        model: the served model name used when an item gives no `model`.
        fields: the kind's own fields (besides id, kind, model).
        runner: "module:function" running a chunk of items: fn(backend, items, out, max_rows) -> records.
        group: item params -> a key; items with equal keys (and the same runner) may share requests.
        rows: item params -> request rows the item adds to a shared request (for chunking).
        outputs: (id, params) -> the file names the item writes (checked for collisions before a run).
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
    outputs: Callable[[str, dict], list[str]] = single_output
    check: Callable[[dict], None] | None = None
    max_rows: int = 1024
    chunk_rows: int | None = None


# ---------------------------------------------------------------------------------------------------
# Field checkers.
# ---------------------------------------------------------------------------------------------------
def _bounds(low, high) -> str:
    return f"[{low}, {high if high is not None else '...'}]"


def integer(low: int | None = None, high: int | None = None) -> Callable[[Any], int]:
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"must be an integer, got {v!r}")
        if (low is not None and v < low) or (high is not None and v > high):
            raise ValueError(f"must be in {_bounds(low, high)}, got {v}")
        return v
    return check


def number(low: float | None = None, high: float | None = None) -> Callable[[Any], float]:
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"must be a finite number, got {v!r}")
        if (low is not None and v < low) or (high is not None and v > high):
            raise ValueError(f"must be in {_bounds(low, high)}, got {v}")
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
