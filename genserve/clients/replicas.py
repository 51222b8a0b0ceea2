"""One target, several replicas: how a Client's target string becomes a gRPC channel target.

    "127.0.0.1:8500"                          one server (gRPC's default pick_first, as always)
    "127.0.0.1:8500,127.0.0.1:8510"           replicas  -> "ipv4:127.0.0.1:8500,127.0.0.1:8510"
    "[::1]:8500,[::1]:8510"                   replicas  -> "ipv6:[::1]:8500,[::1]:8510"
    "host-a:8500,host-b:8500"                 replicas, names resolved once when the Client is built
    "dns:///genserve-headless.ns.svc:8500"    every address the name has (a headless Kubernetes Service)

A comma list or a dns:/// target gets gRPC's `round_robin` load balancing (each call goes to the next
READY replica) and client-side health checking (gRFC A17: the channel Watches each replica's
`grpc.health.v1.Health` for `tensorflow.serving.PredictionService` and sends nothing to one that is
NOT_SERVING, e.g. still loading its models or draining). A server without the health service (TF
Serving without `--enable_grpc_healthcheck_service`) answers UNIMPLEMENTED and counts as healthy
(gRPC logs one line about it). gRPC Python needs no channel argument for this: the service config
below turns it on (`grpc.inhibit_health_checking` is off by default). A replica that fails drops out
of the round_robin ring at once, so the Client's retry of an UNAVAILABLE call (the first one without
backoff, for a replica list) reaches another one.

gRPC has no resolver for a list of host names, so such a list is resolved here with getaddrinfo
(IPv4 when every name has an IPv4 address, else IPv6); the channel's authority stays the first
host:port as written (what a TLS certificate names). Use dns:/// when the addresses change.

    python -c "from genserve.clients.replicas import channel_target; print(channel_target('127.0.0.1:1,127.0.0.1:2'))"
"""

from __future__ import annotations

import ipaddress
import json
import socket
from dataclasses import dataclass, field

HEALTH_SERVICE = "tensorflow.serving.PredictionService"  # genserve.serving.health.PREDICTION_SERVICE
SERVICE_CONFIG = json.dumps({
    "loadBalancingConfig": [{"round_robin": {}}],
    "healthCheckConfig": {"serviceName": HEALTH_SERVICE},
})


@dataclass(frozen=True)
class ChannelTarget:
    """What grpc.insecure_channel / secure_channel get for a Client target."""

    uri: str  # the gRPC target
    addresses: tuple[str, ...]  # the "host:port" entries as written (one for a single target)
    options: tuple[tuple[str, object], ...] = field(default=())  # extra channel options

    @property
    def replicated(self) -> bool:
        return bool(self.options)


def split_target(target: str) -> list[str]:
    """The "host:port" entries of a comma list (one entry for anything else), stripped."""
    if target.startswith(("dns:", "unix:", "ipv4:", "ipv6:")) or "," not in target:
        return [target.strip()]
    return [part.strip() for part in target.split(",")]


def host_port(address: str) -> tuple[str, int] | None:
    """("host", port) of "host:port", "[v6]:port" or "dns:///host:port"; None for other forms."""
    if address.startswith("unix:"):
        return None
    address = address[len("dns:///"):] if address.startswith("dns:///") else address
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def _resolve(host: str, port: int) -> dict[int, str]:
    """family -> the first address of that family `host` resolves to."""
    from genserve.clients.messages import GenserveError
    import grpc

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise GenserveError(grpc.StatusCode.UNAVAILABLE,
                            f"cannot resolve the host name {host!r} of the replica {host}:{port} "
                            f"(DNS: {e}); check its spelling") from None
    found: dict[int, str] = {}
    for family, _, _, _, sockaddr in infos:
        found.setdefault(family, sockaddr[0])
    return found


def channel_target(target: str) -> ChannelTarget:
    """The gRPC target and channel options for `target` (see the module docstring).

    Raises:
        ValueError: an entry of a comma list that is not host:port, or IPv4 and IPv6 mixed.
        GenserveError: UNAVAILABLE, a host name in a comma list that does not resolve.
    """
    entries = split_target(target)
    if len(entries) == 1:
        single = entries[0]
        if single.startswith("dns:"):
            return ChannelTarget(single, (single,), (("grpc.service_config", SERVICE_CONFIG),))
        return ChannelTarget(single, (single,))
    parsed = []
    for entry in entries:
        hp = host_port(entry)
        if hp is None or not hp[0] or entry.startswith("dns:"):
            raise ValueError(f"{target!r}: replica {entry!r} is not host:port (a list is host:port,host:port)")
        parsed.append(hp)
    literals = [_literal(host) for host, _ in parsed]
    if all(ip is not None for ip in literals):
        versions = {ip.version for ip in literals}
        if len(versions) > 1:
            raise ValueError(f"{target!r}: mixes IPv4 and IPv6 addresses; gRPC takes one family per list")
        family = versions.pop()
        ips = [str(ip) for ip in literals]
    else:
        resolved = [_resolve(host, port) for host, port in parsed]
        family = 4 if all(socket.AF_INET in r for r in resolved) else 6
        if family == 6 and not all(socket.AF_INET6 in r for r in resolved):
            raise ValueError(f"{target!r}: the names resolve to IPv4 for some replicas and IPv6 for "
                             "others; gRPC takes one family per list")
        ips = [r[socket.AF_INET if family == 4 else socket.AF_INET6] for r in resolved]
    addresses = [f"[{ip}]:{port}" if family == 6 else f"{ip}:{port}" for ip, (_, port) in zip(ips, parsed)]
    first_host, first_port = parsed[0]
    authority = f"[{first_host}]:{first_port}" if ":" in first_host else f"{first_host}:{first_port}"
    options = (("grpc.service_config", SERVICE_CONFIG), ("grpc.default_authority", authority))
    return ChannelTarget(f"ipv{family}:" + ",".join(addresses), tuple(entries), options)
