"""The asyncio Unix-socket server of protocol v1: peers, limits and I/O around :mod:`core`.

Authorization happens before a byte is read: SO_PEERCRED gives the peer's uid and gid,
SO_PEERGROUPS its supplementary groups. A peer is allowed when its uid is root or the
agent's own uid, or is in ``allowed_uids``, or any of its groups is in ``allowed_gids``.
Root is always allowed: it can read the agent's memory anyway, so refusing it protects
nothing and would only break maintenance tools. A refused peer gets one ``api.forbidden``
line and the connection closes.

Each connection is an :class:`asyncio.Protocol`: received bytes are buffered in the
:class:`~ue_agent.api.core.ConnectionCore` and taken one line at a time, at most
``LINES_PER_TURN`` per event-loop turn and only while the replies queued for the peer stay
under ``HIGH_WATER``; past either, reading pauses. An operation whose handler answers at
once (a dict, not an awaitable) is replied to before the next line is parsed, so
pipelined synchronous requests are answered in order and never count as in flight. Only
operations that really wait (the card, the network) get a task. Admission is fair (a cap
per uid, eviction of connections that hold nothing, places kept for root), and a SIGHUP
that removes a peer from the allow lists closes its open connections. One timer per
connection keeps three deadlines: idle, an unfinished line, a peer that does not read.
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
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from typing import Any

from ue_agent.api import errors as E
from ue_agent.api.core import Action, ConnectionCore, Peer, Request
from ue_agent.api.protocol import encode, wipe
from ue_agent.config import ApiConfig
from ue_agent.errors import AgentError

log = logging.getLogger(__name__)

SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux >= 4.13
#: replies queued for a peer above which its input waits (counted before each line)
HIGH_WATER = 64 * 1024
#: a peer that stops reading: drop it when this much output (replies of work in progress
#: and events, which cannot wait) is queued.
MAX_WRITE_BUFFER = 256 * 1024
#: bytes one read takes (the transport reads into the connection's own buffer)
READ_SIZE = 64 * 1024
_ZEROS = memoryview(bytes(READ_SIZE))
#: lines of one connection taken per event-loop turn; the rest waits for the next turn
LINES_PER_TURN = 64
#: connections root may open beyond max_clients when no connection can be evicted
ROOT_RESERVE = 4
#: how often output held for a slow reader is tried again (until write_timeout_s)
HOLD_POLL_S = 0.02


#: Runs one request: returns the result dict at once, or an awaitable of it (which then
#: runs as a task); raises AgentError for an error reply.
Handler = Callable[[Request, Peer], dict[str, Any] | Awaitable[dict[str, Any]]]


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


def _dir_problem(st: os.stat_result, own_uid: int, strict: bool) -> str | None:
    """Why a directory on the socket's path is unsafe, or None.

    ``strict`` (the socket's own directory): owned by root or the agent, writable by its
    owner only. Its ancestors may also be world-writable when sticky (``/tmp``): then no
    one else can rename or remove what the agent made in them.
    """
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if st.st_uid not in (0, own_uid):
        return f"is owned by uid {st.st_uid}, not by root or the agent's uid {own_uid}"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and (strict or not st.st_mode & stat.S_ISVTX):
        who = "others" if st.st_mode & stat.S_IWOTH else "its group"
        return f"is writable by {who} (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def check_socket_dir(path: str, own_uid: int | None = None) -> None:
    """Make sure nobody but root and the agent can replace the socket at ``path``.

    The directory that holds the socket is created when missing (mode 0755, owned by the
    agent); it must then be a real directory, not a symlink, owned by root or the agent's
    uid and writable by nobody else, and so must every directory above it (except that a
    sticky world-writable one such as /tmp is fine above it). Whoever can write the
    directory can rename the agent's socket and listen in its place, and clients would
    hand their requests (and take keys) from that impostor. Raises ``api.socket_dir``.
    """
    uid = os.geteuid() if own_uid is None else own_uid
    d = Path(os.path.abspath(path)).parent
    try:
        os.mkdir(d, 0o755)
    except FileExistsError:
        pass
    except FileNotFoundError:
        raise AgentError(
            "api.socket_dir", f"{d.parent} does not exist (create it, or use /run/ue-agent)", path=str(d)
        ) from None
    except OSError as exc:
        raise AgentError("api.socket_dir", f"cannot create {d}: {exc.strerror}", path=str(d)) from None
    else:
        log.info("created socket directory %s", d)
    # the path as written (a symlink above the directory is replaceable only by whoever can
    # write its own directory, checked too), then where those symlinks lead
    real = Path(os.path.realpath(d.parent))
    chain = dict.fromkeys((d, *d.parents, real, *real.parents))
    for part in chain:
        try:
            st = os.lstat(part)
        except OSError as exc:
            raise AgentError("api.socket_dir", f"{part}: {exc.strerror}", path=str(part)) from None
        if stat.S_ISLNK(st.st_mode):
            if part == d:
                raise AgentError(
                    "api.socket_dir", f"socket directory {d} is a symlink; not binding in it", path=str(d)
                )
            continue
        problem = _dir_problem(st, uid, strict=part == d)
        if problem:
            which = "socket directory" if part == d else "directory above the socket"
            raise AgentError(
                "api.socket_dir", f"{which} {part} {problem}; refusing to bind {path}", path=str(part)
            )


def bind_socket(path: str) -> socket.socket:
    """Bind ``path`` with mode 0660 in a directory :func:`check_socket_dir` accepts. A stale
    socket file (nothing listening) is removed; a live one, or a file that is not a socket,
    is an error: never steal a path."""
    check_socket_dir(path)
    p = Path(path)
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
    # bind(2) makes the file with mode 0777 & ~umask: 0660 from the start, no chmod on a path
    # (which would follow a symlink put there in the meantime).
    old = os.umask(0o117)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise AgentError("api.socket_path", f"cannot bind {path}: {exc.strerror}", path=path) from None
    finally:
        os.umask(old)
    st = os.lstat(path)
    if not stat.S_ISSOCK(st.st_mode) or stat.S_IMODE(st.st_mode) != 0o660:
        sock.close()
        raise AgentError("api.socket_path", f"{path} was replaced while binding", path=path)
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


class _Connection(asyncio.BufferedProtocol):
    """One client connection: authorization, admission, paced framing via the core, replies,
    deadlines.

    Input is taken a bounded number of lines per event-loop turn (:data:`LINES_PER_TURN`),
    and only while the replies waiting in the transport stay under :data:`HIGH_WATER`:
    before each line the queued bytes (the transport's buffer plus the replies of this turn
    not yet written) are counted. When either limit stops the turn, reading pauses, so the
    unread input is at most one read (64 KiB) plus a line: memory per connection is
    bounded before any reply is produced. Reading resumes when the lines are taken (next
    turn) or the peer has read its replies (``resume_writing``).

    One timer per connection enforces three deadlines: ``idle_timeout_s`` since the last
    whole request (no subscription, nothing in progress), ``line_timeout_s`` for an
    unfinished line (a byte a second does not keep a connection), and ``write_timeout_s``
    for a peer that does not read its replies.
    """

    def __init__(self, server: ApiServer, cfg: ApiConfig) -> None:
        self.server = server
        self.cfg = cfg  # the config in force when the peer connected (limits for its lifetime)
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.core: ConnectionCore | None = None  # None: refused, nothing it sends is read
        self.peer: Peer | None = None
        self.conn_id = 0
        self.tasks: set[asyncio.Task] = set()
        self._last = 0.0  # loop time of the last whole request or reply (idle, eviction)
        self._timer: asyncio.TimerHandle | None = None
        self._write_blocked_since: float | None = None  # the peer does not read its replies
        self._partial_since: float | None = None  # an unfinished line is buffered
        self._reading = True
        self._turn: asyncio.Handle | None = None  # the next turn of input, scheduled
        self._rbuf: memoryview | None = None  # what the transport reads into (one buffer)
        self._rbytes = bytearray()  # the buffer under _rbuf
        #: output that waits behind a line with key material the socket could not take whole:
        #: our own buffers, wiped once written (the transport's would be freed unwiped)
        self._held: deque[bytearray] = deque()
        self._held_bytes = 0
        self._held_timer: asyncio.TimerHandle | None = None
        self._fd = -1  # the socket's fd, for _write_now

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        server, cfg = self.server, self.cfg
        server._next += 1
        self.conn_id = conn_id = server._next
        try:
            peer = peer_credentials(transport.get_extra_info("socket"), conn_id)
        except OSError:
            transport.abort()
            return
        if not is_allowed(peer, cfg, server.own_uid):
            log.warning("conn %d: refused uid %d gid %d (pid %d)", conn_id, peer.uid, peer.gid, peer.pid)
            self._refuse(E.FORBIDDEN, "this uid/gid may not use the agent")
            return
        refusal = server._admit(peer)
        if refusal is not None:
            log.warning("conn %d: refused uid %d: %s", conn_id, peer.uid, refusal)
            self._refuse(E.TOO_MANY_CLIENTS, refusal)
            return
        self.peer = peer
        self.core = ConnectionCore(cfg.max_line, cfg.max_inflight)
        server._conns[conn_id] = self
        transport.set_write_buffer_limits(high=HIGH_WATER, low=HIGH_WATER // 4)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("conn %d: uid %d gid %d pid %d", conn_id, peer.uid, peer.gid, peer.pid)
        self._last = self.loop.time()
        self._arm(self._last + cfg.idle_timeout_s)

    def get_buffer(self, sizehint: int) -> memoryview:
        # The transport reads into our buffer (recv_into), so no bytes object of the request
        # (which may carry a peer's key) is left behind: the buffer is wiped after each read.
        if self._rbuf is None:
            self._rbytes = bytearray(READ_SIZE if self.core is not None else 256)
            self._rbuf = memoryview(self._rbytes)
        return self._rbuf

    def buffer_updated(self, nbytes: int) -> None:
        core, view = self.core, self._rbuf
        if core is None or view is None:
            return
        framer = core.framer
        if self._turn is None and self._write_blocked_since is None:
            if framer.lone_line(self._rbytes, nbytes):
                # The usual read: one whole request, nothing buffered before it. The line is
                # taken from the read buffer as the framer would give it (one copy, no pass
                # through the framer's buffer) and run in this turn.
                line = bytes(view[: nbytes - 1])
                view[:nbytes] = _ZEROS[:nbytes]
                self._take_input(core.line_action(line))
                return
            framer.push(view[:nbytes])
            view[:nbytes] = _ZEROS[:nbytes]
            self._take_input()
        else:  # a turn is due or the peer must read first: read no more meanwhile
            framer.push(view[:nbytes])
            view[:nbytes] = _ZEROS[:nbytes]
            self._pause_reading()

    def eof_received(self) -> bool:
        return False  # the peer is gone: close (requests in progress are cancelled)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        self._drop_held()
        if self.core is None:
            return
        self.server._conns.pop(self.conn_id, None)
        for t in self.tasks:
            t.cancel()
        on_close = self.server.on_close
        if on_close is not None and self.peer is not None:
            try:
                on_close(self.peer)
            except Exception:  # noqa: BLE001 - a hook must not break the loop
                log.exception("conn %d: close hook failed", self.conn_id)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("conn %d: closed", self.conn_id)

    def pause_writing(self) -> None:
        # Replies pile up in the transport (above HIGH_WATER): take no more input until the
        # peer reads, and give it write_timeout_s to do so.
        if self._write_blocked_since is None:
            self._write_blocked_since = now = self.loop.time()
            self._arm(now + self.cfg.write_timeout_s)
        self._pause_reading()

    def resume_writing(self) -> None:
        if self._held:  # our own held output goes first (it unblocks the connection)
            self._flush_held()
            return
        self._write_blocked_since = None
        t = self.transport
        if t is not None and not t.is_closing() and self._turn is None:
            self._take_input()

    # -- input, a bounded amount per turn ------------------------------------------------
    def _pause_reading(self) -> None:
        if self._reading and self.transport is not None and not self.transport.is_closing():
            self._reading = False
            self.transport.pause_reading()

    def _take_input(self, first: Action | None = None) -> None:
        """Take input for one turn: ``first`` (the action of a line taken straight from the
        read, see :meth:`buffer_updated`), then buffered lines while the limits allow."""
        self._turn = None
        core, t = self.core, self.transport
        if core is None or t is None or t.is_closing():
            return
        out: list[bytes] = []  # plain reply lines of this turn, written together
        queued = t.get_write_buffer_size() + self._held_bytes
        more = False
        taken = 0
        next_action = core.next_action
        while True:
            if first is not None:  # taken already: run before anything else
                action: Action = first
                first = None
            elif queued > HIGH_WATER or taken >= LINES_PER_TURN:
                more = True
                break
            else:
                following = next_action()
                if following is None:
                    break
                action = following
            taken += 1
            if isinstance(action, bytes):
                line: bytes | bytearray | None = action
            else:
                line = self._dispatch(action)
            if line is None:
                continue
            if isinstance(line, bytearray):  # key material: never joined into a copy
                if out:
                    self._flush(out)
                self.send(line)
                wipe(line)
                queued = t.get_write_buffer_size() + self._held_bytes
                continue
            out.append(line)
            queued += len(line)
        if taken:
            self._last = self.loop.time()
        if out:
            self._flush(out)
        if t.is_closing():
            return
        if more:
            self._pause_reading()
            if self._write_blocked_since is None:  # else resume_writing takes the next turn
                self._turn = self.loop.call_soon(self._take_input)
            return
        if core.framer.partial:
            if self._partial_since is None:
                self._partial_since = now = self.loop.time()
                self._arm(now + self.cfg.line_timeout_s)
        else:
            self._partial_since = None
        if not self._reading and self._write_blocked_since is None:
            self._reading = True
            t.resume_reading()

    def _flush(self, out: list[bytes]) -> None:
        if out:
            self.send(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    # -- requests ------------------------------------------------------------------------
    def _dispatch(self, req: Request) -> bytes | bytearray | None:
        """Run ``req``: its reply line now, or None when it went to a task."""
        assert self.core is not None and self.peer is not None
        try:
            result = self.server.handler(req, self.peer)
        except AgentError as exc:
            outcome: dict[str, Any] | BaseException = exc
        except Exception as exc:  # noqa: BLE001 - reported as agent.internal, logged without args
            _log_failure(req, exc)
            outcome = exc
        else:
            if not isinstance(result, dict):
                task = self.loop.create_task(self._run(req, result))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
                return None
            outcome = result
        return self.core.finish(req, outcome)

    async def _run(self, req: Request, pending: Awaitable[dict[str, Any]]) -> None:
        assert self.core is not None
        try:
            outcome: dict[str, Any] | BaseException = await pending
        except asyncio.CancelledError:
            raise
        except AgentError as exc:
            outcome = exc
        except Exception as exc:  # noqa: BLE001 - reported as agent.internal, logged without args
            _log_failure(req, exc)
            outcome = exc
        self._last = self.loop.time()
        line = self.core.finish(req, outcome)
        self.send(line)
        wipe(line)  # a reply with key material: written (or dropped), now wiped

    # -- output --------------------------------------------------------------------------
    def send(self, line: bytes | bytearray) -> None:
        """Write ``line`` (a ``bytearray``: it carries key material; the caller wipes it).

        A key line is written to the socket here, by :meth:`_write_now`, and what the socket did
        not take waits in a buffer of our own (as does everything after it), wiped once written:
        asyncio's transport copies what the socket did not take into a buffer it frees without
        wiping, which would leave the keys in memory."""
        t = self.transport
        if t is None or t.is_closing():
            return
        if t.get_write_buffer_size() + self._held_bytes + len(line) > MAX_WRITE_BUFFER:
            # only replies of work in progress and events get here past HIGH_WATER
            log.warning("conn %d: peer does not read its replies; closing", self.conn_id)
            t.abort()
            return
        if not self._held and not isinstance(line, bytearray):
            t.write(line)
            return
        if not self._held and not t.get_write_buffer_size():
            n = self._write_now(t, line)
            if n is None or n == len(line):
                return
            rest = bytearray(memoryview(line)[n:])  # our copy of the rest, wiped once written
        else:
            rest = bytearray(line)  # behind what waits: our copy, exactly its size
        self._held.append(rest)
        self._held_bytes += len(rest)
        if self._write_blocked_since is None:  # as pause_writing: input waits, deadline runs
            self._write_blocked_since = now = self.loop.time()
            self._arm(now + self.cfg.write_timeout_s)
        self._pause_reading()
        if self._held_timer is None:
            self._held_timer = self.loop.call_later(HOLD_POLL_S, self._flush_held)

    def _write_now(self, t: asyncio.Transport, data: bytes | bytearray) -> int | None:
        """write(2) ``data`` on the connection's socket (non-blocking, as asyncio set it) while
        the transport holds nothing, so the order of the replies is kept; the bytes the socket
        took, or None when the connection failed (then aborted)."""
        if self._fd < 0:
            self._fd = t.get_extra_info("socket").fileno()
        try:
            return os.write(self._fd, data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            log.debug("conn %d: write failed (%s); closing", self.conn_id, type(exc).__name__)
            t.abort()
            return None

    def _flush_held(self) -> None:
        """Write the held output, oldest first, as far as the socket takes it; when all is out
        the connection reads again."""
        self._held_timer = None
        t = self.transport
        if t is None or t.is_closing():
            self._drop_held()
            return
        while self._held:
            buf = self._held[0]
            n = 0 if t.get_write_buffer_size() else self._write_now(t, buf)
            if n is None:
                self._drop_held()
                return
            if n < len(buf):
                if n:
                    self._held[0] = bytearray(memoryview(buf)[n:])
                    self._held_bytes -= n
                    wipe(buf)
                self._held_timer = self.loop.call_later(HOLD_POLL_S, self._flush_held)
                return
            self._held.popleft()
            self._held_bytes -= len(buf)
            wipe(buf)
        self.resume_writing()

    def _drop_held(self) -> None:
        if self._held_timer is not None:
            self._held_timer.cancel()
            self._held_timer = None
        while self._held:
            wipe(self._held.popleft())
        self._held_bytes = 0

    def _refuse(self, code: str, message: str) -> None:
        assert self.transport is not None
        self.transport.write(encode(E.error_reply(None, E.api_error(code, message))))
        self.transport.close()  # after the line is written

    def close(self, line: bytes | None = None) -> None:
        for t in self.tasks:
            t.cancel()
        self._cancel_timers()
        if line is not None:
            self.send(line)
        if self.transport is not None:
            self.transport.close()

    @property
    def evictable(self) -> bool:
        """Holds nothing for its peer: no subscription, no request in progress, no offer
        waiting for its answer."""
        core, holds = self.core, self.server.holds
        if core is None or core.subscriptions or core.inflight or self.tasks:
            return False
        return not (holds is not None and self.peer is not None and holds(self.peer))

    # -- deadlines -----------------------------------------------------------------------
    def _cancel_timers(self) -> None:
        for h in (self._timer, self._turn):
            if h is not None:
                h.cancel()
        self._timer = self._turn = None

    def _arm(self, when: float) -> None:
        """Make the connection's one timer fire at ``when`` at the latest."""
        if self._timer is not None:
            if self._timer.when() <= when:
                return
            self._timer.cancel()
        self._timer = self.loop.call_at(when, self._check)

    def _check(self) -> None:
        self._timer = None
        core, t = self.core, self.transport
        if core is None or t is None or t.is_closing():
            return
        now, cfg = self.loop.time(), self.cfg
        if self._write_blocked_since is not None:
            due = self._write_blocked_since + cfg.write_timeout_s
            if now >= due:
                log.warning(
                    "conn %d: peer has not read its replies for %gs; closing",
                    self.conn_id,
                    cfg.write_timeout_s,
                )
                self.close()
                t.abort()  # what is queued will never be read
                return
            self._arm(due)
        if self._partial_since is not None:
            due = self._partial_since + cfg.line_timeout_s
            if now >= due:
                self.close(_closing_line(E.IDLE_TIMEOUT, f"no end of line within {cfg.line_timeout_s:g} s"))
                return
            self._arm(due)
        # Subscribers wait for events; a connection with work in progress waits for it.
        if core.subscriptions or core.inflight:
            self._arm(now + cfg.idle_timeout_s)
        else:
            due = self._last + cfg.idle_timeout_s
            if now >= due:
                self.close(_closing_line(E.IDLE_TIMEOUT, "idle connection closed"))
                return
            self._arm(due)


def _closing_line(code: str, message: str) -> bytes:
    return encode(E.error_reply(None, E.api_error(code, message)))


def _log_failure(req: Request, exc: Exception) -> None:
    log.error("op %s failed: %s", req.op, type(exc).__name__, exc_info=log.isEnabledFor(logging.DEBUG))


class ApiServer:
    def __init__(self, cfg: ApiConfig, handler: Handler, own_uid: int | None = None) -> None:
        self.cfg = cfg
        self.handler = handler
        self.own_uid = os.getuid() if own_uid is None else own_uid
        self._conns: dict[int, _Connection] = {}
        self._next = 0
        self._server: asyncio.AbstractServer | None = None
        self._path: str | None = None  # unlinked on close when we bound it
        #: called with the peer of each admitted connection once it closed (its offers die)
        self.on_close: Callable[[Peer], None] | None = None
        #: whether a connection's peer holds work beyond its requests (offers waiting for an
        #: answer): such a connection is not evicted to make room
        self.holds: Callable[[Peer], bool] | None = None

    @property
    def clients(self) -> int:
        return len(self._conns)

    async def start(self, sock: socket.socket | None = None) -> None:
        if sock is None:
            sock = bind_socket(self.cfg.socket)
            self._path = self.cfg.socket
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: _Connection(self, self.cfg), sock=sock)

    def reconfigure(self, cfg: ApiConfig) -> None:
        """New allow lists and limits (SIGHUP); the socket path stays as bound. Open
        connections are checked against the new allow lists at once: a peer no longer
        allowed gets one ``api.forbidden`` line and is closed, its requests in progress
        cancelled, and nothing else (no reply, no event) reaches it."""
        self.cfg = cfg
        for conn in list(self._conns.values()):
            peer = conn.peer
            if peer is not None and not is_allowed(peer, cfg, self.own_uid):
                log.warning("conn %d: uid %d no longer allowed; closing", conn.conn_id, peer.uid)
                self._conns.pop(conn.conn_id, None)
                conn.close(_closing_line(E.FORBIDDEN, "this uid/gid may no longer use the agent"))

    def _admit(self, peer: Peer) -> str | None:
        """Room for a new allowed peer, evicting a connection when needed; None = admitted,
        else why not.

        - One uid holds at most ``max_clients_per_uid`` connections (root is not capped);
          past that its own least recently active connection that holds nothing (no
          subscription, nothing in progress) makes room, else it is refused.
        - When ``max_clients`` are open, a connection that holds nothing is evicted from
          a uid holding at least two more connections than the newcomer's (so nobody can
          push out a uid with a smaller share), or from the newcomer's own uid: the
          largest share first, the least recently active in it.
        - Otherwise root still gets one of ``ROOT_RESERVE`` extra places (the admin's
          ``ue-agent status`` is never locked out).
        """
        cfg = self.cfg
        conns = [c for c in self._conns.values() if c.peer is not None]
        mine = [c for c in conns if c.peer is not None and c.peer.uid == peer.uid]
        if peer.uid != 0 and len(mine) >= cfg.max_clients_per_uid:
            victim = min((c for c in mine if c.evictable), key=lambda c: c._last, default=None)
            if victim is None:
                return f"at most {cfg.max_clients_per_uid} connections per uid"
            self._evict(victim, peer)
            return None
        if len(conns) < cfg.max_clients:
            return None
        counts = Counter(c.peer.uid for c in conns if c.peer is not None)
        own = counts[peer.uid]
        candidates = [
            c
            for c in conns
            if c.evictable and c.peer is not None and (c.peer.uid == peer.uid or counts[c.peer.uid] > own + 1)
        ]
        if candidates:
            victim = max(candidates, key=lambda c: (counts[c.peer.uid] if c.peer else 0, -c._last))
            self._evict(victim, peer)
            return None
        if peer.uid == 0 and len(conns) < cfg.max_clients + ROOT_RESERVE:
            return None
        return f"at most {cfg.max_clients} clients"

    def _evict(self, victim: _Connection, newcomer: Peer) -> None:
        assert victim.peer is not None
        log.info(
            "conn %d: evicted (uid %d, idle) to make room for uid %d",
            victim.conn_id,
            victim.peer.uid,
            newcomer.uid,
        )
        self._conns.pop(victim.conn_id, None)
        victim.close(_closing_line(E.EVICTED, "closed to make room for another client"))

    def uids(self) -> set[int]:
        """The uids with an open connection."""
        return {c.peer.uid for c in self._conns.values() if c.peer is not None}

    def broadcast(self, name: str, body: dict[str, Any], uids: Collection[int] | None = None) -> None:
        """``name`` to every subscriber of it; with ``uids``, only to those uids' connections
        (the daemon sends an event about a session to its owner and root only)."""
        for conn in list(self._conns.values()):
            assert conn.core is not None and conn.peer is not None
            if uids is not None and conn.peer.uid not in uids:
                continue
            line = conn.core.event(name, body)
            if line is not None:
                conn.send(line)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        bye = encode(E.error_reply(None, E.api_error(E.SHUTTING_DOWN, "the agent is stopping")))
        for conn in list(self._conns.values()):
            conn.close(bye)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
        if self._path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)
