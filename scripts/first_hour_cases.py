"""The deliberate mistakes of scripts/first_hour_audit.py, one `Case` each, grouped by command.

    .venv/bin/python scripts/first_hour_audit.py --only "batch"

`build_cases(ctx)` gets the set-up paths and targets: root (models/, toy_models/, work/<family>/,
certs/, corpus.txt), grpc / rest (the main server's ports), tls (a TLS server), closed (a port nobody
listens on), repo (this checkout). Relative paths in a case's argv are inside its own working folder,
which its `prep` fills.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from first_hour_audit import Case

CAT = "examples/images/chelsea-cat.jpg"
WAVE = "examples/images/hokusai-great-wave.jpg"
TEXT_ITEM = {"id": "a", "kind": "text", "seed_text": "to be", "length": 20}


# -- prep helpers: each returns prep(cwd) ----------------------------------------------------------------
def files(**named):
    """prep writing name -> str/bytes (a dict/list is written as JSON lines); None makes a folder."""
    def prep(cwd: Path) -> None:
        for name, data in named.items():
            path = cwd / name.replace("__", "/").replace("_DOT_", ".")
            path.parent.mkdir(parents=True, exist_ok=True)
            if data is None:
                path.mkdir(exist_ok=True)
            elif isinstance(data, bytes):
                path.write_bytes(data)
            elif isinstance(data, list):
                path.write_text("".join(json.dumps(item) + "\n" for item in data))
            else:
                path.write_text(data)
    return prep


def copy(src: Path, name: str, truncate: str | None = None, edit: dict | None = None):
    """prep copying src (file or folder) to cwd/name; truncate: a file inside the copy cut to half;
    edit: {file: new text} written inside the copy."""
    def prep(cwd: Path) -> None:
        dest = cwd / name
        (shutil.copytree if src.is_dir() else shutil.copyfile)(src, dest)
        if truncate:
            path = dest / truncate if dest.is_dir() else dest
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])
        for file, text in (edit or {}).items():
            (dest / file).write_text(text)
    return prep


def both(*preps):
    def prep(cwd: Path) -> None:
        for p in preps:
            p(cwd)
    return prep


def unchanged(name: str, src: Path):
    """check: cwd/name still has src's bytes (the input was not overwritten)."""
    digest = hashlib.sha256(src.read_bytes()).hexdigest()

    def check(cwd: Path) -> str | None:
        now = hashlib.sha256((cwd / name).read_bytes()).hexdigest() if (cwd / name).is_file() else None
        return None if now == digest else f"{name} was overwritten or removed"
    return check


def written(name: str):
    """check: cwd/name exists (a missing parent folder is created, as for the default out/...)."""
    def check(cwd: Path) -> str | None:
        return None if (cwd / name).is_file() else f"{name} was not written"
    return check


def client_snippet(target: str, call: str, **client) -> tuple:
    """("@py", code): a genserve.clients call; GenserveError / ValueError -> one line, exit 1."""
    options = "".join(f", {k}={v!r}" for k, v in client.items())
    code = ("import sys\nimport numpy as np\nfrom genserve.clients import Client, GenserveError\n"
            f"try:\n    with Client({target!r}, timeout=20{options}) as c:\n        {call}\n"
            "except (GenserveError, ValueError) as e:\n    sys.exit(f'error: {e}')\n")
    return ("@py", code)


def build_cases(ctx: dict) -> list[Case]:
    root, repo = ctx["root"], ctx["repo"]
    G, R, T, C = ctx["grpc"], ctx["rest"], ctx["tls"], ctx["closed"]
    models, work, certs = root / "models", root / "work", root / "certs"
    cat, wave, corpus = repo / CAT, repo / WAVE, root / "corpus.txt"
    ca, leaf, other = certs / "ca.pem", certs / "server.pem", certs / "other.pem"
    toy = models / "toy"
    cases: list[Case] = []

    def case(name, *argv, **kw):
        cases.append(Case(name, tuple(str(a) for a in argv) if argv[0] not in ("@py", "@script") else argv,
                          **kw))

    # -- root -------------------------------------------------------------------------------------------
    case("root: unknown command", "nosuch")
    case("root: unknown option", "grid", "--nosuch-flag", "1")
    case("root: typo'd subcommand", "export", "vea")
    case("root: control --help", "--help", expect="ok")

    # -- serve ------------------------------------------------------------------------------------------
    srv = dict(started="serving ", timeout=45)
    case("serve: models dir missing", "serve", "--models-dir", "nosuch", "--port", 0, **srv)
    case("serve: models dir is a file", "serve", "--models-dir", corpus, "--port", 0, **srv)
    case("serve: gRPC port busy", "serve", "--models-dir", models, "--port", G.split(":")[1], **srv)
    case("serve: REST port busy", "serve", "--models-dir", models, "--port", 0, "--rest-port",
         R.split(":")[1], **srv)
    case("serve: port out of range", "serve", "--port", 70000)
    case("serve: negative poll seconds", "serve", "--poll-seconds", -1)
    case("serve: zero message size", "serve", "--max-message-mb", 0)
    case("serve: same port for gRPC and REST", "serve", "--models-dir", root / "toy_models", "--port", 18577,
         "--rest-port", 18577, **srv)
    case("serve: unknown host", "serve", "--models-dir", root / "toy_models", "--host", "nosuchhost.invalid",
         "--port", 0, **srv)
    case("serve: ssl config missing", "serve", "--models-dir", root / "toy_models", "--port", 0,
         "--ssl-config-file", "nosuch.config", **srv)
    case("serve: ssl config garbage", "serve", "--models-dir", root / "toy_models", "--port", 0,
         "--ssl-config-file", "ssl.config", prep=files(ssl_DOT_config="this is not a proto {"), **srv)
    case("serve: ssl config with file paths, not PEM contents", "serve", "--models-dir", root / "toy_models",
         "--port", 0, "--ssl-config-file", "ssl.config",
         prep=files(ssl_DOT_config=f'server_key: "{certs / "server.key"}"\nserver_cert: "{leaf}"\n'), **srv)
    case("serve: ssl config is the PEM itself", "serve", "--models-dir", root / "toy_models", "--port", 0,
         "--ssl-config-file", leaf, **srv)
    case("serve: monitoring config missing", "serve", "--models-dir", root / "toy_models", "--port", 0,
         "--monitoring-config-file", "nosuch.config", **srv)
    case("serve: monitoring config garbage", "serve", "--models-dir", root / "toy_models", "--port", 0,
         "--rest-port", 0, "--monitoring-config-file", "mon.config",
         prep=files(mon_DOT_config="prometheus_config { enable: maybe }"), **srv)
    case("serve: models.config garbage", "serve", "--models-dir", "m", "--port", 0,
         prep=copy(root / "toy_models", "m", edit={"models.config": "model_config_list { config { name: "}), **srv)
    case("serve: truncated saved_model.pb", "serve", "--models-dir", "m", "--port", 0,
         prep=copy(root / "toy_models", "m", truncate="toy/1/saved_model.pb"), **srv)
    case("serve: empty version folder only", "serve", "--models-dir", "m", "--port", 0,
         prep=files(m__toy__1=None), **srv)

    # -- models -----------------------------------------------------------------------------------------
    case("models: dir missing", "models", "--models-dir", "nosuch")
    case("models: dir is a file", "models", "--models-dir", corpus)
    case("models: models.config garbage", "models", "--models-dir", "m",
         prep=copy(root / "toy_models", "m", edit={"models.config": "model_config_list { config { name: "}))
    case("models: control", "models", "--models-dir", models, expect="ok")

    # -- wrong targets (generate is the probe; grid/gan-grid/encode/batch below reuse a few) --------------
    gen = ("generate", "--length", 20, "-t", 0.5)
    case("target: nothing listening (retryable)", *gen, "--target", C, "--timeout", 3, retryable=True)
    case("target: unknown host", *gen, "--target", "nosuchhost.invalid:8500")
    case("target: REST port as gRPC target", *gen, "--target", R)
    case("target: plaintext client, TLS server", *gen, "--target", T)
    case("target: --tls against a plaintext server", *gen, "--target", G, "--tls")
    case("target: --ca-cert is the leaf certificate", *gen, "--target", T.replace("127.0.0.1", "localhost"),
         "--ca-cert", leaf)
    case("target: --ca-cert is an unrelated CA", *gen, "--target", T, "--ca-cert", other)
    case("target: --ca-cert missing file", *gen, "--target", T, "--ca-cert", "nosuch.pem")
    case("target: --ca-cert is the private key", *gen, "--target", T, "--ca-cert", certs / "server.key")
    case("target: --ca-cert not a PEM", *gen, "--target", T, "--ca-cert", corpus)
    case("target: --ca-cert empty file", *gen, "--target", T, "--ca-cert", "empty.pem", prep=files(empty_DOT_pem=""))
    case("target: --client-cert without --client-key", *gen, "--target", T, "--ca-cert", ca,
         "--client-cert", leaf)
    case("target: empty", *gen, "--target", "")
    case("target: no port", *gen, "--target", "127.0.0.1")
    case("target: URL instead of host:port", *gen, "--target", f"http://{G}")
    case("target: port out of range", *gen, "--target", "127.0.0.1:99999")
    case("target: TLS control (the right CA)", *gen, "--target", T.replace("127.0.0.1", "localhost"), "--ca-cert", ca,
         expect="ok")
    case("target: grid, nothing listening (retryable)", "grid", "-o", "g.png", "--target", C, "--timeout", 3,
         retryable=True)
    case("target: gan-grid REST port", "gan-grid", "-o", "g.png", "--target", R)
    case("target: encode unknown host", "encode", "--dataset", "synthetic", "--limit", 10,
         "--target", "nosuchhost.invalid:8500")

    # -- generate ---------------------------------------------------------------------------------------
    g = (*gen, "--target", G)
    case("generate: control", *g, expect="ok")
    case("generate: unknown model", *g, "--model", "nosuch")
    case("generate: model of another family (vae)", *g, "--model", "vae")
    case("generate: version not served", *g, "--version", 99)
    case("generate: version 0", *g, "--version", 0)
    case("generate: negative version", *g, "--version", -1)
    case("generate: length 0", "generate", "--target", G, "--length", 0)
    case("generate: negative length", "generate", "--target", G, "--length", -5)
    case("generate: length over the limit", "generate", "--target", G, "--length", 100000)
    case("generate: negative temperature", "generate", "--target", G, "--length", 20, "-t", -1)
    case("generate: NaN temperature", "generate", "--target", G, "--length", 20, "-t", "nan")
    case("generate: samples 0", *g, "--samples", 0)
    case("generate: top-k 0", *g, "--top-k", 0)
    case("generate: empty seed text", *g, "--seed-text", "")
    case("generate: seed text outside the vocabulary", *g, "--seed-text", "ÆØÅ€ ☃")
    case("generate: --replace-unknown of two chars", *g, "--replace-unknown", "ab")
    case("generate: --json in a missing folder", *g, "--json", "nosuch/out.json", expect="ok", check=written("nosuch/out.json"))
    case("generate: --json is a folder", *g, "--json", "d", prep=files(d=None))
    case("generate: --server-side with --top-k", *g, "--server-side", "--top-k", 5)
    case("generate: timeout 0", *g, "--timeout", 0)
    case("generate: negative timeout", *g, "--timeout", -1)
    case("generate: float length", "generate", "--target", G, "--length", "2.5")

    # -- grid (VAE) -------------------------------------------------------------------------------------
    grid = ("grid", "--target", G, "-n", 3)
    case("grid: control", *grid, "-o", "g.png", expect="ok")
    case("grid: flipped range", *grid, "--low", 0.9, "--high", 0.1, "-o", "g.png")
    case("grid: equal low and high", *grid, "--low", 0.5, "--high", 0.5, "-o", "g.png")
    case("grid: quantile 0", *grid, "--low", 0, "-o", "g.png")
    case("grid: quantile 1", *grid, "--high", 1, "-o", "g.png")
    case("grid: quantile above 1", *grid, "--low", 1.5, "--high", 2, "-o", "g.png")
    case("grid: n 0", "grid", "--target", G, "-n", 0, "-o", "g.png")
    case("grid: n 65", "grid", "--target", G, "-n", 65, "-o", "g.png")
    case("grid: scale 0", *grid, "--scale", 0, "-o", "g.png")
    case("grid: text model", *grid, "--model", "text", "-o", "g.png")
    case("grid: gan model", *grid, "--model", "gan", "-o", "g.png")
    case("grid: unknown model", *grid, "--model", "nosuch", "-o", "g.png")
    case("grid: version not served", *grid, "--version", 99, "-o", "g.png")
    case("grid: output in a missing folder", *grid, "-o", "nosuch/g.png", expect="ok", check=written("nosuch/g.png"))
    case("grid: output is a folder", *grid, "-o", "d", prep=files(d=None))
    case("grid: output not a PNG name", *grid, "-o", "g.txt")
    case("grid: output unwritable", *grid, "-o", "/proc/genserve-audit.png")
    case("grid: default output exists", *grid, prep=files(out__vae_grid_DOT_png=b"earlier run"),
         check=lambda cwd: None if (cwd / "out/vae_grid.png").read_bytes() == b"earlier run"
         else "out/vae_grid.png overwritten")

    # -- encode -----------------------------------------------------------------------------------------
    enc = ("encode", "--target", G, "--dataset", "synthetic", "--limit", 20)
    case("encode: control", *enc, "-o", "s.png", expect="ok")
    case("encode: text model", *enc, "--model", "text", "-o", "s.png")
    case("encode: gan model", *enc, "--model", "gan", "-o", "s.png")
    case("encode: unknown dataset", *enc, "--dataset", "nosuch", "-o", "s.png")
    case("encode: limit 0", "encode", "--target", G, "--dataset", "synthetic", "--limit", 0, "-o", "s.png")
    case("encode: batch size 0", *enc, "--batch-size", 0, "-o", "s.png")
    case("encode: --npz in a missing folder", *enc, "--npz", "nosuch/z.npz", "-o", "s.png", expect="ok",
         check=written("nosuch/z.npz"))
    case("encode: default output exists", *enc, prep=files(out__vae_scatter_DOT_png=b"earlier run"),
         check=lambda cwd: None if (cwd / "out/vae_scatter.png").read_bytes() == b"earlier run"
         else "out/vae_scatter.png overwritten")

    # -- stylize ----------------------------------------------------------------------------------------
    sty = ("stylize", "--target", G, "--height", 32, "--iterations", 1, "--evals-per-iteration", 2)
    case("stylize: content missing", *sty, "nosuch.jpg", wave, "-o", "o.png")
    case("stylize: style missing", *sty, cat, "nosuch.jpg", "-o", "o.png")
    case("stylize: content is a folder", *sty, "d", wave, "-o", "o.png", prep=files(d=None))
    case("stylize: content is text", *sty, corpus, wave, "-o", "o.png")
    case("stylize: content empty", *sty, "e.jpg", wave, "-o", "o.png", prep=files(e_DOT_jpg=b""))
    case("stylize: content truncated JPEG", *sty, "t.jpg", wave, "-o", "o.png", prep=copy(cat, "t.jpg", truncate="x"))
    case("stylize: output = content", *sty, "c.jpg", wave, "-o", "c.jpg", prep=copy(cat, "c.jpg"),
         check=unchanged("c.jpg", cat))
    case("stylize: output = content (other spelling)", *sty, "c.jpg", wave, "-o", "./sub/../c.jpg",
         prep=both(copy(cat, "c.jpg"), files(sub=None)), check=unchanged("c.jpg", cat))
    case("stylize: height 0", "stylize", "--target", G, "--height", 0, cat, wave, "-o", "o.png")
    case("stylize: negative height", "stylize", "--target", G, "--height", -10, cat, wave, "-o", "o.png")
    case("stylize: iterations 0", "stylize", "--target", G, "--iterations", 0, cat, wave, "-o", "o.png")
    case("stylize: dream model", *sty, "--model", "dream", cat, wave, "-o", "o.png")
    case("stylize: vae model", *sty, "--model", "vae", cat, wave, "-o", "o.png")
    case("stylize: output in a missing folder", *sty, cat, wave, "-o", "nosuch/o.png", expect="ok",
         check=written("nosuch/o.png"))
    case("stylize: no -o", *sty, cat, wave)
    case("stylize: one image only", *sty, cat, "-o", "o.png")
    case("stylize: interrupted (Ctrl-C)", "stylize", "--target", G, "--height", 64, "--iterations", 50,
         cat, wave, "-o", "o.png", interrupt="px, style layers", timeout=90)

    # -- dream ------------------------------------------------------------------------------------------
    dr = ("dream", "--target", G, "--width", 48, "--octaves", 1, "--iterations", 1)
    case("dream: image missing", *dr, "nosuch.jpg", "-o", "o.png")
    case("dream: image is a folder", *dr, "d", "-o", "o.png", prep=files(d=None))
    case("dream: image is text", *dr, corpus, "-o", "o.png")
    case("dream: style model", *dr, "--model", "style", cat, "-o", "o.png")
    case("dream: octaves 0", "dream", "--target", G, "--width", 48, "--octaves", 0, cat, "-o", "o.png")
    case("dream: scale 0", *dr, "--scale", 0, cat, "-o", "o.png")
    case("dream: negative iterations", "dream", "--target", G, "--width", 48, "--iterations", -1, cat, "-o", "o.png")
    case("dream: width 0", "dream", "--target", G, "--width", 0, cat, "-o", "o.png")
    case("dream: output = input", *dr, "c.jpg", "-o", "c.jpg", prep=copy(cat, "c.jpg"),
         check=unchanged("c.jpg", cat))
    case("dream: version not served", *dr, "--version", 7, cat, "-o", "o.png")

    # -- gan-grid / gan-interpolate -----------------------------------------------------------------------
    case("gan-grid: control", "gan-grid", "--target", G, "-n", 2, "-o", "g.png", expect="ok")
    case("gan-grid: vae model", "gan-grid", "--target", G, "--model", "vae", "-o", "g.png")
    case("gan-grid: n 0", "gan-grid", "--target", G, "-n", 0, "-o", "g.png")
    case("gan-grid: n 65", "gan-grid", "--target", G, "-n", 65, "-o", "g.png")
    case("gan-grid: version not served", "gan-grid", "--target", G, "--version", 99, "-o", "g.png")
    case("gan-grid: output in a missing folder", "gan-grid", "--target", G, "-n", 2, "-o", "nosuch/g.png", expect="ok",
         check=written("nosuch/g.png"))
    case("gan-grid: default output exists", "gan-grid", "--target", G, "-n", 2,
         prep=files(out__gan_grid_DOT_png=b"earlier run"),
         check=lambda cwd: None if (cwd / "out/gan_grid.png").read_bytes() == b"earlier run"
         else "out/gan_grid.png overwritten")
    case("gan-interpolate: steps 1", "gan-interpolate", "--target", G, "--steps", 1, "-o", "s.png")
    case("gan-interpolate: steps 1000", "gan-interpolate", "--target", G, "--steps", 1000, "-o", "s.png")
    case("gan-interpolate: vae model", "gan-interpolate", "--target", G, "--model", "vae", "-o", "s.png")
    case("gan-interpolate: default output exists", "gan-interpolate", "--target", G, "--steps", 3,
         prep=files(out__gan_strip_DOT_png=b"earlier run"),
         check=lambda cwd: None if (cwd / "out/gan_strip.png").read_bytes() == b"earlier run"
         else "out/gan_strip.png overwritten")

    # -- playground -------------------------------------------------------------------------------------
    pg = dict(started="playground on ", timeout=40)
    case("playground: port 0", "playground", "--target", G, "--port", 0)
    case("playground: port busy", "playground", "--target", G, "--port", G.split(":")[1], "--digits", "none",
         **pg)
    case("playground: unknown digits", "playground", "--target", G, "--digits", "nosuch")
    case("playground: unknown model names", "playground", "--target", G, "--port", 18591, "--models", "nosuch",
         "--digits", "none", **pg)
    case("playground: unknown host", "playground", "--target", "nosuchhost.invalid:8500", "--port", 18592,
         "--digits", "none", **pg)

    # -- train ------------------------------------------------------------------------------------------
    tt = ("train", "text", "--epochs", 1, "--maxlen", 10, "--units", 8, "--quiet")
    case("train text: corpus missing", *tt, "--corpus", "nosuch.txt", "--workdir", "w")
    case("train text: corpus is a folder", *tt, "--corpus", "d", "--workdir", "w", prep=files(d=None))
    case("train text: corpus empty", *tt, "--corpus", "e.txt", "--workdir", "w", prep=files(e_DOT_txt=""))
    case("train text: corpus is binary", *tt, "--corpus", cat, "--workdir", "w")
    case("train text: corpus shorter than maxlen", *tt, "--corpus", "s.txt", "--workdir", "w",
         prep=files(s_DOT_txt="abc"))
    case("train text: corpus with BOM", *tt, "--corpus", "b.txt", "--workdir", "w", "--max-chars", 400,
         prep=files(b_DOT_txt="\ufeff" + "hello world. " * 40), expect="ok")
    case("train text: maxlen 0", "train", "text", "--maxlen", 0, "--corpus", corpus, "--workdir", "w")
    case("train text: unknown preset", *tt, "--preset", "nosuch", "--corpus", corpus, "--workdir", "w")
    case("train text: unknown targets", *tt, "--targets", "nosuch", "--corpus", corpus, "--workdir", "w")
    case("train text: unknown optimizer", *tt, "--optimizer", "sgdd", "--corpus", corpus, "--workdir", "w")
    case("train text: unknown schedule", *tt, "--schedule", "nosuch", "--corpus", corpus, "--workdir", "w")
    case("train text: unknown encoding", *tt, "--encoding", "nosuch", "--corpus", corpus, "--workdir", "w")
    case("train text: dropout 1.5", *tt, "--dropout", 1.5, "--corpus", corpus, "--workdir", "w")
    case("train text: --resume with nothing to resume", *tt, "--resume", "--corpus", corpus, "--workdir", "w")
    case("train text: workdir is a file", *tt, "--corpus", corpus, "--workdir", corpus)
    case("train text: unknown online corpus", *tt, "--corpus", "shakespear", "--workdir", "w")
    case("train text: retrain over a finished run without --resume", *tt, "--corpus", corpus,
         "--workdir", "w", prep=copy(work / "text", "w"), check=unchanged("w/best.keras", work / "text/best.keras"))
    case("train text: interrupted (Ctrl-C)", "train", "text", "--epochs", 500, "--maxlen", 10, "--units", 8,
         "--corpus", corpus, "--workdir", "w", interrupt="(best, saved)", timeout=90)
    case("train vae: unknown dataset", "train", "vae", "--dataset", "nosuch", "--workdir", "w")
    case("train vae: epochs 0", "train", "vae", "--epochs", 0, "--workdir", "w")
    case("train vae: --resume with nothing to resume", "train", "vae", "--dataset", "synthetic", "--epochs", 1,
         "--resume", "--workdir", "w", "--quiet")
    case("train vae: workdir is a file", "train", "vae", "--dataset", "synthetic", "--epochs", 1,
         "--workdir", corpus, "--quiet")
    case("train vae: --resume a truncated checkpoint", "train", "vae", "--dataset", "synthetic", "--epochs", 2,
         "--resume", "--workdir", "w", "--quiet", prep=copy(work / "vae", "w", truncate="last.weights.h5"))
    case("train vae: --resume a hand-broken config.json", "train", "vae", "--dataset", "synthetic",
         "--epochs", 2, "--resume", "--workdir", "w", "--quiet",
         prep=copy(work / "vae", "w", edit={"config.json": '{"latent_dim": 2,'}))
    case("train gan: unknown preset", "train", "gan", "--preset", "nosuch", "--workdir", "w")
    case("train gan: negative learning rate", "train", "gan", "--dataset", "synthetic", "--epochs", 1,
         "--learning-rate", -1, "--workdir", "w", "--quiet")
    case("train gan: label noise 2", "train", "gan", "--dataset", "synthetic", "--epochs", 1,
         "--label-noise", 2, "--workdir", "w", "--quiet")
    case("train gan: --resume a truncated checkpoint", "train", "gan", "--dataset", "synthetic", "--epochs", 2,
         "--resume", "--workdir", "w", "--quiet", prep=copy(work / "gan", "w", truncate="ckpt-0001.weights.h5"))
    case("train gan: --resume with nothing to resume", "train", "gan", "--dataset", "synthetic", "--epochs", 1,
         "--resume", "--workdir", "w", "--quiet")

    # -- export -----------------------------------------------------------------------------------------
    case("export toy: models dir is a file", "export", "toy", "--models-dir", corpus)
    case("export toy: version 0", "export", "toy", "--models-dir", "m", "--version", 0)
    case("export toy: version exists", "export", "toy", "--models-dir", "m", "--version", 1,
         prep=copy(root / "toy_models", "m"))
    case("export toy: NaN weight", "export", "toy", "--models-dir", "m", "--weight", "nan")
    case("export text: workdir missing", "export", "text", "--workdir", "nosuch", "--models-dir", "m")
    case("export text: workdir empty", "export", "text", "--workdir", "w", "--models-dir", "m", prep=files(w=None))
    case("export text: workdir of a VAE", "export", "text", "--workdir", work / "vae", "--models-dir", "m")
    case("export text: name with a slash", "export", "text", "--workdir", work / "text", "--models-dir", "m",
         "--name", "a/b")
    case("export text: name ..", "export", "text", "--workdir", work / "text", "--models-dir", "m",
         "--name", "..")
    case("export text: truncated best.keras", "export", "text", "--workdir", "w", "--models-dir", "m",
         prep=copy(work / "text", "w", truncate="best.keras"))
    case("export text: vocabulary.json empty", "export", "text", "--workdir", "w", "--models-dir", "m",
         prep=copy(work / "text", "w", edit={"vocabulary.json": ""}))
    case("export vae: truncated decoder weights", "export", "vae", "--workdir", "w", "--models-dir", "m",
         prep=copy(work / "vae", "w", truncate="best_decoder.weights.h5"))
    case("export vae: config.json not JSON", "export", "vae", "--workdir", "w", "--models-dir", "m",
         prep=copy(work / "vae", "w", edit={"config.json": "{"}))
    case("export vae: unknown --which", "export", "vae", "--workdir", work / "vae", "--which", "first",
         "--models-dir", "m")
    case("export vae: workdir of a GAN", "export", "vae", "--workdir", work / "gan", "--models-dir", "m")
    case("export gan: workdir missing", "export", "gan", "--workdir", "nosuch", "--models-dir", "m")
    case("export gan: truncated checkpoint", "export", "gan", "--workdir", "w", "--models-dir", "m",
         prep=copy(work / "gan", "w", truncate="ckpt-0001.weights.h5"))
    case("export gan: empty checkpoint file", "export", "gan", "--workdir", "w", "--models-dir",
         "m", prep=copy(work / "gan", "w", edit={"ckpt-0001.weights.h5": ""}))
    case("export style: unknown backbone", "export", "style", "--backbone", "vgg99", "--models-dir", "m")
    case("export style: unknown content layer", "export", "style", "--backbone", "random-small",
         "--content-layer", "block9_conv9", "--models-dir", "m")
    case("export style: negative style weight", "export", "style", "--backbone", "random-small",
         "--style-weight", -1, "--models-dir", "m")
    case("export style: unknown style norm", "export", "style", "--style-norm", "batch", "--models-dir", "m")
    case("export dream: unknown layer", "export", "dream", "--backbone", "random-small", "--layer", "nosuch=1",
         "--models-dir", "m")
    case("export dream: layer without coefficient", "export", "dream", "--backbone", "random-small",
         "--layer", "mixed4", "--models-dir", "m")
    case("export dream: negative border", "export", "dream", "--border", -1, "--models-dir", "m")

    # -- eval / plot ------------------------------------------------------------------------------------
    case("eval vae: workdir missing", "eval", "vae", "--workdir", "nosuch")
    case("eval vae: workdir of a GAN", "eval", "vae", "--workdir", work / "gan")
    case("eval vae: --json in a missing folder", "eval", "vae", "--workdir", work / "vae", "--limit", 8,
         "--json", "nosuch/e.json", expect="ok", check=written("nosuch/e.json"), timeout=120)
    case("eval gan: workdir missing", "eval", "gan", "--workdir", "nosuch")
    case("eval gan: samples 1", "eval", "gan", "--workdir", work / "gan", "--samples", 1)
    case("plot temperatures: output in a missing folder", "plot", "temperatures", "--out", "nosuch/t.png", expect="ok",
         check=written("nosuch/t.png"))
    case("plot temperatures: output is a folder", "plot", "temperatures", "--out", "d", prep=files(d=None))
    case("plot temperatures: default output exists", "plot", "temperatures",
         prep=files(out__temperatures_DOT_png=b"earlier run"),
         check=lambda cwd: None if (cwd / "out/temperatures.png").read_bytes() == b"earlier run"
         else "out/temperatures.png overwritten")

    # -- batch ------------------------------------------------------------------------------------------
    br = ("batch", "run", "job.jsonl", "-o", "out")
    dry = (*br, "--dry-run")
    case("batch: job file missing", *dry)
    case("batch: job file is a folder", *dry, prep=files(job_DOT_jsonl=None))
    case("batch: job file empty", *dry, prep=files(job_DOT_jsonl=""))
    case("batch: job file with BOM (control)", *dry, expect="ok",
         prep=files(job_DOT_jsonl="\ufeff" + json.dumps(TEXT_ITEM) + "\n"))
    case("batch: job file in UTF-16", *dry,
         prep=files(job_DOT_jsonl=(json.dumps(TEXT_ITEM) + "\n").encode("utf-16")))
    case("batch: job file not JSON", *dry, prep=files(job_DOT_jsonl="id=a kind=text\n"))
    case("batch: JSON array instead of JSON lines", *dry, prep=files(job_DOT_jsonl=json.dumps([TEXT_ITEM, TEXT_ITEM])))
    case("batch: pretty-printed JSON object", *dry, prep=files(job_DOT_jsonl=json.dumps(TEXT_ITEM, indent=2)))
    case("batch: unknown kind", *dry, prep=files(job_DOT_jsonl=[{"id": "a", "kind": "poem"}]))
    case("batch: missing id", *dry, prep=files(job_DOT_jsonl=[{"kind": "text", "seed_text": "to be"}]))
    case("batch: duplicate ids", *dry, prep=files(job_DOT_jsonl=[TEXT_ITEM, TEXT_ITEM]))
    case("batch: model is a path", *dry, prep=files(job_DOT_jsonl=[{**TEXT_ITEM, "model": "../x/text"}]))
    case("batch: text length 0", *dry, prep=files(job_DOT_jsonl=[{**TEXT_ITEM, "length": 0}]))
    case("batch: text length a string", *dry, prep=files(job_DOT_jsonl=[{**TEXT_ITEM, "length": "20"}]))
    case("batch: grid n 100", *dry, prep=files(job_DOT_jsonl=[{"id": "g", "kind": "grid", "n": 100}]))
    case("batch: grid flipped range", *dry,
         prep=files(job_DOT_jsonl=[{"id": "g", "kind": "grid", "n": 3, "range": [0.9, 0.1]}]))
    case("batch: decode without points", *dry, prep=files(job_DOT_jsonl=[{"id": "d", "kind": "decode"}]))
    case("batch: unknown field (typo)", *dry, prep=files(job_DOT_jsonl=[{**TEXT_ITEM, "lenght": 20}]))
    case("batch: stylize content missing", *br, "--target", G,
         prep=files(job_DOT_jsonl=[{"id": "s", "kind": "stylize", "content": "nosuch.jpg", "style": str(wave),
                                    "height": 32, "iterations": 1}]))
    case("batch: huge single-line job file", *dry, prep=files(job_DOT_jsonl="x" * 30_000_000))
    case("batch: --out is the job file", "batch", "run", "job.jsonl", "-o", "job.jsonl", "--dry-run",
         prep=files(job_DOT_jsonl=[TEXT_ITEM]))
    case("batch: --out is an existing file", *br, "--target", G, prep=files(job_DOT_jsonl=[TEXT_ITEM], out="x"))
    case("batch: unknown model on the server", *br, "--target", G,
         prep=files(job_DOT_jsonl=[{**TEXT_ITEM, "model": "nosuch"}]))
    case("batch: nothing listening (retryable)", *br, "--target", C, "--timeout", 3, retryable=True,
         prep=files(job_DOT_jsonl=[{**TEXT_ITEM, "id": f"a{i}"} for i in range(5)]))
    case("batch: REST port as target", *br, "--target", R, prep=files(job_DOT_jsonl=[TEXT_ITEM]))
    case("batch: unknown host", *br, "--target", "nosuchhost.invalid:8500", prep=files(job_DOT_jsonl=[TEXT_ITEM]))
    case("batch: --models-dir missing", *br, "--models-dir", "nosuch", prep=files(job_DOT_jsonl=[TEXT_ITEM]))
    case("batch: --engine ray without a cluster", *br, "--target", G, "--engine", "ray", "--address", "auto",
         prep=files(job_DOT_jsonl=[TEXT_ITEM]))
    case("batch: concurrency 0", *br, "--target", G, "--concurrency", 0, prep=files(job_DOT_jsonl=[TEXT_ITEM]))
    case("batch: max rows 0", *br, "--target", G, "--max-rows", 0, prep=files(job_DOT_jsonl=[TEXT_ITEM]))
    case("batch: --target and --models-dir", *br, "--target", G, "--models-dir", models,
         prep=files(job_DOT_jsonl=[TEXT_ITEM]))

    # -- deploy -----------------------------------------------------------------------------------------
    dk = ("deploy", "kubernetes", "--models-dir", models)
    case("deploy: models dir missing", "deploy", "kubernetes", "--models-dir", "nosuch", "-o", "k")
    case("deploy: --out has files, no --force", *dk, "-o", "k", prep=files(k__kustomization_DOT_yaml="old"),
         check=lambda cwd: None if (cwd / "k/kustomization.yaml").read_text() == "old" else "k/ overwritten")
    case("deploy: unknown runtime", *dk, "-o", "k", "--runtime", "triton")
    case("deploy: name not a DNS label", *dk, "-o", "k", "--name", "Bad_Name")
    case("deploy: max replicas below replicas", *dk, "-o", "k", "--replicas", 5, "--max-replicas", 2)
    case("deploy: --model-base-uri with the genserve runtime", *dk, "-o", "k", "--runtime", "genserve",
         "--model-base-uri", "gs://bucket/models")
    case("deploy: --storage-uri without --kserve", *dk, "-o", "k", "--storage-uri", "gs://bucket/models")
    case("deploy: --out is the models dir", "deploy", "kubernetes", "--models-dir", "m", "-o", "m", "--force",
         prep=copy(root / "toy_models", "m"))
    case("deploy: --out is a file", *dk, "-o", "k", prep=files(k="x"))
    case("deploy: namespace not a DNS label", *dk, "-o", "k", "--namespace", "My Space")

    # -- example scripts and the Python client ------------------------------------------------------------
    stub = repo / "examples" / "tf_serving_stub_client.py"
    ex = dict(timeout=90)  # the script imports TensorFlow
    case("example stub client: no argument", "@script", stub, **ex)
    case("example stub client: nothing listening", "@script", stub, C, retryable=True, **ex)
    case("example stub client: REST port", "@script", stub, R, **ex)
    case("example stub client: TLS server", "@script", stub, T, **ex)
    case("example stub client: control", "@script", stub, G, expect="ok", **ex)
    x = "c.predict('toy', {'x': np.zeros((2, 1), np.float32)}, signature='affine')"
    case("python Client: unknown host", *client_snippet("nosuchhost.invalid:8500", x))
    case("python Client: REST port", *client_snippet(R, x))
    case("python Client: plaintext to TLS", *client_snippet(T, x))
    case("python Client: unknown model", *client_snippet(G, x.replace("'toy'", "'nosuch'")))
    case("python Client: wrong input key", *client_snippet(G, x.replace("'x'", "'y'")))
    case("python Client: wrong dtype", *client_snippet(G, x.replace("np.float32", "np.int64")))
    case("python Client: wrong shape", *client_snippet(G, x.replace("(2, 1)", "(2, 3)")))
    case("python Client: unknown signature", *client_snippet(G, x.replace("'affine'", "'nosuch'")))
    case("python Client: version not served", *client_snippet(G, x[:-1] + ", version=99)"))
    case("python Client: leaf as CA", *client_snippet(T.replace("127.0.0.1", "localhost"), x,
                                                      root_certificates=str(leaf)))
    return cases
