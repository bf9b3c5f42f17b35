"""The MIKEY base ticket (RFC 6043 Appendix A), as the KMS issues and resolves it.

Ticket Data = THDR, T, RAND, KEMAC, IDRpsk, V under a Ticket Protection Key (TPK) that only
the KMS holds (mode 1 of RFC 6043 4.1.1):

- THDR (A.3) with empty THDR Data; T = time of issue (NTP-UTC); RAND = 32 fresh octets;
- KEMAC = E(encr_key, MPK || TGK), keys from the TPK (A.2.1), IV with CSB ID 0xFFFFFFFF and
  the ticket's T, NULL MAC; MPK (key type 6) and TGK (type 0), each with a 4-octet SPI;
- IDRpsk (ID type byte string) names the TPK, so keys can rotate;
- V: MAC over the TICKET payload except its Next Payload, the Initiator Data length,
  Initiator Data and the MAC field.

MPKi and MPKr come from the MPK and the ticket's RAND (A.2.2). UEs never open Ticket Data.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass

from ue_agent.crypto import mikey_prf
from ue_agent.errors import KmsError, MikeyError
from ue_agent.kms import mikey, protect
from ue_agent.secret import Secret

TICKET_CSB_ID = 0xFFFFFFFF  # RFC 6043 A.1: CSB ID in the IV of the ticket's KEMAC
SPI_LEN = 4


@dataclass(repr=False)
class TicketKeys:
    """What a base ticket encodes: the MPK and TGK with their SPIs, and the ticket's RAND."""

    mpk: Secret
    tgk: Secret
    mpk_spi: bytes
    tgk_spi: bytes
    rand: bytes
    prf_func: int

    def mpk_pair(self) -> tuple[Secret, Secret]:
        """(MPKi, MPKr) by RFC 6043 A.2.2."""
        i, r = mikey_prf.mpk_split(self.mpk.reveal(), self.rand, self.prf_func)
        return Secret(i, "MPKi"), Secret(r, "MPKr")

    def zeroize(self) -> None:
        self.mpk.zeroize()
        self.tgk.zeroize()

    def __repr__(self) -> str:
        return f"<TicketKeys prf={self.prf_func}>"


class TpkRing:
    """The KMS-only Ticket Protection Keys by identifier (rotate by adding one)."""

    def __init__(self) -> None:
        self._keys: dict[bytes, Secret] = {}
        self.current = b""

    def add(self, key_id: bytes, key: Secret | None = None) -> None:
        self._keys[key_id] = key or Secret(os.urandom(32), "TPK")
        self.current = key_id

    def get(self, key_id: bytes) -> Secret | None:
        return self._keys.get(key_id)

    def __repr__(self) -> str:
        return f"<TpkRing {len(self._keys)} keys>"


def new_keys(prf_func: int) -> TicketKeys:
    n = protect.family(prf_func).key_len
    return TicketKeys(
        Secret(os.urandom(n), "MPK"),
        Secret(os.urandom(n), "TGK"),
        os.urandom(SPI_LEN),
        os.urandom(SPI_LEN),
        os.urandom(protect.RAND_LEN),
        prf_func,
    )


def issue(ring: TpkRing, policy: mikey.TicketPolicy, keys: TicketKeys, now: float) -> mikey.Ticket:
    """A TICKET payload (granted ``policy`` + base ticket data), without Initiator Data."""
    tpk = ring.get(ring.current)
    if tpk is None:
        raise KmsError("kms.error", "the KMS has no ticket protection key")
    mk = protect.MessageKeys.for_ticket(tpk, keys.rand, policy.prf_func)
    try:
        t = protect.timestamp(now)
        kemac = protect.seal_kemac(
            mk,
            TICKET_CSB_ID,
            t,
            [
                mikey.KeyData(mikey.KEY_MPK, keys.mpk, kv_type=mikey.KV_SPI, kv_data=(keys.mpk_spi,)),
                mikey.KeyData(mikey.KEY_TGK, keys.tgk, kv_type=mikey.KV_SPI, kv_data=(keys.tgk_spi,)),
            ],
        )
        v = mikey.Verification(mk.family.mac_alg, bytes(mk.family.mac_len))
        payloads: list[mikey.Payload] = [
            t,
            mikey.Rand(keys.rand),
            kemac,
            mikey.IdRole(mikey.ROLE_PSK, mikey.ID_BYTES, ring.current),
            v,
        ]
        data = mikey.encode_base_ticket(mikey.TicketHeader(), payloads)
        ticket = mikey.Ticket(
            policy.ticket_type,
            policy.subtype,
            policy.version,
            policy.prf_func,
            policy.flags,
            policy.tp_data,
            policy.reserved,
            data,
        )
        covered = ticket.body_without_initiator_data()[: -mk.family.mac_len]
        v.mac = protect.mac(mk, covered)
        ticket.ticket_data = data[: -mk.family.mac_len] + v.mac
        return ticket
    finally:
        mk.zeroize()


def resolve(ring: TpkRing, ticket: mikey.Ticket) -> TicketKeys:
    """Verify and decrypt base ticket data (``kms.ticket_rejected`` when it is not ours or altered)."""
    if (ticket.ticket_type, ticket.subtype, ticket.version) != (
        mikey.TICKET_MIKEY_BASE,
        mikey.BASE_SUBTYPE,
        mikey.BASE_VERSION,
    ):
        raise KmsError("kms.ticket_rejected", "not a MIKEY base ticket (type 1, subtype 1, version 1)")
    try:
        _thdr, payloads = mikey.decode_base_ticket(ticket.ticket_data)
        ts = [p for p in payloads if isinstance(p, mikey.Timestamp)]
        rands = [p for p in payloads if isinstance(p, mikey.Rand)]
        kemacs = [p for p in payloads if isinstance(p, mikey.Kemac)]
        psks = [p for p in payloads if isinstance(p, mikey.IdRole) and p.role == mikey.ROLE_PSK]
        v = payloads[-1] if payloads else None
        if (
            len(ts) != 1
            or len(rands) != 1
            or len(kemacs) != 1
            or len(psks) > 1
            or not isinstance(v, mikey.Verification)
        ):
            raise KmsError("kms.ticket_rejected", "base ticket data lacks T, RAND, KEMAC or V")
        tpk = ring.get(psks[0].data if psks else ring.current)
        if tpk is None:
            raise KmsError("kms.ticket_rejected", "ticket under an unknown ticket protection key")
        mk = protect.MessageKeys.for_ticket(tpk, rands[0].rand, ticket.prf_func)
        try:
            if v.mac_alg != mk.family.mac_alg:
                raise KmsError("kms.ticket_rejected", "ticket V MAC alg is not the PRF's family")
            covered = ticket.body_without_initiator_data()[: -len(v.mac)]
            if not hmac.compare_digest(protect.mac(mk, covered), v.mac):
                raise KmsError("kms.ticket_rejected", "ticket failed its integrity check")
            items = protect.open_kemac(mk, kemacs[0], TICKET_CSB_ID, ts[0])
        finally:
            mk.zeroize()
        mpk = [k for k in items if k.key_type == mikey.KEY_MPK]
        tgk = [k for k in items if k.key_type == mikey.KEY_TGK]
        if len(mpk) != 1 or len(tgk) != 1 or mpk[0].spi is None or tgk[0].spi is None:
            raise KmsError("kms.ticket_rejected", "ticket KEMAC must hold one MPK and one TGK with SPIs")
        return TicketKeys(mpk[0].key, tgk[0].key, mpk[0].spi, tgk[0].spi, rands[0].rand, ticket.prf_func)
    except MikeyError as e:
        raise KmsError("kms.ticket_rejected", "ticket data is malformed", reason=e.code) from None
