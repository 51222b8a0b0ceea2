"""Thin clients: the gRPC client core, the numpy <-> TensorProto codec and one pure algorithm per
model family. Nothing under genserve/clients/ imports TensorFlow.

    python -c "from genserve.clients import Client; help(Client.predict)"

`Client`, `GenserveError`, `RetryPolicy` and `SignatureInfo` are loaded on first use (PEP 562), so
importing a pure algorithm module such as `genserve.clients.<family>` does not pull in grpc.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from genserve.clients.core import Client, GenserveError, RetryPolicy, SignatureInfo

__all__ = ["Client", "GenserveError", "RetryPolicy", "SignatureInfo"]


def __getattr__(name: str):
    if name in __all__:
        from genserve.clients import core

        return getattr(core, name)
    raise AttributeError(f"module 'genserve.clients' has no attribute {name!r}")
