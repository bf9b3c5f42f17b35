"""The subscriber file: one subscriber a TOML file, feeding both the soft UICC and the lab HSS.

Keys (docs/card.md "File system"): imsi, impi, impu (list of URIs), domain, k, opc or op, amf
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

import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from ue_agent.config import config_error
from ue_agent.convert import Check, ConvertError, Hex, Len, Range, convert
from ue_agent.crypto.milenage import opc_from_op
from ue_agent.errors import ConfigError
from ue_agent.secret import Secret

_DERIVING = threading.Lock()

Text = Annotated[str, Len(1)]
Key128 = Annotated[bytes, Hex(16)]
Pin = Annotated[
    str, Check(lambda s: s.isascii() and s.isdigit() and 4 <= len(s) <= 8, "must be 4 to 8 digits")
]
Puk = Annotated[str, Check(lambda s: s.isascii() and s.isdigit() and len(s) == 8, "must be 8 digits")]


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
    pin1: Pin | None = field(default=None, repr=False)
    puk1: Puk | None = field(default=None, repr=False)
    pin1_enabled: bool | None = None
    pin1_tries: Annotated[int, Range(0, 3)] = 3
    puk1_tries: Annotated[int, Range(0, 10)] = 10


@dataclass
class Subscriber:
    imsi: str
    impi: str
    impu: list[str]
    domain: str
    k: Secret
    #: what the file gives: OPc, or OP (then OPc is derived on first use, see :attr:`opc`)
    opc_or_op: Secret
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
    #: whether :attr:`opc_or_op` is OP (OPc = E_K(OP) xor OP, TS 35.206 4.1)
    given_op: bool = False

    @property
    def opc(self) -> Secret:
        """OPc. From OP it is derived the first time it is needed, not when the file is
        read: deriving needs the AES backend, which a daemon on the lab card that only reads
        the card then never loads."""
        with _DERIVING:  # the lab HSS and the soft UICC may share one Subscriber
            if self.given_op:
                op = self.opc_or_op
                self.opc_or_op = Secret(opc_from_op(self.k.reveal(), op.reveal()), "OPc")
                self.given_op = False
                op.zeroize()
            return self.opc_or_op

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
        opc, given_op = Secret(f.opc, "OPc"), False
    elif f.op is not None:
        opc, given_op = Secret(f.op, "OP"), True
    else:
        raise ConfigError("config.missing_key", f"{where}: missing key 'opc' (or 'op')", key="opc")
    if (f.pin1 is None) != (f.puk1 is None):
        raise ConfigError("config.missing_key", f"{where}: 'pin1' and 'puk1' go together", key="puk1")
    if f.pin1_enabled and f.pin1 is None:
        raise ConfigError("config.invalid", f"{where}: 'pin1_enabled' needs pin1", key="pin1_enabled")
    return Subscriber(
        imsi=f.imsi,
        impi=f.impi,
        impu=[f.impu] if isinstance(f.impu, str) else f.impu,
        domain=f.domain,
        k=Secret(f.k, "K"),
        opc_or_op=opc,
        given_op=given_op,
        amf=f.amf,
        sqn=f.sqn,
        pcscf=f.pcscf,
        iccid=f.iccid,
        mnc_length=f.mnc_length,
        isim=f.isim,
        gba_u=f.gba_u,
        pin1=Secret(f.pin1.encode("ascii"), "PIN1") if f.pin1 else None,
        puk1=Secret(f.puk1.encode("ascii"), "PUK1") if f.puk1 else None,
        pin1_enabled=f.pin1 is not None if f.pin1_enabled is None else f.pin1_enabled,
        pin1_tries=f.pin1_tries,
        puk1_tries=f.puk1_tries,
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
