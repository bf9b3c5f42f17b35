"""``ue-agent doctor [--config PATH] [--json]``: bring-up of a board in one command.

Each check gives one line with a verdict: ``ok``, ``warn`` (the agent runs, something is
off), ``fail`` (the agent cannot run as configured), ``skip`` (not applicable, or an earlier
check failed), ``info``. The exit status is 1 when any check failed, else 0.

The checks, in order: the config; PC/SC (pcscd, readers, cards); AT ports found; the modem's
identity and the profile chosen (configured, or auto-detected as the daemon would); the card
reached; PIN1 (state, tries left; verified from the credential under the agent's own policy,
so never the last try); ISIM or USIM and the identities; the IST's GBA service (GBA_U or
GBA_ME); AKA; IMS/SRVCC reporting (AT+CIREP accepted); BSF and KMS reachable when configured.

AKA without burning SQN: a real AKA moves the card's SQN (TS 33.102 6.3.3) and only the
network's HSS could build the challenge. The doctor sends AUTHENTICATE (3G context, TS 31.102
7.1.2 / TS 31.103 7.1.2) with a fixed RAND and an AUTN whose MAC cannot verify: the card
answers 9862 (MAC failure), which proves the command path end to end (application
selected, channel, AUTHENTICATE, response parsing) while the card checks MAC before SQN and
so keeps its SQN state unchanged. A card that answers anything else is reported.

Nothing from the embedded lab is imported unless the config's transport is ``lab``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ue_agent.errors import AgentError

if TYPE_CHECKING:
    from ue_agent.config import Config

OK, WARN, FAIL, SKIP, INFO = "ok", "warn", "fail", "skip", "info"
#: the AKA probe: any RAND, and an AUTN (SQN^AK || AMF || MAC) whose MAC is all zeros
PROBE_RAND = bytes.fromhex("444f43544f5220414b412050524f4245")  # "DOCTOR AKA PROBE"
PROBE_AUTN = bytes(16)
PORT_GLOBS = ("/dev/serial/by-id/*", "/dev/ttyUSB*", "/dev/ttyACM*", "/dev/wwan*at*")


@dataclass
class Check:
    name: str
    verdict: str
    summary: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "verdict": self.verdict, "summary": self.summary, "details": self.details}


@dataclass
class Report:
    config: str
    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, verdict: str, summary: str, **details: Any) -> Check:
        check = Check(name, verdict, summary, details)
        self.checks.append(check)
        return check

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.verdict == FAIL]

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "verdict": FAIL if self.failed else OK,
            "checks": [c.to_dict() for c in self.checks],
        }

    def render(self) -> str:
        width = max((len(c.name) for c in self.checks), default=8)
        lines = [f"ue-agent doctor (config {self.config})"]
        for c in self.checks:
            lines.append(f"  {c.verdict.upper():<4}  {c.name:<{width}}  {c.summary}")
        if self.failed:
            lines.append(
                f"verdict: NOT READY ({len(self.failed)} failed: {', '.join(c.name for c in self.failed)})"
            )
        else:
            warned = [c.name for c in self.checks if c.verdict == WARN]
            lines.append("verdict: READY" + (f" (warnings: {', '.join(warned)})" if warned else ""))
        return "\n".join(lines)


def _err(exc: BaseException) -> str:
    if isinstance(exc, AgentError):
        return f"{exc.code}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


# --- environment ------------------------------------------------------------------------------------


def check_pcsc(report: Report, needed: bool) -> None:
    """pcscd and its readers, through pyscard's low-level API (imported only here)."""
    try:
        from smartcard import scard
    except ImportError:
        report.add("pcsc", FAIL if needed else INFO, "pyscard is not installed")
        return
    hr, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hr != scard.SCARD_S_SUCCESS:
        report.add("pcsc", FAIL if needed else INFO, "pcscd is not reachable (not running?)")
        return
    try:
        hr, readers = scard.SCardListReaders(ctx, [])
        readers = list(readers) if hr == scard.SCARD_S_SUCCESS else []
        rows = []
        for name in readers:
            hr, states = scard.SCardGetStatusChange(ctx, 0, [(name, scard.SCARD_STATE_UNAWARE)])
            present = hr == scard.SCARD_S_SUCCESS and bool(
                states and states[0][1] & scard.SCARD_STATE_PRESENT
            )
            rows.append({"reader": name, "card": present})
    finally:
        scard.SCardReleaseContext(ctx)
    if not rows:
        report.add("pcsc", FAIL if needed else INFO, "pcscd runs but lists no reader", readers=[])
        return
    text = ", ".join(f"{r['reader']}{' (card)' if r['card'] else ''}" for r in rows)
    verdict = OK if not needed or any(r["card"] for r in rows) else WARN
    report.add("pcsc", verdict, f"{len(rows)} reader(s): {text}", readers=rows)


def check_ports(report: Report, configured: list[str]) -> None:
    found = sorted({p for g in PORT_GLOBS for p in glob.glob(g)})
    missing = [p for p in configured if not os.path.exists(p)]
    seen = f"found: {', '.join(found)}" if found else "none under /dev/ttyUSB*, /dev/ttyACM*, /dev/wwan*at*"
    if missing:
        report.add("at-ports", FAIL, f"configured port missing: {', '.join(missing)}; {seen}", found=found)
    elif configured:
        report.add("at-ports", OK, f"configured {', '.join(configured)} is there; {seen}", found=found)
    else:
        report.add("at-ports", INFO, seen, found=found)


# --- the card path ----------------------------------------------------------------------------------


def _open(report: Report, cfg: Config) -> tuple[Any, Any] | None:
    """Open the card path as the daemon would; (transport, detection or None)."""
    card = cfg.card
    if card.transport == "at":
        from ue_agent.drivers.at_identify import detect
        from ue_agent.drivers.at_modem import open_modem_transport
        from ue_agent.profiles import get_profile

        try:
            detection, identity = detect(card.port)
        except AgentError as exc:
            report.add("modem", FAIL, f"{card.port}: {_err(exc)} (is ue-agent running and holding it?)")
            return None
        said = (
            " ".join(x for x in (identity.manufacturer, identity.model, identity.revision) if x)
            or "no identity"
        )
        bus = (
            identity.usb_id
            and f"usb {identity.usb_id}"
            or identity.pci_id
            and f"pci {identity.pci_id}"
            or "no bus id"
        )
        report.add("modem", OK, f"{said} ({bus})", identity=identity.to_dict())
        if card.profile:
            profile = get_profile(card.profile)
            agree = detection.profile.name in (profile.name, "generic-at")
            report.add(
                "profile",
                OK if agree else WARN,
                f"{profile.name} (configured)"
                + ("" if agree else f"; the modem looks like {detection.profile.name}: {detection.reason}"),
                profile=profile.name,
                detected=detection.profile.name,
            )
        else:
            profile = detection.profile
            report.add("profile", OK, f"{profile.name} (detected: {detection.reason})", profile=profile.name)
        try:
            return open_modem_transport(card.port, profile=profile), detection
        except AgentError as exc:
            report.add("card", FAIL, f"AT+CSIM path: {_err(exc)}")
            return None
    from ue_agent.transports import open_transport

    try:
        transport = open_transport(card)
        connect: Callable[[], None] | None = getattr(transport, "connect", None)
        if connect is not None:
            connect()
    except AgentError as exc:
        hint = (
            " (ue-agent holds the card: stop the daemon first)"
            if exc.code == "card.sharing_violation"
            else ""
        )
        report.add("card", FAIL, _err(exc) + hint)
        return None
    return transport, None


def check_card(report: Report, cfg: Config) -> Any:
    """The card checks; returns the AT profile in use (None: not a modem)."""
    from ue_agent.card.pin import READY, PinGate
    from ue_agent.card.results import AkaMacFailure, AkaSuccess, AkaSyncFailure
    from ue_agent.card.session import Card
    from ue_agent.pin_unlock import query, unlock

    opened = _open(report, cfg)
    if opened is None:
        for name in ("pin", "application", "gba", "aka"):
            report.add(name, SKIP, "no card path")
        return None
    transport, _ = opened
    profile = getattr(getattr(transport, "port", None), "profile", None)
    card = Card(transport)
    try:
        atr = getattr(transport, "atr", None)
        report.add("card", OK, f"reached over {transport.name}" + (f" (ATR {atr.hex()})" if atr else ""))
        # PIN1: the agent's own policy (never the last try); a READY card is left alone
        gate = PinGate(cfg.card.pin_credential, cfg.card.pin_allow_last_try)
        try:
            status = query(card)
            if status.state != READY:
                status = unlock(card, gate)
        except AgentError as exc:
            st = gate.status
            left = "unknown" if st.retries is None else st.retries
            puk = ""
            if st.state == "blocked" and getattr(transport, "port", None) is None:
                try:  # the PUK's counter, for the person who will unblock it
                    n = card.puk_retries()
                    puk = "" if n is None else f", PUK tries left {n}"
                except AgentError:
                    pass
            report.add("pin", FAIL, f"{_err(exc)} (state {st.state}, tries left {left}{puk})", **st.to_dict())
            for name in ("application", "gba", "aka"):
                report.add(name, SKIP, "PIN1 not verified")
            return profile
        how = (
            "verified from the credential"
            if status.verified_by_agent
            else "no PIN needed (disabled or verified)"
        )
        report.add("pin", OK, f"{status.state}: {how} [{status.source}]", **status.to_dict())
        try:
            ids = card.identities()
        except AgentError as exc:
            report.add("application", FAIL, _err(exc))
            report.add("gba", SKIP, "no application")
            report.add("aka", SKIP, "no application")
            return profile
        if ids.application == "isim":
            report.add("application", OK, f"ISIM (AID {ids.aid}), IMPI {ids.impi}", **ids.to_dict())
        else:
            report.add(
                "application",
                WARN,
                f"USIM only (AID {ids.aid}): IMS identities derived from the IMSI",
                **ids.to_dict(),
            )
        if ids.gba_u:
            report.add("gba", OK, "IST service 2 (GBA): GBA_U, Ks stays on the card", gba_u=True)
        else:
            report.add(
                "gba", INFO, "no GBA service in the IST: GBA_ME (Ks derived in the agent)", gba_u=False
            )
        try:
            outcome = card.authenticate(PROBE_RAND, PROBE_AUTN)
        except AgentError as exc:
            report.add("aka", FAIL, f"AUTHENTICATE failed: {_err(exc)}")
            return profile
        if isinstance(outcome, AkaMacFailure):
            report.add(
                "aka", OK, "AUTHENTICATE answered MAC failure to the probe challenge: AKA runs, SQN untouched"
            )
        elif isinstance(outcome, AkaSyncFailure):
            report.add("aka", WARN, "the probe got a resynchronisation answer (AUTS): unexpected")
        else:
            if isinstance(outcome, AkaSuccess):
                outcome.zeroize()
            report.add("aka", WARN, "the probe challenge was accepted: the card's MAC check is suspect")
        return profile
    finally:
        card.close()


def check_ims_reporting(report: Report, cfg: Config, card_profile: Any = None) -> None:
    port_path = cfg.modem.port or (cfg.card.port if cfg.card.transport == "at" else None)
    if not port_path:
        report.add("ims-reporting", SKIP, "no modem ([modem] port): no SRVCC reports (+CIREPH)")
        return
    from ue_agent.drivers.at_modem import AtPort, enable_ims_reporting

    shared = cfg.card.transport == "at" and port_path == cfg.card.port
    profile = (card_profile or cfg.card.profile) if shared else None
    try:
        if profile is None:
            from ue_agent.drivers.at_identify import detect

            profile = detect(port_path)[0].profile
        port = AtPort(port_path, profile=profile)
    except AgentError as exc:
        report.add("ims-reporting", FAIL, f"{port_path}: {_err(exc)}")
        return
    try:
        refused = enable_ims_reporting(port)
        cirep = "?"
        try:
            lines = port.command("AT+CIREP?").lines
            cirep = next((ln for ln in lines if ln.upper().startswith("+CIREP")), "?")
        except AgentError:
            pass
        if "AT+CIREP=1" in refused:
            report.add(
                "ims-reporting", FAIL, "the modem refused AT+CIREP=1: no SRVCC reports", refused=refused
            )
        elif refused:
            report.add(
                "ims-reporting", WARN, f"AT+CIREP=1 accepted; refused: {', '.join(refused)}", refused=refused
            )
        else:
            report.add("ims-reporting", OK, f"AT+CIREP=1 accepted ({cirep})", refused=[])
    except AgentError as exc:
        report.add("ims-reporting", FAIL, _err(exc))
    finally:
        port.close()


def _reachable(url: str, timeout: float = 3.0) -> tuple[bool, str]:
    """Any HTTP answer (401 and 405 included) means reachable. No proxy: the agent uses none."""
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, method="GET"), timeout=timeout) as resp:
            return True, f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return True, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, str(reason)


def check_network(report: Report, cfg: Config) -> None:
    for name, url in (("bsf", cfg.network.bsf_url), ("kms", cfg.network.kms_url)):
        if not url:
            report.add(name, SKIP, "not configured")
            continue
        ok, how = _reachable(url)
        report.add(
            name, OK if ok else WARN, f"{url}: {'reachable, ' if ok else 'unreachable: '}{how}", url=url
        )


# --- entry ------------------------------------------------------------------------------------------


def run(config_path: str) -> Report:
    from ue_agent.config import load_config

    report = Report(config_path)
    try:
        cfg = load_config(config_path)
    except AgentError as exc:
        report.add("config", FAIL, _err(exc))
        check_pcsc(report, needed=False)
        check_ports(report, [])
        report.add("card", SKIP, "no usable config: write one (docs/deployment.md), then run doctor again")
        return report
    c = cfg.card
    where = {
        "pcsc": f"reader {c.reader or '(first with a card)'}",
        "at": f"port {c.port}",
        "lab": "in-process",
    }
    named = c.profile or ("auto-detect" if c.transport == "at" else "default")
    report.add("config", OK, f"transport {c.transport}, {where.get(c.transport, '')}, profile {named}")
    check_pcsc(report, needed=c.transport == "pcsc")
    check_ports(report, [p for p in {c.port if c.transport == "at" else None, cfg.modem.port} if p])
    profile = None
    try:
        profile = check_card(report, cfg)
    except AgentError as exc:  # a path that broke half-way: say so, keep going
        report.add("card", FAIL, _err(exc))
    try:
        check_ims_reporting(report, cfg, profile)
    except AgentError as exc:
        report.add("ims-reporting", FAIL, _err(exc))
    check_network(report, cfg)
    return report


def main(args: argparse.Namespace) -> int:
    report = run(args.config)
    if getattr(args, "json", False):
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        print(report.render())
    sys.stdout.flush()
    return 1 if report.failed else 0
