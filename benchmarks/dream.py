"""DeepDream benchmark: one `ascend` request per octave vs one `gradient` request per step, same server,
same image, same schedule. Printed, not a test.

    .venv/bin/python benchmarks/dream.py                               # vgg16-offline, 200 px wide
    .venv/bin/python benchmarks/dream.py --backbone random-small       # tiny net: transport-bound
    .venv/bin/python benchmarks/dream.py --width 400 --repeats 2

One run, one backbone, one image (the cat, resized to --width), the book's schedule (3 octaves, scale
1.4, --iterations steps, step 0.01) with max_loss off so both routes do exactly the same steps:
1. `ascend`: the loop runs on the server, one request per octave (3 requests);
2. `gradient`: the book's loop on the client, one request per step (3 x iterations requests), the
   image and its gradient crossing the wire every step;
3. the same `ascend` signature run in process by tensor names (graph Session, no gRPC): the compute;
4. the `gradient` loop in process (graph Session, no gRPC): the in-graph loop's own cost vs 20 calls.
Interleaved rounds, fastest of --repeats per route (medians printed too); the two routes' images are
compared: they agree to ~1e-4 grey levels within one 20-step octave; float32 rounding differences are
amplified over longer runs (gradient ascent is chaotic), so the final images differ by a few levels.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="vgg16-offline")
    parser.add_argument("--image", default=str(ROOT / "examples/images/chelsea-cat.jpg"))
    parser.add_argument("--width", type=int, default=200)
    parser.add_argument("--octaves", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="timed dreams per route (after 1 warm-up)")
    args = parser.parse_args()

    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from genserve.clients import Client
    from genserve.clients.dream import DreamSchedule, RemoteDream, dream, load_image, tiled_ascent
    from genserve.export.dream import DreamConfig, export_dream
    from genserve.serving.loader import load_saved_model
    from genserve.serving.server import serve

    picture = load_image(args.image, width=args.width)
    schedule = DreamSchedule(octaves=args.octaves, iterations=args.iterations, max_loss=float("inf"))
    with tempfile.TemporaryDirectory() as models_dir:
        path = export_dream(DreamConfig(backbone=args.backbone), models_dir)
        graph = load_saved_model(path)
        ascend_sig = graph.signatures["ascend"]

        def in_process(image, iterations, step, max_loss):
            out = ascend_sig.run({"image": image[None], "step_size": np.array([step], np.float32),
                                  "iterations": np.array([iterations], np.int32),
                                  "max_loss": np.array([max_loss], np.float32)})
            return out["image"][0], out["losses"][0]

        def gradient_in_process(images):
            out = graph.signatures["gradient"].run({"image": images})
            return out["loss"], out["gradient"]

        with serve(models_dir, poll_seconds=0) as target, Client(target, timeout=600) as client:
            remote = RemoteDream(client)
            counts, images = {}, {}

            def by_ascend():
                before = remote.requests
                images["ascend"] = dream(remote.ascend_fn(tile_size=0), picture, schedule).image
                counts["ascend"] = remote.requests - before

            def by_gradient():
                before = remote.requests
                step_fn = lambda x, it, s, ml: tiled_ascent(remote.gradient, x, it, s, ml,  # noqa: E731
                                                            tile_size=1 << 30)
                images["gradient"] = dream(step_fn, picture, schedule).image
                counts["gradient"] = remote.requests - before

            def by_process():
                images["in process"] = dream(in_process, picture, schedule).image
                counts["in process"] = 0

            def by_process_gradient():
                step_fn = lambda x, it, s, ml: tiled_ascent(gradient_in_process, x, it, s, ml,  # noqa: E731
                                                            tile_size=1 << 30)
                images["gradient in process"] = dream(step_fn, picture, schedule).image
                counts["gradient in process"] = 0

            routes = {"ascend": by_ascend, "gradient": by_gradient, "in process": by_process,
                      "gradient in process": by_process_gradient}
            for fn in routes.values():  # warm-up
                fn()
            times = {name: [] for name in routes}
            for _ in range(args.repeats):
                for name, fn in routes.items():
                    start = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - start)
        graph.close()

    h, w = picture.shape[:2]
    print(f"backbone {args.backbone}, {w}x{h} px, {args.octaves} octaves x {args.iterations} steps, "
          f"fastest of {args.repeats} (medians: " +
          ", ".join(f"{n} {statistics.median(t):.3f} s" for n, t in times.items()) + ")")
    best = {name: min(t) for name, t in times.items()}
    print(f"{'route':<20} {'requests':>8} {'seconds':>9} {'vs ascend':>10}")
    for name in routes:
        print(f"{name:<20} {counts[name]:>8} {best[name]:>9.3f} {best[name] / best['ascend']:>9.2f}x")
    diff = np.abs(images["ascend"] - images["gradient"])
    print(f"one `ascend` per octave is {best['gradient'] / best['ascend']:.2f}x faster than one "
          f"`gradient` per step (goal >= 5x); gRPC adds {best['ascend'] / best['in process'] - 1:+.1%} "
          f"to the in-process run")
    print(f"|ascend - gradient| per pixel: mean {float(diff.mean()):.3g}, max {float(diff.max()):.3g} grey "
          "levels (float32 rounding differs between the two loops; ~1e-4 after one 20-step octave, "
          "amplified by later steps: gradient ascent is chaotic)")


if __name__ == "__main__":
    main()
