"""The soft UICC at the APDU level: file system, SELECT/READ/UPDATE, T=0 procedure bytes,
logical channels, AUTHENTICATE contexts, SQN state and the fault hooks."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.lab import write_subscriber
from ue_agent.crypto.milenage import Milenage, gsm_kc, gsm_sres
from ue_agent.errors import TransportError
from ue_agent.lab.uicc import SoftUicc, SoftUiccTransport, build_atr
from ue_agent.lab.uicc_fs import ISIM_AID, USIM_AID, encode_imsi, encode_pcscf, tlv
from ue_agent.subscriber import Subscriber, load_subscriber

LAB = Path(__file__).resolve().parents[1] / "ue_agent" / "lab" / "subscribers"
SET1_RAND = bytes.fromhex("23553cbe9637a89d218ae64dae47bf35")
SET1 = {  # TS 35.208 test set 1 outputs: they depend on K, OPc and RAND only
    "res": "a54211d5e3ba50bf",
    "ck": "b40ba9a3c58b2a05bbf0d987b21bf8cb",
    "ik": "f769bcd751044604127672711c6d3441",
}


def sub(name: str) -> Subscriber:
    return load_subscriber(LAB / f"{name}.toml")


def x(card: SoftUicc, hexstr: str) -> bytes:
    return card.process(bytes.fromhex(hexstr.replace(" ", "")))


def sw(raw: bytes) -> int:
    return int.from_bytes(raw[-2:], "big")


def select_isim(card: SoftUicc, cla: int = 0) -> None:
    assert x(card, f"{cla:02x} a4 040c 10" + ISIM_AID.hex()) == b"\x90\x00"


def autn_for(s: Subscriber, sqn: int, rand: bytes = SET1_RAND, amf: bytes | None = None) -> bytes:
    m = Milenage(s.k.reveal(), s.opc.reveal())
    return m.generate_autn(rand, sqn.to_bytes(6, "big"), amf or s.amf)


# --- ATR and file system ---------------------------------------------------------------
@pytest.mark.parametrize("t0", [True, False])
def test_atr_structure(t0: bool) -> None:
    atr = build_atr(t0)
    assert atr[0] == 0x3B
    assert atr[3] & 0x0F == (0 if t0 else 1)  # TD1 protocol
    check = 0
    for b in atr[1:]:
        check ^= b
    assert check == 0  # TCK
    card = SoftUicc(sub("alice"), t0=t0)
    assert card.atr == atr and card.reset() == atr


def test_ef_encoders_match_pysim_fixtures() -> None:
    impi = "738006000000101@ims.mnc000.mcc738.3gppnetwork.org"
    assert tlv(0x80, impi.encode()).hex() == (
        "803137333830303630303030303031303140696d732e6d6e633030302e6d63633733382e336770706e6574776f726b2e6f7267"
    )
    assert tlv(0x80, b"ims.mnc000.mcc738.3gppnetwork.org").hex() == (
        "8021696d732e6d6e633030302e6d63633733382e336770706e6574776f726b2e6f7267"
    )
    assert encode_pcscf("192.168.12.34").hex() == "800501c0a80c22"
    assert encode_pcscf("fe80::42:d7ff:fe53:335").hex() == "801102fe800000000000000042d7fffe530335"
    fqdn = "pcscf.ims.mnc000.mcc738.pub.3gppnetwork.org"
    assert encode_pcscf(fqdn) == bytes.fromhex("802c00") + fqdn.encode()
    assert encode_imsi("001010000000001").hex() == "080910100000000010"


def test_ef_dir_lists_usim_and_isim_or_usim_only() -> None:
    card = SoftUicc(sub("alice"))
    fcp = x(card, "00a4 0804 02 2f00")
    assert fcp == b"\x61" + bytes([fcp[1]])
    fcp = x(card, f"00c0 0000 {fcp[1]:02x}")[:-2]
    assert fcp[0] == 0x62 and bytes.fromhex("82054221002603") in fcp
    rec1, rec2, rec3 = (x(card, f"00b2 {n:02x}04 26") for n in (1, 2, 3))
    assert rec1[4:20] == USIM_AID and rec2[4:20] == ISIM_AID and rec3[:-2] == b"\xff" * 0x26
    assert sw(x(card, "00b2 0404 26")) == 0x6A83
    carol = SoftUicc(sub("carol"))
    x(carol, "00a4 080c 02 2f00")
    assert x(carol, "00b2 0104 26")[4:20] == USIM_AID
    assert x(carol, "00b2 0204 26")[:-2] == b"\xff" * 0x26
    assert sw(x(carol, "00a4 040c 07 a0000000871004")) == 0x6A82


def test_select_aid_full_prefix_and_fcp() -> None:
    card = SoftUicc(sub("alice"))
    assert x(card, "00a4 0404 07 a0000000871004 00")[0] == 0x61
    fcp = x(card, "00c0 0000 00")
    assert sw(fcp) >> 8 == 0x6C  # T=0: Le=00 for fewer than 256 bytes -> 6Cxx
    fcp = x(card, f"00c0 0000 {sw(fcp) & 0xFF:02x}")
    assert sw(fcp) == 0x9000 and tlv(0x84, ISIM_AID) in fcp
    select_isim(card)
    assert sw(x(card, "00a4 0404 10" + "a0000000871009" + "00" * 9)) == 0x6A82
    assert sw(x(card, "00a4 0400 07 a0000000871004")) == 0x6A86


def test_read_binary_le_handling_t0_and_t1() -> None:
    impi = tlv(0x80, sub("alice").impi.encode())
    t0 = SoftUicc(sub("alice"))
    select_isim(t0)
    assert x(t0, "00a4 000c 02 6f02") == b"\x90\x00"
    assert x(t0, "00b0 0000 00") == bytes([0x6C, len(impi)])
    assert x(t0, "00b0 0000 ff") == bytes([0x6C, len(impi)])
    assert x(t0, f"00b0 0000 {len(impi):02x}") == impi + b"\x90\x00"
    assert x(t0, "00b0 0002 04") == impi[2:6] + b"\x90\x00"
    assert sw(x(t0, f"00b0 00{len(impi):02x} 01")) == 0x6B00
    t1 = SoftUicc(sub("alice"), t0=False)
    select_isim(t1)
    x(t1, "00a4 000c 02 6f02")
    assert x(t1, "00b0 0000 00") == impi + b"\x90\x00"
    # case 4 in T=1: data straight away when Le is given, 61xx without Le
    assert x(t1, "00a4 0004 02 6f02 00")[0] == 0x62
    assert x(t1, "00a4 0004 02 6f02")[0] == 0x61


def test_read_by_sfi_and_wrong_structure() -> None:
    card = SoftUicc(sub("alice"))
    select_isim(card)
    impi = tlv(0x80, sub("alice").impi.encode())
    assert x(card, f"00b0 8200 {len(impi):02x}") == impi + b"\x90\x00"  # SFI 02 = EF_IMPI
    assert sw(x(card, "00b2 0104 10")) == 0x6981  # EF_IMPI is transparent
    assert sw(x(card, "00b0 9d00 01")) == 0x6A82  # no SFI 1D here
    fresh = SoftUicc(sub("alice"))
    assert sw(x(fresh, "00b0 0000 01")) == 0x6986  # no current EF


def test_sfi_addressing_per_ts_102_221() -> None:
    alice = sub("alice")
    card = SoftUicc(alice)
    # SFIs name EFs of the current DF: with the MF current, SFI 02 is EF_ICCID ...
    assert x(card, "00b0 8200 0a")[:-2].hex() == "988812010000000010f1"
    assert x(card, "00b2 01f4 26")[4:20] == USIM_AID  # READ RECORD P2 = 1E << 3 | 4: EF_DIR
    assert sw(x(card, "00b0 9e00 01")) == 0x6981  # EF_DIR is not transparent
    # ... with the ISIM current, SFI 02 is EF_IMPI, and the EF read becomes the current EF
    select_isim(card)
    impi = tlv(0x80, alice.impi.encode())
    assert x(card, f"00b0 8200 {len(impi):02x}") == impi + b"\x90\x00"
    assert x(card, "00b0 0002 03") == impi[2:5] + b"\x90\x00"  # current EF: EF_IMPI
    assert x(card, "00b0 8700 02") == b"\x05\x00\x90\x00"  # SFI 07: EF_IST
    rlen = card.adfs[1].files[0x6F04].record_len
    assert x(card, "00b2 0124 00") == bytes([0x6C, rlen])  # SFI 04: EF_IMPU (T=0: Le=00 -> 6Cxx)
    assert x(card, f"00b2 0124 {rlen:02x}")[2:-2].startswith(alice.impu[0].encode())
    assert sw(x(card, "00b0 8600 01")) == 0x6A82  # EF_P-CSCF has no SFI
    assert sw(x(card, "00b0 8000 01")) == 0x6A86  # SFI 0 is not an SFI
    assert sw(x(card, "00b0 c200 01")) == 0x6A86  # P1 b7 b6 must be 00
    assert sw(x(card, "00b2 01fc 10")) == 0x6A86  # SFI 31 in READ RECORD is RFU
    x(card, "00a4 040c 07 a0000000871002")  # USIM: SFI 07 is EF_IMSI, 9 bytes
    assert x(card, "00b0 8700 09") == encode_imsi(alice.imsi) + b"\x90\x00"


def test_card_without_sfi_support() -> None:
    card = SoftUicc(sub("alice"), sfi=False)
    assert sw(x(card, "00b0 8200 0a")) == 0x6A86
    assert sw(x(card, "00b2 01f4 26")) == 0x6A86
    card.sfi_refusal_sw = 0x6981
    select_isim(card)
    assert sw(x(card, "00b0 8200 00")) == 0x6981
    fcp = x(card, "00a4 0004 02 6f02")
    fcp = x(card, f"00c0 0000 {fcp[1]:02x}")
    assert bytes.fromhex("8800") in fcp  # the FCP says: no SFI
    assert x(card, "00b0 0000 02")[:1] == b"\x80"  # reading by path still works
    with_sfi = SoftUicc(sub("alice"))
    select_isim(with_sfi)
    fcp = x(with_sfi, "00a4 0004 02 6f02")
    assert bytes.fromhex("880110") in x(with_sfi, f"00c0 0000 {fcp[1]:02x}")
    fcp = x(with_sfi, "00a4 0004 02 6f09")  # EF_P-CSCF: no SFI, said with an empty tag 88
    assert bytes.fromhex("8800") in x(with_sfi, f"00c0 0000 {fcp[1]:02x}")


def test_ef_imsi_is_nine_bytes_for_a_short_imsi(tmp_path: Path) -> None:
    path = write_subscriber(tmp_path / "s.toml", imsi="262100000000", extra="isim = false\n")
    card = SoftUicc(load_subscriber(path))
    x(card, "00a4 040c 07 a0000000871002")
    assert x(card, "00b0 8700 09") == encode_imsi("262100000000") + b"\xff\x90\x00"


def test_select_by_fid_and_path_resolve_per_application() -> None:
    card = SoftUicc(sub("alice"))
    x(card, "00a4 040c 07 a0000000871002")  # USIM: 6F07 is EF_IMSI
    assert x(card, "00a4 000c 02 6f07") == b"\x90\x00"
    assert x(card, "00b0 0000 09") == encode_imsi(sub("alice").imsi) + b"\x90\x00"
    select_isim(card)  # ISIM: 6F07 is EF_IST (1 P-CSCF, 3 HTTP digest)
    x(card, "00a4 080c 04 7fff 6f07")
    assert x(card, "00b0 0000 02") == b"\x05\x00\x90\x00"
    x(card, "00a4 080c 02 2fe2")  # path from the MF
    assert x(card, "00b0 0000 0a")[:-2].hex() == "988812010000000010f1"
    assert sw(x(card, "00a4 080c 02 6f99")) == 0x6A82
    assert sw(x(card, "00a4 000c 03 6f0201")) == 0x6700


def test_gba_u_subscriber_has_ist_service_2() -> None:
    card = SoftUicc(sub("bob"))
    select_isim(card)
    x(card, "00a4 000c 02 6f07")
    assert x(card, "00b0 0000 02") == b"\x07\x00\x90\x00"


def test_update_binary_only_where_allowed() -> None:
    card = SoftUicc(sub("bob"))
    select_isim(card)
    x(card, "00a4 000c 02 6f02")
    assert sw(x(card, "00d6 0000 02 8000")) == 0x6982
    x(card, "00a4 000c 02 6fd5")
    assert x(card, "00d6 0000 03 010203") == b"\x90\x00"
    assert x(card, "00b0 0000 04") == b"\x01\x02\x03\xff\x90\x00"
    assert sw(x(card, "00d6 007f 02 0102")) == 0x6700
    assert sw(x(card, "00d6 0080 01 01")) == 0x6B00


def test_status_and_class_checks() -> None:
    card = SoftUicc(sub("alice"))
    select_isim(card)
    first = x(card, "80f2 0000 00")
    assert sw(first) >> 8 == 0x6C
    fcp = x(card, f"80f2 0000 {sw(first) & 0xFF:02x}")
    assert tlv(0x84, ISIM_AID) in fcp and sw(fcp) == 0x9000
    assert x(card, "80f2 0001 12") == tlv(0x84, ISIM_AID) + b"\x90\x00"
    assert x(card, "80f2 000c 00") == b"\x90\x00"
    assert sw(x(card, "00f2 0000 00")) == 0x6E00  # STATUS is a TS 102 221 class command
    assert sw(x(card, "80a4 000c 02 6f02")) == 0x6E00
    assert sw(x(card, "a0a4 0000 02 3f00")) == 0x6E00  # GSM class
    assert sw(x(card, "0012 0000 00")) == 0x6D00
    assert sw(x(card, "0ca4 000c 02 3f00")) == 0x6882  # secure messaging
    assert sw(x(card, "00")) == 0x6700
    assert sw(x(card, "00a4 000c 05 3f00")) == 0x6700  # Lc longer than the data


def test_get_response_rules() -> None:
    card = SoftUicc(sub("alice"))
    assert sw(x(card, "00c0 0000 10")) == 0x6985  # nothing pending
    first = x(card, "00a4 0404 10" + ISIM_AID.hex())
    n = first[1]
    part = x(card, "00c0 0000 05")
    assert sw(part) == 0x6100 | (n - 5)
    rest = x(card, f"00c0 0000 {n - 5:02x}")
    assert sw(rest) == 0x9000 and (part[:-2] + rest[:-2])[0] == 0x62
    x(card, "00a4 0404 10" + ISIM_AID.hex())
    x(card, "80f2 000c 00")  # any other command drops the pending answer
    assert sw(x(card, f"00c0 0000 {n:02x}")) == 0x6985


# --- logical channels -----------------------------------------------------------------
def test_manage_channel_open_select_close() -> None:
    card = SoftUicc(sub("alice"), max_channels=8)  # channels 4+ use the further interindustry class
    assert x(card, "0070 0000 01") == b"\x01\x90\x00"
    assert x(card, "0070 0000 01") == b"\x02\x90\x00"
    select_isim(card, cla=0x01)
    x(card, "00a4 040c 07 a0000000871002")  # the basic channel stays on the USIM
    x(card, "01a4 000c 02 6f07")
    assert x(card, "01b0 0000 02") == b"\x05\x00\x90\x00"  # EF_IST on channel 1
    x(card, "00a4 000c 02 6f07")
    assert x(card, "00b0 0000 09") == encode_imsi(sub("alice").imsi) + b"\x90\x00"  # EF_IMSI on 0
    assert sw(x(card, "03a4 000c 02 3f00")) == 0x6881  # channel 3 not open
    # open channel 5 explicitly, reach it with the 0x40 class (4 + 1)
    assert x(card, "0070 0005 00") == b"\x90\x00"
    select_isim(card, cla=0x41)
    assert sw(x(card, "41a4 000c 02 6f02")) == 0x9000
    assert sw(x(card, "0070 0005 00")) == 0x6A86  # busy
    assert x(card, "0070 8005 00") == b"\x90\x00"
    assert sw(x(card, "41a4 000c 02 6f02")) == 0x6881
    assert sw(x(card, "0070 8000 00")) == 0x6A86  # the basic channel cannot be closed
    assert sw(x(card, "0070 8006 00")) == 0x6A88  # not open


def test_channel_opened_from_a_channel_inherits_its_application() -> None:
    card = SoftUicc(sub("alice"))
    x(card, "0070 0000 01")
    select_isim(card, cla=0x01)
    assert x(card, "0170 0000 01") == b"\x02\x90\x00"
    x(card, "02a4 000c 02 6f07")  # resolves in the ISIM inherited from channel 1
    assert x(card, "02b0 0000 02") == b"\x05\x00\x90\x00"


@pytest.mark.parametrize("channels", [4, 8])
def test_all_channels_used_and_reset_closes_them(channels: int) -> None:
    card = SoftUicc(sub("alice")) if channels == 4 else SoftUicc(sub("alice"), max_channels=channels)
    assert card.max_channels == channels  # 4 by default: the basic channel and 3 logical ones
    assert card.atr[-2] & 0x07 == channels - 1  # ATR card capabilities: channels - 1 in b3..b1
    for n in range(1, channels):
        assert x(card, "0070 0000 01") == bytes([n, 0x90, 0x00])
    assert sw(x(card, "0070 0000 01")) == 0x6A81
    card.reset()
    assert sw(x(card, "01a4 000c 02 3f00")) == 0x6881
    assert x(card, "0070 0000 01") == b"\x01\x90\x00"


# --- AUTHENTICATE ---------------------------------------------------------------------
def authenticate(card: SoftUicc, p2: int, data: bytes, cla: int = 0) -> tuple[bytes, int]:
    first = card.process(bytes([cla, 0x88, 0x00, p2, len(data)]) + data + b"\x00")
    if sw(first) >> 8 != 0x61:
        return first[:-2], sw(first)
    out = card.process(bytes([cla & 0x03, 0xC0, 0, 0, first[1]]))
    return out[:-2], sw(out)


def aka_data(rand: bytes, autn: bytes) -> bytes:
    return b"\x10" + rand + b"\x10" + autn


def test_ims_aka_success_gives_test_set_1_keys() -> None:
    s = sub("alice")
    card = SoftUicc(s)
    select_isim(card)
    data, status = authenticate(card, 0x81, aka_data(SET1_RAND, autn_for(s, 33)))
    assert status == 0x9000
    expected = "db08" + SET1["res"] + "10" + SET1["ck"] + "10" + SET1["ik"]
    assert data.hex() == expected  # no Kc from the ISIM
    assert card.highest_sqn == 33


def test_usim_3g_context_adds_kc_and_gsm_context() -> None:
    s = sub("alice")
    card = SoftUicc(s)
    x(card, "00a4 040c 07 a0000000871002")
    data, status = authenticate(card, 0x81, aka_data(SET1_RAND, autn_for(s, 40)))
    ck, ik = bytes.fromhex(SET1["ck"]), bytes.fromhex(SET1["ik"])
    assert status == 0x9000 and data.endswith(b"\x08" + gsm_kc(ck, ik))
    data, status = authenticate(card, 0x80, b"\x10" + SET1_RAND)
    sres = gsm_sres(bytes.fromhex(SET1["res"]))
    assert (data, status) == (b"\x04" + sres + b"\x08" + gsm_kc(ck, ik), 0x9000)


def test_mac_failure_and_sync_failure() -> None:
    s = sub("alice")
    card = SoftUicc(s)
    select_isim(card)
    bad = bytearray(autn_for(s, 50))
    bad[-1] ^= 0x01
    assert authenticate(card, 0x81, aka_data(SET1_RAND, bytes(bad))) == (b"", 0x9862)
    assert card.highest_sqn == s.sqn  # a failed MAC changes nothing
    for stale in (s.sqn, s.sqn - 1):
        data, status = authenticate(card, 0x81, aka_data(SET1_RAND, autn_for(s, stale)))
        assert status == 0x9000 and data[:2] == b"\xdc\x0e" and len(data) == 16
        m = Milenage(s.k.reveal(), s.opc.reveal())
        assert m.resync_sqn(SET1_RAND, data[2:]) == s.sqn.to_bytes(6, "big")


def test_sqn_must_increase_and_persists(tmp_path: Path) -> None:
    s = sub("alice")
    state = tmp_path / "sqn"
    card = SoftUicc(s, sqn_state_path=state)
    select_isim(card)
    assert authenticate(card, 0x81, aka_data(SET1_RAND, autn_for(s, 100)))[0][0] == 0xDB
    assert state.read_text().strip() == "100"
    again = SoftUicc(s, sqn_state_path=state)  # a new lab run
    select_isim(again)
    assert authenticate(again, 0x81, aka_data(SET1_RAND, autn_for(s, 100)))[0][0] == 0xDC
    assert authenticate(again, 0x81, aka_data(SET1_RAND, autn_for(s, 101)))[0][0] == 0xDB
    state.write_text("not a number\n")
    with pytest.raises(Exception, match="not an SQN"):
        SoftUicc(s, sqn_state_path=state)


def test_authenticate_contexts_and_bad_data() -> None:
    alice = SoftUicc(sub("alice"))
    assert authenticate(alice, 0x81, aka_data(SET1_RAND, bytes(16)))[1] == 0x6985  # no app selected
    select_isim(alice)
    rand, autn = SET1_RAND, autn_for(sub("alice"), 60)
    assert authenticate(alice, 0x84, b"\xdd\x10" + rand + b"\x10" + autn)[1] == 0x9864  # no GBA
    assert authenticate(alice, 0x80, b"\x10" + rand)[1] == 0x9864  # no GSM on the ISIM
    assert authenticate(alice, 0x82, b"\x01\x02")[1] == 0x9864  # HTTP digest context not offered
    assert authenticate(alice, 0x85, b"\x01\x02")[1] == 0x6A86
    assert authenticate(alice, 0x81, b"\x10" + rand + b"\x10" + autn[:15])[1] == 0x6700
    assert authenticate(alice, 0x81, b"\x0f" + rand[:15] + b"\x10" + autn)[1] == 0x6A80
    assert sw(alice.process(b"\x00\x88\x01\x81\x22" + aka_data(rand, autn))) == 0x6A86


def test_gba_u_bootstrap_and_naf_derivation_raw() -> None:
    s = sub("bob")
    card = SoftUicc(s)
    select_isim(card)
    rand = SET1_RAND
    naf = b"kms.example.org\x01\x00\x00\x00\x06"
    impi = s.impi.encode()
    derive = b"\xde" + bytes([len(naf)]) + naf + bytes([len(impi)]) + impi
    assert authenticate(card, 0x84, derive)[1] == 0x6985  # not bootstrapped
    data, status = authenticate(card, 0x84, b"\xdd\x10" + rand + b"\x10" + autn_for(s, 65, rand))
    m = Milenage(s.k.reveal(), s.opc.reveal())
    assert status == 0x9000 and data == b"\xdb\x08" + m.f2345(rand)[0]
    assert authenticate(card, 0x84, derive)[1] == 0x6985  # EF_GBABP does not hold this RAND yet
    btid = b"btid@bsf.example.org"
    body = b"\x10" + rand + bytes([len(btid)]) + btid + b"\x0a2030-01-01"
    x(card, "00a4 000c 02 6fd5")
    assert x(card, f"00d6 0000 {len(body):02x}" + body.hex()) == b"\x90\x00"
    data, status = authenticate(card, 0x84, derive)
    assert status == 0x9000 and data[:2] == b"\xdb\x20"
    assert card.held_ks_int_naf(naf) is not None
    x(card, "00a4 000c 02 6fd7")
    rec = x(card, "00b2 0104 60")[:-2]
    assert rec.startswith(tlv(0x80, naf) + tlv(0x81, btid))


# --- fault hooks and the in-process transport -------------------------------------------
def test_inject_sw_and_response() -> None:
    card = SoftUicc(sub("alice"))
    card.inject_sw(0x6F00, count=2)
    assert x(card, "00a4 000c 02 3f00") == b"\x6f\x00"
    assert x(card, "00a4 000c 02 3f00") == b"\x6f\x00"
    assert x(card, "00a4 000c 02 3f00") == b"\x90\x00"
    card.inject_response(b"\xdb")
    assert x(card, "80f2 000c 00") == b"\xdb"


def test_transport_counts_and_reports_removal_and_mute() -> None:
    card = SoftUicc(sub("alice"))
    tp = SoftUiccTransport(card)
    assert tp.transmit(bytes.fromhex("00a4000c023f00")) == b"\x90\x00"
    assert tp.apdu_count == 1
    card.mute()
    with pytest.raises(TransportError) as err:
        tp.transmit(bytes.fromhex("00a4000c023f00"))
    assert err.value.code == "card.no_response"
    card.unmute()
    card.remove()
    with pytest.raises(TransportError) as err:
        tp.transmit(bytes.fromhex("00a4000c023f00"))
    assert err.value.code == "card.removed"
    assert card.insert() == card.atr
    assert tp.transmit(bytes.fromhex("00a4000c023f00")) == b"\x90\x00"
    tp.close()
    with pytest.raises(TransportError):
        tp.transmit(bytes.fromhex("00a4000c023f00"))


def test_mnc_length_3_in_ef_ad(tmp_path: Path) -> None:
    s = load_subscriber(write_subscriber(tmp_path / "s.toml", extra="mnc_length = 3\nisim = false\n"))
    card = SoftUicc(s)
    x(card, "00a4 040c 07 a0000000871002")
    x(card, "00a4 000c 02 6fad")
    assert x(card, "00b0 0000 04") == b"\x00\x00\x00\x03\x90\x00"


def test_repr_has_no_keys() -> None:
    s = sub("alice")
    card = SoftUicc(s)
    text = repr(card) + repr(s)
    assert s.k.reveal().hex() not in text and s.opc.reveal().hex() not in text


# --- one EF catalogue: the card layer's list is what the soft UICC builds ---------------------
@pytest.mark.parametrize("extra", ["", "isim = false\n", "gba_u = true\n"])
def test_soft_uicc_file_system_is_the_card_layer_catalogue(tmp_path: Path, extra: str) -> None:
    from ue_agent.card import ef as catalogue
    from ue_agent.lab.uicc_fs import build_mf, catalogue_gaps

    sub = load_subscriber(write_subscriber(tmp_path / "s.toml", extra=extra))
    mf, adfs = build_mf(sub)
    assert catalogue_gaps(mf, adfs) == []
    built = {(df.name, f.fid) for df in [mf, *adfs] for f in df.files.values()}
    apps = {"MF": "MF", "USIM": "ADF.USIM", "ISIM": "ADF.ISIM"}
    wanted = {(apps[s.app], s.fid) for s in catalogue.CATALOGUE if s.app != "ISIM" or sub.isim}
    assert built == wanted  # nothing more, nothing less


def test_catalogue_identifiers_are_unique_per_application() -> None:
    from ue_agent.card import ef as catalogue

    for app in ("MF", "USIM", "ISIM"):
        entries = [s for s in catalogue.CATALOGUE if s.app == app]
        fids = [s.fid for s in entries]
        sfis = [s.sfi for s in entries if s.sfi is not None]
        assert len(set(fids)) == len(fids) and len(set(sfis)) == len(sfis), app
        assert all(s.clause.startswith("TS ") for s in entries)


def test_reading_the_card_does_not_load_the_aes_backend() -> None:
    """A subscriber file with OP (alice) gives OPc only when the card first authenticates:
    reading the card, as the daemon does at start, loads no AES (cryptography)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from ue_agent.card.session import Card\n"
        "from ue_agent.lab.uicc import SoftUicc, SoftUiccTransport\n"
        "from ue_agent.subscriber import load_subscriber\n"
        f"sub = load_subscriber({str(LAB / 'alice.toml')!r})\n"
        "card = Card(SoftUiccTransport(SoftUicc(sub)))\n"
        "card.identities()\n"
        "print('cryptography' in sys.modules, sub.opc.reveal().hex(), 'cryptography' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # OPc of TS 35.208 test set 1 (the OP in alice.toml), derived on first use
    assert out.stdout.split() == ["False", "cd63cb71954a9f4e48a5994e37a02baf", "True"]
