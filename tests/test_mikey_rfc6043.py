"""MIKEY-TICKET from the RFC text: payloads assembled by hand from the figures of RFC 3830 / RFC 6043,
byte for byte; every payload's truncation and bad lengths; labels, MAC coverage (RFC 6043 5.5
Table 5.2) and key derivations (5.1.1-5.1.3, A.2) recomputed here with a PRF written from RFC 3830
4.1.2 and RFC 6043 6.1, not with the project's functions."""

from __future__ import annotations

import hashlib
import hmac
import os

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ue_agent.crypto import mikey_prf
from ue_agent.errors import MikeyError
from ue_agent.kms import mikey, service, session
from ue_agent.kms.streams import SrtpStream, TlsStream
from ue_agent.secret import Secret

H = bytes.fromhex


def prf256(inkey: bytes, label: bytes, n: int) -> bytes:
    """PRF-HMAC-SHA-256 (RFC 6043 6.1 on RFC 3830 4.1.2): 256-bit inkey chunks, 256-bit blocks."""
    m = -(-n // 32)
    out = bytes(m * 32)
    for i in range(0, len(inkey), 32):
        s, a, p = inkey[i : i + 32], label, b""
        for _ in range(m):
            a = hmac.new(s, a, hashlib.sha256).digest()
            p += hmac.new(s, a + label, hashlib.sha256).digest()
        out = bytes(x ^ y for x, y in zip(out, p, strict=True))
    return out[:n]


def u16(n: int) -> bytes:
    return n.to_bytes(2, "big")


# ---------------------------------------------------------------------------- payloads by hand

ALICE = b"sip:alice@example.org"  # 21 octets
BOB = b"sip:bob@example.org"  # 19 octets
KMS = b"kms.example.org"  # 15 octets
# TP/TICKET, RFC 6043 6.10: PRF Func 7 bits = 1, then D E F G H I J K L M N O, Res 5 bits:
# 0000001|1  1111 1100  0110 0000 -> 03 FC 60 (D..J, N, O set; K, L, M clear)
PRF_FLAGS = H("03fc60")
FLAGS = (
    mikey.F_D | mikey.F_E | mikey.F_F | mikey.F_G | mikey.F_H | mikey.F_I | mikey.F_J | mikey.F_N | mikey.F_O
)


def tp_data_bytes() -> bytes:
    # first payload IDR (14), then IDRr: next 0, role 2, type URI 1, ID len, ID data
    return H("0e") + H("00 02 01") + u16(len(BOB)) + BOB


def test_request_init_psk_assembled_from_the_figures():
    rand = bytes(range(32))
    raw = (
        H("01 0b 05 81 12345678 00 01")  # HDR: v1, REQUEST_INIT_PSK, next T, V=1|PRF 1, CSB, #CS 0, Empty map
        + H("0f 00 e8d4a51000000000")  # T: next RANDR, NTP-UTC
        + H("0e 01 20")
        + rand  # RANDR: next IDR, role RANDRi, length 32
        + H("0e 01 01")
        + u16(len(ALICE))
        + ALICE  # IDRi (URI)
        + H("10 03 00")
        + u16(len(KMS))
        + KMS  # IDRkms (NAI), next TP
        + H("0e 0001 01 01")
        + PRF_FLAGS
        + u16(len(tp_data_bytes()))
        + tp_data_bytes()  # TP: type 1 subtype 1 version 1
        + H("09 04 00 0009")
        + b"B-TID@bsf"  # IDRpsk, next V
        + H("00 02")
        + bytes(32)  # V: HMAC-SHA-256-256
    )
    msg = mikey.Message.decode(raw)
    assert [type(p).__name__ for p in msg] == [
        "Timestamp",
        "RandRole",
        "IdRole",
        "IdRole",
        "TicketPolicy",
        "IdRole",
        "Verification",
    ]
    h = msg.header
    assert (h.data_type, h.v, h.prf_func, h.csb_id, h.cs_map_type) == (
        11,
        True,
        1,
        0x12345678,
        mikey.MAP_EMPTY,
    )
    tp = msg.one(mikey.TicketPolicy)
    assert (tp.ticket_type, tp.subtype, tp.version, tp.prf_func, tp.flags) == (1, 1, 1, 1, FLAGS)
    assert mikey.flag_text(tp.flags) == "DEFGHIJNO"
    assert tp.policy_all(mikey.IdRole, mikey.ROLE_R)[0].data == BOB
    assert msg.one(mikey.RandRole, mikey.RAND_ROLE_I).rand == rand
    assert msg.encode() == raw
    # the same message built from dataclasses gives the same octets
    built = mikey.Message(
        mikey.Header(11, 0x12345678, 1, True, mikey.MAP_EMPTY),
        [
            mikey.Timestamp(0, 0xE8D4A51000000000),
            mikey.RandRole(1, rand),
            mikey.IdRole(1, 1, ALICE),
            mikey.IdRole(3, 0, KMS),
            mikey.TicketPolicy(1, 1, 1, 1, FLAGS, [mikey.IdRole(2, 1, BOB)]),
            mikey.IdRole(4, 0, b"B-TID@bsf"),
            mikey.Verification(2, bytes(32)),
        ],
    )
    assert built.encode() == raw


def test_ticket_payload_and_base_ticket_data_by_hand():
    tdata = (
        H("05 0000")  # THDR (A.3): next T, THDR Data length 0
        + H("0b 00 0000000000000001")  # T: next RAND
        + H("01 10")
        + bytes(16)  # RAND: next KEMAC, length 16
        + H("0e 03 0004 aabbccdd 00")  # KEMAC: next IDR, AES-CM-256, 4 octets, MAC NULL
        + H("09 04 02 0002 0001")  # IDRpsk, byte string (6.5)
        + H("00 02")
        + bytes(32)  # V
    )
    idata = H("09") + H("09 02") + bytes(32) + H("00 02") + bytes(32)  # first payload V, Vi, Vr
    payload = (
        H("0001 01 01")
        + PRF_FLAGS
        + u16(len(tp_data_bytes()))
        + tp_data_bytes()
        + u16(len(tdata))
        + tdata
        + u16(len(idata))
        + idata
    )
    raw = H("01 0e 11 81 00000001 00 01") + H("00") + payload  # HDR (next TICKET 17), TICKET last
    msg = mikey.Message.decode(raw)
    t = msg.one(mikey.Ticket)
    assert t.ticket_data == tdata and t.initiator_data == idata and t.flags == FLAGS
    assert [type(p).__name__ for p in t.initiator_payloads()] == ["Verification", "Verification"]
    thdr, inner = mikey.decode_base_ticket(tdata)
    assert thdr.data == b"" and [type(p).__name__ for p in inner] == [
        "Timestamp",
        "Rand",
        "Kemac",
        "IdRole",
        "Verification",
    ]
    assert msg.encode() == raw
    # RFC 6043 5.5: a TRANSFER_INIT's MAC does not cover Initiator Data length / Initiator Data
    assert msg.encode_without_initiator_data() == raw[: -(2 + len(idata))]


def test_generic_id_map_error_and_key_data_by_hand():
    cs1 = H("01 00 01 00 0004 0000cafe 04 01020304")  # CS 1, SRTP, S=0 #P=1, policy 0, SSRC, SPI
    cs2 = H("02 00 81 00 000a 0000beef 00000003 0000 04 01020304")  # S=1: SSRC || ROC || SEQ
    cs3 = H("03 00 01 00 0000 00")  # session data and SPI left to the responder (4.2.2.3)
    raw = H("01 0e 0c 81 00000001 03 02") + cs1 + cs2 + cs3 + H("00 0e 0000")  # + ERR Invalid TICKET
    msg = mikey.Message.decode(raw)
    m = msg.header.cs_map
    assert [c.cs_id for c in m] == [1, 2, 3] and m[1].s_flag and m[2].session_data == b""
    assert msg.one(mikey.Error).error_no == mikey.ERR_INVALID_TICKET == 14
    assert msg.encode() == raw
    mpk = bytes(range(32))
    kd = H("14 61 0020") + mpk + H("04 0a0b0c0d") + H("00 01 0020") + mpk + H("04 01020304")
    items = mikey.KeyData.decode_all(kd)
    assert [(k.key_type, k.spi) for k in items] == [
        (mikey.KEY_MPK, H("0a0b0c0d")),
        (mikey.KEY_TGK, H("01020304")),
    ]
    assert mikey.KeyData.encode_all(items) == kd


def test_tr_randr_idr_layouts():
    assert mikey.TimestampRole(3, 3, 0xE8D4A510).body() == H("03 03 e8d4a510")  # 6.4
    assert mikey.RandRole(3, b"\x01" * 4).body() == H("03 04 01010101")  # 6.8
    assert mikey.IdRole(2, 1, BOB).body() == H("02 01") + u16(19) + BOB  # 6.6
    assert mikey.Error(14).body() == H("0e 0000")  # RFC 3830 6.12
    assert mikey.Verification(2, bytes(32)).body() == H("02") + bytes(32)  # RFC 3830 6.9, 6043 6.2


# ---------------------------------------------------------------------------- truncation, lengths


def _one(ptype: int, body: bytes) -> bytes:
    return H(f"01 06 {ptype:02x} 01 00000001 00 01") + H("00") + body


CASES = {
    # payload: (type, body, offsets of its length fields in the body: (offset, width))
    "T": (5, H("00 0102030405060708"), []),
    "TR": (13, H("03 03 01020304"), []),
    "RAND": (11, H("10") + bytes(16), [(0, 1)]),
    "RANDR": (15, H("01 10") + bytes(16), [(1, 1)]),
    "IDR": (14, H("02 01") + u16(19) + BOB, [(2, 2)]),
    "ID": (6, H("01") + u16(19) + BOB, [(1, 2)]),
    "KEMAC": (1, H("03 0004 aabbccdd 00"), [(1, 2)]),
    "V": (9, H("02") + bytes(32), []),
    "SP": (10, H("00 00 0006 00 01 01 0b 01 0a"), [(2, 2)]),
    "ERR": (12, H("0e 0000"), []),
    "EXT": (21, H("f1 0003 616263"), [(1, 2)]),
    "TP": (16, H("0001 01 01") + PRF_FLAGS + u16(len(tp_data_bytes())) + tp_data_bytes(), [(7, 2)]),
    "TICKET": (
        17,
        H("0001 01 01") + PRF_FLAGS + u16(len(tp_data_bytes())) + tp_data_bytes() + H("0002 abcd 0000"),
        [(7, 2), (9 + len(tp_data_bytes()), 2), (13 + len(tp_data_bytes()), 2)],
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_payload_truncated_or_with_a_wrong_length(name):
    ptype, body, lengths = CASES[name]
    raw = _one(ptype, body)
    assert mikey.Message.decode(raw).encode() == raw
    for n in range(len(raw)):
        with pytest.raises(MikeyError):
            mikey.Message.decode(raw[:n])
    for off, width in lengths:
        pos = 11 + off
        value = int.from_bytes(raw[pos : pos + width], "big")
        for bad in (value + 1, value - 1) if value else (value + 1,):
            mutated = raw[:pos] + bad.to_bytes(width, "big") + raw[pos + width :]
            with pytest.raises(MikeyError) as e:
                mikey.Message.decode(mutated)
            assert e.value.code in ("mikey.malformed", "mikey.unsupported")
    with pytest.raises(MikeyError) as e:
        mikey.Message.decode(raw + b"\x00")
    assert e.value.code == "mikey.malformed"


def test_generic_id_session_data_and_map_lengths():
    good = H("01 0e 00 81 00000001 01 02") + H("01 00 01 00 0004 0000cafe 00")
    assert mikey.Message.decode(good).header.cs_map[0].session_data == H("0000cafe")
    for n in range(len(good)):
        with pytest.raises(MikeyError):
            mikey.Message.decode(good[:n])
    with pytest.raises(MikeyError):  # #CS says 2
        mikey.Message.decode(good[:8] + b"\x02" + good[9:])
    with pytest.raises(MikeyError):  # an Empty map with #CS 1 (RFC 4563)
        mikey.Message.decode(H("01 0e 00 81 00000001 01 01"))
    # 6.1.1: SRTP session data is 0, 4 (S=0) or 10 (S=1) octets
    from ue_agent.kms import streams

    for data, s in ((H("0000cafe00"), False), (H("0000cafe"), True), (bytes(10), False)):
        with pytest.raises(MikeyError):
            streams.srtp_session(mikey.GenericCs(1, 0, (0,), data, b"", s))


# ---------------------------------------------------------------------------- labels


def test_labels_written_from_the_text():
    ri, rr, rk = b"I" * 32, b"R" * 32, b"K" * 32
    # 5.1.2: constant || 0xFF || CSB ID || 0x01/0x02 || len RANDRi || [RANDRi] || len RANDRr || [RANDRr]
    assert mikey_prf.transfer_label(0x2D22AC75, 0x01020304, 1, ri, None) == H(
        "2d22ac75 ff 01020304 01 20"
    ) + ri + H("00")
    assert mikey_prf.transfer_label(0x150533E1, 7, 2, None, rr) == H("150533e1 ff 00000007 02 00 20") + rr
    # 5.1.1: constant || 0xFF || 0xFFFFFFFF || 0x00 || len ID Data || ID Data || len RANDRkms || RANDRkms
    assert mikey_prf.fork_label(0x2B288856, BOB, rk) == H("2b288856 ff ffffffff 00 0013") + BOB + H("20") + rk
    # 5.1.3: constant || CS ID || 0xFFFFFFFF || 0x03 || len RANDRi || [RANDRi] || len RANDRr || [RANDRr]
    assert mikey_prf.tgk_label(0x2AD01C64, 2, ri, rr) == H("2ad01c64 02 ffffffff 03 20") + ri + H("20") + rr
    assert mikey_prf.tgk_label(0x39A2C14B, 1, ri, None) == H("39a2c14b 01 ffffffff 03 20") + ri + H("00")
    k = os.urandom(32)
    # A.2.1 (TPK) and A.2.2 (MPK): constant || 0xFF || 0xFFFFFFFF || 0x05/0x06 || length RAND || RAND
    e, s, a = mikey_prf.ticket_keys(k, rk, 1, 32, 14, 32)
    assert e == prf256(k, H("150533e1 ff ffffffff 05 20") + rk, 32)
    assert s == prf256(k, H("29b88916 ff ffffffff 05 20") + rk, 14)
    assert a == prf256(k, H("2d22ac75 ff ffffffff 05 20") + rk, 32)
    assert mikey_prf.mpk_split(k, rk, 1) == (
        prf256(k, H("220e99a2 ff ffffffff 06 20") + rk, 32),
        prf256(k, H("1f4d675b ff ffffffff 06 20") + rk, 32),
    )
    # 6.10: Vr auth_key from MPKr: constant || 0xFF || 0xFFFFFFFF || 0x04
    assert mikey_prf.initiator_data_auth_key(k, 1, 32) == prf256(k, H("2d22ac75 ff ffffffff 04"), 32)


# ---------------------------------------------------------------------------- a whole call, checked by hand

KMS_ID = "kms.example.org"
USERS = {"alice": "sip:alice@example.org", "bob": "sip:bob@example.org"}


def _aes_cm(key: bytes, salt: bytes, csb: int, t: int, data: bytes) -> bytes:
    """RFC 3830 4.2.3: IV = (S XOR (0x0000 || CSB ID || T)) || 0x0000, AES in counter mode."""
    x = b"\0\0" + csb.to_bytes(4, "big") + t.to_bytes(8, "big")
    iv = bytes(a ^ b for a, b in zip(salt, x, strict=True)) + b"\0\0"
    d = Cipher(algorithms.AES(key), modes.CTR(iv)).decryptor()
    return d.update(data) + d.finalize()


def _keys(inkey: bytes, csb: int, direction: int, ri: bytes | None, rr: bytes | None):
    tail = bytes([direction]) + bytes([len(ri or b"")]) + (ri or b"") + bytes([len(rr or b"")]) + (rr or b"")

    def d(c: str, n: int) -> bytes:
        return prf256(inkey, H(c) + b"\xff" + csb.to_bytes(4, "big") + tail, n)

    return d("150533e1", 32), d("29b88916", 14), d("2d22ac75", 32)


def _key_data(plain: bytes) -> list[tuple[int, bytes, bytes]]:
    """(type, key, SPI) from key data sub-payloads (RFC 3830 6.13), parsed here by hand."""
    out, pos, nxt = [], 0, 20
    while nxt:
        nxt, tk = plain[pos], plain[pos + 1]
        n = int.from_bytes(plain[pos + 2 : pos + 4], "big")
        key = plain[pos + 4 : pos + 4 + n]
        assert tk & 0x0F == 1, "every key carries an SPI (RFC 6043 6.2.1)"
        spi_len = plain[pos + 4 + n]
        out.append((tk >> 4, key, plain[pos + 5 + n : pos + 5 + n + spi_len]))
        pos += 5 + n + spi_len
    assert pos == len(plain)
    return out


def test_whole_call_macs_and_keys_from_the_text():
    now = 1_700_000_000.0
    psk = {n: os.urandom(32) for n in USERS}
    kms = service.KmsService(
        KMS_ID,
        lambda idr: Secret(psk[idr.decode()[5:]]) if idr else None,
        lambda idr: [USERS[idr.decode()[5:]]] if idr else [],
        clock=lambda: now,
    )
    # REQUEST_INIT: MAC over REQUEST_INIT || Identity_i || Identity_kms (Table 5.2)
    sent = session.build_request_init(
        USERS["alice"], [USERS["bob"]], "btid-alice", Secret(psk["alice"]), KMS_ID, now=now
    )
    raw = sent.raw
    csb = int.from_bytes(raw[4:8], "big")
    ri = sent.msg.one(mikey.RandRole, 1).rand
    _, _, auth = _keys(psk["alice"], csb, 1, ri, None)
    assert (
        raw[-32:]
        == hmac.new(auth, raw[:-32] + USERS["alice"].encode() + KMS_ID.encode(), hashlib.sha256).digest()
    )
    assert raw[-34:-32] == H("00 02")  # V, HMAC-SHA-256-256 with PRF-HMAC-SHA-256 (12.1)
    # REQUEST_RESP: MAC over REQUEST_RESP || REQUEST_INIT, keys with 0x02; KEMAC = MPKi || MPKr || TGK
    resp = kms.handle(raw)
    rmsg = mikey.Message.decode(resp)
    assert resp[:4] == H("01 0d 05 01") and resp[8:10] == H("00 01")  # V flag 0, same PRF, CSB, map
    assert resp[4:8] == raw[4:8]
    encr, salt, auth_r = _keys(psk["alice"], csb, 2, ri, None)
    assert resp[-32:] == hmac.new(auth_r, resp[:-32] + raw, hashlib.sha256).digest()
    kemac = rmsg.one(mikey.Kemac)
    assert (kemac.encr_alg, kemac.mac_alg) == (mikey.ENCR_AES_CM_256, mikey.MAC_NULL)
    t_resp = rmsg.one(mikey.Timestamp).value  # docs/kms.md: the T of the message carrying the KEMAC
    kd = _key_data(_aes_cm(encr, salt, csb, t_resp, kemac.encr_data))
    assert [k[0] for k in kd] == [6, 6, 0]  # MPK, MPK, TGK (RFC 6043 Table 6.7)
    mpk_i, mpk_r, tgk = (k[1] for k in kd)
    issued = session.read_request_resp(200, resp, sent, Secret(psk["alice"]), KMS_ID)
    assert issued.ticket.ticket_type == mikey.TICKET_MIKEY_BASE and issued.ticket.flags & mikey.F_I
    # TRANSFER_INIT: MAC under MPKi over TRANSFER_INIT (no Initiator Data fields) || Identity_i || Identity_r
    offer = session.build_transfer_init(
        issued, USERS["alice"], USERS["bob"], [SrtpStream(ssrc=0xCAFE), TlsStream()], KMS_ID, now
    )
    ti = offer.transfer_init
    tmsg = mikey.Message.decode(ti)
    ticket = tmsg.one(mikey.Ticket)
    idata = ticket.initiator_data
    csb_t = int.from_bytes(ti[4:8], "big")
    rand_i = tmsg.one(mikey.RandRole, 1).rand
    covered = ti[: -(34 + 2 + len(idata))] + ti[-34:-32]  # cut Initiator Data length + data by hand
    _, _, auth_ti = _keys(mpk_i, csb_t, 1, rand_i, None)
    mac_ti = hmac.new(
        auth_ti, covered + USERS["alice"].encode() + USERS["bob"].encode(), hashlib.sha256
    ).digest()
    assert ti[-32:] == mac_ti and ti[8:10] == H("03 02")  # 3 crypto sessions, GENERIC-ID
    # Initiator Data = V, Vi (= the TRANSFER_INIT MAC), Vr under MPKr (6.10)
    assert idata[:4] == H("09 09 02") + mac_ti[:1] and idata[3:35] == mac_ti
    vr_key = prf256(mpk_r, H("2d22ac75 ff ffffffff 04"), 32)
    assert idata[-32:] == hmac.new(vr_key, idata[:-32], hashlib.sha256).digest()
    # RESOLVE_INIT / RESOLVE_RESP through the KMS, then TRANSFER_RESP from bob
    tinit = session.inspect_transfer_init(ti)
    rs = session.build_resolve_init(USERS["bob"], tinit, "btid-bob", Secret(psk["bob"]), KMS_ID, now=now)
    rr_ = rs.msg.one(mikey.RandRole, 2).rand
    _, _, auth_rs = _keys(psk["bob"], int.from_bytes(rs.raw[4:8], "big"), 1, None, rr_)
    assert (
        rs.raw[-32:]
        == hmac.new(auth_rs, rs.raw[:-32] + USERS["bob"].encode() + KMS_ID.encode(), hashlib.sha256).digest()
    )
    rresp = kms.handle(rs.raw)
    _, _, auth_rr = _keys(psk["bob"], int.from_bytes(rs.raw[4:8], "big"), 2, None, rr_)
    assert rresp[-32:] == hmac.new(auth_rr, rresp[:-32] + rs.raw, hashlib.sha256).digest()
    resolved = session.read_resolve_resp(200, rresp, rs, Secret(psk["bob"]), KMS_ID)
    tresp, keys_b = session.accept_transfer_init(tinit, resolved, USERS["bob"], session.ReplayCache(), now)
    m = mikey.Message.decode(tresp)
    id_r = m.one(mikey.IdRole, mikey.ROLE_R).data
    rand_kms = m.one(mikey.RandRole, mikey.RAND_ROLE_KMS).rand
    rand_r = m.one(mikey.RandRole, mikey.RAND_ROLE_R).rand
    # 5.1.1: MPKr' and TGK' from the modifier (IDRr, RANDRkms)
    fork = H("ff ffffffff 00") + u16(len(id_r)) + id_r + bytes([len(rand_kms)]) + rand_kms
    mpk_rf = prf256(mpk_r, H("2b288856") + fork, 32)
    tgk_f = prf256(tgk, H("1512b54a") + fork, 32)
    _, _, auth_tr = _keys(mpk_rf, csb_t, 2, rand_i, rand_r)
    assert tresp[-32:] == hmac.new(auth_tr, tresp[:-32] + ti, hashlib.sha256).digest()
    # 5.1.3: per crypto session TEK/salt from TGK' with CS ID, RANDRi (H) and RANDRr (G)
    tail = H("ffffffff 03") + bytes([32]) + rand_i + bytes([32]) + rand_r

    def tek(cs: int, n: int = 16) -> bytes:
        return prf256(tgk_f, H("2ad01c64") + bytes([cs]) + tail, n)

    def slt(cs: int) -> bytes:
        return prf256(tgk_f, H("39a2c14b") + bytes([cs]) + tail, 14)

    # payload order of the figures of 4.2.1, 4.2.2, 4.2.3
    order = {
        "REQUEST_INIT_PSK": ["T", "RANDRi", "IDRi", "IDRkms", "TP", "IDRpsk", "V"],
        "REQUEST_RESP": ["T", "IDRkms", "TICKET", "KEMAC", "V"],
        "TRANSFER_INIT": ["T", "RANDRi", "IDRi", "IDRr", "SP", "SP", "TICKET", "V"],
        "RESOLVE_INIT_PSK": ["T", "RANDRr", "IDRr", "IDRkms", "TICKET", "IDRpsk", "V"],
        "RESOLVE_RESP": ["T", "IDRkms", "KEMAC", "IDRr", "RANDRkms", "V"],
        "TRANSFER_RESP": ["T", "RANDRr", "IDRr", "RANDRkms", "V"],
    }
    roles = {1: "i", 2: "r", 3: "kms", 4: "psk"}

    def name(p: mikey.Payload) -> str:
        if isinstance(p, mikey.IdRole):
            return "IDR" + roles[p.role]
        if isinstance(p, mikey.RandRole):
            return "RANDR" + roles[p.role]
        return {
            mikey.Timestamp: "T",
            mikey.TicketPolicy: "TP",
            mikey.Ticket: "TICKET",
            mikey.Kemac: "KEMAC",
        }.get(type(p), {mikey.SecurityPolicy: "SP", mikey.Verification: "V"}.get(type(p), "?"))

    for m_raw in (raw, resp, ti, rs.raw, rresp, tresp):
        m_ = mikey.Message.decode(m_raw)
        assert [name(p) for p in m_] == order[m_.name], m_.name
    _, keys_a = session.complete(offer, tresp, now)
    a0, b0 = keys_a[0], keys_b[0]
    assert a0.tx.master_key == tek(1) and a0.tx.master_salt == slt(1) and a0.tx.ssrc == 0xCAFE
    assert a0.rx.master_key == tek(2) and a0.rx.master_salt == slt(2) and b0.tx.master_key == tek(2)
    assert b0.rx.master_key == tek(1) and b0.tx.ssrc == a0.rx.ssrc != 0xCAFE
    assert keys_a[1].tx.key == keys_b[1].tx.key == tek(3, 32)  # TLS: PSK = TEK of CS 3
    # an Error message's MAC covers only itself (5.4), under the request's auth_key
    bad = session.build_request_init(USERS["bob"], ["*"], "btid-alice", Secret(psk["alice"]), KMS_ID, now=now)
    err = kms.handle(bad.raw)
    assert mikey.Message.decode(err).one(mikey.Error).error_no == mikey.ERR_INVALID_ID
    _, _, auth_e = _keys(
        psk["alice"], int.from_bytes(bad.raw[4:8], "big"), 1, bad.msg.one(mikey.RandRole, 1).rand, None
    )
    assert err[:4] == H("01 06 05 01") and err[-32:] == hmac.new(auth_e, err[:-32], hashlib.sha256).digest()


def test_key_data_sub_payloads_truncated_or_with_a_wrong_length():
    mpk = bytes(range(32))
    kd = (
        H("14 61 0020")
        + mpk
        + H("04 0a0b0c0d")
        + H("00 11 0020")
        + mpk
        + H("000e")
        + bytes(14)
        + H("04 01020304")
    )
    assert len(mikey.KeyData.decode_all(kd)) == 2  # MPK+SPI, then TGK+SALT+SPI (RFC 3830 6.13)
    for n in range(len(kd)):
        with pytest.raises(MikeyError):
            mikey.KeyData.decode_all(kd[:n])
    # key data length (offset 2), SPI length (36), the second salt length (77) off by one
    for pos, width in ((2, 2), (36, 1), (41 + 36, 2)):
        value = int.from_bytes(kd[pos : pos + width], "big")
        for bad in (value + 1, value - 1):
            with pytest.raises(MikeyError):
                mikey.KeyData.decode_all(kd[:pos] + bad.to_bytes(width, "big") + kd[pos + width :])
    with pytest.raises(MikeyError):
        mikey.KeyData.decode_all(kd + b"\x00")
    with pytest.raises(MikeyError) as e:  # key type 8 is unassigned (IANA)
        mikey.KeyData.decode_all(H("00 81 0001 00 01 00"))
    assert e.value.code == "mikey.unsupported"


def test_transfer_error_message_layout():
    """RFC 6043 5.4: Error message = HDR, T, (ERR), {SP}, [V]; version, PRF func and CSB ID of the
    message where the error occurred; V = 0; fresh T."""
    ti = H("01 0e 05 81 0a0b0c0d 00 01") + H("00 00 e8d4a51000000000")
    err = session.transfer_error(ti, mikey.ERR_INVALID_TICKET, now=1_700_000_000.0)
    assert err is not None
    assert err[:10] == H("01 06 05 01 0a0b0c0d 00 01")  # Error, next T, V=0 | PRF 1, same CSB ID
    assert err[10:12] == H("0c 00") and err[20:] == H("00 0e 0000")  # T (next ERR), ERR 14 last
    assert session.transfer_error(b"\x01\x0e", 1) is None
