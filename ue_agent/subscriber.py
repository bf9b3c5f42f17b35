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
from typing import Annotated, Any, Literal

from ue_agent.config import config_error
from ue_agent.convert import Check, ConvertError, Hex, Len, Range, convert
from ue_agent.crypto.milenage import opc_from_op
from ue_agent.errors import ConfigError
from ue_agent.secret import Secret

Text = Annotated[str, Len(1)]
Key128 = Annotated[bytes, Hex(16)]


@dataclass
class SubscriberFile:
    """The file's keys as typed by the converter (K and OPc become :class:`Secret` in :class:`Subscriber`)."""

    imsi: Annotated[str, Check(lambda s: s.isdigit() and 6 <= len(s) <= 15, "must be 6-15 digits")]
    impi: Text
    impu: Annotated[list[Text], Len(1)] | Text
    domain: Text
    k: Key128 = field(repr=False)
    amf: Annotated[bytes, Hex(2)]
    sqn: Annotated[int, Range(0, 2**48 - 1)]  # TS 33.102 C.3.2: SQN is 48 bits
    opc: Key128 | None = field(default=None, repr=False)
    op: Key128 | None = field(default=None, repr=False)
    pcscf: list[Text] = field(default_factory=list)
    iccid: Text = "8988211000000000001"
    mnc_length: Literal[2, 3] = 2
    isim: bool = True
    gba_u: bool = False


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


def parse_subscriber(data: dict[str, Any], where: str = "<subscriber>") -> Subscriber:
    try:
        f = convert(SubscriberFile, data)
    except ConvertError as exc:
        raise config_error(exc, where) from None
    if f.opc is not None:
        opc = f.opc
    elif f.op is not None:
        opc = opc_from_op(f.k, f.op)
    else:
        raise ConfigError("config.missing_key", f"{where}: missing key 'opc' (or 'op')", key="opc")
    return Subscriber(
        imsi=f.imsi,
        impi=f.impi,
        impu=[f.impu] if isinstance(f.impu, str) else f.impu,
        domain=f.domain,
        k=Secret(f.k, "K"),
        opc=Secret(opc, "OPc"),
        amf=f.amf,
        sqn=f.sqn,
        pcscf=f.pcscf,
        iccid=f.iccid,
        mnc_length=f.mnc_length,
        isim=f.isim,
        gba_u=f.gba_u,
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
