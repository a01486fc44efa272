"""The in-memory session store: one process's session directory and replay buffers."""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Iterator

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from zope.interface import implementer

from .interfaces import ISessionRecord, ISessionStore
from .store import Claim, token_hash, token_matches


@implementer(ISessionRecord)
class MemoryRecord:
    """One session's resumable state, in this process's memory."""

    __slots__ = ("id", "label", "principal", "meta", "seq", "subscriptions", "_token",
                 "_frames", "_size", "_limit", "_bytes", "_expiry")

    def __init__(self, session_id: str, token: str, label: str, principal: Any, meta: dict,
                 limit: int, max_bytes: int) -> None:
        self.id = session_id
        self.label = label
        self.principal = principal
        self.meta = meta
        self.seq = 0
        self.subscriptions: set[str] = set()
        self._token = token_hash(token)
        # pushed frames kept for resume, oldest first: (seq, frame), and their total size
        self._frames: deque[tuple[int, bytes]] = deque()
        self._size = 0
        self._limit = limit
        self._bytes = max_bytes
        self._expiry: IDelayedCall | None = None

    def __repr__(self) -> str:
        return f"<MemoryRecord {self.label} seq={self.seq}>"

    def append(self, seq: int, frame: bytes) -> None:
        """Keep ``frame`` for replay, dropping the oldest past the limits (see ISessionRecord)."""
        self.seq = seq
        frames = self._frames
        frames.append((seq, frame))
        self._size += len(frame)
        while len(frames) > self._limit or self._size > self._bytes:
            self._size -= len(frames.popleft()[1])

    def ack(self, seq: int) -> None:
        """Forget every kept frame up to ``seq``."""
        frames = self._frames
        while frames and frames[0][0] <= seq:
            self._size -= len(frames.popleft()[1])

    def subscribe(self, topic: str) -> None:
        """Remember a subscription."""
        self.subscriptions.add(topic)

    def unsubscribe(self, topic: str) -> None:
        """Forget a subscription."""
        self.subscriptions.discard(topic)

    def kept(self) -> list[tuple[int, bytes]]:
        """The frames kept for replay, oldest first, with their seqs (for tests and tools)."""
        return list(self._frames)

    @property
    def kept_bytes(self) -> int:
        """The total size of the kept frames."""
        return self._size

    def _after(self, last_seq: int) -> list[bytes] | None:
        if last_seq > self.seq:
            return None  # the client claims messages never sent: it cannot be exact
        if last_seq < self.seq and not (self._frames and self._frames[0][0] <= last_seq + 1):
            return None
        self.ack(last_seq)
        return [frame for _, frame in self._frames]

    def _stop_expiry(self) -> None:
        expiry, self._expiry = self._expiry, None
        if expiry is not None and expiry.active():
            expiry.cancel()

    def _drop(self) -> None:
        self._stop_expiry()
        self._frames.clear()
        self._size = 0
        self.subscriptions = set()


@implementer(ISessionStore)
class MemorySessionStore:
    """Sessions in this process's memory: they end with it (the Redis store outlives it)."""

    def __init__(self, clock: IReactorTime, replay_limit: int = 1000,
                 replay_bytes: int = 1 << 20) -> None:
        self._clock = clock
        self._limit = replay_limit
        self._bytes = replay_bytes
        self._records: dict[str, MemoryRecord] = {}

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[str]:
        """The ids of the sessions kept."""
        return iter(list(self._records))

    def create(self, session_id: str, token: str, label: str, principal: Any,
               meta: dict) -> Deferred[ISessionRecord]:
        """A new session's record (see ISessionStore)."""
        record = MemoryRecord(session_id, token, label, principal, meta, self._limit,
                              self._bytes)
        self._records[session_id] = record
        return succeed(record)

    def claim(self, session_id: str, token: str, last_seq: int) -> Deferred[Claim | None]:
        """Check the token, stop expiry, and answer what to replay (see ISessionStore)."""
        record = self._records.get(session_id)
        if record is None or not token_matches(record._token, token):
            return succeed(None)
        record._stop_expiry()
        return succeed(Claim(record, record._after(last_seq)))

    def detach(self, record: ISessionRecord, ttl: float, expired: Callable[[], Any]) -> None:
        """Call ``expired()`` after ``ttl`` unless claimed or ended first."""
        kept = self._records.get(record.id)
        if kept is not None and kept is record and kept._expiry is None:
            def expire() -> None:
                kept._expiry = None
                expired()
            kept._expiry = self._clock.callLater(ttl, expire)

    def end(self, record: ISessionRecord) -> Deferred[None]:
        """Forget the session."""
        kept = self._records.get(record.id)
        if kept is not None and kept is record:
            del self._records[record.id]
            kept._drop()
        return succeed(None)

    def get(self, session_id: str) -> MemoryRecord | None:
        """The record of ``session_id``, if the store has it (for tests and tools)."""
        return self._records.get(session_id)

    def expiresAt(self, session_id: str) -> float | None:
        """When a detached session expires (clock seconds), or None (for tests and tools)."""
        record = self._records.get(session_id)
        if record is None or record._expiry is None or not record._expiry.active():
            return None
        return record._expiry.getTime()
