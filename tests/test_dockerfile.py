"""Dockerfile.serving without a Docker engine: it parses, its base image is pinned, its flags are spelled
as TF Serving spells them, what it copies is what the export writer produces, and the batching and
monitoring files parse as the text protos TF Serving reads.

    .venv/bin/python -m pytest tests/test_dockerfile.py -q
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from google.protobuf import text_format

from genserve.deploy.args import TF_SERVING_FLAGS, tf_serving_version

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile.serving"

# Every flag of tensorflow_model_server, as tensorflow_serving/model_servers/main.cc defines them (one list).
KNOWN_FLAGS = TF_SERVING_FLAGS
BOOL_FLAGS = {"enable_batching", "enable_model_warmup", "rest_api_enable_cors_support",
              "flush_filesystem_caches", "use_alts_credentials", "enable_per_model_batching_parameters",
              "enable_grpc_healthcheck_service"}
INT_FLAGS = {"port", "rest_api_port", "file_system_poll_wait_seconds",
             "model_config_file_poll_wait_seconds", "grpc_max_threads", "num_load_threads"}


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuation lines joined."""
    instructions, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        word, _, rest = current.strip().partition(" ")
        instructions.append((word.upper(), rest.strip()))
        current = ""
    assert not current, "dangling line continuation"
    return instructions


@pytest.fixture(scope="module")
def instructions():
    return parse_dockerfile(DOCKERFILE.read_text())


def _all(instructions, name):
    return [args for word, args in instructions if word == name]


def _args(instructions) -> dict[str, str]:
    return dict(a.split("=", 1) for a in _all(instructions, "ARG") if "=" in a)


def _copies(instructions) -> list[tuple[str, str]]:
    """(source, destination) of every COPY, with build-arg defaults substituted."""
    defaults = _args(instructions)
    pairs = []
    for args in _all(instructions, "COPY"):
        parts = [p for p in shlex.split(args) if not p.startswith("--")]
        parts = [re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], p) for p in parts]
        *sources, dest = parts
        pairs.extend((src, dest) for src in sources)
    return pairs


def _flags(instructions) -> dict[str, str]:
    (entrypoint,) = _all(instructions, "ENTRYPOINT")
    argv = json.loads(entrypoint)  # exec form: a JSON array
    assert argv[0] == "tensorflow_model_server"
    flags = {}
    for arg in argv[1:] + json.loads((_all(instructions, "CMD") or ["[]"])[0]):
        match = re.fullmatch(r"--([a-z_]+)=(.+)", arg)
        assert match, f"{arg!r}: flags are written --name=value"
        flags[match.group(1)] = match.group(2)
    return flags


def test_base_image_is_a_pinned_tf_serving_gpu_release(instructions):
    """The release is named once, in genserve/deploy/TF_SERVING_VERSION (also read by `make check-serving`
    and by the KServe manifests);
    the Dockerfile's ARG default must be the same."""
    (base,) = _all(instructions, "FROM")
    assert base == "tensorflow/serving:${TF_SERVING_VERSION}-gpu", base
    pinned = tf_serving_version()
    assert re.fullmatch(r"2\.\d+\.\d+", pinned), pinned
    args = [a for a in _all(instructions, "ARG") if a.startswith("TF_SERVING_VERSION=")]
    assert args == [f"TF_SERVING_VERSION={pinned}"], args
    makefile = (ROOT / "Makefile").read_text()
    assert "genserve/deploy/TF_SERVING_VERSION" in makefile and "check-serving:" in makefile


def test_flags_are_tf_serving_flags(instructions):
    flags = _flags(instructions)
    unknown = set(flags) - KNOWN_FLAGS
    assert not unknown, f"not tensorflow_model_server flags: {sorted(unknown)}"
    assert flags["port"] == "8500" and flags["rest_api_port"] == "8501"
    assert flags["model_config_file"] == "/models/models.config"
    assert flags["enable_model_warmup"] == "true" and flags["enable_batching"] == "true"
    for name in ("batching_parameters_file", "monitoring_config_file", "file_system_poll_wait_seconds"):
        assert name in flags
    for name in BOOL_FLAGS & set(flags):
        assert flags[name] in ("true", "false"), name
    for name in INT_FLAGS & set(flags):
        assert flags[name].isdigit(), name
    assert set(_all(instructions, "EXPOSE")[0].split()) == {"8500", "8501"}


def test_every_file_flag_points_at_a_copied_file(instructions):
    copies = _copies(instructions)
    for name, value in _flags(instructions).items():
        if name.endswith("_file"):
            assert any(value == dest or value.startswith(dest.rstrip("/") + "/") for _, dest in copies), \
                f"--{name}={value} is not under any COPY destination"
    for src, _ in copies:
        if not src.startswith(_args(instructions)["MODELS_DIR"]):
            assert (ROOT / src).is_file(), f"COPY source {src} missing from the repository"


def test_copied_models_dir_is_what_the_writer_produces(instructions, toy_models_dir):
    """Map the image's /models paths back onto an exported directory and check they all exist."""
    from genserve.repository import read_models_config

    models_dir_arg = _args(instructions)["MODELS_DIR"]
    (dest,) = [d for s, d in _copies(instructions) if s.rstrip("/") == models_dir_arg.rstrip("/")]
    dest = dest.rstrip("/")

    def local(image_path: str) -> Path:  # /models/... inside the image -> toy_models_dir/...
        assert image_path.startswith(dest + "/"), image_path
        return toy_models_dir / image_path[len(dest) + 1:]

    assert local(_flags(instructions)["model_config_file"]).is_file()
    entries = read_models_config(toy_models_dir)
    assert entries
    for entry in entries:
        model = local(entry.base_path)
        versions = [p for p in model.iterdir() if p.name.isdigit()]
        assert versions, entry
        for version in versions:
            assert (version / "saved_model.pb").is_file()
            assert (version / "variables" / "variables.index").is_file()
            assert (version / "assets.extra" / "tf_serving_warmup_requests").is_file()


def _text_proto_classes():
    """BatchingParameters and MonitoringConfig as the server reads them: messages with the field
    numbers of TF Serving's .proto files (session_bundle_config.proto, monitoring_config.proto; the
    tensorflow-serving-api wheel ships neither)."""
    from genserve.serving.batching import batching_parameters_class
    from genserve.serving.metrics import monitoring_config_class

    return batching_parameters_class(), monitoring_config_class()


def _copied_source(instructions, flag: str) -> Path:
    value = _flags(instructions)[flag]
    (src,) = [s for s, d in _copies(instructions) if d == value]
    return ROOT / src


def test_batching_parameters_parse(instructions):
    BatchingParameters, _ = _text_proto_classes()
    params = text_format.Parse(_copied_source(instructions, "batching_parameters_file").read_text(),
                               BatchingParameters())
    assert params.max_batch_size.value >= 1 and params.num_batch_threads.value >= 1
    assert 0 < params.batch_timeout_micros.value <= 100_000
    if params.allowed_batch_sizes:
        assert list(params.allowed_batch_sizes) == sorted(params.allowed_batch_sizes)
        assert params.allowed_batch_sizes[-1] == params.max_batch_size.value
    with pytest.raises(text_format.ParseError):  # the parser is strict: a typo would be caught
        text_format.Parse("max_batch_sise { value: 1 }", BatchingParameters())


def test_monitoring_config_parses(instructions):
    _, MonitoringConfig = _text_proto_classes()
    config = text_format.Parse(_copied_source(instructions, "monitoring_config_file").read_text(),
                               MonitoringConfig())
    assert config.prometheus_config.enable
    assert config.prometheus_config.path.startswith("/")


def test_dockerignore_keeps_what_the_image_copies(instructions):
    ignore = (ROOT / "Dockerfile.serving.dockerignore").read_text().split()
    patterns = [p for p in ignore if not p.startswith("#")]
    for src, _ in _copies(instructions):
        top = src.split("/")[0]
        assert top not in patterns and "*" not in patterns, f"{src} would be left out of the context"


def test_batching_is_per_model_and_the_toy_export_asks_for_it(instructions, toy_models_dir):
    """TF Serving fails a batch whose requests differ past dim 0, so only fixed-shape models batch:
    the image reads each export's own batching_params.pbtxt, and the toy export writes one that parses
    and holds the largest single request genserve sends (a 64 x 64 latent grid)."""
    from genserve.clients.vae import MAX_GRID
    from genserve.export.writer import BATCHING_PARAMS_FILE

    assert _flags(instructions)["enable_per_model_batching_parameters"] == "true"
    BatchingParameters, _ = _text_proto_classes()
    versions = [p for p in (toy_models_dir / "toy").iterdir() if p.name.isdigit()]
    assert versions
    for version_dir in versions:
        params = text_format.Parse((version_dir / BATCHING_PARAMS_FILE).read_text(), BatchingParameters())
        assert params.max_batch_size.value >= MAX_GRID * MAX_GRID
        assert 0 < params.batch_timeout_micros.value <= 100_000
