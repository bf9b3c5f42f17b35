"""Which modem is on an AT port: its identity (AT+CGMI/+CGMM/+CGMR, ATI) and bus id, and the
hardware profile that fits (:func:`ue_agent.profiles.match_profile`).

TS 27.007 5.1-5.3 (+CGMI manufacturer, +CGMM model, +CGMR revision) and V.250 6.1.3 (I):
the answers are free text, some modems prefix them (``+CGMI: Quectel``). The bus id comes
from sysfs: the USB device (``idVendor``/``idProduct``) above a tty, or the PCI device
(``vendor``/``device``) of a ``/dev/wwan*`` port.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ue_agent.drivers.at_modem import AtPort
from ue_agent.errors import TransportError
from ue_agent.profiles import Detection, ModemIdentity, match_profile, resolve

log = logging.getLogger(__name__)


def _answer(port: AtPort, cmd: str) -> list[str]:
    try:
        lines = port.command(cmd, timeout=min(port.timeout, 5.0)).lines
    except TransportError as exc:
        if exc.code in ("modem.error", "modem.cme_error", "modem.timeout"):
            log.info("AT port %s: %s refused (%s)", port.path, cmd, exc.code)
            return []
        raise
    prefix = cmd[2:].upper() + ":"
    return [ln[len(prefix) :].strip() if ln.upper().startswith(prefix) else ln.strip() for ln in lines]


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def bus_ids(port_path: str, sysfs: str | Path = "/sys") -> tuple[str | None, str | None]:
    """(USB "vvvv:pppp", PCI "vvvv:dddd") of the device behind ``port_path`` (None when unknown)."""
    sysfs = Path(sysfs)
    name = os.path.basename(os.path.realpath(port_path))
    for cls in ("tty", "wwan"):
        dev = sysfs / "class" / cls / name / "device"
        if not dev.exists():
            continue
        node = dev.resolve()
        for _ in range(8):
            vid, pid = _read(node / "idVendor"), _read(node / "idProduct")
            if vid and pid:
                return f"{vid.lower()}:{pid.lower()}", None
            vendor, device = _read(node / "vendor"), _read(node / "device")
            if vendor and device and vendor.startswith("0x"):
                return None, f"{vendor[2:].lower()}:{device[2:].lower()}"
            if node.parent == node:
                break
            node = node.parent
    return None, None


def query_identity(port: AtPort, sysfs: str | Path = "/sys") -> ModemIdentity:
    """Ask the modem who it is (each command may fail; what answers is kept)."""
    cgmi, cgmm, cgmr = (_answer(port, c) for c in ("AT+CGMI", "AT+CGMM", "AT+CGMR"))
    ati = _answer(port, "ATI")
    usb, pci = bus_ids(port.path, sysfs)
    return ModemIdentity(
        manufacturer=" ".join(cgmi),
        model=" ".join(cgmm),
        revision=" ".join(cgmr),
        ati=tuple(ati),
        usb_id=usb,
        pci_id=pci,
    )


def detect(path: str, sysfs: str | Path = "/sys", **port_kw: object) -> tuple[Detection, ModemIdentity]:
    """Open ``path`` with the tolerant generic-at dialect, identify the modem, close the port."""
    port = AtPort(path, profile=resolve("generic-at"), **port_kw)  # type: ignore[arg-type]
    try:
        identity = query_identity(port, sysfs)
    finally:
        port.close()
    detection = match_profile(identity)
    log.info("modem on %s: %s", path, detection.reason)
    return detection, identity
