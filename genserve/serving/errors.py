"""Serving errors with canonical status names, shared by the gRPC and REST front ends.

The codes are the canonical ones (google.rpc.Code, the same names as grpc.StatusCode and TF's
error_codes.proto). The gRPC front end maps the name to `grpc.StatusCode[name]`; the REST front end to
the HTTP status TF Serving uses (tensorflow_serving/model_servers/http_rest_api_handler.cc via
`ToHTTPStatusCode` in net_http: INVALID_ARGUMENT 400, NOT_FOUND 404, ...). No gRPC or TF import here.
"""

from __future__ import annotations

import json

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
