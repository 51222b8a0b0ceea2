"""The book's 15x15 latent grid: 225 requests (the seed's way) vs ONE request, against one server.

    .venv/bin/python benchmarks/vae_grid.py                       # random-weight VAE (timing only)
    .venv/bin/python benchmarks/vae_grid.py --workdir work/vae    # a trained one, + test-set -ELBO

The seed (Deep Learning with Python, 8.4) calls `decoder.predict` once per grid cell, each time on
the cell's z tiled to a batch of 16, and keeps the first image. Here that is 225 gRPC Predict calls of
(16, latent) each, against genserve's embedded server on 127.0.0.1; the alternative sends the 225
points as one (225, latent) request. Both go through the same server in the same run. In-process rows
(Keras `decoder.predict` per cell vs one `decoder(z)` call) show what the transport adds.

With --workdir, the trained checkpoint is also evaluated on the 10k test set (negative ELBO in nats per
image, one z sample per image), next to published anchors. Prints a table; not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from genserve.clients import Client  # noqa: E402
from genserve.clients.vae import VAEModel, grid_points, render_grid, tile  # noqa: E402

BOOK_BATCH = 16


def seed_way(model: VAEModel, z: np.ndarray) -> np.ndarray:
    """225 requests: each cell's z tiled to the book's batch of 16, first image kept."""
    images = [model.decode(np.tile(point, (BOOK_BATCH, 1)))[0] for point in z]  # 225 x (28, 28, 1)
    return np.stack(images)


def timed(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="trained VAE workdir (default: random weights)")
    parser.add_argument("--n", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-inprocess", action="store_true", help="skip the Keras in-process rows")
    args = parser.parse_args()

    import keras

    from genserve.export.vae import export_vae
    from genserve.serving.server import serve
    from genserve.training import vae as training

    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir
        if workdir is None:  # the book's architecture with random weights: timing does not need training
            workdir = Path(tmp) / "work"
            workdir.mkdir()
            cfg = training.VAEConfig()
            model = training.new_model(cfg)
            (workdir / training.CONFIG_FILE).write_text(cfg.to_json())
            model.encoder.save_weights(workdir / training.BEST_ENCODER)
            model.decoder.save_weights(workdir / training.BEST_DECODER)
        cfg, encoder, decoder = training.load_trained(workdir)
        export_vae(workdir, Path(tmp) / "models")
        z = grid_points(args.n, cfg.latent_dim)  # (n*n, latent)
        rows = []
        with serve(Path(tmp) / "models", poll_seconds=0) as target, Client(target) as client:
            remote = VAEModel(client)
            remote.grid(args.n), seed_way(remote, z[:5])  # warm up both paths
            t_seed, seed_images = timed(lambda: seed_way(remote, z), args.repeats)
            t_one, picture = timed(lambda: remote.grid(args.n), args.repeats)
            np.testing.assert_allclose(tile(seed_images, args.n), picture, atol=1e-5)  # same figure
            rows.append((f"gRPC: {len(z)} requests of ({BOOK_BATCH}, {cfg.latent_dim}) (the seed's way)",
                         len(z), t_seed))
            rows.append((f"gRPC: 1 request of ({len(z)}, {cfg.latent_dim})", 1, t_one))
        if not args.no_inprocess:
            def keras_seed_way():
                return np.stack([decoder.predict(np.tile(p, (BOOK_BATCH, 1)), batch_size=BOOK_BATCH,
                                                 verbose=0)[0] for p in z])

            keras_seed_way()
            t_keras_seed, _ = timed(keras_seed_way, max(1, args.repeats // 2))
            t_keras_one, _ = timed(lambda: render_grid(lambda q: np.asarray(decoder(q)), args.n,
                                                       cfg.latent_dim), args.repeats)
            rows.append((f"in-process: {len(z)} x decoder.predict (the book's code)", len(z), t_keras_seed))
            rows.append(("in-process: 1 x decoder(z)", 1, t_keras_one))

        print(f"\n{args.n}x{args.n} latent grid, latent size {cfg.latent_dim}, median of {args.repeats} runs, "
              f"{os.cpu_count()} CPU cores, keras {keras.__version__}")
        print(f"{'method':<62} {'calls':>6} {'wall ms':>10} {'vs 1 request':>13}")
        for label, calls, seconds in rows:
            print(f"{label:<62} {calls:>6} {seconds * 1000:>10.1f} {seconds / t_one:>12.1f}x")
        print(f"one request vs the seed's 225 requests, both over gRPC: {t_seed / t_one:.1f}x (goal >= 50x)")
        if not args.no_inprocess:
            print(f"one request vs the book's own code (225 x decoder.predict): {t_keras_seed / t_one:.1f}x")

        if args.workdir is not None:
            from genserve.data import mnist

            digits = mnist.load(cfg.dataset)
            start = time.perf_counter()
            result = training.evaluate(cfg, encoder, decoder, digits.x_test[..., None])
            print(f"\ntest-set negative ELBO of {args.workdir} ({cfg.dataset}, {result['images']} images, "
                  f"{time.perf_counter() - start:.1f} s): {result['neg_elbo']:.2f} nats/image "
                  f"(reconstruction {result['reconstruction']:.2f} + KL {result['kl']:.2f}); "
                  f"book loss {result['book']:.4f}")
            print("anchors: keras-io 2-D conv VAE 146.95 (training data); published 2-D test "
                  "153.8-155.9; goal <= 150; the book's val_loss 0.1831 (book loss)")


if __name__ == "__main__":
    main()
