"""The config file: every example loads; every bad key or value is named in the error."""

from __future__ import annotations

from pathlib import Path

import pytest

from ue_agent.config import load_config, parse_config
from ue_agent.errors import ConfigError

EXAMPLES = Path(__file__).parent.parent / "examples"
PCSC = {"card": {"transport": "pcsc"}}


@pytest.mark.parametrize("name", ["config-lab.toml", "config-pcsc.toml", "config-at.toml"])
def test_examples_load(name: str) -> None:
    cfg = load_config(EXAMPLES / name)
    assert cfg.card.transport in ("lab", "pcsc", "at")
    assert cfg.api.max_line == 65536


def test_lab_example_resolves_subscriber_relative_to_file() -> None:
    cfg = load_config(EXAMPLES / "config-lab.toml")
    assert Path(cfg.card.subscriber).resolve().is_file()
    from ue_agent.lab.network import DEFAULT_BSF_FQDN, DEFAULT_KMS_FQDN

    # the lab's own FQDNs, or every mikey operation fails with gba.wrong_realm (issue 14)
    assert cfg.network.bsf_host == DEFAULT_BSF_FQDN
    assert cfg.network.kms_host == DEFAULT_KMS_FQDN


def test_defaults() -> None:
    cfg = parse_config({"card": {"transport": "pcsc"}})
    assert cfg.api.socket == "/run/ue-agent/api.sock"
    assert (cfg.api.max_clients, cfg.api.max_inflight, cfg.api.max_line) == (16, 4, 65536)
    assert cfg.netlink.enabled is False and cfg.modem.port is None
    assert cfg.network.bsf_host is None


def test_netlink_section_enables_watch() -> None:
    cfg = parse_config(PCSC | {"netlink": {}})
    assert cfg.netlink.enabled and cfg.netlink.interfaces == []


@pytest.mark.parametrize(
    ("doc", "code", "key"),
    [
        (PCSC | {"bogus": {}}, "config.unknown_key", "bogus"),
        ({"card": {"transport": "pcsc", "colour": "red"}}, "config.unknown_key", "card.colour"),
        (PCSC | {"api": {"max_client": 3}}, "config.unknown_key", "api.max_client"),
        (PCSC | {"netlink": {"enabled": True}}, "config.unknown_key", "netlink.enabled"),
        ({"card": {"transport": "nfc"}}, "config.invalid", "card.transport"),
        ({"card": {"transport": 3}}, "config.invalid", "card.transport"),
        ({"card": {"transport": "lab"}}, "config.missing_key", "card.subscriber"),
        ({"card": {"transport": "at"}}, "config.missing_key", "card.port"),
        ({"card": "pcsc"}, "config.invalid", "card"),
        (PCSC | {"api": {"max_clients": "8"}}, "config.invalid", "api.max_clients"),
        (PCSC | {"api": {"max_clients": True}}, "config.invalid", "api.max_clients"),
        (PCSC | {"api": {"max_clients": 0}}, "config.invalid", "api.max_clients"),
        (PCSC | {"api": {"max_line": 70000}}, "config.invalid", "api.max_line"),
        (PCSC | {"api": {"allowed_uids": [1, "x"]}}, "config.invalid", "api.allowed_uids"),
        (PCSC | {"api": {"allowed_gids": 5}}, "config.invalid", "api.allowed_gids"),
        (PCSC | {"api": {"allowed_gids": [-1]}}, "config.invalid", "api.allowed_gids"),
        (PCSC | {"api": {"socket": "rel/api.sock"}}, "config.invalid", "api.socket"),
        (PCSC | {"api": {"socket": "/" + "x" * 200}}, "config.invalid", "api.socket"),
        (PCSC | {"api": {"idle_timeout_s": 0}}, "config.invalid", "api.idle_timeout_s"),
        (PCSC | {"network": {"bsf_url": "ftp://x/"}}, "config.invalid", "network.bsf_url"),
        (PCSC | {"network": {"kms_url": "nohost"}}, "config.invalid", "network.kms_url"),
        (PCSC | {"network": {"ca_file": "ca.pem"}}, "config.invalid", "network.ca_file"),
        (PCSC | {"netlink": {"interfaces": "eth0"}}, "config.invalid", "netlink.interfaces"),
        (PCSC | {"log": {"level": "loud"}}, "config.invalid", "log.level"),
        (PCSC | {"modem": {"port": ""}}, "config.invalid", "modem.port"),
    ],
)
def test_bad_config_names_the_key(doc: dict, code: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(doc, "x.toml")
    assert info.value.code == code
    assert info.value.details["key"] == key
    assert f"'{key}'" in info.value.message and info.value.message.startswith("x.toml")


def test_unreadable_and_syntax(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.toml")
    assert info.value.code == "config.unreadable"
    bad = tmp_path / "bad.toml"
    bad.write_text("[card\ntransport = 'lab'\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert info.value.code == "config.syntax"
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe[card]\n")
    with pytest.raises(ConfigError) as info:
        load_config(binary)
    assert info.value.code == "config.syntax"
