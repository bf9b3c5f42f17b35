"""ue_agent.drivers.http.HttpClient against real servers on loopback: aiohttp apps (as the lab runs them) and
scripted TCP peers for the faults aiohttp will not produce (a dead kept-alive connection, a
silent or dripping server, garbage instead of HTTP)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable
from contextlib import asynccontextmanager

import pytest
from aiohttp import web
from multidict import CIMultiDict

from ue_agent.drivers.http import Headers, HttpClient, HttpError, parse_url, request_target


def run(coro):
    return asyncio.run(coro)


@asynccontextmanager
async def aiohttp_server(routes: list[tuple[str, str, Callable]], ssl_context=None, **runner_kw):
    """An aiohttp app on 127.0.0.1; yields (base_url, peers) where peers lists each request's
    client address, so distinct entries are distinct TCP connections."""
    peers: list[tuple] = []

    @web.middleware
    async def record(request, handler):
        peers.append(request.transport.get_extra_info("peername"))
        return await handler(request)

    app = web.Application(middlewares=[record])
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    runner = web.AppRunner(app, access_log=None, **runner_kw)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    host, port = runner.addresses[0][:2]
    scheme = "https" if ssl_context else "http"
    try:
        yield f"{scheme}://{host}:{port}", peers
    finally:
        await runner.cleanup()


async def hello(request):
    body = await request.read()
    return web.Response(body=b"hello:" + body)


def read_request(conn: socket.socket) -> bytes:
    """One request (head and Content-Length body) from a raw socket; b"" at EOF."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = conn.recv(4096)
        if not chunk:
            break
        rest += chunk
    return head + b"\r\n\r\n" + rest


class ScriptedServer:
    """A TCP listener whose n-th accepted connection runs ``scripts[n](sock, log)``."""

    def __init__(self, scripts: list[Callable[[socket.socket, list], None]]) -> None:
        self.scripts = scripts
        self.accepted = 0
        self.log: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, daemon=True)
        self._accept.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            script = self.scripts[min(self.accepted, len(self.scripts) - 1)]
            self.accepted += 1
            t = threading.Thread(target=self._one, args=(conn, script), daemon=True)
            t.start()
            self._threads.append(t)

    def _one(self, conn: socket.socket, script) -> None:
        conn.settimeout(10)
        with conn:
            try:
                script(conn, self.log)
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        self._accept.join(5)
        self.sock.close()
        for t in self._threads:
            t.join(5)

    def __enter__(self) -> ScriptedServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def answer_ok(body: bytes = b"ok"):
    def script(conn, log):
        while req := read_request(conn):
            log.append(req)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    return script


def answer_once_then_drop_next(conn, log):
    """Answers one request with keep-alive, then reads the next one and closes unanswered."""
    log.append(read_request(conn))
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
    log.append(read_request(conn))


# --- keep-alive ----------------------------------------------------------------------------------
def test_sequential_requests_share_one_connection():
    async def go():
        routes = [("GET", "/", hello), ("POST", "/post", hello)]
        async with aiohttp_server(routes) as (base, peers), HttpClient() as http:
            for i in range(3):
                r = await http.request("GET", base + "/")
                assert r.status == 200 and r.body == b"hello:"
                r = await http.request("POST", base + "/post", body=b"x%d" % i)
                assert r.body == b"hello:x%d" % i
            assert len(peers) == 6 and len(set(peers)) == 1
            assert http.connections_opened == 1

    run(go())


def test_concurrent_requests_do_not_queue_and_one_connection_stays():
    async def go():
        release = asyncio.Event()

        async def slow(request):
            await release.wait()
            return web.Response(text="slow")

        routes = [("GET", "/slow", slow), ("GET", "/", hello)]
        async with aiohttp_server(routes) as (base, peers), HttpClient() as http:
            first = asyncio.create_task(http.request("GET", base + "/slow"))
            while not peers:
                await asyncio.sleep(0.01)
            # the first connection is busy: the second request gets its own, it does not wait
            r = await http.request("GET", base + "/")
            assert r.body == b"hello:"
            release.set()
            assert (await first).body == b"slow"
            assert http.connections_opened == 2
            await http.request("GET", base + "/")
            assert http.connections_opened == 2  # one of the two was kept

    run(go())


def _idle_socket(http: HttpClient, base: str) -> socket.socket:
    return http._idle[parse_url(base).key][0].sock


async def _until_closed_by_peer(sock: socket.socket) -> None:
    import select

    for _ in range(500):
        if sock.fileno() < 0 or select.select([sock], [], [], 0)[0]:  # closed by the client's loop, or EOF
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the server never closed the idle connection")


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_idle_connection_closed_by_the_server_is_replaced_before_sending(method):
    async def go():
        routes = [("GET", "/", hello), ("POST", "/", hello)]
        async with aiohttp_server(routes, keepalive_timeout=0.05) as (base, peers), HttpClient() as http:
            await http.request(method, base + "/", body=b"1" if method == "POST" else b"")
            await _until_closed_by_peer(_idle_socket(http, base))
            r = await http.request(method, base + "/", body=b"2" if method == "POST" else b"")
            assert r.status == 200
            assert http.connections_opened == 2 and len(set(peers)) == 2
            assert len(peers) == 2  # the dead connection carried nothing: no request was lost or doubled

    run(go())


def test_get_is_resent_once_when_a_reused_connection_dies_in_the_exchange():
    with ScriptedServer([answer_once_then_drop_next, answer_ok(b"second")]) as srv:

        async def go():
            async with HttpClient() as http:
                assert (await http.request("GET", srv.url + "/a")).body == b"first"
                r = await http.request("GET", srv.url + "/b")
                assert r.body == b"second" and http.connections_opened == 2

        run(go())
    assert [req.split(b" ")[1] for req in srv.log] == [b"/a", b"/b", b"/b"]


def test_post_is_not_resent_when_a_reused_connection_dies_in_the_exchange():
    with ScriptedServer([answer_once_then_drop_next, answer_ok(b"second")]) as srv:

        async def go():
            async with HttpClient() as http:
                await http.request("POST", srv.url + "/a", body=b"one")
                with pytest.raises(HttpError) as exc:
                    await http.request("POST", srv.url + "/b", body=b"two")
                assert exc.value.reason == "closed" and isinstance(exc.value, OSError)
                assert http.connections_opened == 1
                # the client stays usable
                assert (await http.request("POST", srv.url + "/c", body=b"3")).body == b"second"

        run(go())
    assert [req.split(b" ")[1] for req in srv.log] == [b"/a", b"/b", b"/c"]
    assert srv.accepted == 2


def test_server_closing_a_fresh_connection_without_answer_is_closed():
    def drop(conn, log):
        log.append(read_request(conn))

    with ScriptedServer([drop]) as srv:

        async def go():
            async with HttpClient() as http:
                with pytest.raises(HttpError) as exc:
                    await http.request("GET", srv.url + "/")
                assert exc.value.reason == "closed"

        run(go())
    assert srv.accepted == 1  # a fresh connection is not retried


# --- bounded waits -------------------------------------------------------------------------------
def test_silent_server_times_out():
    listener = socket.create_server(("127.0.0.1", 0))  # accepts (backlog), never answers
    port = listener.getsockname()[1]

    async def go():
        async with HttpClient(timeout_s=0.2) as http:
            with pytest.raises(HttpError) as exc:
                await http.request("GET", f"http://127.0.0.1:{port}/")
            assert exc.value.reason == "timeout" and "127.0.0.1" in str(exc.value)
            with pytest.raises(HttpError) as exc:
                await http.request("POST", f"http://127.0.0.1:{port}/", body=b"x", timeout_s=0.1)
            assert exc.value.reason == "timeout"

    try:
        run(go())
    finally:
        listener.close()


def test_server_dripping_its_headers_is_cut_at_the_deadline():
    """Each byte arrives well within the socket timeout; only the request deadline ends it."""
    stop = threading.Event()

    def drip(conn, log):
        log.append(read_request(conn))
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        while not stop.wait(0.02):
            conn.sendall(b"a")

    with ScriptedServer([drip]) as srv:

        async def go():
            async with HttpClient(timeout_s=0.3) as http:
                with pytest.raises(HttpError) as exc:
                    await http.request("GET", srv.url + "/")
                assert exc.value.reason == "timeout"
                assert not http._idle  # the half-read connection was not kept

        try:
            run(go())
        finally:
            stop.set()


def test_cancelled_request_propagates_and_the_client_closes():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    async def go():
        http = HttpClient(timeout_s=30)
        task = asyncio.create_task(http.request("GET", f"http://127.0.0.1:{port}/"))
        while not http._inflight:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not http._inflight
        await http.close()
        with pytest.raises(HttpError) as exc:
            await http.request("GET", f"http://127.0.0.1:{port}/")
        assert exc.value.reason == "shut_down"

    try:
        run(go())
    finally:
        listener.close()


def test_refused_connection():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there

    async def go():
        async with HttpClient() as http:
            with pytest.raises(HttpError) as exc:
                await http.request("GET", f"http://127.0.0.1:{port}/")
            assert exc.value.reason == "connect" and "ConnectionRefusedError" in str(exc.value)

    run(go())


# --- bodies and headers --------------------------------------------------------------------------
def test_body_size_cap():
    cap = 1000

    async def big(request):
        return web.Response(body=b"x" * (cap + 1))

    def chunked(n: int, parts: int):
        async def handler(request):
            resp = web.StreamResponse()
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            for _ in range(parts):
                await resp.write(b"y" * n)
            await resp.write_eof()
            return resp

        return handler

    async def go():
        routes = [
            ("GET", "/big", big),
            ("GET", "/chunked-big", chunked(600, 2)),
            ("GET", "/chunked-exact", chunked(500, 2)),
            ("GET", "/", hello),
        ]
        async with aiohttp_server(routes) as (base, peers), HttpClient(max_body=cap) as http:
            for path in ("/big", "/chunked-big"):
                with pytest.raises(HttpError) as exc:
                    await http.request("GET", base + path)
                assert exc.value.reason == "too_large" and str(cap) in str(exc.value)
            r = await http.request("GET", base + "/chunked-exact")
            assert r.body == b"y" * cap
            # a per-request cap overrides the client's
            with pytest.raises(HttpError) as exc:
                await http.request("GET", base + "/", max_body=3)
            assert exc.value.reason == "too_large"
            assert (await http.request("GET", base + "/")).body == b"hello:"

    run(go())


def test_repeated_and_case_insensitive_headers():
    async def challenge(request):
        hdrs = CIMultiDict()
        hdrs.add("WWW-Authenticate", 'Basic realm="legacy"')
        hdrs.add("WWW-Authenticate", 'Digest realm="r", nonce="n", qop="auth-int"')
        hdrs.add("X-Echo", request.headers.get("X-Req", ""))
        return web.Response(status=401, headers=hdrs)

    async def go():
        async with aiohttp_server([("GET", "/", challenge)]) as (base, _), HttpClient() as http:
            r = await http.request("GET", base + "/", headers=[("x-req", "a"), ("X-Other", "b")])
            assert r.status == 401
            assert r.headers.get_all("www-authenticate") == [
                'Basic realm="legacy"',
                'Digest realm="r", nonce="n", qop="auth-int"',
            ]
            assert r.headers["WWW-AUTHENTICATE"] == 'Basic realm="legacy"'
            assert r.headers.get("x-echo") == "a" and "X-ECHO" in r.headers
            assert r.headers.get("missing", "d") == "d" and r.headers.get_all("missing") == []

    run(go())


def test_headers_mapping():
    h = Headers([("Set-Cookie", "a"), ("content-type", "t"), ("SET-COOKIE", "b")])
    assert h["Content-Type"] == "t" and h.get_all("set-cookie") == ["a", "b"]
    assert len(h) == 2 and list(h) == ["Set-Cookie", "content-type"]
    assert dict(h) == {"Set-Cookie": "a", "content-type": "t"}
    with pytest.raises(KeyError):
        h["nope"]


def test_garbage_instead_of_http_is_a_protocol_error():
    def garbage(conn, log):
        log.append(read_request(conn))
        conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")

    with ScriptedServer([garbage]) as srv:

        async def go():
            async with HttpClient() as http:
                with pytest.raises(HttpError) as exc:
                    await http.request("GET", srv.url + "/")
                assert exc.value.reason == "protocol"

        run(go())


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/",
        "http:///nohost",
        "http://user:pw@127.0.0.1/",
        "http://127.0.0.1:99999/",
        "http://127.0.0.1/a b",
        "http://127.0.0.1/a\r\nX-Injected: 1",
    ],
)
def test_bad_urls(url):
    async def go():
        async with HttpClient() as http:
            with pytest.raises(HttpError) as exc:
                await http.request("GET", url)
            assert exc.value.reason == "bad_url"

    run(go())


def test_request_target_is_path_and_query_as_written():
    assert request_target("http://h:1") == "/"
    assert request_target("http://h/kms/ticket?x=%2F&y") == "/kms/ticket?x=%2F&y"
    assert request_target("https://h/a#frag") == "/a"


def test_header_injection_is_refused():
    async def go():
        async with aiohttp_server([("GET", "/", hello)]) as (base, peers), HttpClient() as http:
            with pytest.raises(HttpError) as exc:
                await http.request("GET", base + "/", headers={"X-A": "v\r\nX-Injected: 1"})
            assert exc.value.reason == "bad_request"
            with pytest.raises(HttpError) as exc:
                await http.request("GET", base + "/", headers=[("X A", "v")])
            assert exc.value.reason == "bad_request"
            with pytest.raises(HttpError) as exc:
                await http.request("GET /x HTTP/1.0\r\n", base + "/")
            assert exc.value.reason == "bad_request"
            assert not peers and http.connections_opened == 0

    run(go())


# --- https ---------------------------------------------------------------------------------------
def _self_signed(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ue-agent test KMS")])
    now = datetime.datetime.now(datetime.UTC)
    san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def test_https_keep_alive_and_certificate_check(tmp_path):
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))

    async def go():
        routes = [("POST", "/mikey", hello)]
        async with aiohttp_server(routes, ssl_context=server_ctx) as (base, peers):
            async with HttpClient(ssl_context=trusting) as http:
                for i in range(3):
                    r = await http.request("POST", base + "/mikey", body=b"%d" % i)
                    assert r.body == b"hello:%d" % i
                # TLS 1.3 session tickets on the idle socket do not make it look dead
                assert http.connections_opened == 1 and len(set(peers)) == 1
            async with HttpClient() as http:  # the system's CAs do not know this certificate
                with pytest.raises(HttpError) as exc:
                    await http.request("POST", base + "/mikey", body=b"x")
                assert exc.value.reason == "tls"

    run(go())


def test_no_ssl_context_until_https_is_used():
    async def go():
        async with aiohttp_server([("GET", "/", hello)]) as (base, _), HttpClient() as http:
            await http.request("GET", base + "/")
            assert http._ssl_context is None

    run(go())


def test_https_with_a_configured_ca_file(tmp_path):
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    async def go():
        async with aiohttp_server([("GET", "/", hello)], ssl_context=server_ctx) as (base, _):
            async with HttpClient(ca_file=str(cert)) as http:
                assert (await http.request("GET", base + "/")).body == b"hello:"
            (tmp_path / "other").mkdir()
            other_cert, _ = _self_signed(tmp_path / "other")
            async with HttpClient(ca_file=str(other_cert)) as http:  # a CA that did not sign it
                with pytest.raises(HttpError) as exc:
                    await http.request("GET", base + "/")
                assert exc.value.reason == "tls" and "certificate verify failed" in str(exc.value)

    run(go())


def test_close_stops_a_request_in_flight_with_shut_down():
    listener = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    port = listener.getsockname()[1]

    async def go():
        http = HttpClient(timeout_s=30)
        task = asyncio.create_task(http.request("GET", f"http://127.0.0.1:{port}/"))
        while not http._inflight:
            await asyncio.sleep(0.01)
        await http.close()
        with pytest.raises(HttpError) as exc:
            await task
        assert exc.value.reason == "shut_down" and not http._inflight

    try:
        run(go())
    finally:
        listener.close()


def test_an_unusable_ca_file_is_a_tls_failure(tmp_path):
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    (tmp_path / "garbage.pem").write_text("not a certificate\n")

    async def go():
        async with aiohttp_server([("GET", "/", hello)], ssl_context=server_ctx) as (base, peers):
            for ca in (tmp_path / "missing.pem", tmp_path / "garbage.pem"):
                async with HttpClient(ca_file=str(ca)) as http:
                    with pytest.raises(HttpError) as exc:
                        await http.request("GET", base + "/")
                    assert exc.value.reason == "tls" and str(ca) in str(exc.value)
            assert not peers

    run(go())


def test_a_request_is_one_write(monkeypatch):
    # head, body and end of message go out in one write (one segment, one wake-up of the
    # server), also for a request with a body; the server still reads it whole
    from ue_agent.drivers import http as mod

    writes: list[int] = []
    real = mod._Conn.send

    async def counted(self, data):  # type: ignore[no-untyped-def]
        writes.append(len(data or b""))
        await real(self, data)

    monkeypatch.setattr(mod._Conn, "send", counted)

    async def go():
        routes = [("POST", "/x", hello), ("GET", "/x", hello)]
        async with aiohttp_server(routes) as (base, _), HttpClient() as c:
            r1 = await c.request("POST", base + "/x", body=b"a" * 700)
            r2 = await c.request("GET", base + "/x")
        return r1, r2

    r1, r2 = run(go())
    assert (r1.body, r2.body) == (b"hello:" + b"a" * 700, b"hello:")
    assert len(writes) == 2 and writes[0] > 700


def test_warm_up_runs_one_exchange_in_the_process_and_leaves_no_socket() -> None:
    """drivers.http.warm_up (the daemon's warm-up): the client's whole path over a socket
    pair (nothing is connected to), and no socket is left open."""
    import os

    from ue_agent.drivers import http as uhttp

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    async def go() -> None:
        before = fds()
        await uhttp.warm_up()
        await asyncio.sleep(0)  # the transports' close callbacks
        assert fds() == before

    asyncio.run(go())
