"""LabNetwork: listeners, counters, faults, the KMS hook, and `ue-agent lab network`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.fixtures.network import SUBSCRIBER_DIR, lab_subscribers
from ue_agent.errors import ConfigError
from ue_agent.lab.network import DEFAULT_BSF_FQDN, DEFAULT_KMS_FQDN, LabNetwork, LabNetworkThread


def test_fixture_network_has_two_listeners_and_counts(lab_network):
    assert lab_network.bsf_fqdn == DEFAULT_BSF_FQDN and lab_network.kms_fqdn == DEFAULT_KMS_FQDN
    assert lab_network.bsf_url.endswith("/") and not lab_network.kms_url.endswith("/")
    assert lab_network.bsf_url.rstrip("/") != lab_network.kms_url
    assert sorted(lab_network.hss.impis) == sorted(s.impi for s in lab_subscribers())

    async def go():
        async with aiohttp.ClientSession() as http:
            async with http.get(lab_network.bsf_url) as r:
                assert r.status == 400  # no Authorization with an IMPI
            async with http.get(lab_network.kms_url + "/", headers={"User-Agent": "t 3gpp-gba"}) as r:
                assert r.status in (401, 404)  # 401 once the KMS app is installed
            lab_network.faults.kms_status = 503
            async with http.post(lab_network.kms_url + "/anything", data=b"x") as r:
                assert r.status == 503

    asyncio.run(go())
    assert lab_network.requests == {"bsf": 1, "kms": 2}


def test_stop_frees_the_ports_and_restart_is_refused_while_running():
    net = LabNetwork(lab_subscribers())
    thread = LabNetworkThread(net)
    thread.start()
    port = int(net.bsf_url.rsplit(":", 1)[1].strip("/"))
    with pytest.raises(RuntimeError):
        thread.call(net.start())
    thread.stop()
    with pytest.raises(RuntimeError):
        _ = net.bsf_url
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))  # free again
    s.close()


def test_port_in_use_is_a_config_error():
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        net = LabNetwork(lab_subscribers(), bsf_addr=busy.getsockname())
        with pytest.raises(ConfigError) as exc:
            asyncio.run(net.start())
        assert "cannot listen" in exc.value.message
    finally:
        busy.close()


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@contextlib.contextmanager
def _cli_network(*addresses: str) -> Iterator[subprocess.Popen[str]]:
    """``ue-agent lab network`` for alice and bob at ``addresses`` (its --bsf/--kms/... options);
    once the body is done it must stop on SIGTERM with status 0."""
    files = [str(SUBSCRIBER_DIR / f"{n}.toml") for n in ("alice", "bob")]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ue_agent", "lab", "network", "--subscribers", *files, *addresses],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        yield proc
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()


def test_cli_lab_network_prints_urls_serves_and_stops_on_sigterm():
    bsf_port, kms_port = _free_port(), _free_port()
    with _cli_network("--bsf", f"127.0.0.1:{bsf_port}", "--kms", f"127.0.0.1:{kms_port}") as proc:
        lines = [proc.stdout.readline() for _ in range(3)]
        assert f"BSF {DEFAULT_BSF_FQDN} at http://127.0.0.1:{bsf_port}/" in lines[0]
        assert f"KMS {DEFAULT_KMS_FQDN} at http://127.0.0.1:{kms_port}" in lines[1]
        assert "001010000000002@" in lines[2]

        async def challenge():
            auth = (
                'Digest username="001010000000001@ims.mnc001.mcc001.3gppnetwork.org", '
                'realm="x", nonce="", uri="/", response=""'
            )
            url = f"http://127.0.0.1:{bsf_port}/"
            async with aiohttp.ClientSession() as http, http.get(url, headers={"Authorization": auth}) as r:
                return r.status, r.headers.get("WWW-Authenticate", "")

        status, www = asyncio.run(challenge())
        assert status == 401 and re.search(r'realm="bsf\.ims\.mnc001\.mcc001\.pub\.3gppnetwork\.org"', www)


@pytest.mark.parametrize("arg", ["nohostport", "127.0.0.1:http", "127.0.0.1:70000"])
def test_cli_rejects_bad_addresses(arg, tmp_path: Path):
    r = subprocess.run(
        [sys.executable, "-m", "ue_agent", "lab", "network", "--subscribers",
         str(SUBSCRIBER_DIR / "alice.toml"), "--bsf", arg],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 1 and "config.invalid" in r.stderr and "--bsf" in r.stderr


def test_cli_reports_a_bad_subscriber_file(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text('imsi = "1"\n')
    r = subprocess.run(
        [sys.executable, "-m", "ue_agent", "lab", "network", "--subscribers", str(bad)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 1 and "config." in r.stderr


def test_cli_lab_network_serves_the_mailbox():
    bsf_port, kms_port, box_port = _free_port(), _free_port(), _free_port()
    addresses = ("--bsf", f"127.0.0.1:{bsf_port}", "--kms", f"127.0.0.1:{kms_port}")
    with _cli_network(*addresses, "--mailbox", f"127.0.0.1:{box_port}") as proc:
        lines = [proc.stdout.readline() for _ in range(4)]
        assert "001010000000090@" in lines[2]  # the mailbox is a subscriber of the network
        box = "sip:mailbox@ims.mnc001.mcc001.3gppnetwork.org"
        assert f"MAILBOX {box} at http://127.0.0.1:{box_port}" in lines[3]

        async def items():
            url = f"http://127.0.0.1:{box_port}/mailbox/sip:bob@ims.mnc001.mcc001.3gppnetwork.org"
            async with aiohttp.ClientSession() as http, http.get(url) as r:
                return r.status, await r.json()

        assert asyncio.run(items()) == (200, {"items": []})
