"""The producer half of a connection's send queue, shared by the WebSocket and NDJSON
adapters: what waits past the transport's buffer is counted and bounded by max_send_queue."""

from __future__ import annotations

from typing import Any


class SendBacklog:
    """IPushProducer for a transport: while the transport's write buffer is full, every
    byte written is backlog; past the factory's ``max_send_queue`` it calls
    ``_slowConsumer()`` once (the adapter closes 4508 its own way)."""

    factory: Any  # whose max_send_queue bounds the backlog
    _paused = False  # the transport's buffer is full
    _backlog = 0  # bytes written since it filled
    _over = False  # once: closing writes a close frame or line through here too

    def pauseProducing(self) -> None:
        """The transport's buffer is full: what we write from now on is backlog."""
        self._paused = True

    def resumeProducing(self) -> None:
        """The transport's buffer has drained."""
        self._paused = False
        self._backlog = 0

    def stopProducing(self) -> None:
        """The transport is going away; the connection's loss follows."""

    def queued(self) -> int:
        """Bytes waiting to be written past the transport's own buffer (what
        ``max_send_queue`` bounds; /metrics sums it)."""
        return self._backlog

    def _count_backlog(self, size: int) -> None:
        self._backlog += size
        if self._backlog > self.factory.max_send_queue and not self._over:
            self._over = True
            self._slowConsumer()

    def _slowConsumer(self) -> None:
        """Over max_send_queue: close the connection for a slow consumer."""
        raise NotImplementedError
