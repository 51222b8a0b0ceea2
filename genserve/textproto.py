"""TF Serving's configuration files are protobuf text format (models.config, batching parameters,
monitoring config, SSLConfig): one parser for all of them, whose error is one line that names the file
and the message it should hold.

    python -c "from genserve.textproto import parse_text_proto; from google.protobuf import wrappers_pb2; print(parse_text_proto('value: 3', wrappers_pb2.Int64Value(), 'x'))"
"""

from __future__ import annotations


def parse_text_proto(text: str, message, source: str, error: type[Exception] = ValueError):
    """Parse `text` into `message` (a protobuf message instance) and return it.

    Raises:
        error: (ValueError by default) "SOURCE: not a text-format NAME (parser's reason)", one line.
    """
    from google.protobuf import text_format

    try:
        return text_format.Parse(text, message)
    except text_format.ParseError as e:
        reason = " ".join(str(e).split())
        raise error(f"{source}: not a text-format {message.DESCRIPTOR.name} ({reason})") from None
