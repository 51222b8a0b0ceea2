"""Grouping: compatible items share requests; big groups are cut into chunks of whole items.

    python -c "from genserve.batch import job, plan; \\
print(plan.describe(plan.make_plan(job.validate_job('job.jsonl'))))"

A chunk is the unit of work both executors hand out (a task of the thread pool, an actor call of
Ray's pool): items of one group whose request rows add up to at most the kind's `chunk_rows` (or
`max_rows`, when larger; an item that alone exceeds it gets a chunk of its own). The runner sends a
chunk's rows in requests of at most `max_rows` rows. Chunks hold
whole items, so a chunk's runner can write the items' files and records by itself. Every item carries
its own seed, so what an item produces never depends on which chunk it lands in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from genserve.batch.job import Item
from genserve.batch.kinds import KINDS


@dataclass(frozen=True)
class Chunk:
    """Items that share requests, run by `runner` ("module:function")."""

    index: int
    runner: str
    key: tuple
    items: tuple[Item, ...]
    rows: int

    def describe(self) -> str:
        kinds = sorted({i.kind for i in self.items})
        return (f"chunk {self.index}: {len(self.items)} item(s) ({', '.join(kinds)}), {self.rows} row(s), "
                f"group {self.key}")


def group_items(items: list[Item]) -> dict[tuple, list[Item]]:
    """(runner, group key) -> items, in job-file order within each group."""
    groups: dict[tuple, list[Item]] = {}
    for item in items:
        kind = KINDS[item.kind]
        groups.setdefault((kind.runner, kind.group(item.params)), []).append(item)
    return groups


def item_rows(item: Item) -> int:
    return max(1, KINDS[item.kind].rows(item.params))


def max_rows_for(item: Item, max_rows: int | None) -> int:
    """The row cap for an item's requests: `max_rows` when given, else its kind's default."""
    return max_rows if max_rows is not None else KINDS[item.kind].max_rows


def chunk_rows_for(item: Item, max_rows: int | None) -> int:
    """The row cap of a chunk holding `item`: its kind's chunk_rows, at least the request size."""
    kind = KINDS[item.kind]
    return max(kind.chunk_rows or 0, max_rows_for(item, max_rows))


def make_plan(items: list[Item], max_rows: int | None = None, min_chunks: int = 1) -> list[Chunk]:
    """Cut every group into chunks of whole items.

    Args:
        items: validated items (those to run).
        max_rows: rows per request (default: each kind's max_rows); chunks hold at least that many.
        min_chunks: cut a group into at least this many chunks when it has enough items (use the
            concurrency, so a small group still keeps every worker busy).

    Returns:
        Chunks, numbered in order.
    """
    chunks: list[Chunk] = []
    for (runner, key), members in group_items(items).items():
        cap = max(1, min(chunk_rows_for(i, max_rows) for i in members))
        total = sum(item_rows(i) for i in members)
        if min_chunks > 1 and len(members) > 1:
            cap = max(1, min(cap, math.ceil(total / min(min_chunks, len(members)))))
        current: list[Item] = []
        rows = 0
        for item in members:
            n = item_rows(item)
            if current and rows + n > cap:
                chunks.append(Chunk(len(chunks), runner, key, tuple(current), rows))
                current, rows = [], 0
            current.append(item)
            rows += n
        if current:
            chunks.append(Chunk(len(chunks), runner, key, tuple(current), rows))
    return chunks


def describe(chunks: list[Chunk]) -> str:
    """A few lines: items, groups, chunks and rows (what --dry-run prints)."""
    items = sum(len(c.items) for c in chunks)
    groups = len({(c.runner, c.key) for c in chunks})
    rows = sum(c.rows for c in chunks)
    lines = [f"{items} item(s) in {groups} group(s) -> {len(chunks)} chunk(s), {rows} request row(s)"]
    lines += ["  " + c.describe() for c in chunks[:20]]
    if len(chunks) > 20:
        lines.append(f"  ... {len(chunks) - 20} more")
    return "\n".join(lines)
