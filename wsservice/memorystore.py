"""The in-memory session store: one process's session directory and replay buffers."""

from __future__ import annotations

from typing import AbstractSet, Any, Callable, Iterator

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from zope.interface import implementer

from .framelog import FrameLog
from .interfaces import ISessionRecord, ISessionStore
from .store import Claim, token_hash, token_matches


_NO_TOPICS: frozenset[str] = frozenset()
# Shared by every record that has kept nothing yet; never appended to (append swaps it).
_NONE_KEPT = FrameLog()


@implementer(ISessionRecord)
class MemoryRecord:
    """One session's resumable state, in this process's memory."""

    __slots__ = ("id", "label", "principal", "meta", "seq", "subscriptions", "_token",
                 "_frames", "_size", "_expiry", "_store")

    def __init__(self, session_id: str, token: str, label: str, principal: Any, meta: dict,
                 store: MemorySessionStore) -> None:
        self.id = session_id
        self.label = label
        self.principal = principal
        self.meta = meta
        self.seq = 0
        self.subscriptions: AbstractSet[str] = _NO_TOPICS  # a set of its own once subscribed
        self._token = token_hash(token)
        # pushed frames kept for resume, oldest first, end to end in one buffer (FrameLog:
        # no object per frame), and their total size. Seqs are consecutive, so the last
        # frame's is ``seq`` and the first's is derived (no seq kept per frame)
        self._frames = _NONE_KEPT  # a FrameLog of its own from the first frame
        self._size = 0
        self._expiry: IDelayedCall | None = None
        # the store: its per-session limits, and the process-wide budget the frames count in
        self._store = store

    def __repr__(self) -> str:
        return f"<MemoryRecord {self.label} seq={self.seq}>"

    def append(self, seq: int, frame: bytes) -> None:
        """Keep ``frame`` for replay, dropping the oldest past the limits (see ISessionRecord)."""
        frames = self._frames
        if frames is _NONE_KEPT:
            frames = self._frames = FrameLog()  # an idle session never pushed to has none
        before = self._size
        if seq != self.seq + 1 and frames:
            # a gap (not made by this package's Session): what is kept cannot be replayed
            # exactly across it, and the first frame's seq must stay derivable
            frames.clear()
            self._forgot(0)
            before = 0
        self.seq = seq
        store = self._store
        size = self._size = frames.add(frame, before, store.replay_limit, store.replay_bytes)
        # one sum per frame kept for the whole process's budget; trimming is rare
        kept = store.kept_bytes = store.kept_bytes + size - before
        if kept > store.max_memory:
            store._trim()

    def ack(self, seq: int) -> None:
        """Forget every kept frame up to ``seq``."""
        frames = self._frames
        size = self._size
        drop = len(frames) - (self.seq - seq)  # the kept frames whose seq is <= seq
        if drop > 0:
            self._forgot(size - frames.drop(drop))

    def _forgot(self, size: int) -> None:
        """The kept frames now add up to ``size``: tell the store what was freed."""
        self._store.kept_bytes -= self._size - size
        self._size = size

    def _shed(self, wanted: int) -> tuple[int, int]:
        """Drop the oldest kept frames until ``wanted`` bytes are freed (or none are left);
        the frames and bytes dropped."""
        frames = self._frames
        size = self._size
        goal = size - wanted
        dropped = 0
        while frames and size > goal:
            size -= frames.popleft()
            dropped += 1
        freed = self._size - size
        self._forgot(size)
        return dropped, freed

    def subscribe(self, topic: str) -> None:
        """Remember a subscription."""
        topics = self.subscriptions
        if type(topics) is not set:
            topics = self.subscriptions = set()  # an empty set costs 216 bytes: only now
        topics.add(topic)

    def unsubscribe(self, topic: str) -> None:
        """Forget a subscription."""
        topics = self.subscriptions
        if type(topics) is set:
            topics.discard(topic)

    def kept(self) -> list[tuple[int, bytes]]:
        """The frames kept for replay, oldest first, with their seqs (for tests and tools)."""
        first = self.seq - len(self._frames) + 1
        return list(enumerate(self._frames.frames(), first))

    @property
    def kept_bytes(self) -> int:
        """The total size of the kept frames."""
        return self._size

    def _after(self, last_seq: int) -> list[bytes] | None:
        if last_seq > self.seq:
            return None  # the client claims messages never sent: it cannot be exact
        if last_seq < self.seq and len(self._frames) < self.seq - last_seq:
            return None  # the first frame after last_seq is no longer kept
        self.ack(last_seq)
        return self._frames.frames()

    def _stop_expiry(self) -> None:
        expiry, self._expiry = self._expiry, None
        if expiry is not None and expiry.active():
            expiry.cancel()

    def _drop(self) -> None:
        self._stop_expiry()
        self._frames = _NONE_KEPT
        self._forgot(0)
        self.subscriptions = _NO_TOPICS


@implementer(ISessionStore)
class MemorySessionStore:
    """Sessions in this process's memory: they end with it (the Redis store outlives it)."""

    def __init__(self, clock: IReactorTime, replay_limit: int = 1000,
                 replay_bytes: int = 1 << 20, max_memory: int = 256 << 20) -> None:
        self._clock = clock
        self.replay_limit = replay_limit  # frames and bytes kept per session
        self.replay_bytes = replay_bytes
        self._records: dict[str, MemoryRecord] = {}
        # detached records, longest-detached first: their buffers are trimmed first
        self._detached: dict[str, MemoryRecord] = {}
        self.max_memory = max_memory
        self.kept_bytes = 0  # every record's kept frames, in bytes
        self.trimmed_messages = 0  # frames dropped to stay within max_memory
        self.trimmed_bytes = 0

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[str]:
        """The ids of the sessions kept."""
        return iter(list(self._records))

    def create(self, session_id: str, token: str, label: str, principal: Any,
               meta: dict) -> Deferred[ISessionRecord]:
        """A new session's record (see ISessionStore)."""
        record = MemoryRecord(session_id, token, label, principal, meta, self)
        self._records[session_id] = record
        return succeed(record)

    def claim(self, session_id: str, token: str, last_seq: int) -> Deferred[Claim | None]:
        """Check the token, stop expiry, and answer what to replay (see ISessionStore)."""
        record = self._records.get(session_id)
        if record is None or not token_matches(record._token, token):
            return succeed(None)
        record._stop_expiry()
        self._detached.pop(session_id, None)
        return succeed(Claim(record, record._after(last_seq)))

    def detach(self, record: ISessionRecord, ttl: float, expired: Callable[[], Any]) -> None:
        """Call ``expired()`` after ``ttl`` unless claimed or ended first."""
        kept = self._records.get(record.id)
        if kept is not None and kept is record and kept._expiry is None:
            def expire() -> None:
                kept._expiry = None
                self._detached.pop(kept.id, None)
                expired()
            kept._expiry = self._clock.callLater(ttl, expire)
            self._detached[kept.id] = kept

    def end(self, record: ISessionRecord) -> Deferred[None]:
        """Forget the session."""
        kept = self._records.get(record.id)
        if kept is not None and kept is record:
            del self._records[record.id]
            self._detached.pop(record.id, None)
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

    def _trim(self) -> None:
        """Over ``max_memory``: free down to 7/8 of it (so the next frames do not trim again
        at once), from detached buffers first, longest-detached first, then from the largest
        attached ones. A resume that needed a trimmed frame gets a new session."""
        excess = self.kept_bytes - self.max_memory * 7 // 8
        for record in list(self._detached.values()):
            if excess <= 0:
                return
            excess -= self._shed(record, excess)
        if excess <= 0:
            return
        # then the attached: lower the largest buffers to one common level, just enough
        # (sorting once: trimming is rare, and per-frame work here would be quadratic)
        ranked = sorted((r for r in self._records.values() if r._size),
                        key=lambda r: r._size, reverse=True)
        total = 0
        level = 0
        count = len(ranked)
        for i, record in enumerate(ranked):
            total += record._size
            below = ranked[i + 1]._size if i + 1 < count else 0
            if total - (i + 1) * below >= excess:
                level = max(below, (total - excess) // (i + 1))
                count = i + 1
                break
        for record in ranked[:count]:
            if record._size > level:
                self._shed(record, record._size - level)

    def _shed(self, record: MemoryRecord, wanted: int) -> int:
        dropped, freed = record._shed(wanted)
        self.trimmed_messages += dropped
        self.trimmed_bytes += freed
        return freed

    def replayStats(self) -> tuple[int, int, int]:
        """(bytes kept for replay, frames trimmed, bytes trimmed) for /metrics."""
        return self.kept_bytes, self.trimmed_messages, self.trimmed_bytes
