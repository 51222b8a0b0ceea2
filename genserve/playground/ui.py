"""Pieces every playground tab shares: the per-action context, error guard, and picture helpers.

Gradio is imported here and in the tab modules only (never by `genserve --help` or the CLI module).
"""

from __future__ import annotations

import functools
import html
import inspect
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from genserve.playground.wire import Served, WireClient, readable

# No telemetry and no update check (Gradio reads this when it reports, so set it before any launch).
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gradio as gr  # noqa: E402

log = logging.getLogger("genserve.playground")


@dataclass
class Context:
    """What every action needs: where the server is, how to reach it, what it serves."""

    served: Served
    timeout: float = 30.0
    client_options: dict = field(default_factory=dict)  # Client keyword arguments (TLS material)
    digits: tuple[np.ndarray, np.ndarray] | None = None  # test images (N, 28, 28) uint8, labels (N,)
    examples: Path | None = None  # a folder of example pictures (examples/images)

    @property
    def target(self) -> str:
        return self.served.target

    def client(self, timeout: float | None = None) -> WireClient:
        """A fresh counting client for one action."""
        return WireClient(self.target, timeout=timeout or self.timeout, **self.client_options)

    def example_files(self) -> list[str]:
        if self.examples is None or not self.examples.is_dir():
            return []
        return sorted(str(p) for p in self.examples.iterdir()
                      if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def guard(target: str):
    """Decorate an action so any failure reaches the page as one readable gr.Error line (the page
    stays usable); unexpected errors are logged with their traceback on the server's console only.
    Works for plain functions and for generators (streamed actions)."""

    def decorate(fn):
        def fail(e: BaseException):
            if isinstance(e, gr.Error):
                return e
            known = readable(e, target)
            if known.startswith("unexpected "):
                log.exception("playground action %s failed", fn.__name__)
            return gr.Error(html.escape(known), print_exception=False)  # shown as HTML

        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def streamed(*args, **kwargs):
                try:
                    yield from fn(*args, **kwargs)
                except Exception as e:  # noqa: BLE001 - every failure becomes one line
                    raise fail(e) from None
            return streamed

        @functools.wraps(fn)
        def plain(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001
                raise fail(e) from None
        return plain

    return decorate


@contextmanager
def tab_header(ctx: Context, names: list[str], family: str, intro: str):
    """A tab's first lines: what it does, then a row opening with the model choice; yields
    (the error guard for its actions, the model dropdown) with that row open for more inputs."""
    gr.Markdown(intro)
    with gr.Row():
        yield guard(ctx.target), model_dropdown(names, family)


def model_dropdown(names: list[str], family: str):
    """The served model of this family an action talks to (a choice when the server holds several)."""
    return gr.Dropdown(choices=names, value=names[0], label=f"{family} model",
                       interactive=len(names) > 1, scale=1)


def wire_box(family: str):
    """The line under every action: requests sent, total latency, model version answered."""
    return gr.Textbox(label="on the wire", interactive=False, lines=1, max_lines=3,
                      elem_id=f"{family}-wire", elem_classes=["wire"])


def grey_picture(picture: np.ndarray, scale: int = 1) -> np.ndarray:
    """A grey picture in [0, 1] (H, W) -> uint8 RGB (H*scale, W*scale, 3), pixels kept square."""
    pixels = np.clip(np.rint(np.asarray(picture, np.float32) * 255), 0, 255).astype(np.uint8)
    if scale > 1:
        pixels = np.kron(pixels, np.ones((scale, scale), np.uint8))
    return np.repeat(pixels[..., None], 3, axis=-1)


def fit_scale(side: int, display: int = 560, most: int = 12) -> int:
    """The integer enlargement that brings `side` pixels closest to `display` (1..most)."""
    return int(min(most, max(1, round(display / max(side, 1)))))


def image_output(label: str, **kwargs):
    """An output picture, sent as PNG (lossless: what the server made, pixel for pixel)."""
    return gr.Image(label=label, type="numpy", format="png", interactive=False, **kwargs)
