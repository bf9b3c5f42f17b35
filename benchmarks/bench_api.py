"""Round-trip latency and throughput of the socket API, against a raw Unix-socket echo floor.

    python -m benchmarks.bench_api [--n N]

The floor is a line echoed by another Python process over a Unix socket: what any
NDJSON-over-Unix-socket exchange costs before the agent does any work. Each operation is
measured sequentially on one connection, as a softphone drives it.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from benchmarks._util import Daemon, EchoFloor, summary
from ue_agent.crypto.milenage import Milenage
from ue_agent.subscriber import load_subscriber


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    n = args.n

    floor = EchoFloor()
    line = json.dumps({"id": 1, "op": "status"}).encode() + b"\n"
    for _ in range(100):
        floor.roundtrip(line)
    floor_s = timed(lambda: floor.roundtrip(line), n)
    floor.close()

    from ue_agent.api.client import Client

    with Daemon() as d, Client(d.socket) as c:
        c.call("hello", client="bench")
        rows = [summary("floor: raw Unix-socket echo", floor_s)]
        for _ in range(100):
            c.call("status")
        rows.append(summary("status", timed(lambda: c.call("status"), n), floor_s))
        rows.append(summary("capabilities", timed(lambda: c.call("capabilities"), n), floor_s))

        offer = c.call("sdes.offer", media=["audio"])
        ans = c.call("sdes.answer", offer=[s["lines"] for s in offer["streams"]])
        sid = ans["session"]
        rows.append(
            summary(
                "session.keys (SDES, 1 stream)",
                timed(lambda: c.call("session.keys", session=sid), n),
                floor_s,
            )
        )
        idx = iter(range(1, 10**9, 50))
        rows.append(
            summary(
                "session.report",
                timed(lambda: c.call("session.report", session=sid, ssrc=1234, index=next(idx)), n),
                floor_s,
            )
        )

        def sdes_call() -> None:
            o = c.call("sdes.offer", media=["audio"])
            a = c.call("sdes.answer", offer=[s["lines"] for s in o["streams"]])
            c.call("session.close", session=a["session"])
            c.call("session.close", session=o["session"])

        rows.append(summary("SDES call (offer+answer+2 close)", timed(sdes_call, max(1, n // 10)), floor_s))

        sub = load_subscriber(d.subscriber)
        m = Milenage(sub.k.reveal(), sub.opc.reveal())
        challenges = []
        for i in range(n // 4):
            rand = os.urandom(16)
            challenges.append((rand, m.generate_autn(rand, (sub.sqn + 1 + i).to_bytes(6, "big"), sub.amf)))
        it = iter(challenges)
        import base64

        def aka() -> None:
            rand, autn = next(it)
            r = c.call(
                "ims.authenticate", rand=base64.b64encode(rand).decode(), autn=base64.b64encode(autn).decode()
            )
            assert "res" in r, r

        rows.append(summary("ims.authenticate (lab card)", timed(aka, len(challenges)), floor_s))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
