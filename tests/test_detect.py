"""Profiles found, not typed: the modem simulator speaks each family's ATI/+CGMI/+CGMM and
the agent picks that family's profile; bus ids from a sysfs tree; unknown or ambiguous
identities fall back to generic-at."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.modem import AT_PROFILES
from ue_agent import profiles
from ue_agent.profiles import ModemIdentity, match_profile


@pytest.mark.parametrize("name", AT_PROFILES)
def test_each_family_is_detected_on_its_dialect(name, modem_factory):
    from ue_agent.drivers.at_identify import detect

    sim = modem_factory(name)
    detection, identity = detect(str(sim.link_path), timeout=5)
    assert detection.profile.name == name, detection.reason
    expected = profiles.get_profile(name).match
    assert expected is not None and identity.manufacturer == expected.cgmi and identity.model == expected.cgmm
    assert identity.usb_id is None  # a pty has no USB device


@pytest.mark.parametrize("name", ["sierra-em7455", "telit-le910c1"])
def test_open_transport_without_a_profile_detects_it(name, modem_factory, subscriber_file):
    from ue_agent.card.session import Card
    from ue_agent.config import CardConfig
    from ue_agent.transports import open_transport

    sim = modem_factory(name)
    transport = open_transport(CardConfig(transport="at", port=str(sim.link_path)))
    try:
        assert transport.port.profile.name == name
        assert Card(transport).identities().application == "isim"
    finally:
        transport.close()


def test_rules_need_manufacturer_and_model():
    quectel = ModemIdentity(manufacturer="Quectel", model="EG91")  # vendor known, model not
    assert match_profile(quectel).profile.name == "generic-at"
    assert (
        match_profile(ModemIdentity(manufacturer="Quectel", model="RM520N-GL")).profile.name
        == "quectel-rm500q"
    )
    assert match_profile(ModemIdentity()).profile.name == "generic-at"
    # the same answers through ATI only (a modem without +CGMI/+CGMM)
    ati = ModemIdentity(ati=("Manufacturer: Sierra Wireless, Incorporated", "Model: MC7455"))
    assert match_profile(ati).profile.name == "sierra-em7455"


def test_bus_id_rules_and_ambiguity():
    assert match_profile(ModemIdentity(usb_id="2c7c:0125")).profile.name == "quectel-ec25"
    assert match_profile(ModemIdentity(pci_id="14c3:4d75")).profile.name == "fibocom-fm350"
    # identity and bus id disagree: two families at the same rank -> generic-at, both named
    d = match_profile(ModemIdentity(manufacturer="Telit", model="LE910C1-EUX", usb_id="2c7c:0125"))
    assert d.profile.name == "telit-le910c1"  # identity (2) outranks a bus id alone (1)
    d = match_profile(
        ModemIdentity(manufacturer="Telit", model="LE910C1", usb_id="1bc7:1031"),
    )
    assert d.profile.name == "telit-le910c1" and "bus id" in d.reason
    fake = profiles.parse_profile(
        {
            "name": "other",
            "kind": "at",
            "summary": "x",
            "card": {"access": "csim"},
            "match": {"manufacturer": ["telit"], "model": ["^LE910"]},
        }
    )
    d = match_profile(ModemIdentity(manufacturer="Telit", model="LE910C1"), [*profiles.load_all(), fake])
    assert (
        d.profile.name == "generic-at"
        and "ambiguous" in d.reason
        and set(d.matched) >= {"other", "telit-le910c1"}
    )


def test_profile_ids_are_well_formed():
    for p in profiles.load_all():
        if p.kind == "at":
            assert p.port is not None
            for value in (*p.port.usb_ids, *p.port.pci_ids):
                assert len(value) == 9 and value == value.lower()
    with pytest.raises(profiles.ConfigError) as ei:
        profiles.parse_profile(
            {
                "name": "x",
                "kind": "at",
                "summary": "x",
                "card": {"access": "csim"},
                "port": {"usb_ids": ["2C7C:125"]},
            }
        )
    assert ei.value.details["key"] == "port.usb_ids"


def _sysfs(root: Path) -> Path:
    """A USB modem (ttyUSB2 under interface 1-1:1.2 of device 1-1) and a PCIe one (wwan0at0)."""
    dev = root / "devices" / "pci0000:00" / "0000:00:14.0" / "usb1" / "1-1"
    tty = dev / "1-1:1.2" / "ttyUSB2"
    tty.mkdir(parents=True)
    (dev / "idVendor").write_text("2c7c\n")
    (dev / "idProduct").write_text("0125\n")
    (root / "class" / "tty" / "ttyUSB2").mkdir(parents=True)
    (root / "class" / "tty" / "ttyUSB2" / "device").symlink_to(tty)
    pci = root / "devices" / "pci0000:00" / "0000:00:1c.0" / "0000:01:00.0"
    pci.mkdir(parents=True)
    (pci / "vendor").write_text("0x14c3\n")
    (pci / "device").write_text("0x4d75\n")
    (root / "class" / "wwan" / "wwan0at0").mkdir(parents=True)
    (root / "class" / "wwan" / "wwan0at0" / "device").symlink_to(pci)
    return root


def test_bus_ids_from_sysfs(tmp_path):
    from ue_agent.drivers.at_identify import bus_ids

    sysfs = _sysfs(tmp_path / "sys")
    assert bus_ids("/dev/ttyUSB2", sysfs) == ("2c7c:0125", None)
    assert bus_ids("/dev/wwan0at0", sysfs) == (None, "14c3:4d75")
    assert bus_ids("/dev/ttyACM7", sysfs) == (None, None)
