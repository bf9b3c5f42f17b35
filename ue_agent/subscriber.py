"""The subscriber file: one subscriber a TOML file, feeding both the soft UICC and the lab HSS.

Keys (design.md contract): imsi, impi, impu (list of URIs), domain, k, opc or op, amf
(hex strings), sqn (int: the highest sequence number already used), optional pcscf
(list of addresses). Optional lab-only keys: iccid, mnc_length (2 or 3,
default 2), isim (bool, default true: the card
has an ISIM), gba_u (bool, default false: the ISIM service table offers GBA, i.e. GBA_U).
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
