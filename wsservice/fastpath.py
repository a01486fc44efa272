"""Speed tricks on Autobahn and Twisted internals, fenced in one module.

Nothing here runs at import. The WebSocket factory asks ``choose()`` at start-up; it probes
for every private name the tricks rely on and, when one is missing (a newer Autobahn or
Twisted), or when the ``fast_path`` setting is off, the adapter uses Autobahn's public path
only. Each trick and why it pays:

- Unmasking: RFC 6455 makes clients mask every frame, and Autobahn builds a native (cffi)
  masker per frame; building it costs more than unmasking a small payload (profiled: about
  a fifth of the server's time on a call workload). For frames up to SMALL bytes a Python
  integer XOR is cheaper. Autobahn looks its masker factory up as a module global while it
  parses frames, so ours is put there only for the span of our own protocol's
  ``dataReceived`` and restored after. (Code running inside that span, e.g. a handler
  sending through an Autobahn client in the same process, gets it too: it masks exactly as
  Autobahn's own, only faster for small frames.)
- Lazy formatting: every new connection pretty-printed its ~30 settings for a DEBUG line
  that is then dropped; during our own ``_connectionMade`` only, ``pformat`` defers it.
- A quiet read: Autobahn's dataReceived formats the arguments of a DEBUG line on every
  read from the socket; ours goes straight to the parser.
- Small frames read here: Autobahn parses every frame in Python through a dozen hooks, a
  frame-header object and a masker object, and slices its buffer three times (profiled:
  about half of the server's time per call). A complete, masked, unfragmented text frame of
  up to SMALL bytes, arriving while no frame or message is in progress, is unmasked here
  and handed to the adapter's onMessage as Autobahn's hooks would. Anything else (control
  frames, fragments, binary, compression, a frame over a size limit, an unmasked or
  malformed header, a closing connection) and everything after it in the same read goes to
  Autobahn's parser, which keeps every check and error of its own. A small frame cut by the
  end of a read waits in Autobahn's own buffer (``data``, with no frame begun) for the rest.
- Redis commands encoded at C speed: txredisapi builds each command's RESP in Python, one
  isinstance chain, bytearray extend and str.format per argument; a node's batch script
  carries four arguments per push, so that was a third of a clustered node's time per event
  (profiled). ``redis_protocol()`` gives the engine a txredisapi protocol class whose
  ``_build_command`` writes the same bytes with %-formatting and one join (exact bytes, str
  and int arguments; anything else through txredisapi's own encoder).
- A smaller idle connection: Autobahn gives each connection a deque for its own queued
  sends (about 700 bytes, nearly always empty); a list with ``popleft`` serves its three
  uses (append, popleft, len) in 56.

``install()`` puts these paths (sendText, dataReceived, _connectionMade) on
one factory's own protocol class, never on Autobahn's; without it the adapter's own methods
use Autobahn's public paths only.
- Direct frames: a server text frame is a 2-10 byte header before the payload (no mask,
  no compression), written here rather than through Autobahn's general
  sendMessage/sendFrame/sendData, which cost more than the service does.
- Corking and direct send: the frames of one reactor turn for a connection go out with
  one send() straight to its socket when Twisted's buffer for it is empty (no epoll
  register/unregister per connection written to); whatever the kernel does not take goes
  through ``transport.write()``, so backpressure and ordering are unchanged.

(The adapter's own onMessage* hooks, public ones, keep each message being received and skip
the 'message' event Autobahn's onMessageEnd fires; nothing here replaces them.)
"""

from __future__ import annotations

import pprint
import struct
from collections import deque
from typing import Any, Callable

import autobahn.websocket.protocol as _protocol
from autobahn.twisted.websocket import WebSocketServerProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet import abstract, tcp
from twisted.internet.interfaces import IReactorTime

from .log import logger

SMALL = 4096  # largest frame unmasked in Python
MAX_BATCH = 65536  # a turn's frames for one connection are held back at most this long (bytes)

_log = logger(__name__)
_from_bytes = int.from_bytes
_create_xor_masker = _protocol.create_xor_masker
_pformat = pprint.pformat


class SmallMasker:
    """Autobahn's masker interface (pointer, reset, process) for one small frame."""

    __slots__ = ("_mask", "_ptr")

    def __init__(self, mask: bytes) -> None:
        self._mask = mask
        self._ptr = 0

    def pointer(self) -> int:
        """Bytes processed so far."""
        return self._ptr

    def reset(self) -> None:
        """Start over."""
        self._ptr = 0

    def process(self, data: bytes) -> bytes:
        """XOR the next ``len(data)`` bytes of the payload with the (rotated) mask."""
        n = len(data)
        if not n:
            return b""
        k = self._ptr & 3
        mask = self._mask[k:] + self._mask[:k] if k else self._mask
        self._ptr += n
        key = mask * ((n >> 2) + 1)
        return (_from_bytes(data, "little") ^ _from_bytes(key[:n], "little")).to_bytes(
            n, "little")


def create_xor_masker(mask: bytes, length: int | None = None) -> object:
    """SmallMasker for small frames, Autobahn's own otherwise."""
    if length is not None and length <= SMALL:
        masker = _new_masker(SmallMasker)  # without __init__: this runs once per frame
        masker._mask = mask
        masker._ptr = 0
        return masker
    return _create_xor_masker(mask, length)


_new_masker = object.__new__


class LazyFormat(str):
    """pprint.pformat(value), computed only if the log line is written.

    A str (empty until formatted) so that anything that insists on a str still gets one.
    """

    __slots__ = ("_value",)
    _value: object

    def __new__(cls, value: object) -> LazyFormat:
        self = super().__new__(cls, "")
        self._value = value
        return self

    def __str__(self) -> str:
        return _pformat(self._value)

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


_OPEN = WebSocketProtocol.STATE_OPEN


def receive_small(self: Any, data: bytes) -> bytes:
    """Hand every complete small text frame at the start of ``data`` to ``onMessage``; the
    rest of ``data``, from the first frame left to Autobahn (see the module docstring)."""
    pending = self.data
    if pending:
        data = pending + data
        self.data = b""
    end = len(data)
    limit = self._small_limit
    on_message = self.onMessage
    pos = 0
    while end - pos >= 6:
        length = data[pos + 1] - 0x80  # the mask bit must be set: negative if not
        if data[pos] != 0x81 or length < 0:  # FIN, no RSV bits, text
            break
        if length < 126:
            start = pos + 6
        elif length == 126 and end - pos >= 8:
            length = (data[pos + 2] << 8) | data[pos + 3]
            if length < 126:
                break  # not the minimal encoding: Autobahn fails the connection
            start = pos + 8
        else:
            break  # a 64-bit length, or a header not complete yet
        if length > limit:
            break
        stop = start + length
        if stop > end:
            break
        if length:
            key = data[start - 4:start] * ((length >> 2) + 1)
            payload = (_from_bytes(data[start:stop], "little")
                       ^ _from_bytes(key[:length], "little")).to_bytes(length, "little")
        else:
            payload = b""
        pos = stop
        if self.autoPingTimeoutCall and self.autoPingRestartOnAnyTraffic:
            self._cancelAutoPingTimeoutCall()  # as Autobahn does on any data frame
        on_message(payload, False)
        if self.state != _OPEN:
            break
    rest = data[pos:] if pos else data
    if rest and self.state == _OPEN and _small_start(rest, limit):
        self.data = rest  # the start of a small frame: the next read completes it
        return b""
    return rest


def _small_start(rest: bytes, limit: int) -> bool:
    """Whether ``rest``, shorter than its frame, starts a frame receive_small would read."""
    n = len(rest)
    if rest[0] != 0x81:
        return False
    if n < 2:
        return True
    length = rest[1] - 0x80
    if length < 0 or length > 126:
        return False
    if length < 126:
        return length <= limit
    if n < 4:
        return True
    length = (rest[2] << 8) | rest[3]
    return 126 <= length <= limit


def data_received(self: Any, data: bytes) -> None:
    """dataReceived of a fast protocol: small frames read here (receive_small), the rest by
    Autobahn's parser with the small-frame masker, and without Autobahn's DEBUG line (its
    arguments are formatted on every read)."""
    if self._small and self.state == _OPEN and self.current_frame is None \
            and not self.inside_message:
        data = receive_small(self, data)
        if not data:
            return
    before = _protocol.create_xor_masker
    _protocol.create_xor_masker = create_xor_masker
    try:
        self._dataReceived(data)
    finally:
        _protocol.create_xor_masker = before


def install(cls: type) -> None:
    """Make ``cls`` (one factory's own protocol class) take the fast receive paths."""
    made: Callable[[Any], None] = cls._connectionMade  # type: ignore[attr-defined]

    def _connectionMade(self: Any) -> None:
        # Autobahn's, with its per-connection settings dump formatted only if logged
        before = _protocol.pformat
        _protocol.pformat = LazyFormat  # type: ignore[assignment]
        try:
            made(self)
        finally:
            _protocol.pformat = before
        queue = getattr(self, "send_queue", None)
        if type(queue) is deque and not queue:
            self.send_queue = SendQueue()  # nothing was queued yet

    public_send: Callable[[Any, bytes], None] = cls.sendText  # type: ignore[attr-defined]

    def sendText(self: Any, payload: bytes) -> None:
        # an open connection without compression or fragmentation, nothing of Autobahn's
        # own waiting to be sent: write the frame here, else Autobahn's path
        if not (self._plain and self.state == self.STATE_OPEN
                and self.send_state == self.SEND_STATE_GROUND and not self.send_queue):
            public_send(self, payload)
            return
        n = len(payload)
        frame = _SMALL_HEADERS[n] + payload if n < 126 else text_frame(payload)
        if self._direct and not self._paused:
            batch = self._batch
            if batch is None:
                self._batch = [frame]
                self._batched = len(frame)
                self.factory.corker.add(self)
            else:
                batch.append(frame)
                self._batched += len(frame)
                if self._batched > MAX_BATCH:
                    flush(self)  # large bursts go on at once, under backpressure
        else:
            if self._batch is not None:
                flush(self)
            if self._paused:
                self._count_backlog(len(frame))
            self.transport.write(frame)

    setattr(cls, "_connectionMade", _connectionMade)
    setattr(cls, "dataReceived", data_received)
    setattr(cls, "sendText", sendText)


class SendQueue(list):
    """Autobahn's queue of its own sends, as a list: a deque's first block costs ~700 bytes
    per connection, and the queue is nearly always empty."""

    __slots__ = ()

    def popleft(self) -> Any:
        """The oldest entry (the queue is short: a list's pop(0) is cheap there)."""
        return self.pop(0)


def build_command(self: Any, *args: Any, **kwargs: Any) -> bytes:
    """txredisapi's ``_build_command`` for a connection without a charset (``str`` as
    UTF-8), byte for byte, faster (see the module docstring)."""
    out = [b"*%d\r\n" % len(args)]
    append = out.append
    for arg in args:
        kind = type(arg)
        if kind is bytes:
            data = arg
        elif kind is str:
            data = arg.encode()
        elif kind is int:
            data = b"%d" % arg
        else:
            data = self._encode_value(arg)
        append(b"$%d\r\n" % len(data))
        append(data)
        append(b"\r\n")
    return b"".join(out)


def redis_protocol(base: type) -> type:
    """A subclass of ``base`` (a txredisapi protocol class, connected without a charset)
    that encodes commands with build_command."""
    return type(base.__name__, (base,), {"_build_command": build_command})


def opened(protocol: Any) -> None:
    """A fast protocol's connection is open: may its frames be written here, sent straight
    to its socket, and small ones read here?"""
    protocol._plain = protocol._perMessageCompress is None and not protocol.autoFragmentSize
    limits = [SMALL] + [n for n in (protocol.maxFramePayloadSize,
                                    protocol.maxMessagePayloadSize) if n > 0]
    protocol._small_limit = min(limits)
    # what Autobahn would do differently per frame: decompress, log, unmask optionally,
    # accept unmasked frames, check UTF-8 itself (the adapter leaves that to wire.decode)
    protocol._small = (protocol._perMessageCompress is None and not protocol.logFrames
                       and not protocol.logOctets and protocol.applyMask
                       and protocol.requireMaskedClientFrames
                       and not protocol.utf8validateIncoming)
    # plain TCP and unix transports (not TLS, not test ones) have a socket to send to
    protocol._direct = can_send_directly(protocol.transport)


def flush(protocol: Any) -> None:
    """Send the frames ``protocol`` gathered this turn (its ``_batch``) in one write."""
    batch, protocol._batch = protocol._batch, None
    if batch and protocol.transport is not None:
        send_now(protocol.transport, batch[0] if len(batch) == 1 else b"".join(batch))


_pack_header16 = struct.Struct("!BBH").pack
_pack_header64 = struct.Struct("!BBQ").pack
# Headers of unmasked, unfragmented server text frames (FIN + opcode 1), made once.
_SMALL_HEADERS = [bytes((0x81, n)) for n in range(126)]


def text_frame(payload: bytes) -> bytes:
    """One unmasked, unfragmented, uncompressed text frame carrying ``payload``."""
    n = len(payload)
    if n < 126:
        return _SMALL_HEADERS[n] + payload
    if n < 65536:
        return _pack_header16(0x81, 126, n) + payload
    return _pack_header64(0x81, 127, n) + payload


def can_send_directly(transport: Any) -> bool:
    """Whether ``transport`` is a plain TCP/unix connection with the internals send_now reads."""
    return isinstance(transport, tcp.Connection) and hasattr(transport, "_tempDataLen") \
        and hasattr(transport, "socket")


def send_now(transport: Any, data: bytes) -> None:
    """Write ``data``: straight to the socket when nothing else waits in Twisted's buffer for
    it, the rest (or all of it) through ``transport.write()``."""
    if not transport.connected or transport.disconnecting:
        return
    if not transport._tempDataLen and len(transport.dataBuffer) == transport.offset:
        try:
            sent = transport.socket.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            sent = 0  # transport.write() meets the error again and reports it its way
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)


class Corker:
    """Gathers the connections written to during one reactor turn; flushes each once the turn
    is over (see the module docstring)."""

    def __init__(self, reactor: IReactorTime) -> None:
        self._reactor = reactor
        self._corked: list[Any] = []
        self._call: Any = None

    def add(self, protocol: Any) -> None:
        """``protocol``'s batch is to be flushed at the end of this turn."""
        self._corked.append(protocol)
        if self._call is None:
            self._call = self._reactor.callLater(0, self.flush)

    def flush(self) -> None:
        """Flush every connection corked this turn."""
        self._call = None
        corked, self._corked = self._corked, []
        for protocol in corked:
            flush(protocol)


# Everything Autobahn's own dataReceived does, by the names it uses: the fast version replaces
# it, so anything new there turns the fast path off rather than being skipped silently.
_ADAPTER_DATA_RECEIVED = {"log", "debug", "hltype", "hlval", "dataReceived", "peer", "len",
                          "_dataReceived"}


def _names(function: Any) -> tuple[str, ...]:
    code = getattr(function, "__code__", None)
    return code.co_names if code is not None else ()


def _redis_probe() -> bool:
    import txredisapi  # type: ignore[import-untyped]
    base = txredisapi.BaseRedisProtocol
    return "_build_command" in _names(base.execute_command) \
        and callable(getattr(base, "_encode_value", None))


def choose_redis(wanted: bool) -> bool:
    """Whether a cluster node's Redis commands may be encoded by build_command (``wanted``,
    and txredisapi still builds them with the methods it replaces); says so once if not."""
    on = wanted and _redis_probe()
    if wanted and not on and (False, "redis") not in _told:
        _told.add((False, "redis"))
        _log.info("Redis command fast path off: this txredisapi lacks "
                  "BaseRedisProtocol._build_command/_encode_value")
    return on


# What each trick reads or replaces, checked against the Autobahn and Twisted in use.
def _probes() -> list[tuple[str, bool]]:
    W = WebSocketProtocol
    return [
        ("autobahn.websocket.protocol.create_xor_masker",
         callable(getattr(_protocol, "create_xor_masker", None))
         and "create_xor_masker" in _names(W.processData)),
        ("autobahn.websocket.protocol.pformat",
         "pformat" in vars(_protocol) and "pformat" in _names(W._connectionMade)),
        ("WebSocketProtocol.dataReceived/_connectionMade",
         callable(getattr(W, "_dataReceived", None))
         and callable(getattr(W, "_connectionMade", None))
         and set(_names(WebSocketServerProtocol.dataReceived)) <= _ADAPTER_DATA_RECEIVED),
        ("WebSocketProtocol.send_state/send_queue/SEND_STATE_GROUND",
         hasattr(W, "SEND_STATE_GROUND") and "send_queue" in _names(W.sendData)
         and "send_state" in _names(W.beginMessage)),
        ("twisted.internet.abstract.FileDescriptor._tempDataLen/dataBuffer/offset",
         "_tempDataLen" in _names(abstract.FileDescriptor.__init__)
         and hasattr(abstract.FileDescriptor, "dataBuffer")
         and hasattr(abstract.FileDescriptor, "offset")),
        ("twisted.internet.tcp.Connection.socket",
         "socket" in _names(tcp.Connection.__init__)),
        ("WebSocketProtocol.data/current_frame/inside_message/_cancelAutoPingTimeoutCall",
         {"data", "current_frame"} <= set(_names(W.processData))
         and "inside_message" in _names(W.onFrameBegin)
         and {"autoPingTimeoutCall", "autoPingRestartOnAnyTraffic",
              "_cancelAutoPingTimeoutCall"} <= set(_names(W.onFrameEnd))
         and {"_onMessageBegin", "_onMessageFrameData", "_onMessageEnd"}
         <= set(_names(W.onFrameBegin)) | set(_names(W.onFrameData))
         | set(_names(W.onFrameEnd))),
        ("WebSocketProtocol.send_queue (append/popleft/len)",
         "deque" in _names(W._connectionMade)
         and {"popleft"} <= set(_names(W._send))
         and {"append"} <= set(_names(W.sendData))),
    ]


def missing() -> list[str]:
    """The private names the fast path needs that this Autobahn or Twisted lacks."""
    return [name for name, present in _probes() if not present]


_told: set[tuple[bool, str]] = set()


def choose(wanted: bool) -> bool:
    """Whether the fast path may run (``wanted``, and every probe passed); says so once."""
    lacking = missing() if wanted else []
    on = wanted and not lacking
    why = ("on" if on else "off (--no-fast-path)" if not wanted
           else "off: this Autobahn/Twisted lacks " + ", ".join(lacking))
    if (on, why) not in _told:
        _told.add((on, why))
        _log.info("WebSocket fast path {state}", state=why)
    return on
