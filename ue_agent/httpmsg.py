"""HTTP message values shared by the sans-IO cores and the HTTP client: no I/O here.

The GBA and KMS glue (``ue_agent.gba``, ``ue_agent.kms``) talks to an injected
:class:`HttpRequester` (the daemon passes :class:`ue_agent.drivers.http.HttpClient`) and
sees only these values: :class:`HttpResponse`, :class:`Headers`, :class:`HttpError` and
:func:`request_target`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

#: HttpError.reason values
REASONS = frozenset(
    {"bad_url", "bad_request", "connect", "tls", "timeout", "closed", "protocol", "too_large", "shut_down"}
)


class HttpError(OSError):
    """An HTTP exchange failed; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, message: str) -> None:
        assert reason in REASONS, reason
        super().__init__(message)
        self.reason = reason

    def __str__(self) -> str:
        return str(self.args[0])


class Headers(Mapping[str, str]):
    """Response header fields: case-insensitive, in arrival order, repeats kept.

    As a mapping each name gives its first value; :meth:`get_all` gives every value.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = [(str(k), str(v)) for k, v in items]

    def get_all(self, name: str) -> list[str]:
        n = name.lower()
        return [v for k, v in self._items if k.lower() == n]

    def items_all(self) -> list[tuple[str, str]]:
        """Every (name, value) pair as received."""
        return list(self._items)

    def __getitem__(self, name: str) -> str:
        n = name.lower()
        for k, v in self._items:
            if k.lower() == n:
                return v
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(k.lower() == name.lower() for k, _ in self._items)

    def __iter__(self) -> Iterator[str]:
        seen: set[str] = set()
        for k, _ in self._items:
            if k.lower() not in seen:
                seen.add(k.lower())
                yield k

    def __len__(self) -> int:
        return len({k.lower() for k, _ in self._items})

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


@dataclass
class HttpResponse:
    status: int
    headers: Headers
    body: bytes = field(repr=False)
    reason: str = ""


class HttpRequester(Protocol):
    """What the GBA and NAF clients need from an HTTP client."""

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        timeout_s: float | None = None,
        max_body: int | None = None,
    ) -> HttpResponse: ...


@dataclass(frozen=True)
class Target:
    """Where a URL points: scheme, host, port and the request-target."""

    scheme: str
    host: str
    port: int
    target: str  # request-target: path and query as given

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def request_target(url: str) -> str:
    """The request-target sent for ``url``: its path (``/`` when empty) and query, as written.

    Digest ``uri=`` must equal it (RFC 2617 3.2.2), so the NAF client takes it from here.
    """
    parts = urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return target


def parse_url(url: str) -> Target:
    """An http(s) URL as a :class:`Target`, or ``HttpError("bad_url")``."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise HttpError("bad_url", f"bad URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise HttpError("bad_url", f"URL scheme {scheme[:10]!r} is not http or https")
    if not parts.hostname:
        raise HttpError("bad_url", "URL without a host")
    if parts.username is not None or parts.password is not None:
        raise HttpError("bad_url", "URL with user information")
    target = request_target(url)
    if any(c in target for c in " \r\n\t\0"):
        raise HttpError("bad_url", "URL path with spaces or control characters")
    if port is None:
        port = 443 if scheme == "https" else 80
    return Target(scheme, parts.hostname, port, target)
