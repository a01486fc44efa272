"""Endpoint strings: checked before start-up, and every way they fail explained in one line.

Twisted reports a bad endpoint string as whatever its parser raised (``IndexError`` for a
missing systemd socket, ``invalid literal for int()`` for a port) and a failed listen as a
``CannotListenError`` about a lock file; an operator needs to read what is wrong and what to
do about it. ``ListenError`` carries that sentence.
"""

from __future__ import annotations

import errno
import os
import re

from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorCore, IStreamServerEndpoint

from .errors import ConfigurationError

_MODE = re.compile(r"(?<!\\):mode=")
_FORMS = ("tcp:PORT[:interface=ADDRESS], unix:PATH, "
          "ssl:PORT:privateKey=KEY.pem:certKey=CERT.pem or systemd:domain=INET:index=N")


class ListenError(ConfigurationError):
    """An endpoint string that cannot be used; ``description`` is it, ``problem`` says why."""

    def __init__(self, description: str, problem: str) -> None:
        super().__init__(f"{description}: {problem}")
        self.description = description
        self.problem = problem


def private_unix(description: str) -> str:
    """Give a ``unix:`` endpoint ``mode=600`` unless it names a mode itself."""
    if description.startswith("unix:") and not _MODE.search(description):
        return description + ":mode=600"
    return description


def _unescaped_fields(description: str) -> list[str]:
    return [part.replace("\\:", ":") for part in re.split(r"(?<!\\):", description)]


def unix_path(description: str) -> str | None:
    """The socket path of a ``unix:`` endpoint string (None for other kinds)."""
    kind, *rest = _unescaped_fields(description)
    if kind != "unix":
        return None
    positional = [p for p in rest if "=" not in p]
    named = dict(p.split("=", 1) for p in rest if "=" in p)
    return named.get("address", positional[0] if positional else "")


def _check_unix(description: str) -> None:
    path = unix_path(description)
    if not path:
        raise ListenError(description, "no socket path; give one, e.g. unix:/tmp/ws.sock")
    if path.startswith("\0") or path.startswith("@"):
        return  # Linux abstract namespace: no directory to check
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ListenError(description, f"directory {directory} does not exist; "
                                       "create it or choose another socket path")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ListenError(description, f"permission denied: cannot create a socket in "
                                       f"{directory}; choose a directory you may write to")
    if len(os.fsencode(os.path.abspath(path))) > 107:
        raise ListenError(description, "socket path longer than the 107 bytes unix sockets "
                                       "allow; choose a shorter one")


def parse(reactor: IReactorCore, description: str) -> IStreamServerEndpoint:
    """The endpoint for ``description`` (unix sockets private by default); ListenError if unusable."""
    kind = description.split(":", 1)[0]
    if kind == "unix":
        _check_unix(description)
    try:
        endpoint = serverFromString(reactor, private_unix(description))
    except Exception as e:  # Twisted's parsers raise ValueError/KeyError/TypeError/OSError...
        raise ListenError(description, _parse_problem(kind, e)) from e
    if kind in ("tcp", "tcp6", "ssl"):  # Twisted takes port 99999 and fails only at bind time
        fields = _unescaped_fields(description)[1:]
        named = dict(p.split("=", 1) for p in fields if "=" in p)
        port = named.get("port", next((p for p in fields if "=" not in p), "0"))
        if not 0 <= int(port) <= 65535:
            raise ListenError(description, f"port {port} is out of range; choose 0-65535")
    return endpoint


def _parse_problem(kind: str, e: Exception) -> str:
    text = " ".join(str(e).split())
    if "Unknown endpoint type" in text:
        return f"unknown endpoint type {kind!r}; use {_FORMS}"
    if kind == "systemd" and isinstance(e, (IndexError, KeyError, ValueError)):
        return ("no such socket from systemd (is LISTEN_FDS set? start it from a .socket "
                "unit, see docs/deployment.md, or use tcp:/unix:)")
    if kind == "ssl":
        if isinstance(e, OSError):
            return (f"cannot read TLS file {e.filename}: {e.strerror}; check privateKey= "
                    "and certKey= (PEM files)")
        return (f"the TLS key or certificate cannot be loaded ({text}); give PEM files: "
                "ssl:PORT:privateKey=KEY.pem:certKey=CERT.pem")
    if isinstance(e, TypeError) and "unexpected keyword argument" in text:
        name = text.rsplit(" ", 1)[-1]
        return f"{kind}: endpoints take no parameter {name}; use {_FORMS}"
    return f"not a valid {kind}: endpoint string ({text}); use {_FORMS}"


def listen_problem(description: str, e: BaseException) -> str:
    """Why listening on ``description`` failed, and what to do, in one line."""
    inner = e.socketError if isinstance(e, CannotListenError) else e
    code = getattr(inner, "errno", None)
    if code == errno.EADDRINUSE:
        if description.startswith("unix:"):
            return ("address already in use (another server listens on this socket? "
                    "stop it or choose another path)")
        return ("address already in use (is another server running? choose another port "
                "with --listen tcp:PORT)")
    if code in (errno.EACCES, errno.EPERM):
        if description.startswith("unix:"):
            return "permission denied; choose a socket path in a directory you may write to"
        return ("permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE; "
                "choose a port from 1024, or let systemd hold the port: systemd:)")
    if code == errno.EADDRNOTAVAIL:
        return ("the interface is not an address of this machine; use 127.0.0.1, ::1, "
                "0.0.0.0 or one of this machine's addresses")
    if code == errno.ENOENT:
        directory = os.path.dirname(os.path.abspath(unix_path(description) or "."))
        return f"directory {directory} does not exist; create it or choose another path"
    if isinstance(e, CannotListenError) and "lock" in str(inner).lower():
        return ("another process holds this socket's lock file (is another server running? "
                "stop it or choose another path)")
    text = " ".join(str(getattr(inner, "strerror", None) or inner).split())
    return f"cannot listen: {text}"
