"""Round-trip latency and throughput of the socket API, against a raw Unix-socket echo floor.

    python -m benchmarks.bench_api [--n N]

Two floors, each a server in another Python process on a Unix socket:

- raw echo: a blocking socket that sends each line back (what any line exchange over a
  Unix socket costs, client side as a bare ``sendall``/``readline``);
- asyncio NDJSON: ``asyncio.start_unix_server`` streams with one ``json.loads`` and one
  ``json.dumps`` per line and a drain per reply, driven by the same blocking
  :class:`~ue_agent.api.client.Client` as the agent. ``+us`` in the table is an
  operation's p50 minus this floor's p50: what the agent itself adds (framing checks,
  validation, dispatch, the operation, encoding).

Each operation is measured sequentially on one connection, as a softphone drives it.
"""

from __future__ import annotations

import argparse
import json
import os

from benchmarks._util import ASYNC_FLOOR_SERVER, Daemon, EchoFloor, summary, timed
from ue_agent.crypto.milenage import Milenage
from ue_agent.subscriber import load_subscriber


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

    afloor = EchoFloor(ASYNC_FLOOR_SERVER)
    with Client(afloor.path) as ac:
        for _ in range(100):
            ac.call("status")
        async_s = timed(lambda: ac.call("status"), n)
    afloor.close()

    def row(name: str, samples: list[float]) -> str:
        return summary(name, samples, floor_s, async_s)

    with Daemon() as d, Client(d.socket) as c:
        c.call("hello", client="bench")
        rows = [
            summary("floor: raw Unix-socket echo", floor_s),
            summary("floor: asyncio NDJSON echo", async_s, floor_s),
        ]
        for _ in range(100):
            c.call("status")
        rows.append(row("status", timed(lambda: c.call("status"), n)))
        rows.append(row("capabilities", timed(lambda: c.call("capabilities"), n)))

        offer = c.call("sdes.offer", media=["audio"])
        ans = c.call("sdes.answer", offer=[s["lines"] for s in offer["streams"]])
        sid = ans["session"]
        rows.append(
            row("session.keys (SDES, 1 stream)", timed(lambda: c.call("session.keys", session=sid), n))
        )
        idx = iter(range(1, 10**9, 50))
        rows.append(
            row(
                "session.report",
                timed(lambda: c.call("session.report", session=sid, ssrc=1234, index=next(idx)), n),
            )
        )

        def sdes_call() -> None:
            o = c.call("sdes.offer", media=["audio"])
            a = c.call("sdes.answer", offer=[s["lines"] for s in o["streams"]])
            c.call("session.close", session=a["session"])
            c.call("session.close", session=o["session"])

        rows.append(row("SDES call (offer+answer+2 close)", timed(sdes_call, max(1, n // 10))))

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

        rows.append(row("ims.authenticate (lab card)", timed(aka, len(challenges))))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
