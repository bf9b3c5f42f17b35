"""The parameter check every operation's request goes through.

An operation's parameters are the fields of its request dataclass (declared with the
operation, :mod:`ue_agent.ops.declare`); the converter :func:`compiled` makes once per
operation turns the request's JSON object into that dataclass in one pass (base64 decoded
to bytes, limits checked, defaults filled), and :func:`bad_request` turns its error into
``api.bad_request`` naming the parameter by its dotted path (``offer[1][0]``). Unknown
parameters are an error, not ignored: a softphone with a typo learns it at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ue_agent.api.errors import BAD_REQUEST, api_error
from ue_agent.convert import MISSING_KEY, UNKNOWN_KEY, ConvertError, converter
from ue_agent.errors import ApiError

if TYPE_CHECKING:
    from ue_agent.ops.declare import Op

R = TypeVar("R")

MAX_ID_LEN = 128


def bad_request(exc: ConvertError, op: str) -> ApiError:
    """A converter error as ``api.bad_request`` naming the parameter."""
    name = exc.path
    if exc.code == UNKNOWN_KEY:
        return api_error(BAD_REQUEST, f"parameter '{name}' is not a parameter of {op}", param=name)
    if exc.code == MISSING_KEY:
        return api_error(BAD_REQUEST, f"parameter '{name}' is required", param=name)
    return api_error(BAD_REQUEST, f"parameter {exc.message}", param=name)


#: op -> (its request's converter, the shared empty request or None), made on first use
_COMPILED: dict[Any, tuple[Callable[[Any], Any], Any]] = {}


def compiled(op: Op[R]) -> tuple[Callable[[Any], R], R | None]:
    """The parameter check of ``op``, prepared once: the converter of its request
    (:func:`ue_agent.convert.converter`, raising ConvertError: :func:`bad_request` names the
    parameter) and the one empty request of an operation without parameters."""
    found = _COMPILED.get(op)
    if found is None:
        found = _COMPILED[op] = (converter(op.request), op.empty)
    return found


def check_id(value: Any) -> str | int:
    """A request id: a string of 1..128 characters or a JSON-safe integer."""
    t = type(value)  # the decoder's own types first: the check of every request
    if (t is str and 0 < len(value) <= MAX_ID_LEN) or (t is int and -(2**53) < value < 2**53):
        return value
    if isinstance(value, str) and 0 < len(value) <= MAX_ID_LEN:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**53:
        return value
    raise api_error(BAD_REQUEST, "'id' must be a string of 1-128 characters or an integer", param="id")
