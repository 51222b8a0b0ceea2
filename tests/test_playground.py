"""`genserve playground` against real served models: every API endpoint with gradio_client, checked
against the thin clients, errors as one readable line, and the real page in headless Chromium.

    .venv/bin/python -m pytest tests/test_playground.py -q

Tiny exports of all five families (random text/VAE/style/dream weights, a GAN trained one epoch on 128
synthetic digits) are served by genserve's ModelServer on 127.0.0.1, port 0; the playground runs on a
free port. The browser test drives Debian's chromium (`make browser`) with playwright and writes the
screenshots docs/playground.md shows (GENSERVE_SCREENSHOTS=DIR writes them elsewhere).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmarks.harness import export_untrained_text, export_untrained_vae

pytest.importorskip("tensorflow")
gradio_client = pytest.importorskip("gradio_client")

from genserve.clients import Client  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "images"
TEXT = "a rose by any other name would smell as sweet; so romeo would, were he not romeo call'd.\n" * 30
SEED_TEXT = "a rose by any"
CHROMIUM = Path(os.environ.get("GENSERVE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"]


def export_all(root: Path) -> Path:
    """text, vae, gan, style, dream under root/models: the smallest exports each family's code makes."""
    from genserve.data import mnist
    from genserve.export.dream import DreamConfig, export_dream
    from genserve.export.gan import export_gan
    from genserve.export.style import export_style
    from genserve.training import gan as gan_training
    from genserve.training import text as text_training
    from genserve.training import vae as vae_training
    from genserve.training.style import StyleConfig

    models = root / "models"
    export_untrained_text(models, root / "text", dataclasses.replace(text_training.TextConfig(), maxlen=12, units=16),
                          alphabet=TEXT)
    export_untrained_vae(models, root / "vae", vae_training.VAEConfig(conv_filters=(4, 8, 8, 8), dense_units=8))
    gcfg = dataclasses.replace(gan_training.GANConfig(), dataset="synthetic", epochs=1, batch_size=32,
                               latent_dim=16, gen_filters=(16, 8), disc_filters=(8, 16), grid=2)
    gan_training.train(gcfg, root / "gan", data=mnist.synthetic(128, 8, seed=0).x_train[..., None], verbose=0)
    export_gan(root / "gan", models)
    export_style(StyleConfig(backbone="random-small"), models)
    export_dream(DreamConfig(backbone="random-small"), models)
    return models


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    """The tiny exports; GENSERVE_PLAYGROUND_MODELS=DIR serves trained ones instead (for the
    screenshots: `-k chromium` with GENSERVE_SCREENSHOTS=docs/images)."""
    given = os.environ.get("GENSERVE_PLAYGROUND_MODELS")
    return Path(given) if given else export_all(tmp_path_factory.mktemp("playground"))


@pytest.fixture(scope="module")
def server(models_dir):
    from genserve.serving.server import ModelServer

    with ModelServer(models_dir, poll_seconds=0) as srv:
        yield srv


@pytest.fixture(scope="module")
def digits():
    from genserve.data import mnist

    # the synthetic bars for the tiny models; MNIST's test digits for trained ones (the screenshots)
    trained = os.environ.get("GENSERVE_PLAYGROUND_MODELS")
    data = mnist.load("mnist") if trained else mnist.synthetic(16, 200, seed=1)
    return data.x_test, data.y_test


@pytest.fixture(scope="module")
def playground(server, digits):
    """(gradio_client.Client, page url, target) of a playground over every family."""
    from genserve.playground import serve_playground

    app, url, served = serve_playground(server.target, port=None, digits=digits, examples=EXAMPLES, block=False)
    assert sorted(served.models) == ["dream", "gan", "style", "text", "vae"], served.describe()
    client = gradio_client.Client(url, verbose=False)
    yield client, url, server.target
    client.close()
    app.close()


def _picture(path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def _grey(picture: np.ndarray, scale: int) -> np.ndarray:
    """What the page shows for a grey picture in [0, 1]: uint8, enlarged `scale` times, as RGB."""
    from genserve.playground.ui import grey_picture

    return grey_picture(picture, scale)


def test_discovery_finds_families_and_skips_what_is_missing(server):
    from genserve.playground.wire import discover

    found = discover(server.target, ["gan", "no_such_model", "vae"])
    assert found.models == {"gan": ["gan"], "vae": ["vae"]}
    assert "NOT_FOUND" in found.skipped["no_such_model"]
    everything = discover(server.target)  # the families' default names
    assert set(everything.models) == {"text", "vae", "gan", "style", "dream"}
    assert all(v == 1 for v in everything.versions.values())


def test_text_endpoints_match_the_thin_client(playground):
    from genserve.clients.text import BOOK_TEMPERATURES, TextModel, generate

    api, _, target = playground
    with Client(target) as client:
        model = TextModel(client)
        stream = generate(model, SEED_TEXT, 40, [0.7], seed=5, top_k=3)["samples"][0]["text"]
        server = generate(model, SEED_TEXT, 40, [0.7], seed=5, server_side=True)["samples"][0]["text"]
        book = [row["text"] for row in generate(model, SEED_TEXT, 30, BOOK_TEMPERATURES, seed=2)["samples"]]
    text, wire = api.predict("text", SEED_TEXT, 0.7, 40, 3, 5, "stream", api_name="/text")
    assert text == stream
    assert wire.startswith("41 requests") and "text version 1" in wire  # info + prime + 39 steps
    text, wire = api.predict("text", SEED_TEXT, 0.7, 40, 0, 5, "server", api_name="/text")
    assert text == server and wire.startswith("2 requests")  # info + generate
    *columns, wire = api.predict("text", SEED_TEXT, 30, 0, 2, "stream", api_name="/text_temperatures")
    assert columns == book and wire.startswith("31 requests")
    chart, wire = api.predict("text", SEED_TEXT, 0.5, api_name="/next_char")
    probabilities = [row[1] for row in chart["data"]]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-6


def test_vae_endpoints_match_the_thin_client(playground, digits):
    from genserve.clients.vae import VAEModel, grid_axis
    from genserve.playground.latent import draw_dots, plane_fractions, plane_point
    from genserve.playground.ui import fit_scale

    api, _, target = playground
    with Client(target) as client:
        vae = VAEModel(client)
        grid = vae.grid(6)
        z_mean, _ = vae.encode(digits[0][..., None].astype(np.float32) / 255.0)
        axis = grid_axis(6)
        cell = vae.decode(np.array([[axis[4], axis[1]]], np.float32))[0, ..., 0]
    expected = draw_dots(_grey(grid, fit_scale(6 * 28)), plane_fractions(z_mean, 6), digits[1])
    picture, wire = api.predict("vae", 6, api_name="/grid")
    assert np.array_equal(_picture(picture), expected)
    assert wire.startswith("3 requests") and "vae version 1" in wire  # metadata, decode, encode
    # the centre of cell (row 4, column 4) of a 6x6 plane is the grid point (axis[4], axis[1])
    z0, z1 = plane_point(4.5 / 6, 4.5 / 6, 6)
    assert (z0, z1) == pytest.approx((axis[4], axis[1]), abs=1e-5)
    digit, wire = api.predict("vae", z0, z1, api_name="/decode")
    assert np.abs(_picture(digit)[::10, ::10, 0].astype(int) - np.rint(cell * 255)).max() <= 1


def test_gan_endpoints_match_the_thin_client(playground):
    from genserve.clients.gan import GANModel

    api, _, target = playground
    with Client(target) as client:
        gan = GANModel(client)
        grid, strip = gan.grid(3, 7), gan.interpolate(1, 2, 5)
    picture, wire = api.predict("gan", 7, 3, api_name="/gan_grid")
    assert np.array_equal(_picture(picture), _grey(grid, 7)) and wire.startswith("2 requests")
    picture, wire = api.predict("gan", 1, 2, 5, True, api_name="/gan_interpolate")
    assert np.array_equal(_picture(picture), _grey(strip, 4)) and wire.startswith("3 requests")


def test_style_and_dream_endpoints_match_the_thin_client(playground):
    from genserve.clients.dream import DreamSchedule, RemoteDream, dream
    from genserve.clients.dream import load_image as load_dream_image
    from genserve.clients.images import to_uint8
    from genserve.clients.style import RemoteStyle, load_image, stylize

    api, _, target = playground
    content, style = EXAMPLES / "chelsea-cat.jpg", EXAMPLES / "hokusai-great-wave.jpg"
    with Client(target) as client:
        remote = RemoteStyle(client)
        image = load_image(content, height=40)
        remote.compute_targets(image, load_image(style, size=(image.shape[1], image.shape[0])))
        styled = stylize(remote, image, iterations=2)
        dreamed = dream(RemoteDream(client).ascend_fn(), load_dream_image(content, width=72),
                        DreamSchedule(octaves=2, iterations=3))
    handle = gradio_client.handle_file
    picture, curve, wire = api.predict("style", handle(str(content)), handle(str(style)), 40, 2,
                                       api_name="/stylize")
    assert np.array_equal(_picture(picture), to_uint8(styled.image))
    assert [row[1] for row in curve["data"]] == pytest.approx(styled.history)
    assert remote.requests == styled.evaluations + 1  # targets, then one step per evaluation
    assert wire.startswith(f"{remote.requests} requests")  # the page sends what the thin client sends
    picture, octaves, wire = api.predict("dream", handle(str(content)), 72, 2, 3, 0.01, api_name="/dream")
    assert np.array_equal(_picture(picture), to_uint8(dreamed.image))
    assert len(octaves) == 2 and wire.startswith("2 requests")  # one ascend per octave


def test_server_errors_are_one_readable_line(models_dir, tmp_path):
    """Model missing, and the server gone: a readable message, the page keeps answering."""
    from genserve.playground.app import build_app, launch
    from genserve.playground.ui import Context
    from genserve.playground.wire import Served
    from genserve.serving.server import ModelServer

    shutil.copytree(models_dir / "gan", tmp_path / "gan")  # no models.config: every folder is served
    with ModelServer(tmp_path, poll_seconds=0) as doomed:
        served = Served(doomed.target, models={"gan": ["gan", "gone"]}, versions={"gan": 1})
        app, url = launch(build_app(Context(served, timeout=2.0)), port=None, block=False, quiet=True)
        api = gradio_client.Client(url, verbose=False)
        try:
            with pytest.raises(gradio_client.exceptions.AppError) as missing:
                api.predict("gone", 0, 2, api_name="/gan_grid")
            assert "NOT_FOUND" in str(missing.value) and "Traceback" not in str(missing.value)
            picture, _ = api.predict("gan", 0, 2, api_name="/gan_grid")  # still usable
            doomed.stop(grace=0)
            for _ in range(2):
                with pytest.raises(gradio_client.exceptions.AppError) as down:
                    api.predict("gan", 0, 2, api_name="/gan_grid")
                assert "UNAVAILABLE" in str(down.value) and "is it running" in str(down.value)
        finally:
            api.close()
            app.close()


def _screenshot(page, name: str, folder: Path) -> Path:
    from genserve.files import atomic_write

    return atomic_write(folder / f"playground-{name}.png", page.screenshot(full_page=True))


def test_the_page_in_headless_chromium(playground, tmp_path):
    """Load the page, move the temperature slider, generate and read the text; click the VAE plane and
    see a decoded digit; generate a GAN grid and a strip. Screenshots go to $GENSERVE_SCREENSHOTS (docs/images for
    the committed ones), else a temporary folder."""
    from playwright.sync_api import expect, sync_playwright

    from genserve.clients.text import TextModel, generate
    from genserve.playground.text import TOP_CHARACTERS

    assert CHROMIUM.is_file(), f"{CHROMIUM} missing: run `make browser` (Debian's chromium)"
    _, url, target = playground
    shots = Path(os.environ.get("GENSERVE_SCREENSHOTS", tmp_path))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(60_000)
            expect.set_options(timeout=60_000)  # a busy 2-core box: waits are on conditions, not sleeps
            page.goto(url)
            # Text: drag the temperature to 3/4 of its track (the slider's release draws the chart)
            track = page.locator("#text-temperature input[type=range]")
            box = track.bounding_box()
            page.mouse.click(box["x"] + 0.75 * box["width"], box["y"] + box["height"] / 2)
            shown = page.locator("#text-temperature input[type=number]")
            expect(shown).not_to_have_value("0.5")
            temperature = float(shown.input_value())
            wire = page.locator("#text-wire textarea")
            expect(wire).to_have_value(re.compile(re.escape(f"temperature {temperature:g}")))
            expect(page.locator("#text-chart .mark-rect path")).to_have_count(TOP_CHARACTERS)  # the bars
            length = page.locator("#text-length input[type=number]")
            length.fill("60")
            length.press("Enter")
            page.locator("#text-generate").click()
            expect(wire).to_have_value(re.compile("60 characters per stream"))
            text = page.locator("#text-output textarea").input_value()
            with Client(target) as client:
                expected = generate(TextModel(client), page.locator("#text-seed textarea").input_value(), 60,
                                    [temperature], seed=0)["samples"][0]["text"]
            assert text == expected
            _screenshot(page, "text", shots)
            # VAE: draw the plane, click a point, see the decoded digit
            page.get_by_role("tab", name="VAE").click()
            page.locator("#vae-draw").click()
            plane = page.locator("#vae-plane img")
            expect(plane).to_be_visible()
            box = plane.bounding_box()
            page.mouse.click(box["x"] + 0.3 * box["width"], box["y"] + 0.6 * box["height"])
            expect(page.locator("#vae-digit img")).to_be_visible()
            expect(page.locator("#vae-wire textarea")).to_have_value(re.compile(r"z = \("))
            _screenshot(page, "vae", shots)
            # GAN: one request for the whole grid
            page.get_by_role("tab", name="GAN").click()
            page.locator("#gan-generate").click()
            expect(page.locator("#gan-grid img")).to_be_visible()
            expect(page.locator("#gan-wire textarea")).to_have_value(re.compile("in one sample request"))
            page.get_by_role("button", name="Interpolate").click()
            expect(page.locator("#gan-strip img")).to_be_visible()
            _screenshot(page, "gan", shots)
        finally:
            browser.close()
    assert all((shots / f"playground-{name}.png").stat().st_size > 10_000 for name in ("text", "vae", "gan"))


def test_cli_refuses_with_one_line(server, refused_target):
    """No server, no known model, an empty --models: one `error:` line, exit 1, no page."""
    from typer.testing import CliRunner

    from genserve.cli import app

    closed = refused_target
    for args, words in ((["--target", closed, "--timeout", "1"], "UNAVAILABLE"),
                        (["--target", server.target, "--models", "toy,nothing"], "no model of a known family"),
                        (["--target", server.target, "--models", ","], "at least one model name")):
        result = CliRunner().invoke(app, ["playground", "--digits", "none", *args])
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], result.output
