"""The batch job file: one JSON object per line, each an item with an `id` and a `kind`.

    genserve batch run job.jsonl --out out/batch --dry-run      # validate only, no request

    {"id": "rose-1", "kind": "text", "seed_text": "a rose by any other name", "length": 400, "temperatures": [0.2, 1.0], "seed": 7}
    {"id": "grid-a", "kind": "grid", "n": 15, "range": [0.05, 0.95]}
    {"id": "pts", "kind": "decode", "points": [[0, 0], [1.5, -0.5]]}
    {"id": "cat", "kind": "stylize", "content": "cat.jpg", "style": "wave.jpg", "height": 200, "iterations": 3}

`validate_job` reads the whole file (UTF-8, with or without a byte-order mark) and reports EVERY bad
line at once (line number, field, why) before any request is made: unknown kinds and fields, bad
values, duplicate ids, ids or model names that are not plain names, and two items that would write the
same output file (case-insensitively: the job must also be safe on macOS and Windows file systems).
The kinds and their fields are in genserve.batch.kinds.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genserve.batch.fields import check_id, check_model, default_seed
from genserve.batch.kinds import KINDS

COMMON_FIELDS = ("id", "kind", "model")


class JobError(ValueError):
    """The job file is unusable; `problems` lists every bad line as (line, field, why)."""

    def __init__(self, problems: list[tuple[int, str, str]]):
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) in the job file")

    def lines(self, path: str | Path = "") -> list[str]:
        """One `FILE:LINE: FIELD: why` per problem; a problem of the whole file (line 0) is `FILE: why`."""
        def where(line: int) -> str:
            if not line:
                return f"{path}" if path else "job file"
            return f"{path}:{line}" if path else f"line {line}"
        return [f"{where(line)}: {name}: {why}" if name else f"{where(line)}: {why}"
                for line, name, why in self.problems]


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

    def outputs(self) -> list[str]:
        """The file names this item writes (relative to the output folder)."""
        return KINDS[self.kind].outputs(self.id, self.params)


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
    try:
        check_id(item_id)
    except ValueError as e:
        problems.append((line, "id", str(e)))
    kind = KINDS.get(obj.get("kind"))
    if kind is None:
        problems.append((line, "kind", f"must be one of {', '.join(sorted(KINDS))}, got {obj.get('kind')!r}"))
        return None, problems
    params: dict[str, Any] = {"model": obj.get("model", kind.model)}
    try:
        check_model(params["model"])
    except ValueError as e:
        problems.append((line, "model", str(e)))
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


def _collisions(items: list[Item]) -> list[tuple[int, str, str]]:
    """Two items that would write one file (compared case-insensitively): both records would say ok
    and one output would be lost."""
    problems, owner = [], {}
    for item in items:
        for name in item.outputs():
            first = owner.setdefault(name.casefold(), (item, name))
            if first[0] is not item:
                problems.append((item.line, "id", f"item {item.id!r} writes {name}, as does item "
                                                  f"{first[0].id!r} (line {first[0].line}, {first[1]}); "
                                                  "rename one of them"))
                break
    return problems


def parse_job(lines, base: str | Path | None = None) -> list[Item]:
    """Validate every line (blank lines and lines starting with '#' are skipped).

    Args:
        lines: the job file's lines.
        base: folder that relative file paths in items are taken from (default: as given).

    Raises:
        JobError: listing every problem of every line (bad JSON, fields, duplicate ids, colliding
            outputs, empty job).
    """
    lines = list(lines)
    if (whole := _one_json_document(lines)) is not None:
        raise JobError([(0, "", whole)])
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
    problems.extend(_collisions(items))
    if not items and not problems:
        problems.append((0, "", "the job file has no items"))
    if problems:
        raise JobError(sorted(problems, key=lambda p: p[0]))
    return items


def validate_job(path: str | Path) -> list[Item]:
    """Read and validate a job file (UTF-8; a leading byte-order mark, as some editors save, is fine).

    Raises:
        JobError: every bad line; or (line 0) an unreadable file.
    """
    path = Path(path)
    if path.is_dir():
        raise JobError([(0, "", "is a folder, not a job file")])
    try:
        data = path.read_bytes()
    except OSError as e:
        raise JobError([(0, "", f"cannot read it: {e.strerror or e}")]) from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise JobError([(0, "", "saved as UTF-16; save it as UTF-8 (one JSON object per line)")])
    try:
        content = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise JobError([(0, "", f"not UTF-8 text (byte {e.start}); save it as UTF-8")]) from None
    return parse_job(content.splitlines(), base=path.parent)


def _one_json_document(lines: list[str]) -> str | None:
    """A problem when the file is one JSON array or one object spread over several lines (a common
    mistake: JSON instead of JSON Lines), else None: then each line is checked on its own."""
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    head = text.lstrip()[:1]
    if head not in ("[", "{") or (head == "{" and len([ln for ln in lines if ln.strip()]) < 2):
        return None
    try:
        document = json.loads(text)
    except ValueError:
        return None
    if isinstance(document, list):
        return (f"the file is one JSON array of {len(document)} element(s); a job file has one JSON object "
                "per line (JSON Lines), no enclosing [ ]")
    return ("the file is one JSON object spread over several lines; a job file has one JSON object per "
            "line (JSON Lines): put each item on a single line")
