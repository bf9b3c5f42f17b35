"""One typed converter: a parsed TOML/JSON value -> a dataclass, driven by its type hints.

``convert(Cls, data)`` checks ``data`` against ``Cls``'s fields and returns an instance.
Supported hints: ``str``, ``int`` (never a bool), ``float`` (an int is accepted), ``bool``,
``bytes`` (with a :class:`Hex` or :class:`Base64` annotation saying the text encoding),
``Literal[...]`` and :class:`enum.Enum` choices, ``list[X]``, ``tuple[X, ...]`` and fixed
tuples (from a list), ``dict[str, X]``, ``X | None``, unions (first alternative that
accepts the value), nested dataclasses (from a table/object) and ``Any``. Field defaults
and default factories apply to absent keys; a field without one is required.

Constraints ride on ``typing.Annotated``: :class:`Len` (characters, items or decoded bytes),
:class:`Range` (numbers), :class:`Check` (a predicate with its reason) and :data:`INTERNAL`
(the field is set by the program, never read from input: giving it is an unknown key).

Every failure is a :class:`ConvertError` with a stable ``code`` (``convert.unknown_key``,
``convert.missing_key``, ``convert.invalid``) and the dotted key path of the offending
value (``card.profile``, ``streams[1].suite``). Callers map it to their own error family
(``config.*``, ``api.bad_request``).

The per-class plan (field names, one converter closure per field) is built once and
cached, so a conversion costs a dict walk and one constructor call per dataclass.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")

UNKNOWN_KEY = "convert.unknown_key"
MISSING_KEY = "convert.missing_key"
INVALID = "convert.invalid"


# The annotation markers are plain classes (a dataclass costs a code generation at import,
# and the daemon imports this module at start-up).
class Hex:
    """``bytes`` given as a hex string; ``lengths``: the allowed decoded lengths (empty: any)."""

    __slots__ = ("lengths",)

    def __init__(self, *lengths: int) -> None:
        self.lengths = lengths

    def __repr__(self) -> str:
        return f"Hex{self.lengths}"


class Base64:
    """``bytes`` given as standard base64 (RFC 4648 section 4); ``lengths`` as for :class:`Hex`."""

    __slots__ = ("lengths",)

    def __init__(self, *lengths: int) -> None:
        self.lengths = lengths

    def __repr__(self) -> str:
        return f"Base64{self.lengths}"


class Len:
    """Length bounds (inclusive) of a string, list, tuple or dict."""

    __slots__ = ("max", "min")

    def __init__(self, min: int = 0, max: int | None = None) -> None:
        self.min, self.max = min, max

    def __repr__(self) -> str:
        return f"Len({self.min}, {self.max})"


class Range:
    """Inclusive bounds of an int or float (NaN is outside every range)."""

    __slots__ = ("max", "min")

    def __init__(self, min: float | None = None, max: float | None = None) -> None:
        self.min, self.max = min, max

    def __repr__(self) -> str:
        return f"Range({self.min}, {self.max})"


class Check:
    """A predicate on the converted value; ``why`` completes "'key' ..." when it is false."""

    __slots__ = ("test", "why")

    def __init__(self, test: Callable[[Any], bool], why: str) -> None:
        self.test, self.why = test, why

    def __repr__(self) -> str:
        return f"Check({self.why!r})"


class _Internal:
    def __repr__(self) -> str:
        return "INTERNAL"


#: Annotated marker: the field is not read from input (a key naming it is unknown).
INTERNAL: Any = _Internal()


class ConvertError(ValueError):
    """A value that does not fit: ``code``, dotted ``path`` and the reason ``why``."""

    def __init__(self, code: str, why: str, parts: list[str | int] | None = None) -> None:
        self.code = code
        self.why = why
        self.parts: list[str | int] = parts if parts is not None else []
        super().__init__(code, why)

    @property
    def kind(self) -> str:
        """The code without its family: ``unknown_key``, ``missing_key`` or ``invalid``."""
        return self.code.rpartition(".")[2]

    @property
    def path(self) -> str:
        out = ""
        for p in self.parts:
            out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
        return out

    @property
    def message(self) -> str:
        if self.code == UNKNOWN_KEY:
            return f"unknown key '{self.path}'"
        if self.code == MISSING_KEY:
            return f"missing key '{self.path}'"
        return f"'{self.path}' {self.why}" if self.parts else self.why

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


Conv = Callable[[Any], Any]


class _Plan:
    __slots__ = ("cls", "convs", "names", "required")

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.convs: dict[str, Conv] = {}
        self.required: list[str] = []
        self.names: frozenset[str] = frozenset()


_PLANS: dict[type, _Plan] = {}


def _fail(why: str) -> ConvertError:
    return ConvertError(INVALID, why)


def _plural(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def _lengths(lengths: tuple[int, ...]) -> str:
    return " or ".join(map(str, lengths))


def _describe(tp: Any) -> str:
    """A noun phrase for ``tp`` in error messages ("an integer", "a list of strings")."""
    origin = get_origin(tp)
    if origin is typing.Annotated:
        return _describe(get_args(tp)[0])
    if tp is str:
        return "a string"
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is bytes:
        return "a byte string"
    if origin is list or (origin is tuple and get_args(tp)[1:] == (...,)):
        inner = _describe(get_args(tp)[0])
        return "a list of " + inner.split(" ", 1)[1] + ("" if inner.endswith("s") else "s")
    if origin is tuple:
        return f"a list of {len(get_args(tp))} items"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "a table"
    if origin is Literal:
        return "one of " + ", ".join(map(str, get_args(tp)))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(str(m.value) for m in tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(tp) if a is not type(None))
    return getattr(tp, "__name__", str(tp))


#: the scalars taken exactly as that type (a bool is no int here), and what to say otherwise
_EXACT = {str: "must be a string", bool: "must be true or false", int: "must be an integer"}


def _exact(tp: type, message: str) -> Conv:
    def conv_exact(v: Any) -> Any:
        if type(v) is not tp:
            raise _fail(message)
        return v

    return conv_exact


def _scalar(tp: type) -> Conv:
    if tp in _EXACT:
        return _exact(tp, _EXACT[tp])
    if tp is float:

        def conv_float(v: Any) -> Any:
            t = type(v)
            if t is float:
                return v
            if t is int:
                return float(v)
            raise _fail("must be a number")

        return conv_float
    raise TypeError(f"convert: no converter for {tp!r}")


def _bytes(enc: Hex | Base64) -> Conv:
    lengths = enc.lengths
    hexa = isinstance(enc, Hex)
    noun = "a hex string" if hexa else "a base64 string"

    def conv_bytes(v: Any) -> Any:
        if type(v) is not str:
            raise _fail(f"must be {noun}")
        try:
            raw = bytes.fromhex(v) if hexa else base64.b64decode(v, validate=True)
        except (ValueError, binascii.Error):
            raise _fail(f"must be {noun}") from None
        if lengths and len(raw) not in lengths:
            raise _fail(f"must be {_lengths(lengths)} bytes")
        return raw

    return conv_bytes


def _items(convs: Callable[[int], Conv], out: Callable[[list[Any]], Any]) -> Callable[[list[Any]], Any]:
    """Convert a list's items (``convs(i)``: the converter of item ``i``), naming the index on failure."""

    def conv_seq(v: list[Any]) -> Any:
        res = []
        for i, item in enumerate(v):
            try:
                res.append(convs(i)(item))
            except ConvertError as exc:
                exc.parts.insert(0, i)
                raise
        return out(res)

    return conv_seq


def _build(tp: Any) -> Conv:
    """The converter for one type hint."""
    origin = get_origin(tp)
    if origin is typing.Annotated:
        base, *meta = get_args(tp)
        return _annotated(base, meta)
    if tp is Any:
        return lambda v: v
    if tp in (str, bool, int, float):
        return _scalar(tp)
    if tp is bytes:
        raise TypeError("convert: a bytes field needs Annotated[bytes, Hex()] or Annotated[bytes, Base64()]")
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return lambda v: _convert(_plan(tp), v)
    if origin is Literal:
        choices = get_args(tp)
        allowed = {(type(c), c) for c in choices}
        why = "must be one of " + ", ".join(map(str, choices))

        def conv_literal(v: Any) -> Any:
            if (type(v), v) not in allowed:
                raise _fail(why)
            return v

        return conv_literal
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        by_value = {(type(m.value), m.value): m for m in tp}
        why = "must be one of " + ", ".join(str(m.value) for m in tp)

        def conv_enum(v: Any) -> Any:
            try:
                return by_value[(type(v), v)]
            except (KeyError, TypeError):
                raise _fail(why) from None

        return conv_enum
    if origin in (list, tuple):
        args = get_args(tp)
        why = f"must be {_describe(tp)}"
        size = -1  # any length
        if origin is list or args[1:] == (...,):
            item = _build(args[0])
            seq = _items(lambda i: item, list if origin is list else tuple)
        else:
            convs = [_build(a) for a in args]
            size = len(convs)
            seq = _items(convs.__getitem__, tuple)

        def conv_list(v: Any) -> Any:
            if type(v) is not list or (size >= 0 and len(v) != size):
                raise _fail(why)
            return seq(v)

        return conv_list
    if origin is dict:
        key_t, val_t = get_args(tp)
        if key_t is not str:
            raise TypeError(f"convert: dict keys must be str in {tp!r}")
        conv_val = _build(val_t)

        def conv_dict(v: Any) -> Any:
            if type(v) is not dict:
                raise _fail("must be a table")
            out = {}
            for k, item in v.items():
                try:
                    out[k] = conv_val(item)
                except ConvertError as exc:
                    exc.parts.insert(0, k)
                    raise
            return out

        return conv_dict
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        alts = [_build(a) for a in args if a is not type(None)]
        nullable = len(alts) != len(args)
        why = f"must be {_describe(tp)}"
        if len(alts) == 1:
            (only,) = alts
            if not nullable:
                return only

            def conv_optional(v: Any) -> Any:
                return None if v is None else only(v)

            return conv_optional

        def conv_union(v: Any) -> Any:
            if v is None and nullable:
                return None
            for alt in alts:
                try:
                    return alt(v)
                except ConvertError as exc:
                    if exc.parts:  # the value had the right shape; its inside is wrong
                        raise
            raise _fail(why)

        return conv_union
    raise TypeError(f"convert: no converter for {tp!r}")


def _annotated(base: Any, meta: list[Any]) -> Conv:
    enc = [m for m in meta if isinstance(m, Hex | Base64)]
    if enc:
        if base is not bytes:
            raise TypeError("convert: Hex/Base64 annotate bytes only")
        inner = _bytes(enc[0])
    else:
        inner = _build(base)
    fused = _exact_with_bounds(base, meta)
    if fused is not None:
        return fused
    checks: list[Callable[[Any], None]] = []
    for m in meta:
        if isinstance(m, Len):
            lo, hi = m.min, m.max
            why = _bounds_why(base, m)

            def check_len(v: Any, lo: int = lo, hi: int | None = hi, why: str = why) -> None:
                if len(v) < lo or (hi is not None and len(v) > hi):
                    raise _fail(why)

            checks.append(check_len)
        elif isinstance(m, Range):
            lo_r, hi_r = m.min, m.max
            why = _bounds_why(base, m)

            def check_range(v: Any, lo: Any = lo_r, hi: Any = hi_r, why: str = why) -> None:
                if not ((lo is None or v >= lo) and (hi is None or v <= hi)):
                    raise _fail(why)

            checks.append(check_range)
        elif isinstance(m, Check):

            def check_pred(v: Any, m: Check = m) -> None:
                if not m.test(v):
                    raise _fail(m.why)

            checks.append(check_pred)
    if not checks:
        return inner

    def conv_checked(v: Any) -> Any:
        out = inner(v)
        for c in checks:
            c(out)
        return out

    return conv_checked


def _bounds_why(base: Any, m: Len | Range) -> str:
    """What :func:`_annotated`'s check of ``m`` says when it fails."""
    if isinstance(m, Len):
        lo, hi = m.min, m.max
        unit = "characters" if base is str else "items"
        if hi is None:
            return "must not be empty" if lo == 1 else f"must have at least {lo} {unit}"
        if lo == hi:
            return f"must have {lo} {unit}"
        if lo == 1 and base is str:
            return f"must be a non-empty string of at most {hi} characters"
        return f"must have {lo} to {hi} {unit}"
    if m.min is not None and m.max is not None:
        return f"must be between {m.min} and {m.max}"
    if m.min is not None:
        return f"must be at least {m.min}"
    return f"must be at most {m.max}"


def _exact_with_bounds(base: Any, meta: list[Any]) -> Conv | None:
    """One converter for the commonest parameter, an exact ``str`` with a :class:`Len` or an
    exact ``int`` with a :class:`Range` (and nothing else): the type and the bounds checked
    in one call, with the same messages as the general path; None for anything else."""
    if len(meta) != 1:
        return None
    (m,) = meta
    if base is str and type(m) is Len:
        lo, hi = m.min, m.max if m.max is not None else float("inf")
        type_why, why = _EXACT[str], _bounds_why(str, m)

        def conv_text(v: Any) -> Any:
            if type(v) is not str:
                raise _fail(type_why)
            if not lo <= len(v) <= hi:
                raise _fail(why)
            return v

        return conv_text
    if base is int and type(m) is Range:
        lo_r = m.min if m.min is not None else float("-inf")
        hi_r = m.max if m.max is not None else float("inf")
        type_why, why = _EXACT[int], _bounds_why(int, m)

        def conv_bounded_int(v: Any) -> Any:
            if type(v) is not int:
                raise _fail(type_why)
            if not lo_r <= v <= hi_r:
                raise _fail(why)
            return v

        return conv_bounded_int
    return None


def _plan(cls: type) -> _Plan:
    plan = _PLANS.get(cls)
    if plan is not None:
        return plan
    # published only when whole: another thread (the warm-up builds plans while requests
    # are served) never sees a half-built one; two threads building the same plan at once
    # make two equal plans, and one is kept. A nested dataclass (itself too) is planned
    # when a value of it is converted, not here.
    plan = _Plan(cls)
    hints = get_type_hints(cls, include_extras=True)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if not f.init or (
            get_origin(hint) is typing.Annotated and any(m is INTERNAL for m in get_args(hint)[1:])
        ):
            continue
        plan.convs[f.name] = _build(hint)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            plan.required.append(f.name)
    plan.names = frozenset(plan.convs)
    _PLANS[cls] = plan
    return plan


def _convert(plan: _Plan, data: Any) -> Any:
    if type(data) is not dict:
        raise _fail("must be a table")
    names = plan.names
    if not names.issuperset(data):
        for key in data:
            if key not in names:
                raise ConvertError(UNKNOWN_KEY, "unknown key", [key])
    kwargs = {}
    convs = plan.convs
    for key, value in data.items():
        try:
            kwargs[key] = convs[key](value)
        except ConvertError as exc:
            exc.parts.insert(0, key)
            raise
    if len(kwargs) < len(names):
        for key in plan.required:
            if key not in kwargs:
                raise ConvertError(MISSING_KEY, "missing key", [key])
    return plan.cls(**kwargs)


def converter(cls: type[T]) -> Callable[[Any], T]:
    """``convert`` bound to ``cls``: the plan is looked up once and the conversion is one
    call (the API's requests: one call per request). Same checks, same errors."""
    plan = _plan(cls)

    def convert_bound(data: Any) -> T:
        result: T = _convert(plan, data)
        return result

    return convert_bound


def convert(cls: type[T], data: Any) -> T:
    """``data`` (a dict from TOML or JSON) as a ``cls`` instance, or :class:`ConvertError`."""
    result: T = _convert(_plan(cls), data)
    return result


def convert_value(tp: Any, value: Any) -> Any:
    """One value against a type hint (not cached: for tests and one-off checks)."""
    return _build(tp)(value)


def describe(tp: Any) -> str:
    """The noun phrase used in error messages for ``tp`` ("a list of strings")."""
    return _describe(tp)
