"""GbaClient and NafClient end to end: soft UICC (real card layer) <-> loopback HTTP <-> lab BSF/NAF."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
import socket

import pytest
from aiohttp import web  # the test servers only; the clients use ue_agent.drivers.http

from tests.fixtures.network import lab_subscriber, lab_subscribers
from ue_agent.card.results import AkaSuccess
from ue_agent.crypto.kdf import UA_HTTP_DIGEST, UA_KMS, ks_naf, naf_id
from ue_agent.drivers.http import HttpClient
from ue_agent.errors import AgentError, GbaError
from ue_agent.gba.client import GbaClient
from ue_agent.gba.naf_client import NafClient
from ue_agent.lab.card_ops import SoftCardOps
from ue_agent.lab.naf import peer_of
from ue_agent.lab.network import LabNetwork, LabNetworkThread
from ue_agent.secret import Secret


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def client_for(net: LabNetwork, http, name: str = "alice", ops=None, **kw) -> GbaClient:
    sub = lab_subscriber(name)
    ops = ops or SoftCardOps(sub)
    return GbaClient(ops, net.bsf_url, net.bsf_fqdn, sub.impi, http, gba_u=sub.gba_u, **kw)


def run(coro):
    return asyncio.run(coro)


async def with_http(fn):
    async with HttpClient() as http:
        return await fn(http)


# --- bootstrapping -------------------------------------------------------------------------------
def test_gba_me_bootstrap_end_to_end(lab_network):
    events = []

    async def go(http):
        ops = SoftCardOps(lab_subscriber("alice"))
        gba = client_for(lab_network, http, ops=ops, on_event=lambda k, i: events.append((k, i)))
        st = await gba.bootstrap()
        assert st.btid.endswith("@" + lab_network.bsf_fqdn)
        assert base64.b64decode(st.btid.split("@")[0]) == st.rand
        assert st.lifetime_text.endswith("Z") and st.ks is not None and len(st.ks) == 32
        assert await gba.bootstrap() is st  # still valid: no new run
        assert gba.runs == 1 and lab_network.requests["bsf"] == 2
        assert lab_network.bsf.btids == [st.btid]
        # the card really ran AKA on the HSS's SQN
        assert ops.uicc.highest_sqn == lab_subscriber("alice").sqn + 1
        return st

    st = run(with_http(go))
    assert events == [("bootstrap", {"ok": True, **st.to_info()})]
    assert "ks" not in events[0][1] and st.ks.reveal().hex() not in repr(events)


def test_ks_naf_for_the_kms_equal_on_both_sides(lab_network):
    async def go(http):
        gba = client_for(lab_network, http)
        btid, key = await gba.ks_naf(lab_network.kms_fqdn, UA_KMS)
        impi, bsf_key = lab_network.bsf.naf_key(btid, naf_id(lab_network.kms_fqdn, UA_KMS))
        assert impi == lab_subscriber("alice").impi
        assert key == bsf_key and len(key) == 32
        # independently: KDF over Ks = CK||IK from Milenage
        st = gba.state
        assert key == ks_naf(st.ks.reveal(), st.rand, impi, naf_id(lab_network.kms_fqdn, UA_KMS))
        # another Ua protocol id is another key
        _, other = await gba.ks_naf(lab_network.kms_fqdn, UA_HTTP_DIGEST)
        assert other != key

    run(with_http(go))


def test_gba_u_ks_stays_on_card_and_ks_ext_naf_matches_bsf(lab_network):
    async def go(http):
        bob = lab_subscriber("bob")
        assert bob.gba_u
        ops = SoftCardOps(bob)
        gba = client_for(lab_network, http, "bob", ops=ops)
        st = await gba.bootstrap()
        assert st.gba_u and st.ks is None  # Ks never left the card
        btid, key = await gba.ks_naf(lab_network.kms_fqdn, UA_KMS)
        assert btid == st.btid
        _, bsf_key = lab_network.bsf.naf_key(btid, naf_id(lab_network.kms_fqdn, UA_KMS))
        assert key == bsf_key
        # the card keeps Ks_int_NAF for the same NAF_Id
        assert ops.uicc.held_ks_int_naf(naf_id(lab_network.kms_fqdn, UA_KMS)) is not None

    run(with_http(go))


def test_resync_when_card_sqn_is_ahead(lab_network):
    async def go(http):
        alice = lab_subscriber("alice")
        ahead = dataclasses.replace(alice, sqn=alice.sqn + 1000)
        ops = SoftCardOps(ahead)
        events = []
        gba = client_for(lab_network, http, ops=ops, on_event=lambda k, i: events.append(i))
        st = await gba.bootstrap()
        assert st.resynchronised and events[0]["resynchronised"]
        assert lab_network.bsf.stats["resync"] == 1
        assert lab_network.hss.sqn(alice.impi) == ahead.sqn + 1 == ops.uicc.highest_sqn
        # initial, AUTS, answer to the new challenge
        assert lab_network.requests["bsf"] == 3

    run(with_http(go))


# --- faults: each with its code, nothing kept -----------------------------------------------------
def _assert_nothing_kept(gba: GbaClient, events: list):
    assert gba.state is None and gba.runs == 0
    assert events and events[-1]["ok"] is False


@pytest.mark.parametrize(
    "fault, value, code, bsf_requests",
    [
        ("bsf_status", 503, "gba.bsf_error", 1),
        ("bsf_status", 500, "gba.bsf_error", 1),
        ("bsf_malformed_xml", True, "gba.bad_response", 2),
        ("bsf_wrong_realm", True, "gba.wrong_realm", 1),
        ("bsf_down", True, "gba.bsf_unreachable", None),  # a GET may be resent once on a new connection
    ],
)
def test_bsf_faults(lab_network, fault, value, code, bsf_requests):
    setattr(lab_network.faults, fault, value)
    events = []

    async def go(http):
        gba = client_for(lab_network, http, on_event=lambda k, i: events.append(i))
        with pytest.raises(GbaError) as exc:
            await gba.bootstrap()
        assert exc.value.code == code
        _assert_nothing_kept(gba, events)
        assert events[-1]["code"] == code
        # the fault cleared, the same client bootstraps
        lab_network.faults.clear()
        assert (await gba.bootstrap()).btid

    run(with_http(go))
    if bsf_requests is not None:
        assert lab_network.requests["bsf"] == bsf_requests + 2


def test_bsf_not_listening_is_unreachable():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now

    async def go(http):
        sub = lab_subscriber("alice")
        gba = GbaClient(SoftCardOps(sub), f"http://127.0.0.1:{port}/", "bsf.example", sub.impi, http)
        with pytest.raises(GbaError) as exc:
            await gba.bootstrap()
        assert exc.value.code == "gba.bsf_unreachable" and exc.value.details["url"].endswith(f"{port}/")
        assert gba.state is None

    run(with_http(go))


def test_bsf_silent_is_bounded_by_the_timeout():
    """A BSF that accepts and never answers: the client gives up after its timeout."""

    async def go(http):
        never = asyncio.Event()

        async def hang(request):
            await never.wait()

        app = web.Application()
        app.router.add_get("/", hang)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        sub = lab_subscriber("alice")
        gba = GbaClient(
            SoftCardOps(sub), f"http://{host}:{port}/", "bsf.example", sub.impi, http, timeout_s=0.2
        )
        try:
            with pytest.raises(GbaError) as exc:
                await gba.bootstrap()
            assert exc.value.code == "gba.bsf_unreachable"
        finally:
            never.set()
            await runner.cleanup()

    run(with_http(go))


def test_mac_failure_when_hss_has_a_wrong_key():
    alice = lab_subscriber("alice")
    impostor = dataclasses.replace(alice, k=Secret(bytes(16), "K"))
    with LabNetworkThread(LabNetwork([impostor])) as net:
        events = []

        async def go(http):
            gba = client_for(net, http, on_event=lambda k, i: events.append(i))
            with pytest.raises(GbaError) as exc:
                await gba.bootstrap()
            assert exc.value.code == "gba.network_auth_failed"
            _assert_nothing_kept(gba, events)

        run(with_http(go))
        # nothing was sent in answer to the unauthenticated challenge
        assert net.requests["bsf"] == 1 and net.bsf.stats["reject"] == 0 and net.bsf.btids == []


class WrongRes(SoftCardOps):
    """The real card, with RES corrupted on the way out (a UE the BSF must refuse)."""

    async def authenticate(self, rand, autn):
        out = await super().authenticate(rand, autn)
        assert isinstance(out, AkaSuccess)
        out.res = Secret(bytes(len(out.res)), "RES")
        return out


def test_wrong_response_is_auth_rejected(lab_network):
    async def go(http):
        gba = client_for(lab_network, http, ops=WrongRes(lab_subscriber("alice")))
        with pytest.raises(GbaError) as exc:
            await gba.bootstrap()
        assert exc.value.code == "gba.auth_rejected"
        assert gba.state is None and lab_network.bsf.btids == []

    run(with_http(go))


def test_card_errors_pass_through_and_keep_nothing(lab_network):
    async def go(http):
        ops = SoftCardOps(lab_subscriber("alice"))
        ops.uicc.inject_sw(0x6F00)
        gba = client_for(lab_network, http, ops=ops)
        with pytest.raises(AgentError) as exc:
            await gba.bootstrap()
        assert exc.value.code.startswith("card.")
        assert gba.state is None

    run(with_http(go))


# --- lifetime ------------------------------------------------------------------------------------
def test_btid_expiry_and_renewal():
    import time

    clock = Clock(time.time())
    with LabNetworkThread(LabNetwork(lab_subscribers(), lifetime_s=600, clock=clock)) as net:

        async def go(http):
            gba = client_for(net, http, clock=clock, renew_margin_s=60)
            first = await gba.bootstrap()
            clock.t += 500  # 100 s left: more than the margin
            assert await gba.bootstrap() is first
            clock.t += 45  # 55 s left: renewed before it ends
            second = await gba.bootstrap()
            assert second.btid != first.btid and gba.runs == 2
            assert first.ks.zeroized  # the old Ks is gone from memory
            clock.t += 600  # past the end: dropped, on both sides
            assert gba.state is None
            with pytest.raises(GbaError) as exc:
                net.bsf.naf_key(second.btid, naf_id(net.kms_fqdn, UA_KMS))
            assert exc.value.code == "gba.btid_expired"
            third = await gba.bootstrap()
            assert third.btid not in (first.btid, second.btid)
            assert (await gba.bootstrap(force=True)).btid != third.btid

        run(with_http(go))


def test_concurrent_callers_share_one_run(lab_network):
    async def go(http):
        gba = client_for(lab_network, http)
        states = await asyncio.gather(*(gba.bootstrap() for _ in range(5)))
        assert all(s is states[0] for s in states) and gba.runs == 1

    run(with_http(go))


# --- Ua: NafClient against NafAuth ----------------------------------------------------------------
@contextlib.asynccontextmanager
async def kms_like(net: LabNetwork, outer=()):
    """A NAF app protected by the network's NafAuth (what the KMS does), on its own listener.

    Yields (url, seen): ``seen`` collects (impi, btid, body) of each authenticated request.
    """
    seen = []

    async def handler(request):
        peer = peer_of(request)
        body = await request.read()
        seen.append((peer.impi, peer.btid, body))
        return web.Response(body=b"ok:" + body, content_type="application/mikey")

    app = web.Application(middlewares=[*outer, net.naf_auth.middleware()])
    app.router.add_post("/kms/ticket", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}/kms/ticket", seen
    finally:
        await runner.cleanup()


def test_naf_client_request_and_nonce_reuse(lab_network):
    async def go(http):
        async with kms_like(lab_network) as (url, seen):
            gba = client_for(lab_network, http)
            naf = NafClient(gba, http)
            fqdn = lab_network.kms_fqdn
            r = await naf.request("POST", url, b"REQUEST_INIT", "application/mikey", fqdn)
            assert r.status == 200 and r.body == b"ok:REQUEST_INIT" and r.authenticated
            assert naf.sent[fqdn] == 2  # challenge, then the answer
            assert seen == [(lab_subscriber("alice").impi, gba.state.btid, b"REQUEST_INIT")]
            r = await naf.request("POST", url, b"RESOLVE_INIT", "application/mikey", fqdn)
            assert r.status == 200 and naf.sent[fqdn] == 3  # cached nonce, nc=2: one round trip
            assert lab_network.naf_auth.stats["replay"] == 0

    run(with_http(go))


def test_naf_client_challenge_caches_only_a_usable_challenge(lab_network):
    """NafClient.challenge: a request with no credentials and no body (TS 24.109 B.3 steps 1-2);
    the challenge is kept only when it is the NAF's 3GPP-bootstrapping one."""

    async def go(http):
        async with kms_like(lab_network) as (url, seen):
            naf = NafClient(client_for(lab_network, http), http)
            fqdn = lab_network.kms_fqdn
            assert await naf.challenge("POST", url, fqdn) is True and naf.knows(fqdn.upper())
            assert seen == [] and naf.sent[fqdn] == 1  # refused before the handler
            r = await naf.request("POST", url, b"REQUEST_INIT", "application/mikey", fqdn)
            assert r.status == 200 and r.authenticated and naf.sent[fqdn] == 2  # answered at once
            # a challenge for another realm is not this name's: nothing kept, no error
            assert await naf.challenge("POST", url, "other.example") is False
            assert not naf.knows("other.example")

    run(with_http(go))


def test_naf_client_picks_its_challenge_among_repeated_www_authenticate(lab_network):
    """A NAF offering other schemes and realms first (RFC 7235 4.1): the client answers the
    3GPP-bootstrapping Digest challenge."""
    from multidict import CIMultiDict

    @web.middleware
    async def more_challenges(request, handler):
        try:
            return await handler(request)
        except web.HTTPUnauthorized as exc:
            hdrs = CIMultiDict()
            hdrs.add("WWW-Authenticate", 'Basic realm="legacy"')
            hdrs.add("WWW-Authenticate", 'Digest realm="other@kms", nonce="n", qop="auth-int"')
            for value in exc.headers.getall("WWW-Authenticate"):
                hdrs.add("WWW-Authenticate", value)
            raise web.HTTPUnauthorized(headers=hdrs) from None

    async def go(http):
        async with kms_like(lab_network, outer=[more_challenges]) as (url, seen):
            naf = NafClient(client_for(lab_network, http), http)
            r = await naf.request("POST", url, b"REQUEST_INIT", "application/mikey", lab_network.kms_fqdn)
            assert r.status == 200 and r.authenticated and len(seen) == 1

    run(with_http(go))


def test_oversized_bsf_answer_is_a_bad_response():
    async def huge(request):
        return web.Response(status=401, body=b"x" * (70 * 1024))

    async def go(http):
        app = web.Application()
        app.router.add_get("/", huge)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        sub = lab_subscriber("alice")
        gba = GbaClient(SoftCardOps(sub), f"http://{host}:{port}/", "bsf.example", sub.impi, http)
        try:
            with pytest.raises(GbaError) as exc:
                await gba.bootstrap()
            assert exc.value.code == "gba.bad_response"
        finally:
            await runner.cleanup()

    run(with_http(go))


def test_naf_client_rebootstraps_once_on_unknown_btid(lab_network):
    async def go(http):
        async with kms_like(lab_network) as (url, seen):
            gba = client_for(lab_network, http)
            naf = NafClient(gba, http)
            fqdn = lab_network.kms_fqdn
            await naf.request("POST", url, b"one", "application/mikey", fqdn)
            old = gba.state.btid
            lab_network.bsf.forget(old)  # the network lost the bootstrapping context
            r = await naf.request("POST", url, b"two", "application/mikey", fqdn)
            assert r.status == 200 and gba.runs == 2 and gba.state.btid != old
            assert seen[-1][1] == gba.state.btid
            assert lab_network.naf_auth.stats["unknown_btid"] == 1

    run(with_http(go))


def test_naf_client_gives_up_when_the_naf_never_accepts(lab_network):
    async def go(http):
        async with kms_like(lab_network) as (url, _):
            gba = client_for(lab_network, http)
            naf = NafClient(gba, http)
            # the NAF's Zn lookup fails for every B-TID (e.g. another BSF): 401 each time
            lab_network.naf_auth.bsf = type(
                "NoBsf",
                (),
                {"naf_key": staticmethod(lambda *a: (_ for _ in ()).throw(GbaError("gba.unknown_btid")))},
            )()
            with pytest.raises(GbaError) as exc:
                await naf.request("POST", url, b"x", "application/mikey", lab_network.kms_fqdn)
            assert exc.value.code == "gba.naf_unauthorized" and gba.runs == 2

    run(with_http(go))


def test_naf_client_wrong_realm_and_bad_rspauth(lab_network):
    async def go(http):
        async def wrong_realm(request):
            return web.Response(
                status=401, headers={"WWW-Authenticate": 'Digest realm="evil", nonce="n", qop="auth-int"'}
            )

        async def forged_ok(request):
            return web.Response(body=b"x", headers={"Authentication-Info": 'rspauth="00", qop=auth-int'})

        app = web.Application()
        app.router.add_post("/realm", wrong_realm)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        try:
            gba = client_for(lab_network, http)
            naf = NafClient(gba, http)
            with pytest.raises(GbaError) as exc:
                await naf.request("POST", f"http://{host}:{port}/realm", b"x", "a/b", "kms.example")
            assert exc.value.code == "gba.wrong_realm"
        finally:
            await runner.cleanup()

        # a NAF that answers 200 with an rspauth that does not verify
        app2 = web.Application()
        app2.router.add_post("/kms/ticket", forged_ok)
        async with kms_like(lab_network) as (url, _):
            gba = client_for(lab_network, http)
            naf = NafClient(gba, http)
            fqdn = lab_network.kms_fqdn
            await naf.request("POST", url, b"x", "a/b", fqdn)  # learn a nonce from the real NAF
        r2 = web.AppRunner(app2, access_log=None)
        await r2.setup()
        s2 = web.TCPSite(r2, "127.0.0.1", 0)
        await s2.start()
        h2, p2 = r2.addresses[0][:2]
        try:
            with pytest.raises(GbaError) as exc:
                await naf.request("POST", f"http://{h2}:{p2}/kms/ticket", b"x", "a/b", fqdn)
            assert exc.value.code == "gba.naf_auth_failed"
        finally:
            await r2.cleanup()

    run(with_http(go))


def test_naf_unreachable(lab_network):
    async def go(http):
        gba = client_for(lab_network, http)
        lab_network.faults.kms_down = True
        with pytest.raises(GbaError) as exc:
            await NafClient(gba, http).request("POST", lab_network.kms_url + "/x", b"x", "a/b", "kms")
        assert exc.value.code == "gba.naf_unreachable"

    run(with_http(go))


# --- secrets ---------------------------------------------------------------------------------------
def test_no_key_material_in_logs_reprs_or_events(lab_network, caplog):
    caplog.set_level(logging.DEBUG)
    events = []

    async def go(http):
        async with kms_like(lab_network) as (url, _):
            gba = client_for(lab_network, http, on_event=lambda k, i: events.append(i))
            naf = NafClient(gba, http)
            await naf.request("POST", url, b"x", "a/b", lab_network.kms_fqdn)
            st = gba.state
            _, key = await gba.ks_naf(lab_network.kms_fqdn, UA_KMS)
            return st, key

    st, key = run(with_http(go))
    ks = st.ks.reveal()
    needles = [ks.hex(), ks[:16].hex(), key.reveal().hex(), base64.b64encode(key.reveal()).decode()]
    haystack = caplog.text + repr(st) + repr(events) + repr(lab_network.bsf.context(st.btid)) + str(key)
    for needle in needles:
        assert needle not in haystack
