"""Python clients of socket protocol v1: :class:`AsyncClient` (asyncio) and :class:`Client` (blocking).

Both raise :class:`ApiCallError` (an AgentError carrying the agent's code) when a reply
has ``"ok": false``, and keep events that arrive between replies for :meth:`next_event`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
from collections import deque
from typing import Any

from ue_agent.api.protocol import MAX_LINE, PROTOCOL_VERSION
from ue_agent.errors import AgentError

DEFAULT_SOCKET = "/run/ue-agent/api.sock"


class ApiCallError(AgentError):
    """The agent answered with an error; ``code`` is its stable dotted code."""


def _raise_for(reply: dict[str, Any]) -> dict[str, Any]:
    if reply.get("ok") is True:
        return reply
    err = reply.get("error") or {}
    raise ApiCallError(
        str(err.get("code", "api.bad_reply")), str(err.get("message", "")), **(err.get("details") or {})
    )


class AsyncClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self._ids = itertools.count(1)
        self._pending: dict[Any, asyncio.Future] = {}
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        #: error lines without an id (api.forbidden, api.line_too_long, api.idle_timeout ...)
        self.unsolicited: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task = asyncio.create_task(self._read())
        self.closed = asyncio.Event()

    @classmethod
    async def connect(cls, path: str = DEFAULT_SOCKET) -> AsyncClient:
        reader, writer = await asyncio.open_unix_connection(path, limit=MAX_LINE + 1)
        return cls(reader, writer)

    async def _read(self) -> None:
        try:
            while True:
                line = await self._reader.readline()
                if not line:
                    break
                msg = json.loads(line)
                if "event" in msg:
                    await self._events.put(msg)
                elif msg.get("id") in self._pending:
                    fut = self._pending.pop(msg["id"])
                    if not fut.done():
                        fut.set_result(msg)
                else:
                    await self.unsolicited.put(msg)
        except (ConnectionError, ValueError, asyncio.LimitOverrunError):
            pass
        finally:
            self.closed.set()
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ApiCallError("api.closed", "the agent closed the connection"))
            self._pending.clear()

    async def call(self, op: str, **params: Any) -> dict[str, Any]:
        """Send one request; the raw reply (ok or not)."""
        req_id = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._pending[req_id] = fut
        await self.send_raw(json.dumps({"id": req_id, "op": op, **params}).encode() + b"\n")
        return await fut

    async def request(self, op: str, **params: Any) -> dict[str, Any]:
        """Send one request; the reply, or ApiCallError."""
        return _raise_for(await self.call(op, **params))

    async def send_raw(self, data: bytes) -> None:
        if self.closed.is_set():
            raise ApiCallError("api.closed", "the agent closed the connection")
        self._writer.write(data)
        await self._writer.drain()

    async def hello(self, client: str = "ue-agent-client") -> dict[str, Any]:
        return await self.request("hello", protocols=[PROTOCOL_VERSION], client=client)

    async def subscribe(self, events: list[str] | None = None) -> dict[str, Any]:
        return await self.request("subscribe", **({"events": events} if events else {}))

    async def next_event(self, timeout: float | None = None) -> dict[str, Any]:
        return await asyncio.wait_for(self._events.get(), timeout)

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Client:
    """Blocking client for scripts and ``ue-agent status``: one request at a time."""

    def __init__(self, path: str = DEFAULT_SOCKET, timeout: float | None = 30.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError as exc:
            self.sock.close()
            raise ApiCallError("api.unreachable", f"cannot connect to {path}: {exc.strerror}") from None
        self._buf = b""
        self._ids = itertools.count(1)
        self.events: deque[dict[str, Any]] = deque()
        self.unsolicited: deque[dict[str, Any]] = deque()

    def _readline(self) -> dict[str, Any]:
        while b"\n" not in self._buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ApiCallError("api.closed", "the agent closed the connection")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def call(self, op: str, **params: Any) -> dict[str, Any]:
        req_id = next(self._ids)
        self.sock.sendall(json.dumps({"id": req_id, "op": op, **params}).encode() + b"\n")
        while True:
            msg = self._readline()
            if "event" in msg:
                self.events.append(msg)
            elif msg.get("id") == req_id:
                return msg
            else:
                self.unsolicited.append(msg)
                if msg.get("id") is None and not msg.get("ok", True):
                    _raise_for(msg)  # the connection-level error (forbidden, too many clients)

    def request(self, op: str, **params: Any) -> dict[str, Any]:
        return _raise_for(self.call(op, **params))

    def next_event(self) -> dict[str, Any]:
        if self.events:
            return self.events.popleft()
        while True:
            msg = self._readline()
            if "event" in msg:
                return msg
            self.unsolicited.append(msg)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
