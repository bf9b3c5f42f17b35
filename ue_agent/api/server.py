"""The asyncio Unix-socket server of protocol v1: peers, limits and I/O around :mod:`core`.

Authorization happens before a byte is read: SO_PEERCRED gives the peer's uid and gid,
SO_PEERGROUPS its supplementary groups. A peer is allowed when its uid is root or the
agent's own uid, or is in ``allowed_uids``, or any of its groups is in ``allowed_gids``.
Root is always allowed: it can read the agent's memory anyway, so refusing it protects
nothing and would only break maintenance tools. A refused peer gets one ``api.forbidden``
line and the connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ue_agent.api import errors as E
from ue_agent.api.core import ConnectionCore, Request
from ue_agent.api.protocol import encode
from ue_agent.config import ApiConfig
from ue_agent.errors import AgentError

log = logging.getLogger(__name__)

SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux >= 4.13
#: a peer that stops reading: drop it when this much output is waiting.
MAX_WRITE_BUFFER = 1 << 20
READ_CHUNK = 65536


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...] = ()
    conn: int = 0


Handler = Callable[[Request, Peer], Awaitable[dict[str, Any]]]


def peer_credentials(sock: socket.socket, conn: int = 0) -> Peer:
    pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    groups: tuple[int, ...] = ()
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * 256)
        groups = struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4])
    except OSError:
        pass
    return Peer(pid, uid, gid, groups, conn)


def is_allowed(peer: Peer, cfg: ApiConfig, own_uid: int) -> bool:
    if peer.uid in (0, own_uid) or peer.uid in cfg.allowed_uids:
        return True
    return any(g in cfg.allowed_gids for g in (peer.gid, *peer.groups))


@dataclass
class _Conn:
    core: ConnectionCore
    peer: Peer
    writer: asyncio.StreamWriter
    tasks: set[asyncio.Task] = field(default_factory=set)

    def send(self, line: bytes) -> None:
        if self.writer.is_closing():
            return
        if self.writer.transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            log.warning("conn %d: peer does not read its replies; closing", self.peer.conn)
            self.writer.close()
            return
        self.writer.write(line)


def bind_socket(path: str) -> socket.socket:
    """Bind ``path`` with mode 0660. A stale socket file (nothing listening) is removed;
    a live one, or a file that is not a socket, is an error: never steal a path."""
    p = Path(path)
    p.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    try:
        st = p.lstat()
    except FileNotFoundError:
        st = None
    if st is not None:
        if not stat.S_ISSOCK(st.st_mode):
            raise AgentError("api.socket_path", f"{path} exists and is not a socket", path=path)
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError as exc:
            if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
                raise AgentError("api.socket_path", f"{path}: {exc.strerror}", path=path) from None
            log.info("removing stale socket %s", path)
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        else:
            raise AgentError("api.socket_in_use", f"another process listens on {path}", path=path)
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o117)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise AgentError("api.socket_path", f"cannot bind {path}: {exc.strerror}", path=path) from None
    finally:
        os.umask(old)
    os.chmod(path, 0o660)
    sock.listen(128)
    return sock


def activated_socket() -> socket.socket | None:
    """The listening socket systemd passed (LISTEN_PID/LISTEN_FDS, fd 3), or None."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    try:
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return None
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    if count < 1:
        return None
    sock = socket.socket(fileno=3)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        raise AgentError("api.socket_activation", "fd 3 is not a Unix stream socket")
    os.set_inheritable(3, False)
    return sock


class ApiServer:
    def __init__(self, cfg: ApiConfig, handler: Handler, own_uid: int | None = None) -> None:
        self.cfg = cfg
        self.handler = handler
        self.own_uid = os.getuid() if own_uid is None else own_uid
        self._conns: dict[int, _Conn] = {}
        self._next = 0
        self._server: asyncio.AbstractServer | None = None
        self._path: str | None = None  # unlinked on close when we bound it

    @property
    def clients(self) -> int:
        return len(self._conns)

    async def start(self, sock: socket.socket | None = None) -> None:
        if sock is None:
            sock = bind_socket(self.cfg.socket)
            self._path = self.cfg.socket
        sock.setblocking(False)
        self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=READ_CHUNK)

    def reconfigure(self, cfg: ApiConfig) -> None:
        """New allow lists and limits (SIGHUP); the socket path stays as bound."""
        self.cfg = cfg

    def broadcast(self, name: str, body: dict[str, Any]) -> None:
        for conn in list(self._conns.values()):
            line = conn.core.event(name, body)
            if line is not None:
                conn.send(line)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns.values()):
            for t in conn.tasks:
                t.cancel()
            conn.send(encode(E.error_reply(None, E.api_error(E.SHUTTING_DOWN, "the agent is stopping"))))
            conn.writer.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
        if self._path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)

    async def _refuse(self, writer: asyncio.StreamWriter, code: str, message: str) -> None:
        writer.write(encode(E.error_reply(None, E.api_error(code, message))))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.drain(), 1)
        writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._next += 1
        conn_id = self._next
        cfg = self.cfg
        try:
            peer = peer_credentials(writer.get_extra_info("socket"), conn_id)
        except OSError:
            writer.close()
            return
        if not is_allowed(peer, cfg, self.own_uid):
            log.warning("conn %d: refused uid %d gid %d (pid %d)", conn_id, peer.uid, peer.gid, peer.pid)
            await self._refuse(writer, E.FORBIDDEN, "this uid/gid may not use the agent")
            return
        if len(self._conns) >= cfg.max_clients:
            log.warning("conn %d: refused, %d clients connected", conn_id, len(self._conns))
            await self._refuse(writer, E.TOO_MANY_CLIENTS, f"at most {cfg.max_clients} clients")
            return
        conn = _Conn(ConnectionCore(cfg.max_line, cfg.max_inflight), peer, writer)
        self._conns[conn_id] = conn
        log.debug("conn %d: uid %d gid %d pid %d", conn_id, peer.uid, peer.gid, peer.pid)
        try:
            await self._loop(conn, reader, cfg)
        except (ConnectionError, OSError):
            pass
        finally:
            self._conns.pop(conn_id, None)
            for t in conn.tasks:
                t.cancel()
            writer.close()
            log.debug("conn %d: closed", conn_id)

    async def _loop(self, conn: _Conn, reader: asyncio.StreamReader, cfg: ApiConfig) -> None:
        while not conn.writer.is_closing():
            # Subscribers wait for events; a connection with work in progress waits for it.
            idle = None if (conn.core.subscriptions or conn.core.inflight) else cfg.idle_timeout_s
            try:
                data = await asyncio.wait_for(reader.read(READ_CHUNK), idle)
            except TimeoutError:
                conn.send(encode(E.error_reply(None, E.api_error(E.IDLE_TIMEOUT, "idle connection closed"))))
                await conn.writer.drain()
                return
            if not data:
                return
            for action in conn.core.receive(data):
                if isinstance(action, bytes):
                    conn.send(action)
                else:
                    task = asyncio.create_task(self._run(conn, action))
                    conn.tasks.add(task)
                    task.add_done_callback(conn.tasks.discard)
            with contextlib.suppress(ConnectionError):
                await conn.writer.drain()

    async def _run(self, conn: _Conn, req: Request) -> None:
        try:
            outcome: dict[str, Any] | BaseException = await self.handler(req, conn.peer)
        except asyncio.CancelledError:
            raise
        except AgentError as exc:
            outcome = exc
        except Exception as exc:  # noqa: BLE001 - reported as agent.internal, logged without args
            log.error(
                "op %s failed: %s", req.op, type(exc).__name__, exc_info=log.isEnabledFor(logging.DEBUG)
            )
            outcome = exc
        conn.send(conn.core.finish(req, outcome))
