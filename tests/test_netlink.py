"""The netlink monitor in a network namespace made by the test (needs root and iproute2)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import uuid

import pytest

from ue_agent.drivers.netlink import AddressChange, LinkChange, NetlinkMonitor

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2 (ip netns)"
)


@pytest.fixture
def netns():
    name = f"ueagent-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True)


def test_address_and_link_changes_are_reported_for_watched_interfaces(netns):
    events: list = []

    async def scenario():
        mon = NetlinkMonitor(["ims0"], events.append, netns=netns)
        mon.start()
        await mon.wait_ready()
        ip(netns, "link", "add", "ims0", "type", "veth", "peer", "name", "other0")
        ip(netns, "link", "set", "ims0", "up")
        ip(netns, "addr", "add", "192.0.2.10/24", "dev", "ims0")
        ip(netns, "addr", "add", "2001:db8::10/64", "dev", "other0")  # not watched
        ip(netns, "addr", "del", "192.0.2.10/24", "dev", "ims0")
        ip(netns, "link", "del", "ims0")
        for _ in range(100):
            if any(isinstance(e, LinkChange) and e.operstate == "GONE" for e in events):
                break
            await asyncio.sleep(0.05)
        await mon.stop()

    asyncio.run(scenario())
    addrs = [e for e in events if isinstance(e, AddressChange)]
    assert AddressChange("ims0", "192.0.2.10", 24, True) in addrs
    assert AddressChange("ims0", "192.0.2.10", 24, False) in addrs
    assert all(e.ifname == "ims0" for e in events)
    assert events[-1] == LinkChange("ims0", False, "GONE")


def test_pyroute2_is_not_imported_by_the_core():
    code = "import ue_agent.cli, ue_agent.drivers.netlink, sys; print('pyroute2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
