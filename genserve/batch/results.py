"""The output folder of a batch job: item files written atomically, `results.jsonl`, resume.

    DIR/results.jsonl        one JSON record per finished item, appended as lines (flush + fsync per chunk)
    DIR/<id>.txt|.png ...    the item's outputs, each written by genserve.files.atomic_write (a temporary
                             sibling, renamed), without an fsync each: the runners call os.sync() once
                             per chunk before the chunk's records are appended (and fsync'd), so a
                             record never reaches the disk before its files

A record: {"id", "kind", "line", "status": "ok"|"error", "outputs": [paths relative to DIR],
"model", "version", "timings": {...}, "fingerprint", "error"?, ...kind-specific fields}. The last record
of an id wins. Rerunning a job skips every item whose last record is `ok`, whose fingerprint (a hash of
the item's normalised fields) is unchanged and whose output files exist; a torn last line left by a kill
is ignored (and cut off before anything is appended), and leftover temporary files are removed.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from genserve.files import is_temp_sibling

RESULTS_FILE = "results.jsonl"


def check_out_dir(out: Path, create: bool = True) -> Path:
    """Create DIR (parents too) and make sure it is a writable folder (create=False: only refuse a DIR
    that exists and is no folder, as `batch run --dry-run` does, which writes nothing).

    Raises:
        ValueError: DIR is a file or not writable.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    if not create:
        return out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--out {out}: cannot create it ({e.strerror})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out} is not writable")
    return out


def clean_temporaries(out: Path) -> int:
    """Remove temporary siblings a killed run left behind; returns how many."""
    removed = 0
    for path in Path(out).glob(".*"):
        if not is_temp_sibling(path.name) or not path.is_file():
            continue
        try:
            path.unlink()
            removed += 1
        except OSError:
            pass
    return removed


def read_records(path: Path) -> tuple[dict[str, dict], int]:
    """The last record of every id in results.jsonl, and the byte length of its intact prefix.

    A last line without its newline, or any line that is not a JSON object with an id, is ignored
    (a kill can tear the last line); everything after the last intact line is cut before appending.
    """
    records: dict[str, dict] = {}
    if not path.exists():
        return records, 0
    data = path.read_bytes()
    good = 0
    position = 0
    for raw in data.splitlines(keepends=True):
        position += len(raw)
        if not raw.endswith(b"\n"):
            break  # torn tail
        good = position  # a complete line stays, even if it is not a record
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(record, dict) and isinstance(record.get("id"), str):
            records[record["id"]] = record
    return records, good


class Results:
    """DIR/results.jsonl: the records so far, and appends that survive a kill.

    Args:
        out: the output folder (created).
    """

    def __init__(self, out: Path):
        self.out = check_out_dir(Path(out))
        self.path = self.out / RESULTS_FILE
        self.removed_temporaries = clean_temporaries(self.out)
        self.records, intact = read_records(self.path)
        if self.path.exists() and self.path.stat().st_size != intact:
            with open(self.path, "r+b") as f:  # cut a torn last line before appending to it
                f.truncate(intact)
                os.fsync(f.fileno())
        self._lock = threading.Lock()
        self._file = None

    def is_done(self, item) -> bool:
        """True when the item's last record is ok, for the same fingerprint, with its files present."""
        record = self.records.get(item.id)
        return (record is not None and record.get("status") == "ok"
                and record.get("fingerprint") == item.fingerprint
                and all((self.out / p).is_file() for p in record.get("outputs", ())))

    def append(self, *records: dict) -> None:
        """Append records, one line each, flushed and fsync'd (once for the lot) before returning.

        The driver appends a chunk's records together: one fsync per chunk instead of per item (2,000
        fsyncs cost 5.4 s here); a kill leaves whole lines and at most one torn last line.
        """
        data = b"".join((json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
                        for r in records)
        with self._lock:
            if self._file is None:
                self._file = open(self.path, "ab")
            self._file.write(data)
            self._file.flush()
            os.fsync(self._file.fileno())
            for record in records:
                self.records[record["id"]] = record

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
