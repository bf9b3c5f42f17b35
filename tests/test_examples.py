"""Every example config runs against the lab network: GBA bootstrap and a KMS ticket work.

Each examples/*.toml is loaded as shipped, then started with only what cannot be the same
on a test machine replaced: the socket path, the BSF/KMS URLs (the lab listens on free
loopback ports; the FQDNs the example names, or its URL hosts, are kept), and the card:
the AT example gets the lab modem simulator on a pty, the PC/SC example the lab card (its
reader needs pcscd; tests/test_pcsc.py covers that path). A wrong FQDN shows up here as
gba.wrong_realm on the first mikey.offer.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.fixtures.daemon import ALICE, REPO, spawn
from ue_agent.config import load_config
from ue_agent.lab.network import LabNetwork
from ue_agent.subscriber import load_subscriber

EXAMPLES = sorted((REPO / "examples").glob("*.toml"))
BOB = ALICE.parent / "bob.toml"


def test_there_are_examples() -> None:
    assert {p.name for p in EXAMPLES} >= {"config-lab.toml", "config-at.toml", "config-pcsc.toml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_loads_as_shipped(path: Path) -> None:
    load_config(path)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs_against_the_lab(
    path: Path, tmp_path: Path, lab_network: LabNetwork, modem_factory
) -> None:  # type: ignore[no-untyped-def]
    cfg: dict[str, Any] = tomllib.loads(path.read_text())
    net = cfg.setdefault("network", {})
    for name, url in (("bsf", lab_network.bsf_url), ("kms", lab_network.kms_url)):
        if f"{name}_url" in net:  # keep the FQDN the example means (its own, or its URL's host)
            net.setdefault(f"{name}_fqdn", urlsplit(net[f"{name}_url"]).hostname)
        net[f"{name}_url"] = url
    cfg.setdefault("api", {})["socket"] = str(tmp_path / "api.sock")
    cfg["log"] = {"level": "debug"}
    card = cfg["card"]
    if card["transport"] == "at":
        sim = modem_factory(card.get("profile", "generic-at"))
        card["port"] = str(sim.link_path)
        if "modem" in cfg:
            cfg["modem"]["port"] = str(sim.link_path)
    else:
        cfg["card"] = {"transport": "lab", "subscriber": str(ALICE)}
    cfg.pop("netlink", None)  # the example's interfaces do not exist here
    daemon = spawn(tmp_path, cfg)
    try:
        with daemon.client() as c:
            bob_impu = load_subscriber(BOB).impu[0]
            reply = c.call("mikey.offer", responder=bob_impu, media=["audio"])
            assert reply["ok"] is True, (reply, daemon.log_text()[-3000:])
            assert reply["key_mgmt"].startswith("a=key-mgmt:mikey ")
    finally:
        daemon.stop()
