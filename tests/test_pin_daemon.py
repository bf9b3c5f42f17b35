"""PIN1 through the daemon on the pty modem: the PIN comes from $CREDENTIALS_DIRECTORY (as
systemd's LoadCredential= sets it), status shows its state, a modem + UICC reset (the SIM
asks for its PIN again) is survived: the next ims.authenticate gets the PIN given again and
succeeds. The daemon's debug log never holds the PIN."""

from __future__ import annotations

import base64
import shutil

import pytest

from tests.fixtures.daemon import aka_challenge, lab_config, short_dir, spawn
from tests.fixtures.lab import write_subscriber

pytest.importorskip("serial", reason="pyserial is not installed")

PIN = "73915824"


@pytest.mark.parametrize(
    "profile, urcs",
    [("quectel-ec25", None), ("sierra-em7455", ("RDY", "+CPIN: SIM PIN"))],
)
def test_daemon_pin_across_a_modem_reset(profile, urcs, modem_factory, tmp_path):
    from ue_agent.lab.uicc import SoftUicc
    from ue_agent.subscriber import load_subscriber

    sub = write_subscriber(tmp_path / "s.toml", extra=f'pin1 = "{PIN}"\npuk1 = "58120937"\n')
    uicc = SoftUicc(load_subscriber(sub))
    sim = modem_factory(profile, uicc=uicc)
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "ue-agent.pin").write_text(PIN + "\n")
    d = short_dir()
    port = str(sim.link_path)
    cfg = lab_config(
        d,
        sub,
        card={"transport": "at", "port": port, "profile": profile, "pin_credential": "ue-agent.pin"},
        modem={"port": port},
    )
    daemon = spawn(d, cfg, env={"CREDENTIALS_DIRECTORY": str(creds)})
    try:
        with daemon.client() as c:

            def authenticate(sqn: int) -> dict:
                rand, autn = aka_challenge(sqn, sub)
                return c.call(
                    "ims.authenticate",
                    rand=base64.b64encode(rand).decode(),
                    autn=base64.b64encode(autn).decode(),
                )

            status = c.request("status")["card"]
            assert status["pin"]["state"] == "ready" and status["pin"]["verified_by_agent"] is True
            assert status["pin"]["credential"] == "ue-agent.pin"
            assert "res" in authenticate(40)
            # the modem restarts with its UICC: the SIM wants its PIN again
            # (default URCs: RDY, +CPIN: SIM PIN as the simulator derives it, SMS DONE, PB DONE)
            if urcs:
                sim.reset_modem(urcs=urcs)
            else:
                sim.reset_modem()
            reply = authenticate(41)
            assert "res" in reply, (reply, daemon.log_text()[-3000:])
            assert uicc.pin1 is not None and uicc.pin1.verified
        log = daemon.log_text()
        assert "AT+CPIN=<redacted>" in log
        assert PIN not in log and PIN.encode().hex() not in log.lower()
    finally:
        daemon.stop()
        shutil.rmtree(d, ignore_errors=True)
