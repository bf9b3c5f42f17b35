"""The sans-IO core of one API connection: bytes in, requests and reply lines out.

:class:`ConnectionCore` frames lines, parses and validates requests, enforces the
in-flight limit and answers the protocol's own operations (``hello``, ``subscribe``)
itself. What needs the agent comes out as a :class:`Request`; the caller runs it and
hands the outcome to :meth:`ConnectionCore.finish`, which gives the reply line. No
sockets here, so the whole surface a peer can reach is testable with bytes alone.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from ue_agent import __version__
from ue_agent.api import errors as E
from ue_agent.api.protocol import (
    EVENTS,
    MAX_LINE,
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    LineFramer,
    LineTooLong,
    ReplyEncoder,
    decode_line,
    encode,
)
from ue_agent.api.schema import bad_request, check_id, compiled
from ue_agent.convert import ConvertError
from ue_agent.errors import AgentError

if TYPE_CHECKING:
    from ue_agent.ops.declare import Op
    from ue_agent.ops.protocol import Hello, Subscribe

log = logging.getLogger(__name__)


class Peer(NamedTuple):
    """The peer of a connection, from SO_PEERCRED / SO_PEERGROUPS."""

    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...] = ()
    conn: int = 0


class Request:
    """A valid request for the agent; ``params`` is the operation's typed request, checked
    and decoded (see :mod:`ue_agent.ops.declare`).

    A plain slotted class (one is made per request): cheaper to build than a frozen
    dataclass, and its repr leaves the parameters out.
    """

    __slots__ = ("id", "op", "params")

    def __init__(self, id: str | int, op: str, params: object) -> None:
        self.id = id
        self.op = op
        self.params = params

    def __repr__(self) -> str:
        return f"Request(id={self.id!r}, op={self.op!r})"


Action = Request | bytes  # bytes: a reply line to send now


@functools.cache
def one_pass() -> Callable[[bytes], Any]:
    """The one-pass decoder of every operation (:mod:`ue_agent.api.onepass`), made once."""
    from ue_agent.api.onepass import OnePass
    from ue_agent.ops.registry import OPERATIONS

    return OnePass(OPERATIONS.values()).decode


class ConnectionCore:
    def __init__(self, max_line: int = MAX_LINE, max_inflight: int = 4) -> None:
        self.framer = LineFramer(max_line)
        self.max_line = max_line
        self.max_inflight = max_inflight
        self.inflight: set[str | int] = set()
        self.subscriptions: set[str] = set()
        self.client: str | None = None
        self.requests = 0
        self.replies = ReplyEncoder()
        # the operation declarations, imported with the first connection (not at start-up)
        from ue_agent.ops.protocol import Hello, Subscribe
        from ue_agent.ops.registry import OPERATIONS

        self.ops: dict[str, Op[Any]] = OPERATIONS
        self._protocol_ops = (Hello, Subscribe)
        self._onepass = one_pass()

    # -- input -------------------------------------------------------------------------
    def receive(self, data: bytes) -> list[Action]:
        actions: list[Action] = []
        for item in self.framer.feed(data):
            if isinstance(item, LineTooLong):
                actions.append(
                    self._error(None, E.LINE_TOO_LONG, f"line longer than {self.max_line} bytes dropped")
                )
            elif item.strip():
                actions.append(self._line(item))
        return actions

    def push(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer received bytes; :meth:`next_action` parses them one line at a time."""
        self.framer.push(data)

    def next_action(self) -> Action | None:
        """The action for the next buffered line, or None when no whole line is buffered.

        One line at a time, so the caller runs (and finishes) a request before the next
        line is parsed: pipelined synchronous requests never count as in flight together,
        and the caller decides how many lines a turn may take.
        """
        framer = self.framer
        while (item := framer.next()) is not None:
            if isinstance(item, LineTooLong):
                return self._error(None, E.LINE_TOO_LONG, f"line longer than {self.max_line} bytes dropped")
            if item and not item.isspace():  # a blank line is no request
                return self._line(item)
        return None

    def line_action(self, line: bytes) -> Action | None:
        """The action for one whole line the caller took itself (without its newline, at
        most ``max_line`` bytes with it), as :meth:`next_action` gives it for a buffered
        line; None for a blank line."""
        if line and not line.isspace():
            return self._line(line)
        return None

    def _error(self, req_id: Any, code: str, message: str, **details: Any) -> bytes:
        return encode(E.error_reply(req_id, E.api_error(code, message, **details)))

    def _line(self, line: bytes) -> Action:
        self.requests += 1
        fast = self._onepass(line)
        if fast is not None:  # a valid request, decoded and checked in one pass
            req_id, op, params = fast
            if req_id in self.inflight:
                return self._in_progress(req_id)
            return self._accept(req_id, op, params)
        try:
            msg = decode_line(line)
        except ValueError as exc:
            return self._error(None, E.BAD_JSON, str(exc))
        if type(msg) is not dict:  # the decoder makes plain dicts
            return self._error(None, E.BAD_REQUEST, "a request is a JSON object")
        # msg is this request's own fresh dict: what is left after id and op are the parameters
        try:
            req_id = check_id(msg.pop("id", None))
        except AgentError as exc:
            return encode(E.error_reply(None, exc))
        op = msg.pop("op", None)
        if type(op) is not str:
            return self._error(req_id, E.BAD_REQUEST, "'op' must be a string", param="op")
        decl = self.ops.get(op)
        if decl is None:
            return self._error(req_id, E.UNKNOWN_OP, f"unknown operation '{op[:64]}'")
        if req_id in self.inflight:  # before the parameters: the id's error comes first
            return self._in_progress(req_id)
        conv, empty = compiled(decl)
        if not msg and empty is not None:  # status, capabilities: nothing to convert
            params = empty
        else:  # the parameters checked and typed in one pass
            try:
                params = conv(msg)
            except ConvertError as exc:
                return encode(E.error_reply(req_id, bad_request(exc, op)))
        return self._accept(req_id, op, params)

    def _in_progress(self, req_id: str | int) -> bytes:
        return self._error(req_id, E.BAD_REQUEST, "a request with this id is in progress", param="id")

    def _accept(self, req_id: str | int, op: str, params: Any) -> Action:
        if type(params) in self._protocol_ops:
            hello, subscribe = self._protocol_ops
            if isinstance(params, hello):
                return self._hello(req_id, params)
            return self._subscribe(req_id, params)
        inflight = self.inflight
        if len(inflight) >= self.max_inflight:
            return self._error(
                req_id, E.TOO_MANY_REQUESTS, f"at most {self.max_inflight} requests in progress"
            )
        inflight.add(req_id)
        return Request(req_id, op, params)

    # -- the protocol's own operations ---------------------------------------------------
    def _hello(self, req_id: str | int, params: Hello) -> bytes:
        wanted = params.protocols if params.protocols is not None else [PROTOCOL_VERSION]
        common = [v for v in SUPPORTED_VERSIONS if v in wanted]
        if not common:
            return self._error(
                req_id,
                E.UNSUPPORTED_VERSION,
                f"this agent speaks protocol {', '.join(map(str, SUPPORTED_VERSIONS))}",
                supported=list(SUPPORTED_VERSIONS),
            )
        if params.client is not None:
            self.client = params.client
        return encode(
            {
                "id": req_id,
                "ok": True,
                "protocol": max(common),
                "agent": "ue-agent",
                "version": __version__,
                "ops": list(self.ops),
                "events": list(EVENTS),
                "max_line": self.max_line,
                "max_inflight": self.max_inflight,
            }
        )

    def _subscribe(self, req_id: str | int, params: Subscribe) -> bytes:
        events = params.events if params.events is not None else list(EVENTS)
        unknown = [e for e in events if e not in EVENTS]
        if unknown:
            return self._error(req_id, E.BAD_REQUEST, f"unknown event '{unknown[0][:64]}'", param="events")
        self.subscriptions.update(events)
        return encode({"id": req_id, "ok": True, "events": sorted(self.subscriptions)})

    # -- output --------------------------------------------------------------------------
    def finish(self, req: Request, outcome: dict[str, Any] | BaseException) -> bytes | bytearray:
        """The reply line for ``req``: a result dict, or the exception it raised."""
        self.inflight.discard(req.id)
        if isinstance(outcome, BaseException):
            return encode(E.error_reply(req.id, outcome))
        try:
            return self.replies.line(req.op, req.id, outcome)  # keys: a bytearray to wipe
        except (TypeError, ValueError, RecursionError) as exc:
            # A result that is not JSON (a bug in an operation): the peer still gets its reply.
            log.error("op %s: result is not JSON (%s)", req.op, type(exc).__name__)
            return encode(E.error_reply(req.id, exc))

    def event(self, name: str, body: dict[str, Any]) -> bytes | None:
        """An event line if this peer subscribed to ``name``."""
        if name not in self.subscriptions:
            return None
        return encode({"event": name, **body})
