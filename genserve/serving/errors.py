"""Serving errors with canonical status names, shared by the gRPC and REST front ends.

The codes are the canonical ones (google.rpc.Code, the same names as grpc.StatusCode and TF's
error_codes.proto). The gRPC front end maps the name to `grpc.StatusCode[name]`; the REST front end to
the HTTP status TF Serving uses (tensorflow_serving/model_servers/http_rest_api_handler.cc via
`ToHTTPStatusCode` in net_http: INVALID_ARGUMENT 400, NOT_FOUND 404, ...). No gRPC or TF import here.
A request that cannot be decoded or asks for something genserve does not serve is logged in ONE line
(`OneLineLog` for aiohttp's own log; grpc_api.py and rest_api.py for theirs), never a traceback.
"""

from __future__ import annotations

import json
import logging
import sys

# Long details are cut: a megabyte-long model name must not be echoed into a status (gRPC refuses
# metadata past its limit and the client then sees "Stream removed" instead of the error).
MAX_DETAILS = 1024

# Canonical code -> HTTP status, as TF Serving's REST API answers.
HTTP_STATUS = {
    "OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400, "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400, "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501,
    "INTERNAL": 500, "UNAVAILABLE": 503, "DATA_LOSS": 500, "UNAUTHENTICATED": 401,
}


def truncate(text: str, limit: int = MAX_DETAILS) -> str:
    """`text` cut to `limit` characters with a marker saying how much was dropped."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"... [{len(text) - limit} more characters]"


def clip(text, limit: int = 80) -> str:
    """A user-supplied string cut for use inside a message, as is (TF Serving's own formats)."""
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "..."


def short(value, limit: int = 80) -> str:
    """repr() of a user-supplied value (a name, a label) cut for use inside a message."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...'"


class ServingError(Exception):
    """A request error to answer with a canonical status `code` and a `message`."""

    def __init__(self, code: str, message: str):
        if code not in HTTP_STATUS:
            raise ValueError(f"unknown status code {code!r}")
        message = truncate(message)
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    def __repr__(self) -> str:
        return f"ServingError({self.code}, {self.message!r})"


def error_json(message: str) -> str:
    """TF Serving's REST error body (MakeJsonFromStatus): {"error": "<message>"}."""
    return json.dumps({"error": message})


class OneLineLog(logging.LoggerAdapter):
    """aiohttp's server logger (`logger=` of its AppRunner) writing one line per event, the traceback
    only at debug level. A connection whose bytes are not HTTP/1.x (a gRPC client at the REST port, TLS
    to a plaintext port, garbage) gives `REST: bad HTTP request from HOST: reason`, one line per
    connection, where aiohttp logged an 11-line traceback (or, for TLS, nothing unless at debug level)."""

    def log(self, level, msg, *args, exc_info=None, **kwargs):
        error = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1] if exc_info else None
        if error is None:
            self.logger.log(level, msg, *args, **kwargs)
            return
        from aiohttp.http_exceptions import HttpProcessingError

        if isinstance(error, HttpProcessingError) and str(msg).startswith("Error handling request"):
            self.logger.warning("REST: bad HTTP request from %s: %s", args[0] if args else "?", _http_reason(error))
        else:  # a bug inside aiohttp's handling: still one line
            self.logger.error("REST: %s: %s: %s", msg % args if args else msg, type(error).__name__,
                              truncate(" ".join(str(error).split()), 300))
        self.logger.debug("REST traceback", exc_info=error)


def _http_reason(error) -> str:
    """What aiohttp's parser said, in one line (an HTTP/2 preface named as such)."""
    text = str(getattr(error, "message", "") or error).strip()
    first = text.splitlines()[0].rstrip(": ") if text else type(error).__name__
    if first.startswith("Pause on PRI"):  # "PRI * HTTP/2.0": what every gRPC client sends first
        return "an HTTP/2 connection preface (a gRPC client? this port serves REST over HTTP/1.1)"
    return truncate(first, 200)
