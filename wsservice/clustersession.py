"""ClusterSession: a session whose messages Redis numbers and keeps before they are written."""

from __future__ import annotations

from typing import Any

import orjson

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from .reasons import Close
from .redisengine import DOWN
from .session import Session

GAP_WAIT = 1.0  # seconds a missing seq may be late (another connection's record) before it is fetched


class ClusterSession(Session):
    """A session of a cluster node.

    Every pushed message goes to Redis first (in the turn's batch); Redis gives it the next
    seq and keeps it; only then is it written, in seq order: messages numbered for this
    session come back on two connections (answers and published records), so one that
    arrives early waits for the ones before it.
    """

    def __init__(self, host: Any, record: Any, link: Any) -> None:
        super().__init__(host, record, link)
        self._engine = record._store.engine
        self._written = record.seq  # the last seq written (or skipped over) to the client
        self._held: dict[int, tuple[bytes, str]] | None = None
        self._gap: IDelayedCall | None = None
        # pushes sent to Redis and not yet answered; replies made meanwhile wait behind
        # them, so a client sees a handler's pushes before the answer it gave after them
        self._unanswered = 0
        self._behind: list[tuple[bytes, str]] | None = None

    def busy(self) -> bool:
        """Calls still running, or replies waiting behind pushes Redis has not kept yet."""
        return bool(self._inflight) or self._unanswered > 0

    def _makeMember(self) -> dict[str, Any]:
        """As made where the session was created (kept in Redis with it)."""
        return orjson.loads(self._record.member)  # type: ignore[attr-defined]  # a RedisRecord

    @property
    def written(self) -> int:
        """The seq of the last message written to (or skipped for) the client."""
        return self._written

    def deliver(self, prefix: bytes, kind: str) -> Any:
        """Push through Redis; a Deferred firing with the seq once it is kept (0 if it could
        not be: Redis failed). While Redis is away, sent at once (not kept)."""
        d: Deferred = Deferred()
        if self._engine.op(self._pushed, (prefix, kind, d), b"P", self.id, kind, prefix):
            self._unanswered += 1
            return d
        # Redis is away: the client still gets it, but no other node can replay it
        record = self._record
        record.diverged = True  # type: ignore[attr-defined]  # a RedisRecord
        seq = self._written = record.seq = self._written + 1
        link = self._link
        if link is not None:
            self._out[kind] += 1
            link.sendText(b"%b%d}" % (prefix, seq))
        return seq

    def _pushed(self, context: tuple[bytes, str, Deferred], result: Any) -> None:
        prefix, kind, d = context
        self._unanswered -= 1
        if isinstance(result, Failure):
            seq = 0  # never written: nothing is reported as delivered
        else:
            seq = int(result)
            if seq > 0:
                self.stamped(seq, prefix, kind)
        if not self._unanswered and self._behind and not self._held:
            self._sendBehind()
        d.callback(abs(seq))

    def send(self, frame: bytes, kind: str) -> None:
        """Send an un-numbered message, after the pushes made before it (a welcome goes at
        once: the replay that follows it is written at once too)."""
        if (self._unanswered or self._behind) and kind != "welcome":
            behind = self._behind
            if behind is None:
                behind = self._behind = []
            behind.append((frame, kind))
            return
        super().send(frame, kind)

    def reply(self, call_id: Any, result: Any) -> None:
        """Answer a request, after the pushes made before the answer."""
        if self._unanswered or self._behind:
            from . import wire
            try:
                frame = wire.encode_result(call_id, result)
            except TypeError:
                super().reply(call_id, result)  # logs it and answers internal (via send)
                return
            self.send(frame, "result")
            return
        super().reply(call_id, result)

    def _sendBehind(self) -> None:
        behind, self._behind = self._behind, None
        link = self._link
        if link is not None and behind:
            for frame, kind in behind:
                self._out[kind] += 1
                link.sendText(frame)

    def stamped(self, seq: int, prefix: bytes, kind: str) -> None:
        """Redis kept ``prefix`` as message ``seq``: write it, in order."""
        record = self._record
        if seq > record.seq:
            record.seq = seq
        written = self._written
        if seq == written + 1:
            self._written = seq
            link = self._link
            if link is not None:
                self._out[kind] += 1
                link.sendText(b"%b%d}" % (prefix, seq))
            if self._held:
                self._release()
        elif seq > written:
            held = self._held
            if held is None:
                held = self._held = {}
            held[seq] = (prefix, kind)
            if self._gap is None:
                self._gap = self._engine.reactor.callLater(GAP_WAIT, self._fillGap)

    def _release(self) -> None:
        held = self._held
        assert held is not None
        link = self._link
        while held:
            entry = held.pop(self._written + 1, None)
            if entry is None:
                break
            self._written += 1
            if link is not None:
                self._out[entry[1]] += 1
                link.sendText(b"%b%d}" % (entry[0], self._written))
        if not held:
            self._held = None
            if self._gap is not None:
                if self._gap.active():
                    self._gap.cancel()
                self._gap = None
            if self._behind and not self._unanswered:
                self._sendBehind()

    def _fillGap(self) -> None:
        """A seq never came (its record was lost with a connection): read it from Redis."""
        self._gap = None
        if self.closed or not self._held or self._engine.state == DOWN:
            return
        self._engine.run("fetch", self.id, self._written + 1).addCallbacks(
            self._fetched, lambda f: None)

    def _fetched(self, answer: list) -> None:
        if self.closed or not answer:
            return
        first, frames = int(answer[0]), answer[1:]
        start = max(first, self._written + 1)
        self.caughtUp(start + len(frames) - 1 if frames else self._record.seq, first, frames)

    def caughtUp(self, seq: int, first: int, frames: list[bytes]) -> None:
        """Redis has this session up to ``seq`` and keeps ``frames`` from ``first`` on (or
        later): write what the client has not had."""
        record = self._record
        written = self._written
        start = max(first, written + 1)
        if start > written + 1 and seq > written:
            # messages the client never had are gone from Redis too: its next resume
            # must say so, which a new connection gets
            self._held = None
            self._written = seq
            record.seq = max(record.seq, seq)
            if self._link is not None:
                host: Any = self._host
                host.disconnect(self, Close.INTERNAL_ERROR,
                                "messages were lost while Redis was away")
            return
        link = self._link
        for offset, frame in enumerate(frames):
            number = start + offset
            if number == self._written + 1:
                self._written = number
                if link is not None:
                    self._out["message"] += 1
                    link.sendText(frame)
        if seq > self._written and not frames:
            self._written = seq  # nothing left to write (the diverged case starts over)
        record.seq = max(record.seq, self._written)
        if self._held:
            for number in [n for n in self._held if n <= self._written]:
                del self._held[number]
            self._release()

    def resend(self, frames: list[bytes]) -> None:
        """Replay a claim's frames: everything up to the record's seq is the client's now."""
        self._written = self._record.seq
        super().resend(frames)
        if self._held:
            for number in [n for n in self._held if n <= self._written]:
                del self._held[number]
            if self._held:
                self._release()
            else:
                self._held = None

    def taken(self) -> None:
        """Another node holds this session now: let go of it here."""
        self._host.moved(self)  # type: ignore[attr-defined]
