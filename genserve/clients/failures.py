"""Which failed connections are worth retrying, and what to tell the user about the others.

A client that cannot reach its server retries only what time can fix: a refused connection (the server
is not up yet, or restarting) and a server that answers UNAVAILABLE (draining, overloaded). Everything
else fails at once with one line naming the cause and the fix, instead of retrying until the deadline
and then asking "is the server running?":

| cause (gRPC's words in the status details)                      | what the user is told            |
|-----------------------------------------------------------------|----------------------------------|
| DNS failure ("Domain name not found", "hostname lookup error")  | check the host name of --target  |
| an HTTP/1.x server ("http1.x server", "Failed parsing HTTP/2")  | that is a REST port, not gRPC    |
| TLS to a plaintext server ("WRONG_VERSION_NUMBER", ...)          | drop --tls                       |
| certificate not trusted ("CERTIFICATE_VERIFY_FAILED", ...)       | --ca-cert: the CA that signed it |
| plaintext to a TLS server ("Socket closed" / reset, and a TLS   | add --tls (and --ca-cert)        |
|   handshake with the port succeeds)                              |                                  |

    python -c "from genserve.clients.failures import diagnose; print(diagnose('h:1', 'Domain name not found', False))"
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from genserve.clients.replicas import host_port, split_target

DNS_MARKS = ("domain name not found", "hostname lookup error", "dns resolution failed",
             "name or service not known", "could not resolve", "errors resolving")
HTTP1_MARKS = ("http1.x server", "failed parsing http/2")
NOT_TLS_MARKS = ("wrong_version_number", "packet_length_too_long", "http_request", "record_too_large")
UNTRUSTED_MARKS = ("certificate_verify_failed", "certificate verify failed", "unable to get local issuer",
                   "self signed certificate", "self-signed certificate")
CLOSED_MARKS = ("socket closed", "connection reset", "end of tcp stream", "broken pipe")


def speaks_tls(target: str, timeout: float = 1.0) -> bool:
    """Whether the server at host:port (any replica of a host:port,host:port list) completes a TLS
    handshake (certificate not checked): tells a TLS server from a plaintext one when a plaintext
    client's connection is closed on it."""
    return any(_speaks_tls(address, timeout) for address in split_target(target))


def _speaks_tls(target: str, timeout: float) -> bool:
    import socket
    import ssl

    address = host_port(target)
    if address is None:
        return False
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection(address, timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=address[0] or None):
                return True
    except (OSError, ssl.SSLError, ValueError):
        return False


def diagnose(target: str, details: str, tls: bool) -> str | None:
    """One line naming a cause that retrying cannot fix, with the fix; None when the failure may pass
    (a refused connection, a server answering UNAVAILABLE), so the call should be retried.

    Args:
        target: the client's "host:port" (or its replicas, "host:port,host:port").
        details: the UNAVAILABLE status' details, as gRPC gave them.
        tls: whether the client connects over TLS.
    """
    text = details.lower()
    host = (host_port(split_target(target)[0]) or (target, 0))[0]
    if any(mark in text for mark in DNS_MARKS):
        return f"cannot resolve the host name {host!r} of --target {target} (DNS); check its spelling"
    if any(mark in text for mark in HTTP1_MARKS):
        return (f"{target} answers plain HTTP/1.x, not gRPC: that is a REST port (genserve serve's REST "
                "port is --rest-port, 8501 by default); give the gRPC port (8500 by default) as --target")
    if tls and any(mark in text for mark in NOT_TLS_MARKS):
        return f"{target} does not speak TLS (a plaintext gRPC server?): drop --tls / --ca-cert"
    if tls and any(mark in text for mark in UNTRUSTED_MARKS):
        return (f"the certificate of {target} is not trusted: give --ca-cert the CA certificate that "
                "signed it (not the server's own certificate), and a --target host the certificate names")
    if not tls and any(mark in text for mark in CLOSED_MARKS) and speaks_tls(target):
        return f"{target} speaks TLS: add --tls (and --ca-cert CA.pem unless the system's roots trust it)"
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for UNAVAILABLE, bounded by the call's deadline, not by a count.

    The wait after failed attempt k is initial_backoff * multiplier**(k-1), capped at max_backoff,
    then stretched by a random factor in [1, 1 + jitter] so clients that lost the same server do not
    come back in lock step (gRPC's connection-backoff scheme,
    https://github.com/grpc/grpc/blob/master/doc/connection-backoff.md). Retries go on until the
    deadline: a server restarting within a call's `timeout` is reached. `max_attempts` (None: no
    limit) caps the attempts; `RetryPolicy.disabled()` (max_attempts=1) turns retries off.
    """

    max_attempts: int | None = None
    initial_backoff: float = 0.1  # seconds
    multiplier: float = 2.0
    max_backoff: float = 1.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1 (or None), got {self.max_attempts}")
        if not (self.initial_backoff > 0 and self.multiplier >= 1 and self.max_backoff > 0
                and 0 <= self.jitter <= 1):
            raise ValueError("need initial_backoff > 0, multiplier >= 1, max_backoff > 0, 0 <= jitter <= 1")

    @classmethod
    def disabled(cls) -> "RetryPolicy":
        """One attempt only: UNAVAILABLE surfaces at once."""
        return cls(max_attempts=1)

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait after failed attempt number `attempt` (1-based), jitter included."""
        base = min(self.max_backoff, self.initial_backoff * self.multiplier ** min(attempt - 1, 64))
        return base * (1.0 + self.jitter * (rng or random).random())

def waiting_reason(details: str) -> str:
    """The last clause of gRPC's UNAVAILABLE details ("Connection refused"), for the waiting line."""
    return details.rsplit(": ", 1)[-1].strip() or "unavailable"
