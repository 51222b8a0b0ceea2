"""CLI commands for serving: `genserve serve`, `genserve models`, `genserve export toy`.

    genserve export toy --models-dir models && genserve serve --models-dir models --port 8500

TensorFlow is imported inside the command functions only (`genserve --help` never imports it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from genserve.cli.common import check_directory, check_number, fail
from genserve.cli.options import ExportVersionOpt
from genserve.serving.options import (
    CLI_ENABLE_BATCHING, CLI_PORT, CLI_REST_WORKERS, DEFAULTS, MAX_MESSAGE_MB, MAX_REST_WORKERS, MIB,
)

D = DEFAULTS  # every default below is the server's own (serving/options.py)


ModelsDir = Annotated[Path, typer.Option("--models-dir", help="Models directory (<name>/<version>/ and "
                                         "models.config), as written by `genserve export`.")]


def _read_config(path: Path | None, option: str, module: str, reader: str):
    """None without `path`, else `module.reader(path)` (a TF Serving config file) with any failure
    as one `error: OPTION: ...` line."""
    if path is None:
        return None
    import importlib

    try:
        return getattr(importlib.import_module(module), reader)(path)
    except OSError as e:
        raise fail(f"{option}: cannot read {path}: {e.strerror or e}") from None
    except ValueError as e:  # TlsConfigError is one too
        raise fail(f"{option}: {e}") from None


def _check_port(host: str, port: int, option: str) -> None:
    """One `error:` line at once when `host:port` cannot be listened on: checked by binding it (as the
    server will: SO_REUSEADDR, no SO_REUSEPORT) BEFORE TensorFlow is imported and any model loads, which
    takes seconds. The server binds again for real; a port taken between the two is refused by that."""
    import errno
    import socket

    if not port:
        return
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError):
        return  # an unknown host: the server's own bind says so
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is free
            try:
                probe.bind(address)
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    raise fail(f"{option} {port}: port {port} on {host} is already in use (another server?); "
                               f"stop it or choose another {option}") from None
                if e.errno == errno.EACCES:
                    raise fail(f"{option} {port}: permission denied (ports below 1024 need privileges); "
                               f"choose another {option}") from None


def serve(
    models_dir: ModelsDir = Path("models"),
    port: Annotated[int, typer.Option(help="gRPC port (0 = any free port).", min=0, max=65535)] = CLI_PORT,
    host: Annotated[str, typer.Option(help="Interface to bind; 0.0.0.0 opens it to the network.")]
    = D.host,
    poll_seconds: Annotated[float, typer.Option(help="Seconds between polls for new versions "
                                                "(like TF Serving's --file_system_poll_wait_seconds); "
                                                "0 = never.", min=0)] = D.poll_seconds,
    max_message_mb: Annotated[int, typer.Option(help="gRPC message size limit, MiB.", min=1)] = D.max_message_bytes // MIB,
    model_config_file_poll_seconds: Annotated[
        float | None, typer.Option(help="Seconds between re-reads of models.config (like TF Serving's "
                                        "--model_config_file_poll_wait_seconds; 0 = read once). Default: "
                                        "at every version poll. A ReloadConfig request's config holds "
                                        "until the file changes.", min=0)] = D.config_poll_seconds,
    enable_batching: Annotated[bool, typer.Option(
        "--enable-batching/--disable-batching",
        help="Batch the model versions whose folder has batching_params.pbtxt, as TF Serving does with "
             "--enable_batching --enable_per_model_batching_parameters (Dockerfile.serving); models "
             "without the file are never batched.")] = CLI_ENABLE_BATCHING,
    rest_port: Annotated[int, typer.Option(help="Port of TF Serving's REST API (like --rest_api_port; "
                                           "0 = no REST server, TF Serving's default).", min=0,
                                           max=65535)] = 0,
    allow_external_base_paths: Annotated[bool, typer.Option(
        help="Serve models.config base paths outside the models directory (off: refused, so a config "
             "cannot point the server at any SavedModel on the machine).")] = D.allow_external_base_paths,
    max_request_elements: Annotated[int, typer.Option(
        help="Most tensor elements over all inputs of one request (RESOURCE_EXHAUSTED beyond).",
        min=1)] = D.limits.max_request_elements,
    max_output_mb: Annotated[int, typer.Option(
        help="Output budget of one request, MiB, for signatures whose output size per row is fixed "
             "(bounds their batch size; RESOURCE_EXHAUSTED beyond).", min=1, max=1 << 20)]
    = D.limits.max_output_bytes // MIB,
    max_concurrent: Annotated[int, typer.Option(
        help="Executions running at once per model.", min=1, max=1024)] = D.max_concurrent,
    max_queue: Annotated[int, typer.Option(
        help="Requests waiting per model beyond --max-concurrent (UNAVAILABLE beyond).", min=0,
        max=100_000)] = D.max_queue,
    max_request_seconds: Annotated[float, typer.Option(
        help="Session.run timeout of a request that carries no deadline (0 = none); a request's own "
             "deadline is always passed into the run, as TF Serving does.", min=0)] = D.max_request_seconds,
    tensorflow_intra_op_parallelism: Annotated[int, typer.Option(
        help="Threads TensorFlow uses inside one op (TF Serving's --tensorflow_intra_op_parallelism; "
             "0 = TF picks). 1 shortens small models' requests, e.g. the text step by ~10 % "
             "(docs/serving.md, 'Latency, profiled').", min=0, max=1024)] = 0,
    tensorflow_inter_op_parallelism: Annotated[int, typer.Option(
        help="Threads TensorFlow runs independent ops on (TF Serving's "
             "--tensorflow_inter_op_parallelism; 0 = TF picks).", min=0, max=1024)] = 0,
    drain_seconds: Annotated[float, typer.Option(
        help="On SIGTERM/Ctrl-C, new requests are refused at once (UNAVAILABLE / 503) and requests in "
             "flight on both ports get this many seconds, together, before the process exits.",
        min=0)] = D.drain_seconds,
    idle_trim_seconds: Annotated[float, typer.Option(
        help="After this many seconds with no Predict begun or in flight, hand the memory the requests "
             "freed back to the OS, once per busy period (glibc's malloc_trim; a genserve addition; "
             "0 = never).", min=0)] = D.idle_trim_seconds,
    monitoring_config_file: Annotated[Path | None, typer.Option(
        help="A MonitoringConfig text file (like TF Serving's --monitoring_config_file, e.g. "
             "genserve/deploy/monitoring.config) whose prometheus_config enables Prometheus metrics on "
             "the REST port.")] = None,
    ssl_config_file: Annotated[Path | None, typer.Option(
        help="Serve gRPC over TLS: an SSLConfig text file (like TF Serving's --ssl_config_file) with "
             "server_key, server_cert (PEM contents inline), optional custom_ca and client_verify. The "
             "REST port then serves HTTPS with the same certificate (a genserve addition: TF Serving's "
             "REST port stays plaintext).")] = None,
    enable_grpc_healthcheck_service: Annotated[bool, typer.Option(
        "--enable-grpc-healthcheck-service",
        help="Serve grpc.health.v1.Health (TF Serving's --enable_grpc_healthcheck_service): SERVING only "
             "while every configured model has an AVAILABLE version and no drain has started (stricter "
             "than TF Serving; GET /v1/health/ready on the REST port says the same).")]
    = D.enable_grpc_healthcheck_service,
    rest_workers: Annotated[int, typer.Option(
        help="Worker processes that serve the REST port (HTTP, TLS, response JSON) beside the model "
             "process, which still routes, admits and runs every request; 0 = REST in the model "
             "process. Each costs ~45-50 MB (no TensorFlow); needs --rest-port (docs/serving.md).", min=0,
        max=MAX_REST_WORKERS)] = CLI_REST_WORKERS,
    rest_api_enable_cors_support: Annotated[bool, typer.Option(
        "--rest-api-enable-cors-support",
        help="Add TF Serving's CORS headers to every /v1/ REST answer (its "
             "--rest_api_enable_cors_support).")] = D.enable_cors_support,
) -> None:
    """Serve every model in a models directory over TF Serving's gRPC API (Predict, metadata, status)."""
    check_directory(models_dir, "--models-dir")
    if max_message_mb > MAX_MESSAGE_MB:
        raise fail(f"--max-message-mb must be at most {MAX_MESSAGE_MB} (gRPC's limit is a 32-bit "
                   f"byte count), got {max_message_mb}")
    check_number(poll_seconds, "--poll-seconds", 0.0)
    check_number(max_request_seconds, "--max-request-seconds", 0.0)
    check_number(drain_seconds, "--drain-seconds", 0.0)
    if model_config_file_poll_seconds is not None:
        check_number(model_config_file_poll_seconds, "--model-config-file-poll-seconds", 0.0)
    if rest_port and rest_port == port:
        raise fail(f"--rest-port must differ from --port (both {port})")
    prometheus_path = _read_config(monitoring_config_file, "--monitoring-config-file",
                                   "genserve.serving.metrics", "read_monitoring_config")
    if prometheus_path is not None and not rest_port:
        raise fail("--monitoring-config-file enables Prometheus metrics, which are served on the REST "
                   "port: set --rest-port (e.g. 8501)")
    if rest_workers and not rest_port:
        raise fail("--rest-workers serves the REST port from worker processes: set --rest-port (e.g. 8501)")
    ssl_config = _read_config(ssl_config_file, "--ssl-config-file", "genserve.serving.tls", "read_ssl_config")
    from genserve.repository import ConfigError, discover, list_versions

    try:
        found = discover(models_dir, allow_external=allow_external_base_paths)
    except (FileNotFoundError, ConfigError, OSError) as e:
        raise fail(str(e))
    if not any(list_versions(local) for _, local in found.values()):
        raise fail(f"no model versions under {models_dir} (expected <name>/<version>/saved_model.pb); "
                   "export one first, e.g. `genserve export toy --models-dir "
                   f"{models_dir}`")
    _check_port(host, port, "--port")  # before TensorFlow is imported and the models load (seconds)
    _check_port(host, rest_port, "--rest-port")

    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from genserve.serving.tf_session import session_config
    from genserve.serving.options import Limits
    from genserve.serving.server import ModelServer

    server = ModelServer(models_dir, DEFAULTS.replace(
        host=host, port=port, poll_seconds=poll_seconds, max_message_bytes=max_message_mb * MIB,
        allow_external_base_paths=allow_external_base_paths,
        limits=Limits(max_request_elements, max_output_mb * MIB), max_concurrent=max_concurrent,
        max_queue=max_queue, max_request_seconds=max_request_seconds, enable_batching=enable_batching,
        session_config=session_config(tensorflow_intra_op_parallelism, tensorflow_inter_op_parallelism),
        config_poll_seconds=model_config_file_poll_seconds, rest_port=rest_port or None,
        prometheus_path=prometheus_path, ssl_config=ssl_config, drain_seconds=drain_seconds,
        enable_grpc_healthcheck_service=enable_grpc_healthcheck_service,
        enable_cors_support=rest_api_enable_cors_support, rest_workers=rest_workers,
        idle_trim_seconds=idle_trim_seconds))
    try:
        bound = server.start()
    except (OSError, ConfigError, FileNotFoundError) as e:
        raise fail(str(e))
    wake = _catch_stop_signals()
    models = ", ".join(f"{n} v{max(v)}" for n, v in server.loaded_versions().items() if v)
    kind = "gRPC over TLS" + (", client certificates required" if ssl_config.client_verify else "") \
        if ssl_config is not None else "gRPC"
    typer.echo(f"serving {models} on {host}:{bound} ({kind}; Ctrl-C to stop)", err=False)
    if server.rest_target is not None:
        metrics = f"; metrics at {prometheus_path}" if prometheus_path else ""
        scheme = "https" if ssl_config is not None else "http"
        typer.echo(f"REST API on {scheme}://{server.rest_target}/v1/models/<name>{metrics}")
    _wait_for_stop(wake)
    server.begin_drain()  # health NOT_SERVING, then new requests refused on both ports, from this instant
    # A bounded drain: new requests are refused at once on both ports, requests in flight on both get
    # --drain-seconds together, then the process ends even if a graph is still running (its thread
    # cannot be interrupted; exiting normally would wait for it).
    typer.echo(f"stopping (draining up to {drain_seconds:g} s)", err=True)
    server.stop(grace=drain_seconds)
    typer.echo("stopped")
    import os
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


STOP_SIGNALS = ("SIGINT", "SIGTERM")


def _catch_stop_signals() -> int:
    """Catch SIGINT and SIGTERM; returns the read end of the pipe each delivery is written to.

    The kernel delivers a process-directed signal to any thread that does not block it (POSIX), and the
    server has dozens (gRPC, TensorFlow, the REST loop); CPython runs the Python-level handler only on
    the main thread, at its next bytecode. A main thread parked in `Event.wait()` was never woken when
    SIGTERM landed on another thread: measured, 1 of 12 SIGTERMs under load left the server serving
    (no drain) until a second signal came. The C-level handler also writes the signal number to the
    wakeup fd (signal.set_wakeup_fd) from whichever thread it ran on, so `_wait_for_stop` selects on it.
    """
    import os
    import signal

    read, write = os.pipe()
    os.set_blocking(read, False)
    os.set_blocking(write, False)  # a full pipe drops the byte, never blocks the handler
    for name in STOP_SIGNALS:
        signal.signal(getattr(signal, name), lambda *_: None)  # the wakeup byte is what counts
    signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    return read


def _wait_for_stop(read: int) -> int:
    """Block the main thread until SIGINT or SIGTERM has arrived; returns its number. Later ones are
    ignored (the drain is bounded by --drain-seconds)."""
    import os
    import select
    import signal

    wanted = {int(getattr(signal, name)) for name in STOP_SIGNALS}
    while True:
        select.select([read], [], [])
        try:
            got = os.read(read, 512)
        except BlockingIOError:
            continue
        for number in got:
            if number in wanted:
                return number


def models(models_dir: ModelsDir = Path("models")) -> None:
    """List the models, versions and version labels in a models directory."""
    check_directory(models_dir, "--models-dir")
    from genserve.repository import ConfigError, describe_models_dir

    try:
        text = describe_models_dir(models_dir)
    except (FileNotFoundError, ConfigError) as e:
        raise fail(str(e))
    if not text:
        raise fail(f"no models under {models_dir}")
    typer.echo(text)


def export_toy(
    models_dir: ModelsDir = Path("models"),
    weight: Annotated[float, typer.Option(help="w in y = w*x + b.")] = 2.0,
    bias: Annotated[float, typer.Option(help="b in y = w*x + b.")] = 1.0,
    version: ExportVersionOpt = None,
) -> None:
    """Export the toy model y = w*x + b (signatures "affine" and "scale") as a new version."""
    check_directory(models_dir, "--models-dir")
    check_number(weight, "--weight")
    check_number(bias, "--bias")
    from genserve.export.toy import ToyConfig, export_toy as _export
    from genserve.export.writer import ExportError

    try:
        path = _export(models_dir, ToyConfig(weight=weight, bias=bias), version=version)
    except ExportError as e:
        raise fail(str(e))
    typer.echo(str(path))


def register(app: typer.Typer, export_app: typer.Typer, **_) -> None:
    """Add `serve`, `models` and `export toy` to the genserve CLI."""
    app.command("serve")(serve)
    app.command("models")(models)
    export_app.command("toy")(export_toy)
