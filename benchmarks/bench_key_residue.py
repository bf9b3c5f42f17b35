"""Key residue in the daemon's memory after session.close, by where the key came from.

    sudo python -m benchmarks.bench_key_residue [--calls 5] [--pipelined]

For CALLS rounds on the lab card: sdes.offer (our keys leave in a=crypto lines), sdes.answer
to an offer made up here (the peer's key arrives in the request, our answer key leaves),
session.keys, session.close of both; then one ims.authenticate. Then /proc/PID/mem is read
and every form (raw, base64) of every key is searched. Printed per origin: how many key
forms are still found. Needs root (the agent is not dumpable). ``--pipelined``: the peers'
offers (CALLS sdes.answer) go in one write, split every 37 bytes, before any reply is read.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import time

from benchmarks._util import Daemon
from tests.attack.memscan import forms, scan
from tests.fixtures.daemon import aka_challenge


def _inline(line: str) -> bytes:
    m = re.search(r"inline:([A-Za-z0-9+/=]+)", line)
    assert m is not None
    return base64.b64decode(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--pipelined", action="store_true")
    args = ap.parse_args()
    if args.pipelined:
        pipelined(args.calls)
        return
    from ue_agent.api.client import Client

    origin: dict[str, list[bytes]] = {"ours (offer lines)": [], "ours (answer line, session.keys tx)": []}
    origin["peer's (request, session.keys rx)"] = []
    origin["AKA RES/CK/IK (card)"] = []
    b64 = base64.b64encode
    with Daemon() as d, Client(d.socket) as c:
        assert d.proc is not None
        for _ in range(args.calls):
            offer = c.call("sdes.offer", media=["audio"])
            origin["ours (offer lines)"] += [_inline(x) for x in offer["streams"][0]["lines"]]
            peer_key = os.urandom(30)
            line = f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{b64(peer_key).decode()}"
            ans = c.call("sdes.answer", offer=[[line]])
            keys = c.call("session.keys", session=ans["session"])["streams"][0]
            ours = origin["ours (answer line, session.keys tx)"]
            ours += [_inline(ans["streams"][0]["lines"][0]), base64.b64decode(keys["tx"]["master_key"])]
            theirs = origin["peer's (request, session.keys rx)"]
            theirs += [peer_key, base64.b64decode(keys["rx"]["master_key"])]
            c.call("session.close", session=ans["session"])
            c.call("session.close", session=offer["session"])
        rand, autn = aka_challenge(300)
        aka = c.call("ims.authenticate", rand=b64(rand).decode(), autn=b64(autn).decode())
        origin["AKA RES/CK/IK (card)"] += [base64.b64decode(aka[k]) for k in ("res", "ck", "ik")]
        time.sleep(0.2)
        t0 = time.perf_counter()
        needles = {f: (o, name) for o, keys in origin.items() for k in keys for name, f in forms(k).items()}
        found = scan(d.proc.pid, needles)
        took = time.perf_counter() - t0
    print(f"{args.calls} SDES calls + 1 AKA, memory scanned in {took:.1f} s; key forms still found:")
    for o in origin:
        for name in ("raw", "base64"):
            mine = [n for n, (oo, nn) in needles.items() if oo == o and nn == name]
            hit = sum(1 for n in mine if found[n])
            print(f"  {o:<40} {name:<7} {hit}/{len(mine)}")


def pipelined(calls: int) -> None:
    """CALLS sdes.answer with a peer's key each, written split every 37 bytes before any reply
    is read; then every session closed and the memory scanned for the peers' keys."""
    import json
    import socket

    from tests.attack.test_api_load import read_lines

    keys = [os.urandom(30) for _ in range(calls)]
    with Daemon() as d:
        assert d.proc is not None
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(d.socket)
        data = b"".join(
            json.dumps(
                {
                    "id": i,
                    "op": "sdes.answer",
                    "offer": [[f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{base64.b64encode(k).decode()}"]],
                }
            ).encode()
            + b"\n"
            for i, k in enumerate(keys)
        )
        for at in range(0, len(data), 37):
            s.sendall(data[at : at + 37])
        replies = read_lines(s, calls)
        s.sendall(
            b"".join(
                b'{"id":%d,"op":"session.close","session":"%s"}\n' % (i, r["session"].encode())
                for i, r in enumerate(replies)
            )
        )
        read_lines(s, calls)
        s.close()
        time.sleep(0.2)
        needles = {f: name for k in keys for name, f in forms(k).items()}
        found = scan(d.proc.pid, needles)
    print(f"{calls} pipelined sdes.answer (split every 37 bytes); peers' key forms still found:")
    for name in ("raw", "base64"):
        mine = [n for n, nn in needles.items() if nn == name]
        print(f"  {name:<7} {sum(1 for n in mine if found[n])}/{len(mine)}")


if __name__ == "__main__":
    main()
