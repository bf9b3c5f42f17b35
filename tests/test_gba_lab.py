"""The lab HSS, the BSF's Ub logic (sans-IO) and Zn, and NafAuth over loopback HTTP."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import re

import aiohttp
import pytest
from aiohttp import web

from tests.fixtures.network import lab_subscriber
from ue_agent.crypto import digest
from ue_agent.crypto.kdf import UA_HTTP_DIGEST, UA_KMS, ks_naf, naf_id
from ue_agent.crypto.milenage import Milenage
from ue_agent.errors import GbaError
from ue_agent.lab.bsf import Bsf
from ue_agent.lab.hss import Hss
from ue_agent.lab.naf import NafAuth, peer_of
from ue_agent.secret import Secret

BSF = "bsf.ims.mnc001.mcc001.pub.3gppnetwork.org"
NAF = "kms.ims.mnc001.mcc001.3gppnetwork.org"


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def ue_milenage(sub) -> Milenage:
    return Milenage(sub.k.reveal(), sub.opc.reveal())


# --- HSS -----------------------------------------------------------------------------------------
def test_hss_issues_sqn_plus_one_onwards_and_valid_autn():
    alice = lab_subscriber("alice")
    hss = Hss([alice])
    mil = ue_milenage(alice)
    for expected in (alice.sqn + 1, alice.sqn + 2):
        av = hss.vector(alice.impi)
        assert av.sqn == expected
        res, ck, ik, ak, _ = mil.f2345(av.rand)
        sqn = bytes(a ^ b for a, b in zip(av.autn[:6], ak, strict=True))
        assert int.from_bytes(sqn, "big") == expected
        assert av.autn[6:8] == alice.amf
        assert av.autn[8:] == mil.f1(av.rand, sqn, alice.amf)[0]
        assert av.xres == res and av.ck == ck and av.ik == ik
        assert res.hex() not in repr(av) and ck.hex() not in repr(av)


def test_hss_resync_takes_sqn_ms_and_rejects_bad_mac_s():
    alice = lab_subscriber("alice")
    hss = Hss([alice])
    av = hss.vector(alice.impi)
    auts = ue_milenage(alice).auts(av.rand, (500).to_bytes(6, "big"))
    assert hss.resync(alice.impi, av.rand, auts) == 500
    assert hss.vector(alice.impi).sqn == 501
    bad = auts[:-1] + bytes([auts[-1] ^ 1])
    with pytest.raises(GbaError) as exc:
        hss.resync(alice.impi, av.rand, bad)
    assert exc.value.code == "gba.resync_failed"
    assert hss.sqn(alice.impi) == 501  # unchanged by the bad AUTS
    with pytest.raises(GbaError, match="14"):
        hss.resync(alice.impi, av.rand, auts[:10])


def test_hss_unknown_and_duplicate_users():
    alice = lab_subscriber("alice")
    with pytest.raises(GbaError) as exc:
        Hss([alice]).vector("nobody@x")
    assert exc.value.code == "gba.unknown_user"
    with pytest.raises(GbaError) as exc:
        Hss([alice, alice])
    assert exc.value.code == "gba.hss_duplicate"


# --- BSF (sans-IO) -------------------------------------------------------------------------------
def initial(impi: str) -> dict[str, str]:
    c = digest.Credentials(username=impi, realm=BSF, nonce="", uri="/", response="", algorithm="AKAv1-MD5")
    return {"Authorization": c.to_header()}


def answer(ch: digest.Challenge, impi: str, password: bytes, auts: bytes | None = None, **kw):
    c = digest.Credentials(
        username=impi,
        realm=ch.realm,
        nonce=ch.nonce,
        uri="/",
        response="",
        algorithm="AKAv1-MD5",
        qop="auth-int",
        nc="00000001",
        cnonce="c0ffee",
        opaque=ch.opaque,
        auts=base64.b64encode(auts).decode() if auts is not None else None,
    )
    c = dataclasses.replace(c, **kw)
    if "response" not in kw:
        c = dataclasses.replace(c, response=digest.compute_response(c, password, "GET"))
    return c, {"Authorization": c.to_header()}


def bootstrap_sans_io(bsf: Bsf, sub):
    r = bsf.handle("GET", "/", initial(sub.impi), b"")
    assert r.status == 401
    ch = digest.Challenge.parse(r.headers["WWW-Authenticate"])
    raw = base64.b64decode(ch.nonce)
    res, *_ = ue_milenage(sub).f2345(raw[:16])
    creds, headers = answer(ch, sub.impi, res)
    return bsf.handle("GET", "/", headers, b""), ch, creds, res, raw[:16]


def test_bsf_challenge_and_bootstrap_per_24109():
    alice = lab_subscriber("alice")
    clock = Clock()
    bsf = Bsf(Hss([alice]), BSF, lifetime_s=3600, clock=clock)
    r, ch, creds, res, rand = bootstrap_sans_io(bsf, alice)
    assert ch.realm == BSF and ch.algorithm == "AKAv1-MD5" and ch.qop == ("auth-int",) and ch.opaque
    assert len(base64.b64decode(ch.nonce)) == 32
    assert r.status == 200
    assert r.headers["Content-Type"] == "application/vnd.3gpp.bsf+xml"
    assert r.headers["Expires"].endswith("GMT")
    assert digest.verify_rspauth(r.headers["Authentication-Info"], creds, res, r.body)
    btid = f"{base64.b64encode(rand).decode()}@{BSF}"
    assert f"<btid>{btid}</btid>".encode() in r.body
    assert b"<lifetime>2023-11-14T23:13:20Z</lifetime>" in r.body  # clock + 3600 s, UTC "Z"
    assert b'xmlns="uri:3gpp-gba"' in r.body
    # Zn: Ks_NAF = KDF(CK||IK, "gba-me", RAND, IMPI, NAF_Id)
    _, ck, ik, _, _ = ue_milenage(alice).f2345(rand)
    impi, key = bsf.naf_key(btid, naf_id(NAF, UA_KMS))
    assert impi == alice.impi
    assert key == ks_naf(ck + ik, rand, alice.impi, naf_id(NAF, UA_KMS))
    assert key != bsf.naf_key(btid, naf_id(NAF, UA_HTTP_DIGEST))[1]
    assert (ck + ik).hex() not in repr(bsf.context(btid))


def test_bsf_wrong_response_is_403_and_nonce_is_single_use():
    alice = lab_subscriber("alice")
    bsf = Bsf(Hss([alice]), BSF)
    r = bsf.handle("GET", "/", initial(alice.impi), b"")
    ch = digest.Challenge.parse(r.headers["WWW-Authenticate"])
    _, headers = answer(ch, alice.impi, b"\x00" * 8)
    assert bsf.handle("GET", "/", headers, b"").status == 403
    assert bsf.btids == []
    # the same nonce again is no longer outstanding: a fresh (stale) challenge
    again = bsf.handle("GET", "/", headers, b"")
    assert again.status == 401 and "stale=true" in again.headers["WWW-Authenticate"]


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"username": "001010000000002@ims.mnc001.mcc001.3gppnetwork.org"}, "username"),
        ({"uri": "/other"}, "digest-uri"),
        ({"opaque": "forged"}, "opaque"),
        ({"realm": "other.example"}, "realm"),
    ],
)
def test_bsf_binds_the_answer_to_its_challenge(change, reason):
    alice, bob = lab_subscriber("alice"), lab_subscriber("bob")
    bsf = Bsf(Hss([alice, bob]), BSF)
    ch = digest.Challenge.parse(bsf.handle("GET", "/", initial(alice.impi), b"").headers["WWW-Authenticate"])
    res, *_ = ue_milenage(alice).f2345(base64.b64decode(ch.nonce)[:16])
    _, headers = answer(ch, alice.impi, res, **change)
    r = bsf.handle("GET", "/", headers, b"")
    assert r.status == 403 and reason.encode() in r.body


def test_bsf_resync_with_auts_then_new_challenge():
    alice = lab_subscriber("alice")
    hss = Hss([alice])
    bsf = Bsf(hss, BSF)
    ch = digest.Challenge.parse(bsf.handle("GET", "/", initial(alice.impi), b"").headers["WWW-Authenticate"])
    rand = base64.b64decode(ch.nonce)[:16]
    auts = ue_milenage(alice).auts(rand, (1000).to_bytes(6, "big"))
    _, headers = answer(ch, alice.impi, b"", auts=auts)
    r = bsf.handle("GET", "/", headers, b"")
    assert r.status == 401 and bsf.stats["resync"] == 1
    assert hss.sqn(alice.impi) == 1001  # the new challenge already used SQN_MS + 1
    # an AUTS whose response is over RES rather than the empty password is refused
    ch2 = digest.Challenge.parse(r.headers["WWW-Authenticate"])
    res, *_ = ue_milenage(alice).f2345(base64.b64decode(ch2.nonce)[:16])
    _, headers = answer(ch2, alice.impi, res, auts=auts)
    assert bsf.handle("GET", "/", headers, b"").status == 403


def test_bsf_refuses_auts_with_bad_mac_s():
    alice = lab_subscriber("alice")
    bsf = Bsf(Hss([alice]), BSF)
    ch = digest.Challenge.parse(bsf.handle("GET", "/", initial(alice.impi), b"").headers["WWW-Authenticate"])
    _, headers = answer(ch, alice.impi, b"", auts=b"\x01" * 14)
    r = bsf.handle("GET", "/", headers, b"")
    assert r.status == 403 and b"MAC-S" in r.body


@pytest.mark.parametrize(
    "method, path, headers, status",
    [
        ("GET", "/", {}, 400),
        ("GET", "/", {"Authorization": "Basic Zm9v"}, 400),
        ("GET", "/", {"Authorization": 'Digest username="x'}, 400),
        ("POST", "/", {}, 405),
        ("GET", "/bsf", {}, 404),
    ],
)
def test_bsf_bad_requests(method, path, headers, status):
    bsf = Bsf(Hss([lab_subscriber("alice")]), BSF)
    assert bsf.handle(method, path, headers, b"").status == status


def test_bsf_unknown_user_is_403():
    bsf = Bsf(Hss([lab_subscriber("alice")]), BSF)
    assert bsf.handle("GET", "/", initial("mallory@example.org"), b"").status == 403


def test_zn_unknown_and_expired_btid():
    alice = lab_subscriber("alice")
    clock = Clock()
    bsf = Bsf(Hss([alice]), BSF, lifetime_s=100, clock=clock)
    r, *_ = bootstrap_sans_io(bsf, alice)
    btid = re.search(rb"<btid>(.*)</btid>", r.body).group(1).decode()
    nid = naf_id(NAF, UA_KMS)
    with pytest.raises(GbaError) as exc:
        bsf.naf_key("AAAA@" + BSF, nid)
    assert exc.value.code == "gba.unknown_btid"
    clock.t += 99
    bsf.naf_key(btid, nid)
    clock.t += 1
    with pytest.raises(GbaError) as exc:
        bsf.naf_key(btid, nid)
    assert exc.value.code == "gba.btid_expired"
    with pytest.raises(GbaError) as exc:  # and it is gone
        bsf.naf_key(btid, nid)
    assert exc.value.code == "gba.unknown_btid"


# --- NafAuth over HTTP ---------------------------------------------------------------------------
async def _naf_server(naf_auth: NafAuth):
    async def handler(request: web.Request) -> web.Response:
        peer = peer_of(request)
        body = await request.read()
        return web.Response(body=b"hello " + peer.impi.encode() + b" " + body)

    app = web.Application(middlewares=[naf_auth.middleware()])
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


def _ua_answer(ch_header: str, btid: str, key: bytes, method: str, uri: str, body: bytes, nc: int = 1):
    ch = digest.Challenge.parse(ch_header)
    c = digest.Credentials(
        username=btid,
        realm=ch.realm,
        nonce=ch.nonce,
        uri=uri,
        response="",
        algorithm="MD5",
        qop="auth-int",
        nc=f"{nc:08x}",
        cnonce="abcdef",
    )
    password = base64.b64encode(key)
    return dataclasses.replace(c, response=digest.compute_response(c, password, method, body)), password


def _bootstrapped_bsf():
    alice = lab_subscriber("alice")
    bsf = Bsf(Hss([alice]), BSF)
    r, *_ = bootstrap_sans_io(bsf, alice)
    btid = re.search(rb"<btid>(.*)</btid>", r.body).group(1).decode()
    return bsf, btid, alice


def test_naf_auth_accepts_good_request_and_refuses_wrong_key_unknown_btid_and_replay():
    bsf, btid, alice = _bootstrapped_bsf()
    naf = NafAuth(bsf, NAF, UA_KMS)
    _, key = bsf.naf_key(btid, naf.naf_id)

    async def run():
        runner, base = await _naf_server(naf)
        try:
            # without the 3gpp-gba product token (TS 24.109 B.3) the NAF does not challenge
            no_token = {"User-Agent": "curl/8 (3gpp-gba)"}  # in a comment: not a product
            async with aiohttp.ClientSession(headers=no_token) as bare, bare.post(base + "/ticket") as r:
                assert r.status == 403 and "WWW-Authenticate" not in r.headers
            async with aiohttp.ClientSession(headers={"User-Agent": "some-ua/1.0 3gpp-gba/1"}) as http:
                body = b"MIKEY"
                async with http.post(base + "/ticket", data=body) as r:
                    assert r.status == 401
                    challenge = r.headers["WWW-Authenticate"]
                ch = digest.Challenge.parse(challenge)
                assert ch.realm == f"3GPP-bootstrapping@{NAF}" and ch.qop == ("auth-int",)

                creds, pw = _ua_answer(challenge, btid, key.reveal(), "POST", "/ticket", body)
                hdr = {"Authorization": creds.to_header()}
                async with http.post(base + "/ticket", data=body, headers=hdr) as r:
                    assert r.status == 200
                    got = await r.read()
                    assert got == b"hello " + alice.impi.encode() + b" MIKEY"
                    assert digest.verify_rspauth(r.headers["Authentication-Info"], creds, pw, got)

                # replay of exactly that request: refused with a fresh challenge
                async with http.post(base + "/ticket", data=body, headers=hdr) as r:
                    assert r.status == 401 and "stale=true" in r.headers["WWW-Authenticate"]
                assert naf.stats["replay"] == 1

                # the same nonce with the next nc is fine (one round trip per request)
                creds2, _ = _ua_answer(challenge, btid, key.reveal(), "POST", "/ticket", body, nc=2)
                async with http.post(
                    base + "/ticket", data=body, headers={"Authorization": creds2.to_header()}
                ) as r:
                    assert r.status == 200

                # body changed in flight (auth-int): 403
                creds3, _ = _ua_answer(challenge, btid, key.reveal(), "POST", "/ticket", body, nc=3)
                h3 = {"Authorization": creds3.to_header()}
                async with http.post(base + "/ticket", data=b"MIKEX", headers=h3) as r:
                    assert r.status == 403

                # wrong key: 403
                creds4, _ = _ua_answer(challenge, btid, b"\x00" * 32, "POST", "/ticket", body, nc=4)
                async with http.post(
                    base + "/ticket", data=body, headers={"Authorization": creds4.to_header()}
                ) as r:
                    assert r.status == 403

                # unknown B-TID: 401 with a fresh challenge (bootstrapping required), not 403
                creds5, _ = _ua_answer(challenge, "AAAA@" + BSF, key.reveal(), "POST", "/ticket", body, nc=5)
                async with http.post(
                    base + "/ticket", data=body, headers={"Authorization": creds5.to_header()}
                ) as r:
                    assert r.status == 401 and "stale" not in r.headers["WWW-Authenticate"]
                assert naf.stats["unknown_btid"] == 1

                # a nonce the NAF never issued: 401 stale
                forged = challenge.replace(ch.nonce, "Zm9yZ2Vk")
                creds6, _ = _ua_answer(forged, btid, key.reveal(), "POST", "/ticket", body)
                async with http.post(
                    base + "/ticket", data=body, headers={"Authorization": creds6.to_header()}
                ) as r:
                    assert r.status == 401

                # wrong realm or uri: 403
                creds7, _ = _ua_answer(challenge, btid, key.reveal(), "POST", "/other", body, nc=6)
                async with http.post(
                    base + "/ticket", data=body, headers={"Authorization": creds7.to_header()}
                ) as r:
                    assert r.status == 403
                async with http.post(base + "/ticket", data=body, headers={"Authorization": "Digest x"}) as r:
                    assert r.status == 400
        finally:
            await runner.cleanup()

    asyncio.run(run())
    assert key.reveal().hex() not in repr(naf.stats)


def test_naf_peer_repr_has_no_key():
    from ue_agent.lab.naf import NafPeer

    creds = digest.Credentials(username="b", realm="r", nonce="n", uri="/", response="")
    key = Secret(b"\x42" * 32, "Ks_NAF")
    peer = NafPeer(impi="i", btid="b", ks_naf=key, credentials=creds)
    assert "42424242" not in repr(peer) and "QkJC" not in repr(peer)
