"""HTTP Digest (RFC 2617) with AKAv1-MD5 (RFC 3310): the math, the header codecs, rspauth."""

from __future__ import annotations

import base64
import dataclasses
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ue_agent.crypto import digest
from ue_agent.crypto.milenage import Milenage
from ue_agent.secret import Secret

# TS 35.208 4.3.1 (test set 1) keys in the Digest AKA exchange of TS 24.109 A.3/A.4 (IMPI and realm
# from its example), RFC 3310 3.3; the expected response is a recorded worked example
K = bytes.fromhex("465b5ce8b199b49faa5f0a2ee238a6bc")
OPC = bytes.fromhex("cd63cb71954a9f4e48a5994e37a02baf")
RAND = bytes.fromhex("23553cbe9637a89d218ae64dae47bf35")
RES = bytes.fromhex("a54211d5e3ba50bf")
NONCE = "I1U8vpY3qJ0hiuZNrke/NVXzKLQ1d7m5Sp/6w1Tfr7M="


def example_creds(**kw) -> digest.Credentials:
    base = dict(
        username="user1_private@home1.net",
        realm="bsf.home1.net",
        nonce=NONCE,
        uri="/",
        response="",
        algorithm="AKAv1-MD5",
        qop="auth-int",
        nc="00000001",
        cnonce="0a4f113b",
    )
    base.update(kw)
    return digest.Credentials(**base)


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


def test_spec_digest_example_vector():
    c = example_creds()
    assert digest.ha1(c.username, c.realm, RES, "AKAv1-MD5") == "308bb02714388e6e939e4649f5ec4fb0"
    assert digest.ha2("GET", "/", "auth-int") == "15df3e1aa09254633226c3d41891b148"
    assert digest.compute_response(c, RES, "GET") == "d47e4afd3245638428c815924bc5bc69"
    assert digest.compute_response(c, Secret(RES), "GET") == "d47e4afd3245638428c815924bc5bc69"


def test_example_inputs_come_from_milenage():
    """The example's nonce is RAND||AUTN of test set 1 and its password is f2 RES."""
    raw = base64.b64decode(NONCE)
    assert raw[:16] == RAND
    res, *_ = Milenage(K, OPC).f2345(RAND)
    assert res == RES


def test_second_computation_with_hashlib():
    """RFC 2617 3.2.2.1 written out with hashlib directly: RES raw octets as password."""
    body = b'<?xml version="1.0"?><x/>'
    c = example_creds(uri="/bsf?x=1", cnonce="6629fae49393a05397450978507c4ef1", nc="0000000a")
    h1 = md5(b"user1_private@home1.net:bsf.home1.net:" + RES)
    h2 = md5(b"POST:/bsf?x=1:" + md5(body).encode())
    expect = md5(f"{h1}:{NONCE}:0000000a:6629fae49393a05397450978507c4ef1:auth-int:{h2}".encode())
    assert digest.compute_response(c, RES, "POST", body) == expect
    # qop=auth and no qop (RFC 2069 compatibility)
    h2a = md5(b"POST:/bsf?x=1")
    auth = dataclasses.replace(c, qop="auth")
    assert digest.compute_response(auth, RES, "POST", body) == md5(
        f"{h1}:{NONCE}:0000000a:6629fae49393a05397450978507c4ef1:auth:{h2a}".encode()
    )
    legacy = dataclasses.replace(c, qop=None, nc=None, cnonce=None)
    assert digest.compute_response(legacy, RES, "POST", body) == md5(f"{h1}:{NONCE}:{h2a}".encode())


def test_sync_failure_uses_empty_password():
    c = example_creds(auts="AAECAwQFBgcICQoLDA0=")
    h1 = md5(b"user1_private@home1.net:bsf.home1.net:")
    h2 = md5(b"GET:/:" + md5(b"").encode())
    assert digest.compute_response(c, b"", "GET") == md5(
        f"{h1}:{NONCE}:00000001:0a4f113b:auth-int:{h2}".encode()
    )


def test_rspauth_round_trip_and_tamper():
    c = example_creds()
    body = b"<BootstrappingInfo/>"
    info = digest.build_auth_info(c, RES, body)
    parsed = digest.parse_auth_info(info)
    assert parsed["qop"] == "auth-int" and parsed["cnonce"] == "0a4f113b" and parsed["nc"] == "00000001"
    # rspauth: A2 with an empty method (RFC 2617 3.2.3)
    h1 = md5(b"user1_private@home1.net:bsf.home1.net:" + RES)
    h2 = md5(b":/:" + md5(body).encode())
    assert parsed["rspauth"] == md5(f"{h1}:{NONCE}:00000001:0a4f113b:auth-int:{h2}".encode())
    assert digest.verify_rspauth(info, c, RES, body)
    assert not digest.verify_rspauth(info, c, RES, body + b" ")
    assert not digest.verify_rspauth(info, c, b"wrongres", body)
    assert not digest.verify_rspauth(info, dataclasses.replace(c, cnonce="other"), RES, body)
    assert not digest.verify_rspauth('qop=auth-int, cnonce="0a4f113b"', c, RES, body)


def test_verify_response_is_case_insensitive_hex_and_strict():
    c = example_creds(response="D47E4AFD3245638428C815924BC5BC69")
    assert digest.verify_response(c, RES, "GET")
    assert not digest.verify_response(c, RES, "POST")
    assert not digest.verify_response(dataclasses.replace(c, response=""), RES, "GET")


# --- parsing -----------------------------------------------------------------------------------
def test_parse_www_authenticate_24109_form():
    h = (
        'Digest realm="bsf.home1.net", nonce="' + NONCE + '", algorithm=AKAv1-MD5, '
        'qop="auth-int", opaque="5ccc069c403ebaf9f0171e9517f30e41"'
    )
    ch = digest.Challenge.parse(h)
    assert ch.realm == "bsf.home1.net" and ch.nonce == NONCE
    assert ch.algorithm == "AKAv1-MD5" and ch.qop == ("auth-int",)
    assert ch.opaque == "5ccc069c403ebaf9f0171e9517f30e41" and not ch.stale
    assert digest.Challenge.parse(ch.to_header()) == ch


def test_parse_is_robust_to_case_spacing_commas_in_quotes_and_escapes():
    h = (
        'DIGEST  Realm = "a, b\\"c" ,, NONCE=abc,qop="auth,auth-int" ,'
        ' Algorithm=akav1-md5, stale=TRUE, domain="/x /y"'
    )
    ch = digest.Challenge.parse(h)
    assert ch.realm == 'a, b"c'
    assert ch.nonce == "abc"
    assert ch.qop == ("auth", "auth-int")
    assert ch.algorithm == "AKAv1-MD5"
    assert ch.stale
    assert ch.extra == {"domain": "/x /y"}


def test_authorization_round_trip_with_auts():
    c = example_creds(response="d47e4afd3245638428c815924bc5bc69", opaque="o", auts="AAECAwQFBgcICQoLDA0=")
    text = c.to_header()
    assert "qop=auth-int" in text and "nc=00000001" in text and 'auts="AAECAwQFBgcICQoLDA0="' in text
    assert digest.Credentials.parse(text) == c


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Basic dXNlcjpwYXNz",
        'Digest realm="x", nonce="unterminated',
        'Digest realm="x" nonce="y"',
        "Digest realm=",
        'Digest realm="x", realm="y", nonce="n"',
        'Digest =x, nonce="n"',
        "Digest " + "a" * 9000,
    ],
)
def test_bad_headers_raise_digest_error(header):
    with pytest.raises(digest.DigestError) as exc:
        digest.Challenge.parse(header)
    assert exc.value.code == "gba.bad_digest"


@pytest.mark.parametrize(
    "header, what",
    [
        ('Digest nonce="n"', "realm"),
        ('Digest realm="r"', "nonce"),
        ('Digest realm="r", nonce="n", algorithm=SHA-512-256', "algorithm"),
    ],
)
def test_challenge_missing_or_unsupported(header, what):
    with pytest.raises(digest.DigestError, match=what):
        digest.Challenge.parse(header)


@pytest.mark.parametrize(
    "header",
    [
        'Digest username="u", realm="r", nonce="n", uri="/"',  # no response
        'Digest username="u", realm="r", nonce="n", uri="/", response="", qop=auth-int',  # no nc/cnonce
        'Digest username="u", realm="r", nonce="n", uri="/", response="", qop=auth-conf, '
        'nc=00000001, cnonce="c"',
        'Digest username="u", realm="r", nonce="n", uri="/", response="", qop=auth, nc=1, cnonce="c"',
    ],
)
def test_bad_authorization(header):
    with pytest.raises(digest.DigestError):
        digest.Credentials.parse(header)


def test_control_characters_are_not_written():
    with pytest.raises(digest.DigestError):
        example_creds(username="bad\r\nInjected: 1").to_header()


_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=0, max_size=40)


@given(realm=_text, nonce=_text.filter(bool), opaque=_text, extra=_text)
def test_challenge_round_trip_property(realm, nonce, opaque, extra):
    ch = digest.Challenge(
        realm=realm,
        nonce=nonce,
        algorithm="AKAv1-MD5",
        qop=("auth-int",),
        opaque=opaque,
        extra={"x-e": extra},
    )
    assert digest.Challenge.parse(ch.to_header()) == ch


@given(user=_text, uri=_text, response=_text)
def test_credentials_round_trip_property(user, uri, response):
    c = example_creds(username=user, uri=uri, response=response)
    assert digest.Credentials.parse(c.to_header()) == c


def test_password_never_in_errors_or_reprs():
    secret = Secret(RES, "RES")
    assert RES.hex() not in repr(secret)
    with pytest.raises(digest.DigestError) as exc:
        digest.ha1("u", "r", secret, "SHA-256")
    assert RES.hex() not in str(exc.value) and "a54211" not in str(exc.value)


# --- the regex scanner against the character-at-a-time parser it replaced ---------------------
_REF_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _reference_parse(s: str) -> dict[str, str]:
    """The parser before ue_agent.crypto.digest scanned with regular expressions."""

    def ws(i: int) -> int:
        while i < len(s) and s[i] in " \t\r\n":
            i += 1
        return i

    params: dict[str, str] = {}
    i = 0
    while True:
        i = ws(i)
        while i < len(s) and s[i] == ",":
            i = ws(i + 1)
        if i >= len(s):
            return params
        start = i
        while i < len(s) and s[i] in _REF_TOKEN:
            i += 1
        name = s[start:i].lower()
        if not name:
            raise digest.DigestError(message=f"expected a parameter name at offset {start}")
        i = ws(i)
        if i >= len(s) or s[i] != "=":
            raise digest.DigestError(message=f"parameter '{name}' has no value")
        i = ws(i + 1)
        if i < len(s) and s[i] == '"':
            i += 1
            buf = []
            while True:
                if i >= len(s):
                    raise digest.DigestError(message=f"unterminated quoted string in '{name}'")
                c = s[i]
                if c == "\\" and i + 1 < len(s):
                    buf.append(s[i + 1])
                    i += 2
                    continue
                if c == '"':
                    i += 1
                    break
                buf.append(c)
                i += 1
            value = "".join(buf)
        else:
            start = i
            while i < len(s) and s[i] not in ", \t\r\n":
                i += 1
            value = s[start:i]
            if not value:
                raise digest.DigestError(message=f"parameter '{name}' has an empty token value")
        if name in params:
            raise digest.DigestError(message=f"parameter '{name}' appears twice")
        params[name] = value
        i = ws(i)
        if i < len(s) and s[i] != ",":
            raise digest.DigestError(message=f"expected ',' after parameter '{name}'")


def _outcome(f, s: str):  # type: ignore[no-untyped-def]
    try:
        return f(s)
    except digest.DigestError as exc:
        return ("error", exc.message)


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet='aZ9-=,"\\ \t\r\n\x01é;:/@', max_size=40))
def test_parameter_scanner_agrees_with_the_reference(s: str) -> None:
    assert _outcome(lambda v: digest.parse_auth_info(v), s) == _outcome(_reference_parse, s.strip())
