"""[network] changed by SIGHUP (issue 13): applied at once. The next request bootstraps with
the new BSF and reaches the new KMS, and status shows exactly the URLs requests use; nothing
goes to the old network after the reload.

Bounded: two lab networks on loopback, one in-process daemon, three MIKEY offers.
"""

from __future__ import annotations

from tests.fixtures.daemon import wait_until
from tests.fixtures.network import lab_subscribers
from ue_agent.lab.network import LabNetwork, LabNetworkThread

BOB_URI = "sip:bob@ims.mnc001.mcc001.3gppnetwork.org"


def _net(lab: LabNetwork) -> dict[str, str]:
    return {
        "bsf_url": lab.bsf_url,
        "kms_url": lab.kms_url,
        "bsf_fqdn": lab.bsf_fqdn,
        "kms_fqdn": lab.kms_fqdn,
    }


def _reload(daemon) -> None:  # type: ignore[no-untyped-def]
    """SIGHUP for the in-process daemon: its reload, on its loop; waits for it (10 s at most)."""
    before = daemon.log_text().count("config reloaded")
    daemon._loop.call_soon_threadsafe(daemon._daemon.reload)
    wait_until(lambda: daemon.log_text().count("config reloaded") > before, 10, daemon.log_text)


def test_network_change_on_sighup_is_applied(agent_factory, lab_network) -> None:
    with LabNetworkThread(LabNetwork(lab_subscribers())) as other:
        daemon = agent_factory(network=_net(lab_network))
        with daemon.client() as c:
            c.request("mikey.offer", responder=BOB_URI, media=["audio"])
            st = c.request("status")
            assert st["kms"]["url"] == lab_network.kms_url and st["bootstrap"]["state"] == "bootstrapped"
            old_btid = st["bootstrap"]["btid"]
            used = dict(lab_network.requests)
            assert used["bsf"] > 0 and used["kms"] > 0 and other.requests == {"bsf": 0, "kms": 0}

            text = daemon.config.read_text()
            for a, b in ((lab_network.bsf_url, other.bsf_url), (lab_network.kms_url, other.kms_url)):
                text = text.replace(a, b)
            daemon.config.write_text(text)
            _reload(daemon)

            # status names the new network, and holds nothing of the old one's bootstrap
            st = c.request("status")
            assert (st["bootstrap"]["bsf"], st["kms"]["url"]) == (other.bsf_url, other.kms_url)
            assert st["bootstrap"]["state"] == "none" and st["kms"]["state"] == "unused"
            # the next requests go to the new network only
            for _ in range(2):
                c.request("mikey.offer", responder=BOB_URI, media=["audio"])
            st = c.request("status")
        assert lab_network.requests == used, "a request went to the old network after the reload"
        assert other.requests["bsf"] > 0 and other.requests["kms"] > 0
        assert st["bootstrap"]["state"] == "bootstrapped" and st["bootstrap"]["btid"] != old_btid
        assert st["kms"]["state"] == "reachable"
        assert "need a restart" not in daemon.log_text()


def test_at_start_bootstraps_with_the_new_network_on_sighup(agent_factory, lab_network) -> None:
    """bootstrap = "at-start": a reload that changes [network] bootstraps with the new BSF at
    once, as a start would, and nothing goes to the old network after it."""
    with LabNetworkThread(LabNetwork(lab_subscribers())) as other:
        daemon = agent_factory(network={**_net(lab_network), "bootstrap": "at-start"})
        with daemon.client() as c:
            wait_until(lambda: c.request("status")["bootstrap"]["state"] == "bootstrapped")
            used = dict(lab_network.requests)
            assert used == {"bsf": 2, "kms": 0}

            text = daemon.config.read_text()
            for a, b in ((lab_network.bsf_url, other.bsf_url), (lab_network.kms_url, other.kms_url)):
                text = text.replace(a, b)
            daemon.config.write_text(text)
            _reload(daemon)
            wait_until(lambda: "bootstrap after reload: done" in daemon.log_text(), why=daemon.log_text)
            st = c.request("status")
        assert st["bootstrap"]["state"] == "bootstrapped" and st["bootstrap"]["bsf"] == other.bsf_url
        # 2 requests, or 3 with a resynchronisation: the other lab's HSS has its own SQN
        assert other.requests["bsf"] >= 2 and other.requests["kms"] == 0
        assert lab_network.requests == used
