"""Hostile API peers, standard library only, so they run under any uid (``python -I``).

    python tests/attack/peers.py flood PATH CONNS SECONDS
        CONNS connections write "1\\n" (a tiny invalid request) as fast as the socket takes
        it and never read; a connection the agent closes is reopened (10 ms later). Prints
        one JSON line of counts at the end.
    python tests/attack/peers.py hold PATH IDLE TRICKLE SECONDS
        IDLE silent connections and TRICKLE ones sending one byte of an endless line every
        second. Prints "ready" once all connect() calls returned, then JSON counts at the end
        (or when stdin closes).

Everything is bounded by SECONDS and by the connection counts.
"""

from __future__ import annotations

import errno
import json
import select
import socket
import sys
import time

CHUNK = b"1\n" * 4096  # 8 KiB of 2-byte requests per send


def _connect(path: str) -> socket.socket | None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError:
        s.close()
        return None
    s.setblocking(False)
    return s


def flood(path: str, conns: int, seconds: float) -> dict[str, int]:
    socks: list[socket.socket | None] = [_connect(path) for _ in range(conns)]
    counts = {"bytes": 0, "reopened": 0, "connect_failed": 0}
    retry_at = [0.0] * conns
    end = time.monotonic() + seconds
    while (now := time.monotonic()) < end:
        writable = [s for s in socks if s is not None]
        if writable:
            _, ready, _ = select.select([], writable, [], 0.05)
        else:
            ready = []
            time.sleep(0.01)
        for i, s in enumerate(socks):
            if s is None:
                if now >= retry_at[i]:
                    socks[i] = _connect(path)
                    counts["reopened"] += 1
                    if socks[i] is None:
                        counts["connect_failed"] += 1
                        retry_at[i] = now + 0.01
                continue
            if s not in ready:
                continue
            try:
                counts["bytes"] += s.send(CHUNK)
            except BlockingIOError:
                pass
            except OSError as exc:  # closed by the agent: reopen shortly
                if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                    raise
                s.close()
                socks[i] = None
                retry_at[i] = now + 0.01
    for s in socks:
        if s is not None:
            s.close()
    return counts


def hold(path: str, idle: int, trickle: int, seconds: float) -> dict[str, int]:
    socks = [_connect(path) for _ in range(idle + trickle)]
    held = [s for s in socks if s is not None]
    trickling = [s for s in socks[idle:] if s is not None]
    print("ready", flush=True)
    counts = {"connected": len(held), "closed_by_agent": 0}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        r, _, _ = select.select([sys.stdin], [], [], 1.0)
        if r and not sys.stdin.readline():
            break
        for s in list(trickling):
            try:
                s.send(b"{")
            except OSError:
                trickling.remove(s)
    for s in held:
        s.setblocking(False)
        try:
            s.recv(4096)
        except BlockingIOError:
            continue  # nothing from the agent: still open
        except OSError:
            pass
        counts["closed_by_agent"] += 1  # a closing line (evicted, timeout, too many) or EOF
    for s in held:
        s.close()
    return counts


def main(argv: list[str]) -> int:
    cmd, path = argv[0], argv[1]
    if cmd == "flood":
        out = flood(path, int(argv[2]), float(argv[3]))
    elif cmd == "hold":
        out = hold(path, int(argv[2]), int(argv[3]), float(argv[4]))
    else:
        print(f"unknown command {cmd}", file=sys.stderr)
        return 2
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
