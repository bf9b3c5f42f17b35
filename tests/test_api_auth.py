"""ims.authenticate through the real daemon and the lab ISIM: success, resync, MAC failure,
card.busy, events, and no handed-out key in the daemon's debug log."""

from __future__ import annotations

import asyncio
import base64
import json
import socket

from tests.fixtures.daemon import ALICE, aka_challenge, expected_keys
from ue_agent.api.client import ApiCallError, AsyncClient
from ue_agent.crypto.milenage import Milenage
from ue_agent.subscriber import load_subscriber


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def key_forms(key: bytes) -> list[str]:
    return [key.hex(), key.hex().upper(), b64(key), base64.urlsafe_b64encode(key).decode().rstrip("=")]


def test_success_gives_res_ck_ik_and_never_logs_them(lab_agent) -> None:
    rand, autn = aka_challenge(33)
    with lab_agent.client() as c:
        r = c.request("ims.authenticate", rand=b64(rand), autn=b64(autn))
        # the RFC 3310 nonce form: base64(RAND || AUTN || server data)
        rand2, autn2 = aka_challenge(34)
        r2 = c.request("ims.authenticate", nonce=b64(rand2 + autn2 + b"srv"))
        st = c.request("status")
    res, ck, ik = expected_keys(rand)
    assert (r["result"], r["res"], r["ck"], r["ik"]) == ("success", b64(res), b64(ck), b64(ik))
    assert r2["res"] == b64(expected_keys(rand2)[0])
    assert st["counters"]["authentications"] == 2
    log = lab_agent.log_text()
    assert "DEBUG" in log  # the daemon ran at debug level
    for key in (res, ck, ik, *expected_keys(rand2)):
        for form in key_forms(key):
            assert form not in log


def test_sync_failure_gives_auts_the_hss_can_use(lab_agent) -> None:
    rand, autn = aka_challenge(5)  # below the card's SQN (32): replay
    with lab_agent.client() as c:
        r = c.request("ims.authenticate", rand=b64(rand), autn=b64(autn))
        assert c.request("status")["counters"]["sync_failures"] == 1
    assert r["result"] == "sync_failure" and set(r) == {"id", "ok", "result", "auts"}
    sub = load_subscriber(ALICE)
    sqn_ms = Milenage(sub.k.reveal(), sub.opc.reveal()).resync_sqn(rand, base64.b64decode(r["auts"]))
    assert sqn_ms is not None and int.from_bytes(sqn_ms, "big") >= 32


def test_mac_failure_is_an_error_and_a_security_warning(lab_agent) -> None:
    rand, autn = aka_challenge(35)
    bad = autn[:-1] + bytes([autn[-1] ^ 1])

    async def go() -> tuple[dict, dict]:
        sub = await AsyncClient.connect(lab_agent.socket)
        await sub.subscribe(["security.warning"])
        c = await AsyncClient.connect(lab_agent.socket)
        try:
            await c.request("ims.authenticate", rand=b64(rand), autn=b64(bad))
        except ApiCallError as exc:
            err = exc.to_dict()
        ev = await sub.next_event(20)
        await c.close()
        await sub.close()
        return err, ev

    err, ev = asyncio.run(go())
    assert err["code"] == "card.auth_mac_failure"
    assert ev["event"] == "security.warning" and ev["kind"] == "auth_mac_failure"


def test_bad_params(lab_agent) -> None:
    rand, autn = aka_challenge(36)
    with lab_agent.client() as c:
        for params in (
            {},
            {"rand": b64(rand)},
            {"rand": b64(rand[:8]), "autn": b64(autn)},
            {"rand": "@@@", "autn": b64(autn)},
            {"nonce": b64(rand)},
            {"nonce": "%%%"},
            {"nonce": b64(rand + autn), "rand": b64(rand)},
            {"rand": 5, "autn": b64(autn)},
        ):
            r = c.call("ims.authenticate", **params)
            assert r["ok"] is False and r["error"]["code"] == "api.bad_request", params
        assert c.request("ims.authenticate", rand=b64(rand), autn=b64(autn))["result"] == "success"


def test_card_busy_under_concurrent_authenticate(lab_agent) -> None:
    challenges = [aka_challenge(40 + i) for i in range(4)]
    lines = b"".join(
        json.dumps({"id": i, "op": "ims.authenticate", "rand": b64(r), "autn": b64(a)}).encode() + b"\n"
        for i, (r, a) in enumerate(challenges)
    )
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(lab_agent.socket)
    s.sendall(lines)  # one write: the agent sees all four at once
    buf = b""
    while buf.count(b"\n") < 4:
        chunk = s.recv(65536)
        assert chunk
        buf += chunk
    s.close()
    replies = {r["id"]: r for r in map(json.loads, buf.splitlines())}
    outcomes = [("ok" if r["ok"] else r["error"]["code"]) for _, r in sorted(replies.items())]
    assert outcomes[0] == "ok"
    assert "card.busy" in outcomes and set(outcomes) <= {"ok", "card.busy"}
    # busy was an answer, not a queue: the card takes the next request at once
    with lab_agent.client() as c:
        r, a = aka_challenge(50)
        assert c.request("ims.authenticate", rand=b64(r), autn=b64(a))["result"] == "success"
        assert c.request("status")["card"]["busy"] is False
