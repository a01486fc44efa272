"""The Python client of wsservice, on Twisted: sessions that survive reconnects.

::

    from wsservice.client import connect
    client = await connect("ws://127.0.0.1:8080/ws", meta={}, auth=None)
    await client.call("echo", {"a": 1}, timeout=5)      # RemoteError on an error reply
    client.on("echo", lambda data, seq: ...)
    await client.subscribe("room.1", lambda data, seq: ...)
    await client.subscribe("room.2", on_message, presence=lambda kind, member: ...)
    await client.presence("room.2")                     # who is in it: [{client, user, meta}]
    await client.close()

The client resumes its session after any loss (backoff with full jitter), delivers every
pushed message once and in seq order, acks, and tells the application through
``onStateChange(callback)`` (and ``onLost(callback)``) when a session could not be resumed.
``python -m wsservice.client`` is a command line on top of it.
"""

from ..errors import ApplicationError, RemoteError
from .backoff import Backoff
from .client import CLOSED, CONNECTING, OPEN, RECONNECTING, Client, connect
from .errors import ClientError
from .options import Options
from .url import Target, parse_url

__all__ = [
    "ApplicationError", "Backoff", "CLOSED", "CONNECTING", "Client", "ClientError", "OPEN",
    "Options", "RECONNECTING", "RemoteError", "Target", "connect", "parse_url",
]
