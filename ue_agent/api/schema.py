"""The parameter check every operation's request goes through.

An operation's schema maps a parameter name to a :class:`Param`; it is derived from the
operation's request dataclass (:mod:`ue_agent.ops.declare`). :func:`validate` returns the
typed request (base64 decoded to bytes, defaults filled) or raises ``api.bad_request``
naming the parameter. Unknown parameters are an error, not ignored: a softphone with a
typo learns it at once.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from ue_agent.api.errors import BAD_REQUEST, api_error

if TYPE_CHECKING:
    from ue_agent.ops.declare import Op

R = TypeVar("R")

MAX_ID_LEN = 128
MAX_STR = 16384
MAX_LIST = 64


class Param(NamedTuple):
    """One parameter's rule (an immutable record; NamedTuple: cheaper to define than a dataclass)."""

    kind: str  # str, int, bool, b64, list[str], list[int], object
    required: bool = False
    lengths: tuple[int, ...] = ()  # b64: allowed decoded lengths (empty = any up to MAX_STR)
    choices: tuple[str, ...] = ()  # str: allowed values
    minimum: int | None = None
    maximum: int | None = None
    default: Any = None


_STR_LIST = Param("list[str]")  # one stream's lines inside a list[list[str]]


def _bad(name: str, why: str) -> Exception:
    return api_error(BAD_REQUEST, f"parameter '{name}' {why}", param=name)


def _check(name: str, p: Param, value: Any) -> Any:
    if p.kind == "str":
        if not isinstance(value, str) or not value or len(value) > MAX_STR:
            raise _bad(name, f"must be a non-empty string of at most {MAX_STR} characters")
        if p.choices and value not in p.choices:
            raise _bad(name, f"must be one of {', '.join(p.choices)}")
        return value
    if p.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(name, "must be an integer")
        if (p.minimum is not None and value < p.minimum) or (p.maximum is not None and value > p.maximum):
            raise _bad(name, f"must be between {p.minimum} and {p.maximum}")
        return value
    if p.kind == "bool":
        if not isinstance(value, bool):
            raise _bad(name, "must be true or false")
        return value
    if p.kind == "b64":
        if not isinstance(value, str) or len(value) > MAX_STR:
            raise _bad(name, "must be a base64 string")
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _bad(name, "must be a base64 string") from None
        if p.lengths and len(raw) not in p.lengths:
            raise _bad(name, f"must decode to {' or '.join(map(str, p.lengths))} bytes")
        return raw
    if p.kind in ("list[str]", "list[int]"):
        want = str if p.kind == "list[str]" else int
        if (
            not isinstance(value, list)
            or len(value) > MAX_LIST
            or not all(isinstance(v, want) and not isinstance(v, bool) for v in value)
        ):
            raise _bad(name, f"must be a list of at most {MAX_LIST} {want.__name__}s")
        if want is str and any(not v or len(v) > MAX_STR for v in value):
            raise _bad(name, "must hold non-empty strings")
        return list(value)
    if p.kind == "list[list[str]]":
        if not isinstance(value, list) or not value or len(value) > MAX_LIST:
            raise _bad(name, f"must be a list of 1-{MAX_LIST} lists of strings (one list per stream)")
        return [_check(name, _STR_LIST, v) for v in value]
    if p.kind == "object":
        if not isinstance(value, dict):
            raise _bad(name, "must be an object")
        return value
    raise AssertionError(f"unknown kind {p.kind}")


def validate(op: Op[R], params: dict[str, Any]) -> R:
    """Check ``params`` (the request minus id and op) against ``op``'s schema: the typed request."""
    spec = op.schema
    if not params and not spec:  # status, capabilities
        return op.request()
    for name in params:
        if name not in spec:
            raise _bad(name, f"is not a parameter of {op.name}")
    out: dict[str, Any] = {}
    for name, p in spec.items():
        if name in params:
            out[name] = _check(name, p, params[name])
        elif p.required:
            raise _bad(name, "is required")
    return op.request(**out)


def check_id(value: Any) -> str | int:
    """A request id: a string of 1..128 characters or a JSON-safe integer."""
    if isinstance(value, str) and 0 < len(value) <= MAX_ID_LEN:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**53:
        return value
    raise api_error(BAD_REQUEST, "'id' must be a string of 1-128 characters or an integer", param="id")
