"""The card layer (Card facade, APDU link, EF decoders) against the soft UICC in process."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.fixtures.lab import write_subscriber
from ue_agent.card import ef
from ue_agent.card.apdu import Apdu, ApduLink, channel_of_cla, cla_for_channel
from ue_agent.card.results import AkaMacFailure, AkaSuccess, AkaSyncFailure, GbaBootstrapRes
from ue_agent.card.session import Card
from ue_agent.card.transport import ApduTransport
from ue_agent.crypto.kdf import UA_KMS, ks_int_naf, ks_naf, naf_id
from ue_agent.crypto.milenage import Milenage
from ue_agent.errors import CardError
from ue_agent.lab.uicc import SoftUicc, SoftUiccTransport
from ue_agent.subscriber import Subscriber, load_subscriber

LAB = Path(__file__).resolve().parents[1] / "ue_agent" / "lab" / "subscribers"
SET1_RAND = bytes.fromhex("23553cbe9637a89d218ae64dae47bf35")
SET1_RES, SET1_CK, SET1_IK = (
    bytes.fromhex("a54211d5e3ba50bf"),
    bytes.fromhex("b40ba9a3c58b2a05bbf0d987b21bf8cb"),
    bytes.fromhex("f769bcd751044604127672711c6d3441"),
)


def sub(name: str) -> Subscriber:
    return load_subscriber(LAB / f"{name}.toml")


def make(name: str = "alice", *, t0: bool = True, lchan: bool = False) -> tuple[SoftUicc, Card]:
    uicc = SoftUicc(sub(name), t0=t0)
    return uicc, Card(SoftUiccTransport(uicc, use_logical_channel=lchan))


def challenge(s: Subscriber, sqn: int, rand: bytes = SET1_RAND) -> tuple[bytes, bytes]:
    m = Milenage(s.k.reveal(), s.opc.reveal())
    return rand, m.generate_autn(rand, sqn.to_bytes(6, "big"), s.amf)


# --- EF decoders against pySim's fixtures (pySim/ts_31_103.py, _test_de_encode) -----------
def test_decoders_match_pysim_fixtures() -> None:
    impi = bytes.fromhex(
        "803137333830303630303030303031303140696d732e6d6e633030302e6d63633733382e336770706e6574776f726b2e6f7267"
    )
    assert ef.decode_tlv80_string(impi, "EF_IMPI") == "738006000000101@ims.mnc000.mcc738.3gppnetwork.org"
    domain = bytes.fromhex("8021696d732e6d6e633030302e6d63633733382e336770706e6574776f726b2e6f7267")
    assert ef.decode_tlv80_string(domain, "EF_DOMAIN") == "ims.mnc000.mcc738.3gppnetwork.org"
    impu = "sip:738006000000101@ims.mnc000.mcc738.3gppnetwork.org"
    rec = bytes([0x80, len(impu)]) + impu.encode() + b"\xff" * 8
    assert bytes([0x80, len(impu)]).hex() == "8035"
    assert ef.decode_tlv80_string(rec, "EF_IMPU") == impu
    assert ef.decode_pcscf(bytes.fromhex("800501c0a80c22ffff")) == "192.168.12.34"
    assert (
        ef.decode_pcscf(bytes.fromhex("801102fe800000000000000042d7fffe530335")) == "fe80::42:d7ff:fe53:335"
    )
    fqdn = "pcscf.ims.mnc000.mcc738.pub.3gppnetwork.org"
    assert ef.decode_pcscf(bytes.fromhex("802c00") + fqdn.encode()) == fqdn
    assert ef.decode_pcscf(b"\xff" * 10) is None
    assert ef.decode_service_table(bytes.fromhex("0700")) == [1, 2, 3]
    assert ef.decode_service_table(bytes.fromhex("0501")) == [1, 3, 9]


def test_imsi_iccid_ad_and_derived_identities() -> None:
    assert ef.decode_imsi(bytes.fromhex("080910100000000010ff")) == "001010000000001"
    assert ef.decode_imsi(bytes.fromhex("07212601000000f0")) == "262100000000"  # even digits, F filler
    assert ef.decode_iccid(bytes.fromhex("988812010000000010f1")) == "8988211000000000011"
    assert ef.decode_mnc_length(bytes.fromhex("00000003")) == 3
    two = ef.identities_from_imsi("262010000000001", 2)
    assert two.impi == "262010000000001@ims.mnc001.mcc262.3gppnetwork.org"
    assert two.impus == ["sip:262010000000001@ims.mnc001.mcc262.3gppnetwork.org"]
    assert two.domain == "ims.mnc001.mcc262.3gppnetwork.org"
    three = ef.identities_from_imsi("310150123456789", 3)
    assert three.domain == "ims.mnc150.mcc310.3gppnetwork.org"


def test_ef_dir_and_fcp_decoding() -> None:
    rec = bytes.fromhex("61184f10a0000000871004ffffffff89070900005004495349 4d".replace(" ", ""))
    assert ef.decode_dir_record(rec + b"\xff" * 12) == bytes.fromhex("a0000000871004ffffffff8907090000")
    assert ef.decode_dir_record(b"\xff" * 38) is None
    fcp = ef.decode_fcp(bytes.fromhex("621582054221002603830220008a01058002007288010f"))
    assert (fcp.record_len, fcp.record_count, fcp.size) == (0x26, 3, 0x72)
    assert ef.decode_fcp(bytes.fromhex("62088202412180020010")).size == 0x10


def test_cla_channel_coding() -> None:
    assert [cla_for_channel(0x00, n) for n in (0, 1, 3, 4, 5, 19)] == [0x00, 0x01, 0x03, 0x40, 0x41, 0x4F]
    assert cla_for_channel(0x80, 2) == 0x82 and cla_for_channel(0x80, 6) == 0xC2
    assert [channel_of_cla(c) for c in (0x00, 0x03, 0x40, 0x4F, 0xC2)] == [0, 3, 4, 19, 6]
    with pytest.raises(ValueError):
        cla_for_channel(0x00, 20)
    assert Apdu(0, 0xA4, 4, 0xC, b"\x01\x02").encode().hex() == "00a4040c020102"
    assert Apdu(0, 0xB0, 0, 0, le=256).encode().hex() == "00b0000000"
    assert Apdu(0, 0x70, 0x80, 1).encode().hex() == "0070800100"


# --- identities -----------------------------------------------------------------------
#: APDUs for identities() on the lab ISIM (alice), T=0 / T=1: EF_DIR = SELECT with FCP
#: (+GET RESPONSE on T=0) and records 1-2 (USIM, ISIM: the rest cannot matter); EF_ICCID by
#: SFI 02 (Le=10); SELECT ISIM (no FCP); IMPI, DOMAIN by SFI with Le=00 (T=0: 6Cxx and the
#: resend); IMPU = SELECT with FCP (+GET RESPONSE) and 3 records; IST by SFI like IMPI;
#: P-CSCF (no SFI) = SELECT with FCP (+GET RESPONSE) and 2 records. Before SFI: 26 / 20.
ISIM_IDENTITY_APDUS = {True: 4 + 1 + 1 + 2 + 2 + 5 + 2 + 4, False: 3 + 1 + 1 + 1 + 1 + 4 + 1 + 3}
#: carol (USIM only): EF_DIR (SELECT, 2 records), EF_ICCID, SELECT USIM, then EF_IMSI (9
#: bytes) and EF_AD (bytes 1-4) by SFI with their fixed Le. Before SFI: 13 / 10.
USIM_IDENTITY_APDUS = {True: 4 + 1 + 1 + 1 + 1, False: 3 + 1 + 1 + 1 + 1}


@pytest.mark.parametrize("t0", [True, False])
def test_isim_identities_and_apdu_count(t0: bool) -> None:
    uicc, card = make("alice", t0=t0)
    ids = card.identities()
    assert ids.application == "isim"
    assert ids.aid == "a0000000871004ffffffff8907090000"
    assert ids.impi == "001010000000001@ims.mnc001.mcc001.3gppnetwork.org"
    assert ids.impus == ["sip:alice@ims.mnc001.mcc001.3gppnetwork.org", "tel:+15550000001"]
    assert ids.domain == "ims.mnc001.mcc001.3gppnetwork.org"
    assert ids.pcscf == ["pcscf.ims.mnc001.mcc001.3gppnetwork.org"]
    assert ids.iccid == "8988211000000000011"
    assert ids.isim_services == [1, 3] and ids.gba_u is False
    assert card.apdu_count == ISIM_IDENTITY_APDUS[t0]
    assert card.transport.apdu_count == card.apdu_count
    assert card.identities() is ids and card.apdu_count == ISIM_IDENTITY_APDUS[t0]  # cached
    card.refresh()
    assert card.identities() == ids
    assert card.apdu_count == 2 * ISIM_IDENTITY_APDUS[t0]


@pytest.mark.parametrize("t0", [True, False])
def test_usim_only_identities_from_imsi(t0: bool) -> None:
    _, card = make("carol", t0=t0)
    ids = card.identities()
    assert ids.application == "usim" and ids.imsi == "001010000000003"
    assert ids.impi == "001010000000003@ims.mnc001.mcc001.3gppnetwork.org"
    assert ids.impus == ["sip:001010000000003@ims.mnc001.mcc001.3gppnetwork.org"]
    assert ids.domain == "ims.mnc001.mcc001.3gppnetwork.org"
    assert ids.gba_u is False and ids.pcscf == []
    assert card.apdu_count == USIM_IDENTITY_APDUS[t0]


def test_usim_only_with_three_digit_mnc(tmp_path: Path) -> None:
    path = write_subscriber(
        tmp_path / "s.toml", imsi="310150123456789", extra="mnc_length = 3\nisim = false\n"
    )
    card = Card(SoftUiccTransport(SoftUicc(load_subscriber(path))))
    assert card.identities().impi == "310150123456789@ims.mnc150.mcc310.3gppnetwork.org"


def test_pcscf_ip_addresses_and_no_pcscf_service(tmp_path: Path) -> None:
    path = write_subscriber(tmp_path / "s.toml")
    text = path.read_text().replace(
        'pcscf = ["pcscf.ims.mnc001.mcc001.3gppnetwork.org"]', 'pcscf = ["192.0.2.10", "2001:db8::5"]'
    )
    path.write_text(text)
    card = Card(SoftUiccTransport(SoftUicc(load_subscriber(path))))
    assert card.identities().pcscf == ["192.0.2.10", "2001:db8::5"]
    # without IST service 1 the card layer does not read EF_P-CSCF at all
    uicc = SoftUicc(sub("alice"))
    uicc.adfs[1].files[0x6F07].data[0] &= ~0x01
    card = Card(SoftUiccTransport(uicc))
    assert card.identities().pcscf == []
    assert card.apdu_count == ISIM_IDENTITY_APDUS[True] - 4


# --- AKA ------------------------------------------------------------------------------
@pytest.mark.parametrize("t0", [True, False])
@pytest.mark.parametrize("lchan", [False, True])
def test_authenticate_success_gives_test_set_1(t0: bool, lchan: bool) -> None:
    s = sub("alice")
    _, card = make("alice", t0=t0, lchan=lchan)
    card.identities()
    before = card.apdu_count
    out = card.authenticate(*challenge(s, s.sqn + 1))
    assert isinstance(out, AkaSuccess)
    assert out.res == SET1_RES and out.ck == SET1_CK and out.ik == SET1_IK and out.kc is None
    assert card.apdu_count - before == (2 if t0 else 1)  # AUTHENTICATE (+ GET RESPONSE)


def test_authenticate_first_selects_once_without_reading_identities() -> None:
    s = sub("alice")
    _, card = make("alice")
    assert isinstance(card.authenticate(*challenge(s, s.sqn + 1)), AkaSuccess)
    assert card.apdu_count == 4 + 1 + 2  # EF_DIR up to the ISIM, SELECT ISIM, AUTHENTICATE + GET RESPONSE
    assert isinstance(card.authenticate(*challenge(s, s.sqn + 2)), AkaSuccess)
    assert card.apdu_count == 4 + 1 + 2 + 2


def test_usim_authenticate_returns_kc() -> None:
    s = sub("carol")
    _, card = make("carol")
    out = card.authenticate(*challenge(s, 1))
    assert isinstance(out, AkaSuccess) and out.kc is not None and len(out.kc) == 8


def test_mac_failure_and_resync_round_trip() -> None:
    s = sub("alice")
    uicc, card = make("alice")
    rand, autn = challenge(s, s.sqn + 5)
    bad = autn[:-1] + bytes([autn[-1] ^ 0x80])
    assert card.authenticate(rand, bad) == AkaMacFailure()
    assert isinstance(card.authenticate(rand, autn), AkaSuccess)
    stale = card.authenticate(*challenge(s, s.sqn + 3))
    assert isinstance(stale, AkaSyncFailure) and len(stale.auts) == 14
    m = Milenage(s.k.reveal(), s.opc.reveal())
    sqn_ms = m.resync_sqn(SET1_RAND, stale.auts)
    assert sqn_ms == (s.sqn + 5).to_bytes(6, "big") == uicc.highest_sqn.to_bytes(6, "big")
    # the HSS resumes after SQN_MS: the card accepts it
    assert isinstance(card.authenticate(*challenge(s, int.from_bytes(sqn_ms, "big") + 1)), AkaSuccess)


def test_logical_channel_is_used_and_closed() -> None:
    s = sub("alice")
    uicc, card = make("alice", lchan=True)
    card.identities()
    assert uicc.open_channels == [0, 1]
    assert uicc.channel_application(1) == bytes.fromhex(card.identities().aid or "")
    assert uicc.channel_application(0) is None
    card.authenticate(*challenge(s, s.sqn + 1))
    card.close()
    assert uicc.open_channels == [0]
    card.close()  # idempotent


class BoundModem(SoftUiccTransport):
    """A modem whose application channels come from AT+CCHO: the MT owns the CLA channel bits."""

    mode = "bound"

    def __init__(self, uicc: SoftUicc) -> None:
        super().__init__(uicc)
        self.bound: list[_Bound] = []

    def bind_application(self, aid: bytes) -> ApduTransport:
        channel = self.uicc.process(bytes.fromhex("0070000001"))[0]
        assert self.uicc.process(bytes([channel, 0xA4, 0x04, 0x0C, len(aid)]) + aid) == b"\x90\x00"
        self.bound.append(_Bound(self.uicc, channel))
        return self.bound[-1]


class _Bound(ApduTransport):
    mode = "bound"

    def __init__(self, uicc: SoftUicc, channel: int) -> None:
        self.uicc, self.channel, self.sent, self.closed = uicc, channel, [], False

    def transmit(self, apdu: bytes) -> bytes:
        assert apdu[0] & 0x43 == 0, "the application must send CLA with channel bits 0"
        self.sent.append(apdu)
        return self.uicc.process(bytes([cla_for_channel(apdu[0], self.channel)]) + apdu[1:])

    def close(self) -> None:
        self.closed = True
        self.uicc.process(bytes([0, 0x70, 0x80, self.channel, 0]))


def test_bound_transport_does_not_select_the_application_again() -> None:
    s = sub("alice")
    uicc = SoftUicc(s)
    modem = BoundModem(uicc)
    card = Card(modem)
    ids = card.identities()
    assert ids.application == "isim" and ids.impi == s.impi
    assert isinstance(card.authenticate(*challenge(s, s.sqn + 1)), AkaSuccess)
    (bound,) = modem.bound
    assert not any(a[1] == 0xA4 and a[2] == 0x04 for a in bound.sent)  # no SELECT by AID
    assert card.apdu_count == modem.apdu_count + len(bound.sent)
    card.close()
    assert bound.closed and uicc.open_channels == [0]


# --- GBA_U ----------------------------------------------------------------------------
def test_gba_u_bootstrap_and_naf_derivation_match_ks_naf() -> None:
    s = sub("bob")
    uicc, card = make("bob")
    assert card.identities().gba_u is True
    rand, autn = challenge(s, s.sqn + 1, rand=bytes(range(16)))
    before = card.apdu_count
    boot = card.gba_bootstrap(rand, autn)
    assert card.apdu_count - before == 2
    m = Milenage(s.k.reveal(), s.opc.reveal())
    res, ck, ik, _, _ = m.f2345(rand)
    assert isinstance(boot, GbaBootstrapRes) and boot.res == res
    btid = "cmFuZA==@bsf.ims.mnc001.mcc001.pub.3gppnetwork.org"
    card.store_gba_bootstrap(rand, btid, datetime(2030, 1, 1, tzinfo=UTC))
    nid = naf_id("kms.ims.mnc001.mcc001.3gppnetwork.org", UA_KMS)
    key = card.gba_naf_derive(nid, s.impi)
    assert key == ks_naf(ck + ik, rand, s.impi, nid)
    held = uicc.held_ks_int_naf(nid)
    assert held is not None and held == ks_int_naf(ck + ik, rand, s.impi, nid)
    assert uicc.adfs[1].files[0x6FD5].data.startswith(b"\x10" + rand + bytes([len(btid)]) + btid.encode())
    assert uicc.adfs[1].files[0x6FD5].data.find(b"2030-01-01T00:00:00Z") > 0
    # a new bootstrap makes the old EF_GBABP stale: the card refuses to derive
    card.gba_bootstrap(*challenge(s, s.sqn + 2, rand=bytes(16)))
    with pytest.raises(CardError) as err:
        card.gba_naf_derive(nid, s.impi)
    assert err.value.code == "card.gba_not_bootstrapped"


def test_gba_bootstrap_outcomes() -> None:
    s = sub("bob")
    _, card = make("bob")
    rand, autn = challenge(s, s.sqn + 3)
    assert card.gba_bootstrap(rand, autn[:-1] + b"\x00") == AkaMacFailure()
    assert isinstance(card.gba_bootstrap(rand, autn), GbaBootstrapRes)
    stale = card.gba_bootstrap(*challenge(s, s.sqn + 2))
    assert isinstance(stale, AkaSyncFailure)
    m = Milenage(s.k.reveal(), s.opc.reveal())
    assert m.resync_sqn(SET1_RAND, stale.auts) == (s.sqn + 3).to_bytes(6, "big")


def test_gba_on_a_card_without_gba_u_sends_nothing() -> None:
    s = sub("alice")
    _, card = make("alice")
    card.identities()
    before = card.apdu_count
    with pytest.raises(CardError) as err:
        card.gba_bootstrap(*challenge(s, s.sqn + 1))
    assert err.value.code == "card.context_not_supported"
    with pytest.raises(CardError):
        card.gba_naf_derive(b"naf.example.org\x01\x00\x00\x00\x02", s.impi)
    assert card.apdu_count == before


# --- secrets and the APDU link ----------------------------------------------------------
def test_secrets_stay_out_of_reprs_errors_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    s = sub("bob")
    uicc, card = make("bob")
    out = card.authenticate(*challenge(s, s.sqn + 1))
    assert isinstance(out, AkaSuccess)
    rand, autn = challenge(s, s.sqn + 2, rand=bytes(range(16)))
    boot = card.gba_bootstrap(rand, autn)
    card.store_gba_bootstrap(rand, "btid@bsf", "2030-01-01T00:00:00Z")
    key = card.gba_naf_derive(b"naf.example.org\x01\x00\x00\x00\x02", s.impi)
    uicc.inject_response(b"\xdb\x08" + SET1_RES + b"\x10" + SET1_CK + b"\x10" + SET1_IK[:5] + b"\x90\x00")
    with pytest.raises(CardError) as err:
        card.authenticate(*challenge(s, s.sqn + 9))
    text = " ".join(
        [repr(out), str(out), repr(boot), repr(key), repr(card), repr(uicc), str(err.value)]
        + [repr(err.value.to_dict()), caplog.text]
    )
    for secret in (SET1_RES, SET1_CK, SET1_IK, key.reveal(), boot.res.reveal(), s.k.reveal()):
        assert secret.hex() not in text.lower()
        assert secret.hex().upper() not in text
    assert "APDU 00 88 00 81" in caplog.text  # headers and SWs are logged, data is not


def test_link_handles_6cxx_and_61xx() -> None:
    uicc = SoftUicc(sub("alice"))
    link = ApduLink(SoftUiccTransport(uicc))
    link.send(Apdu(0, 0xA4, 0x04, 0x0C, bytes.fromhex("a0000000871004")))
    link.send(Apdu(0, 0xA4, 0x00, 0x0C, b"\x6f\x02"))
    before = link.count
    resp = link.send(Apdu(0, 0xB0, 0, 0, le=256))  # Le=00 on T=0 -> 6Cxx -> resend
    assert resp.ok and resp.data.startswith(b"\x80") and link.count - before == 2
    before = link.count
    resp = link.send(Apdu(0, 0xA4, 0x00, 0x04, b"\x6f\x02", le=256))  # 61xx -> GET RESPONSE
    assert resp.ok and resp.data[0] == 0x62 and link.count - before == 2
    assert "62" not in repr(resp).split("sw=")[0]


# --- short file identifiers and the fallback to SELECT ----------------------------------
class Recording(SoftUiccTransport):
    """The in-process transport, keeping every command APDU it carried."""

    def __init__(self, uicc: SoftUicc, **kw: bool) -> None:
        super().__init__(uicc, **kw)
        self.sent: list[bytes] = []

    def transmit(self, apdu: bytes) -> bytes:
        self.sent.append(bytes(apdu))
        return super().transmit(apdu)

    def selected(self) -> list[str]:
        return [a[5 : 5 + a[4]].hex() for a in self.sent if a[1] == 0xA4]

    def sfi_reads(self) -> list[int]:
        """SFIs of READ BINARY by SFI (a T=0 resend after 6Cxx counted with its command)."""
        sent = self.sent
        return [
            a[2] & 0x1F
            for i, a in enumerate(sent)
            if a[1] == 0xB0 and a[2] & 0x80 and (i == 0 or sent[i - 1][:4] != a[:4])
        ]


@pytest.mark.parametrize("t0", [True, False])
def test_isim_efs_with_an_sfi_are_read_without_select(t0: bool) -> None:
    tp = Recording(SoftUicc(sub("alice"), t0=t0))
    card = Card(tp)
    ids = card.identities()
    assert ids.impi == sub("alice").impi and ids.iccid == "8988211000000000011"
    # EF_ICCID (MF, SFI 02), then EF_IMPI 02, EF_DOMAIN 05, EF_IST 07 in the ISIM
    assert tp.sfi_reads() == [0x02, 0x02, 0x05, 0x07]
    assert tp.selected() == ["2f00", "a0000000871004ffffffff8907090000", "7fff6f04", "7fff6f09"]
    assert not any(a[1] == 0xB0 and not a[2] & 0x80 for a in tp.sent)  # no READ BINARY by offset


@pytest.mark.parametrize("t0", [True, False])
def test_usim_imsi_and_ad_read_by_sfi_with_their_fixed_length(t0: bool) -> None:
    tp = Recording(SoftUicc(sub("carol"), t0=t0))
    Card(tp).identities()
    reads = [a.hex() for a in tp.sent if a[1] == 0xB0]
    assert reads == ["00b082000a", "00b0870009", "00b0830004"]  # ICCID 10, IMSI 9, AD bytes 1-4


REFUSALS = [0x6A81, 0x6A82, 0x6A86, 0x6981, 0x6986, 0x6D00, 0x6B00, 0x6700]


@pytest.mark.parametrize("t0", [True, False])
@pytest.mark.parametrize("refusal", REFUSALS)
def test_card_refusing_sfi_is_read_by_path_and_asked_once(t0: bool, refusal: int) -> None:
    uicc = SoftUicc(sub("alice"), t0=t0, sfi=False)
    uicc.sfi_refusal_sw = refusal
    tp = Recording(uicc)
    card = Card(tp)
    ids = card.identities()
    reference = Card(SoftUiccTransport(SoftUicc(sub("alice"), t0=t0))).identities()
    assert ids == reference
    assert tp.sfi_reads() == [0x02]  # the one refused attempt (EF_ICCID); then never again
    # the refused read, then SELECT EF_ICCID and 3 SELECTs (+GET RESPONSE on T=0) instead of
    # 3 6Cxx resends (T=0): 26 / 20 APDUs, as before SFI reads
    assert card.apdu_count == ISIM_IDENTITY_APDUS[t0] + 1 + 4 == (26 if t0 else 20)
    assert {"2fe2", "7fff6f02", "7fff6f03", "7fff6f07"} <= set(tp.selected())
    card.refresh()  # same card: the answer is remembered
    assert card.identities() == reference and tp.sfi_reads() == [0x02]


@pytest.mark.parametrize("t0", [True, False])
def test_usim_card_refusing_sfi(t0: bool) -> None:
    tp = Recording(SoftUicc(sub("carol"), t0=t0, sfi=False))
    card = Card(tp)
    assert card.identities().imsi == "001010000000003"
    assert tp.sfi_reads() == [0x02]
    # EF_IMSI and EF_AD: SELECT without FCP (their length is fixed) + READ BINARY
    assert card.apdu_count == USIM_IDENTITY_APDUS[t0] + 1 + 1 + 1 + 1


def test_one_ef_without_its_sfi_falls_back_for_that_ef_only() -> None:
    uicc = SoftUicc(sub("alice"))
    uicc.adfs[1].files[0x6F03].sfi = None  # EF_DOMAIN lost its SFI on this card
    tp = Recording(uicc)
    card = Card(tp)
    assert card.identities().domain == sub("alice").domain
    assert tp.sfi_reads() == [0x02, 0x02, 0x05, 0x07]  # EF_IST still by SFI after the 6A82
    assert "7fff6f03" in tp.selected()
    # refused SFI read (1), SELECT with FCP + GET RESPONSE + READ (3) instead of 6Cxx + READ (2)
    assert card.apdu_count == ISIM_IDENTITY_APDUS[True] + 1 + 3 - 2


def test_other_errors_on_an_sfi_read_are_errors() -> None:
    uicc = SoftUicc(sub("alice"))
    card = Card(SoftUiccTransport(uicc))
    card.authenticate(*challenge(sub("alice"), sub("alice").sqn + 1))
    uicc.inject_sw(0x6982)  # EF_IMPI needs a PIN: selecting it by path would not help
    with pytest.raises(CardError) as err:
        card.identities()
    assert err.value.code == "card.security_status" and "EF_IMPI" in err.value.message


@pytest.mark.parametrize("lchan", [False, True])
def test_identities_after_authenticate_on_the_same_channel(lchan: bool) -> None:
    """The ISIM is already selected: its EFs by SFI first, EF_ICCID (MF) last, by path."""
    s = sub("alice")
    tp = Recording(SoftUicc(s), use_logical_channel=lchan)
    card = Card(tp)
    card.authenticate(*challenge(s, s.sqn + 1))
    before = card.apdu_count
    ids = card.identities()
    assert ids.iccid == "8988211000000000011" and ids.impi == s.impi
    if lchan:  # the basic channel still has the MF: EF_ICCID by SFI there
        assert card.apdu_count - before == 1 + 2 + 2 + 5 + 2 + 4
        assert tp.sfi_reads() == [0x02, 0x02, 0x05, 0x07]
    else:  # IMPI, DOMAIN, IMPU, IST, P-CSCF, then SELECT EF_ICCID + READ
        assert card.apdu_count - before == 2 + 2 + 5 + 2 + 4 + 2
        assert tp.selected()[-1] == "2fe2"
    assert isinstance(card.authenticate(*challenge(s, s.sqn + 2)), AkaSuccess)


def test_sfi_reads_go_back_to_the_application_after_an_mf_select() -> None:
    """Defensive path: an MF file read on the basic channel after the ISIM was selected there."""
    s = sub("alice")
    tp = Recording(SoftUicc(s))
    card = Card(tp)
    card.authenticate(*challenge(s, s.sqn + 1))
    card.identities()  # ends with SELECT EF_ICCID: the MF is the basic channel's current DF
    before = len(tp.sent)
    ist = card._read_app_ef(ef.FID_ISIM_IST, ef.SFI_ISIM_IST, "EF_IST")
    assert ist == b"\x05\x00"  # EF_IST, not the MF's (absent) SFI 07
    assert tp.sent[before][1:4] == bytes([0xA4, 0x04, 0x0C])  # SELECT ISIM by AID first


class EndOfFileT1(SoftUiccTransport):
    """A T=1 card answering a Le beyond the end of an EF with the data and 6282 (not 6Cxx)."""

    def transmit(self, apdu: bytes) -> bytes:
        raw = super().transmit(apdu)
        if apdu[1] == 0xB0 and raw[-2] == 0x6C:
            raw = super().transmit(apdu[:4] + raw[-1:])[:-2] + b"\x62\x82"
            self.apdu_count -= 1
        return raw


def test_end_of_file_warning_with_data_is_the_whole_ef() -> None:
    uicc = SoftUicc(sub("carol"), t0=False)
    uicc.adfs[0].files[0x6FAD].data = bytearray(b"\x00\x00\x00")  # an old 3-byte EF_AD
    with pytest.raises(CardError) as err:
        Card(EndOfFileT1(uicc)).identities()
    assert err.value.code == "card.malformed_response" and "EF_AD" in err.value.message
    uicc = SoftUicc(sub("alice"), t0=False)
    card = Card(EndOfFileT1(uicc))
    assert card.identities().impi == sub("alice").impi


@pytest.mark.parametrize("t0", [True, False])
@pytest.mark.parametrize(("content", "size"), [(256, 256), (257, 257), (257, 300), (200, 512)])
def test_sfi_read_of_an_ef_longer_than_one_apdu(t0: bool, content: int, size: int) -> None:
    """Le=00 gives 256 bytes: the rest by offset (the EF is the current EF), 6B00 at the end."""
    nai = "u" * (content - 3 - len("@ims.example.org")) + "@ims.example.org"
    body = b"\x80\x81" + bytes([len(nai)]) + nai.encode()
    assert len(body) == content
    uicc = SoftUicc(sub("alice"), t0=t0)
    uicc.adfs[1].files[0x6F02].data = bytearray(body + b"\xff" * (size - content))
    tp = Recording(uicc)
    assert Card(tp).identities().impi == nai
    by_offset = [a for a in tp.sent if a[1] == 0xB0 and not a[2] & 0x80]
    assert {(a[2] << 8 | a[3]) for a in by_offset} == set(range(256, size + 1, 256))
