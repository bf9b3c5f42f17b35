"""APDUs per GBA bootstrap and renewal, counted on the real card layer over a soft UICC.

The counts are the card layer's contract (issue 14): a GBA_U renewal is one AUTHENTICATE
(GBA bootstrapping) and one UPDATE BINARY of EF_GBABP -- its FCP read once per card, not
selected again while it is still the current EF --, the first bootstrap adds one SELECT of
EF_GBABP with its FCP; Ks_ext_NAF is derived once per (B-TID, NAF_Id). GBA_ME stays at the
AUTHENTICATE alone. On T=0 every command with response data costs a GET RESPONSE too.
Counts, not timing: they are asserted exactly.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.fixtures.network import lab_subscriber
from ue_agent.card import ef
from ue_agent.crypto.kdf import UA_HTTP_DIGEST, UA_KMS
from ue_agent.drivers.http import HttpClient
from ue_agent.gba.client import GbaClient
from ue_agent.lab.card_ops import SoftCardOps
from ue_agent.lab.network import LabNetwork

#: (first bootstrap, renewal, first Ks_ext_NAF per B-TID and NAF) per T=0 / T=1
GBA_U = {True: (5, 3, 2), False: (3, 2, 1)}
GBA_ME = {True: 2, False: 1}


def _gbabp(ops: SoftCardOps) -> bytes:
    isim = next(a for a in ops.uicc.adfs if ef.FID_ISIM_GBABP in a.files)
    return bytes(isim.files[ef.FID_ISIM_GBABP].data)


def _run(net: LabNetwork, name: str, t0: bool, steps):
    sub = lab_subscriber(name)
    ops = SoftCardOps(sub, t0=t0)
    ops.card.identities()  # the daemon reads them at start; not part of a bootstrap

    async def go():
        async with HttpClient() as http:
            gba = GbaClient(ops, net.bsf_url, net.bsf_fqdn, sub.impi, http, gba_u=sub.gba_u)
            return [await step(gba, ops) for step in steps]

    return asyncio.run(go())


def _count(fn):
    async def step(gba: GbaClient, ops: SoftCardOps) -> int:
        before = ops.card.apdu_count
        await fn(gba, ops)
        return ops.card.apdu_count - before

    return step


@pytest.mark.parametrize("t0", [True, False], ids=["T0", "T1"])
def test_gba_u_bootstrap_renewal_and_naf_counts(lab_network: LabNetwork, t0: bool) -> None:
    first, renewal, naf = GBA_U[t0]
    kms = lab_network.kms_fqdn

    async def bootstrap(gba, ops):
        await gba.bootstrap()

    async def renew(gba, ops):
        await gba.bootstrap(force=True)

    async def ks_kms(gba, ops):
        await gba.ks_naf(kms, UA_KMS)

    async def ks_other(gba, ops):
        await gba.ks_naf(kms, UA_HTTP_DIGEST)

    counts = _run(
        lab_network,
        "bob",
        t0,
        [_count(bootstrap), _count(ks_kms), _count(ks_kms), _count(ks_other), _count(renew), _count(ks_kms)]
        + [_count(renew), _count(renew)],
    )
    assert counts == [first, naf, 0, naf, renewal, naf, renewal, renewal]


def test_gba_me_renewal_stays_at_the_authenticate(lab_network: LabNetwork) -> None:
    async def boot(gba, ops):
        await gba.bootstrap(force=True)
        await gba.ks_naf(lab_network.kms_fqdn, UA_KMS)  # GBA_ME: derived in the ME, no APDU

    for t0 in (True, False):
        assert _run(lab_network, "alice", t0, [_count(boot)] * 3) == [GBA_ME[t0]] * 3


def test_gba_u_renewal_writes_a_well_formed_ef_gbabp(lab_network: LabNetwork) -> None:
    """Only the bytes that can differ are written, yet the EF reads as if fully rewritten:
    the current bootstrap's LVs, then 'FF' to the end (a shorter B-TID leaves no tail)."""

    async def check(gba, ops):
        st = await gba.bootstrap(force=True)
        data = _gbabp(ops)
        body = ef.encode_gbabp(st.rand, st.btid, st.lifetime_text)
        assert data == body + b"\xff" * (len(data) - len(body))
        await gba.ks_naf(lab_network.kms_fqdn, UA_KMS)  # the card accepts it for derivation
        return len(body)

    async def shorter(gba, ops):
        # the same RAND and lifetime, a shorter B-TID than the BSF's
        st = gba.state
        await asyncio.to_thread(ops.card.store_gba_bootstrap, st.rand, "x@bsf", st.lifetime_text)
        data = _gbabp(ops)
        body = ef.encode_gbabp(st.rand, "x@bsf", st.lifetime_text)
        assert data == body + b"\xff" * (len(data) - len(body))

    _run(lab_network, "bob", True, [check, check, shorter])


def test_gba_u_unchanged_ef_gbabp_is_not_rewritten_and_a_moved_selection_is_noticed(
    lab_network: LabNetwork,
) -> None:
    async def same_twice(gba, ops):
        st = await gba.bootstrap()
        before = ops.card.apdu_count
        await asyncio.to_thread(ops.card.store_gba_bootstrap, st.rand, st.btid, st.lifetime_text)
        assert ops.card.apdu_count == before  # nothing changed: nothing sent

    async def after_other_select(gba, ops):
        # something else selected another EF of the ISIM: EF_GBABP is selected again (no FCP)
        await asyncio.to_thread(ops.card._select_app_ef, ef.FID_ISIM_GBANL, "EF_GBANL")
        before = ops.card.apdu_count
        await gba.bootstrap(force=True)
        return ops.card.apdu_count - before

    async def after_refresh(gba, ops):
        ops.card.refresh()  # a card reset: size, selection and content are all re-learnt
        await asyncio.to_thread(ops.card.identities)
        before = ops.card.apdu_count
        await gba.bootstrap(force=True)
        return ops.card.apdu_count - before

    _, moved, refreshed = _run(lab_network, "bob", True, [same_twice, after_other_select, after_refresh])
    assert moved == GBA_U[True][1] + 1  # + SELECT EF_GBABP without FCP
    assert refreshed == GBA_U[True][0]
