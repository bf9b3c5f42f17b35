"""The UE's HTTP/1.1 client (Ub to the BSF, Ua to the KMS): h11 on asyncio, no threads.

h11 (sans-IO) does the wire format; this module owns the sockets and adds what the callers
need around it. The daemon injects one :class:`HttpClient` into the GBA and NAF clients,
which see only :mod:`ue_agent.httpmsg` values.

- ``await HttpClient().request(method, url, headers=..., body=b"") -> HttpResponse``.
- One kept-alive connection per (scheme, host, port). A request takes the idle connection
  when there is one (a second, concurrent request opens its own, which is closed afterwards
  unless the idle slot is free again), so requests never queue behind each other.
- An idle connection that the server closed or sent unrequested bytes on is dropped before
  anything is sent on it. If a reused connection still fails before any byte of an answer
  arrives, the request is sent again on a new connection only when that is safe (GET, HEAD,
  OPTIONS); otherwise the caller gets ``HttpError("closed")``. Idle connections are dropped
  after ``keepalive_s`` (silent NAT/middlebox drops are not detectable otherwise).
- One deadline per request (``asyncio.timeout``) covers name resolution, connect, the TLS
  handshake, sending, the status line, headers and body: a server dripping bytes is cut off
  at the deadline like a silent one.
- Bodies are capped (``max_body``; a larger Content-Length is refused before reading);
  response heads are capped at :data:`MAX_HEAD` octets.
- https: certificates are verified with ``ssl.create_default_context(cafile=ca_file)``
  (the system CAs unless ``ca_file`` names a PEM bundle) or the given ``ssl_context``,
  built the first time an https URL is used.

Every failure is an :class:`~ue_agent.httpmsg.HttpError` (an ``OSError``) with a ``reason``
the callers map to their own codes. Messages name the host and the failure, never headers
or bodies.
"""

from __future__ import annotations

import asyncio
import select
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import h11

from ue_agent.httpmsg import (
    Headers,
    HttpError,
    HttpResponse,
    Target,
    parse_url,
    request_target,
)

__all__ = ["MAX_BODY", "Headers", "HttpClient", "HttpError", "HttpResponse", "parse_url", "request_target"]

MAX_BODY = 1024 * 1024
#: the largest response head (status line and header fields) accepted, in octets
MAX_HEAD = 64 * 1024
_READ_PAUSE = 256 * 1024  # stop reading the socket while this much is waiting to be parsed
#: methods whose request may be sent a second time when a kept-alive connection turns out dead
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class _Stale(Exception):
    """A connection ended before any byte of an answer arrived."""


class _Conn(asyncio.Protocol):
    """One TCP (or TLS) connection: an asyncio protocol feeding bytes to an h11 client state.

    A protocol rather than a StreamReader so that an idle connection can tell that bytes or
    an EOF arrived while nobody was reading (StreamReader keeps its buffer to itself).
    """

    def __init__(self) -> None:
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.dead = False  # EOF, reset, or bytes while idle: never reuse
        self.eof = False
        self.received = 0  # bytes of the current answer
        self._pending = bytearray()
        self._paused = False
        self._readable: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if not self.busy:
            self.dead = True  # unrequested bytes on an idle connection
            return
        self._pending += data
        self.received += len(data)
        if len(self._pending) > _READ_PAUSE and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self.eof = self.dead = True
        self._wake_reader()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = self.dead = True
        self._wake_reader()
        w, self._writable = self._writable, None
        if w is not None and not w.done():
            w.set_result(None)

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        w, self._writable = self._writable, None
        if w is not None and not w.done():
            w.set_result(None)

    def _wake_reader(self) -> None:
        r, self._readable = self._readable, None
        if r is not None and not r.done():
            r.set_result(None)

    # --- used by the client -------------------------------------------------------------------
    @property
    def sock(self) -> socket.socket | None:
        return None if self.transport is None else self.transport.get_extra_info("socket")

    async def send(self, data: bytes | None) -> None:
        if not data:
            return
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("connection closed")
        self.transport.write(data)
        while self._writable is not None:
            await self._writable
        if self.eof and self.received == 0:
            raise ConnectionResetError("connection closed")

    async def read(self) -> bytes:
        """The bytes that arrived since the last call; b"" at EOF."""
        while not self._pending and not self.eof:
            self._readable = asyncio.get_running_loop().create_future()
            await self._readable
        data = bytes(self._pending)
        self._pending.clear()
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    def idle_alive(self) -> bool:
        """Whether an idle kept-alive connection can carry a request.

        Besides what the protocol saw (EOF, reset, stray bytes), a plain TCP socket that is
        readable has bytes or an EOF the event loop has not delivered yet. TLS sockets are
        not polled: post-handshake records (session tickets) make them readable harmlessly.
        """
        if self.dead or self.transport is None or self.transport.is_closing():
            return False
        if self.h11.our_state is not h11.IDLE or self.h11.their_state is not h11.IDLE:
            return False
        if self.transport.get_extra_info("sslcontext") is not None:
            return True
        sock = self.sock
        if sock is None:
            return False
        try:
            poller = select.poll()
            poller.register(sock.fileno(), select.POLLIN | select.POLLPRI)
            return not poller.poll(0)
        except (OSError, ValueError):
            return False

    def close(self) -> None:
        self.dead = True
        if self.transport is not None:
            self.transport.abort()


class _Exchange:
    """One request in flight: its task (so that close() can stop it) and its connection."""

    __slots__ = ("conn", "shut", "task")

    def __init__(self, task: asyncio.Task[Any] | None) -> None:
        self.task = task
        self.conn: _Conn | None = None
        self.shut = False


#: TLS contexts made ahead, off the event loop (:func:`prepare_tls`), by CA file; ``None``
#: marks a CA file whose first client has already made its own (nothing is kept for it)
_prepared: dict[str | None, Any] = {}
_prepared_lock = threading.Lock()


def _new_tls_context(ca_file: str | None) -> Any:
    import ssl

    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise HttpError("tls", f"CA file {ca_file} unusable ({_describe(exc)})") from None


def prepare_tls(ca_file: str | None) -> bool:
    """Make the TLS context the first :class:`HttpClient` with ``ca_file`` will use, ahead of
    its first https request (the warm-up does, in its thread): reading the CA store takes
    tens of milliseconds that would otherwise fall on the first call. Only that first client
    takes it; clients made later (a reload) read the CA file again. False when a client made
    its own meanwhile (nothing is kept). Raises ``HttpError("tls")`` for an unusable file."""
    with _prepared_lock:
        if ca_file in _prepared:
            return False
    ctx = _new_tls_context(ca_file)
    with _prepared_lock:
        if ca_file in _prepared:
            return False
        _prepared[ca_file] = ctx
    return True


def _take_prepared_tls(ca_file: str | None) -> Any:
    with _prepared_lock:
        ctx = _prepared.get(ca_file)
        _prepared[ca_file] = None  # taken, or no longer wanted
    return ctx


#: what warm_up's own end of the socket pair answers: a NAF's Digest challenge (RFC 2617)
_WARM_UP_ANSWER = (
    b"HTTP/1.1 401 Unauthorized\r\n"
    b'WWW-Authenticate: Digest realm="warm-up", nonce="AAAA", qop="auth-int", algorithm=MD5\r\n'
    b"Content-Length: 0\r\n\r\n"
)


async def warm_up() -> None:
    """One exchange through the client's whole path (a new connection, the request written,
    the answer read, the connection closed) on the running loop, over a socket pair whose
    other end answers with a Digest challenge: nothing leaves the process. A process's first
    exchange costs about 1 ms more than later ones (measured on a new connection each time:
    2.6-3.8 ms against 1.5-2.1 once this has run); the warm-up runs it after READY=1, so the
    first call's BSF or KMS request does not pay that."""
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)

    async def answer() -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await loop.sock_recv(theirs, 65536)
            if not chunk:
                return
            data += chunk
        await loop.sock_sendall(theirs, _WARM_UP_ANSWER)

    peer = loop.create_task(answer())
    client = HttpClient(timeout_s=2.0, keepalive_s=0)
    client._given = ours
    try:
        await client.request(
            "POST",
            "http://warm-up.invalid/",
            headers=[("Content-Type", "application/mikey")],
            body=bytes(256),
        )
    finally:
        await client.close()
        peer.cancel()
        ours.close()
        theirs.close()


class HttpClient:
    """HTTP/1.1 requests with kept-alive connections, one deadline each and capped bodies."""

    def __init__(
        self,
        timeout_s: float = 10.0,
        max_body: int = MAX_BODY,
        *,
        keepalive_s: float = 15.0,
        ssl_context: Any = None,
        ca_file: str | None = None,
        user_agent: str | None = None,
    ) -> None:
        if timeout_s <= 0 or max_body < 0 or keepalive_s < 0:
            raise ValueError("timeout_s must be positive; max_body, keepalive_s >= 0")
        self.timeout_s = timeout_s
        self.max_body = max_body
        self.keepalive_s = keepalive_s
        self.user_agent = user_agent
        self.ca_file = ca_file
        self._ssl_context = ssl_context
        self._idle: dict[tuple[str, str, int], tuple[_Conn, float]] = {}
        self._inflight: set[_Exchange] = set()
        self._closed = False
        #: TCP connections opened so far (tests, status)
        self.connections_opened = 0
        #: a connected socket the next connection takes instead of connecting (warm_up)
        self._given: socket.socket | None = None

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
        head = self._head(tgt, method, _header_pairs(headers), body)
        timeout = self.timeout_s if timeout_s is None else timeout_s
        cap = self.max_body if max_body is None else max_body
        if self._closed:
            raise HttpError("shut_down", "the HTTP client is closed")
        ex = _Exchange(asyncio.current_task())
        self._inflight.add(ex)
        try:
            async with asyncio.timeout(timeout):
                return await self._run(ex, tgt, method, head, bytes(body), cap)
        except TimeoutError:
            raise HttpError("timeout", f"no answer from {tgt.netloc} within {timeout:g} s") from None
        except asyncio.CancelledError:
            task = ex.task
            if ex.shut and task is not None and task.uncancel() == 0:
                raise HttpError("shut_down", "the HTTP client was closed") from None
            raise
        finally:
            self._inflight.discard(ex)
            if ex.conn is not None:  # the exchange did not finish: its connection is unusable
                ex.conn.close()

    async def close(self) -> None:
        """Close idle connections and stop requests in flight (they raise ``shut_down``)."""
        self._closed = True
        for conn, _ in self._idle.values():
            conn.close()
        self._idle.clear()
        for ex in list(self._inflight):
            if not ex.shut and ex.task is not None and ex.task is not asyncio.current_task():
                ex.shut = True
                ex.task.cancel()

    # --- one request --------------------------------------------------------------------------
    def _head(
        self, tgt: Target, method: str, headers: list[tuple[str, str]], body: bytes
    ) -> list[tuple[str, str]]:
        names = {k.lower() for k, _ in headers}
        head: list[tuple[str, str]] = []
        if "host" not in names:
            default = 443 if tgt.scheme == "https" else 80
            host = f"[{tgt.host}]" if ":" in tgt.host else tgt.host
            head.append(("Host", host if tgt.port == default else f"{host}:{tgt.port}"))
        if self.user_agent and "user-agent" not in names:
            head.append(("User-Agent", self.user_agent))
        head += headers
        if (body or method in _BODY_METHODS) and "content-length" not in names:
            head.append(("Content-Length", str(len(body))))
        return head

    async def _run(
        self, ex: _Exchange, tgt: Target, method: str, head: list[tuple[str, str]], body: bytes, cap: int
    ) -> HttpResponse:
        conn = self._take_idle(tgt.key)
        if conn is not None:
            ex.conn = conn
            try:
                return await self._exchange(ex, conn, tgt, method, head, body, cap)
            except _Stale:
                conn.close()
                ex.conn = None
                if method not in SAFE_METHODS:
                    raise HttpError(
                        "closed", f"{tgt.netloc} closed the kept-alive connection; {method} not resent"
                    ) from None
        conn = await self._connect(ex, tgt)
        try:
            return await self._exchange(ex, conn, tgt, method, head, body, cap)
        except _Stale:
            raise HttpError("closed", f"{tgt.netloc} closed the connection without answering") from None

    def _take_idle(self, key: tuple[str, str, int]) -> _Conn | None:
        entry = self._idle.pop(key, None)
        if entry is None:
            return None
        conn, since = entry
        if time.monotonic() - since > self.keepalive_s or not conn.idle_alive():
            conn.close()
            return None
        return conn

    def _put_idle(self, key: tuple[str, str, int], conn: _Conn) -> None:
        if not self._closed and key not in self._idle and self.keepalive_s > 0:
            self._idle[key] = (conn, time.monotonic())
        else:
            conn.close()

    async def _connect(self, ex: _Exchange, tgt: Target) -> _Conn:
        loop = asyncio.get_running_loop()
        tls = self._tls() if tgt.scheme == "https" else None
        given, self._given = self._given, None
        try:
            if given is not None:
                _, conn = await loop.create_connection(_Conn, sock=given)
            else:
                _, conn = await loop.create_connection(
                    _Conn, tgt.host, tgt.port, ssl=tls, server_hostname=tgt.host if tls else None
                )
        except OSError as exc:
            reason = "tls" if _is_tls_error(exc) else "connect"
            what = "TLS with" if reason == "tls" else "connect to"
            raise HttpError(reason, f"{what} {tgt.netloc} failed ({_describe(exc)})") from None
        self.connections_opened += 1
        ex.conn = conn
        return conn

    def _tls(self) -> Any:
        if self._ssl_context is None:
            self._ssl_context = _take_prepared_tls(self.ca_file) or _new_tls_context(self.ca_file)
        return self._ssl_context

    async def _exchange(
        self,
        ex: _Exchange,
        conn: _Conn,
        tgt: Target,
        method: str,
        head: list[tuple[str, str]],
        body: bytes,
        cap: int,
    ) -> HttpResponse:
        """One request on ``conn``; raises _Stale when the connection ends before any answer."""
        h = conn.h11
        conn.busy = True
        conn.received = 0
        try:
            # head, body and end in one write: one segment (TCP_NODELAY) and one wake-up of
            # the server for a small request, instead of one per part
            data = h.send(h11.Request(method=method, target=tgt.target, headers=head)) or b""
            if body:
                data += h.send(h11.Data(data=body)) or b""
            data += h.send(h11.EndOfMessage()) or b""
            await conn.send(data)
        except (h11.LocalProtocolError, UnicodeError) as exc:
            raise HttpError("bad_request", f"request to {tgt.netloc} refused ({_describe(exc)})") from None
        except OSError as exc:
            if conn.received == 0:
                raise _Stale() from None
            raise HttpError("closed", f"exchange with {tgt.netloc} failed ({_describe(exc)})") from None
        status, reason, fields, data = await self._response(conn, tgt, cap)
        conn.busy = False
        ex.conn = None
        if h.our_state is h11.DONE and h.their_state is h11.DONE and not conn.dead and not h.trailing_data[0]:
            h.start_next_cycle()
            self._put_idle(tgt.key, conn)
        else:
            conn.close()
        return HttpResponse(status, Headers(fields), data, reason)

    async def _response(
        self, conn: _Conn, tgt: Target, cap: int
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        h = conn.h11
        resp: h11.Response | None = None
        parts: list[bytes] = []
        size = 0
        try:
            while True:
                event = h.next_event()
                if event is h11.NEED_DATA:
                    data = await conn.read()
                    if not data and conn.received == 0:
                        raise _Stale()
                    h.receive_data(data)
                elif isinstance(event, h11.Response):
                    resp = event
                    length = _content_length(event.headers)
                    if length is not None and length > cap:
                        raise HttpError("too_large", f"answer from {tgt.netloc} larger than {cap} octets")
                elif isinstance(event, h11.Data):
                    size += len(event.data)
                    if size > cap:
                        raise HttpError("too_large", f"answer from {tgt.netloc} larger than {cap} octets")
                    parts.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    if resp is None and conn.received == 0:
                        raise _Stale()
                    raise h11.RemoteProtocolError("connection closed before the answer was complete")
                # h11.InformationalResponse (1xx): wait for the final answer
        except h11.RemoteProtocolError as exc:
            if conn.eof and resp is not None:
                raise HttpError(
                    "closed", f"{tgt.netloc} closed the connection in the body ({_describe(exc)})"
                ) from None
            if conn.eof and conn.received == 0:
                raise _Stale() from None
            raise HttpError("protocol", f"bad answer from {tgt.netloc} ({_describe(exc)})") from None
        assert resp is not None
        fields = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in resp.headers.raw_items()]
        return resp.status_code, resp.reason.decode("latin-1"), fields, b"".join(parts)


def _content_length(headers: Any) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


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


def _is_tls_error(exc: BaseException) -> bool:
    import sys

    ssl = sys.modules.get("ssl")
    return ssl is not None and isinstance(exc, ssl.SSLError | ssl.CertificateError)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text[:120]}" if text else name
