"""How an operation is declared: name, typed request, handler, sync or async, schema.

A request is a dataclass (``@request``); each field is one parameter. The parameter's kind
comes from the field's type (``str``, ``int``, ``bool``, ``bytes`` for base64,
``list[str]``, ``list[int]``, ``list[list[str]]``; ``X | None`` for an optional one),
its limits from :func:`param`. A field without a default is required. The schema the API
checks (:class:`~ue_agent.api.schema.Param` per parameter) is derived from the dataclass
once, when the operation is declared.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ue_agent.api.schema import Param

if TYPE_CHECKING:
    from ue_agent.api.core import Peer
    from ue_agent.ops.context import Context

R = TypeVar("R")
#: an operation's result: the reply's fields (besides id and ok)
Reply = dict[str, Any]
Handler = Callable[["Context", R, "Peer"], Reply | Awaitable[Reply]]

#: Python type -> the schema's kind
_KINDS: dict[Any, str] = {
    str: "str",
    int: "int",
    bool: "bool",
    bytes: "b64",
    list[str]: "list[str]",
    list[int]: "list[int]",
    list[list[str]]: "list[list[str]]",
    dict[str, Any]: "object",
}


def request(cls: type[R]) -> type[R]:
    """A request dataclass: keyword-only, slotted, compared by value, repr without values
    (a request may carry key material)."""
    return dataclass(slots=True, kw_only=True, repr=False)(cls)


def param(
    default: Any = None,
    *,
    lengths: tuple[int, ...] = (),
    choices: tuple[str, ...] = (),
    minimum: int | None = None,
    maximum: int | None = None,
    required: bool = False,
) -> Any:
    """A request field with limits. ``default`` may be a list (copied per request)."""
    meta = {"lengths": lengths, "choices": choices, "minimum": minimum, "maximum": maximum}
    if required:
        return dataclasses.field(metadata=meta)
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _kind(hint: Any) -> tuple[str, bool]:
    """(kind, optional) of a field's type."""
    optional = False
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        if len(args) != 1:
            raise TypeError(f"a parameter has one type (or that type | None), not {hint}")
        hint = args[0]
    kind = _KINDS.get(hint)
    if kind is None:
        raise TypeError(f"no schema kind for parameter type {hint}")
    return kind, optional


def schema_of(cls: type) -> dict[str, Param]:
    """The parameter schema of a request dataclass."""
    hints = typing.get_type_hints(cls)
    out: dict[str, Param] = {}
    for f in dataclasses.fields(cls):
        kind, _optional = _kind(hints[f.name])
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default: Any = None
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        elif f.default is not dataclasses.MISSING:
            default = f.default
        m = f.metadata
        out[f.name] = Param(
            kind,
            required=required,
            lengths=m.get("lengths", ()),
            choices=m.get("choices", ()),
            minimum=m.get("minimum"),
            maximum=m.get("maximum"),
            default=default,
        )
    return out


@dataclass(frozen=True, eq=False)
class Op(Generic[R]):
    """One socket operation: the single declaration everything else derives from."""

    name: str
    request: type[R]
    #: None: answered by the connection itself (hello, subscribe)
    handler: Handler[R] | None
    #: True when the handler is a coroutine function (it waits for the card or network)
    is_async: bool
    schema: dict[str, Param]
    family: str

    def parse(self, params: dict[str, Any]) -> R:
        """Checked parameters -> the typed request (see :func:`ue_agent.api.schema.validate`)."""
        from ue_agent.api.schema import validate

        return validate(self, params)


#: every declared operation, in declaration order (:mod:`ue_agent.ops.registry` imports the
#: family modules so that this is complete)
DECLARED: list[Op[Any]] = []


def _family(name: str) -> str:
    return name.split(".", 1)[0] if "." in name else name


def declare(name: str, request: type[R], handler: Handler[R] | None = None) -> Op[R]:
    """Declare ``name``; a second declaration of the same name is a programming error."""
    if any(op.name == name for op in DECLARED):
        raise ValueError(f"operation {name} declared twice")
    op = Op(
        name,
        request,
        handler,
        handler is not None and inspect.iscoroutinefunction(handler),
        schema_of(request),
        _family(name),
    )
    DECLARED.append(op)
    return op


def operation(name: str, request: type[R]) -> Callable[[Handler[R]], Handler[R]]:
    """Decorator: ``@operation("sdes.offer", SdesOffer)`` over the handler."""

    def deco(handler: Handler[R]) -> Handler[R]:
        declare(name, request, handler)
        return handler

    return deco
