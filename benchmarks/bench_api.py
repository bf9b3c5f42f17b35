"""One client's sequential round trips per operation, each against a floor of the same shape.

    python -m benchmarks.bench_api [--n N]

For every operation the floor is an asyncio ``Protocol`` NDJSON server in another process
answering that operation's own reply (same bytes; one ``json.loads`` and one ``json.dumps``
per line), driven by a blocking client like the agent's, measured right before the
operation. ``+us`` is the operation's p50 minus its floor's p50: what the agent adds.
Latency only: throughput and 16 clients are in ``python -m benchmarks`` (docs/performance.md).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
from collections.abc import Callable
from typing import Any

from benchmarks._floors import NdjsonFloor
from benchmarks._util import Daemon, summary, timed
from ue_agent.crypto.milenage import Milenage
from ue_agent.subscriber import load_subscriber


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    n = args.n

    from ue_agent.api.client import Client

    floor = NdjsonFloor()

    def floor_for(reply: dict[str, Any]) -> list[float]:
        """The floor answering ``reply``, driven by the same client: sequential round trips."""
        with Client(floor.path) as fc:
            fc.sock.sendall(json.dumps(reply, separators=(",", ":")).encode() + b"\n")
            for _ in range(100):
                fc.call("x")
            return timed(lambda: fc.call("x"), n)

    rows: list[str] = []
    with Daemon() as d, Client(d.socket) as c:
        c.call("hello", client="bench")

        def row(name: str, call: Callable[[], dict[str, Any]]) -> None:
            fl = floor_for(call())
            samples = timed(call, n)
            rows.append(summary(f"floor: NDJSON echo of {name}'s reply", fl))
            rows.append(summary(name, samples, fl, fl))

        for _ in range(100):
            c.call("status")
        row("status", lambda: c.call("status"))
        row("capabilities", lambda: c.call("capabilities"))
        offer = c.call("sdes.offer", media=["audio"])
        ans = c.call("sdes.answer", offer=[s["lines"] for s in offer["streams"]])
        sid = ans["session"]
        row("session.keys (SDES, 1 stream)", lambda: c.call("session.keys", session=sid))
        idx = iter(range(1, 10**9, 50))
        row("session.report", lambda: c.call("session.report", session=sid, ssrc=1234, index=next(idx)))

        sub = load_subscriber(d.subscriber)
        m = Milenage(sub.k.reveal(), sub.opc.reveal())
        challenges = []
        for i in range(n + 2):
            rand = os.urandom(16)
            challenges.append((rand, m.generate_autn(rand, (sub.sqn + 1 + i).to_bytes(6, "big"), sub.amf)))
        it = iter(challenges)

        def aka() -> dict[str, Any]:
            rand, autn = next(it)
            return c.call(
                "ims.authenticate", rand=base64.b64encode(rand).decode(), autn=base64.b64encode(autn).decode()
            )

        row("ims.authenticate (lab card)", aka)
    floor.close()
    print("\n".join(rows))


if __name__ == "__main__":
    main()
