"""A REST worker process: the HTTP and JSON side of TF Serving's REST API, outside the model process.

    genserve serve --models-dir models --rest-port 8501 --rest-workers 2     # starts them (rest_workers.py)

The server process binds the REST port and starts N of these (`python -m genserve.serving.rest_worker
LISTEN_FD... CHANNEL_FD`); each accepts connections on the shared listening socket(s) with the same
aiohttp front end as the server process (rest_http.RestServer: paths, bodies, limits, TLS, CORS) and
forwards every request to the server process over its channel, a Unix socket pair. The server process
answers with the JSON text, or, for a prediction, with the PredictResponse bytes, whose JSON the worker
writes here with json_tensor.outputs_json (the function the server process would call: the same bytes).
So the JSON writing, HTTP parsing and TLS of REST run in N more processes, beside the model process's
GIL; routing, version resolution, admission, the run and the metrics stay in the server process.

Frames both ways: `!IBQ` (request id, kind, payload length), then the payload. The worker imports no
TensorFlow (genserve.wire's own protobuf classes decode the response). It ignores SIGINT and SIGTERM:
the server process drains it (a DRAIN frame) and it exits at once when its channel closes, i.e. when
the server process is gone, even SIGKILLed (and, where it was started from the main thread,
PR_SET_PDEATHSIG as well).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import struct
import sys
import threading

HEADER = struct.Struct("!IBQ")  # request id, kind, payload length
# worker -> server process
REQUEST, METRICS, OBSERVE, READY = 1, 2, 3, 4
# server process -> worker
CONFIG, ANSWER, PREDICTION, DRAIN = 11, 12, 13, 14
ANSWER_STATUS = struct.Struct("!H")
INLINE_VALUES = 1 << 14  # outputs up to this many values are written on the event loop, larger on a thread

log = logging.getLogger("genserve.serving")


def frame(rid: int, kind: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(rid, kind, len(payload)) + payload


def request_payload(method: str, path: str, remote, body: bytes) -> bytes:
    return b"\0".join([method.encode(), path.encode("utf-8", "surrogateescape"), str(remote).encode()]) + b"\0" + body


def parse_request(payload: bytes) -> tuple[str, str, str, bytes]:
    method, path, remote, body = payload.split(b"\0", 3)
    return method.decode(), path.decode("utf-8", "surrogateescape"), remote.decode(), body


class WorkerBackend:
    """rest_http.RestServer's backend in a worker: every request goes to the server process."""

    def __init__(self, ready_endpoint: bool):
        self.ready_endpoint = ready_endpoint
        self._writer: asyncio.StreamWriter | None = None
        self._connected: asyncio.Event | None = None  # requests that come before the channel is up wait
        self._waiting: dict[int, asyncio.Future] = {}
        self._next = 0
        self.drain = threading.Event()
        self.grace = 0.0

    async def connect(self, channel: socket.socket) -> None:
        reader, self._writer = await asyncio.open_unix_connection(sock=channel)
        asyncio.get_running_loop().create_task(self._read(reader))
        if self._connected is not None:
            self._connected.set()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                rid, kind, size = HEADER.unpack(await reader.readexactly(HEADER.size))
                payload = await reader.readexactly(size) if size else b""
                if kind == DRAIN:
                    self.grace = float(payload.decode())
                    self.drain.set()
                    continue
                future = self._waiting.pop(rid, None)
                if future is not None and not future.done():
                    future.set_result((kind, payload))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        os._exit(0)  # the server process is gone: so is this worker (its listening socket with it)

    async def _call(self, kind: int, payload: bytes) -> tuple[int, bytes]:
        if self._writer is None:
            if self._connected is None:
                self._connected = asyncio.Event()
            await self._connected.wait()
        self._next = (self._next + 1) & 0xFFFFFFFF
        rid = self._next
        future = asyncio.get_running_loop().create_future()
        self._waiting[rid] = future
        self._writer.write(frame(rid, kind, payload))
        if self._writer.transport.get_write_buffer_size() > (1 << 20):
            await self._writer.drain()
        try:
            return await future
        finally:
            self._waiting.pop(rid, None)

    async def handle(self, method: str, path: str, body: bytes, remote) -> tuple[int, str]:
        kind, payload = await self._call(REQUEST, request_payload(method, path, remote, body))
        if kind == PREDICTION:
            fmt, data = payload[:1], payload[1:]
            from genserve.serving.json_tensor import COLUMNAR, ROW

            fmt = COLUMNAR if fmt == b"c" else ROW
            outputs = _decode_outputs(data)
            if sum(a.size for a in outputs.values()) <= INLINE_VALUES:
                return _outputs_json(outputs, fmt)
            return await asyncio.get_running_loop().run_in_executor(None, _outputs_json, outputs, fmt)
        return ANSWER_STATUS.unpack_from(payload)[0], payload[ANSWER_STATUS.size:].decode("utf-8")

    async def metrics(self) -> tuple[bytes, str]:
        _, payload = await self._call(METRICS, b"")
        content_type, _, page = payload.partition(b"\0")
        return page, content_type.decode()

    def observe(self, code: str, seconds: float) -> None:
        if self._writer is not None:
            self._writer.write(frame(0, OBSERVE, f"{code}\0{seconds!r}".encode()))

    def say_ready(self) -> None:
        self._writer.write(frame(0, READY))

    async def inflate(self, raw: bytes, encoding: str, limit: int) -> bytes:
        from genserve.serving.rest_http import inflate

        return await asyncio.get_running_loop().run_in_executor(None, inflate, raw, encoding, limit)


def _decode_outputs(data: bytes) -> dict:
    from genserve.wire.codec import from_tensor_proto
    from genserve.wire.protos.serving_pb2 import PredictResponse

    response = PredictResponse.FromString(data)
    return {key: from_tensor_proto(proto) for key, proto in response.outputs.items()}


def _outputs_json(outputs: dict, fmt: str) -> tuple[int, str]:
    from genserve.serving.errors import ServingError, error_json
    from genserve.serving.json_tensor import outputs_json

    try:
        return 200, outputs_json(outputs, fmt)
    except ServingError as e:  # checked by the server process already (RestApi._raw_outputs)
        return e.http_status, error_json(e.message)


def _die_with_parent(parent: int) -> None:
    """PR_SET_PDEATHSIG(SIGKILL) (Linux): the kernel kills this process when its parent's thread that
    started it ends. Then a check that the parent is still the one that started it."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:
        os._exit(0)


def main(argv: list[str]) -> None:
    """argv: [--pdeathsig PARENT_PID] LISTEN_FD... CHANNEL_FD (file descriptors inherited)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server process drains this worker
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if argv[:1] == ["--pdeathsig"]:
        _die_with_parent(int(argv[1]))
        argv = argv[2:]
    fds = [int(a) for a in argv]
    channel = socket.socket(fileno=fds[-1])
    listeners = [socket.socket(fileno=fd) for fd in fds[:-1]]
    config = _read_config(channel)
    logging.basicConfig(level=config.get("log_level", logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s[worker %(process)d]: %(message)s")
    from genserve.serving.rest_http import RestServer

    context = None
    if config.get("ssl_config"):
        from genserve.serving.tls import parse_ssl_config, server_ssl_context

        context = server_ssl_context(parse_ssl_config(config["ssl_config"]))
    backend = WorkerBackend(config["ready_endpoint"])
    server = RestServer(backend, "", 0, config["max_body_bytes"], config.get("metrics_path"), ssl_context=context,
                        body_timeout=config["body_timeout"], cors=config["cors"], sockets=listeners, uvloop=False)
    server.start()
    asyncio.run_coroutine_threadsafe(backend.connect(channel), server.loop).result(timeout=30)
    server.loop.call_soon_threadsafe(backend.say_ready)
    backend.drain.wait()
    server.stop(backend.grace)
    os._exit(0)


def _read_config(channel: socket.socket) -> dict:
    """The CONFIG frame the server process sends first (blocking, before the event loop runs)."""
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = channel.recv(n - len(data))
            if not chunk:
                os._exit(0)
            data += chunk
        return data

    _, kind, size = HEADER.unpack(exactly(HEADER.size))
    if kind != CONFIG:
        raise SystemExit(f"REST worker: expected a CONFIG frame, got kind {kind}")
    return json.loads(exactly(size))


if __name__ == "__main__":
    main(sys.argv[1:])
