"""Issue 9 transcripts replayed: a scripted modem on a pty in front of the soft card.

Every transport behaviour seen on real modems (late answers, also split or with latency;
URCs and noise before and between lines; NULs; CR-only lines; ATV0; silent test commands;
SIM busy once; missing OK once; +CSIM without the length field) is replayed by the modem
simulator (``ModemSimulator.shape_next`` and friends) while ``ue-agent card info`` runs:
it must print exactly the identities an undisturbed run prints, never other data.

The profiles are the shipped ones with a 1 s command timeout (written to a profile
directory on ``$UE_AGENT_PROFILES``, as a user would), so a late answer costs a second.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("serial", reason="pyserial is not installed")

from tests.fixtures.daemon import config_text  # noqa: E402
from ue_agent import cli  # noqa: E402
from ue_agent.drivers.at_modem import open_modem_transport  # noqa: E402
from ue_agent.lab.modem import ModemSimulator  # noqa: E402
from ue_agent.profiles import SOURCE_DIR  # noqa: E402

TIMEOUT_S = 1.0


@pytest.fixture
def fast_profiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shipped AT profiles with command_timeout_s = 1 s, first on the search path."""
    d = tmp_path / "profiles"
    d.mkdir()
    for src in SOURCE_DIR.glob("*.toml"):
        text = src.read_text()
        if "\n[at]\n" in text:
            text = re.sub(r"\ncommand_timeout_s\s*=.*", "", text)
            text = text.replace("\n[at]\n", f"\n[at]\ncommand_timeout_s = {TIMEOUT_S}\n", 1)
        (d / src.name).write_text(text)
    monkeypatch.setenv("UE_AGENT_PROFILES", str(d))
    return d


def card_info(
    tmp_path: Path, link: Path, profile: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    config = tmp_path / f"config-{profile}.toml"
    config.write_text(config_text({"card": {"transport": "at", "port": str(link), "profile": profile}}))
    capsys.readouterr()
    try:
        rc = cli.main(["card", "info", "--config", str(config)])
    except SystemExit as exc:  # the CLI reports errors by exiting
        rc = int(exc.code or 0)
    return rc, capsys.readouterr().out


@pytest.fixture
def replay(tmp_path, fast_profiles, soft_uicc, capsys):
    """run(profile, prepare) -> (rc, output, sim, expected): card info undisturbed, then again
    with ``prepare(sim)`` scripting the modem."""
    sims: list[ModemSimulator] = []

    def run(profile: str, prepare, *, power_on=None):
        sim = ModemSimulator(soft_uicc, profile, tmp_path / f"tty-{len(sims)}")
        sims.append(sim)
        if power_on is not None:
            power_on(sim)
        sim.start()
        rc, expected = card_info(tmp_path, sim.link_path, profile, capsys)
        assert rc == 0 and "IMPI" in expected, expected
        assert soft_uicc.open_channels == [0]  # card info closed the channel it opened
        prepare(sim)
        rc, out = card_info(tmp_path, sim.link_path, profile, capsys)
        return rc, out, sim, expected

    yield run
    for sim in sims:
        sim.close()


def shapes(*specs):
    def prepare(sim: ModemSimulator) -> None:
        for kind, kw in specs:
            sim.shape_next(kind, **kw)

    return prepare


#: (name, shapes): each is one transcript of the issue, on the Nth SIM command
SCENARIOS = [
    ("late answer on the first APDU", shapes(("late", {"match": "AT+CSIM", "delay": 1.6}))),
    ("late answer mid-read", shapes(("late", {"match": "AT+CSIM", "skip": 6, "delay": 1.4}))),
    ("late answer on the last reads", shapes(("late", {"match": "AT+CSIM", "skip": 12, "delay": 1.3}))),
    (
        "late answer split in pieces",
        shapes(("late", {"match": "AT+CSIM", "skip": 3, "delay": 0.8, "pieces": 5, "gap": 0.15})),
    ),
    (
        "slow answer within the timeout",
        shapes(("late", {"match": "AT+CSIM", "skip": 2, "delay": 0.3, "pieces": 3, "gap": 0.1})),
    ),
    ("noise before the answer", shapes(("noise", {"lines": ["PB DONE", "0,1", "SMS DONE"]}))),
    (
        "noise between the lines",
        shapes(("noise", {"match": "AT+CSIM", "skip": 4, "where": "between", "lines": ["0,1", "+CREG: 1"]})),
    ),
    ("noise after the answer", shapes(("noise", {"match": "AT+CSIM", "skip": 1, "where": "after"}))),
    ("NUL bytes", shapes(*[("nul", {"match": "AT+CSIM"})] * 3)),
    ("CR-only lines", shapes(*[("cr_only", {"match": "AT+CSIM"})] * 3)),
    ("SIM busy once", shapes(("busy", {"match": "AT+CSIM", "skip": 2}))),
    ("missing OK once", shapes(("missing_ok", {"match": "AT+CSIM", "skip": 5}))),
    ("missing OK on the first APDU", shapes(("missing_ok", {"match": "AT+CSIM"}))),
    ("+CSIM without length", shapes(*[("no_length", {"match": "AT+CSIM"})] * 20)),
]


@pytest.mark.parametrize("name,prepare", SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_card_info_through_each_transcript_generic(replay, name, prepare):
    rc, out, sim, expected = replay("generic-at", prepare)
    assert rc == 0, out
    assert out == expected
    assert sim.pending_shapes == 0  # every scripted behaviour was replayed


def test_missing_ok_on_manage_channel_leaks_no_channel(replay, soft_uicc):
    """The MANAGE CHANNEL open whose OK never came: the channel it opened is closed again."""
    rc, out, sim, expected = replay("generic-at", shapes(("missing_ok", {"match": 'AT+CSIM=10,"0070000001'})))
    assert rc == 0 and out == expected
    assert soft_uicc.open_channels == [0]


def test_late_answer_to_manage_channel_leaks_no_channel(replay, soft_uicc):
    rc, out, sim, expected = replay(
        "generic-at", shapes(("late", {"match": 'AT+CSIM=10,"0070000001', "delay": 1.5}))
    )
    assert rc == 0 and out == expected
    assert soft_uicc.open_channels == [0]


def test_atv0_modem(replay):
    """Powered on in ATV0 (numeric result codes): ATV1 at set-up brings it back."""

    def v0(sim: ModemSimulator) -> None:
        sim.verbose_default = False

    rc, out, sim, expected = replay("generic-at", lambda sim: None, power_on=v0)
    assert rc == 0 and out == expected
    assert "ATV1" in sim.commands


def test_atv0_after_a_reset_between_runs(replay):
    def to_v0(sim: ModemSimulator) -> None:
        sim.verbose_default = False
        sim.reset_modem(urcs=())  # restarts in V0 and says nothing

    rc, out, sim, expected = replay("generic-at", to_v0)
    assert rc == 0 and out == expected


@pytest.mark.parametrize("profile", ["generic-at", "fibocom-fm350", "sierra-em7455"])
def test_silent_test_commands(replay, profile):
    """A modem that never answers "=?": nothing waits for one."""

    def silent(sim: ModemSimulator) -> None:
        sim.silent_test_commands = True

    rc, out, sim, expected = replay(profile, lambda sim: None, power_on=silent)
    assert rc == 0 and out == expected
    assert not any(c.endswith("=?") for c in sim.commands)


@pytest.mark.parametrize("profile", ["fibocom-fm350", "sierra-em7455"])
def test_rdy_before_the_ccho_answer_is_no_channel_handle(replay, profile):
    """Issue 9: "RDY" before the +CCHO answer was taken as the handle (AT+CGLA=RDY,...)."""
    rc, out, sim, expected = replay(
        profile, shapes(("noise", {"match": "AT+CCHO", "lines": ["RDY"], "where": "before"}))
    )
    assert rc == 0 and out == expected
    assert not any(c.upper().startswith("AT+CGLA=RDY") for c in sim.commands)


@pytest.mark.parametrize("profile", ["fibocom-fm350", "sierra-em7455", "quectel-rm500q"])
def test_cgla_transcripts(replay, profile):
    """Bare numbers before the answer, a late +CGLA answer, NULs, missing OK: right data."""
    rc, out, sim, expected = replay(
        profile,
        shapes(
            ("noise", {"match": "AT+CGLA", "lines": ["0,1"], "where": "before"}),
            ("late", {"match": "AT+CGLA", "skip": 1, "delay": 1.4, "pieces": 3, "gap": 0.1}),
            ("nul", {"match": "AT+CGLA", "skip": 1}),
            ("missing_ok", {"match": "AT+CGLA", "skip": 3}),
        ),
    )
    assert rc == 0, out
    assert out == expected
    assert sim.pending_shapes == 0


def test_late_answers_never_reach_a_later_command(modem_factory, soft_uicc):
    """Each READ RECORD of EF_DIR gets its own record, whatever came late before it."""
    sim = modem_factory()
    t = open_modem_transport(str(sim.link_path), timeout=TIMEOUT_S)
    try:
        assert t.transmit(bytes.fromhex("00A4080C022F00"))[-2:] == b"\x90\x00"

        def record(n: int) -> bytes:
            first = t.transmit(bytes([0x00, 0xB2, n, 0x04, 0x00]))
            assert first[0] == 0x6C  # wrong Le: the card says the record length
            return t.transmit(bytes([0x00, 0xB2, n, 0x04, first[1]]))

        truth = [record(n) for n in (1, 2)]
        assert truth[0] != truth[1]
        for delay in (1.2, 1.8, 2.6):
            sim.shape_next("late", match="AT+CSIM", delay=delay)
            got = [record(1), record(2), record(1), record(2)]
            assert got == truth * 2
        assert t.port.resyncs >= 3 and t.port.late_lines >= 3
    finally:
        t.close()


def test_noise_alone_is_no_answer(modem_factory):
    """A bare "0,1" or a NUL line where the answer should be: modem.garbage, not data."""
    from ue_agent.errors import TransportError

    sim = modem_factory()
    t = open_modem_transport(str(sim.link_path), timeout=TIMEOUT_S)
    try:
        for raw in ("\r\n0,1\r\n\r\nOK\r\n", "\r\n\x00\r\n\r\nOK\r\n", "\r\nRDY\r\n\r\nOK\r\n"):
            sim.reply_next(raw)
            with pytest.raises(TransportError) as ei:
                t.transmit(bytes.fromhex("00D6000001FF"))  # UPDATE BINARY: never sent twice
            assert ei.value.code == "modem.garbage"
    finally:
        t.close()
