"""The HTTP side of the REST API: aiohttp on its own event loop and thread, in the server process or
in a REST worker process (rest_worker.py), over a *backend* that answers the requests.

    server = RestServer(backend, "127.0.0.1", 0, max_body_bytes=64 << 20)
    port = server.start(); ...; server.stop(grace=1.0)

What is done here, the same in both places: paths outside /v1/ answer 404 (except the metrics page);
OPTIONS is TF Serving's CORS preflight; request bodies are bounded by --max-message-mb (413 beyond,
also for a declared Content-Length or a gzip/deflate body inflating past it, inflated chunk by chunk
off the event loop); a body that does not inflate answers 400, one not all there within 30 s
(body_timeout_seconds) 408; bad HTTP logs one line (errors.OneLineLog). Everything else is the
backend's: `rest_api.LocalBackend` in the server process, `rest_worker.WorkerBackend` in a worker
(which forwards to the server process over a Unix socket).

A backend has `ready_endpoint` (serve GET /v1/health/ready), `async handle(method, path, body,
remote) -> (HTTP status, JSON text)`, `async metrics() -> (bytes, content type)`, `observe(code,
seconds)` (a request refused here, for the metrics) and `async inflate(raw, encoding, limit)`.
No TensorFlow import.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from concurrent import futures

from genserve.serving.errors import OneLineLog, ServingError, error_json, truncate
from genserve.serving.options import READY_PATH

log = logging.getLogger("genserve.serving")

V1_PATH = re.compile(r"(?i)/v1/.*")  # kHTTPRestApiHandlerPathRegex
# On every /v1/ answer with --rest-api-enable-cors-support (TF Serving's http_rest_api_util.cc AddCORSHeaders).
CORS_HEADERS = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "POST, GET",
                "Access-Control-Allow-Headers": "Content-Type"}


def new_loop(prefer_uvloop: bool = True) -> asyncio.AbstractEventLoop:
    """A REST event loop: uvloop's where it is installed and preferred (libuv; a thread hand-off
    of a request, to the model's run and back, cost ~0.07 ms less than with asyncio's own loop on a
    busy 2-core box: benchmarks/README.md, session 6), else asyncio's. REST worker processes keep
    asyncio's: with uvloop there, the listening socket they share kept accepting for a moment after a
    SIGKILLed server's workers were gone (tests/test_rest_workers.py, 4 failures in 6 runs)."""
    if prefer_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class BodyTooLarge(Exception):
    """A request body (as sent, or once inflated) beyond the server's limit: 413."""


def inflate(raw: bytes, encoding: str, limit: int) -> bytes:
    """The body of a request with `Content-Encoding: gzip` or `deflate`, inflated at most `limit` bytes
    at a time, so a small bomb never grows past the limit (called on a worker thread; zlib releases
    the GIL while it inflates).

    Raises:
        BodyTooLarge: the inflated body exceeds `limit`.
        ServingError: INVALID_ARGUMENT for data that does not inflate.
    """
    import zlib

    # wbits: 16+15 reads a gzip member, 15 a zlib stream; -15 a raw deflate stream (what some
    # clients send as "deflate").
    wbits = 31 if encoding in ("gzip", "x-gzip") else (15 if raw[:1] == b"\x78" else -15)
    inflater = zlib.decompressobj(wbits)
    out, size, data = [], 0, raw
    try:
        while data:
            chunk = inflater.decompress(data, limit + 1 - size)
            size += len(chunk)
            out.append(chunk)
            if size > limit:
                raise BodyTooLarge()
            data = inflater.unconsumed_tail
        out.append(inflater.flush())
    except zlib.error as e:
        raise ServingError("INVALID_ARGUMENT", f"Failed to decompress the request body "
                                               f"(Content-Encoding: {encoding}): {e}") from None
    if not inflater.eof:
        raise ServingError("INVALID_ARGUMENT", f"Failed to decompress the request body "
                                               f"(Content-Encoding: {encoding}): truncated data")
    if size + len(out[-1]) > limit:
        raise BodyTooLarge()
    return b"".join(out)


class RestServer:
    """aiohttp on its own event loop and thread, answering through `backend`.

    Args:
        backend: see the module docstring.
        host, port: where to listen; port 0 picks a free one (see `.port` after start()).
        max_body_bytes: the largest request body accepted, as sent and once inflated (413 beyond).
        metrics_path: the path of the Prometheus page (None: no metrics page).
        body_timeout: seconds a request body may take to arrive (408 beyond, and the connection closes).
        sockets: listening sockets to serve instead of binding host:port (a REST worker's, shared with
            the other workers).
        uvloop: run on new_loop()'s loop (uvloop's where installed); False: asyncio's.
    """

    def __init__(self, backend, host: str, port: int, max_body_bytes: int, metrics_path: str | None = None,
                 ssl_context=None, body_timeout: float = 30.0, cors: bool = False, sockets=None,
                 uvloop: bool = True):
        self.backend = backend
        self.uvloop = uvloop  # uvloop's event loop where installed (new_loop), else asyncio's
        self.cors = cors  # CORS headers on every /v1/ answer
        self.host, self.port = host, port
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout  # seconds for a whole request body to arrive (408 beyond)
        self.ssl_context = ssl_context  # HTTPS when set (tls.server_ssl_context)
        self.metrics_path = metrics_path
        self.sockets = sockets
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner = None
        self._inflight = 0  # requests being handled (touched on the loop thread only)

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> int:
        """Bind and serve in a background thread. Returns the bound port.

        Raises:
            OSError: the address cannot be bound.
        """
        ready: futures.Future = futures.Future()
        self.loop = new_loop(self.uvloop)
        self._thread = threading.Thread(target=self._run, args=(ready,), name="genserve-rest-loop",
                                        daemon=True)
        self._thread.start()
        try:
            self.port = ready.result(timeout=60)
        except OSError as e:
            self._thread.join(timeout=10)
            raise OSError(f"cannot listen on {self.host}:{self.port} for REST ({e.strerror or e})") from None
        return self.port

    def _run(self, ready: futures.Future) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            port = loop.run_until_complete(self._setup())
        except BaseException as e:
            ready.set_exception(e)
            loop.run_until_complete(self._cleanup())
            loop.close()
            return
        ready.set_result(port)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._cleanup())
            pending = asyncio.all_tasks(loop)  # handlers of connections dropped mid-request
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    async def _setup(self) -> int:
        from aiohttp import web

        app = web.Application(client_max_size=self.max_body_bytes)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # shutdown_timeout: what is left in flight after stop()'s own grace wait is cancelled at once.
        # auto_decompress off: bodies are inflated by `inflate`, bounded, on a worker thread.
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1,
                                     auto_decompress=False, logger=OneLineLog(log))  # bad HTTP: one line
        await self._runner.setup()
        if self.sockets is None:
            site = web.TCPSite(self._runner, self.host, self.port, reuse_port=False, ssl_context=self.ssl_context)
            await site.start()
        else:
            for sock in self.sockets:
                await web.SockSite(self._runner, sock, ssl_context=self.ssl_context).start()
        return self._runner.addresses[0][1]

    async def _cleanup(self, grace: float = 0.0) -> None:
        if self._runner is None:
            return
        for site in list(self._runner.sites):
            await site.stop()  # no new connections
        deadline = time.monotonic() + grace
        while self._inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await self._runner.cleanup()  # closes keep-alive connections, cancels what is left
        self._runner = None

    def stop(self, grace: float | None = 1.0) -> None:
        """Stop accepting, give requests in flight `grace` seconds, then close."""
        grace = 0.0 if grace is None else grace
        loop, thread = self.loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self._cleanup(grace), loop).result(timeout=grace + 10)
            except (futures.TimeoutError, RuntimeError) as e:
                log.warning("REST shutdown: %s", e)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
        self._thread = None

    # -- requests ---------------------------------------------------------------------------------
    async def _handle(self, request):
        from aiohttp import web

        path = request.rel_url.raw_path
        if self.metrics_path is not None and request.path == self.metrics_path:
            page, content_type = await self.backend.metrics()
            return web.Response(body=page, headers={"Content-Type": content_type})
        if not V1_PATH.fullmatch(path):
            return web.Response(status=404, text=f"404: Not Found: {truncate(path, 200)}")
        self._inflight += 1
        try:
            response = await self._handle_v1(request, path)
        finally:
            self._inflight -= 1
        if self.cors:
            response.headers.update(CORS_HEADERS)
        return response

    async def _handle_v1(self, request, path: str):
        from aiohttp import web

        start = time.perf_counter()
        if request.method == "OPTIONS":  # CORS preflight, as TF Serving answers it
            if re.search(r"https?://", request.headers.get("Origin", "")):
                return web.Response(status=200, content_type="application/json")
            error = ServingError("FAILED_PRECONDITION", "Origin header is missing in CORS preflight")
            return self._json(error.http_status, error_json(error.message))
        if path == READY_PATH and request.method == "GET" and self.backend.ready_endpoint:
            return self._json(*await self.backend.handle("GET", path, b"", request.remote))
        try:
            body = await self._body(request)
        except BodyTooLarge:
            message = (f"request body is larger than this server's limit of {self.max_body_bytes:,} bytes "
                       "(--max-message-mb)")
            self.backend.observe("RESOURCE_EXHAUSTED", time.perf_counter() - start)
            return self._json(413, error_json(message), close=True)
        except asyncio.TimeoutError:
            message = f"the request body did not arrive within {self.body_timeout:g} s"
            self.backend.observe("DEADLINE_EXCEEDED", time.perf_counter() - start)
            return self._json(408, error_json(message), close=True)
        except ServingError as e:
            self.backend.observe(e.code, time.perf_counter() - start)
            return self._json(e.http_status, error_json(e.message))
        return self._json(*await self.backend.handle(request.method, path, body, request.remote))

    async def _body(self, request) -> bytes:
        """The request body, inflated. A declared length beyond the limit is refused before reading.

        Raises:
            BodyTooLarge, asyncio.TimeoutError (not all of it within body_timeout), ServingError
            (INVALID_ARGUMENT: an unknown Content-Encoding or data that does not inflate).
        """
        from aiohttp import web

        if request.content_length is not None and request.content_length > self.max_body_bytes:
            raise BodyTooLarge()
        try:
            raw = await asyncio.wait_for(request.read(), self.body_timeout)
        except web.HTTPRequestEntityTooLarge:
            raise BodyTooLarge() from None
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding in ("", "identity"):
            return raw
        if encoding not in ("gzip", "x-gzip", "deflate"):
            raise ServingError("INVALID_ARGUMENT", f"unsupported Content-Encoding: {truncate(encoding, 40)} "
                                                   "(gzip, deflate or none)")
        return await self.backend.inflate(raw, encoding, self.max_body_bytes)

    @staticmethod
    def _json(status: int, text: str, close: bool = False):
        from aiohttp import web

        response = web.Response(status=status, text=text, content_type="application/json")
        if close:  # the rest of the body is not read: this connection cannot carry another request
            response.force_close()
        return response
