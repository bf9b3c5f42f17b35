"""The subscriber file: one subscriber a TOML file, feeding both the soft UICC and the lab HSS.

Keys (design.md contract): imsi, impi, impu (list of URIs), domain, k, opc or op, amf
(hex strings), sqn (int: the highest sequence number already used), optional pcscf
(list of addresses). Optional lab-only keys: iccid, mnc_length (2 or 3,
default 2), isim (bool, default true: the card
has an ISIM), gba_u (bool, default false: the ISIM service table offers GBA, i.e. GBA_U).

PIN1 of the soft UICC (lab only, TS 102 221 9.5): pin1 (4-8 digits as a string; absent:
the card has no PIN1 enabled), puk1 (8 digits, required with pin1), pin1_enabled (bool,
default true when pin1 is set), pin1_tries (tries left at power-up, 0-3, default 3; 0 is
a blocked PIN) and puk1_tries (0-10, default 10). The values are Secrets: never in a repr.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ue_agent.crypto.milenage import opc_from_op
from ue_agent.errors import ConfigError
from ue_agent.secret import Secret

_KNOWN = {
    "imsi",
    "impi",
    "impu",
    "domain",
    "k",
    "opc",
    "op",
    "amf",
    "sqn",
    "pcscf",
    "iccid",
    "mnc_length",
    "isim",
    "gba_u",
    "pin1",
    "puk1",
    "pin1_enabled",
    "pin1_tries",
    "puk1_tries",
}


@dataclass
class Subscriber:
    imsi: str
    impi: str
    impu: list[str]
    domain: str
    k: Secret
    opc: Secret
    amf: bytes
    sqn: int
    pcscf: list[str] = field(default_factory=list)
    iccid: str = "8988211000000000001"
    mnc_length: int = 2
    isim: bool = True
    gba_u: bool = False
    pin1: Secret | None = None
    puk1: Secret | None = None
    pin1_enabled: bool = False
    pin1_tries: int = 3
    puk1_tries: int = 10
    source: str = ""

    @property
    def mcc(self) -> str:
        return self.imsi[:3]

    @property
    def mnc(self) -> str:
        return self.imsi[3 : 3 + self.mnc_length]

    def __repr__(self) -> str:
        return f"Subscriber(impi={self.impi!r}, imsi={self.imsi!r}, source={self.source!r})"


def _hex(data: dict, key: str, length: int, where: str) -> bytes:
    try:
        value = bytes.fromhex(str(data[key]))
    except KeyError:
        raise ConfigError("config.missing_key", f"{where}: missing key '{key}'", key=key) from None
    except ValueError:
        raise ConfigError("config.invalid", f"{where}: '{key}' is not hex", key=key) from None
    if len(value) != length:
        raise ConfigError("config.invalid", f"{where}: '{key}' must be {length} bytes", key=key)
    return value


def _digits(data: dict, key: str, lengths: range, where: str) -> Secret | None:
    value = data.get(key)
    if value is None:
        return None
    if not (isinstance(value, str) and value.isascii() and value.isdigit() and len(value) in lengths):
        # the value itself is never quoted: it is a secret
        raise ConfigError(
            "config.invalid",
            f"{where}: '{key}' must be a string of {lengths.start}-{lengths.stop - 1} digits",
            key=key,
        )
    return Secret(value.encode("ascii"), key.upper())


def _pin_fields(data: dict, where: str) -> dict:
    pin1 = _digits(data, "pin1", range(4, 9), where)
    puk1 = _digits(data, "puk1", range(8, 9), where)
    if (pin1 is None) != (puk1 is None):
        raise ConfigError("config.missing_key", f"{where}: 'pin1' and 'puk1' go together", key="puk1")
    enabled = data.get("pin1_enabled", pin1 is not None)
    if not isinstance(enabled, bool) or (enabled and pin1 is None):
        raise ConfigError(
            "config.invalid", f"{where}: 'pin1_enabled' must be a bool and needs pin1", key="pin1_enabled"
        )
    out: dict = {"pin1": pin1, "puk1": puk1, "pin1_enabled": enabled}
    for key, top in (("pin1_tries", 3), ("puk1_tries", 10)):
        value = data.get(key, top)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
            raise ConfigError("config.invalid", f"{where}: '{key}' must be an integer 0-{top}", key=key)
        out[key] = value
    return out


def parse_subscriber(data: dict, where: str = "<subscriber>") -> Subscriber:
    unknown = sorted(set(data) - _KNOWN)
    if unknown:
        raise ConfigError("config.unknown_key", f"{where}: unknown key '{unknown[0]}'", key=unknown[0])
    for key in ("imsi", "impi", "impu", "domain", "k", "amf", "sqn"):
        if key not in data:
            raise ConfigError("config.missing_key", f"{where}: missing key '{key}'", key=key)
    imsi = str(data["imsi"])
    if not (imsi.isdigit() and 6 <= len(imsi) <= 15):
        raise ConfigError("config.invalid", f"{where}: 'imsi' must be 6-15 digits", key="imsi")
    k = _hex(data, "k", 16, where)
    if "opc" in data:
        opc = _hex(data, "opc", 16, where)
    elif "op" in data:
        opc = opc_from_op(k, _hex(data, "op", 16, where))
    else:
        raise ConfigError("config.missing_key", f"{where}: missing key 'opc' (or 'op')", key="opc")
    impu = data["impu"]
    if isinstance(impu, str):
        impu = [impu]
    if not impu or not all(isinstance(u, str) for u in impu):
        raise ConfigError("config.invalid", f"{where}: 'impu' must be a list of URIs", key="impu")
    sqn = data["sqn"]
    if not isinstance(sqn, int) or not 0 <= sqn < 2**48:
        raise ConfigError("config.invalid", f"{where}: 'sqn' must be an integer < 2^48", key="sqn")
    mnc_length = int(data.get("mnc_length", 2))
    if mnc_length not in (2, 3):
        raise ConfigError("config.invalid", f"{where}: 'mnc_length' must be 2 or 3", key="mnc_length")
    return Subscriber(
        imsi=imsi,
        impi=str(data["impi"]),
        impu=list(impu),
        domain=str(data["domain"]),
        k=Secret(k, "K"),
        opc=Secret(opc, "OPc"),
        amf=_hex(data, "amf", 2, where),
        sqn=sqn,
        pcscf=list(data.get("pcscf", [])),
        iccid=str(data.get("iccid", "8988211000000000001")),
        mnc_length=mnc_length,
        isim=bool(data.get("isim", True)),
        gba_u=bool(data.get("gba_u", False)),
        **_pin_fields(data, where),
        source=where,
    )


def load_subscriber(path: str | Path) -> Subscriber:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError("config.unreadable", f"{path}: {exc.strerror}", path=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config.syntax", f"{path}: {exc}", path=str(path)) from None
    return parse_subscriber(data, str(path))
