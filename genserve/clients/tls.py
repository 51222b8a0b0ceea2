"""TLS for the thin client: `TlsSettings` (the CA, and for mutual TLS this client's certificate and key)
turned into grpc.ChannelCredentials. Always passed to the Client that uses it; there is no process-wide
default (the CLI hands its --tls options to each Client it opens).

    python -c "from genserve.clients import Client, TlsSettings; Client('localhost:8500', tls=TlsSettings('certs/ca.pem'))"
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from genserve.files import read_pem


@dataclass(frozen=True)
class TlsSettings:
    """How a Client reaches a TLS server: PEM bytes, PEM text or file paths (read when the Client is built).

    Attributes:
        root_certificates: the CA that signed the server's certificate (None: the system's roots).
        client_cert, client_key: this client's certificate and key, for a server that verifies
            clients (SSLConfig client_verify). Both or neither.
    """

    root_certificates: bytes | str | None = None
    client_cert: bytes | str | None = None
    client_key: bytes | str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        """grpc.ChannelCredentials for these settings.

        Raises:
            ValueError: only one of client_cert / client_key; an unreadable or non-PEM file.
        """
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("give both the client certificate and its key (mutual TLS), or neither")
        return grpc.ssl_channel_credentials(
            root_certificates=read_pem(self.root_certificates, "CA certificate"),
            private_key=read_pem(self.client_key, "client key"),
            certificate_chain=read_pem(self.client_cert, "client certificate"))


def tls_settings(tls: bool | TlsSettings | None = None, root_certificates=None, client_cert=None,
                 client_key=None) -> TlsSettings | None:
    """Client's TLS arguments as one TlsSettings, or None for a plaintext channel.

    tls: a TlsSettings (then the other three must be None), True, False, or None (TLS exactly when
    any of the other three is given).

    Raises:
        ValueError: TLS material with tls=False, or with a TlsSettings.
    """
    given = any(v is not None for v in (root_certificates, client_cert, client_key))
    if isinstance(tls, TlsSettings):
        if given:
            raise ValueError("give the certificates inside the TlsSettings, not beside it")
        return tls
    if tls is False and given:
        raise ValueError("root_certificates / client_cert / client_key need tls=True")
    if not (tls or given):
        return None
    return TlsSettings(root_certificates, client_cert, client_key)


def channel_credentials(tls: bool | TlsSettings | None = None, root_certificates=None, client_cert=None,
                        client_key=None) -> grpc.ChannelCredentials | None:
    """grpc.ChannelCredentials for Client's TLS arguments (see tls_settings), or None for plaintext.

    Raises:
        ValueError: see tls_settings and TlsSettings.credentials.
    """
    settings = tls_settings(tls, root_certificates, client_cert, client_key)
    return None if settings is None else settings.credentials()
