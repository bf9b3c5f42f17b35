"""Card faults: odd status words, truncated and malformed answers, dead cards, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from ue_agent.card.results import AkaMacFailure, AkaSuccess
from ue_agent.card.session import Card
from ue_agent.crypto.milenage import Milenage
from ue_agent.errors import CardError, TransportError
from ue_agent.lab.uicc import SoftUicc, SoftUiccTransport
from ue_agent.lab.uicc_fs import ef_dir_record, pad, tlv
from ue_agent.subscriber import Subscriber, load_subscriber

LAB = Path(__file__).resolve().parents[1] / "ue_agent" / "lab" / "subscribers"
RAND = bytes.fromhex("23553cbe9637a89d218ae64dae47bf35")
GOOD = bytes.fromhex(
    "db08a54211d5e3ba50bf10b40ba9a3c58b2a05bbf0d987b21bf8cb10f769bcd751044604127672711c6d3441"
)


def sub(name: str = "alice") -> Subscriber:
    return load_subscriber(LAB / f"{name}.toml")


def ready(name: str = "alice") -> tuple[SoftUicc, Card, Subscriber]:
    s = sub(name)
    uicc = SoftUicc(s)
    card = Card(SoftUiccTransport(uicc))
    card.identities()
    return uicc, card, s


def autn(s: Subscriber, sqn: int) -> bytes:
    return Milenage(s.k.reveal(), s.opc.reveal()).generate_autn(RAND, sqn.to_bytes(6, "big"), s.amf)


SW_CODES = [
    (0x6982, "card.security_status"),
    (0x6983, "card.blocked"),
    (0x6985, "card.conditions_not_satisfied"),
    (0x6A82, "card.file_not_found"),
    (0x6A83, "card.record_not_found"),
    (0x6A86, "card.incorrect_p1p2"),
    (0x6B00, "card.incorrect_p1p2"),
    (0x6700, "card.wrong_length"),
    (0x6881, "card.channel_not_supported"),
    (0x9864, "card.context_not_supported"),
    (0x9865, "card.key_freshness_failure"),
    (0x9866, "card.memory_full"),
    (0x6D00, "card.not_supported"),
    (0x6E00, "card.not_supported"),
    (0x6F00, "card.technical_problem"),
    (0x6581, "card.memory_problem"),
    (0x63C1, "card.security_status"),
    (0x6283, "card.invalidated"),
    (0x1234, "card.unexpected_sw"),
    (0x6400, "card.unexpected_sw"),
]


@pytest.mark.parametrize(("sw", "code"), SW_CODES)
def test_each_odd_status_word_maps_to_its_code(sw: int, code: str) -> None:
    uicc, card, s = ready()
    uicc.inject_sw(sw)
    with pytest.raises(CardError) as err:
        card.authenticate(RAND, autn(s, s.sqn + 1))
    assert err.value.code == code
    assert err.value.details["sw"] == f"{sw:04X}"
    assert f"{sw:04X}" in err.value.message


def test_9862_is_an_outcome_not_an_error() -> None:
    uicc, card, s = ready()
    uicc.inject_sw(0x9862)
    assert card.authenticate(RAND, autn(s, s.sqn + 1)) == AkaMacFailure()


def test_91xx_is_success_with_a_proactive_command_pending() -> None:
    uicc, card, s = ready()
    uicc.inject_response(GOOD + b"\x91\x10")
    out = card.authenticate(RAND, autn(s, s.sqn + 1))
    assert isinstance(out, AkaSuccess) and len(out.res) == 8


def test_warning_on_a_case_4_command_gets_a_dummy_get_response() -> None:
    uicc, card, s = ready()
    before = card.apdu_count
    uicc.inject_sw(0x6283)
    with pytest.raises(CardError) as err:
        card.authenticate(RAND, autn(s, s.sqn + 1))
    assert err.value.code == "card.invalidated"
    assert card.apdu_count - before == 2  # AUTHENTICATE, then GET RESPONSE Le=00


@pytest.mark.parametrize("cut", range(len(GOOD)))
def test_truncated_aka_response_is_malformed(cut: int) -> None:
    uicc, card, s = ready()
    uicc.inject_response(GOOD[:cut] + b"\x90\x00")
    with pytest.raises(CardError) as err:
        card.authenticate(RAND, autn(s, s.sqn + 1))
    assert err.value.code == "card.malformed_response"


@pytest.mark.parametrize(
    "answer",
    [
        "dc0d" + "00" * 13,  # AUTS one byte short
        "dc0e" + "00" * 13,  # length says 14, 13 follow
        "dc0e" + "00" * 15,  # trailing byte
        "db" + GOOD[1:].hex() + "0801",  # Kc cut short
        "db0210aa",  # RES too short / broken
        "aa0100",  # unknown tag
    ],
)
def test_malformed_aka_answers(answer: str) -> None:
    uicc, card, s = ready()
    uicc.inject_response(bytes.fromhex(answer) + b"\x90\x00")
    with pytest.raises(CardError) as err:
        card.authenticate(RAND, autn(s, s.sqn + 1))
    assert err.value.code == "card.malformed_response"


def test_answers_without_status_word_and_endless_chains() -> None:
    uicc, card, s = ready()
    for raw, count in ((b"\x90", 1), (b"\x61\x10", 80), (b"\x6c\x10", 2)):
        uicc.inject_response(raw, count)
        with pytest.raises(CardError) as err:
            card.authenticate(RAND, autn(s, s.sqn + 1))
        assert err.value.code == "card.malformed_response"
        uicc.clear_faults()


def test_truncated_gba_answers() -> None:
    uicc, card, s = ready("bob")
    uicc.inject_response(b"\xdb\x08\x01\x02\x90\x00")
    with pytest.raises(CardError) as err:
        card.gba_bootstrap(RAND, autn(s, s.sqn + 1))
    assert err.value.code == "card.malformed_response"
    uicc.inject_response(b"\xdb\x20" + bytes(31) + b"\x90\x00")
    with pytest.raises(CardError) as err:
        card.gba_naf_derive(b"naf.example.org\x01\x00\x00\x00\x02", s.impi)
    assert err.value.code == "card.malformed_response"


def test_naf_derivation_before_bootstrap() -> None:
    _, card, s = ready("bob")
    with pytest.raises(CardError) as err:
        card.gba_naf_derive(b"naf.example.org\x01\x00\x00\x00\x02", s.impi)
    assert err.value.code == "card.gba_not_bootstrapped" and err.value.details["sw"] == "6985"


def test_store_gba_bootstrap_too_long_for_ef_gbabp() -> None:
    _, card, _ = ready("bob")
    with pytest.raises(CardError) as err:
        card.store_gba_bootstrap(RAND, "b" * 120, "2030-01-01T00:00:00Z")
    assert err.value.code == "card.data_too_long"


def test_card_removed_and_mute() -> None:
    uicc, card, s = ready()
    uicc.remove()
    with pytest.raises(TransportError) as err:
        card.authenticate(RAND, autn(s, s.sqn + 1))
    assert err.value.code == "card.removed"
    uicc.insert()
    uicc.mute()
    with pytest.raises(TransportError) as err:
        card.authenticate(RAND, autn(s, s.sqn + 1))
    assert err.value.code == "card.no_response"
    # after a reset the facade must select again: refresh() does that
    uicc.insert()
    card.refresh()
    assert isinstance(card.authenticate(RAND, autn(s, s.sqn + 1)), AkaSuccess)


def test_faults_during_identities() -> None:
    s = sub()
    uicc = SoftUicc(s)
    card = Card(SoftUiccTransport(uicc))
    uicc.inject_sw(0x6A82)  # EF_DIR missing
    with pytest.raises(CardError) as err:
        card.identities()
    assert err.value.code == "card.file_not_found"
    card.refresh()
    assert card.identities().impi == s.impi


def test_no_usim_or_isim_in_ef_dir() -> None:
    uicc = SoftUicc(sub())
    uicc.mf.files[0x2F00].records = [ef_dir_record(bytes.fromhex("a000000063504b43532d3135"), "PKCS")]
    with pytest.raises(CardError) as err:
        Card(SoftUiccTransport(uicc)).identities()
    assert err.value.code == "card.no_application"


@pytest.mark.parametrize(
    ("fid", "content", "app"),
    [
        (0x6F02, b"\x81\x03abc", 1),  # EF_IMPI with the wrong tag
        (0x6F02, b"\x80\x30abc", 1),  # EF_IMPI value runs past the end
        (0x6F03, b"\x80\x02\xc3\x28", 1),  # EF_DOMAIN not UTF-8
        (0x6F07, b"\x09\x01", 0),  # EF_IMSI length byte too large
        (0x6FAD, b"\x00\x00\x00\x04", 0),  # EF_AD: MNC length 4
    ],
)
def test_malformed_files(fid: int, content: bytes, app: int) -> None:
    s = sub("alice" if app else "carol")
    uicc = SoftUicc(s)
    target = uicc.adfs[app].files[fid]
    target.data = pad(content, max(len(target.data), len(content)))
    with pytest.raises(CardError) as err:
        Card(SoftUiccTransport(uicc)).identities()
    assert err.value.code == "card.malformed_response"


def test_malformed_pcscf_record() -> None:
    uicc = SoftUicc(sub())
    pcscf = uicc.adfs[1].files[0x6F09]
    assert pcscf.records is not None
    pcscf.records[0][:] = pad(tlv(0x80, b"\x01\x0a\x00"), pcscf.record_len)  # IPv4 with 2 bytes
    with pytest.raises(CardError) as err:
        Card(SoftUiccTransport(uicc)).identities()
    assert err.value.code == "card.malformed_response"


def test_bad_arguments_send_nothing() -> None:
    _, card, _ = ready("bob")
    before = card.apdu_count
    for call in (
        lambda: card.authenticate(RAND[:15], bytes(16)),
        lambda: card.gba_bootstrap(RAND, bytes(17)),
        lambda: card.gba_naf_derive(b"", "impi"),
        lambda: card.store_gba_bootstrap(RAND[:8], "btid", "x"),
    ):
        with pytest.raises(CardError) as err:
            call()
        assert err.value.code == "card.invalid_argument"
    assert card.apdu_count == before


def test_closed_card_transport() -> None:
    _, card, s = ready()
    card.close()
    with pytest.raises(TransportError):
        card.authenticate(RAND, autn(s, s.sqn + 1))


def _isim_on_basic_channel() -> tuple[SoftUicc, Card]:
    """After authenticate(): the next command identities() sends is READ BINARY EF_IMPI by SFI."""
    s = sub()
    uicc = SoftUicc(s)
    card = Card(SoftUiccTransport(uicc))
    assert isinstance(card.authenticate(RAND, autn(s, s.sqn + 1)), AkaSuccess)
    return uicc, card


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        (b"\x90\x00", "card.malformed_response"),  # no data at all for Le=00
        (b"\x6f\x00", "card.technical_problem"),  # an error, not a refusal: no fallback
        (b"\x69\x82", "card.security_status"),
        (b"\x62\x82", "card.end_of_file"),  # the warning without data is no EF content
    ],
)
def test_bad_answers_to_an_sfi_read(answer: bytes, code: str) -> None:
    uicc, card = _isim_on_basic_channel()
    uicc.inject_response(answer)
    with pytest.raises(CardError) as err:
        card.identities()
    assert err.value.code == code and "EF_IMPI" in err.value.message


def test_refused_first_sfi_read_falls_back_and_is_remembered() -> None:
    uicc, card = _isim_on_basic_channel()
    uicc.inject_sw(0x6A86)  # EF_IMPI by SFI refused: the card is taken not to do SFI reads
    before = uicc.commands
    ids = card.identities()
    assert ids.impi == sub().impi and ids.iccid == "8988211000000000011"
    # refused read, then by path: IMPI, DOMAIN, IST (SELECT + GET RESPONSE + READ), IMPU (5),
    # P-CSCF (4), EF_ICCID (SELECT + READ)
    assert uicc.commands - before == 1 + 3 + 3 + 5 + 3 + 4 + 2
