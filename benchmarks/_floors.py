"""Floors of the same shape as what the agent does, and the closed-loop load generator.

- :class:`NdjsonFloor`: an asyncio ``Protocol`` server in its own process that decodes each
  NDJSON line with ``json.loads`` and answers with a reply of exactly the agent's size: the
  agent's own reply for that operation (sent once per connection as a template), with the
  request's id, encoded with ``json.dumps`` per line. The agent's figure over this floor is
  what the agent adds beyond framing, one JSON decode and one JSON encode of the same reply.
- :class:`DigestHttpFloor`: an aiohttp server that checks an RFC 2617 Digest (qop=auth)
  Authorization on every POST and answers a body of the given size; the client is aiohttp
  on a kept-alive connection, computing a fresh digest per request.
- :class:`PtyFloor`: a raw pty round trip: a process that answers ``\\r\\nOK\\r\\n`` to every
  line it reads on the pty's slave side; the client writes ``AT\\r`` on the master and reads.
- :func:`load`: N concurrent connections, each sending one request line, waiting for its
  reply line, and sending again (closed loop), for a fixed time. Every request is timed;
  throughput is completed requests divided by the wall time of the run.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import pty
import shutil
import subprocess
import sys
import tempfile
import time
import tty
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NDJSON_FLOOR = r"""
import asyncio, json, sys

class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.t, self.buf, self.template = transport, b"", None

    def data_received(self, data):
        self.buf += data
        while (i := self.buf.find(b"\n")) >= 0:
            line, self.buf = self.buf[:i], self.buf[i + 1:]
            msg = json.loads(line)
            if self.template is None:  # the first line: the reply to answer with
                self.template = msg
                continue
            self.template["id"] = msg.get("id")
            self.t.write(json.dumps(self.template, separators=(",", ":")).encode() + b"\n")

async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_unix_server(Echo, sys.argv[1])
    print("ready", flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""

PTY_ECHO = r"""
import os, sys, tty
fd = os.open(sys.argv[1], os.O_RDWR | os.O_NOCTTY)
tty.setraw(fd)
print("ready", flush=True)
buf = b""
while True:
    data = os.read(fd, 4096)
    if not data:
        break
    buf += data
    while b"\r" in buf:
        _, buf = buf.split(b"\r", 1)
        os.write(fd, b"\r\nOK\r\n")
"""


class _Proc:
    def __init__(self, script: str, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("floor process did not start")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(5)


class NdjsonFloor(_Proc):
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="uea-floor-", dir="/tmp"))
        self.path = str(self.dir / "floor.sock")
        super().__init__(NDJSON_FLOOR, self.path)

    def close(self) -> None:
        super().close()
        shutil.rmtree(self.dir, ignore_errors=True)


class PtyFloor(_Proc):
    def __init__(self) -> None:
        self.master, slave = pty.openpty()
        tty.setraw(self.master)
        name = os.ttyname(slave)
        super().__init__(PTY_ECHO, name)
        os.close(slave)

    def roundtrip(self) -> None:
        os.write(self.master, b"AT\r")
        buf = b""
        while not buf.endswith(b"OK\r\n"):
            buf += os.read(self.master, 4096)

    def close(self) -> None:
        super().close()
        os.close(self.master)


# --- closed-loop load ---------------------------------------------------------------------------
@dataclass
class LoadResult:
    latencies: list[float]  # seconds, one per completed request
    completed: int
    wall_s: float

    @property
    def throughput(self) -> float:
        return self.completed / self.wall_s


class _Conn(asyncio.Protocol):
    def __init__(self, first: bytes | None, line: bytes, stop_at: list[float], out: list[float]) -> None:
        self.first, self.line, self.stop_at, self.out = first, line, stop_at, out
        self.buf = b""
        self.t0 = 0.0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.started = False

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        self.transport = transport
        if self.first is not None:
            transport.write(self.first)

    def go(self) -> None:
        self.started = True
        self.t0 = time.perf_counter()
        assert self.transport is not None
        self.transport.write(self.line)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        n = self.buf.count(b"\n")
        if not n:
            return
        self.buf = self.buf[self.buf.rfind(b"\n") + 1 :]
        now = time.perf_counter()
        self.out.append(now - self.t0)
        if now < self.stop_at[0]:
            self.t0 = now
            assert self.transport is not None
            self.transport.write(self.line)
        elif not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"connection lost: {exc}"))


async def _load(path: str, line: bytes, clients: int, seconds: float, first: bytes | None) -> LoadResult:
    loop = asyncio.get_running_loop()
    stop_at = [float("inf")]
    per: list[list[float]] = [[] for _ in range(clients)]
    conns = []
    for i in range(clients):
        _, c = await loop.create_unix_connection(lambda i=i: _Conn(first, line, stop_at, per[i]), path)
        conns.append(c)
    await asyncio.sleep(0.05)  # templates in place
    # warm-up: a few rounds not counted
    stop_at[0] = time.perf_counter() + min(0.3, seconds / 4)
    for c in conns:
        c.go()
    await asyncio.gather(*(c.done for c in conns))
    for c in conns:
        c.done = loop.create_future()
    warm = [len(p) for p in per]
    t0 = time.perf_counter()
    stop_at[0] = t0 + seconds
    for c in conns:
        c.go()
    await asyncio.gather(*(c.done for c in conns))
    wall = time.perf_counter() - t0
    for c in conns:
        assert c.transport is not None
        c.transport.close()
    lat = [x for p, w in zip(per, warm, strict=True) for x in p[w:]]
    return LoadResult(lat, len(lat), wall)


def load(path: str, line: bytes, clients: int, seconds: float, first: bytes | None = None) -> LoadResult:
    """``clients`` connections to ``path`` in a closed loop of ``line`` for ``seconds``."""
    return asyncio.run(_load(path, line, clients, seconds, first))


# --- an authenticated HTTP POST ------------------------------------------------------------------
def _h(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 - RFC 2617 Digest is MD5


class DigestHttpFloor:
    """POSTs with RFC 2617 Digest (qop=auth) to an aiohttp server on loopback, in a thread."""

    REALM, USER, PASSWORD, NONCE = "floor", "btid@floor", "cGFzc3dvcmQ=", "bm9uY2U"

    def __init__(self, reply_size: int) -> None:
        import threading

        from aiohttp import web

        self.reply = b"x" * reply_size
        self.loop = asyncio.new_event_loop()
        self._ha1 = ha1 = _h(f"{self.USER}:{self.REALM}:{self.PASSWORD}")

        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            auth = request.headers.get("Authorization", "")
            fields = dict(
                part.strip().split("=", 1) for part in auth.removeprefix("Digest ").split(",") if "=" in part
            )
            f = {k: v.strip('"') for k, v in fields.items()}
            ha2 = _h(f"POST:{f.get('uri', '')}")
            want = _h(f"{ha1}:{f.get('nonce')}:{f.get('nc')}:{f.get('cnonce')}:auth:{ha2}")
            if f.get("response") != want or f.get("nonce") != self.NONCE:
                return web.Response(status=401)
            assert body
            return web.Response(body=self.reply, content_type="application/octet-stream")

        app = web.Application()
        app.router.add_post("/", handle)
        self.runner = web.AppRunner(app, access_log=None)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def start() -> int:
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

        self.port = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        self.url = f"http://127.0.0.1:{self.port}/"

    def _authorization(self, nc: int) -> str:
        """RFC 2617 Digest credentials (qop=auth) for a POST to ``/`` as the ``nc``-th use of
        the nonce, with a fresh cnonce."""
        nc_hex, cnonce = f"{nc:08x}", os.urandom(8).hex()
        resp = _h(f"{self._ha1}:{self.NONCE}:{nc_hex}:{cnonce}:auth:{_h('POST:/')}")
        return (
            f'Digest username="{self.USER}", realm="{self.REALM}", nonce="{self.NONCE}", '
            f'uri="/", qop=auth, nc={nc_hex}, cnonce="{cnonce}", response="{resp}"'
        )

    async def _post(self, session: Any, body: bytes, auth: str) -> None:
        async with session.post(self.url, data=body, headers={"Authorization": auth}) as r:
            assert r.status == 200, r.status
            await r.read()

    def measure(self, body_size: int, n: int) -> list[float]:
        """``n`` authenticated POSTs of ``body_size`` octets on one kept-alive connection (the
        client's Digest work timed with each)."""
        import aiohttp

        body = b"y" * body_size

        async def go() -> list[float]:
            out = []
            async with aiohttp.ClientSession() as s:
                for i in range(n + 10):
                    t0 = time.perf_counter()
                    await self._post(s, body, self._authorization(i + 1))
                    out.append(time.perf_counter() - t0)
            return out[10:]

        return asyncio.run(go())

    def measure_new_connection(self, body_size: int, n: int) -> list[float]:
        """``n`` authenticated POSTs of ``body_size`` octets, each the first on a connection of
        its own: the TCP connect (and the server's new connection) timed with the exchange.
        The client session and the credentials are made outside the timing."""
        import aiohttp

        body = b"y" * body_size

        async def go() -> list[float]:
            out = []
            for _ in range(n + 3):
                auth = self._authorization(1)
                async with aiohttp.ClientSession() as s:
                    t0 = time.perf_counter()
                    await self._post(s, body, auth)
                    t1 = time.perf_counter()
                out.append(t1 - t0)
            return out[3:]

        return asyncio.run(go())

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
