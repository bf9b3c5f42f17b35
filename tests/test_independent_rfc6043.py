"""Self-tests of the independent RFC 6043 implementation (tests/independent/rfc6043).

Messages are assembled here byte by byte from the figures of RFC 3830 6 and RFC 6043 6 (not with the package's
encoder), decoded, and their MACs recomputed by hand from the labels of 5.1.2 and the coverage of 5.5.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from decimal import Decimal, getcontext

import pytest

from tests.independent.rfc6043 import (
    KmsEngine,
    MikeyErrorReceived,
    MikeyReject,
    Peer,
    decode,
    mac_input,
    prf,
    srtp_cs,
    verify_mac,
    wire,
)
from tests.independent.rfc6043.keys import ProtKeys, protection_keys
from tests.independent.rfc6043.wire import SP, Flags, KeyData

# --------------------------------------------------------------------------------------------- helpers


def h(s: str) -> bytes:
    return bytes.fromhex(s.replace(" ", "").replace("\n", ""))


def hm256(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def p_hash(fn, s: bytes, label: bytes, m: int) -> bytes:  # RFC 3830 4.1.2 written out again, plainly
    a, out = label, b""
    for _ in range(m):
        a = hmac.new(s, a, fn).digest()
        out += hmac.new(s, a + label, fn).digest()
    return out


PSK_A = bytes(range(32))  # 256-bit PSK (Ks_NAF size)
RANDRI = bytes(range(0x40, 0x60))  # 32 bytes: 12.1 wants RANDRi + RANDRr >= the longest key (32 bytes)
CSB = 0x01020304
NTP_T = h("e4 c4 b5 00 00 00 00 00")  # an NTP-UTC value (2021)
ID_I = b"sip:alice@example.org"
ID_KMS = b"kms.example.org"
ID_R = b"sip:bob@example.org"


def idr(nxt: int, role: int, id_type: int, data: bytes) -> bytes:  # RFC 6043 6.6 figure
    return bytes([nxt, role, id_type]) + len(data).to_bytes(2, "big") + data


def request_init_bytes(*, flags24: bytes = h("03 f0 60"), mac: bytes | None = None) -> bytes:
    """REQUEST_INIT_PSK = HDR, T, RANDRi, IDRi, IDRkms, TP, V (RFC 6043 4.2.1), laid out from the figures."""
    hdr = (
        h("01 0b 05 81") + CSB.to_bytes(4, "big") + h("00 01")
    )  # ver 1, type 11, next T, V=1 PRF=1, #CS 0, Empty
    t = h("0f 00") + NTP_T  # next RANDR (15), TS type NTP-UTC
    randr = h("0e 01 20") + RANDRI  # next IDR, role RANDRi, length 32
    idri = idr(14, 1, 1, ID_I)
    idrkms = idr(16, 3, 1, ID_KMS)
    tp_data = bytes([14]) + idr(0, 2, 1, ID_R)  # First Payload = IDR, then IDRr (last)
    # TP (6.10 figure): next V(9) | Ticket Type 0001 | Subtype 01 | Version 01 | PRF Func(7) D..O Res(5)
    tp = h("09 0001 01 01") + flags24 + len(tp_data).to_bytes(2, "big") + tp_data
    v_head = h("00 02")  # next Last, Auth alg HMAC-SHA-256-256
    unsigned = hdr + t + randr + idri + idrkms + tp + v_head
    if mac is None:
        auth = prf.prf(
            1, PSK_A, h("2D22AC75 ff") + CSB.to_bytes(4, "big") + h("01 20") + RANDRI + h("00"), 256
        )
        mac = hm256(auth, unsigned + ID_I + ID_KMS)  # Table 5.2: REQUEST_INIT || Identity_i || Identity_kms
    return unsigned + mac


# --------------------------------------------------------------------------------------------- PRF, constants


def e_digits(n: int) -> str:
    getcontext().prec = n + 20
    e, term, k = Decimal(1), Decimal(1), 1
    while term > Decimal(10) ** -(n + 10):
        term /= k
        e += term
        k += 1
    return str(e)[2 : 2 + n]


def test_constants_are_consecutive_nine_digit_chunks_of_e() -> None:
    """RFC 3830 4.1.3 / RFC 6043 5.1.1, A.2.2: "taken from the decimal digits of e" in nine-digit chunks."""
    digits = e_digits(9 * 200)
    chunks = {int(digits[i : i + 9]) for i in range(0, len(digits), 9)}
    assert 0x2AD01C64 == 718281828  # the example given in RFC 3830 4.1.3
    for name, c in prf.ALL_CONSTANTS.items():
        assert c in chunks, name


@pytest.mark.parametrize("inkey_len", [16, 32, 40, 64, 65])
@pytest.mark.parametrize("out_bits", [112, 128, 160, 256, 512])
def test_prf_mikey1_is_rfc3830_412(inkey_len: int, out_bits: int) -> None:
    inkey = os.urandom(inkey_len)
    label = os.urandom(41)
    m = -(-out_bits // 160)
    acc = bytes(m * 20)
    for i in range(0, inkey_len, 32):  # s_1..s_n of 256 bits, s_n possibly shorter
        acc = bytes(
            a ^ b for a, b in zip(acc, p_hash(hashlib.sha1, inkey[i : i + 32], label, m), strict=True)
        )
    assert prf.prf(0, inkey, label, out_bits) == acc[: out_bits // 8]


@pytest.mark.parametrize("inkey_len", [16, 32, 48])
def test_prf_hmac_sha256_is_rfc6043_61(inkey_len: int) -> None:
    """HMAC-SHA-256 instead of HMAC-SHA-1 and 256 instead of 160 (m = ceil(outkey_len / 256))."""
    inkey, label = os.urandom(inkey_len), os.urandom(20)
    acc = bytes(64)
    for i in range(0, inkey_len, 32):
        acc = bytes(
            a ^ b for a, b in zip(acc, p_hash(hashlib.sha256, inkey[i : i + 32], label, 2), strict=True)
        )
    assert prf.prf(1, inkey, label, 384) == acc[:48]
    assert prf.prf(1, inkey, label, 256) == acc[:32]


def test_labels_are_laid_out_as_the_clauses_write_them() -> None:
    assert prf.label_transport(0x2D22AC75, CSB, 1, b"\xaa\xbb", None) == h(
        "2D22AC75 ff 01020304 01 02 aabb 00"
    )
    assert prf.label_transport(0x150533E1, CSB, 2, None, b"\xcc") == h("150533E1 ff 01020304 02 00 01 cc")
    assert prf.label_fork(0x2B288856, b"bob", b"\x01\x02") == h("2B288856 ff ffffffff 00 0003 626f62 02 0102")
    assert prf.label_tgk(0x2AD01C64, 7, b"\x01", b"\x02\x03") == h("2AD01C64 07 ffffffff 03 01 01 02 0203")
    assert prf.label_ticket(0x220E99A2, 6, b"\x09") == h("220E99A2 ff ffffffff 06 01 09")
    assert prf.label_initiator_data(0x2D22AC75) == h("2D22AC75 ff ffffffff 04")
    with pytest.raises(MikeyReject) as e:
        prf.label_tgk(0x2AD01C64, 1, None, None)
    assert e.value.clause == "RFC 6043 5.1.3"


# ------------------------------------------------------------------------------------- decoding from figures


def test_request_init_from_the_figures_decodes_field_by_field() -> None:
    raw = request_init_bytes()
    d = decode(raw)
    hdr = d.msg.header
    assert (hdr.version, hdr.data_type, hdr.v_flag, hdr.prf_func, hdr.csb_id) == (1, 11, True, 1, CSB)
    assert (hdr.map_type, hdr.cs_map) == (wire.MAP_EMPTY, ())
    t = d.get("T")
    assert isinstance(t, wire.T) and (t.ts_type, t.value) == (0, NTP_T)
    r = d.get("RANDRi")
    assert isinstance(r, wire.RandR) and r.rand == RANDRI
    assert [p.data for p in d.msg.all(wire.IDR)] == [ID_I, ID_KMS]  # type: ignore[attr-defined]
    tp = d.get("TP")
    assert isinstance(tp, wire.TP)
    assert (tp.head.ticket_type, tp.head.subtype, tp.head.version, tp.head.prf_func) == (1, 1, 1, 1)
    assert str(tp.head.flags) == "DEFGH-----NO"
    assert [(p.role, p.data) for p in tp.tp_payloads] == [(2, ID_R)]  # type: ignore[attr-defined]
    # the package's encoder gives back the same bytes
    assert wire.encode_message(hdr, d.msg.payloads) == raw
    # the MAC is HMAC-SHA-256 over the message and the two identities (5.5 Table 5.2)
    k = protection_keys(1, PSK_A, CSB, 1, RANDRI, None, mac_alg=2)
    assert mac_input(d, identities=(ID_I, ID_KMS)) == raw[:-32] + ID_I + ID_KMS
    verify_mac(d, k.auth)


def test_request_init_v_flag_zero_is_accepted_too() -> None:
    """4.2.1.1 says V MUST be 1, 6.1 says MUST be 0 outside CSB updates: both are accepted (README)."""
    raw = bytearray(request_init_bytes())
    raw[3] = 0x01
    assert decode(bytes(raw)).msg.header.v_flag is False


def test_wrong_mac_is_refused_with_the_clause() -> None:
    raw = request_init_bytes(mac=bytes(32))
    d = decode(raw)
    k = protection_keys(1, PSK_A, CSB, 1, RANDRI, None, mac_alg=2)
    with pytest.raises(MikeyReject) as e:
        verify_mac(d, k.auth)
    assert (e.value.code, e.value.clause, e.value.err_no) == ("rfc6043.mac.bad", "RFC 6043 5.5", 0)


def test_generic_id_map_from_the_figure() -> None:
    """RFC 6043 6.1.1: CS ID | Prot type | S #P | Ps | Session Data Length | Session Data | SPI Length |
    SPI."""
    cs1 = h("01 00 01 05 0004 11223344 04 a1a2a3a4")  # SRTP, S=0, #P=1 (policy 5), SSRC only, SPI 4 bytes
    cs2 = h("02 00 81 05 000a 55667788 00000001 0102 00")  # S=1: SSRC, ROC, SEQ; no SPI (initial message)
    hdr = (
        h("01 0e 05 01") + CSB.to_bytes(4, "big") + h("02 02") + cs1 + cs2
    )  # TRANSFER_INIT, GENERIC-ID, 2 CS
    msg = hdr + h("00 00") + NTP_T  # + T as the last payload (structure only)
    m = wire.decode_structure(msg)
    a, b = m.header.cs_map
    assert isinstance(a, wire.GenericCs) and isinstance(b, wire.GenericCs)
    assert (a.cs_id, a.prot_type, a.s_flag, a.policies, a.ssrc, a.roc, a.spi) == (
        1,
        0,
        False,
        (5,),
        0x11223344,
        None,
        h("a1a2a3a4"),
    )
    assert (b.cs_id, b.s_flag, b.ssrc, b.roc, b.seq, b.spi) == (2, True, 0x55667788, 1, 0x0102, b"")
    assert m.header.encode(5) == hdr
    bad = hdr.replace(h("81 05 000a"), h("81 05 0004"))  # S=1 with only an SSRC
    with pytest.raises(MikeyReject) as e:
        wire.decode_structure(bad + h("00 00") + NTP_T)
    assert e.value.code == "rfc6043.generic_id.session_data"


def test_key_data_sub_payload_from_the_figure() -> None:
    """RFC 3830 6.13: Next | Type(4) KV(4) | Key data len | Key data | [Salt len | Salt] | KV data (SPI)."""
    plain = (
        h("14 11 0010") + bytes(16) + h("000e") + bytes(14) + h("02 beef")
    )  # TGK+SALT, KV=SPI, next Key data
    plain += h("00 61 0020") + b"\x07" * 32 + h("01 09")  # MPK, SPI 09, last
    a, b = wire.decode_key_data(plain)
    assert (a.key_type, a.kv_type, len(a.key), len(a.salt or b""), a.spi) == (1, 1, 16, 14, h("beef"))
    assert (b.key_type, b.spi) == (6, h("09"))
    assert wire.encode_key_data([a, b]) == plain
    with pytest.raises(MikeyReject) as e:
        wire.decode_key_data(plain[:-1])
    assert e.value.code == "rfc6043.truncated"
    with pytest.raises(MikeyReject) as e:
        wire.decode_key_data(plain.replace(h("14 11"), h("0b 11")))
    assert e.value.code == "rfc6043.keydata.next"


# --------------------------------------------------------------------------------------------- strictness


def test_every_truncation_is_refused_with_a_reason() -> None:
    raw = request_init_bytes()
    for n in range(len(raw)):
        with pytest.raises(MikeyReject):
            decode(raw[:n])


def test_trailing_byte_is_refused() -> None:
    with pytest.raises(MikeyReject) as e:
        decode(request_init_bytes() + b"\x00")
    assert e.value.code == "rfc6043.trailing"


def test_every_length_and_code_byte_change_is_refused_or_decodes_cleanly() -> None:
    """Bumping any byte never raises anything but MikeyReject (lengths are all checked)."""
    raw = request_init_bytes()
    for i in range(len(raw)):
        for delta in (1, 0xFF):
            bad = bytearray(raw)
            bad[i] = (bad[i] + delta) & 0xFF
            try:
                decode(bytes(bad))
            except MikeyReject:
                pass


def test_unknown_code_points_are_named() -> None:
    raw = request_init_bytes()
    cases = {
        2: (0x13, "rfc6043.payload.unknown"),  # HDR next payload 19 (unassigned)
        1: (0x07, "rfc6043.hdr.data_type"),  # data type 7 (DHHMAC) is not a MIKEY-TICKET message
        0: (0x02, "rfc6043.hdr.version"),
        9: (0x00, "rfc6043.hdr.cs"),  # SRTP-ID map type in a REQUEST_INIT
    }
    for off, (val, code) in cases.items():
        bad = bytearray(raw)
        bad[off] = val
        with pytest.raises(MikeyReject) as e:
            decode(bytes(bad))
        assert e.value.code == code


def test_order_and_cardinality_follow_42() -> None:
    raw = request_init_bytes()
    d = decode(raw)
    payloads = list(d.msg.payloads)
    swapped = [payloads[1], payloads[0], *payloads[2:]]  # RANDRi before T
    with pytest.raises(MikeyReject) as e:
        decode(wire.encode_message(d.msg.header, swapped))
    assert e.value.code == "rfc6043.missing" and "4.2.1" in e.value.clause
    no_rand = [p for p in payloads if not isinstance(p, wire.RandR)]
    with pytest.raises(MikeyReject) as e:
        decode(wire.encode_message(d.msg.header, no_rand))
    assert e.value.code == "rfc6043.missing"
    extra = [*payloads[:-1], wire.Rand(b"x" * 16), payloads[-1]]
    with pytest.raises(MikeyReject) as e:
        decode(wire.encode_message(d.msg.header, extra))
    assert e.value.code == "rfc6043.unexpected"


def test_id_payload_instead_of_idr_is_refused() -> None:
    raw = request_init_bytes()
    bad = raw.replace(idr(14, 1, 1, ID_I), h("0e 01") + len(ID_I).to_bytes(2, "big") + ID_I)
    bad = bad.replace(h("0f 00") + NTP_T + h("0e 01 20"), h("0f 00") + NTP_T + h("06 01 20"))
    with pytest.raises(MikeyReject) as e:
        decode(bad)
    assert e.value.clause == "RFC 6043 6.6"


def test_tp_k_flag_and_flag_dependencies() -> None:
    with pytest.raises(MikeyReject) as e:  # K set by the Initiator
        decode(request_init_bytes(flags24=h("03 f2 60")))
    assert e.value.code == "rfc6043.tp.k_flag"
    with pytest.raises(MikeyReject) as e:  # G without F
        decode(request_init_bytes(flags24=h("03 b0 60")))
    assert "G implies F" in e.value.reason


def test_mixing_256_bit_prf_and_sha1_mac_is_refused() -> None:
    raw = request_init_bytes()
    bad = raw[:-34] + h("00 01") + bytes(20)  # V with HMAC-SHA-1-160 under PRF-HMAC-SHA-256
    with pytest.raises(MikeyReject) as e:
        decode(bad)
    assert e.value.clause == "RFC 6043 12.1"


# --------------------------------------------------------------------------------------------- full rounds


class Lab:
    def __init__(self, **kms_kw) -> None:
        self.psks = {b"btid-a": os.urandom(32), b"btid-b": os.urandom(32), b"btid-c": os.urandom(32)}
        self.kms = KmsEngine(self.psks.get, os.urandom(32), kms_identity=ID_KMS, **kms_kw)

    def peer(self, ident: bytes, btid: bytes) -> Peer:
        return Peer(ident, self.psks[btid], psk_id=btid, kms_identity=ID_KMS)


SPS = [SP(1, 0, ((0, b"\x01"), (1, b"\x10"), (2, b"\x01"), (4, b"\x0e")))]


@pytest.mark.parametrize("forking", [False, True])
@pytest.mark.parametrize("g", [True, False])
@pytest.mark.parametrize("iv", ["response", "initial"])
def test_full_round_initiator_kms_responder(forking: bool, g: bool, iv: str) -> None:
    lab = Lab(iv_timestamp=iv)
    alice, bob = lab.peer(ID_I, b"btid-a"), lab.peer(ID_R, b"btid-b")
    flags = Flags(D=True, E=True, F=True, G=g, H=True, I=forking, J=True, N=True, O=True)
    ri = alice.request_init([ID_R], flags=flags)
    issued = alice.accept_request_resp(ri, lab.kms.handle(ri))
    assert issued.ticket.head.flags.I is forking
    assert issued.iv_reading == ("REQUEST_RESP T" if iv == "response" else "REQUEST_INIT T")
    ti = alice.transfer_init(
        issued,
        responder=ID_R,
        sessions=[srtp_cs(1, ssrc=0xA1, policies=(1,)), srtp_cs(2, policies=(1,))],
        sps=SPS,
    )
    tr, bob_keys = bob.respond(ti, lab.kms.handle)
    assert tr is not None
    d = decode(tr, initial=ti)
    assert (d.get("RANDRr") is not None) is g
    assert (d.get("RANDRkms") is not None) is forking
    alice_keys = alice.accept_transfer_resp(ti, tr, issued)
    audit = lab.kms.audit_transfer(ti, tr)
    as_tuple = [
        [(k.cs_id, k.ssrc, k.tek, k.salt) for k in ks] for ks in (alice_keys, bob_keys, audit.cs_keys)
    ]
    assert as_tuple[0] == as_tuple[1] == as_tuple[2]
    assert all(len(k.tek) == 16 and len(k.salt) == 14 for k in alice_keys)
    assert alice_keys[0].tek != alice_keys[1].tek  # one key stream per crypto session (CS ID in the label)
    assert alice_keys[1].ssrc is not None  # the Responder filled in its SSRC (4.2.2.3)


def test_forked_responders_get_different_keys() -> None:
    lab = Lab()
    alice = lab.peer(ID_I, b"btid-a")
    group = b"sip:it-support@example.org"
    bob, carol = (
        Peer(group, lab.psks[b"btid-b"], psk_id=b"btid-b"),
        Peer(group, lab.psks[b"btid-c"], psk_id=b"btid-c"),
    )
    lab.kms._authorize = lambda who, allowed: who if who in allowed else None  # same group identity
    flags = Flags(D=True, E=True, F=True, G=True, H=True, I=True, J=True, N=True, O=True)
    ri = alice.request_init([group], flags=flags)
    issued = alice.accept_request_resp(ri, lab.kms.handle(ri))
    ti = alice.transfer_init(issued, responder=group, sessions=[srtp_cs(1, ssrc=7, policies=(1,))], sps=SPS)
    tr_b, kb = bob.respond(ti, lab.kms.handle)
    tr_c, kc = carol.respond(ti, lab.kms.handle)
    assert kb[0].tek != kc[0].tek  # different RANDRkms -> different TGK'
    assert tr_b is not None and tr_c is not None
    assert alice.accept_transfer_resp(ti, tr_b, issued)[0].tek == kb[0].tek
    assert alice.accept_transfer_resp(ti, tr_c, issued)[0].tek == kc[0].tek


def test_kms_refuses_unauthorized_responder_and_tampered_ticket() -> None:
    lab = Lab()
    alice, mallory = lab.peer(ID_I, b"btid-a"), lab.peer(b"sip:mallory@example.org", b"btid-c")
    ri = alice.request_init([ID_R])
    issued = alice.accept_request_resp(ri, lab.kms.handle(ri))
    ti = alice.transfer_init(issued, responder=ID_R, sessions=[srtp_cs(1, ssrc=1, policies=(1,))], sps=SPS)
    with pytest.raises(MikeyErrorReceived) as e:
        mallory.respond(ti, lab.kms.handle)
    assert e.value.err_nos == [7]
    assert lab.kms.events[-1].clause == "RFC 6043 4.2.3.4"
    # flip one byte inside the Ticket Data: the KMS answers Invalid TICKET (14)
    d = decode(ti)
    t = d.get("TICKET")
    assert isinstance(t, wire.Ticket)
    bad_ticket = wire.Ticket(t.head, t.tp_data, t.ticket_data[:-1] + bytes([t.ticket_data[-1] ^ 1]))
    bob = lab.peer(ID_R, b"btid-b")
    bad_ti = wire.encode_message(d.msg.header, [bad_ticket if p is t else p for p in d.msg.payloads])
    with pytest.raises(MikeyErrorReceived) as e:
        bob.respond(bad_ti, lab.kms.handle)
    assert e.value.err_nos == [14]


def test_kms_error_message_for_a_bad_mac_and_for_garbage() -> None:
    lab = Lab()
    ri = bytearray(lab.peer(ID_I, b"btid-a").request_init([ID_R]))
    ri[-1] ^= 1
    err = decode(lab.kms.handle(bytes(ri)))
    assert err.name == "Error" and [p.error_no for p in err.msg.all(wire.Err)] == [0]  # type: ignore[attr-defined]
    assert err.msg.header.csb_id == decode(bytes(ri)).msg.header.csb_id  # 5.4: same CSB ID
    garbage = decode(lab.kms.handle(b"\x01\x0b\x05\x01\x00\x00\x00\x09\x00"))
    assert garbage.name == "Error" and garbage.msg.header.csb_id == 9


def test_short_rand_is_refused_by_the_kms() -> None:
    """12.1: RANDRi + RANDRr MUST be at least as long as the longest pre-shared key."""
    lab = Lab()
    alice = lab.peer(ID_I, b"btid-a")
    alice._rand = lambda n=32: os.urandom(16)  # type: ignore[method-assign]
    ri = alice.request_init([ID_R])
    err = decode(lab.kms.handle(ri))
    assert err.name == "Error"
    assert lab.kms.events[-1].clause == "RFC 6043 12.1"
    randri = decode(ri).get("RANDRi")
    assert isinstance(randri, wire.RandR)
    key = protection_keys(1, lab.psks[b"btid-a"], err.msg.header.csb_id, 1, randri.rand, None, mac_alg=2)
    verify_mac(err, key.auth)  # 5.4: the Error MAC is under the auth_key of the refused REQUEST_INIT


def test_secrets_are_not_in_reprs_or_errors() -> None:
    lab = Lab()
    alice = lab.peer(ID_I, b"btid-a")
    ri = alice.request_init([ID_R])
    issued = alice.accept_request_resp(ri, lab.kms.handle(ri))
    texts = [
        repr(issued),
        repr(lab.kms),
        repr(alice),
        repr(ProtKeys(b"\x11" * 16, b"\x22" * 32, b"\x33" * 14)),
        repr(KeyData(0, b"\x44" * 16)),
        *(repr(e) for e in lab.kms.events),
    ]
    secrets = [lab.psks[b"btid-a"], issued.mpki, *(k.key for k in issued.session_keys), b"\x44" * 16]
    for t in texts:
        for s in secrets:
            assert s.hex() not in t and repr(s) not in t


def test_the_package_never_imports_ue_agent() -> None:
    """Independence: the package uses the standard library and `cryptography` only."""
    import ast
    import pathlib

    pkg = pathlib.Path(__file__).parent / "independent" / "rfc6043"
    for f in pkg.glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for n in names:
                assert n.split(".")[0] in {
                    "__future__",
                    "cryptography",
                    "hashlib",
                    "hmac",
                    "os",
                    "time",
                    "collections",
                    "dataclasses",
                    "typing",
                }, (f.name, n)


def test_kms_hooks_identity_skew_flags_validity_and_transcript() -> None:
    import dataclasses
    import time

    lab = Lab()
    alice = lab.peer(ID_I, b"btid-a")
    lab.kms._owns = lambda psk_id, ident: False
    err = decode(lab.kms.handle(alice.request_init([ID_R])))
    assert err.name == "Error" and [p.error_no for p in err.msg.all(wire.Err)] == [7]  # type: ignore[attr-defined]
    lab.kms._owns = lambda psk_id, ident: True
    lab.kms.max_skew = 30
    lab.kms._now = lambda: time.time() + 3600
    err = decode(lab.kms.handle(alice.request_init([ID_R])))
    assert [p.error_no for p in err.msg.all(wire.Err)] == [1]  # type: ignore[attr-defined]
    lab.kms._now = time.time
    lab.kms._grant_flags = lambda f: dataclasses.replace(f, I=False, J=False)
    lab.kms.max_validity = 60
    ri = alice.request_init(
        [ID_R],
        flags=Flags(D=True, E=True, F=True, G=True, H=True, I=True, J=True, N=True, O=True),
        validity=7200,
    )
    issued = alice.accept_request_resp(ri, lab.kms.handle(ri))
    f = issued.ticket.head.flags
    assert (f.I, f.J, f.K) == (False, False, True)
    tre = [p for p in issued.ticket.tp_payloads if isinstance(p, wire.TR) and p.role == 3]
    assert len(tre) == 1 and int.from_bytes(tre[0].value, "big") - 2208988800 <= time.time() + 61
    assert len(lab.kms.transcript) == 3 and lab.kms.transcript[-1][0] == ri
    rr = decode(lab.kms.transcript[-1][1])
    idrkms = rr.get("IDRkms")
    assert isinstance(idrkms, wire.IDR) and idrkms.id_type == 1  # the request's IDRkms ID Type is kept


def test_f_flag_zero_means_no_transfer_resp() -> None:
    lab = Lab()
    alice, bob = lab.peer(ID_I, b"btid-a"), lab.peer(ID_R, b"btid-b")
    flags = Flags(D=True, E=True, F=False, G=False, H=True, J=True, N=True, O=True)
    ri = alice.request_init([ID_R], flags=flags)
    issued = alice.accept_request_resp(ri, lab.kms.handle(ri))
    ti = alice.transfer_init(issued, responder=ID_R, sessions=[srtp_cs(1, ssrc=5, policies=(1,))], sps=SPS)
    assert decode(ti).msg.header.v_flag is False  # V agrees with F (4.2.2.1)
    tr, kb = bob.respond(ti, lab.kms.handle)
    assert tr is None
    ka = alice.initiator_keys_without_response(ti, issued)
    assert [(k.tek, k.salt) for k in ka] == [(k.tek, k.salt) for k in kb]


def test_absent_identities_either_reading_verifies() -> None:
    """4.2.2.1: IDRi / IDRr MAY be left out; the MAC then covers either the empty string or the identities
    known by other means (5.5 does not say): the checker accepts both."""
    lab = Lab()
    alice, bob = lab.peer(ID_I, b"btid-a"), lab.peer(ID_R, b"btid-b")
    ri = alice.request_init([ID_R])
    issued = alice.accept_request_resp(ri, lab.kms.handle(ri))
    for ids in (None, (ID_I, ID_R)):
        ti = alice.transfer_init(
            issued,
            responder=None,
            include_idri=False,
            mac_identities=ids,
            sessions=[srtp_cs(1, ssrc=5, policies=(1,))],
            sps=SPS,
        )
        tr, kb = bob.respond(ti, lab.kms.handle)
        assert tr is not None
        assert alice.accept_transfer_resp(ti, tr, issued)[0].tek == kb[0].tek


def test_short_rands_in_the_transfer_are_refused() -> None:
    """12.1: RANDRi + RANDRr at least as long as the longest MPK/TGK (32 bytes with PRF-HMAC-SHA-256)."""
    from tests.independent.rfc6043 import check_transfer

    lab = Lab()
    alice = lab.peer(ID_I, b"btid-a")
    ri = alice.request_init(
        [ID_R], flags=Flags(D=True, E=True, F=True, G=False, H=True, J=True, N=True, O=True)
    )
    issued = alice.accept_request_resp(ri, lab.kms.handle(ri))
    alice._random = lambda n: os.urandom(16)
    ti = alice.transfer_init(
        issued, responder=ID_R, sessions=[srtp_cs(1, ssrc=5, policies=(1,))], sps=SPS, csb_id=7
    )
    with pytest.raises(MikeyReject) as e:
        check_transfer(ti, None, ticket_prf=1, mpki=issued.mpki, mpkr=None, session_keys=issued.session_keys)
    assert e.value.clause == "RFC 6043 12.1"


def _all_messages() -> list[tuple[bytes, bytes | None]]:
    """(message, the message it answers) for every type, from a forking round through the package."""
    lab = Lab()
    alice, bob = lab.peer(ID_I, b"btid-a"), lab.peer(ID_R, b"btid-b")
    flags = Flags(D=True, E=True, F=True, G=True, H=True, I=True, J=True, N=True, O=True)
    ri = alice.request_init([ID_R], flags=flags)
    issued = alice.accept_request_resp(ri, lab.kms.handle(ri))
    ti = alice.transfer_init(
        issued,
        responder=ID_R,
        sessions=[srtp_cs(1, ssrc=1, policies=(1,)), srtp_cs(2, policies=(1,))],
        sps=SPS,
    )
    tr, _ = bob.respond(ti, lab.kms.handle)
    assert tr is not None
    out: list[tuple[bytes, bytes | None]] = [(ti, None), (tr, ti)]
    for req, resp in lab.kms.transcript:
        out += [(req, None), (resp, req)]
    bad = bytearray(ri)
    bad[-1] ^= 1
    out.append((lab.kms.handle(bytes(bad)), None))  # an Error message
    return out


def test_every_message_type_round_trips_and_refuses_every_truncation() -> None:
    msgs = _all_messages()
    assert {decode(m, initial=i).name for m, i in msgs} == {
        "REQUEST_INIT_PSK",
        "REQUEST_RESP",
        "TRANSFER_INIT",
        "TRANSFER_RESP",
        "RESOLVE_INIT_PSK",
        "RESOLVE_RESP",
        "Error",
    }
    for m, i in msgs:
        d = decode(m, initial=i)
        assert wire.encode_message(d.msg.header, d.msg.payloads) == m
        for n in range(len(m)):
            with pytest.raises(MikeyReject):
                decode(m[:n], initial=i)
        with pytest.raises(MikeyReject):
            decode(m + b"\x00", initial=i)


def test_byte_changes_in_every_message_type_raise_only_mikey_reject() -> None:
    for m, i in _all_messages():
        for pos in range(len(m)):
            for delta in (1, 0x80):
                bad = bytearray(m)
                bad[pos] = (bad[pos] + delta) & 0xFF
                try:
                    decode(bytes(bad), initial=i)
                except MikeyReject:
                    pass


def test_random_bytes_raise_only_mikey_reject() -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(max_examples=300, derandomize=True, suppress_health_check=[HealthCheck.too_slow], deadline=None)
    @given(st.binary(max_size=200), st.sampled_from([6, 11, 13, 14, 15, 16, 18]))
    def run(tail: bytes, dt: int) -> None:
        try:
            decode(bytes([1, dt]) + tail)
        except MikeyReject:
            pass

    run()


def test_kms_does_not_answer_an_error_message_with_an_error() -> None:
    """5.4: Error messages report errors in initial and response messages, but not in Error messages."""
    lab = Lab()
    err = lab.kms.handle(b"\x01\x0b\x05\x01\x00\x00\x00\x09\x00")
    assert decode(err).name == "Error"
    assert lab.kms.handle(err) == b""
    assert lab.kms.events[-1].clause == "RFC 6043 5.4"


def test_transfer_init_v_flag_readings() -> None:
    """4.2.2.1 (V = F) and 6.1 (V = 0 outside CSB updates) are both accepted; V = 1 with F = 0 is not."""
    lab = Lab()
    alice = lab.peer(ID_I, b"btid-a")
    for f_flag in (True, False):
        flags = Flags(D=True, E=True, F=f_flag, G=f_flag, H=True, J=True, N=True, O=True)
        ri = alice.request_init([ID_R], flags=flags)
        issued = alice.accept_request_resp(ri, lab.kms.handle(ri))
        ti = alice.transfer_init(
            issued, responder=ID_R, sessions=[srtp_cs(1, ssrc=5, policies=(1,))], sps=SPS
        )
        d = decode(ti)
        assert d.msg.header.v_flag is f_flag
        flipped = bytearray(ti)
        flipped[3] ^= 0x80
        if f_flag:
            assert decode(bytes(flipped)).msg.header.v_flag is False
        else:
            with pytest.raises(MikeyReject) as e:
                decode(bytes(flipped))
            assert e.value.code == "rfc6043.hdr.v_flag"
