"""How an operation is declared: name, typed request, handler, sync or async.

A request is a dataclass (``@request``); each field is one parameter, its type says what
the parameter may hold (:mod:`ue_agent.convert` hints; the aliases below carry the
protocol's limits), a field without a default is required. The API checks a request by
converting its JSON object into that dataclass (:func:`ue_agent.api.schema.compiled`);
docs/api.md is checked against the same declarations (tests/test_api_docs.py).
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Generic, TypeVar

from ue_agent.convert import Base64, Len, Range, describe

if TYPE_CHECKING:
    from ue_agent.api.core import Peer
    from ue_agent.ops.context import Context

R = TypeVar("R")
#: an operation's result: the reply's fields (besides id and ok)
Reply = dict[str, Any]
Handler = Callable[["Context", R, "Peer"], Reply | Awaitable[Reply]]

MAX_STR = 16384
MAX_LIST = 64

#: the parameter types of the protocol (docs/api.md "Conventions")
Text = Annotated[str, Len(1, MAX_STR)]
TextList = Annotated[list[Text], Len(0, MAX_LIST)]
IntList = Annotated[list[int], Len(0, MAX_LIST)]
#: one list of SDP lines per media stream
StreamLines = Annotated[list[Annotated[list[Text], Len(0, MAX_LIST)]], Len(1, MAX_LIST)]
Bytes16 = Annotated[bytes, Base64(16)]
SessionId = Text
Ssrc = Annotated[int, Range(0, 2**32 - 1)]
#: a ticket's validity asked of the KMS, in seconds (RFC 6043 6.10 TRe; the KMS may shorten it)
Validity = Annotated[int, Range(1, 7 * 24 * 3600)]
#: an SRTP packet index (48 bits, RFC 3711 §3.3.1) and an SRTCP index (31 bits, §3.4)
SrtpIndex = Annotated[int, Range(0, 2**48 - 1)]
SrtcpIndex = Annotated[int, Range(0, 2**31 - 1)]


def request(cls: type[R]) -> type[R]:
    """A request dataclass: keyword-only, slotted, compared by value, repr without values
    (a request may carry key material)."""
    return dataclass(slots=True, kw_only=True, repr=False)(cls)


def listed(*values: str) -> Any:
    """A list default, copied per request."""
    return dataclasses.field(default_factory=lambda: list(values))


@dataclass(frozen=True)
class Parameter:
    """One parameter as docs/api.md describes it."""

    name: str
    type: str
    required: bool


@dataclass(frozen=True, eq=False)
class Op(Generic[R]):
    """One socket operation: the single declaration everything else derives from."""

    name: str
    request: type[R]
    #: None: answered by the connection itself (hello, subscribe)
    handler: Handler[R] | None
    #: True when the handler is a coroutine function (it waits for the card or network)
    is_async: bool
    #: the one instance of a request without parameters (status, capabilities): shared,
    #: it has no field to change
    empty: R | None = None

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def parameters(self) -> list[Parameter]:
        hints = typing.get_type_hints(self.request, include_extras=True)
        return [
            Parameter(
                f.name,
                describe(hints[f.name]),
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
            )
            for f in dataclasses.fields(self.request)  # type: ignore[arg-type]
        ]


#: every declared operation, in declaration order (:mod:`ue_agent.ops.registry` imports the
#: family modules so that this is complete)
DECLARED: list[Op[Any]] = []


def declare(name: str, request: type[R], handler: Handler[R] | None = None) -> Op[R]:
    """Declare ``name``; a second declaration of the same name is a programming error."""
    if any(op.name == name for op in DECLARED):
        raise ValueError(f"operation {name} declared twice")
    if not dataclasses.is_dataclass(request):
        raise TypeError(f"{name}: the request must be a dataclass")
    empty = request() if not dataclasses.fields(request) else None  # type: ignore[arg-type]
    op: Op[R] = Op(
        name, request, handler, handler is not None and inspect.iscoroutinefunction(handler), empty
    )
    DECLARED.append(op)
    return op


def operation(name: str, request: type[R]) -> Callable[[Handler[R]], Handler[R]]:
    """Decorator: ``@operation("sdes.offer", SdesOffer)`` over the handler."""

    def deco(handler: Handler[R]) -> Handler[R]:
        declare(name, request, handler)
        return handler

    return deco
