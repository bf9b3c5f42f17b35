"""The API's request path in one process, no sockets: ``session.keys`` through the real
connection (``_Connection`` on an in-memory transport), core and agent handler, against
the NDJSON floor's ``data_received`` (``json.loads`` + ``json.dumps`` of the same reply).

    python -m benchmarks.bench_hotpath               # microseconds per request (timeit)
    python -m benchmarks.bench_hotpath --callgrind   # instructions per request (valgrind)

Times on a shared machine move from run to run; instruction counts do not. With
``--callgrind`` each figure runs in its own process under ``valgrind --tool=callgrind``,
collecting only inside the measured loop (run through ``itertools.starmap``, the
collection toggle), and is printed as instructions per request. Parts: ``path`` (a read
of one request line to its reply written), ``core`` (framing, decoding, validation),
``handler`` (the agent's session.keys), ``reply`` (the reply line and its wipe), and
``floor``. The event loop is left out of every figure, and so are the socket calls but
one: the connection writes a reply with key material itself (write(2)), here to /dev/null.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import subprocess
import sys
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

PARTS = ("path", "core", "handler", "reply", "floor")


class _Transport(asyncio.Transport):
    """What the connection writes to: takes every write at once."""

    def __init__(self, sock: Any) -> None:
        super().__init__()
        self.sock = sock
        self.last = b""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.sock if name == "socket" else default

    def write(self, data: Any) -> None:
        self.last = bytes(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class _Floor(asyncio.Protocol):
    """The socket floor's server (benchmarks._floors.NDJSON_FLOOR), as a class."""

    def __init__(self, template: dict[str, Any], transport: _Transport) -> None:
        self.t, self.buf, self.template = transport, b"", template

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (i := self.buf.find(b"\n")) >= 0:
            line, self.buf = self.buf[:i], self.buf[i + 1 :]
            msg = json.loads(line)
            self.template["id"] = msg.get("id")
            self.t.write(json.dumps(self.template, separators=(",", ":")).encode() + b"\n")


async def _setup(part: str) -> tuple[Callable[[], None], Callable[[], Any]]:
    """The function that handles one request for ``part``, and the clean-up."""
    import socket

    from benchmarks._util import SUBSCRIBERS
    from ue_agent.agent import Agent
    from ue_agent.api.protocol import wipe
    from ue_agent.api.server import ApiServer, _Connection
    from ue_agent.config import parse_config

    cfg = parse_config({"card": {"transport": "lab", "subscriber": str(SUBSCRIBERS / "alice.toml")}})
    agent = Agent(cfg, lambda *a: None)
    await agent.start()
    server = ApiServer(cfg.api, agent.handle)
    a, _b = socket.socketpair(socket.AF_UNIX)
    conn = _Connection(server, cfg.api)
    t = _Transport(a)
    conn.connection_made(t)

    def request(line: bytes) -> dict[str, Any]:
        buf = conn.get_buffer(-1)
        buf[: len(line)] = line
        t.last = b""
        conn.buffer_updated(len(line))
        # a reply with key material is written by the connection itself, on the socket
        return json.loads(t.last or _b.recv(1 << 16))

    o = request(b'{"id":1,"op":"sdes.offer","media":["audio"]}\n')
    offer = [s["lines"] for s in o["streams"]]
    sid = request(json.dumps({"id": 2, "op": "sdes.answer", "offer": offer}).encode() + b"\n")["session"]
    line = json.dumps({"id": 3, "op": "session.keys", "session": sid}, separators=(",", ":")).encode() + b"\n"
    reply = request(line)
    assert reply.get("ok"), reply
    n = len(line)
    core, peer = conn.core, conn.peer
    assert core is not None and peer is not None
    core.push(line)
    req = core.next_action()
    assert req is not None and not isinstance(req, bytes)
    core.inflight.discard(req.id)
    result = agent.handle(req, peer)
    assert isinstance(result, dict)

    # from here key replies go to /dev/null: write(2) as on the socket, nothing to drain
    conn._fd = os.open(os.devnull, os.O_WRONLY)

    def path() -> None:
        buf = conn.get_buffer(-1)
        buf[:n] = line
        conn.buffer_updated(n)

    def core_only() -> None:
        core.push(line)
        action = core.next_action()
        core.inflight.discard(action.id)  # type: ignore[union-attr]

    def handler() -> None:
        agent.handle(req, peer)

    def reply_only() -> None:
        wipe(core.finish(req, result))  # the handler's own reply object, as the server passes it

    floor = _Floor(reply, t)

    def floor_only() -> None:
        floor.data_received(line)

    fn = {"path": path, "core": core_only, "handler": handler, "reply": reply_only, "floor": floor_only}[part]
    return fn, agent.stop


def _measure(part: str, n: int, inside_callgrind: bool) -> float | None:
    async def go() -> float | None:
        fn, stop = await _setup(part)
        try:
            for _ in range(300):
                fn()
            if inside_callgrind:
                list(itertools.starmap(fn, itertools.repeat((), n)))  # collected: starmap_next
                return None
            return min(timeit.repeat(fn, number=n, repeat=7)) / n
        finally:
            await stop()

    return asyncio.run(go())


def _callgrind(part: str, n: int) -> float:
    with tempfile.TemporaryDirectory(prefix="uea-cg-") as d:
        out = Path(d) / "cg.out"
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--collect-atstart=no",
                "--toggle-collect=starmap_next",
                f"--callgrind-out-file={out}.%p",
                sys.executable,
                "-m",
                "benchmarks.bench_hotpath",
                "--inside",
                part,
                "-n",
                str(n),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        total = 0
        for f in Path(d).glob("cg.out.*"):
            for text in f.read_text().splitlines():
                if text.startswith("totals:"):
                    total += int(text.split()[1])
        return total / n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_hotpath", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--callgrind", action="store_true", help="instructions per request (needs valgrind)")
    ap.add_argument("-n", type=int, help="requests per figure (default 20000; 2000 with --callgrind)")
    ap.add_argument("--inside", metavar="PART", help=argparse.SUPPRESS)
    ap.add_argument("parts", nargs="*", default=list(PARTS), help=f"some of {', '.join(PARTS)}")
    args = ap.parse_args(argv)
    if args.inside:
        _measure(args.inside, args.n, inside_callgrind=True)
        return 0
    n = args.n or (2000 if args.callgrind else 20000)
    for part in args.parts:
        if args.callgrind:
            print(f"{part:8} {_callgrind(part, n):10,.0f} instructions/request", flush=True)
        else:
            t = _measure(part, n, inside_callgrind=False)
            assert t is not None
            print(f"{part:8} {t * 1e6:8.2f} us/request (best of 7)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
