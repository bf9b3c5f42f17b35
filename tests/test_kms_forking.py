"""Forking to two terminals under one IMPU (TR 33.828 7.1.4.4.3, requirement 15; RFC 6043 5.1.1).

Bob has two cards (bob.toml and bob2.toml: two IMPIs, the same IMPU). A's call to Bob forks to
both; B1 answers. B2, the non-answering terminal, then tries to derive B1's SRTP keys with
everything it sees: the TRANSFER_INIT, B1's TRANSFER_RESP (RANDRr, IDRr and RANDRkms travel in
the clear), its own RESOLVE exchanges with the lab KMS (as often as it likes) and its own GBA
keys. Real GBA bootstrapping and the lab KMS over loopback HTTP.

The control case shows that the attack has teeth: with a modifier that depends on the identity
only (a KMS that does not send a fresh RANDRkms per resolve, the weakness the TR's pCR notes),
the same attack recovers B1's keys.
"""

from __future__ import annotations

import asyncio
import base64

from tests.fixtures.network import lab_subscriber, network_config
from tests.test_kms_http import STREAMS, peer_view, ue, uri, wire
from ue_agent.crypto import mikey_prf
from ue_agent.drivers.http import HttpClient
from ue_agent.kms import mikey, session, streams
from ue_agent.kms.client import UA_KMS

EXTRA_RESOLVES = 5


def _srtp_candidates(tgk: bytes, seen: dict) -> tuple[bytes, bytes]:
    """B1's sending master key and salt (RFC 6043 5.1.3) if ``tgk`` were B1's TGK'."""
    prf, cs = seen["prf"], seen["b1_cs"]
    key = mikey_prf.from_tgk(tgk, mikey_prf.TEK_CONST, cs, seen["rand_i"], seen["rand_r"], 16, prf)
    salt = mikey_prf.from_tgk(tgk, mikey_prf.SALT_CONST, cs, seen["rand_i"], seen["rand_r"], 14, prf)
    return key, salt


async def _play_b2(b2, transfer_init: bytes, transfer_resp: bytes) -> tuple[list[bytes], list[bytes]]:
    """Everything B2 can compute: candidate TGK's for B1 and the RANDRkms values the KMS gave B2."""
    ti = session.inspect_transfer_init(transfer_init)
    resp = mikey.Message.decode(transfer_resp)
    id_r1 = resp.one(mikey.IdRole, mikey.ROLE_R).data
    rand_kms1 = resp.one(mikey.RandRole, mikey.RAND_ROLE_KMS).rand
    prf = ti.ticket.prf_func
    candidates: list[bytes] = []
    rands: list[bytes] = []
    # its own GBA key for the KMS (Ks_NAF) and its own resolves of the same ticket
    _btid, ks_naf = await b2.gba.ks_naf(b2.kms_fqdn, UA_KMS)
    candidates.append(ks_naf.reveal())
    for _ in range(1 + EXTRA_RESOLVES):
        r = await b2._resolve(ti)
        assert r.id_r == id_r1  # the same identity: only RANDRkms tells the terminals apart
        rands.append(r.rand_kms)
        own = [r.tgk.reveal(), r.mpk_i.reveal(), r.mpk_r.reveal()]
        candidates += own
        # re-fork what it holds with B1's modifier (IDRr, RANDRkms from the TRANSFER_RESP)
        for k in own:
            candidates.append(mikey_prf.fork(k, mikey_prf.FORK_TGK_CONST, id_r1, rand_kms1, prf))
            candidates.append(mikey_prf.fork(k, mikey_prf.FORK_MPKR_CONST, id_r1, rand_kms1, prf))
        r.zeroize()
    return candidates, rands


def _seen(transfer_init: bytes, transfer_resp: bytes) -> dict:
    ti = session.inspect_transfer_init(transfer_init)
    resp = mikey.Message.decode(transfer_resp)
    plan = streams.layout(ti.message)
    return {
        "prf": ti.ticket.prf_func,
        "rand_i": ti.rand_i,
        "rand_r": resp.one(mikey.RandRole, mikey.RAND_ROLE_R).rand,
        "b1_cs": plan[0].r_cs,  # B1 sends on the responder's crypto session of stream 0
        "rand_kms1": resp.one(mikey.RandRole, mikey.RAND_ROLE_KMS).rand,
    }


async def _call_and_attack(net):
    async with HttpClient() as http:
        a, b1, b2 = ue(net, http, "alice"), ue(net, http, "bob"), ue(net, http, "bob2")
        assert lab_subscriber("bob").impi != lab_subscriber("bob2").impi
        assert b1.own == b2.own == uri("bob")  # one IMPU, two terminals
        offer = await a.offer(uri("bob"), STREAMS)  # forked by the network to B1 and B2
        ans = await b1.answer(offer.transfer_init)  # B1 answers
        keys_a = a.complete(offer.pending, ans.transfer_resp)
        assert wire(keys_a) == peer_view(ans.keys)
        target = (
            base64.b64decode(ans.keys[0].tx.to_wire()["master_key"]),
            base64.b64decode(ans.keys[0].tx.to_wire()["master_salt"]),
        )
        candidates, rands = await _play_b2(b2, offer.transfer_init, ans.transfer_resp)
        seen = _seen(offer.transfer_init, ans.transfer_resp)
        hits = [c for c in candidates if _srtp_candidates(c, seen) == target]
        return hits, rands, seen, len(candidates)


def test_non_answering_terminal_cannot_derive_the_answering_ones_keys(lab_network):
    hits, rands, seen, tried = asyncio.run(_call_and_attack(lab_network))
    assert tried >= 3 * (1 + EXTRA_RESOLVES)
    assert hits == []
    # each RESOLVE_RESP forks with a fresh RANDRkms: B2 never gets B1's modifier, hence never TGK'1
    assert len(set(rands)) == len(rands) and seen["rand_kms1"] not in rands


def test_control_identity_only_modifier_lets_the_other_terminal_in(lab_network):
    """The same attack against a KMS whose modifier is the identity alone (a constant RANDRkms):
    B2's own TGK' is B1's, so the attack above would have caught that weakness."""
    lab_network.kms_service.modifier_rand = lambda: bytes(32)
    hits, rands, _seen_, _ = asyncio.run(_call_and_attack(lab_network))
    assert hits and set(rands) == {bytes(32)}


def test_two_terminals_one_impu_through_the_agents(agent_factory, lab_network) -> None:
    """Through the agents' sockets: Bob's two terminals both answer the forked offer; the caller
    completes with B1's answer; B2's keys are its own, not B1's (nor the caller's)."""
    from tests.fixtures.daemon import ALICE

    net = network_config(lab_network)
    ue_a = agent_factory(network=net)
    ue_b1 = agent_factory(subscriber=ALICE.parent / "bob.toml", network=net)
    ue_b2 = agent_factory(subscriber=ALICE.parent / "bob2.toml", network=net)
    with ue_a.client() as a, ue_b1.client() as b1, ue_b2.client() as b2:
        offer = a.request("mikey.offer", responder=uri("bob"))
        ans1 = b1.request("mikey.answer", transfer_init=offer["key_mgmt"])
        ans2 = b2.request("mikey.answer", transfer_init=offer["key_mgmt"])
        assert ans1["peer"] == ans2["peer"] == uri("alice")
        a.request("mikey.complete", session=offer["session"], transfer_resp=ans1["key_mgmt"])
        ka = a.request("session.keys", session=offer["session"])["streams"][0]
        k1 = b1.request("session.keys", session=ans1["session"])["streams"][0]
        k2 = b2.request("session.keys", session=ans2["session"])["streams"][0]
    assert ka["tx"] == k1["rx"] and ka["rx"] == k1["tx"]
    keys = {k["master_key"] for k in (ka["tx"], ka["rx"])}
    assert not keys & {k2["tx"]["master_key"], k2["rx"]["master_key"]}
