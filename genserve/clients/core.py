"""Old home of the thin client, kept so that `from genserve.clients.core import ...` written before the
split still works: the client now lives in genserve.clients.channel (Client, RetryPolicy, TlsSettings),
genserve.clients.messages (GenserveError, requests and replies) and genserve.clients.pinned
(PinnedModel, LatentImageModel). New code imports from `genserve.clients` or those modules.
"""

from genserve.clients.channel import *  # noqa: F401,F403
from genserve.clients.channel import DEFAULT_MAX_MESSAGE_BYTES, Outputs, channel_credentials  # noqa: F401
from genserve.clients.messages import (METADATA_METHOD, PREDICT_METHOD, STATUS_METHOD,  # noqa: F401
                                       GenserveError, SignatureInfo, VersionStatus, predict_request,
                                       signatures_from_metadata)
from genserve.clients.pinned import LatentImageModel, PinnedModel  # noqa: F401
