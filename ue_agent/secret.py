"""Key material that zeroizes and never prints itself.

A :class:`Secret` keeps its bytes in a ``bytearray`` so they can be overwritten on
:meth:`Secret.zeroize`. ``repr``/``str`` show only the length; the bytes leave the
object only through :meth:`Secret.reveal`, which call sites use at the last moment
(handing a key to libsrtp, base64-encoding it for an authorized socket peer).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable


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
        return Secret(self._buf[start:stop], label or self._label)

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
