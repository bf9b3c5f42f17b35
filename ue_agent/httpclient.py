"""A small HTTP/1.1 client on the standard library for the UE side (Ub to the BSF, Ua to the KMS).

The daemon needs only a few request/response exchanges with two servers, so it does not load
aiohttp (about 10 MB of resident memory on a small board, and a slow first import); the lab
servers keep aiohttp. ``http.client`` does the wire format; this module adds what the callers
need around it:

- ``await HttpClient().request(method, url, headers=..., body=b"") -> HttpResponse``; the
  blocking exchange runs on a small dedicated thread pool, the event loop never blocks.
- One kept-alive connection per (scheme, host, port). A request takes the idle connection
  when there is one (a second, concurrent request opens its own, which is closed afterwards
  unless the idle slot is free again), so requests never queue behind each other.
- An idle connection the server has closed (readable while idle: EOF or stray bytes) is
  dropped before anything is sent on it. If a reused connection still fails before a status
  line arrives, the request is sent again on a new connection only when that is safe (GET,
  HEAD, OPTIONS); otherwise the caller gets ``HttpError("closed")``. Idle connections are
  dropped after ``keepalive_s`` (silent NAT/middlebox drops are not detectable otherwise).
- Every wait is bounded by one per-request deadline: connect, TLS handshake, sending, the
  status line, headers and body (socket timeouts set to the time left before each step,
  plus a watchdog on the event loop that shuts the socket down when the deadline passes, so
  a server dripping bytes cannot stretch a request). Name resolution cannot be interrupted;
  the caller still gets its answer at the deadline.
- Bodies are capped (``max_body``; a larger Content-Length is refused before reading).
- https: an ``ssl`` context (``ssl.create_default_context()`` unless one is given) is built
  the first time an https URL is used.
- :class:`Headers`: case-insensitive lookup that keeps repeated fields (``get_all``).

Every failure is an :class:`HttpError` (an ``OSError``) with a ``reason`` the callers map to
their own codes (``gba.bsf_unreachable``, ``gba.naf_unreachable``, ``kms.unreachable``,
``gba.bad_response``). Messages name the host and the failure, never headers or bodies.
"""

from __future__ import annotations

import asyncio
import http.client
import select
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

MAX_BODY = 1024 * 1024
_CHUNK = 64 * 1024
#: methods whose request may be sent a second time when a kept-alive connection turns out dead
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

#: HttpError.reason values
REASONS = frozenset(
    {"bad_url", "bad_request", "connect", "tls", "timeout", "closed", "protocol", "too_large", "shut_down"}
)
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


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


@dataclass(frozen=True)
class _Target:
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


def parse_url(url: str) -> _Target:
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
    return _Target(scheme, parts.hostname, port, target)


class _Exchange:
    """One request in flight: its deadline and the connection it is using (for the watchdog)."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.conn: http.client.HTTPConnection | None = None
        self.aborted = False
        self._lock = threading.Lock()

    def left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0 or self.aborted:
            raise TimeoutError("deadline passed")
        return left

    def use(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self.conn = conn
            aborted = self.aborted
        if aborted:
            _shutdown(conn)

    def abort(self) -> None:
        """From the event loop: wake the worker thread up by shutting the socket down."""
        with self._lock:
            self.aborted = True
            conn = self.conn
        if conn is not None:
            _shutdown(conn)


def _shutdown(conn: http.client.HTTPConnection) -> None:
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _idle_alive(sock: socket.socket) -> bool:
    """Whether an idle kept-alive socket can carry a request: nothing to read on it.

    Readable while idle means EOF, a reset or bytes nobody asked for; all make it unusable.
    A TLS socket may be readable because of post-handshake records (session tickets), so
    for TLS a non-blocking read decides.
    """
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLPRI)
        readable = bool(poller.poll(0))
    except (OSError, ValueError):
        return False
    if not readable:
        return True
    if not hasattr(sock, "pending"):  # plain TCP
        return False
    import ssl

    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        sock.recv(1)
    except ssl.SSLWantReadError:
        return True  # only TLS records without application data
    except OSError:
        return False
    finally:
        try:
            sock.settimeout(timeout)
        except OSError:
            pass
    return False  # EOF or unexpected application data


class _Stale(Exception):
    """A reused connection failed before any part of a response arrived."""


class HttpClient:
    """HTTP/1.1 requests with kept-alive connections, bounded waits and capped bodies."""

    def __init__(
        self,
        timeout_s: float = 10.0,
        max_body: int = MAX_BODY,
        *,
        keepalive_s: float = 15.0,
        ssl_context: Any = None,
        max_workers: int = 4,
        user_agent: str | None = None,
    ) -> None:
        if timeout_s <= 0 or max_body < 0 or keepalive_s < 0 or max_workers < 1:
            raise ValueError("timeout_s, max_workers must be positive; max_body, keepalive_s >= 0")
        self.timeout_s = timeout_s
        self.max_body = max_body
        self.keepalive_s = keepalive_s
        self.user_agent = user_agent
        self._ssl_context = ssl_context
        self._max_workers = max_workers
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()  # guards _idle, _inflight, _closed and the executor
        self._idle: dict[tuple[str, str, int], tuple[http.client.HTTPConnection, float]] = {}
        self._inflight: set[_Exchange] = set()
        self._closed = False
        #: TCP connections opened so far (tests, status)
        self.connections_opened = 0

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- public -----------------------------------------------------------------------------
    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        timeout_s: float | None = None,
        max_body: int | None = None,
    ) -> HttpResponse:
        """Send one request and read the whole answer (redirects are not followed)."""
        method = method.upper()
        if not method.isascii() or not method.isalpha():
            raise HttpError("bad_request", "method must be a token of letters")
        tgt = parse_url(url)
        pairs = _header_pairs(headers)
        timeout = self.timeout_s if timeout_s is None else timeout_s
        cap = self.max_body if max_body is None else max_body
        exchange = _Exchange(time.monotonic() + timeout)
        with self._lock:
            if self._closed:
                raise HttpError("shut_down", "the HTTP client is closed")
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self._max_workers, thread_name_prefix="ue-agent-http")
            executor = self._executor
            self._inflight.add(exchange)
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(
            executor, self._run, exchange, tgt, method, pairs, bytes(body), cap, timeout
        )
        fut.add_done_callback(_consume)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            exchange.abort()
            raise HttpError("timeout", f"no answer from {tgt.netloc} within {timeout:g} s") from None
        except asyncio.CancelledError:
            exchange.abort()
            task = asyncio.current_task()
            if fut.cancelled() and task is not None and not task.cancelling():
                # close() cancelled the queued work, nobody cancelled the caller
                raise HttpError("shut_down", "the HTTP client was closed") from None
            raise
        finally:
            with self._lock:
                self._inflight.discard(exchange)

    async def close(self) -> None:
        """Close idle connections, abort requests in flight and stop the worker threads."""
        with self._lock:
            self._closed = True
            idle = [c for c, _ in self._idle.values()]
            self._idle.clear()
            inflight = list(self._inflight)
            executor, self._executor = self._executor, None
        for conn in idle:
            conn.close()
        for ex in inflight:
            ex.abort()
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    # --- worker thread ----------------------------------------------------------------------
    def _run(
        self,
        ex: _Exchange,
        tgt: _Target,
        method: str,
        headers: list[tuple[str, str]],
        body: bytes,
        cap: int,
        timeout: float,
    ) -> HttpResponse:
        try:
            conn = self._take_idle(tgt.key)
            if conn is not None:
                ex.use(conn)
                try:
                    return self._exchange(ex, conn, tgt, method, headers, body, cap)
                except _Stale:
                    conn.close()
                    if method not in SAFE_METHODS:
                        raise HttpError(
                            "closed", f"{tgt.netloc} closed the kept-alive connection; {method} not resent"
                        ) from None
            conn = self._connect(ex, tgt)
            try:
                return self._exchange(ex, conn, tgt, method, headers, body, cap)
            except _Stale:
                conn.close()
                raise HttpError("closed", f"{tgt.netloc} closed the connection without answering") from None
        except TimeoutError:
            raise HttpError("timeout", f"no answer from {tgt.netloc} within {timeout:g} s") from None

    def _take_idle(self, key: tuple[str, str, int]) -> http.client.HTTPConnection | None:
        with self._lock:
            entry = self._idle.pop(key, None)
        if entry is None:
            return None
        conn, since = entry
        if (
            conn.sock is None or time.monotonic() - since > self.keepalive_s or not _idle_alive(conn.sock)  # type: ignore[arg-type]
        ):
            conn.close()
            return None
        return conn

    def _put_idle(self, key: tuple[str, str, int], conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if not self._closed and key not in self._idle and self.keepalive_s > 0:
                self._idle[key] = (conn, time.monotonic())
                return
        conn.close()

    def _connect(self, ex: _Exchange, tgt: _Target) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if tgt.scheme == "https":
            conn = http.client.HTTPSConnection(tgt.host, tgt.port, timeout=ex.left(), context=self._tls())
        else:
            conn = http.client.HTTPConnection(tgt.host, tgt.port, timeout=ex.left())
        try:
            conn.connect()
        except TimeoutError:
            conn.close()
            raise
        except OSError as exc:
            conn.close()
            if ex.aborted:
                raise TimeoutError("deadline passed") from None
            reason = "tls" if _is_tls_error(exc) else "connect"
            what = "TLS with" if reason == "tls" else "connect to"
            raise HttpError(reason, f"{what} {tgt.netloc} failed ({_describe(exc)})") from None
        with self._lock:
            self.connections_opened += 1
        ex.use(conn)
        return conn

    def _tls(self) -> Any:
        with self._lock:
            if self._ssl_context is None:
                import ssl

                self._ssl_context = ssl.create_default_context()
            return self._ssl_context

    def _exchange(
        self,
        ex: _Exchange,
        conn: http.client.HTTPConnection,
        tgt: _Target,
        method: str,
        headers: list[tuple[str, str]],
        body: bytes,
        cap: int,
    ) -> HttpResponse:
        """One request on ``conn``; raises _Stale when nothing of an answer came back."""
        sock = conn.sock
        assert sock is not None
        names = {k.lower() for k, _ in headers}
        try:
            sock.settimeout(ex.left())
            conn.putrequest(
                method, tgt.target, skip_host="host" in names, skip_accept_encoding="accept-encoding" in names
            )
            if self.user_agent and "user-agent" not in names:
                conn.putheader("User-Agent", self.user_agent)
            for k, v in headers:
                conn.putheader(k, v)
            if (body or method in _BODY_METHODS) and "content-length" not in names:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            sock.settimeout(ex.left())
            resp = conn.getresponse()
        except TimeoutError:
            conn.close()
            raise
        except (http.client.RemoteDisconnected, ConnectionError):
            if ex.aborted:
                conn.close()
                raise TimeoutError("deadline passed") from None
            raise _Stale() from None
        except (http.client.HTTPException, ValueError) as exc:
            conn.close()
            if ex.aborted:
                raise TimeoutError("deadline passed") from None
            raise HttpError("protocol", f"bad answer from {tgt.netloc} ({_describe(exc)})") from None
        except OSError as exc:
            conn.close()
            if ex.aborted:
                raise TimeoutError("deadline passed") from None
            reason = "tls" if _is_tls_error(exc) else "closed"
            raise HttpError(reason, f"exchange with {tgt.netloc} failed ({_describe(exc)})") from None
        try:
            data = self._read_body(ex, sock, resp, tgt, cap)
        except BaseException:
            conn.close()
            raise
        out = HttpResponse(resp.status, Headers(resp.msg.items()), data, resp.reason)
        if resp.will_close or conn.sock is None:
            conn.close()
        else:
            self._put_idle(tgt.key, conn)
        return out

    def _read_body(
        self, ex: _Exchange, sock: socket.socket, resp: http.client.HTTPResponse, tgt: _Target, cap: int
    ) -> bytes:
        if resp.length is not None and resp.length > cap:
            raise HttpError("too_large", f"answer from {tgt.netloc} larger than {cap} octets")
        parts: list[bytes] = []
        size = 0
        try:
            while True:
                sock.settimeout(ex.left())
                chunk = resp.read(min(_CHUNK, cap + 1 - size))
                if not chunk:
                    break
                parts.append(chunk)
                size += len(chunk)
                if size > cap:
                    raise HttpError("too_large", f"answer from {tgt.netloc} larger than {cap} octets")
        except (http.client.IncompleteRead, ConnectionError) as exc:
            if ex.aborted:
                raise TimeoutError("deadline passed") from None
            raise HttpError(
                "closed", f"{tgt.netloc} closed the connection in the body ({_describe(exc)})"
            ) from None
        except http.client.HTTPException as exc:
            raise HttpError("protocol", f"bad body from {tgt.netloc} ({_describe(exc)})") from None
        except ValueError as exc:  # a malformed chunk size line
            raise HttpError("protocol", f"bad body from {tgt.netloc} ({_describe(exc)})") from None
        return b"".join(parts)


def _header_pairs(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Request header fields as (name, value) strings; refuses what would break the framing."""
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    out = []
    for name, value in pairs:
        name, value = str(name), str(value)
        if not name or not set(name) <= _TOKEN:
            raise HttpError("bad_request", f"header name {name[:40]!r} is not a token")
        if any(c in value for c in "\r\n\0"):
            raise HttpError("bad_request", f"header {name} has a line break or NUL in its value")
        out.append((name, value))
    return out


def _consume(fut: asyncio.Future) -> None:
    """Retrieve the worker's outcome when the caller stopped waiting (no 'never retrieved' log)."""
    if not fut.cancelled():
        fut.exception()


def _is_tls_error(exc: BaseException) -> bool:
    import sys

    ssl = sys.modules.get("ssl")
    return ssl is not None and isinstance(exc, ssl.SSLError | ssl.CertificateError)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text[:120]}" if text else name
