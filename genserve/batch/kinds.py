"""The catalogue of batch item kinds: each kind is ONE `register_kind(Kind(...))` entry.

    python -c "from genserve.batch.kinds import KINDS; print(sorted(KINDS))"

A new family adds its kind here (or from its own module) with its fields, default model, group key,
rows per item, output names and runner; nothing else in genserve/batch changes. Runners are named by
"module:function" and imported only when a job runs, so validation needs neither gRPC nor TensorFlow.
"""

from __future__ import annotations

from genserve import contract
from genserve.batch.fields import (MAX_GRID, Field, Kind, existing_file, integer, number, number_list,
                                   one_of, points, text)

KINDS: dict[str, Kind] = {}


def register_kind(kind: Kind) -> Kind:
    """Add (or replace) a kind; returns it."""
    KINDS[kind.name] = kind
    return kind


# ---------------------------------------------------------------------------------------------------
# Text.
# ---------------------------------------------------------------------------------------------------
def _text_check(p: dict) -> None:
    if p["temperature"] is not None and p["temperatures"] is not None:
        raise ValueError("temperatures: give temperature or temperatures, not both")
    if p["top_k"] is not None and p["length"] > 5000:
        raise ValueError("length: client-side sampling (top_k) makes one request per character; "
                         "at most 5000")


def text_temperatures(p: dict) -> list[float]:
    """The item's temperatures (default: the book's four)."""
    if p["temperatures"] is not None:
        return list(p["temperatures"])
    if p["temperature"] is not None:
        return [p["temperature"]]
    return [0.2, 0.5, 1.0, 1.2]


def text_streams(item_id: str, p: dict) -> list[tuple[float, int, str]]:
    """(temperature, sample, file name) of every stream of a text item, in request-row order:
    `<id>.txt` for a single stream, else `<id>-t<T>-s<k>.txt`."""
    temps = text_temperatures(p)
    if len(temps) * p["samples"] == 1:
        return [(temps[0], 0, f"{item_id}.txt")]
    return [(t, k, f"{item_id}-t{t:g}-s{k}.txt") for t in temps for k in range(p["samples"])]


register_kind(Kind(
    name="text", model=contract.TEXT.name, runner="genserve.batch.runners.text:run_text", max_rows=512,
    fields=(
        Field("seed_text", text(), default="to be, or not to be, that is the question:\n"
                                           "whether 'tis nobler in the mind"),
        Field("temperature", number(0.0)),
        Field("temperatures", number_list(0.0)),
        Field("length", integer(1, contract.TEXT_GENERATE_MAX_LENGTH), default=400),
        Field("samples", integer(1, 1024), default=1),
        Field("top_k", integer(1)),
        Field("seed", integer(0, 2 ** 63 - 1)),
        Field("replace_unknown", text(single_char=True)),
    ),
    check=_text_check,
    # Server-side items of one length share `generate` requests; top_k items share prime/step ones.
    group=lambda p: ("text", p["model"], "client" if p["top_k"] is not None else "server", p["length"]),
    rows=lambda p: len(text_temperatures(p)) * p["samples"],
    outputs=lambda item_id, p: [name for _, _, name in text_streams(item_id, p)],
))


# ---------------------------------------------------------------------------------------------------
# VAE: decode and grid items share `decode` requests.
# ---------------------------------------------------------------------------------------------------
def _grid_check(p: dict) -> None:
    low, high = p["range"]
    if p["spacing"] == "quantile" and not (0 < low < 1 and 0 < high < 1):
        raise ValueError(f"range: quantiles must lie strictly inside (0, 1), got {low}..{high} "
                         "(use \"spacing\": \"linear\" for z values)")
    from genserve.clients.vae import grid_axis  # the grid's one rule (finite, increasing), as `genserve grid`

    try:
        grid_axis(p["n"], low, high, p["spacing"])
    except ValueError as e:
        raise ValueError(f"range: {e}") from None


_VAE_GROUP = lambda p: ("vae", p["model"])  # noqa: E731
_VAE_RUNNER = "genserve.batch.runners.vae:run_vae"
register_kind(Kind(
    name="decode", model=contract.VAE.name, runner=_VAE_RUNNER, max_rows=256, chunk_rows=4096,
    fields=(Field("points", points, required=True), Field("scale", integer(1, 16), default=1)),
    group=_VAE_GROUP, rows=lambda p: len(p["points"]),
))
register_kind(Kind(
    name="grid", model=contract.VAE.name, runner=_VAE_RUNNER, max_rows=256, chunk_rows=4096,
    fields=(
        Field("n", integer(1, MAX_GRID), default=15),
        Field("range", number_list(None, 2, 2), default=[0.05, 0.95]),
        Field("spacing", one_of("quantile", "linear"), default="quantile"),
        Field("scale", integer(1, 16), default=1),
    ),
    check=_grid_check, group=_VAE_GROUP, rows=lambda p: p["n"] * p["n"],
))

# ---------------------------------------------------------------------------------------------------
# Style transfer: items sharing a style image (and height) share `targets` requests.
# ---------------------------------------------------------------------------------------------------
register_kind(Kind(
    name="stylize", model=contract.STYLE.name, runner="genserve.batch.runners.style:run_style", max_rows=8,
    fields=(
        Field("content", existing_file, required=True, path=True),
        Field("style", existing_file, required=True, path=True),
        Field("height", integer(32, 4096), default=400),
        Field("iterations", integer(1, 1000), default=20),
        Field("evals_per_iteration", integer(1, 1000), default=20),
    ),
    group=lambda p: ("style", p["model"], p["style"], p["height"]),
    rows=lambda p: 1,
))

# ---------------------------------------------------------------------------------------------------
# GAN grids: the seeds of every grid in ONE `sample` request.
# ---------------------------------------------------------------------------------------------------
register_kind(Kind(
    name="gan_grid", model=contract.GAN.name, runner="genserve.batch.runners.gan:run_gan", max_rows=256,
    chunk_rows=4096,
    fields=(
        Field("n", integer(1, MAX_GRID), default=10),
        Field("seed", integer(0, 2 ** 62)),
        Field("scale", integer(1, 16), default=1),
    ),
    group=lambda p: ("gan", p["model"]), rows=lambda p: p["n"] * p["n"],
))
