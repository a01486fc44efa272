"""A small chat room for wsservice: a Handler subclass and a token authenticator.

Calls served (client -> server):

    join     {"name": str}      -> {"name": str}     take (or change) your name in the room
    say      {"text": str}      -> {"delivered": n}  push event "said" {"name", "text"} to members
    members  null               -> [str, ...]        the members' names, sorted
    ask_all  {"question": str}  -> {"answers": [...]}
             server-calls "confirm" {"from", "question"} on every other member and collects
             each answer as {"name", "result"} or {"name", "error": {"code", "message"}}

Event served (client -> server):

    typing   (any data)         pushes event "typing" {"name"} to the other members

Events pushed (server -> client): "said" {"name", "text"}, "typing" {"name"}, "left" {"name"}.

Serve it with twistd, from the project root (modules are imported from the current
directory, or from --app-dir DIR):

    CHAT_TOKENS=s3cret=alice .venv/bin/twistd -n wsservice --handler examples.chat:ChatApp \\
        --auth examples.chat:authenticatorFromEnvironment

or compose it into your own application: see examples/chat.tac.
"""

from __future__ import annotations

import hmac
import os
from typing import Any, Mapping

from twisted.internet.defer import CancelledError, Deferred, DeferredList, succeed
from twisted.python.failure import Failure
from zope.interface import implementer

from wsservice import (
    ApplicationError,
    Handler,
    IAuthenticator,
    IAuthRequest,
    InvalidParams,
    ISession,
    RemoteError,
    SessionClosed,
    Unauthorized,
    call,
    event,
)

# The key under which a member's name is kept in session.meta.
NAME = "name"
MAX_NAME = 32
MAX_TEXT = 2000


def _object(params: Any, method: str) -> dict[str, Any]:
    if not isinstance(params, dict):
        raise InvalidParams(f"{method} takes an object")
    return params


def _text(params: dict[str, Any], key: str, limit: int) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise InvalidParams(f"{key!r} must be a non-blank string of at most {limit} characters")
    return value.strip()


class ChatApp(Handler):
    """One chat room shared by every session of the service."""

    def __init__(self, ask_timeout: float = 5.0) -> None:
        # Seconds each member has to answer ask_all's "confirm". Keep it below the service's
        # call_timeout, or the whole ask_all call may time out before the per-member answers.
        self.ask_timeout = ask_timeout
        # Every open session, maintained by sessionOpened / sessionClosed. A session whose
        # connection was lost stays here (a member) until it ends: the client may resume it
        # within the service's resume_ttl, and pushes wait for it in its replay buffer.
        self.sessions: set[ISession] = set()

    # -- helpers -------------------------------------------------------------------------------

    def members(self, exclude: ISession | None = None) -> list[ISession]:
        """The open sessions that have joined, sorted by name."""
        joined = [s for s in self.sessions if NAME in s.meta and s is not exclude]
        return sorted(joined, key=lambda s: s.meta[NAME])

    def _member_name(self, session: ISession) -> str:
        name = session.meta.get(NAME)
        if name is None:
            raise ApplicationError("chat.not_joined", "call 'join' first")
        return name

    # -- session observer ----------------------------------------------------------------------

    def sessionOpened(self, session: ISession) -> None:
        """Track the session; a name only counts once ``join`` has accepted it."""
        # meta starts as the client's hello meta: never trust a name the client put there.
        session.meta.pop(NAME, None)
        self.sessions.add(session)

    def sessionClosed(self, session: ISession, reason: str) -> None:
        """Forget the session and tell the remaining members it left.

        Called when the session ends for good (bye, close, expiry after a lost connection
        was not resumed in time), not when its connection is merely lost."""
        self.sessions.discard(session)
        name = session.meta.get(NAME)
        if name is not None and reason != "shutdown":  # at shutdown everybody is leaving
            for member in self.members():
                member.push("left", {"name": name})

    # -- calls and events ----------------------------------------------------------------------

    @call("join")
    def join(self, session: ISession, params: Any) -> dict[str, str]:
        """Take ``name`` (or change to it); names are unique in the room."""
        name = _text(_object(params, "join"), "name", MAX_NAME)
        for other in self.members(exclude=session):
            if other.meta[NAME] == name:
                raise ApplicationError("chat.name_taken", f"{name!r} is taken", {"name": name})
        session.meta[NAME] = name
        return {"name": name}

    @call("say")
    def say(self, session: ISession, params: Any) -> dict[str, int]:
        """Push ``said`` to every member, the sender included; answer how many got it."""
        text = _text(_object(params, "say"), "text", MAX_TEXT)
        name = self._member_name(session)
        members = self.members()
        for member in members:
            member.push("said", {"name": name, "text": text})
        return {"delivered": len(members)}

    @call("members")
    def list_members(self, session: ISession, params: Any) -> list[str]:
        """The members' names, sorted. Anyone may ask, joined or not."""
        if params is not None:
            raise InvalidParams("members takes no params")
        return [member.meta[NAME] for member in self.members()]

    @event("typing")
    def typing(self, session: ISession, data: Any) -> None:
        """Tell the other members that this one is typing (ignored before ``join``)."""
        name = session.meta.get(NAME)
        if name is not None:
            for member in self.members(exclude=session):
                member.push("typing", {"name": name})

    @call("ask_all")
    async def ask_all(self, session: ISession, params: Any) -> dict[str, Any]:
        """Server-call ``confirm`` on every other member at once and collect the answers.

        A member that answers with an error, does not answer within ``ask_timeout`` or leaves
        meanwhile shows up with an ``error``; it does not fail the whole call. Cancelling
        ``ask_all`` (client ``cancel``, its own call_timeout, or the asker leaving) cancels
        the calls still waiting.
        """
        question = _text(_object(params, "ask_all"), "question", MAX_TEXT)
        name = self._member_name(session)
        others = self.members(exclude=session)
        asks = [self._ask(other, {"from": name, "question": question}) for other in others]
        results = await DeferredList(asks, consumeErrors=True)
        answers = []
        for ok, value in results:
            if not ok:
                # Only CancelledError (ask_all itself was cancelled) or a bug gets here.
                value.raiseException()
            answers.append(value)
        return {"answers": answers}

    def _ask(self, member: ISession, params: dict[str, str]) -> Deferred:
        """Call ``confirm`` on one member; fires with its answer entry, never with a failure
        other than cancellation."""
        name = member.meta[NAME]
        try:
            d: Deferred = member.call("confirm", params, timeout=self.ask_timeout)
        except SessionClosed:
            return succeed({"name": name, "error": {"code": "chat.left",
                                                    "message": f"{name} left"}})

        def answered(result: Any) -> dict[str, Any]:
            return {"name": name, "result": result}

        def failed(failure: Failure) -> Any:
            if failure.check(CancelledError):
                return failure
            if failure.check(SessionClosed):
                return {"name": name, "error": {"code": "chat.left", "message": f"{name} left"}}
            # RemoteError: the member answered with an error; ApplicationError "timeout": it
            # did not answer within ask_timeout.
            if failure.check(RemoteError, ApplicationError):
                error = failure.value
                return {"name": name, "error": {"code": error.code, "message": error.message}}
            return failure

        return d.addCallbacks(answered, failed)


@implementer(IAuthenticator)
class TokenAuthenticator:
    """Accept a hello whose ``auth`` is ``{"token": ...}`` with a known token.

    ``tokens`` maps each token to the principal the session gets (``session.principal``).
    """

    def __init__(self, tokens: Mapping[str, Any]) -> None:
        self.tokens = dict(tokens)

    def authenticate(self, request: IAuthRequest) -> Any:
        """Return the token's principal, or raise Unauthorized (the client is closed 4401)."""
        auth = request.auth
        token = auth.get("token") if isinstance(auth, dict) else None
        if not isinstance(token, str):
            raise Unauthorized('send "auth": {"token": "..."} in your hello')
        given = token.encode("utf-8")
        for known, principal in self.tokens.items():
            # compare_digest: do not leak through timing how much of a token was right
            if hmac.compare_digest(given, known.encode("utf-8")):
                return principal
        raise Unauthorized("unknown token")


def authenticatorFromEnvironment(environ: Mapping[str, str] | None = None) -> TokenAuthenticator:
    """A zero-argument factory for ``twistd wsservice --auth``.

    Reads ``CHAT_TOKENS="token1=alice,token2=bob"``: each token's principal is the user name.
    """
    spec = (os.environ if environ is None else environ).get("CHAT_TOKENS", "")
    tokens = {}
    for item in spec.split(","):
        token, sep, user = item.strip().partition("=")
        if sep and token and user:
            tokens[token] = user
    if not tokens:
        raise ValueError('set CHAT_TOKENS to "token=user[,token=user...]"')
    return TokenAuthenticator(tokens)
