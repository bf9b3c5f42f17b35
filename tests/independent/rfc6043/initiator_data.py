"""Initiator Data of the TICKET payload (RFC 6043 6.10): First Payload, Vi, Vr -- only with key forking."""

from __future__ import annotations

import hmac as _hmac

from . import algs, prf
from .errors import ERR_INVALID_TICKET, reject
from .wire import NP_V, Ticket, V, encode_inner_chain


def build_initiator_data(vi: V, mpkr: bytes, prf_func: int) -> bytes:
    """Vi = the TRANSFER_INIT V payload; Vr's MAC covers the whole Initiator Data except the MAC field, with
    an auth_key derived from MPKr (not forked), label constant || 0xFF || 0xFFFFFFFF || 0x04."""
    n = len(vi.mac)
    raw = encode_inner_chain([V(vi.mac_alg, vi.mac), V(vi.mac_alg, bytes(n))])
    key = prf.vr_auth_key(prf_func, mpkr, algs.auth_key_bits(vi.mac_alg))
    return raw[:-n] + algs.compute_mac(vi.mac_alg, key, raw[:-n])


def verify_vr(ticket: Ticket, mpkr: bytes, prf_candidates: list[int]) -> str:
    """Check Vr. Which PRF derives Vr's auth_key is not said in 6.10; the Ticket Policy's PRF (which 5.1.1 and
    A.2 use for every other ticket-bound key) and the HDR's PRF are both accepted."""
    data = ticket.initiator_data
    if not data or data[0] != NP_V or len(ticket.initiator_payloads) != 2:
        raise reject(
            "rfc6043.initiator_data.shape",
            "RFC 6043 6.10",
            "Initiator Data is not First Payload, Vi, Vr",
            err_no=ERR_INVALID_TICKET,
        )
    vr = ticket.initiator_payloads[1]
    assert isinstance(vr, V)
    covered = data[: len(data) - len(vr.mac)]
    for p in dict.fromkeys(prf_candidates):
        key = prf.vr_auth_key(p, mpkr, algs.auth_key_bits(vr.mac_alg))
        if _hmac.compare_digest(algs.compute_mac(vr.mac_alg, key, covered), vr.mac):
            return f"Initiator Data Vr verified (PRF {p})"
    raise reject(
        "rfc6043.initiator_data.mac",
        "RFC 6043 6.10 / 4.2.3.4",
        "the Vr MAC of the Initiator Data does not verify under MPKr",
        err_no=ERR_INVALID_TICKET,
    )
