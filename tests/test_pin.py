"""PIN1: the soft UICC's PIN commands (TS 102 221 11.1.9-11.1.13), the agent's policy, and
the whole path on the lab card, over pcscd+vpcd and through each modem profile on a pty:
the right PIN works, a wrong one counts down and the agent stops before the last try, a
blocked PIN is card.pin_blocked, and the PIN is in no log, repr or error text."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.lab import write_subscriber
from tests.fixtures.modem import AT_PROFILES
from ue_agent.card.pin import BLOCKED, READY, REQUIRED, PinGate, PinStatus, plan_verify
from ue_agent.errors import CardError, ConfigError

PIN = "73915824"  # 8 digits: a run this long appears nowhere else by chance
WRONG = "26048153"
PUK = "58120937"
EXTRA = f'pin1 = "{PIN}"\npuk1 = "{PUK}"\n'


def _uicc(tmp_path: Path, extra: str = EXTRA):
    from ue_agent.lab.uicc import SoftUicc
    from ue_agent.subscriber import load_subscriber

    return SoftUicc(load_subscriber(write_subscriber(tmp_path / "pin.toml", extra=extra)))


def _sw(uicc, hexapdu: str) -> int:
    return int.from_bytes(uicc.process(bytes.fromhex(hexapdu))[-2:], "big")


def _block(digits: str) -> str:
    return (digits.encode().hex() + "ff" * (8 - len(digits))).upper()


@pytest.fixture
def cred_dir(tmp_path: Path, monkeypatch) -> Path:
    """$CREDENTIALS_DIRECTORY as systemd's LoadCredential= fills it."""
    d = tmp_path / "credentials"
    d.mkdir()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(d))
    return d


def _credential(d: Path, pin: str) -> str:
    (d / "ue-agent.pin").write_text(pin + "\n")
    return "ue-agent.pin"


# --- the soft UICC ---------------------------------------------------------------------------------


def test_soft_uicc_verify_counts_down_and_blocks(tmp_path):
    uicc = _uicc(tmp_path)
    assert _sw(uicc, "0020000100") == 0x63C3  # VERIFY without data: 3 tries left
    assert _sw(uicc, "00a4040c07a0000000871004") == 0x9000  # SELECT needs no PIN
    assert _sw(uicc, "00b0820000") == 0x6982  # READ BINARY EF_IMPI by SFI 02: PIN first
    assert _sw(uicc, "00200001" + "08" + _block(WRONG)) == 0x63C2
    assert _sw(uicc, "00200001" + "08" + _block(WRONG)) == 0x63C1
    assert _sw(uicc, "0020000100") == 0x63C1
    assert _sw(uicc, "00200001" + "08" + _block(PIN)) == 0x9000  # right: the counter is back to 3
    assert _sw(uicc, "0020000100") == 0x9000  # verified: nothing to give
    uicc.reset()
    assert _sw(uicc, "0020000100") == 0x63C3  # a reset forgets the verification
    for left in (2, 1, 0):
        assert _sw(uicc, "00200001" + "08" + _block(WRONG)) == 0x63C0 | left
    assert _sw(uicc, "00200001" + "08" + _block(PIN)) == 0x6983  # blocked, even the right PIN
    assert _sw(uicc, "0020000100") == 0x63C0
    assert _sw(uicc, "002C000100") == 0x63CA  # UNBLOCK without data: 10 PUK tries
    assert _sw(uicc, "002C000110" + _block(WRONG) + _block("1111")) == 0x63C9
    assert _sw(uicc, "002C000110" + _block(PUK) + _block("4321")) == 0x9000
    assert _sw(uicc, "0020000100") == 0x9000  # UNBLOCK verifies the new PIN
    uicc.reset()
    assert _sw(uicc, "00200001" + "08" + _block("4321")) == 0x9000


def test_soft_uicc_change_disable_enable(tmp_path):
    uicc = _uicc(tmp_path)
    assert _sw(uicc, "00240001" + "10" + _block(PIN) + _block("2580")) == 0x9000  # CHANGE PIN
    uicc.reset()
    assert _sw(uicc, "00200001" + "08" + _block(PIN)) == 0x63C2  # the old one is wrong now
    assert _sw(uicc, "00260001" + "08" + _block("2580")) == 0x9000  # DISABLE PIN
    uicc.reset()
    assert _sw(uicc, "0020000100") == 0x9000  # disabled: nothing to verify
    assert _sw(uicc, "00200001" + "08" + _block("2580")) == 0x6985  # VERIFY on a disabled PIN
    assert _sw(uicc, "00a4040c07a0000000871004") == 0x9000
    assert _sw(uicc, "00b2012400") >> 8 in (0x61, 0x6C, 0x90)  # EF_IMPU (SFI 04) readable without PIN
    assert _sw(uicc, "00280001" + "08" + _block("2580")) == 0x9000  # ENABLE PIN
    uicc.reset()
    assert _sw(uicc, "0020000100") == 0x63C3
    assert _sw(uicc, "00200001" + "04" + "31323334") == 0x6700  # not an 8-byte block
    assert _sw(uicc, "00200081" + "08" + _block("2580")) == 0x6A88  # no local PIN on this card


def test_soft_uicc_authenticate_needs_the_pin(tmp_path):
    uicc = _uicc(tmp_path)
    uicc.process(bytes.fromhex("00a4040c07a0000000871004"))
    rand_autn = "22" + "10" + "00" * 16 + "10" + "00" * 16
    assert _sw(uicc, "00880081" + rand_autn) == 0x6982
    uicc.process(bytes.fromhex("00200001" + "08" + _block(PIN)))
    assert _sw(uicc, "00880081" + rand_autn) == 0x9862  # now the MAC check runs


def test_subscriber_pin_keys(tmp_path):
    from ue_agent.subscriber import load_subscriber

    sub = load_subscriber(write_subscriber(tmp_path / "a.toml", extra=EXTRA + "pin1_tries = 1\n"))
    assert sub.pin1_enabled and sub.pin1_tries == 1 and PIN not in repr(sub)
    for bad, key in (
        ('pin1 = "12a4"\npuk1 = "12345678"\n', "pin1"),
        ('pin1 = "1234"\n', "puk1"),
        ("pin1_enabled = true\n", "pin1_enabled"),
        (EXTRA + "pin1_tries = 4\n", "pin1_tries"),
    ):
        with pytest.raises(ConfigError) as ei:
            load_subscriber(write_subscriber(tmp_path / "b.toml", extra=bad))
        assert ei.value.details["key"] == key
        assert "12a4" not in str(ei.value)
    plain = load_subscriber(write_subscriber(tmp_path / "c.toml"))
    assert plain.pin1 is None and not plain.pin1_enabled


# --- policy and credentials ------------------------------------------------------------------------


def test_plan_verify():
    assert plan_verify(PinStatus(READY), have_pin=False, allow_last_try=False) is False
    assert plan_verify(PinStatus(REQUIRED, 3), have_pin=True, allow_last_try=False) is True
    assert plan_verify(PinStatus(REQUIRED, 1), have_pin=True, allow_last_try=True) is True
    cases = [
        (PinStatus(REQUIRED, 3), False, False, "card.pin_required"),  # no credential
        (PinStatus(REQUIRED, 1), True, False, "card.pin_required"),  # the last try
        (PinStatus(REQUIRED, None), True, False, "card.pin_required"),  # unknown count
        (PinStatus(BLOCKED, 0), True, True, "card.pin_blocked"),
    ]
    for status, have, allow, code in cases:
        with pytest.raises(CardError) as ei:
            plan_verify(status, have_pin=have, allow_last_try=allow)
        assert ei.value.code == code


def test_credential_file(cred_dir, tmp_path, monkeypatch):
    from ue_agent.credentials import read_pin

    assert read_pin(_credential(cred_dir, PIN)).reveal() == PIN.encode()
    other = tmp_path / "abs.pin"
    other.write_text("1234")
    assert read_pin(str(other)).reveal() == b"1234"
    (cred_dir / "bad.pin").write_text("12 34 5678\n")
    with pytest.raises(ConfigError) as ei:
        read_pin("bad.pin")
    assert ei.value.code == "config.invalid" and "5678" not in str(ei.value)
    with pytest.raises(ConfigError) as ei:
        read_pin("absent.pin")
    assert ei.value.code == "config.credential_missing"
    with pytest.raises(ConfigError):
        read_pin("../escape")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(ConfigError) as ei:
        read_pin("ue-agent.pin")
    assert ei.value.code == "config.credential_missing"


def test_config_pin_keys(tmp_path):
    from ue_agent.config import parse_config

    card = {"transport": "pcsc", "pin_credential": "ue-agent.pin", "pin_allow_last_try": True}
    cfg = parse_config({"card": card})
    assert cfg.card.pin_credential == "ue-agent.pin" and cfg.card.pin_allow_last_try is True
    with pytest.raises(ConfigError) as ei:
        parse_config({"card": {"transport": "pcsc", "pin_allow_last_try": "yes"}})
    assert ei.value.details["key"] == "card.pin_allow_last_try"
    with pytest.raises(ConfigError) as ei:
        parse_config({"card": {"transport": "pcsc", "pin": "1234"}})  # never a PIN in the main config
    assert ei.value.code == "config.unknown_key"


# --- the whole path: one scenario, three card paths ------------------------------------------------


def _scenario(open_card, cred_dir: Path, uicc) -> None:
    """Right PIN after wrong ones; the countdown stops before the last try; blocked is blocked.

    ``open_card()`` gives a fresh Card on the path under test (a daemon start)."""
    from ue_agent.pin_unlock import unlock

    def attempt(gate: PinGate) -> CardError | PinStatus:
        card = open_card()
        try:
            status = unlock(card, gate)
            card.identities()  # the ISIM's files are readable now
            return status
        except CardError as exc:
            return exc
        finally:
            card.close()

    # no credential: card.pin_required, with the tries left in the error and the gate
    gate = PinGate(None)
    err = attempt(gate)
    assert isinstance(err, CardError) and err.code == "card.pin_required"
    assert gate.status.state == REQUIRED and gate.status.retries == 3
    # a wrong PIN: one try goes
    name = _credential(cred_dir, WRONG)
    gate = PinGate(name)
    err = attempt(gate)
    assert isinstance(err, CardError) and err.code == "card.pin_wrong" and err.details["retries"] == 2
    # the same process never sends it again
    err = attempt(gate)
    assert isinstance(err, CardError) and err.code == "card.pin_wrong"
    assert uicc.pin1.tries == 2
    # a restart tries once more: 1 left; the next restart stops before the last try
    err = attempt(PinGate(name))
    assert isinstance(err, CardError) and err.details["retries"] == 1
    gate = PinGate(name)
    err = attempt(gate)
    assert isinstance(err, CardError) and err.code == "card.pin_required" and err.details["retries"] == 1
    assert uicc.pin1.tries == 1 and gate.status.retries == 1
    # the right PIN: works (the last try may be used only when the config allows it)
    name = _credential(cred_dir, PIN)
    status = attempt(PinGate(name, allow_last_try=True))
    assert isinstance(status, PinStatus) and status.state == READY and status.verified_by_agent
    assert uicc.pin1.tries == 3
    # the right PIN with tries to spare: no config switch needed
    uicc.reset()
    status = attempt(PinGate(name))
    assert isinstance(status, PinStatus) and status.verified_by_agent
    # blocked: card.pin_blocked, and no VERIFY is sent
    uicc.pin1.tries = 0
    uicc.reset()
    err = attempt(PinGate(name, allow_last_try=True))
    assert isinstance(err, CardError) and err.code == "card.pin_blocked"


def _no_secret_in(caplog, *texts: str) -> None:
    text = caplog.text + "".join(texts)
    for secret in (PIN, WRONG, PUK, PIN.encode().hex(), WRONG.encode().hex(), PIN.encode().hex().upper()):
        assert secret not in text


def test_pin_on_the_lab_card(tmp_path, cred_dir, caplog):
    from ue_agent.card.session import Card
    from ue_agent.lab.uicc import SoftUiccTransport

    caplog.set_level(logging.DEBUG)
    uicc = _uicc(tmp_path)
    _scenario(lambda: Card(SoftUiccTransport(uicc)), cred_dir, uicc)
    _no_secret_in(caplog, repr(uicc), repr(uicc.pin1))


@pytest.fixture
def pin_vpcd_card(pcscd, tmp_path: Path) -> Iterator[tuple[object, str]]:
    """A soft UICC with PIN1 enabled in the first vpcd reader."""
    from tests.fixtures.pcsc import wait_reader
    from ue_agent.lab.vpcd import VpcdCard

    pcscd.start()
    reader = pcscd.readers[0]
    wait_reader(reader, False)
    server = VpcdCard(_uicc(tmp_path), "127.0.0.1", pcscd.port).start()
    try:
        wait_reader(reader, True)
        yield server, reader
    finally:
        server.stop()
    if pcscd.running:
        wait_reader(reader, False)


@pytest.mark.pcsc
def test_pin_over_pcsc(pin_vpcd_card, cred_dir, caplog):
    from ue_agent.card.session import Card
    from ue_agent.drivers.pcsc import PcscTransport

    caplog.set_level(logging.DEBUG)
    server, reader = pin_vpcd_card
    _scenario(lambda: Card(PcscTransport(reader, use_logical_channel=True)), cred_dir, server.uicc)
    _no_secret_in(caplog)


@pytest.mark.parametrize("profile", AT_PROFILES)
def test_pin_over_each_modem_profile(profile, modem_factory, tmp_path, cred_dir, caplog):
    """AT+CPIN? / AT+CPIN= through the simulator speaking the profile's dialect; the tries
    left come from the profile's vendor command (or the card, over AT+CSIM)."""
    from ue_agent.card.session import Card
    from ue_agent.drivers.at_modem import open_modem_transport

    caplog.set_level(logging.DEBUG)
    uicc = _uicc(tmp_path)
    sim = modem_factory(profile, uicc=uicc)
    path = str(sim.link_path)
    _scenario(lambda: Card(open_modem_transport(path, profile=profile, timeout=5)), cred_dir, uicc)
    assert "AT+CPIN=<redacted>" in sim.commands
    _no_secret_in(caplog, " ".join(sim.commands))


def test_modem_pin_status_sources(modem_factory, tmp_path):
    """The tries left: the profile's command where it has one, the card otherwise."""
    from ue_agent.drivers.at_modem import AtPort
    from ue_agent.drivers.at_pin import modem_pin_status

    uicc = _uicc(tmp_path, EXTRA + "pin1_tries = 2\n")
    expected = (("quectel-ec25", "AT+QPINC"), ("fibocom-fm350", "AT+CSIM VERIFY"), ("generic-at", "CPINR"))
    for profile, source in expected:
        sim = modem_factory(profile, uicc=uicc)
        port = AtPort(str(sim.link_path), profile=profile, timeout=5)
        try:
            status = modem_pin_status(port)
        finally:
            port.close()
        assert status.state == REQUIRED and status.retries == 2, profile
        assert source in status.source, (profile, status.source)


def test_status_reports_the_pin(tmp_path, cred_dir):
    """The agent's status carries PIN1's state and tries left (card.pin_required here)."""
    import asyncio

    from ue_agent.agent import Agent
    from ue_agent.config import parse_config
    from ue_agent.ops.status import status_of

    sub = write_subscriber(tmp_path / "s.toml", extra=EXTRA)
    cfg = parse_config({"card": {"transport": "lab", "subscriber": str(sub)}})

    async def run() -> dict:
        agent = Agent(cfg, lambda *a: None)
        await agent.start()
        try:
            return status_of(agent.ctx)
        finally:
            await agent.stop()

    status = asyncio.run(run())
    assert status["card"]["error"] == "card.pin_required"
    assert status["card"]["pin"]["state"] == "required" and status["card"]["pin"]["retries"] == 3


def test_card_info_gives_the_pin_from_the_credential(tmp_path, cred_dir):
    """``ue-agent card info`` on a PIN-protected lab card: card.pin_required without a
    credential (exit 1), the identities with one; the PIN is not printed."""
    import subprocess
    import sys

    sub = write_subscriber(tmp_path / "s.toml", extra=EXTRA)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[card]\ntransport = "lab"\nsubscriber = "{sub}"\n')
    run = [sys.executable, "-m", "ue_agent", "card", "info", "--config", str(cfg)]
    r = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "card.pin_required" in r.stderr
    cfg.write_text(cfg.read_text() + f'pin_credential = "{_credential(cred_dir, PIN)}"\n')
    r = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "IMPI" in r.stdout
    assert PIN not in r.stdout + r.stderr


def test_pin_given_again_when_the_card_forgets_it(tmp_path, cred_dir):
    """A reset re-powers the UICC: PIN1 is needed again. The card worker gives it from the
    credential when a command is refused with 6982 and runs the request once more."""
    import asyncio

    from tests.fixtures.daemon import aka_challenge
    from ue_agent.agent import Agent
    from ue_agent.card.results import AkaSuccess
    from ue_agent.card.session import Card
    from ue_agent.config import parse_config
    from ue_agent.lab.uicc import SoftUicc, SoftUiccTransport
    from ue_agent.ops.status import status_of
    from ue_agent.subscriber import load_subscriber

    sub = write_subscriber(tmp_path / "s.toml", extra=EXTRA)
    uicc = SoftUicc(load_subscriber(sub))
    cfg = parse_config(
        {"card": {"transport": "lab", "subscriber": str(sub), "pin_credential": _credential(cred_dir, PIN)}}
    )

    async def run() -> tuple[object, dict]:
        agent = Agent(cfg, lambda *a: None)
        gate = agent.ctx.pin
        assert gate is not None

        def opener() -> Card:
            card = Card(SoftUiccTransport(uicc))
            from ue_agent.pin_unlock import unlock

            unlock(card, gate)
            return card

        agent.ctx.card._opener = opener
        await agent.start()
        try:
            uicc.pin1.reset()  # as after a UICC reset: the verification is gone
            rand, autn = aka_challenge(40, sub)
            outcome = await agent.card.call(lambda c: c.authenticate(rand, autn))
            return outcome, status_of(agent.ctx)
        finally:
            await agent.stop()

    outcome, status = asyncio.run(run())
    assert isinstance(outcome, AkaSuccess)
    assert status["card"]["pin"]["verified_by_agent"] is True
    assert uicc.highest_sqn == 40
