"""TEK / salt per crypto session (RFC 6043 5.1.3) and the checks of a whole Ticket Transfer exchange."""

from __future__ import annotations

from dataclasses import dataclass, replace

from . import prf
from .errors import MikeyReject, reject
from .keys import SESSION_KEY_TYPES, TGK_TYPES, decrypt_kemac, protection_keys
from .messages import Decoded, decode, verify_mac
from .wire import (
    IDR,
    IDR_I,
    IDR_R,
    KD_GTGK,
    KD_GTGK_SALT,
    KD_TEK,
    KD_TEK_SALT,
    SP,
    GenericCs,
    Kemac,
    KeyData,
    RandR,
    T,
    Ticket,
    V,
    decode_structure,
)

SP_ENCR_KEY_LEN = 1  # RFC 3830 6.10.1 Table 6.10.1.a
SP_SALT_KEY_LEN = 4


@dataclass(frozen=True)
class CsKeys:
    """Master key (TEK) and master salt of one crypto session. Never printed."""

    cs_id: int
    prot_type: int
    ssrc: int | None
    spi: bytes
    tek: bytes
    salt: bytes

    def __repr__(self) -> str:
        return (
            f"CsKeys(cs_id={self.cs_id}, prot={self.prot_type}, ssrc={self.ssrc}, spi={self.spi.hex()}, "
            f"tek={len(self.tek)}B, salt={len(self.salt)}B)"
        )


def _policy_len(sps: dict[int, SP], cs: GenericCs, ptype: int) -> int | None:
    for no in cs.policies:
        sp = sps.get(no)
        v = sp.param(ptype) if sp is not None else None
        if v:
            return int.from_bytes(v, "big")
    return None


def derive_cs_keys(
    prf_func: int,
    cs_map: tuple[GenericCs, ...] | list[GenericCs],
    sps: list[SP],
    keys: list[KeyData] | tuple[KeyData, ...],
    randri: bytes | None,
    randrr: bytes | None,
    *,
    default_tek_len: int = 16,
    default_salt_len: int = 14,
) -> list[CsKeys]:
    """For each crypto session: the key whose SPI the CS names (6.1.1 "the SPI ... corresponding to the
    session key"), else the only session key; TGK/GTGK -> TEK and salt by 5.1.3 (a salt in the Key data
    sub-payload is used instead of a derived one); a TEK is used as it is. TEK length = SP "Session Encr. key
    length" else the SRTP default of 128 bits; salt length = SP "Session Salt key length" else 112 bits."""
    spmap = {sp.policy_no: sp for sp in sps}
    session = [k for k in keys if k.key_type in SESSION_KEY_TYPES]
    out = []
    for cs in cs_map:
        match = [k for k in session if cs.spi and k.spi == cs.spi]
        if not match:
            if len(session) != 1:
                raise reject(
                    "rfc6043.cs.key",
                    "RFC 6043 6.1.1",
                    f"CS {cs.cs_id}: SPI {cs.spi.hex()} names none of {len(session)} session keys",
                )
            match = session
        k = match[0]
        tek_len = _policy_len(spmap, cs, SP_ENCR_KEY_LEN) or default_tek_len
        salt_len = _policy_len(spmap, cs, SP_SALT_KEY_LEN) or default_salt_len
        if k.key_type in (KD_TEK, KD_TEK_SALT):
            tek, salt = k.key, k.salt or b""
        else:
            tek, salt = prf.tek_from_tgk(
                prf_func,
                k.key,
                cs.cs_id,
                randri,
                randrr,
                tek_bits=tek_len * 8,
                salt_bits=0 if k.salt else salt_len * 8,
            )
            if k.salt:
                salt = k.salt
        out.append(CsKeys(cs.cs_id, cs.prot_type, cs.ssrc, cs.spi, tek, salt))
    return out


def fork(
    prf_func: int, keys: list[KeyData] | tuple[KeyData, ...], id_data: bytes, randrkms: bytes
) -> list[KeyData]:
    """5.1.1: TGKs are forked, TEKs and GTGKs are not."""
    return [
        replace(k, key=prf.fork_key(prf_func, k.key, prf.C_TGK_FORK, id_data, randrkms))
        if k.key_type in TGK_TYPES
        else k
        for k in keys
    ]


@dataclass(frozen=True)
class TransferKeys:
    """What a party that knows MPK-level keys learns from one Ticket Transfer exchange."""

    cs_keys: list[CsKeys]
    readings: list[str]


def check_transfer(
    ti_raw: bytes,
    tr_raw: bytes | None,
    *,
    ticket_prf: int,
    mpki: bytes,
    mpkr: bytes | None,
    session_keys: list[KeyData] | tuple[KeyData, ...],
    responder_ids: list[bytes] | None = None,
    initiator_ids: list[bytes] | None = None,
) -> TransferKeys:
    """Verify TRANSFER_INIT (and TRANSFER_RESP) under MPKi / MPKr' and derive each crypto session's keys.

    mpkr is the un-forked MPKr (initiator / KMS view); session_keys are the un-forked ticket keys.
    """
    ti = decode(ti_raw)
    t_ticket = ti.get("TICKET")
    if not isinstance(t_ticket, Ticket):
        raise reject("rfc6043.transfer.no_ticket", "RFC 6043 4.2.2.1", "TRANSFER_INIT without TICKET")
    flags = t_ticket.head.flags
    h = ti.msg.header
    v = ti.msg.payloads[-1]
    assert isinstance(v, V)
    randri_p = ti.get("RANDRi")
    randri = randri_p.rand if isinstance(randri_p, RandR) else None
    readings = []
    k1 = protection_keys(
        h.prf_func, mpki, h.csb_id, 1, randri, None, mac_alg=v.mac_alg, encr_alg=_kemac_alg(ti)
    )
    # identities "known by other means" when IDRi / IDRr are left out (4.2.2.1): the caller's, then the
    # Ticket Policy's IDRi and IDRr (and the responder identity TRANSFER_RESP names)
    tp_idri = [p.data for p in t_ticket.tp_payloads if isinstance(p, IDR) and p.role == IDR_I]
    tp_idrr = [p.data for p in t_ticket.tp_payloads if isinstance(p, IDR) and p.role == IDR_R]
    if tr_raw is not None:
        rp = decode_structure(tr_raw).payloads
        resp_idrr = [p.data for p in rp if isinstance(p, IDR) and p.role == IDR_R]
        tp_idrr = resp_idrr + tp_idrr
    fallback = {IDR_I: [*(initiator_ids or []), *tp_idri], IDR_R: [*(responder_ids or []), *tp_idrr]}
    readings.append("TRANSFER_INIT MAC: " + verify_mac(ti, k1.auth, fallback_ids=fallback))
    keys = list(session_keys)
    kem = ti.get("KEMAC")
    if isinstance(kem, Kemac):
        t = ti.get("T")
        assert isinstance(t, T)
        extra, how = decrypt_kemac(kem, k1, h.csb_id, [("TRANSFER_INIT T", t)])
        keys += extra
        readings.append(f"TRANSFER_INIT KEMAC ({how})")
    if flags.I:
        vi = t_ticket.initiator_payloads[0] if t_ticket.initiator_payloads else None
        if not isinstance(vi, V) or (vi.mac_alg, vi.mac) != (v.mac_alg, v.mac):
            raise reject(
                "rfc6043.transfer.vi",
                "RFC 6043 6.10 / 4.2.3.6",
                "the Vi payload SHALL be identical to the V payload of the TRANSFER_INIT message",
            )
    cs_map = [c for c in h.cs_map if isinstance(c, GenericCs)]
    sps = [p for p in ti.msg.payloads if isinstance(p, SP)]
    randrr = None
    if tr_raw is not None:
        tr = decode(tr_raw, initial=ti)
        th = tr.msg.header
        vr = tr.msg.payloads[-1]
        assert isinstance(vr, V)
        rr = tr.get("RANDRr")
        randrr = rr.rand if isinstance(rr, RandR) and flags.G else None
        inkey = mpki
        if flags.I:
            idrr, rkms = tr.get("IDRr"), tr.get("RANDRkms")
            if not isinstance(idrr, IDR) or not isinstance(rkms, RandR) or mpkr is None:
                raise reject(
                    "rfc6043.transfer.modifier",
                    "RFC 6043 4.2.2.3 / 5.1.1",
                    "key forking: TRANSFER_RESP must carry the modifier (IDRr, RANDRkms) of RESOLVE_RESP",
                )
            inkey = prf.fork_key(ticket_prf, mpkr, prf.C_MPKR_FORK, idrr.data, rkms.rand)
            keys = fork(ticket_prf, session_keys, idrr.data, rkms.rand) + keys[len(session_keys) :]
        k2 = protection_keys(
            th.prf_func, inkey, th.csb_id, 2, randri, randrr, mac_alg=vr.mac_alg, encr_alg=_kemac_alg(tr)
        )
        readings.append("TRANSFER_RESP MAC: " + verify_mac(tr, k2.auth, initial_raw=ti.raw))
        kem2 = tr.get("KEMAC")
        if isinstance(kem2, Kemac):
            t2, t1 = tr.get("T"), ti.get("T")
            assert isinstance(t2, T) and isinstance(t1, T)
            extra, how = decrypt_kemac(
                kem2, k2, th.csb_id, [("TRANSFER_RESP T", t2), ("TRANSFER_INIT T", t1)]
            )
            keys += extra
            readings.append(f"TRANSFER_RESP KEMAC ({how})")
        cs_map = [c for c in th.cs_map if isinstance(c, GenericCs)]
        sps += [p for p in tr.msg.payloads if isinstance(p, SP)]
    longest = max([len(mpki), len(mpkr or b"")] + [len(k.key) for k in keys])
    if len(randri or b"") + len(randrr or b"") < longest:
        raise reject(
            "rfc6043.rand_len",
            "RFC 6043 12.1",
            f"RANDRi ({len(randri or b'')} bytes) + RANDRr ({len(randrr or b'')} bytes) is shorter than the "
            f"longest MPK/TGK ({longest} bytes)",
        )
    if not flags.H and not randrr:
        raise reject(
            "rfc6043.transfer.no_rand", "RFC 6043 5.1.3", "neither RANDRi (H flag) nor RANDRr (G flag)"
        )
    cs = derive_cs_keys(h.prf_func, cs_map, sps, keys, randri if flags.H else None, randrr)
    return TransferKeys(cs, readings)


def _kemac_alg(d: Decoded) -> int:
    k = d.get("KEMAC")
    return k.encr_alg if isinstance(k, Kemac) else 0


__all__ = [
    "CsKeys",
    "TransferKeys",
    "check_transfer",
    "derive_cs_keys",
    "fork",
    "MikeyReject",
    "KD_GTGK",
    "KD_GTGK_SALT",
]
