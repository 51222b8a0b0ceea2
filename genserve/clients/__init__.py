"""Thin clients: the gRPC channel, the one pinning rule, image I/O and one pure algorithm per model
family. Nothing under genserve/clients/ imports TensorFlow.

    python -c "from genserve.clients import Client; help(Client.predict)"

| module      | holds |
|-------------|-------|
| messages    | requests built and replies read (`predict_request`, `signatures_from_metadata`), `GenserveError` |
| channel     | `Client` (deadlines, retries of UNAVAILABLE), `RetryPolicy` |
| replicas    | a target naming several replicas (`a:1,b:2`, `dns:///`) -> round_robin + health checks |
| tls         | `TlsSettings`: TLS, always passed to the Client explicitly (no process-wide default) |
| pinned      | `PinnedModel` (`Client.pinned`): one model version for a whole job; `PinnedJob`, the family base |
| images      | load, tile, PNG bytes, atomic save of pictures |
| text, vae, gan, style, dream | one pure algorithm per family over an injected model call, and its served form |

The names below are loaded on first use (PEP 562), so importing a pure algorithm module such as
`genserve.clients.<family>` does not pull in grpc.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from genserve.clients.channel import Client
    from genserve.clients.failures import RetryPolicy
    from genserve.clients.tls import TlsSettings
    from genserve.clients.messages import GenserveError, SignatureInfo, VersionStatus
    from genserve.clients.pinned import PinnedModel

_HOMES = {"Client": "channel", "RetryPolicy": "failures", "TlsSettings": "tls",
          "GenserveError": "messages", "SignatureInfo": "messages", "VersionStatus": "messages",
          "PinnedModel": "pinned"}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(f"genserve.clients.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'genserve.clients' has no attribute {name!r}")
