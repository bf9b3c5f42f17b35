"""KMS end to end over real HTTP on loopback: GBA-authenticated Ua, the lab KMS, two or three UEs."""

from __future__ import annotations

import asyncio

import pytest

from tests.fixtures.network import lab_subscriber
from ue_agent.drivers.http import HttpClient
from ue_agent.errors import KmsError, MikeyError
from ue_agent.gba.client import GbaClient
from ue_agent.gba.naf_client import NafClient
from ue_agent.kms import mikey
from ue_agent.kms.client import KmsClient, SrtpStream, TlsStream
from ue_agent.lab.card_ops import SoftCardOps
from ue_agent.lab.network import LabNetwork


def run(coro):
    return asyncio.run(coro)


def ue(net: LabNetwork, http, name: str, **kw) -> KmsClient:
    sub = lab_subscriber(name)
    # GBA_ME for every UE: the soft UICC's EF_GBANL records are too short for the KMS NAF_Id
    # and B-TID (SW 6A84), a lab card limit reported to its owner; Ks_NAF is the same either way.
    gba = GbaClient(SoftCardOps(sub), net.bsf_url, net.bsf_fqdn, sub.impi, http, gba_u=False)
    return KmsClient(NafClient(gba, http), net.kms_url, net.kms_fqdn, sub.impu[0], **kw)


def uri(name: str) -> str:
    return lab_subscriber(name).impu[0]


def wire(keys):
    return [(k.tx.to_wire(), k.rx.to_wire() if k.rx is not None else None) for k in keys]


def peer_view(keys):
    """The keys as the other side holds them: its tx is our rx (SRTP); a TLS PSK is shared."""
    return [(rx, tx) if rx is not None else (tx, None) for tx, rx in wire(keys)]


STREAMS = [SrtpStream("AES_CM_128_HMAC_SHA1_80", ssrc=0x1234), TlsStream("TCP/TLS/MSRP")]


def test_offer_answer_complete_same_keys_and_ticket_reuse(lab_network):
    async def go():
        async with HttpClient() as http:
            a, b = ue(lab_network, http, "alice"), ue(lab_network, http, "bob")
            offer = await a.offer(uri("bob"), STREAMS)
            ans = await b.answer(offer.transfer_init)
            keys_a = a.complete(offer.pending, ans.transfer_resp)
            assert wire(keys_a) == peer_view(ans.keys)
            assert ans.peer_uri == uri("alice")
            assert keys_a[0].tx.ssrc == 0x1234 and keys_a[0].rx.ssrc != 0x1234 and keys_a[1].tx.identity
            # second call A -> B: no KMS request at all
            before = lab_network.requests["kms"]
            offer2 = await a.offer(uri("bob"), STREAMS)
            ans2 = await b.answer(offer2.transfer_init)
            keys2 = a.complete(offer2.pending, ans2.transfer_resp)
            assert lab_network.requests["kms"] == before
            assert offer2.reused_ticket and not ans2.resolved_now
            assert wire(keys2) == peer_view(ans2.keys) and wire(keys2) != wire(keys_a)

    run(go())


def test_recipient_outside_policy_refused(lab_network):
    async def go():
        async with HttpClient() as http:
            a, c = ue(lab_network, http, "alice"), ue(lab_network, http, "carol")
            offer = await a.offer(uri("bob"), STREAMS)
            with pytest.raises(KmsError) as exc:
                await c.answer(offer.transfer_init)
            assert exc.value.code == "kms.not_authorized"

    run(go())


def test_forked_responders_get_different_keys(lab_network):
    async def go():
        async with HttpClient() as http:
            a, b, c = (ue(lab_network, http, n) for n in ("alice", "bob", "carol"))
            domain = lab_subscriber("bob").domain
            offer = await a.offer(uri("bob"), STREAMS, recipients=[f"*@{domain}"])
            ans_b = await b.answer(offer.transfer_init)
            ans_c = await c.answer(offer.transfer_init)
            assert wire(a.complete(offer.pending, ans_b.transfer_resp)) == peer_view(ans_b.keys)
            assert wire(a.complete(offer.pending, ans_c.transfer_resp)) == peer_view(ans_c.keys)
            assert wire(ans_b.keys) != wire(ans_c.keys)

    run(go())


def test_kms_refusing_and_unreachable(lab_network):
    async def go():
        async with HttpClient() as http:
            a = ue(lab_network, http, "alice")
            lab_network.faults.kms_status = 503
            with pytest.raises(KmsError) as exc:
                await a.offer(uri("bob"), STREAMS)
            assert exc.value.code == "kms.unreachable"
            lab_network.faults.kms_status = 500
            with pytest.raises(KmsError) as exc:
                await a.offer(uri("bob"), STREAMS)
            assert exc.value.code == "kms.bad_response"
            lab_network.faults.kms_status = None
            lab_network.faults.kms_down = True
            with pytest.raises(KmsError) as exc:
                await a.offer(uri("bob"), STREAMS)
            assert exc.value.code == "kms.unreachable"
            assert not a._issued  # nothing half-done

    run(go())


def _flip(data: bytes, pos: int) -> bytes:
    return data[:pos] + bytes([data[pos] ^ 0x01]) + data[pos + 1 :]


def test_tampered_ticket_and_transfer_init(lab_network):
    async def go():
        async with HttpClient() as http:
            a, b = ue(lab_network, http, "alice"), ue(lab_network, http, "bob")
            offer = await a.offer(uri("bob"), STREAMS)
            ticket = mikey.Message.decode(offer.transfer_init).one(mikey.Ticket).ticket_data
            at = offer.transfer_init.index(ticket)
            with pytest.raises(KmsError) as exc:
                await b.answer(_flip(offer.transfer_init, at + len(ticket) // 2))
            assert exc.value.code == "kms.ticket_rejected"
            # a tampered SSRC in the CS ID map: the KMS resolves the good ticket, the MAC fails
            with pytest.raises(MikeyError) as exc2:
                await b.answer(_flip(offer.transfer_init, 18))
            assert exc2.value.code == "mikey.bad_mac"
            assert not b._resolved
            ans = await b.answer(offer.transfer_init)  # the genuine one still works
            assert wire(a.complete(offer.pending, ans.transfer_resp)) == peer_view(ans.keys)
            with pytest.raises(MikeyError) as exc3:
                await b.answer(offer.transfer_init)  # replayed
            assert exc3.value.code == "mikey.replay"

    run(go())


def test_expired_ticket(lab_network):
    async def go():
        async with HttpClient() as http:
            shift = [0.0]
            base = lab_network.kms_service.clock

            def clock():
                return base() + shift[0]

            lab_network.kms_service.clock = clock
            a = ue(lab_network, http, "alice", clock=clock, ticket_validity=60)
            b = ue(lab_network, http, "bob", clock=clock)
            offer = await a.offer(uri("bob"), STREAMS)
            shift[0] = 120.0  # deferred answer, after the ticket's expiry
            with pytest.raises(KmsError) as exc:
                await b.answer(offer.transfer_init)
            assert exc.value.code == "kms.ticket_expired"

    run(go())


# The UE side of a KMS call (GbaClient, NafClient, KmsClient, HttpClient, the card layer) in a
# process where importing aiohttp, yarl or multidict fails: the daemon must not load them.
UE_ONLY = r"""
import asyncio, json, sys

HEAVY = ("aiohttp", "yarl", "multidict")


class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY:
            raise ImportError(f"{name} imported on the UE side")
        return None


sys.meta_path.insert(0, Refuse())

from ue_agent.card.session import Card
from ue_agent.gba.client import GbaClient
from ue_agent.gba.naf_client import NafClient
from ue_agent.drivers.http import HttpClient
from ue_agent.kms.client import KmsClient, SrtpStream
from ue_agent.lab.uicc import SoftUicc, SoftUiccTransport
from ue_agent.subscriber import load_subscriber

net = json.loads(sys.argv[1])


class Ops:
    def __init__(self, sub):
        self.card = Card(SoftUiccTransport(SoftUicc(sub)))

    async def authenticate(self, rand, autn):
        return await asyncio.to_thread(self.card.authenticate, rand, autn)


def ue(http, path):
    sub = load_subscriber(path)
    gba = GbaClient(Ops(sub), net["bsf_url"], net["bsf_fqdn"], sub.impi, http)
    return KmsClient(NafClient(gba, http), net["kms_url"], net["kms_fqdn"], sub.impu[0]), sub


async def main():
    async with HttpClient() as http:
        a, _ = ue(http, net["alice"])
        b, bob = ue(http, net["bob"])
        offer = await a.offer(bob.impu[0], [SrtpStream("AES_CM_128_HMAC_SHA1_80", ssrc=1)])
        ans = await b.answer(offer.transfer_init)
        keys = a.complete(offer.pending, ans.transfer_resp)
        assert [k.tx.to_wire() for k in keys] == [k.rx.to_wire() for k in ans.keys]


asyncio.run(main())
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)))
"""


def test_ue_side_kms_call_does_not_import_aiohttp(lab_network):
    import json
    import subprocess
    import sys
    from pathlib import Path

    from tests.fixtures.network import SUBSCRIBER_DIR

    net = {
        "bsf_url": lab_network.bsf_url,
        "bsf_fqdn": lab_network.bsf_fqdn,
        "kms_url": lab_network.kms_url,
        "kms_fqdn": lab_network.kms_fqdn,
        "alice": str(SUBSCRIBER_DIR / "alice.toml"),
        "bob": str(SUBSCRIBER_DIR / "bob.toml"),
    }
    before = lab_network.requests["kms"]
    proc = subprocess.run(
        [sys.executable, "-c", UE_ONLY, json.dumps(net)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
    assert lab_network.requests["kms"] > before  # the call really went to the KMS
