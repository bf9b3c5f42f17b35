"""Key material that zeroizes and never prints itself.

A :class:`Secret` keeps its bytes in a ``bytearray`` so they can be overwritten on
:meth:`Secret.zeroize`. ``repr``/``str`` show only the length; the bytes leave the
object only through :meth:`Secret.reveal`, which call sites use at the last moment
(handing a key to libsrtp, base64-encoding it for an authorized socket peer).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable
from typing import Protocol


class _Hash(Protocol):
    def update(self, data: bytearray, /) -> None: ...


class Secret:
    __slots__ = ("_buf", "_label")

    def __init__(self, data: bytes | bytearray | memoryview, label: str = "secret") -> None:
        self._buf = bytearray(data)
        self._label = label

    @classmethod
    def concat(cls, parts: Iterable[Secret | bytes], label: str = "secret") -> Secret:
        buf = bytearray()
        for p in parts:
            buf += p._buf if isinstance(p, Secret) else p
        s = cls(buf, label)
        buf[:] = b"\x00" * len(buf)
        return s

    def reveal(self) -> bytes:
        """The key bytes. Use only where the key must leave this object."""
        return bytes(self._buf)

    def slice(self, start: int, stop: int, label: str | None = None) -> Secret:
        with memoryview(self._buf) as view:  # no temporary copy of the bytes
            return Secret(view[start:stop], label or self._label)

    def feed(self, h: _Hash) -> None:
        """Hash the key: ``h.update`` (a hashlib/hmac object) reads it in place, no copy."""
        h.update(self._buf)

    def zeroize(self) -> None:
        for i in range(len(self._buf)):
            self._buf[i] = 0
        self._buf = bytearray()

    @property
    def zeroized(self) -> bool:
        return len(self._buf) == 0

    def __len__(self) -> int:
        return len(self._buf)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret):
            return hmac.compare_digest(bytes(self._buf), bytes(other._buf))
        if isinstance(other, bytes | bytearray):
            return hmac.compare_digest(bytes(self._buf), bytes(other))
        return NotImplemented

    def __hash__(self) -> int:  # secrets are not dict keys
        raise TypeError("Secret is unhashable")

    def __repr__(self) -> str:
        return f"<Secret {self._label} {len(self._buf)} bytes>"

    __str__ = __repr__

    def __reduce__(self):  # never pickled into a log or a cache
        raise TypeError("Secret cannot be pickled")


def _json_text(text: str) -> bytes:
    """``text`` as the inside of a JSON string (ASCII, escaped)."""
    return json.dumps(text, ensure_ascii=True)[1:-1].encode()


_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def b64_len(n: int) -> int:
    """Length of the padded base64 text of ``n`` bytes."""
    return (n + 2) // 3 * 4


def b64_into(out: bytearray, at: int, data: bytearray | memoryview) -> int:
    """Write the base64 (RFC 4648 §4, padded) of ``data`` into ``out`` at ``at``; the end.

    Byte by byte through ints: no intermediate bytes or str object ever holds the text, so
    zeroizing ``out`` afterwards leaves no copy (``base64.b64encode`` returns an immutable
    bytes object that cannot be wiped)."""
    n = len(data)
    i = 0
    while i + 3 <= n:
        v = data[i] << 16 | data[i + 1] << 8 | data[i + 2]
        out[at] = _B64[v >> 18]
        out[at + 1] = _B64[v >> 12 & 63]
        out[at + 2] = _B64[v >> 6 & 63]
        out[at + 3] = _B64[v & 63]
        i += 3
        at += 4
    rest = n - i
    if rest:
        v = data[i] << 16 | (data[i + 1] << 8 if rest == 2 else 0)
        out[at] = _B64[v >> 18]
        out[at + 1] = _B64[v >> 12 & 63]
        out[at + 2] = _B64[v >> 6 & 63] if rest == 2 else 0x3D
        out[at + 3] = 0x3D
        at += 4
    return at


_B64_VALUE = {c: i for i, c in enumerate(_B64)}


def b64_decode(text: str) -> bytearray:
    """The bytes of base64 ``text`` (RFC 4648 §4; padding optional), into a new ``bytearray``
    the caller zeroizes. Character by character through ints: no intermediate bytes object
    holds the key (``base64.b64decode`` returns one that cannot be wiped). ValueError when
    ``text`` is not base64."""
    body = len(text.rstrip("="))
    pad = len(text) - body
    if pad > 2 or body % 4 == 1 or (pad and len(text) % 4):
        raise ValueError("not base64")
    out = bytearray(body * 3 // 4)
    acc = bits = at = 0
    for i in range(body):
        v = _B64_VALUE.get(ord(text[i]))
        if v is None:
            raise ValueError("not base64")
        acc = (acc << 6 | v) & 0xFFFFFF
        bits += 6
        if bits >= 8:
            bits -= 8
            out[at] = acc >> bits & 0xFF
            at += 1
    acc = 0
    return out


class SecretText:
    """A reply value that carries key material: literal text parts and :class:`Secret`
    parts (written as base64). Only the API's reply encoder turns it into bytes, straight
    into the one buffer it zeroizes once the reply is written, so no str or bytes copy of
    the key is ever made. ``owned``: the Secrets are this value's own copies, zeroized by
    the encoder when it is done (else they belong to someone else, e.g. the key store)."""

    __slots__ = ("owned", "parts")

    def __init__(self, *parts: str | Secret, owned: bool = False) -> None:
        self.parts = parts
        self.owned = owned

    def _literal(self) -> list[bytes | Secret]:
        return [_json_text(p) if isinstance(p, str) else p for p in self.parts]

    def size(self) -> int:
        """Bytes :meth:`write_into` writes (JSON-escaped text, base64 secrets)."""
        return sum(len(p) if isinstance(p, bytes) else b64_len(len(p)) for p in self._literal())

    def write_into(self, out: bytearray, at: int) -> int:
        """Write the value (the inside of a JSON string) into ``out`` at ``at``; the end."""
        for p in self._literal():
            if isinstance(p, bytes):
                out[at : at + len(p)] = p
                at += len(p)
            else:
                at = b64_into(out, at, p._buf)
        return at

    def done(self) -> None:
        """The encoder wrote it: drop the owned secrets."""
        if self.owned:
            for p in self.parts:
                if isinstance(p, Secret):
                    p.zeroize()

    def __repr__(self) -> str:
        return "<SecretText>"

    __str__ = __repr__

    def __reduce__(self):  # never pickled into a log or a cache
        raise TypeError("SecretText cannot be pickled")
