"""`genserve playground`: a Gradio web page over the thin clients, on any TF-Serving-compatible endpoint.

    genserve playground --target 127.0.0.1:8500 [--models text,vae] [--port 7860]

One tab per model family the server holds (Text, VAE, GAN, Style, DeepDream); every action is also a
named API endpoint (text, text_temperatures, next_char, grid, decode, gan_grid, gan_interpolate,
stylize, dream) for `gradio_client`. Needs the `playground` extra (`pip install 'genserve[playground]'`).

Modules: `wire` (discovery, request counting, readable errors; no Gradio), `ui` (shared page pieces),
`text`, `latent` (VAE, GAN), `images` (style, dream), `app` (the page and its server).
"""

from __future__ import annotations


def serve_playground(target: str, models: list[str] | None = None, host: str = "127.0.0.1",
                     port: int | None = 7860, timeout: float = 30.0, client_options: dict | None = None,
                     digits=None, examples=None, block: bool = True):
    """Discover the served families, build the page and serve it.

    Returns:
        (gr.Blocks, local url, Served); with block=True only after the server stops.
    Raises:
        genserve.clients.GenserveError: the server is unreachable.
        LookupError: it serves no model of a known family (the message lists what was asked).
    """
    from genserve.playground.app import EXAMPLES_DIR, build_app, launch
    from genserve.playground.ui import Context
    from genserve.playground.wire import discover

    served = discover(target, models, timeout=min(timeout, 10.0), client_options=client_options)
    if not served.models:
        raise LookupError(f"no model of a known family found; {served.describe()}")
    examples = EXAMPLES_DIR if examples is None else examples
    ctx = Context(served, timeout=timeout, client_options=dict(client_options or {}), digits=digits,
                  examples=examples)
    allowed = [str(examples)] if examples is not None and examples.is_dir() else None
    app, url = launch(build_app(ctx), host=host, port=port, block=block, allowed_paths=allowed,
                      quiet=not block)
    return app, url, served
