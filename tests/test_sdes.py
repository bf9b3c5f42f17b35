"""SDES a=crypto parse/build, offer/answer, and the e2ae indications."""

from __future__ import annotations

import base64
import dataclasses
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ue_agent.errors import MediaError
from ue_agent.media import e2ae, sdes
from ue_agent.media.capabilities import MediaCapabilities, device_capabilities
from ue_agent.media.keys import SRTP_SUITES

# RFC 4568 §4's example line (its key is 30 octets: AES_CM_128 key 16 + salt 14)
RFC_LINE = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4"


def _counter_rng():
    n = iter(range(1, 1_000_000))

    def rng(size: int) -> bytes:
        return bytes([next(n) % 256]) * size

    return rng


# -- parse / build -------------------------------------------------------------------------------------


def test_parse_rfc4568_example() -> None:
    a = sdes.parse_crypto(RFC_LINE)
    assert (a.tag, a.suite, a.session_params) == (1, "AES_CM_128_HMAC_SHA1_80", ())
    (k,) = a.keys
    assert k.lifetime == 2**20 and (k.mki, k.mki_length) == (1, 4)
    assert k.key_salt == base64.b64decode("PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR")
    keys = a.srtp_keys()
    assert len(keys.master_key) == 16 and len(keys.master_salt) == 14 and keys.mki == b"\x00\x00\x00\x01"
    assert a.to_line() == RFC_LINE
    assert sdes.parse_crypto(RFC_LINE[2:]).tag == 1  # without "a="


@pytest.mark.parametrize("suite", list(SRTP_SUITES))
def test_build_parse_roundtrip_every_suite(suite: str) -> None:
    k = sdes.new_key(suite)
    line = sdes.format_crypto(7, k, lifetime=2**31)
    a = sdes.parse_crypto(line)
    back = a.srtp_keys()
    assert a.tag == 7 and a.suite == suite and a.keys[0].lifetime == 2**31
    assert back.master_key == k.master_key and back.master_salt == k.master_salt
    klen, slen = SRTP_SUITES[suite]
    assert len(base64.b64decode(line.split("inline:")[1].split("|")[0])) == klen + slen


def test_gcm_key_lengths_rfc7714() -> None:
    assert SRTP_SUITES["AEAD_AES_128_GCM"] == (16, 12)
    assert SRTP_SUITES["AEAD_AES_256_GCM"] == (32, 12)


def test_unpadded_base64_accepted() -> None:
    k = sdes.new_key("AEAD_AES_128_GCM")  # 28 octets -> one '=' of padding
    line = sdes.format_crypto(1, k)
    assert line.endswith("=")
    assert sdes.parse_crypto(line.rstrip("=")).srtp_keys().master_key == k.master_key


def test_decimal_lifetime_and_several_keys_with_mki() -> None:
    k1 = base64.b64encode(bytes(range(30))).decode()
    k2 = base64.b64encode(bytes(range(30, 60))).decode()
    a = sdes.parse_crypto(f"a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{k1}|1000|1:2;inline:{k2}|2^20|2:2")
    assert [k.lifetime for k in a.keys] == [1000, 2**20]
    assert a.srtp_keys().mki == b"\x00\x01"


def test_unknown_suite_and_key_method_parse_but_are_not_acceptable() -> None:
    a = sdes.parse_crypto("a=crypto:3 AES_256_CM_HMAC_SHA1_80 inline:" + "A" * 62 + "==")
    assert not a.known_suite and not a.acceptable
    b = sdes.parse_crypto("a=crypto:4 AES_CM_128_HMAC_SHA1_80 uri:https://example.invalid/key")
    assert not b.acceptable


@pytest.mark.parametrize(
    "params, acceptable",
    [
        ("WSH=64", True),
        ("KDR=10", False),
        ("UNENCRYPTED_SRTP", False),
        ("UNAUTHENTICATED_SRTP", False),
        ("FEC_ORDER=FEC_SRTP", False),
        ("-FOO", True),  # RFC 4568 6.3.7: "-" prefix = optional, MAY be ignored
        ("-FOO=1 KDR=1", False),
        ("WSH=64 -X-EXT=abc", True),
    ],
)
def test_session_params(params: str, acceptable: bool) -> None:
    a = sdes.parse_crypto(RFC_LINE + " " + params)
    assert a.session_params == tuple(params.split(" "))
    assert a.acceptable is acceptable


KEY30 = base64.b64encode(bytes(30)).decode()


@pytest.mark.parametrize(
    "line",
    [
        "",
        "a=rtpmap:0 PCMU/8000",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80",
        "a=crypto:x AES_CM_128_HMAC_SHA1_80 inline:" + KEY30,
        "a=crypto:1234567890 AES_CM_128_HMAC_SHA1_80 inline:" + KEY30,
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY30[:-4],  # 27 octets
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY30 + "AAAA",  # 33 octets
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:!!notbase64!!",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY30 + "|2^x",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY30 + "|0",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY30 + "|2^49",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY30 + "|1:0",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY30 + "|1:129",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY30 + "|256:1",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY30 + "|1:1|2^20",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY30 + "|2^20|2^20",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY30 + "|2^20|1:4|x",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY30 + ";inline:" + KEY30,  # 2 keys, no MKI
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY30 + "|1:1;inline:" + KEY30 + "|1:1",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY30 + "|1:1;inline:" + KEY30 + "|2:2",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 noseparator",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY30 + " bad\x01param",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + "A" * 5000,
    ],
)
def test_malformed(line: str) -> None:
    with pytest.raises(MediaError) as e:
        sdes.parse_crypto(line)
    assert e.value.code == "media.sdes_malformed"
    assert KEY30 not in str(e.value) and KEY30 not in repr(e.value.details)


def test_non_string_input() -> None:
    with pytest.raises(MediaError) as e:
        sdes.parse_crypto(None)  # type: ignore[arg-type]
    assert e.value.code == "media.sdes_malformed"


# -- offer / answer ------------------------------------------------------------------------------------


def test_offer_answer_two_streams_keys_cross() -> None:
    offer_lines, local = sdes.make_offer(["audio", "video"])
    assert len(offer_lines) == 2 and len(offer_lines[0]) == len(sdes.DEFAULT_SUITES)
    answer_lines, b_streams = sdes.make_answer(offer_lines, ["audio", "video"])
    a_streams = sdes.accept_answer(local, answer_lines)
    for a, b in zip(a_streams, b_streams, strict=True):
        assert a.media == b.media and a.tag == b.tag == 1
        assert a.suite == b.suite == "AES_CM_128_HMAC_SHA1_80"
        assert a.tx.master_key == b.rx.master_key and a.tx.master_salt == b.rx.master_salt
        assert a.rx.master_key == b.tx.master_key
        assert a.tx.master_key != a.rx.master_key
    # every offered line had its own key; the streams' keys differ too
    assert a_streams[0].tx.master_key != a_streams[1].tx.master_key


def test_unchosen_offer_keys_are_zeroized() -> None:
    _, local = sdes.make_offer(["audio"])
    keys = dict(local.streams[0].keys)
    _, local2 = sdes.make_offer(["audio"])
    answer, _ = sdes.make_answer([local.lines[0]])
    chosen = sdes.accept_answer(local, answer)[0]
    for tag, k in keys.items():
        assert k.master_key.zeroized is (tag != chosen.tag)
    local2.zeroize()
    assert all(k.master_key.zeroized for k in local2.streams[0].keys.values())


def test_answer_follows_offerer_order_within_our_suites() -> None:
    lines, _ = sdes.make_offer(["audio"], ["AES_CM_128_HMAC_SHA1_32", "AEAD_AES_256_GCM"])
    _, (k,) = sdes.make_answer(lines)
    assert k.suite == "AES_CM_128_HMAC_SHA1_32"
    _, (k,) = sdes.make_answer(lines, suites=["AEAD_AES_256_GCM"])
    assert k.suite == "AEAD_AES_256_GCM" and k.tag == 2


def test_answer_skips_unusable_lines_and_ignores_other_attributes() -> None:
    good = sdes.format_crypto(5, sdes.new_key("AEAD_AES_128_GCM"))
    offer = [
        "a=rtpmap:0 PCMU/8000",
        "a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:" + "A" * 62 + "==",
        RFC_LINE.replace("crypto:1 ", "crypto:2 ") + " UNENCRYPTED_SRTP",
        good,
        "a=3ge2ae:requested",
    ]
    lines, k = sdes.answer_stream(offer)
    assert k.tag == 5 and k.suite == "AEAD_AES_128_GCM"
    assert len(lines) == 1 and lines[0].startswith("a=crypto:5 AEAD_AES_128_GCM inline:")


def test_no_common_suite() -> None:
    lines, _ = sdes.make_offer(["audio"], ["AEAD_AES_128_GCM"])
    with pytest.raises(MediaError) as e:
        sdes.make_answer(lines, suites=["AES_CM_128_HMAC_SHA1_80"])
    assert e.value.code == "media.no_common_suite"
    with pytest.raises(MediaError) as e:
        sdes.answer_stream(["a=rtpmap:0 PCMU/8000"])
    assert e.value.code == "media.no_common_suite"


def test_duplicate_tags_in_offer() -> None:
    line = sdes.format_crypto(1, sdes.new_key("AES_CM_128_HMAC_SHA1_80"))
    with pytest.raises(MediaError) as e:
        sdes.answer_stream([line, line.replace("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")])
    assert e.value.code == "media.sdes_malformed"


def test_lifetime_carried_into_stream_keys() -> None:
    lines, local = sdes.make_offer(["audio"], ["AES_CM_128_HMAC_SHA1_80"], lifetime=2**20)
    assert "|2^20" in lines[0][0]
    answer, (b,) = sdes.make_answer(lines)
    assert b.max_packets == 2**20 and "|2^20" in answer[0][0]
    (a,) = sdes.accept_answer(local, answer)
    assert a.max_packets == 2**20


@pytest.mark.parametrize(
    "mutate, code",
    [
        (lambda ans: [[]], "media.no_common_suite"),
        (lambda ans: [ans[0] + ans[0]], "media.sdes_answer_mismatch"),
        (lambda ans: [[ans[0][0].replace("crypto:1 ", "crypto:9 ")]], "media.sdes_answer_mismatch"),
        (
            lambda ans: [[ans[0][0].replace("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")]],
            "media.sdes_answer_mismatch",
        ),
        (lambda ans: [], "media.sdes_answer_mismatch"),
        (lambda ans: [["a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:short"]], "media.sdes_malformed"),
        (lambda ans: [[ans[0][0] + " UNENCRYPTED_SRTP"]], "media.sdes_answer_mismatch"),
    ],
)
def test_bad_answers(mutate, code: str) -> None:
    lines, local = sdes.make_offer(["audio"])
    answer, _ = sdes.make_answer(lines)
    with pytest.raises(MediaError) as e:
        sdes.accept_answer(local, mutate(answer))
    assert e.value.code == code
    # a failed answer burns the offer: no key of it survives
    assert all(k.master_key.zeroized for k in local.streams[0].keys.values())


def test_reflected_key_refused() -> None:
    lines, local = sdes.make_offer(["audio"], ["AES_CM_128_HMAC_SHA1_80"])
    with pytest.raises(MediaError) as e:
        sdes.accept_answer(local, lines)  # the "answer" is our own offer echoed back
    assert e.value.code == "media.key_reuse"


def test_answerer_never_reuses_offered_key() -> None:
    rng = _counter_rng()
    fixed = lambda n: b"\x07" * n  # noqa: E731 - a broken RNG that repeats itself
    lines, _ = sdes.make_offer(["audio"], ["AES_CM_128_HMAC_SHA1_80"], rng=fixed)
    with pytest.raises(MediaError) as e:
        sdes.make_answer(lines, rng=fixed)
    assert e.value.code == "media.key_reuse"
    _, (k,) = sdes.make_answer(lines, rng=rng)
    assert k.tx.master_key != k.rx.master_key


def test_bad_arguments() -> None:
    for call in (
        lambda: sdes.make_offer([]),
        lambda: sdes.make_offer("audio"),
        lambda: sdes.make_offer(["audio video"]),
        lambda: sdes.make_answer("a=crypto:1"),
        lambda: sdes.make_answer([[RFC_LINE]], ["audio", "video"]),
        lambda: sdes.answer_stream(RFC_LINE),
    ):
        with pytest.raises(MediaError) as e:
            call()
        assert e.value.code == "media.sdes_malformed"
    with pytest.raises(MediaError) as e:
        sdes.make_offer(["audio"], ["NULL_HMAC_SHA1_80"])
    assert e.value.code == "media.unsupported_suite"


def test_no_key_bytes_in_reprs_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    lines, local = sdes.make_offer(["audio"])
    answer, b = sdes.make_answer(lines)
    a = sdes.accept_answer(local, answer)
    parsed = sdes.parse_crypto(answer[0][0])
    b64 = answer[0][0].split("inline:")[1]
    for obj in (local, a, b, parsed, a[0].tx, b[0].rx):
        text = repr(obj) + str(obj)
        assert b64 not in text
        assert a[0].tx.master_key.reveal().hex() not in text
        logging.getLogger("test").debug("%r %s", obj, obj)
    assert b64 not in caplog.text


# -- e2ae ----------------------------------------------------------------------------------------------


def test_offer_with_e2ae_requested() -> None:
    lines, _ = sdes.make_offer(["audio"], e2ae=True)
    assert lines[0][-1] == "a=3ge2ae:requested"
    assert e2ae.parse_e2ae(lines[0]) == "requested"


def test_parse_e2ae_values() -> None:
    assert e2ae.parse_e2ae(["a=crypto:1 X", "a=3ge2ae:applied"]) == "applied"
    assert e2ae.parse_e2ae(["a=3ge2ae:some-future-value"]) is None  # ignored (TS 24.229 7.5.2.2)
    assert e2ae.parse_e2ae(["a=sendrecv"]) is None
    with pytest.raises(MediaError):
        e2ae.parse_e2ae(["a=3ge2ae:bad value"])
    assert e2ae.e2ae_line() == "a=3ge2ae:requested"
    assert e2ae.e2ae_line("applied") == "a=3ge2ae:applied"


def test_security_client_values() -> None:
    assert e2ae.security_client_value() == "sdes-srtp;mediasec"
    assert (
        e2ae.security_client_value(["sdes-srtp", "msrp-tls", "bfcp-tls"])
        == "sdes-srtp;mediasec, msrp-tls;mediasec, bfcp-tls;mediasec"
    )
    with pytest.raises(MediaError):
        e2ae.security_client_value(["ipsec-3gpp"])
    with pytest.raises(MediaError):
        e2ae.security_client_value([])


SERVER = (
    "Security-Server: ipsec-3gpp;q=0.1;alg=hmac-sha-1-96;spi-c=98765432;spi-s=87654321;port-c=8642;"
    'port-s=7531, sdes-srtp;mediasec, msrp-tls;mediasec, tls;q=0.2;d-ver="0000,0001"'
)


def test_parse_security_server_and_verify() -> None:
    mechs = e2ae.parse_security_header(SERVER)
    assert [m.name for m in mechs] == ["ipsec-3gpp", "sdes-srtp", "msrp-tls", "tls"]
    assert mechs[0].param("spi-c") == "98765432" and not mechs[0].mediasec
    assert mechs[3].param("d-ver") == '"0000,0001"'
    assert e2ae.media_mechanisms(mechs) == ["sdes-srtp", "msrp-tls"]
    assert e2ae.negotiated(["sdes-srtp", "bfcp-tls"], SERVER) == ["sdes-srtp"]
    assert e2ae.security_verify_value(SERVER) == "sdes-srtp;mediasec, msrp-tls;mediasec"
    assert e2ae.negotiated(["sdes-srtp"], "Security-Server: ipsec-3gpp;q=0.1") == []


@pytest.mark.parametrize(
    "value",
    ['sdes-srtp;mediasec;x="unterminated', "sdes srtp;mediasec", "sdes-srtp;=x", ", ,", "a" * 9000],
)
def test_malformed_security_headers(value: str) -> None:
    with pytest.raises(MediaError) as e:
        e2ae.parse_security_header(value)
    assert e.value.code == "media.security_header_malformed"


def test_capabilities() -> None:
    caps = device_capabilities(kms_url="https://kms.ims.example.org")
    wire = caps.to_wire()
    assert wire["kms"]["available"] is True
    assert wire["sdes"]["suites"] == list(sdes.DEFAULT_SUITES)
    # only what the agent can key e2ae: SDES; its TLS-PSK keys are MIKEY-TICKET's (e2e)
    assert wire["e2ae"]["security_client"] == "sdes-srtp;mediasec"
    assert wire["e2ae"]["mechanisms"] == ["sdes-srtp"] and wire["tls_psk"]["media"] == ["msrp", "bfcp"]
    keyed = dataclasses.replace(caps, e2ae_tls=("msrp",))
    assert keyed.security_client_value() == "sdes-srtp;mediasec, msrp-tls;mediasec"
    off = device_capabilities(e2ae=False)
    assert off.to_wire()["kms"]["available"] is False and off.security_client_value() is None
    with pytest.raises(MediaError):
        MediaCapabilities(sdes_suites=("F8_128_HMAC_SHA1_80",))
    with pytest.raises(MediaError):
        MediaCapabilities(tls_psk=("rtp",))


# -- properties ----------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_parse_never_crashes_on_text(text: str) -> None:
    for line in (text, "a=crypto:" + text, "a=crypto:1 AES_CM_128_HMAC_SHA1_80 " + text):
        try:
            sdes.parse_crypto(line)
        except MediaError as e:
            assert e.code == "media.sdes_malformed"


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(list(SRTP_SUITES)),
    st.integers(0, 999_999_999),
    st.one_of(st.none(), st.integers(1, 2**48)),
    st.one_of(st.none(), st.binary(min_size=1, max_size=4)),
)
def test_format_parse_roundtrip(suite: str, tag: int, lifetime: int | None, mki: bytes | None) -> None:
    k = sdes.new_key(suite)
    k.mki = mki
    a = sdes.parse_crypto(sdes.format_crypto(tag, k, lifetime))
    back = a.srtp_keys()
    assert (a.tag, a.suite, a.keys[0].lifetime, back.mki) == (tag, suite, lifetime, mki)
    assert back.master_key == k.master_key and back.master_salt == k.master_salt


@pytest.mark.parametrize("sep", ["  ", "\t", " \t ", "\t\t"])
def test_fields_separated_by_1_wsp(sep: str) -> None:
    # RFC 4568 9.1: "a=crypto:" tag 1*WSP crypto-suite 1*WSP key-params *(1*WSP session-param),
    # WSP = SP / HTAB (RFC 4234)
    line = sep.join(["a=crypto:1", "AES_CM_128_HMAC_SHA1_80", "inline:" + KEY30, "WSH=64", "-EXT"])
    a = sdes.parse_crypto(line)
    assert (a.tag, a.suite, a.session_params) == (1, "AES_CM_128_HMAC_SHA1_80", ("WSH=64", "-EXT"))
    assert a.acceptable


def test_one_bad_line_does_not_kill_the_answer() -> None:
    good = sdes.format_crypto(2, sdes.new_key("AES_CM_128_HMAC_SHA1_80"))
    offer = [
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:!!notbase64!!",  # malformed
        "a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:" + KEY30 + " KDR=1",  # mandatory param we lack
        good + " -UNKNOWN_OPTIONAL",  # optional parameter: ignored, line usable
    ]
    lines, keys = sdes.answer_stream(offer)
    assert lines[0].startswith("a=crypto:2 ") and keys.tag == 2
    with pytest.raises(MediaError) as e:  # nothing parseable at all is still malformed
        sdes.answer_stream(offer[:1])
    assert e.value.code == "media.sdes_malformed"
