"""The sans-IO Ub session: what it sends, what each BSF answer means, BootstrappingInfo parsing."""

from __future__ import annotations

import base64
import os
import socket
from datetime import UTC, datetime

import pytest

from tests.fixtures.network import lab_subscriber
from ue_agent.card.results import AkaMacFailure, AkaSuccess, AkaSyncFailure, GbaBootstrapRes
from ue_agent.crypto import digest
from ue_agent.crypto.milenage import Milenage
from ue_agent.errors import GbaError
from ue_agent.gba.ub import (
    CardChallenge,
    UbSession,
    parse_bootstrapping_info,
    user_agent,
)
from ue_agent.lab.bsf import Bsf
from ue_agent.lab.hss import Hss
from ue_agent.secret import Secret

BSF = "bsf.ims.mnc001.mcc001.pub.3gppnetwork.org"
XML = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<BootstrappingInfo xmlns="uri:3gpp-gba">'
    b"<btid>I1U8vpY3qJ0hiuZNrke/NQ==@bsf.home1.net</btid><lifetime>2030-01-01T12:00:00Z</lifetime>"
    b"</BootstrappingInfo>"
)


def card(sub, rand: bytes, autn: bytes):
    """The UE side of AKA written out with Milenage (the soft UICC's job, here inline)."""
    mil = Milenage(sub.k.reveal(), sub.opc.reveal())
    res, ck, ik, _, _ = mil.f2345(rand)
    return AkaSuccess(Secret(res), Secret(ck), Secret(ik))


def challenged(bsf: Bsf, sub, gba_u: bool = False):
    s = UbSession(sub.impi, BSF, gba_u, now=lambda: 1_700_000_000.0)
    req = s.start()
    r = bsf.handle(req.method, "/", req.headers, req.body)
    return s, s.receive(r.status, r.headers, r.body)


def test_initial_request_per_24109_a3():
    s = UbSession("user1_private@home1.net", "BSF.home1.net")
    req = s.start()
    assert req.method == "GET" and req.body == b""
    assert "3gpp-gba-tmpi" in req.headers["User-Agent"].split()
    c = digest.Credentials.parse(req.headers["Authorization"])
    assert (c.username, c.realm, c.nonce, c.uri, c.response) == (
        "user1_private@home1.net", "bsf.home1.net", "", "/", "")  # fmt: skip
    assert user_agent(True).split()[1:] == ["3gpp-gba-tmpi", "3gpp-gba-uicc"]
    with pytest.raises(GbaError) as exc:
        s.start()
    assert exc.value.code == "gba.protocol"


def test_full_run_gba_me_against_lab_bsf():
    alice = lab_subscriber("alice")
    bsf = Bsf(Hss([alice]), BSF, clock=lambda: 1_700_000_000.0)
    s, step = challenged(bsf, alice)
    assert isinstance(step, CardChallenge) and len(step.rand) == 16 and len(step.autn) == 16
    outcome = card(alice, step.rand, step.autn)
    ck, ik = outcome.ck.reveal(), outcome.ik.reveal()
    req = s.card_result(outcome)
    assert outcome.res.zeroized  # copied into the session, card result wiped
    c = digest.Credentials.parse(req.headers["Authorization"])
    assert c.qop == "auth-int" and c.nc == "00000001" and c.algorithm == "AKAv1-MD5" and c.auts is None
    r = bsf.handle("GET", "/", req.headers, b"")
    done = s.receive(r.status, r.headers, r.body)
    assert done.btid == f"{base64.b64encode(step.rand).decode()}@{BSF}"
    assert done.ks == ck + ik and done.rand == step.rand and not done.gba_u
    assert done.lifetime == datetime(2023, 11, 14, 23, 13, 20, tzinfo=UTC)
    assert ck.hex() not in repr(done)
    assert s.state == "done"


def test_gba_u_sends_res_and_keeps_no_ks():
    bob = lab_subscriber("bob")
    bsf = Bsf(Hss([bob]), BSF)
    s, step = challenged(bsf, bob, gba_u=True)
    res = card(bob, step.rand, step.autn).res
    r = bsf.handle("GET", "/", s.card_result(GbaBootstrapRes(res)).headers, b"")
    done = s.receive(r.status, r.headers, r.body)
    assert done.gba_u and done.ks is None
    # an ME-style outcome in GBA_U mode is a protocol error
    s2, step2 = challenged(bsf, bob, gba_u=True)
    with pytest.raises(GbaError) as exc:
        s2.card_result(card(bob, step2.rand, step2.autn))
    assert exc.value.code == "gba.protocol"


def test_mac_failure_sends_nothing():
    alice = lab_subscriber("alice")
    s, _ = challenged(Bsf(Hss([alice]), BSF), alice)
    with pytest.raises(GbaError) as exc:
        s.card_result(AkaMacFailure())
    assert exc.value.code == "gba.network_auth_failed" and s.state == "failed"


def test_sync_failure_once_then_sync_failed():
    alice = lab_subscriber("alice")
    bsf = Bsf(Hss([alice]), BSF)
    s, step = challenged(bsf, alice)
    mil = Milenage(alice.k.reveal(), alice.opc.reveal())
    req = s.card_result(AkaSyncFailure(mil.auts(step.rand, (900).to_bytes(6, "big"))))
    c = digest.Credentials.parse(req.headers["Authorization"])
    assert len(c.auts) == 20 and digest.verify_response(c, b"", "GET")
    r = bsf.handle("GET", "/", req.headers, b"")
    step2 = s.receive(r.status, r.headers, r.body)
    assert isinstance(step2, CardChallenge)
    with pytest.raises(GbaError) as exc:
        s.card_result(AkaSyncFailure(b"\x00" * 14))
    assert exc.value.code == "gba.sync_failed"


def _ready_session():
    alice = lab_subscriber("alice")
    bsf = Bsf(Hss([alice]), BSF, clock=lambda: 1_700_000_000.0)
    s, step = challenged(bsf, alice)
    req = s.card_result(card(alice, step.rand, step.autn))
    r = bsf.handle("GET", "/", req.headers, b"")
    assert r.status == 200
    return s, r


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda h, b: (h | {"Authentication-Info": ""}, b), "without Authentication-Info"),
        (lambda h, b: (h, b.replace(b"bsf.ims", b"bsf.evil")), "rspauth"),
        (lambda h, b: (h | {"Content-Type": "text/xml"}, b), "content type"),
    ],
)
def test_bad_200_answers(mutate, match):
    s, r = _ready_session()
    headers, body = mutate(dict(r.headers), r.body)
    with pytest.raises(GbaError, match=match) as exc:
        s.receive(200, headers, body)
    assert exc.value.code == "gba.bad_response" and s.state == "failed"


def test_lifetime_already_over_is_refused():
    alice = lab_subscriber("alice")
    bsf = Bsf(Hss([alice]), BSF, lifetime_s=10, clock=lambda: 1_700_000_000.0)
    s = UbSession(alice.impi, BSF, now=lambda: 1_700_000_010.0)
    req = s.start()
    r = bsf.handle("GET", "/", req.headers, b"")
    step = s.receive(r.status, r.headers, r.body)
    r = bsf.handle("GET", "/", s.card_result(card(alice, step.rand, step.autn)).headers, b"")
    with pytest.raises(GbaError, match="lifetime"):
        s.receive(r.status, r.headers, r.body)


@pytest.mark.parametrize(
    "status, headers, code",
    [
        (401, {}, "gba.bad_response"),
        (401, {"WWW-Authenticate": "Basic realm=x"}, "gba.bad_response"),
        (
            401,
            {
                "www-authenticate": f'Digest realm="other.example", nonce="{"A" * 44}", qop="auth-int", '
                "algorithm=AKAv1-MD5"
            },
            "gba.wrong_realm",
        ),  # fmt: skip
        (
            401,
            {"WWW-Authenticate": f'Digest realm="{BSF}", nonce="{"A" * 44}", qop="auth-int"'},
            "gba.bad_response",
        ),
        (
            401,
            {"WWW-Authenticate": f'Digest realm="{BSF}", nonce="{"A" * 44}", algorithm=AKAv1-MD5'},
            "gba.bad_response",
        ),  # fmt: skip
        (
            401,
            {"WWW-Authenticate": f'Digest realm="{BSF}", nonce="QUJD", qop="auth-int", algorithm=AKAv1-MD5'},
            "gba.bad_response",
        ),  # fmt: skip
        (
            401,
            {"WWW-Authenticate": f'Digest realm="{BSF}", nonce="!!", qop="auth-int", algorithm=AKAv1-MD5'},
            "gba.bad_response",
        ),  # fmt: skip
        (403, {}, "gba.auth_rejected"),
        (500, {}, "gba.bsf_error"),
        (503, {}, "gba.bsf_error"),
        (200, {}, "gba.bad_response"),
        (302, {"Location": "http://elsewhere/"}, "gba.bad_response"),
    ],
)
def test_first_answer_outcomes(status, headers, code):
    s = UbSession("u@example", BSF)
    s.start()
    with pytest.raises(GbaError) as exc:
        s.receive(status, headers, b"")
    assert exc.value.code == code and s.state == "failed"


def test_challenge_loop_is_bounded():
    alice = lab_subscriber("alice")
    bsf = Bsf(Hss([alice]), BSF)
    s, step = challenged(bsf, alice)
    for _ in range(2):
        req = s.card_result(card(alice, step.rand, step.autn))
        fresh = bsf.handle("GET", "/", UbSession(alice.impi, BSF).start().headers, b"")
        step = s.receive(fresh.status, fresh.headers, fresh.body)
    s.card_result(card(alice, step.rand, step.autn))
    with pytest.raises(GbaError) as exc:
        s.receive(fresh.status, fresh.headers, fresh.body)
    assert exc.value.code == "gba.auth_rejected"
    assert req  # the session answered each challenge it accepted


# --- BootstrappingInfo ------------------------------------------------------------------------
def test_parse_bootstrapping_info_namespace_agnostic_and_extensions():
    btid, lifetime, text = parse_bootstrapping_info(XML)
    assert btid == "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.home1.net" and text == "2030-01-01T12:00:00Z"
    assert lifetime == datetime(2030, 1, 1, 12, tzinfo=UTC)
    other = (
        b'<g:BootstrappingInfo xmlns:g="urn:other"><g:btid> x@y </g:btid>'
        b"<g:lifetime>2030-01-01T14:00:00+02:00</g:lifetime>"
        b"<g:Extension><g:currenttime>2029-12-31T00:00:00Z</g:currenttime></g:Extension>"
        b"<unknown a='1'/></g:BootstrappingInfo>"
    )
    btid, lifetime, _ = parse_bootstrapping_info(other)
    assert btid == "x@y" and lifetime == datetime(2030, 1, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    "body, match",
    [
        (b"", "not XML"),
        (b"<BootstrappingInfo><btid>x", "not XML"),
        (b"<Other><btid>x</btid><lifetime>2030-01-01T00:00:00Z</lifetime></Other>", "root element"),
        (b"<BootstrappingInfo><lifetime>2030-01-01T00:00:00Z</lifetime></BootstrappingInfo>", "btid"),
        (b"<BootstrappingInfo><btid>x</btid></BootstrappingInfo>", "lifetime"),
        (
            b"<BootstrappingInfo><btid>x</btid><btid>y</btid><lifetime>2030-01-01T00:00:00Z</lifetime>"
            b"</BootstrappingInfo>",
            "two",
        ),  # fmt: skip
        (
            b"<BootstrappingInfo><btid>a b</btid>"
            b"<lifetime>2030-01-01T00:00:00Z</lifetime></BootstrappingInfo>",
            "B-TID",
        ),  # fmt: skip
        (
            b"<BootstrappingInfo><btid>" + b"a" * 256 + b"</btid><lifetime>2030-01-01T00:00:00Z</lifetime>"
            b"</BootstrappingInfo>",
            "B-TID",
        ),  # fmt: skip
        (b"<BootstrappingInfo><btid>x</btid><lifetime>tomorrow</lifetime></BootstrappingInfo>", "dateTime"),
        (
            b"<BootstrappingInfo><btid>x</btid><lifetime>2030-01-01T00:00:00</lifetime></BootstrappingInfo>",
            "time zone",
        ),  # fmt: skip
        (b'<!DOCTYPE x [<!ENTITY a "aaaa">]><BootstrappingInfo><btid>&a;</btid></BootstrappingInfo>', "DTD"),
        (b"<BootstrappingInfo>" + b" " * 17000 + b"</BootstrappingInfo>", "larger"),
    ],
)
def test_parse_bootstrapping_info_rejects(body, match):
    with pytest.raises(GbaError, match=match) as exc:
        parse_bootstrapping_info(body)
    assert exc.value.code == "gba.bad_response"


# --- hostile XML: DTDs, entity expansion, external references (any encoding) -----------------------
def _peak_rss_reset() -> bool:
    """Reset the process's peak RSS (VmHWM); False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _rss(peak: bool) -> int:
    """Resident bytes from /proc: the peak since the reset (VmHWM) or, failing that, now (statm)."""
    if peak:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _doc(dtd: str, btid: str, encoding: str) -> bytes:
    decl = f'<?xml version="1.0" encoding="{encoding.upper()}"?>'
    text = (
        f"{decl}<!DOCTYPE BootstrappingInfo [{dtd}]><BootstrappingInfo><btid>{btid}</btid>"
        "<lifetime>2030-01-01T00:00:00Z</lifetime></BootstrappingInfo>"
    )
    return text.encode(encoding)


def _laughs(base: int, fan: int, levels: int) -> str:
    """Nested entities expanding to base * fan**levels characters (billion laughs)."""
    first = f'<!ENTITY e0 "{"x" * base}">'
    return first + "".join(f'<!ENTITY e{i} "{f"&e{i - 1};" * fan}">' for i in range(1, levels + 1))


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "utf-16-le"])
@pytest.mark.parametrize(
    ("dtd", "btid"),
    [
        ('<!ENTITY b "injected-btid@bsf.example">', "&b;"),  # the entity's value would become the B-TID
        (_laughs(1000, 10, 6), "&e6;"),  # 10^9 characters; expat alone grows by ~8 MB before it stops
        (_laughs(6000, 30, 2), "&e2;"),  # 5.4 MB of text, under expat's amplification limit
        ('<!ENTITY x SYSTEM "http://127.0.0.1:{port}/x">', "&x;"),
        ('<!ENTITY % p SYSTEM "http://127.0.0.1:{port}/p"> %p;', "x"),
    ],
    ids=["internal-entity", "billion-laughs", "quadratic", "external-entity", "external-parameter-entity"],
)
def test_hostile_bsf_xml_is_refused_without_memory_growth(dtd, btid, encoding):
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    body = _doc(dtd.replace("{port}", str(listener.getsockname()[1])), btid, encoding)
    assert len(body) <= 16 * 1024  # under the size cap: the parser is what refuses it
    if encoding != "utf-8":
        assert b"<!DOCTYPE" not in body  # a byte search for the DTD finds nothing
    with pytest.raises(GbaError) as warm:  # imports and first-use allocations happen outside the window
        parse_bootstrapping_info(body)
    peak = _peak_rss_reset()
    before = _rss(peak)
    with pytest.raises(GbaError) as exc:
        parse_bootstrapping_info(body)
    grown = _rss(peak) - before
    try:
        assert exc.value.code == warm.value.code == "gba.bad_response"
        assert "injected" not in exc.value.message
        if encoding != "utf-16-le":  # expat refuses a declared UTF-16-LE outright, before the DTD
            assert "DTD" in exc.value.message
        assert grown < 2 * 1024 * 1024, f"parsing grew the resident set by {grown} bytes"
        with pytest.raises(BlockingIOError):  # nothing tried to fetch the external entity
            listener.accept()
    finally:
        listener.close()
