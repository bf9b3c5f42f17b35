"""The MIKEY base ticket (RFC 6043 Appendix A): Ticket Data = THDR, T, RAND, KEMAC, [IDRpsk], V,
protected under a Ticket Protection Key (TPK)."""

from __future__ import annotations

import hmac as _hmac
from dataclasses import dataclass

from . import algs, prf
from .errors import ERR_INVALID_TICKET, MikeyReject, reject
from .keys import ProtKeys, check_key_data, decrypt_kemac, encrypt_kemac, salt_bits
from .messages import _s, match_grammar
from .wire import (
    IDR,
    IDR_PSK,
    Kemac,
    KeyData,
    PolicyHead,
    Rand,
    T,
    Thdr,
    Ticket,
    V,
    _u16,
    decode_ticket_data_chain,
    encode_ticket_data,
)

TICKET_DATA_GRAMMAR = [
    _s(T, "T"),
    _s(Rand, "RAND"),
    _s(Kemac, "KEMAC"),
    _s(IDR, "IDRpsk", 0, 1, IDR_PSK),
    _s(V, "V"),
]
CSB_ID_TICKET = 0xFFFFFFFF  # A.1: "If CSB ID is needed in the IV creation it SHALL be set to '0xFFFFFFFF'"


def default_algorithms(prf_func: int) -> tuple[int, int]:
    """(Encr alg, MAC alg) of the same family as the PRF (RFC 6043 12.1)."""
    if prf_func == prf.PRF_HMAC_SHA_256:
        return algs.ENC_AES_CM_256, algs.MAC_HMAC_SHA256_256
    return algs.ENC_AES_CM_128, algs.MAC_HMAC_SHA1_160


def tpk_prot_keys(prf_func: int, tpk: bytes, rand: bytes, encr_alg: int, mac_alg: int) -> ProtKeys:
    e, a, s = prf.tpk_keys(
        prf_func,
        tpk,
        rand,
        encr_bits=algs.ENC_ALGS.get(encr_alg, 0),
        auth_bits=algs.auth_key_bits(mac_alg),
        salt_bits=salt_bits(encr_alg),
    )
    return ProtKeys(e, a, s)


def build_base_ticket(
    head: PolicyHead,
    tp_data: bytes,
    *,
    tpk: bytes,
    tpk_id: bytes | None,
    t: T,
    rand: bytes,
    keys: list[KeyData],
    thdr_data: bytes = b"",
) -> Ticket:
    """keys = [MPK, TEK|TGK|GTGK ...] (A.1: KEMAC = E(encr_key, MPK || {TEK|TGK|GTGK}))."""
    if len(rand) < max(len(tpk), *(len(k.key) for k in keys if k.key_type == 6)):
        raise reject(
            "rfc6043.ticket.rand_len",
            "RFC 6043 12.1",
            "the RAND in the MIKEY base ticket MUST be at least as long as the longest of TPK and MPK",
        )
    encr_alg, mac_alg = default_algorithms(head.prf_func)
    pk = tpk_prot_keys(head.prf_func, tpk, rand, encr_alg, mac_alg)
    kemac = encrypt_kemac(keys, pk, encr_alg, CSB_ID_TICKET, t)
    rest = [t, Rand(rand), kemac] + ([IDR(IDR_PSK, 2, tpk_id)] if tpk_id is not None else [])
    n = algs.MAC_ALGS[mac_alg][0]
    td = encode_ticket_data(Thdr(thdr_data), [*rest, V(mac_alg, bytes(n))])
    # A.1: the MAC is calculated over the entire TICKET payload except the Next Payload field, the Initiator
    # Data length field, the Initiator Data field and the MAC field itself.
    covered = head.encode() + _u16(len(tp_data)) + tp_data + _u16(len(td)) + td[: len(td) - n]
    mac = algs.compute_mac(mac_alg, pk.auth, covered)
    return Ticket(head, tp_data, td[: len(td) - n] + mac, b"")


@dataclass(frozen=True)
class OpenedTicket:
    t: T
    rand: bytes
    mpk: KeyData
    session_keys: tuple[KeyData, ...]
    tpk_id: bytes | None
    iv_reading: str

    def __repr__(self) -> str:
        return f"OpenedTicket(keys={len(self.session_keys)}, tpk_id={self.tpk_id!r})"


def open_base_ticket(ticket: Ticket, tpk_lookup: dict[bytes | None, bytes] | bytes) -> OpenedTicket:
    """Verify and decrypt a type 1 ticket. tpk_lookup: the TPK, or a dict from IDRpsk data (None = absent)."""
    c = "RFC 6043 A"
    h = ticket.head
    if (h.ticket_type, h.subtype, h.version) != (1, 1, 1):
        raise reject(
            "rfc6043.ticket.not_base",
            "RFC 6043 6.10 / A",
            f"Ticket Type {h.ticket_type}/{h.subtype}/{h.version} is not the MIKEY base ticket 1/1/1",
            err_no=ERR_INVALID_TICKET,
        )
    base = ticket.offset + 1 + 7 + 2 + len(ticket.tp_data) + 2 if ticket.offset >= 0 else 0
    try:
        chain = decode_ticket_data_chain(ticket.ticket_data, base)
        parts = match_grammar(chain[1:], TICKET_DATA_GRAMMAR, f"{c} (Ticket Data)", allow_genext=False)
    except MikeyReject as e:
        raise reject(
            "rfc6043.ticket.data",
            e.clause,
            f"Ticket Data: {e.reason}",
            err_no=ERR_INVALID_TICKET,
            offset=e.offset,
        ) from None
    t, rnd, kemac, v = parts["T"][0], parts["RAND"][0], parts["KEMAC"][0], parts["V"][0]
    assert isinstance(t, T) and isinstance(rnd, Rand) and isinstance(kemac, Kemac) and isinstance(v, V)
    psk_id = parts["IDRpsk"][0].data if parts["IDRpsk"] else None  # type: ignore[attr-defined]
    if isinstance(tpk_lookup, bytes):
        tpk = tpk_lookup
    else:
        found = tpk_lookup.get(psk_id)
        if found is None:
            raise reject(
                "rfc6043.ticket.tpk",
                "RFC 6043 A.1",
                "no TPK is known for the ticket's IDRpsk",
                err_no=ERR_INVALID_TICKET,
            )
        tpk = found
    if kemac.mac_alg != algs.MAC_NULL:
        raise reject(
            "rfc6043.ticket.kemac_mac",
            "RFC 6043 A.1",
            "the KEMAC payload SHALL use the NULL authentication algorithm",
            err_no=ERR_INVALID_TICKET,
        )
    pk = tpk_prot_keys(h.prf_func, tpk, rnd.rand, kemac.encr_alg, v.mac_alg)
    covered = (
        h.encode()
        + _u16(len(ticket.tp_data))
        + ticket.tp_data
        + _u16(len(ticket.ticket_data))
        + ticket.ticket_data[: len(ticket.ticket_data) - len(v.mac)]
    )
    if v.mac_alg == algs.MAC_NULL or not _hmac.compare_digest(
        algs.compute_mac(v.mac_alg, pk.auth, covered), v.mac
    ):
        raise reject(
            "rfc6043.ticket.mac",
            "RFC 6043 A.1",
            "the Ticket Data MAC does not verify under the TPK",
            err_no=ERR_INVALID_TICKET,
        )
    keys, reading = decrypt_kemac(kemac, pk, CSB_ID_TICKET, [("ticket T", t)])
    check_key_data(
        keys,
        "base ticket KEMAC",
        mpks=(1, 1),
        algorithms=[("prf", h.prf_func), ("encr", kemac.encr_alg), ("mac", v.mac_alg)],
    )
    algs.check_no_mixing([("prf", h.prf_func), ("encr", kemac.encr_alg), ("mac", v.mac_alg)], "base ticket")
    if len(rnd.rand) < max(len(tpk), len(keys[0].key)):
        raise reject(
            "rfc6043.ticket.rand_len",
            "RFC 6043 12.1",
            "the RAND in the MIKEY base ticket MUST be at least as long as the longest of TPK and MPK",
            err_no=ERR_INVALID_TICKET,
        )
    return OpenedTicket(t, rnd.rand, keys[0], tuple(keys[1:]), psk_id, reading)
