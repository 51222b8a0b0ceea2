"""Progress of long work, one helper for every command: a bar redrawn in place on a terminal; plain
lines in a log file or a pipe (no ANSI escape code, no carriage return: `grep`-able, one event a line).

    python -c "from genserve.progress import Progress; p = Progress(3, 'demo', 'steps'); [p.update() for _ in range(3)]"

`Progress` counts units of work (images encoded, L-BFGS iterations, batch items); `TrainingProgress`
follows a training run (epoch, step, loss) and remembers where it was, so a Ctrl-C can say what was
kept (genserve.cli.common.on_interrupt). Keras reaches it through genserve.training.common's callback.
No TensorFlow, no third-party import. Everything is written to stderr by default: stdout keeps the
results (generated text, `wrote FILE` lines, the per-epoch summary lines).
"""

from __future__ import annotations

import sys
import threading
import time

REDRAW_SECONDS = 0.2  # a terminal bar is redrawn at most this often
LINE_SECONDS = 10.0  # off a terminal: at most one progress line per this many seconds (plus the last)

_open_bar: list = []  # the bar (if any) whose line is not ended yet on a terminal


def end_open_line() -> None:
    """End a terminal bar's unfinished line, so that a message printed next starts at column 0."""
    while _open_bar:
        _open_bar.pop()._end_line()


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


class _Line:
    """One line of progress on `stream`: redrawn on a terminal, printed (throttled) elsewhere."""

    def __init__(self, stream=None, enabled: bool = True, interval: float = LINE_SECONDS):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled, self.interval = enabled, interval
        self.tty = _is_tty(self.stream)
        self._last_draw = self._last_line = -float("inf")
        self._lock = threading.Lock()

    def show(self, text: str, final: bool = False, now: float | None = None) -> None:
        """Draw `text` (a terminal), or print it when `final`, the first time or `interval` s after
        the last printed line (elsewhere)."""
        if not self.enabled:
            return
        now = time.perf_counter() if now is None else now
        with self._lock:
            if self.tty:
                if not final and now - self._last_draw < REDRAW_SECONDS:
                    return
                self._last_draw = now
                self.stream.write("\r" + text + ("\n" if final else "\x1b[K"))
                if final:
                    _forget(self)
                elif self not in _open_bar:
                    _open_bar.append(self)
            else:
                if not final and now - self._last_line < self.interval:
                    return
                self._last_line = now
                self.stream.write(text + "\n")
            self.stream.flush()

    def clear(self) -> None:
        """Erase an unfinished bar (a terminal), so a summary line can take its place."""
        if self.enabled and self.tty and self in _open_bar:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            _forget(self)
            self._last_draw = -float("inf")

    def _end_line(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def _forget(line: _Line) -> None:
    if line in _open_bar:
        _open_bar.remove(line)


class Progress:
    """Units of work done out of `total`: `label [#####.....] 3/10 images  12.5 images/s  ETA 0:04  note`.

    Args:
        total: units expected (None: unknown, no bar or ETA).
        label: what is running ("encode", "stylize").
        unit: the unit's plural name.
        stream: default sys.stderr; a bar only when it is a terminal.
        enabled: False for --quiet (nothing is written; counting still works).
        interval: off a terminal, seconds between lines (0: one line per update: use it when each
            update is a step group, an L-BFGS iteration or an octave).
    """

    def __init__(self, total: int | None, label: str, unit: str = "items", stream=None, enabled: bool = True,
                 interval: float = LINE_SECONDS):
        self.total, self.label, self.unit = total, label, unit
        self.done, self.failed, self.note = 0, 0, ""
        self.started = time.perf_counter()
        self._lock = threading.Lock()
        self._line = _Line(stream, enabled and total != 0, interval)

    def update(self, n: int = 1, note: str | None = None, failed: int = 0) -> None:
        """Count `n` more units done (`failed` of them failed); `note` is shown after the counts."""
        with self._lock:  # batch jobs count from several threads
            self.done += n
            self.failed += failed
            if note is not None:
                self.note = note
            finished = self.total is not None and self.done >= self.total
            text = self.line()
        self._line.show(text, final=finished)

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.perf_counter()) - self.started, 1e-9)
        rate = self.done / elapsed
        parts = [self.label]
        if self.total:
            width = 24
            filled = min(width, int(width * self.done / self.total))
            parts.append(f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {self.unit}")
        else:
            parts.append(f"{self.done} {self.unit}")
        text = " ".join(parts) + (f", {self.failed} failed" if self.failed else "")
        text += f"  {rate:.1f} {self.unit}/s" if rate >= 0.1 else f"  {elapsed / max(self.done, 1):.1f} s/{self.unit.rstrip('s')}"
        if self.total:
            left = (self.total - self.done) / rate if rate > 0 else None
            text += f"  ETA {_clock(left) if left is not None else '--:--'}"
        return text + (f"  {self.note}" if self.note else "")

    def finish(self) -> None:
        """End a bar that stopped short (interrupted work) with its newline on a terminal."""
        if self._line in _open_bar:
            _forget(self._line)
            self._line._end_line()


class TrainingProgress:
    """A training run's progress and position: `epoch 3/10 [####......] 120/469 steps  loss 1.2345  ETA 0:41`.

    On a terminal the bar is redrawn and erased at the end of each epoch (the trainer then prints its
    summary line); elsewhere a line every LINE_SECONDS within long epochs. `where()` and
    `epochs_done` say how far the run got (for Ctrl-C).
    """

    def __init__(self, stream=None, enabled: bool = True, interval: float = LINE_SECONDS):
        self.epoch = None  # the current epoch, 1-based; None before the first begins
        self.done = None  # the last epoch whose checkpoint is written, 1-based
        self.epochs = None  # the run's total
        self.first = None  # the first epoch of this run (> 1 when resumed)
        self.steps = None  # steps per epoch (None: unknown)
        self.step = 0
        self.metrics = {}  # the last step's numbers shown (loss, or d_loss and g_loss, ...)
        self.created = self.started = time.perf_counter()
        self._line = _Line(stream, enabled, interval)

    @property
    def epochs_done(self) -> int | None:
        """Epochs completed, their checkpoint written (those of an earlier run included, when resumed);
        None if no epoch began."""
        if self.epoch is None:
            return None
        return max(self.done or 0, self.first - 1)

    def where(self) -> str:
        if self.epoch is None:
            return "before the first epoch"
        return f"at epoch {self.epoch} step {self.step}"

    def epoch_begin(self, epoch: int, epochs: int | None, steps: int | None) -> None:
        """Epoch `epoch` (0-based, as Keras counts) of `epochs` begins; `steps` batches expected."""
        self.epoch, self.epochs, self.steps, self.step, self.metrics = epoch + 1, epochs, steps, 0, {}
        self.first = self.epoch if self.first is None else self.first
        self.started = time.perf_counter()

    def step_end(self, step: int, metrics: dict | None = None) -> None:
        """Batch `step` (1-based) of the current epoch is done; `metrics` its numbers (Keras's logs:
        the first three are shown)."""
        self.step = step
        if not self._line.enabled:
            return
        now = time.perf_counter()
        if self._line.tty and now - self._line._last_draw < REDRAW_SECONDS:
            return  # skip the formatting below as often as the terminal skips the drawing
        if metrics:
            self.metrics = {name: float(value) for name, value in list(metrics.items())[:3]}
        self._line.show(self.line(now), now=now)

    def epoch_end(self) -> None:
        """Erase the epoch's bar: the trainer's summary line takes its place."""
        self._line.clear()

    def epoch_done(self, epoch: int) -> None:
        """Epoch `epoch` (0-based) is complete: the trainer has written its checkpoint."""
        self.done = epoch + 1

    def line(self, now: float | None = None) -> str:
        elapsed = (now or time.perf_counter()) - self.started
        text = f"epoch {self.epoch}/{self.epochs}" if self.epochs else f"epoch {self.epoch}"
        if self.steps:
            width = 24
            filled = min(width, int(width * self.step / self.steps))
            text += f" [{'#' * filled}{'.' * (width - filled)}] {self.step}/{self.steps} steps"
        else:
            text += f" step {self.step}"
        for name, value in self.metrics.items():
            text += f"  {name} {value:.4f}"
        if self.steps and self.step:
            text += f"  ETA {_clock(elapsed / self.step * (self.steps - self.step))}"
        return text
