"""Request lines decoded and checked in one pass: bytes -> (id, operation, typed request).

msgspec's JSON decoder parses a line straight into a tagged union of one ``msgspec.Struct``
per operation (the ``op`` member is the tag), checking every parameter's type and limits as
it goes, in C. Each Struct is made here from the operation's own request dataclass
(:mod:`ue_agent.ops.declare`), so the declarations stay the one place a parameter is
described; the Struct is then turned into that dataclass.

This is the path of a valid request only. A line it does not take (any error, or an
operation whose parameters have a type it does not map: base64 ``bytes``, a
:class:`~ue_agent.convert.Check`) goes through the general path (:func:`decode_line` and
the operation's converter, :mod:`ue_agent.api.schema`), which gives the error reply, so
errors are worded by one piece of code. For that to hold, what this path accepts is a
subset of what the general path accepts, decoded to the same request: tests/test_onepass.py
checks that on generated lines for every operation.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin

import msgspec

from ue_agent.api.schema import MAX_ID_LEN
from ue_agent.convert import Len, Range

if TYPE_CHECKING:
    from ue_agent.ops.declare import Op

#: a request id (ue_agent.api.schema.check_id): a string of 1..128 characters or an integer
#: within JSON's exact range (a bool is not an int to msgspec)
_ID = Union[  # noqa: UP007 - msgspec reads the typing form
    Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LEN)],
    Annotated[int, msgspec.Meta(gt=-(2**53), lt=2**53)],
]

Decoded = tuple[Any, str, Any]  # (id, operation name, its typed request)


class _Unmapped(Exception):
    """A parameter type this path leaves to the general one."""


def _meta(marks: Iterable[Any]) -> msgspec.Meta:
    kw: dict[str, Any] = {}
    for m in marks:
        if isinstance(m, Len):
            kw["min_length"] = m.min
            if m.max is not None:
                kw["max_length"] = m.max
        elif isinstance(m, Range):
            if m.min is not None:
                kw["ge"] = m.min
            if m.max is not None:
                kw["le"] = m.max
        else:  # Check, INTERNAL, Base64/Hex: the general path's
            raise _Unmapped(repr(m))
    return msgspec.Meta(**kw)


def _type(hint: Any) -> Any:
    """``hint`` (a :mod:`ue_agent.convert` hint) as a msgspec type that accepts no more."""
    if hint in (str, int, bool, type(None)):
        return hint
    origin = get_origin(hint)
    if origin is Annotated:
        base, *marks = get_args(hint)
        inner = _type(base)
        if get_origin(base) is not list and base not in (str, int):
            raise _Unmapped(repr(hint))
        return Annotated[inner, _meta(marks)]
    if origin in (Union, types.UnionType):
        return Union[tuple(_type(a) for a in get_args(hint))]  # noqa: UP007
    if origin is list:
        (item,) = get_args(hint)
        return list[_type(item)]  # type: ignore[misc]
    if origin is Literal and all(type(v) is str for v in get_args(hint)):
        return hint
    raise _Unmapped(repr(hint))  # bytes, float, enums, nested dataclasses, Any...


def _struct(op: Op[Any]) -> type[msgspec.Struct]:
    hints = typing.get_type_hints(op.request, include_extras=True)
    fields: list[Any] = [("id", _ID)]
    for f in dataclasses.fields(op.request):
        t = _type(hints[f.name])
        if f.default is not dataclasses.MISSING:
            fields.append((f.name, t, f.default))
        elif f.default_factory is not dataclasses.MISSING:
            fields.append((f.name, t, msgspec.field(default_factory=f.default_factory)))
        else:
            fields.append((f.name, t))
    # kw_only: a required field may follow one with a default, as in the (keyword-only)
    # request dataclasses, whose field order this keeps
    return msgspec.defstruct(
        "Line_" + op.name.replace(".", "_"),
        fields,
        kw_only=True,
        tag_field="op",
        tag=op.name,
        forbid_unknown_fields=True,
    )


def _builder(op: Op[Any]) -> Callable[[Any], Any]:
    """Struct -> the operation's request dataclass (its shared instance when it has no
    parameters)."""
    if op.empty is not None:
        empty = op.empty
        return lambda s: empty
    cls = op.request
    as_dict = msgspec.structs.asdict

    def build(s: Any) -> Any:
        members = as_dict(s)
        del members["id"]
        return cls(**members)

    return build


class OnePass:
    """The one-pass decoder of a set of operations (made once: by the warm-up, or with the
    first connection, :func:`ue_agent.api.core.one_pass`)."""

    def __init__(self, ops: Iterable[Op[Any]]) -> None:
        structs: list[type[msgspec.Struct]] = []
        self._build: dict[type, tuple[str, Callable[[Any], Any]]] = {}
        #: operations left to the general path, with the type that kept them there
        self.general: dict[str, str] = {}
        for op in ops:
            try:
                s = _struct(op)
            except _Unmapped as exc:
                self.general[op.name] = str(exc)
                continue
            structs.append(s)
            self._build[s] = (op.name, _builder(op))
        self._decode = msgspec.json.Decoder(Union[tuple(structs)]).decode if structs else None  # noqa: UP007
        self._errors = (msgspec.DecodeError, msgspec.ValidationError)

    def decode(self, line: bytes) -> Decoded | None:
        """``(id, op, request)`` for a valid request of a mapped operation; None for any other
        line (the general path decides what it is)."""
        if self._decode is None or line.count(b'"op"') != 1 or b"\\" in line:
            # a repeated "op" member (JSON's last one wins), or escapes (a member name may
            # be written with them): the general path's
            return None
        try:
            s = self._decode(line)
        except self._errors:
            return None
        name, build = self._build[type(s)]
        return s.id, name, build(s)
