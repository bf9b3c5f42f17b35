"""The shutdown count covers every key the agent held (issue 13): GBA's Ks and Ks_NAF, the
KMS client's tickets (MPKs, TGK), the key store's session keys, pending offers' keys. Each
kind is looked up where it lives and must be in the count; after the stop every one of
them is zero and the log's count is exactly how many there were.

Bounded: two in-process agents and the lab network on loopback, one MIKEY call, two SDES
exchanges.
"""

from __future__ import annotations

import base64
import os

from tests.fixtures.daemon import ALICE
from tests.fixtures.network import network_config

BOB = ALICE.parent / "bob.toml"
BOB_URI = "sip:bob@ims.mnc001.mcc001.3gppnetwork.org"


def test_shutdown_zeroizes_and_counts_every_key(agent_factory, lab_network) -> None:
    net = network_config(lab_network)
    ue_a, ue_b = agent_factory(network=net), agent_factory(subscriber=BOB, network=net)
    with ue_a.client() as a, ue_b.client() as b:
        offer = a.request("mikey.offer", responder=BOB_URI, media=["audio"])
        ans = b.request("mikey.answer", transfer_init=offer["key_mgmt"])
        a.request("mikey.complete", session=offer["session"], transfer_resp=ans["transfer_resp"])
        a.request("sdes.offer", media=["audio"])  # pending: its keys are held too
        peer = base64.b64encode(os.urandom(30)).decode()
        a.request("sdes.answer", offer=[[f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{peer}"]])

        agent = ue_a._daemon.agent
        held = {id(k): k for k in agent.held_keys()}
        network = agent.ctx.network
        gba, kms = network.gba, network.kms_client
        kinds = {
            "GBA Ks": [gba.state.ks],
            "Ks_NAF": list(gba._naf_keys.values()),
            "ticket keys": [k for t in kms._issued.values() for k in (t.mpk_i, t.tgk)],
            "session keys": agent.ctx.store.secrets(),
            "offer keys": [
                k
                for s in agent.ctx.sessions.sessions()
                if s.offer is not None and s.kind == "sdes"
                for st in s.offer.streams
                for suite in st.keys.values()
                for k in (suite.master_key, suite.master_salt)
            ],
        }
        for kind, keys in kinds.items():
            assert keys, f"no {kind} to look at"
            missing = [k for k in keys if id(k) not in held]
            assert not missing, f"{len(missing)} {kind} not in the shutdown count"
        # the connection stays open through the stop: the pending offer is the agent's to count
        assert ue_a.stop() == 0
    assert all(k.zeroized for k in held.values())
    line = next(ln for ln in ue_a.log_text().splitlines() if "keys zeroized" in ln)
    assert line.endswith(f"stopped: {len(held)} keys zeroized, 0 left"), (line, len(held))


def test_a_key_registered_twice_is_counted_once() -> None:
    """Shutdown adds every key the agent holds to the registry, the ones already registered
    (a conference's update keys) included: each is zeroized and counted once."""
    from ue_agent.ops.context import KeyRegistry
    from ue_agent.secret import Secret

    reg, key, other = KeyRegistry(), Secret(b"k" * 16, "test"), Secret(b"o" * 16, "test")
    reg.add(key)
    reg.add(key, other, None)
    assert reg.live() == [key, other]
    assert reg.zeroize_all() == (2, 0)
    assert key.zeroized and other.zeroized
