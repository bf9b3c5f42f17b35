"""Socket protocol v1: names, line framing and JSON encoding (sans-IO).

Newline-delimited JSON over SOCK_STREAM: UTF-8, one object per line, at most
:data:`MAX_LINE` bytes a line including the newline. :class:`LineFramer` turns received
bytes into whole lines and reports an over-long line once, then skips it up to its
newline, so one bad line costs one error and the connection stays usable.
"""

from __future__ import annotations

import json
import marshal
import re
import secrets
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any, NamedTuple

from ue_agent.secret import SecretText

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = (1,)
MAX_LINE = 65536
#: deepest JSON nesting a request may have (requests are flat; this is generous).
MAX_DEPTH = 16


def __getattr__(name: str) -> Any:
    """``OPS``: the operation names, from their declarations (:mod:`ue_agent.ops.registry`),
    loaded on first use so that a daemon with no client yet has not imported them."""
    if name == "OPS":
        from ue_agent.ops.registry import OPERATIONS

        return tuple(OPERATIONS)
    raise AttributeError(name)


EVENTS = ("card", "bootstrap", "handover", "session", "security.warning")


class LineTooLong(NamedTuple):
    """Marker from :class:`LineFramer`: a line longer than the limit was dropped."""

    length: int


_ZEROS = memoryview(bytes(4096))


class LineFramer:
    """Bytes in, whole lines (without the newline) out.

    A request may carry a key (the peer's ``a=crypto`` line), so the buffer never leaves a
    copy behind: bytes taken out are zeroed in place, and when the buffer must grow its
    content moves to a new one and the old one is zeroed before it is dropped (a growing
    ``bytearray`` would free its old memory as it was). An emptied large buffer is dropped
    (it holds zeros only by then), so an idle connection keeps no large buffer.
    """

    #: a buffer this small is kept when empty; a larger one is dropped
    KEEP = 4096

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._start = 0  # the unread bytes are _buf[_start:_end]
        self._end = 0
        self._skipping = False  # inside an over-long line, dropping up to its newline
        self._skipped = 0

    def lone_line(self, data: bytes | bytearray, n: int) -> bool:
        """Whether ``data[:n]`` is one whole line within the limit with nothing buffered before
        it: the usual read of one request, which can be taken as it is (no copy through the
        buffer)."""
        return (
            self._end == self._start
            and not self._skipping
            and 0 < n <= self.max_line
            and data.find(b"\n", 0, n) == n - 1
        )

    def feed(self, data: bytes) -> list[bytes | LineTooLong]:
        """Every whole line ``data`` completes (the rest stays buffered)."""
        if self.lone_line(data, len(data)):
            return [data[:-1]]
        self.push(data)
        out: list[bytes | LineTooLong] = []
        while (item := self.next()) is not None:
            out.append(item)
        return out

    def push(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer ``data``; :meth:`next` takes the lines out one at a time. The buffer holds
        what was pushed and not yet taken: the caller bounds it by pushing only after it
        took the lines (a server pauses reading meanwhile)."""
        n = len(data)
        if not n:
            return
        buf, start, end = self._buf, self._start, self._end
        if end + n > len(buf):
            held = end - start
            size = held + n
            if size <= len(buf) and start:  # room once the unread bytes move to the front
                with memoryview(buf) as view:
                    view[:held] = view[start:end]
                    view[held:end] = bytes(end - held)
            else:  # a new buffer; the old one is zeroed before it is dropped
                new = bytearray(max(size, 2 * len(buf), 256))
                with memoryview(new) as nv, memoryview(buf) as view:
                    nv[:held] = view[start:end]
                    view[:] = bytes(len(buf))
                self._buf = buf = new
            self._start, end = 0, held
        with memoryview(buf) as view:
            view[end : end + n] = data
        self._end = end + n

    def _consume(self, upto: int) -> None:
        """Zero the buffered bytes before ``upto`` and drop them."""
        n = upto - self._start
        with memoryview(self._buf) as view:
            view[self._start : upto] = _ZEROS[:n] if n <= len(_ZEROS) else bytes(n)
        self._start = upto
        if self._start == self._end:
            self._start = self._end = 0
            if len(self._buf) > self.KEEP:
                self._buf = bytearray()  # all zeros now

    def next(self) -> bytes | LineTooLong | None:
        """The next whole line (or a LineTooLong marker), or None until more is pushed."""
        if self._end == self._start and not self._skipping:
            return None  # nothing buffered
        while True:
            buf, start, end = self._buf, self._start, self._end
            nl = buf.find(b"\n", start, end)
            if self._skipping:
                if nl < 0:
                    self._skipped += end - start
                    self._consume(end)
                    return None
                self._skipped += nl + 1 - start
                self._consume(nl + 1)
                self._skipping = False
                return LineTooLong(self._skipped)
            if nl < 0:
                if end - start >= self.max_line:
                    # No newline within the limit: start skipping; report when the line ends.
                    self._skipping, self._skipped = True, end - start
                    self._consume(end)
                    continue
                return None
            if nl + 1 - start > self.max_line:
                self._consume(nl + 1)
                return LineTooLong(nl + 1 - start)
            with memoryview(buf) as view:
                line = bytes(view[start:nl])
            self._consume(nl + 1)  # a request may carry a key: leave no copy
            return line

    @property
    def partial(self) -> bool:
        """True inside an unfinished line (buffered bytes without a newline, or skipping)."""
        if self._skipping:
            return True
        return self._end > self._start and self._buf.find(b"\n", self._start, self._end) < 0

    @property
    def pending(self) -> int:
        """Bytes of an unfinished line (dropped if the peer disconnects)."""
        return self._end - self._start


def _depth(value: Any, limit: int) -> int:
    """Nesting depth, stopping early past ``limit``."""
    stack = [(value, 1)]
    deepest = 0
    while stack:
        item, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        if isinstance(item, dict):
            stack.extend((v, d + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, d + 1) for v in item)
    return deepest


def _raw_depth(line: bytes, limit: int) -> bool:
    """True when brackets nest deeper than ``limit`` (checked before parsing, so a
    64 KiB line of '[' never reaches the JSON parser's recursion)."""
    depth = 0
    in_str = escape = False
    for b in line:
        if in_str:
            if escape:
                escape = False
            elif b == 0x5C:
                escape = True
            elif b == 0x22:
                in_str = False
        elif b == 0x22:
            in_str = True
        elif b in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return True
        elif b in (0x5D, 0x7D):
            depth -= 1
    return False


def _reject_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not JSON", name, 0)


# Built once: json.loads/json.dumps with keyword arguments build a new decoder/encoder on
# every call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False)
#: the decoder's C scanner: one whole value from a position, (value, end)
_SCAN = _DECODER.scan_once  # type: ignore[attr-defined]


def _not_json(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON")


#: _ENCODER's C encoder, made once (JSONEncoder.encode makes a new one on every call): the
#: same output; no circular-reference check (a reply is a tree; a cycle, a bug, ends in
#: RecursionError, which the callers handle as they handle a value that is not JSON)
_C_ENCODE = (
    c_make_encoder(None, _not_json, encode_basestring_ascii, None, ":", ",", False, False, False)
    if c_make_encoder is not None
    else None
)


def _dumps(obj: Any) -> str:
    if _C_ENCODE is None:  # pragma: no cover - CPython has the C encoder
        return _ENCODER.encode(obj)
    return "".join(_C_ENCODE(obj, 0))


def decode_line(line: bytes) -> Any:
    """One line -> a JSON value. Raises ValueError with a short, input-free reason."""
    if line.endswith(b"\r"):
        line = line[:-1]
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("not UTF-8") from None
    # With at most MAX_DEPTH - 1 opening brackets anywhere in the line, neither depth check
    # can fail (a value is at most one level deeper than its brackets), so the byte-by-byte
    # scan and the tree walk run only for lines that could be too deep.
    deep = line.count(b"[") + line.count(b"{") >= MAX_DEPTH
    if deep and _raw_depth(line, MAX_DEPTH):
        raise ValueError(f"nested deeper than {MAX_DEPTH}")
    value: Any = None
    end = -1
    if text[:1] == "{":
        # The usual request: one object from the first character to the last. The C
        # scanner alone (JSONDecoder.decode adds two whitespace matches around it); any
        # other line (whitespace around the value, trailing bytes, an error) takes the
        # general decoder, which accepts and refuses exactly what it always did.
        try:
            value, end = _SCAN(text, 0)
        except (StopIteration, json.JSONDecodeError, RecursionError):
            end = -1
    if end != len(text):
        try:
            value = _DECODER.decode(text)
        except (json.JSONDecodeError, RecursionError):
            raise ValueError("not JSON") from None
    if deep and _depth(value, MAX_DEPTH) > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH}")
    return value


def encode(obj: dict[str, Any]) -> bytes:
    """One object -> one line (compact, ASCII-safe, newline-terminated). Key material
    (:class:`~ue_agent.secret.SecretText`) is refused here (TypeError): replies that may
    carry it go through :func:`encode_reply`."""
    return _dumps(obj).encode() + b"\n"


class RawJson:
    """A reply value already encoded as JSON, in a ``bytearray`` its owner zeroizes: key
    material encoded once per session (the key store's cached wire form, zeroized with the
    session), spliced into each reply line as it is (:func:`encode_reply`)."""

    __slots__ = ("data",)

    def __init__(self, data: bytearray) -> None:
        self.data = data

    def __repr__(self) -> str:
        return "<RawJson>"


class FrozenReply(dict[str, Any]):
    """A reply (an operation's result) that no one may change: kept by its maker and
    returned again while what it was made of is unchanged (``session.keys``,
    :mod:`ue_agent.ops.session`), so :class:`ReplyEncoder` may reuse what it encoded of it
    when the same object comes back. Nested objects are frozen too (:func:`frozen`)."""

    __slots__ = ()

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("a FrozenReply is not changed")

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = _refuse  # type: ignore[assignment]
    __ior__ = _refuse  # type: ignore[assignment]


def frozen(value: Any) -> Any:
    """``value`` with every dict a :class:`FrozenReply` and every list a tuple (JSON writes
    a tuple as a list: the encoding is the same)."""
    if isinstance(value, dict):
        return FrozenReply({k: frozen(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(frozen(v) for v in value)
    return value


def encode_value(value: Any) -> bytearray:
    """``value`` as JSON in a ``bytearray`` (key material in it written as for a reply, see
    :func:`encode_reply`): a :class:`RawJson` to be, zeroized by its owner."""
    try:
        return bytearray(_dumps(value).encode())
    except TypeError:
        line = _encode_secret({"v": value})  # '{"v":' value '}\n'
        try:
            return line[5:-2]
        finally:
            wipe(line)


#: stands for a RawJson value while the rest of a reply is encoded in one pass (random per
#: process, as in _encode_secret: no value the agent writes can contain it by chance)
_RAW_TAG = secrets.token_hex(8)
_RAW_SLOT = f"{_RAW_TAG}r"
_RAW_MARK = f'"{_RAW_SLOT}"'.encode()


def _cut(text: bytes, count: int) -> list[bytes]:
    """``text`` (JSON with ``count`` placeholders for raw values) cut at the placeholders."""
    parts = text.split(_RAW_MARK)
    if len(parts) != count + 1:  # pragma: no cover - the tag is random per process
        raise ValueError("reply placeholder found in a value")
    return parts


def _splice(obj: dict[str, Any]) -> bytearray:
    raws: list[bytearray] = []
    plain: dict[str, Any] = {}
    for key, value in obj.items():
        if isinstance(value, RawJson):
            plain[key] = _RAW_SLOT
            raws.append(value.data)
        else:
            plain[key] = value
    parts = _cut(_dumps(plain).encode(), len(raws))
    pieces: list[bytes | bytearray] = [parts[0]]
    for raw, part in zip(raws, parts[1:], strict=True):
        pieces += (raw, part)
    pieces.append(b"\n")
    return bytearray().join(pieces)  # sized first, then filled: no partial copy left behind


def encode_reply(obj: dict[str, Any]) -> bytes | bytearray:
    """A reply line. One that holds :class:`~ue_agent.secret.SecretText` values (key
    material) comes back as a ``bytearray``, the only place the keys' text is ever
    written: the caller writes it to the peer and then wipes it (:func:`wipe`). One with
    :class:`RawJson` values at its top level is spliced together from their bytes (also a
    ``bytearray`` to wipe): nothing is encoded again."""
    for value in obj.values():
        if isinstance(value, RawJson):
            return _splice(obj)
    try:
        return _dumps(obj).encode() + b"\n"
    except TypeError:
        return _encode_secret(obj)  # TypeError again when obj holds something else not JSON


def _id_json(req_id: Any) -> bytes:
    if type(req_id) is int:
        return str(req_id).encode()
    if type(req_id) is str:
        return encode_basestring_ascii(req_id).encode()
    return _dumps(req_id).encode()


_REPLY_START = b'{"id":'


class ReplyEncoder:
    """The reply lines of one connection (:meth:`line`): what :func:`encode_reply` writes for
    ``{"id": ..., "ok": true, **outcome}``, byte for byte, with less work for a reply that
    carries :class:`RawJson` (key material encoded once per session, ``session.keys``).

    Such a reply is written as segments of encoded JSON around the request's id and the
    raw values. The segments of each operation's last reply are kept and used again while
    the rest of its reply is the same: compared exactly (:mod:`marshal`'s bytes of the
    members other than the raw ones: types, values and order; a value marshal does not
    take is never kept). A :class:`FrozenReply` that comes back as the same object (the
    key store keeps ``session.keys``'s while nothing in it changed) reuses its segments
    without that comparison. What is kept is no key material: the raw values are spliced in
    from their owners' buffers on every reply, into the one ``bytearray`` the caller wipes
    (the kept FrozenReply refers to its owner's buffer, which is zeroized with the session).
    """

    __slots__ = ("_last",)

    def __init__(self) -> None:
        #: op -> (the members other than the raw ones, marshalled; the segments around
        #: the id and the raw values; the outcome itself when it was a FrozenReply)
        self._last: dict[str, tuple[bytes | None, list[bytes], FrozenReply | None]] = {}

    def line(self, op: str, req_id: Any, outcome: dict[str, Any]) -> bytes | bytearray:
        last = self._last.get(op)
        if last is not None and last[2] is outcome:
            # the same unchangeable reply object as last time: the same segments, and the
            # raw values taken again from their owners' buffers
            return self._join(req_id, last[1], [v.data for v in outcome.values() if type(v) is RawJson])
        types = list(map(type, outcome.values()))
        count = types.count(RawJson)
        if not count or "id" in outcome or "ok" in outcome:
            return encode_reply({"id": req_id, "ok": True, **outcome})
        plain = outcome.copy()
        raws: list[bytearray] = []
        if count == 1:  # the usual reply (session.keys): found without a loop in Python
            key = list(outcome)[types.index(RawJson)]
            raws.append(outcome[key].data)
            plain[key] = _RAW_SLOT
        else:
            for key, value in outcome.items():
                if type(value) is RawJson:
                    raws.append(value.data)
                    plain[key] = _RAW_SLOT
        try:
            exact: bytes | None = marshal.dumps(plain)
        except ValueError:  # a type marshal does not take (SecretText, an enum...): not kept
            exact = None
        if last is not None and exact is not None and last[0] == exact:
            segments = last[1]
        else:
            segments = _segments(plain, count)
        keep = outcome if type(outcome) is FrozenReply else None
        if exact is not None or keep is not None:
            self._last[op] = (exact, segments, keep)
        return self._join(req_id, segments, raws)

    @staticmethod
    def _join(req_id: Any, segments: list[bytes], raws: list[bytearray]) -> bytearray:
        pieces: list[bytes | bytearray] = [_REPLY_START, _id_json(req_id), segments[0]]
        for i, raw in enumerate(raws, 1):
            pieces.append(raw)
            pieces.append(segments[i])
        return bytearray().join(pieces)  # sized first, then filled: one allocation


def _segments(plain: dict[str, Any], count: int) -> list[bytes]:
    """``{"ok": true, **plain}`` encoded and cut at the raw values' places: the segment
    after the id, one after each raw value (the last one ends the line)."""
    parts = _cut(_dumps({"ok": True, **plain}).encode()[1:], count)
    parts[0] = b"," + parts[0]
    parts[-1] += b"\n"
    return parts


def wipe(line: bytes | bytearray) -> None:
    """Zeroize a line :func:`encode` returned as a bytearray (a reply with key material)."""
    if isinstance(line, bytearray):
        line[:] = bytes(len(line))


def _encode_secret(obj: dict[str, Any]) -> bytearray:
    tag = secrets.token_hex(8)
    found: list[SecretText] = []

    def placeholder(value: Any) -> str:
        if isinstance(value, SecretText):
            found.append(value)
            return f"{tag}{len(found) - 1}{tag}"
        raise TypeError(f"{type(value).__name__} is not JSON")

    try:
        text = json.JSONEncoder(
            separators=(",", ":"), ensure_ascii=True, allow_nan=False, default=placeholder
        ).encode(obj)
        if not found:
            raise TypeError("not JSON")
        # '"<tag>N<tag>"' stands where secret N goes; every other piece is ASCII JSON without
        # key material
        pieces = re.split(f"{tag}([0-9]+){tag}", text)
        size = 1 + sum(len(p) if i % 2 == 0 else found[int(p)].size() for i, p in enumerate(pieces))
        out = bytearray(size)  # one allocation: no growth leaves a partial copy behind
        at = 0
        for i, piece in enumerate(pieces):
            if i % 2 == 0:
                out[at : at + len(piece)] = piece.encode()
                at += len(piece)
            else:
                at = found[int(piece)].write_into(out, at)
        out[at] = 0x0A
        return out
    finally:
        for s in found:
            s.done()
