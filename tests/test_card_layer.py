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


# --- EF decoders against pySim's fixtures (spec-digest 1.2) ------------------------------
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
#: APDUs for identities() on the lab ISIM (alice): EF_DIR = SELECT (+GET RESPONSE on T=0)
#: and 3 records; EF_ICCID = SELECT (no FCP) + READ; SELECT ISIM (no FCP); then SELECT
#: (+GET RESPONSE) and the reads of IMPI, DOMAIN, IMPU (3 records), IST, P-CSCF (2 records).
ISIM_IDENTITY_APDUS = {True: 5 + 2 + 1 + 3 + 3 + 5 + 3 + 4, False: 4 + 2 + 1 + 2 + 2 + 4 + 2 + 3}
#: carol (USIM only): EF_DIR (2 records), EF_ICCID, SELECT USIM, EF_IMSI, EF_AD.
USIM_IDENTITY_APDUS = {True: 4 + 2 + 1 + 3 + 3, False: 3 + 2 + 1 + 2 + 2}


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
    assert card.apdu_count == 5 + 1 + 2  # EF_DIR, SELECT ISIM, AUTHENTICATE + GET RESPONSE
    assert isinstance(card.authenticate(*challenge(s, s.sqn + 2)), AkaSuccess)
    assert card.apdu_count == 5 + 1 + 2 + 2


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
