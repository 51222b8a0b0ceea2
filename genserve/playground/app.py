"""The playground page: one tab per model family the server holds, and how it is served.

    genserve playground --target 127.0.0.1:8500           # then open http://127.0.0.1:7860

`build_app(ctx)` returns the gr.Blocks; `launch(app, ...)` serves it on 127.0.0.1 (unless told
otherwise), with no share link, no analytics and no API-page links to outside hosts.
"""

from __future__ import annotations

from pathlib import Path

from genserve.playground import ui
from genserve.playground.ui import gr
from genserve.playground.wire import FAMILIES

TITLE = "genserve playground"
TAB_TITLES = {"text": "Text", "vae": "VAE", "gan": "GAN", "style": "Style", "dream": "DeepDream"}
# System fonts only: the default theme's web fonts are bundled, but a Google font would be fetched.
THEME_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]
CSS = ".wire textarea { font-family: ui-monospace, monospace; font-size: 0.85em; }"
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples" / "images"  # in a source checkout


def _builders():
    from genserve.playground import images, latent, text

    return {"text": text.build, "vae": latent.build_vae, "gan": latent.build_gan,
            "style": images.build_style, "dream": images.build_dream}


def build_app(ctx: ui.Context) -> "gr.Blocks":
    """The page for the families in ctx.served (families with no model get no tab)."""
    builders = _builders()
    with gr.Blocks(title=TITLE, analytics_enabled=False) as app:
        gr.Markdown(f"## {TITLE}\nServer **{ctx.target}** · " + " · ".join(
            f"{TAB_TITLES[f]}: " + ", ".join(f"`{n}` v{ctx.served.versions.get(n, '?')}" for n in names)
            for f, names in ctx.served.models.items()))
        with gr.Tabs():
            for family in FAMILIES:
                names = ctx.served.models.get(family)
                if names:
                    with gr.Tab(TAB_TITLES[family], id=family):
                        builders[family](ctx, names)
    return app


def launch(app: "gr.Blocks", host: str = "127.0.0.1", port: int | None = 7860, block: bool = True,
           allowed_paths: list[str] | None = None, quiet: bool = False):
    """Serve the page. Returns (app, local url); with block=True, only when the server stops.

    Args:
        host: the interface to listen on; 127.0.0.1 keeps the page on this machine.
        port: the port; None lets Gradio pick a free one from 7860 up.
        block: wait until interrupted (the CLI) or return at once (tests).
    """
    app.queue(default_concurrency_limit=4)
    _, url, _ = app.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=not block,
                           quiet=quiet, show_error=True, inbrowser=False, ssr_mode=False, pwa=False,
                           mcp_server=False, enable_monitoring=False, footer_links=["api"],
                           allowed_paths=allowed_paths, max_file_size="20mb",
                           theme=gr.themes.Default(font=THEME_FONTS, font_mono=["ui-monospace", "monospace"]),
                           css=CSS)
    return app, url
