"""TLS for the thin client: `TlsSettings` (the CA, and for mutual TLS this client's certificate and key)
turned into grpc.ChannelCredentials. Always passed to the Client that uses it; there is no process-wide
default (the CLI hands its --tls options to each Client it opens).

    python -c "from genserve.clients import Client, TlsSettings; Client('localhost:8500', tls=TlsSettings('certs/ca.pem'))"
"""

from __future__ import annotations

import re
import ssl
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
        roots = read_pem(self.root_certificates, "CA certificate")
        if roots is not None:
            check_ca_certificates(roots)
        return grpc.ssl_channel_credentials(
            root_certificates=roots,
            private_key=read_pem(self.client_key, "client key"),
            certificate_chain=read_pem(self.client_cert, "client certificate"))


CERTIFICATE_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def check_ca_certificates(pem: bytes) -> None:
    """Refuse root certificates that cannot be anyone's CA: no certificate block at all (a key given
    instead), or only certificates that are neither CAs (basicConstraints CA:TRUE, OpenSSL's
    X509_check_ca as seen by the ssl module) nor self-signed, i.e. a server's own certificate. gRPC
    would trust such a leaf as given (the connection works until the server's certificate is renewed),
    so the mistake is named here instead. A self-signed server certificate is its own CA: accepted.

    Raises:
        ValueError: one line with the fix.
    """
    blocks = CERTIFICATE_BLOCK.findall(pem)
    if not blocks:
        raise ValueError("the CA certificate (--ca-cert) holds no '-----BEGIN CERTIFICATE-----' block "
                         "(a private key?): give the PEM certificate of the CA that signed the server's")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cadata=b"\n".join(blocks).decode("ascii"))
    except (ssl.SSLError, ValueError, UnicodeDecodeError):
        return  # unparsable: gRPC's own handshake error will name it
    if context.cert_store_stats()["x509_ca"]:
        return
    if any(_self_issued(ssl.PEM_cert_to_DER_cert(block.decode("ascii"))) for block in blocks):
        return
    raise ValueError("the CA certificate (--ca-cert) is a server's own certificate, not a CA: give the "
                     "certificate of the CA that signed it (e.g. ca.pem, not server.pem)")


def _self_issued(der: bytes) -> bool:
    """Whether an X.509 certificate (DER) names the same issuer and subject. RFC 5280 4.1: Certificate
    ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber, signature, issuer,
    validity, subject, ... }, ... }; the two Names are compared byte for byte."""
    def element(i: int) -> tuple[int, int, int]:  # (tag, start of the value, end of the value) at i
        tag, length, i = der[i], der[i + 1], i + 2
        if length & 0x80:
            count = length & 0x7F
            length, i = int.from_bytes(der[i:i + count], "big"), i + count
        return tag, i, i + length

    try:
        _, certificate, _ = element(0)
        _, i, _ = element(certificate)
        fields = []
        while len(fields) < 6:
            tag, _, end = element(i)
            fields.append((tag, der[i:end]))
            i = end
    except IndexError:
        return False
    if fields[0][0] != 0xA0:  # no explicit version: v1
        fields.insert(0, (0xA0, b""))
    return fields[3][1] == fields[5][1]


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
