"""The Redis session store and broker: resumable state and delivery shared by every node.

Redis numbers every pushed message (so a session's seq goes on while its node is gone) and
keeps it in the session's replay buffer before any node writes it to a socket; see
docs/cluster.md for the keys, scripts and failure cases.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Iterable, Iterator

import orjson
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from .auth import ANONYMOUS, Anonymous
from .errors import ApplicationError
from .interfaces import IBroker, IDeliverable, ISessionRecord, ISessionStore
from .log import logger
from .redisengine import SYNCING, UP, RedisEngine, RedisUnavailable
from .redislua import ADOPTED_FIELDS
from .store import Claim, member_of, memberships, token_hash

GRACE_MS = 60_000  # Redis keeps a detached session this long past resume_ttl, for a node to end it
_log = logger()


def encode_principal(principal: Any, warned: set[type] = set()) -> bytes:
    """A principal as Redis keeps it: JSON data, or the anonymous principal."""
    if isinstance(principal, Anonymous):
        return b""
    try:
        return orjson.dumps(principal)
    except TypeError:
        kind = type(principal)
        if kind not in warned:
            warned.add(kind)
            _log.warn("a principal of type {kind} is not JSON data: in a cluster it is kept "
                      "as null (return JSON data from the authenticator)", kind=kind.__name__)
        return b"null"


def decode_principal(data: bytes) -> Any:
    """The principal Redis kept."""
    return ANONYMOUS if not data else orjson.loads(data)


def _fire(d: Deferred, result: Any) -> None:
    if isinstance(result, Failure):
        d.errback(result)
    else:
        d.callback(result)


def _after(callback: Callable[[], Any], result: Any) -> None:
    callback()


@implementer(ISessionRecord)
class RedisRecord:
    """One session's resumable state, kept in Redis; this node's mirror of it."""

    __slots__ = ("id", "label", "principal", "meta", "seq", "subscriptions", "_tok",
                 "_expiry", "_store", "diverged", "detached", "member", "watching")

    def __init__(self, session_id: str, tok: bytes, label: str, principal: Any, meta: dict,
                 store: RedisSessionStore, seq: int = 0,
                 subscriptions: Iterable[str] = (), member: bytes = b"",
                 watching: Iterable[str] = ()) -> None:
        self.id = session_id
        self.label = label
        self.principal = principal
        self.meta = meta
        # the session as presence lists it (JSON), made where the session was created: a
        # principal kept as JSON may have lost its publicName since
        self.member = member or orjson.dumps(member_of(session_id, principal, meta))
        # the topics whose presence it hears (kept here too, to put back in a Redis that
        # lost them)
        self.watching: set[str] = set(watching)
        self.seq = seq  # the last seq this node knows of (Redis numbers every message)
        self.subscriptions: set[str] = set(subscriptions)
        self._tok = tok
        self._expiry: IDelayedCall | None = None
        self._store = store
        # True once this node sent a message Redis never kept (Redis was down)
        self.diverged = False
        self.detached = False

    def __repr__(self) -> str:
        return f"<RedisRecord {self.label} seq={self.seq}>"

    def append(self, seq: int, frame: bytes) -> Deferred[None]:
        """Keep ``frame`` as number ``seq``; a Deferred firing once Redis holds it."""
        self.seq = seq
        d: Deferred = Deferred()
        if not self._store.engine.op(_fire, d, b"K", self.id, seq, frame):
            self.diverged = True
            return fail(RedisUnavailable(self._store.engine.reason))
        return d.addCallback(lambda _: None)

    def ack(self, seq: int) -> None:
        """The client holds every message up to ``seq``."""
        self._store.engine.op(None, None, b"A", self.id, seq)

    def subscribe(self, topic: str) -> None:
        """Remember a subscription (in Redis: the topic's subscribers on this node)."""
        self.subscriptions.add(topic)
        self._store.engine.op(None, None, b"S", self.id, topic)

    def unsubscribe(self, topic: str) -> None:
        """Forget a subscription (and that its presence was heard)."""
        self.subscriptions.discard(topic)
        self.watching.discard(topic)
        self._store.engine.op(None, None, b"U", self.id, topic)

    def _stop_expiry(self) -> None:
        expiry, self._expiry = self._expiry, None
        if expiry is not None and expiry.active():
            expiry.cancel()


@implementer(ISessionStore)
class RedisSessionStore:
    """Sessions in Redis: any node resumes them, and they outlive the node that made them."""

    session_class: Any = None  # the Session class that goes with this store (cluster.py)

    def __init__(self, engine: RedisEngine, clock: IReactorTime, replay_limit: int = 1000,
                 replay_bytes: int = 1 << 20, resume_ttl: float = 60.0) -> None:
        self.engine = engine
        self._clock = clock
        self.replay_limit = replay_limit
        self.replay_bytes = replay_bytes
        self.resume_ttl = resume_ttl
        engine.limits = (replay_limit, replay_bytes)
        engine.resync = self._resync
        engine.adopted = self._adopted
        engine.adoptTTL = lambda: (int(self.resume_ttl * 1000), GRACE_MS)
        self._records: dict[str, RedisRecord] = {}  # the records of this node's sessions
        self._ended: set[str] = set()  # ended while Redis was down: forgotten once it is back
        # what the service does with adopted and moved sessions (SessionService sets them)
        self.adopt: Callable[[RedisRecord, float], None] = lambda record, ttl: None
        self.session_of: Callable[[str], Any] = lambda session_id: None

    @property
    def unavailable(self) -> str | None:
        """Why sessions cannot be made or resumed now, or None."""
        return None if self.engine.state == UP else self.engine.reason

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[str]:
        """The ids of this node's sessions."""
        return iter(list(self._records))

    def get(self, session_id: str) -> RedisRecord | None:
        """This node's record of ``session_id``, if it has one."""
        return self._records.get(session_id)

    def create(self, session_id: str, token: str, label: str, principal: Any,
               meta: dict) -> Deferred[ISessionRecord]:
        """A new session, kept in Redis (its token only as a hash)."""
        if self.engine.state != UP:
            return fail(RedisUnavailable(self.engine.reason))
        tok = token_hash(token)
        record = RedisRecord(session_id, tok, label, principal, meta, self)
        d = self.engine.run("create", session_id, tok, label, encode_principal(principal),
                            orjson.dumps(meta), self.engine.node, record.member)

        def made(answer: Any) -> RedisRecord:
            if int(answer) != 1:
                raise RuntimeError("session id already in use")
            self._records[session_id] = record
            return record
        return d.addCallback(made)

    def claim(self, session_id: str, token: str, last_seq: int) -> Deferred[Claim | None]:
        """Check the token in Redis, take the session over for this node, answer the replay."""
        if self.engine.state != UP:
            return fail(RedisUnavailable(self.engine.reason))
        d = self.engine.run("claim", session_id, token_hash(token), last_seq, self.engine.node)

        def claimed(answer: Any) -> Claim | None:
            if answer is None:
                return None
            label, pr, meta, seq, topics, replay, tok, member, watched = answer
            record = self._records.get(session_id)
            if record is None:
                record = RedisRecord(session_id, tok, label.decode(), decode_principal(pr),
                                     orjson.loads(meta), self,
                                     subscriptions={t.decode() for t in topics},
                                     member=member, watching={t.decode() for t in watched})
                self._records[session_id] = record
            record._stop_expiry()
            record.detached = False
            record.seq = int(seq)
            return Claim(record, None if replay == 0 or replay == b"0" else list(replay))
        return d.addCallback(claimed)

    def detach(self, record: ISessionRecord, ttl: float, expired: Callable[[], Any]) -> None:
        """Call ``expired()`` after ``ttl`` unless claimed or ended first; Redis lets the keys
        go a while later if no node ends the session."""
        kept = self._records.get(record.id)
        if kept is None or kept is not record or kept._expiry is not None:
            return

        def expire() -> None:
            kept._expiry = None
            expired()
        kept._expiry = self._clock.callLater(ttl, expire)
        kept.detached = True
        if self.engine.state == UP:
            self.engine.run("detach", record.id, self.engine.node, int(ttl * 1000),
                            GRACE_MS).addErrback(lambda f: None)

    def end(self, record: ISessionRecord) -> Deferred[None]:
        """Forget the session, here and in Redis."""
        kept = self._records.get(record.id)
        if kept is None or kept is not record:
            return succeed(None)
        del self._records[record.id]
        kept._stop_expiry()
        if self.engine.state != UP:
            self._ended.add(record.id)
            return succeed(None)
        d = self.engine.run("end", record.id, self.engine.node, "any", self.replay_limit,
                            self.replay_bytes)

        def failed(failure: Failure) -> None:
            self._ended.add(record.id)
        return d.addCallbacks(lambda _: None, failed)

    def afterKept(self, callback: Callable[[], Any]) -> None:
        """Call ``callback()`` once everything queued so far is in Redis (at once while
        Redis is away: what this node does then is local)."""
        if not self.engine.op(_after, callback, b"N"):
            callback()

    def forget(self, record: ISessionRecord) -> None:
        """Drop this node's copy of a session another node has taken (Redis keeps it)."""
        kept = self._records.get(record.id)
        if kept is not None and kept is record:
            del self._records[record.id]
            kept._stop_expiry()

    # -- adoption and resynchronisation --------------------------------------------------------

    def _adopted(self, entries: list[Any]) -> None:
        for i in range(0, len(entries), ADOPTED_FIELDS):
            sid, label, pr, meta, seq, left, topics, tok, member, watched = \
                entries[i:i + ADOPTED_FIELDS]
            session_id = sid.decode()
            if session_id in self._records:
                continue
            record = RedisRecord(session_id, tok, label.decode(), decode_principal(pr),
                                 orjson.loads(meta), self, int(seq),
                                 {t for t in topics.decode().split("\n") if t}, member,
                                 {t for t in watched.decode().split("\n") if t})
            self._records[session_id] = record
            self.adopt(record, int(left) / 1000)

    async def _resync(self) -> None:
        """Redis is back: put this node's sessions back in it as the node has them."""
        engine = self.engine
        ended, self._ended = self._ended, set()
        for session_id in ended:
            await engine.run("end", session_id, engine.node, "any", self.replay_limit,
                             self.replay_bytes)
        records = list(self._records.values())
        for r in records:
            session = self.session_of(r.id)
            if session is not None:
                r.seq = session.written  # what its client has had
        ttl_ms = int(self.resume_ttl * 1000)
        for start in range(0, len(records), 200):
            chunk = records[start:start + 200]
            args: list[Any] = []
            for r in chunk:
                args += [r.id, r._tok, r.label, encode_principal(r.principal),
                         orjson.dumps(r.meta), r.seq, b"1" if r.diverged else b"0",
                         "\n".join(sorted(r.subscriptions)), b"1" if r.detached else b"0",
                         ttl_ms, GRACE_MS, r.member, "\n".join(sorted(r.watching))]
            answers = await engine.run("resync", engine.node, self.replay_limit,
                                       self.replay_bytes, *args)
            for record, answer in zip(chunk, answers):
                self._resynced(record, answer)

    def _resynced(self, record: RedisRecord, answer: list) -> None:
        session = self.session_of(record.id)
        if answer and answer[0] in (b"T", "T"):
            if session is not None:
                session.taken()
            else:
                self.forget(record)
            return
        seq, first, frames = int(answer[0]), int(answer[1]), answer[2:]
        record.diverged = False
        if session is not None:
            session.caughtUp(seq, first, frames)
        else:
            record.seq = seq


@implementer(IBroker)
class RedisBroker:
    """Topics and directed delivery across every node of the cluster."""

    def __init__(self, engine: RedisEngine, reactor: Any = None) -> None:
        self.engine = engine
        engine.records = self.records
        self._reactor = reactor or engine.reactor
        self._local: Callable[[str], Any] = lambda session_id: None
        # this node's subscribers by topic: for delivery while Redis is away
        self.topics: dict[str, set[Any]] = {}
        # plain deliverables (not sessions of the Redis store) have a member name in Redis
        self._plain: dict[bytes, Any] = {}
        self._member: dict[int, bytes] = {}
        self._names = itertools.count(1)
        self._calls: dict[int, tuple[Deferred, IDelayedCall]] = {}
        self._call_ids = itertools.count(1)

    def bind(self, local: Callable[[str], IDeliverable | None]) -> None:
        """Deliver what is addressed to this node's sessions through ``local(session_id)``."""
        self._local = local

    @staticmethod
    def _isSession(deliverable: Any) -> bool:
        return isinstance(getattr(deliverable, "_record", None), RedisRecord)

    def subscribe(self, session: IDeliverable, topic: str) -> None:
        """Deliver ``topic`` to ``session`` (a session's record tells Redis itself)."""
        subscribers = self.topics.get(topic)
        if subscribers is None:
            self.topics[topic] = subscribers = set()
        if session in subscribers:
            return
        subscribers.add(session)
        if not self._isSession(session):
            member = self._member.get(id(session))
            if member is None:
                member = b"~%s.%d" % (self.engine.node.encode(), next(self._names))
                self._member[id(session)] = member
                self._plain[member] = session
            self.engine.op(None, None, b"s", member, topic)

    def unsubscribe(self, session: IDeliverable, topic: str) -> None:
        """Stop delivering ``topic`` to ``session``."""
        subscribers = self.topics.get(topic)
        if subscribers is None or session not in subscribers:
            return
        subscribers.discard(session)
        if not subscribers:
            del self.topics[topic]
        if not self._isSession(session):
            member = self._member.get(id(session))
            if member is not None:
                self.engine.op(None, None, b"u", member, topic)

    def publish(self, topic: str, prefix: bytes) -> Deferred[None]:
        """Every subscriber on every node gets it, numbered by Redis; the Deferred fires once
        Redis has kept it for all of them (while Redis is away: this node's subscribers)."""
        d: Deferred = Deferred()
        if self.engine.op(_fire, d, b"X", topic, prefix):
            return d.addCallback(lambda _: None)
        subscribers = self.topics.get(topic)
        if subscribers:
            for session in tuple(subscribers):
                session.deliver(prefix, "message")
        return succeed(None)

    def watch(self, session: IDeliverable, topic: str, on: bool) -> None:
        """Push ``topic``'s joins and leaves to ``session`` (Redis announces them: a
        session of another node joining is heard here too), or stop."""
        if self._isSession(session):
            record: RedisRecord = session._record  # type: ignore[attr-defined]
            if on:
                record.watching.add(topic)
            elif topic in record.watching:
                record.watching.discard(topic)
            else:
                return  # not watching it: nothing to tell Redis
            self.engine.op(None, None, b"W", record.id, topic, b"1" if on else b"0")

    def presence(self, topic: str) -> Deferred[list]:
        """The members of ``topic`` on every node, from Redis."""
        return self.engine.run("presence", topic).addCallback(
            lambda members: [orjson.loads(m) for m in members])

    def members(self) -> int:
        """Topic memberships of this node's sessions."""
        return memberships(self.topics)

    def send(self, session_id: str, prefix: bytes, kind: str) -> Deferred[bool]:
        """Deliver to one session wherever it is (or into its replay buffer while it is
        detached); True once Redis holds it, False when there is no such session."""
        local = self._local(session_id)
        if local is not None and not self._isSession(local):
            local.deliver(prefix, kind)
            return succeed(True)
        if local is not None and self.engine.state not in (UP, SYNCING):
            local.deliver(prefix, kind)  # not durable: the session knows (diverged)
            return succeed(True)
        d: Deferred = Deferred()
        if not self.engine.op(_fire, d, b"P", session_id, kind, prefix):
            return fail(RedisUnavailable(self.engine.reason))

        def sent(seq: Any) -> bool:
            seq = int(seq)
            if seq > 0:
                session = self._local(session_id)
                if session is not None:
                    session.stamped(seq, prefix, kind)
            return seq != 0
        return d.addCallback(sent)

    # -- server calls to a session on another node ------------------------------------------

    def call(self, session_id: str, method: str, params: Any, timeout: float) -> Deferred:
        """Call ``method`` on the client of session ``session_id`` on whichever node holds it."""
        call_id = next(self._call_ids)
        record = b"C\n" + orjson.dumps({"node": self.engine.node, "id": call_id,
                                        "session": session_id, "method": method,
                                        "params": params, "timeout": timeout})
        def cancelled(_: Deferred) -> None:
            pending = self._calls.pop(call_id, None)
            if pending is not None and pending[1].active():
                pending[1].cancel()
        d: Deferred = Deferred(cancelled)

        def relayed(answer: Any) -> Deferred:
            answer = int(answer)
            if answer == 0:
                raise ApplicationError("unknown_session", "no such session")
            if answer < 0:
                raise ApplicationError("unavailable", "the session's node is not reachable")
            timer = self._reactor.callLater(timeout + 1.0, self._callTimedOut, call_id)
            self._calls[call_id] = (d, timer)
            return d
        return self.engine.run("relay", session_id, record).addCallback(relayed)

    def _callTimedOut(self, call_id: int) -> None:
        pending = self._calls.pop(call_id, None)
        if pending is not None:
            pending[0].errback(ApplicationError("timeout", "the session's node did not answer"))

    def _served(self, request: dict) -> None:
        session = self._local(request["session"])

        def answer(result: Any) -> None:
            if isinstance(result, Failure):
                error = result.value
                reply = {"id": request["id"], "ok": False,
                         "error": [getattr(error, "code", "internal"),
                                   getattr(error, "message", "internal error"),
                                   getattr(error, "data", None)]}
            else:
                reply = {"id": request["id"], "ok": True, "value": result}
            try:
                data = b"R\n" + orjson.dumps(reply)
            except TypeError:
                data = b"R\n" + orjson.dumps({"id": request["id"], "ok": False,
                                              "error": ["internal", "internal error", None]})
            command = self.engine._command
            if command is not None:
                channel = f"{self.engine.prefix}c:{request['node']}"
                command.execute_command("PUBLISH", channel, data).addErrback(lambda f: None)

        if session is None or session.closed:
            answer(Failure(ApplicationError("unknown_session", "no such session")))
            return
        try:
            d = session.call(request["method"], request["params"], request["timeout"])
        except Exception:
            answer(Failure())
            return
        d.addBoth(answer)

    def _answered(self, reply: dict) -> None:
        pending = self._calls.pop(reply["id"], None)
        if pending is None:
            return
        d, timer = pending
        if timer.active():
            timer.cancel()
        if reply["ok"]:
            d.callback(reply["value"])
        else:
            from .errors import RemoteError
            code, message, data = reply["error"]
            if code in ("timeout", "unknown_session", "cancelled"):
                d.errback(ApplicationError(code, message, data))
            else:
                d.errback(RemoteError(code, message, data))

    # -- records from Redis -----------------------------------------------------------------------

    def records(self, data: bytes) -> None:
        """Deliver the records Redis addressed to this node (module docstring of redislua)."""
        lines = data.split(b"\n")
        local = self._local
        i = 0
        n = len(lines)
        while i < n:
            kind = lines[i]
            if kind == b"X":
                prefix = lines[i + 1]
                j = i + 3
                end = j + 2 * int(lines[i + 2])
                while j < end:
                    member = lines[j]
                    if member[0] == 126:  # '~'
                        plain = self._plain.get(member)
                        if plain is not None:
                            plain.deliver(prefix, "message")
                    else:
                        session = local(member.decode())
                        if session is not None:
                            session.stamped(int(lines[j + 1]), prefix, "message")
                    j += 2
                i = end
            elif kind == b"P":
                session = local(lines[i + 1].decode())
                if session is not None:
                    session.stamped(int(lines[i + 2]), lines[i + 4], lines[i + 3].decode())
                i += 5
            elif kind == b"T":
                session = local(lines[i + 1].decode())
                if session is not None and self._isSession(session):
                    session.taken()
                i += 2
            elif kind == b"C":
                self._served(orjson.loads(lines[i + 1]))
                i += 2
            elif kind == b"R":
                self._answered(orjson.loads(lines[i + 1]))
                i += 2
            else:
                _log.warn("unknown record {kind!r} from Redis", kind=kind[:20])
                return
