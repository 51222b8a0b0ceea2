"""The Text tab: the char-LSTM continued from a seed, server-side or streamed as it is sampled.

Endpoints (Gradio `api_name`):
    text               one temperature -> (continuation, wire line)
    text_temperatures  the book's four temperatures side by side -> (4 continuations, wire line)
    next_char          the distribution of the next character at a temperature -> (table, wire line)

Both generation modes run `genserve.clients.text.generate`, the function behind `genserve generate`,
so the same seed gives the same text as the CLI and the Python client. "stream" runs it client-side
(one `prime` + one `step` per character) and shows characters as they are sampled; "server" sends one
`generate` request (the server's own PRNG: another text than the client-side sampler's).
"""

from __future__ import annotations

import numpy as np

from genserve.clients.text import BOOK_TEMPERATURES, TextModel, generate, reweight
from genserve.playground import ui
from genserve.playground.ui import gr
from genserve.playground.wire import stream

MODES = ("stream", "server")
DEFAULT_SEED_TEXT = "to be, or not to be, that is the question: "
TOP_CHARACTERS = 20  # bars in the next-character chart
SHOWN = {" ": "␣", "\n": "⏎", "\t": "⇥"}  # space, newline, tab


def _options(top_k, seed, mode: str) -> tuple[int | None, int | None, bool]:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    top_k = int(top_k) if top_k not in (None, "") and int(top_k) > 0 else None
    seed = int(seed) if seed not in (None, "") else None
    return top_k, seed, mode == "server"


def run_text(ctx: ui.Context, model: str, seed_text: str, temperatures, length, top_k, seed, mode):
    """Yield (texts, wire line) as the streams grow; the last one is `generate`'s own result."""
    top_k, seed, server_side = _options(top_k, seed, mode)
    length = int(length)
    with ctx.client() as client:
        text_model = TextModel(client, model)
        if server_side:
            result = generate(text_model, seed_text, length, temperatures, seed=seed, server_side=True)
        else:
            grown: list[list[str]] = []

            def work(emit):
                def on_step(i, ids):
                    if not grown:
                        grown.extend([] for _ in ids)
                    for row, char_id in zip(grown, ids):
                        row.append(text_model.info.vocabulary[int(char_id)])
                    emit((i + 1, ["".join(row) for row in grown]))

                return generate(text_model, seed_text, length, temperatures, seed=seed, top_k=top_k,
                                on_step=on_step)

            result = None
            for kind, payload in stream(work):
                if kind == "done":
                    result = payload
                    break
                done, texts = payload
                yield texts, client.report(f"{done}/{length} characters")
        texts = [row["text"] for row in result["samples"]]
        yield texts, client.report(f"{length} characters per stream")


def next_char_table(ctx: ui.Context, model: str, seed_text: str, temperature):
    """The `TOP_CHARACTERS` likeliest next characters after the seed at `temperature` (one `prime`)."""
    temperature = float(temperature)
    if not np.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    with ctx.client() as client:
        text_model = TextModel(client, model)
        ids = text_model.encode(seed_text)[-text_model.info.maxlen:]  # (T,)
        logits, _ = text_model.prime(ids[None, :])  # (1, V)
        logits = np.asarray(logits[0], np.float64)
        p = np.exp(logits - logits.max())
        p = reweight(p / p.sum(), temperature)  # the sampler's softmax(logits / T)
        order = np.argsort(-p, kind="stable")[:TOP_CHARACTERS]
        chars = [text_model.info.vocabulary[i] for i in order]
        rows = {"character": [SHOWN.get(ch, ch) for ch in chars], "probability": [float(p[i]) for i in order]}
        return rows, client.report(f"temperature {temperature:g}")


def default_seed(ctx: ui.Context, model: str) -> str:
    """DEFAULT_SEED_TEXT without the characters the model's vocabulary lacks (one `info` request)."""
    try:
        with ctx.client() as client:
            vocabulary = set(TextModel(client, model).info.vocabulary)
    except Exception:  # noqa: BLE001 - the page still loads; the first action will say what is wrong
        return DEFAULT_SEED_TEXT
    return "".join(ch for ch in DEFAULT_SEED_TEXT if ch in vocabulary).strip() or DEFAULT_SEED_TEXT


TEXT_INTRO = ("Continue a seed text character by character. **stream**: sampled here, one `step` "
              "request per character (all temperatures together); **server**: one `generate` request.")


def build(ctx: ui.Context, names: list[str]) -> None:
    """The Text tab's components and events (inside a gr.Blocks)."""
    import pandas as pd

    with ui.tab_header(ctx, names, "text", TEXT_INTRO) as (guard, model):
        mode = gr.Radio(list(MODES), value="stream", label="sampling", scale=1)
        seed_text = gr.Textbox(default_seed(ctx, names[0]), label="seed text", scale=3, elem_id="text-seed")
    with gr.Row():
        temperature = gr.Slider(0.0, 2.0, value=0.5, step=0.05, label="temperature", elem_id="text-temperature")
        length = gr.Slider(1, 2000, value=200, step=1, label="length (characters)", elem_id="text-length")
        top_k = gr.Number(0, label="top-k (0: off; stream only)", precision=0, minimum=0)
        seed = gr.Number(0, label="random seed", precision=0)
    with gr.Row():
        go = gr.Button("Generate", variant="primary", elem_id="text-generate")
        book = gr.Button(f"The book's four temperatures ({', '.join(f'{t:g}' for t in BOOK_TEMPERATURES)})")
    output = gr.Textbox(label="continuation", lines=6, max_lines=20, interactive=False, elem_id="text-output")
    with gr.Row():
        columns = [gr.Textbox(label=f"T = {t:g}", lines=8, max_lines=20, interactive=False)
                   for t in BOOK_TEMPERATURES]
    chart = gr.BarPlot(None, x="character", y="probability",
                       sort="-y", y_lim=[0, None], label="next character at this temperature",
                       elem_id="text-chart")
    wire = ui.wire_box("text")

    @guard
    def text(model_name, seed_text_value, temperature_value, length_value, top_k_value, seed_value, mode_value):
        for texts, line in run_text(ctx, model_name, seed_text_value, [float(temperature_value)], length_value,
                                    top_k_value, seed_value, mode_value):
            yield texts[0], line

    @guard
    def text_temperatures(model_name, seed_text_value, length_value, top_k_value, seed_value, mode_value):
        for texts, line in run_text(ctx, model_name, seed_text_value, BOOK_TEMPERATURES, length_value,
                                    top_k_value, seed_value, mode_value):
            yield (*texts, line)

    @guard
    def next_char(model_name, seed_text_value, temperature_value):
        rows, line = next_char_table(ctx, model_name, seed_text_value, temperature_value)
        return pd.DataFrame(rows), line

    go.click(text, [model, seed_text, temperature, length, top_k, seed, mode], [output, wire], api_name="text")
    book.click(text_temperatures, [model, seed_text, length, top_k, seed, mode], [*columns, wire],
               api_name="text_temperatures")
    gr.on([temperature.release, seed_text.submit, model.change], next_char, [model, seed_text, temperature],
          [chart, wire], api_name="next_char")
