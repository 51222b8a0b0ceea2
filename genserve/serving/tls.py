"""TLS for the embedded gRPC server: TF Serving's SSLConfig file (--ssl_config_file) -> server credentials.

    genserve serve --models-dir models --ssl-config-file ssl.config
    python -c "from genserve.serving.tls import read_ssl_config; print(read_ssl_config('ssl.config').client_verify)"

The file is the text format of tensorflow_serving/config/ssl_config.proto, PEM contents inline (not
paths), exactly what `tensorflow_model_server --ssl_config_file` reads:

    server_key: "-----BEGIN PRIVATE KEY-----\\n...\\n-----END PRIVATE KEY-----\\n"
    server_cert: "-----BEGIN CERTIFICATE-----\\n...\\n-----END CERTIFICATE-----\\n"
    custom_ca: "-----BEGIN CERTIFICATE-----\\n..."     # optional: CA that signs client certificates
    client_verify: true                                # optional: require a client certificate

As in TF Serving (model_servers/server.cc), custom_ca is the root set for client certificates and
client_verify asks for and verifies one (REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY). The REST
port gets the same certificate (and the same client verification) through `server_ssl_context` — TF
Serving's --ssl_config_file secures gRPC only, so HTTPS on the REST port is genserve's addition.

The installed tensorflow-serving-api wheel does not ship ssl_config_pb2, so the message is declared
here (same package, name and field numbers) in a private descriptor pool.
"""

from __future__ import annotations

from pathlib import Path

from genserve.textproto import parse_text_proto

PEM_MARK = "-----BEGIN "
_FIELDS = (("server_key", 1, "string"), ("server_cert", 2, "string"), ("custom_ca", 3, "string"),
           ("client_verify", 4, "bool"))


class TlsConfigError(ValueError):
    """An SSLConfig file that is missing, unreadable, malformed or incomplete (one-line message)."""


def _ssl_config_class():
    try:
        from tensorflow_serving.config import ssl_config_pb2  # newer wheels ship it

        return ssl_config_pb2.SSLConfig
    except ImportError:
        pass
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    proto = descriptor_pb2.FileDescriptorProto(name="genserve/ssl_config.proto",
                                               package="tensorflow.serving", syntax="proto3")
    message = proto.message_type.add(name="SSLConfig")
    kinds = {"string": descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
             "bool": descriptor_pb2.FieldDescriptorProto.TYPE_BOOL}
    for name, number, kind in _FIELDS:
        message.field.add(name=name, number=number, type=kinds[kind],
                          label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.SSLConfig"))


_SSL_CONFIG = None


def ssl_config_class():
    """The SSLConfig message class (tensorflow_serving's when installed, else an identical one)."""
    global _SSL_CONFIG
    if _SSL_CONFIG is None:
        _SSL_CONFIG = _ssl_config_class()
    return _SSL_CONFIG


def parse_ssl_config(text: str, source: str = "SSLConfig"):
    """Parse and check SSLConfig text. Returns the message.

    Raises:
        TlsConfigError: not SSLConfig text, or server_key / server_cert missing or not PEM, or
            client_verify without custom_ca.
    """
    config = parse_text_proto(text, ssl_config_class()(), source, TlsConfigError)
    for name in ("server_key", "server_cert"):
        value = getattr(config, name)
        if not value.strip():
            raise TlsConfigError(f"{source}: {name} is missing (the PEM text itself, not a path)")
        if PEM_MARK not in value:
            raise TlsConfigError(f"{source}: {name} is not PEM text (expected '{PEM_MARK}...'; the "
                                 "file holds the PEM contents inline, not paths)")
    if config.custom_ca and PEM_MARK not in config.custom_ca:
        raise TlsConfigError(f"{source}: custom_ca is not PEM text (expected '{PEM_MARK}CERTIFICATE-----')")
    if config.client_verify and not config.custom_ca.strip():
        raise TlsConfigError(f"{source}: client_verify needs custom_ca, the CA that signs client certificates")
    _check_pems(config, source)
    return config


def _check_pems(config, source: str) -> None:
    """Load the key pair and CA with Python's ssl module, so a garbled PEM or a key that does not
    match the certificate is one clear line here rather than gRPC's 'Failed to bind' at start."""
    server_ssl_context(config, source)


def server_ssl_context(config, source: str = "SSLConfig"):
    """An ssl.SSLContext serving `config`'s certificate (the REST port uses it): TLS 1.2 or newer,
    client certificates required and checked against custom_ca when client_verify is set.

    Raises:
        TlsConfigError: the PEMs do not load.
    """
    import os
    import ssl
    import tempfile

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with tempfile.TemporaryDirectory(prefix="genserve-tls-") as folder:  # mode 0700
        cert, key = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
        for name, text in ((cert, config.server_cert), (key, config.server_key)):
            with open(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
                f.write(text)
        try:
            context.load_cert_chain(cert, key)
        except ssl.SSLError as e:
            raise TlsConfigError(f"{source}: server_key / server_cert do not load as a matching PEM key "
                                 f"and certificate ({e.reason or e})") from None
    if config.custom_ca:
        try:
            context.load_verify_locations(cadata=config.custom_ca)
        except (ssl.SSLError, ValueError) as e:
            raise TlsConfigError(f"{source}: custom_ca is not a PEM certificate "
                                 f"({getattr(e, 'reason', None) or e})") from None
    if config.client_verify:
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def read_ssl_config(path):
    """Read and check an SSLConfig text file (see parse_ssl_config). Raises TlsConfigError."""
    from genserve.files import read_file

    path = Path(path)
    try:
        raw = read_file(path, "SSLConfig file")
    except ValueError as e:
        raise TlsConfigError(str(e)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise TlsConfigError(f"{path}: not an SSLConfig text proto (not UTF-8 text)") from None
    return parse_ssl_config(text, source=str(path))


def make_ssl_config(server_key: str | bytes, server_cert: str | bytes, custom_ca: str | bytes = "",
                    client_verify: bool = False):
    """An SSLConfig from PEM contents (tests, embedding); checked as a file would be."""
    def text(value):
        return value.decode("ascii") if isinstance(value, bytes) else value

    config = ssl_config_class()(server_key=text(server_key), server_cert=text(server_cert),
                                custom_ca=text(custom_ca), client_verify=client_verify)
    from google.protobuf import text_format

    return parse_ssl_config(text_format.MessageToString(config))


def ssl_config_text(config) -> str:
    """The text format of an SSLConfig (what --ssl-config-file reads)."""
    from google.protobuf import text_format

    return text_format.MessageToString(config)


def server_credentials(config):
    """grpc.ServerCredentials for an SSLConfig (message, or path of its text file).

    Raises:
        TlsConfigError: see read_ssl_config / parse_ssl_config.
    """
    import grpc

    if isinstance(config, (str, Path)):
        config = read_ssl_config(config)
    root = config.custom_ca.encode() if config.custom_ca else None
    return grpc.ssl_server_credentials([(config.server_key.encode(), config.server_cert.encode())],
                                       root_certificates=root, require_client_auth=config.client_verify)
