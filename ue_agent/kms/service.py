"""The KMS's decisions, sans-IO: REQUEST_INIT -> REQUEST_RESP and RESOLVE_INIT -> RESOLVE_RESP.

The HTTP edge (ue_agent.lab.kms) authenticates the UE with GBA (Ua digest) and hands the
body here with the peer's IMPI, B-TID and Ks_NAF. Every refusal is a MIKEY error message
(data type Error, ERR payload, signed when the request's key is known) with an HTTP status.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ue_agent.errors import AgentError, KmsError, MikeyError
from ue_agent.kms import ids, mikey, protect, tickets
from ue_agent.secret import Secret

EXT_DIVERT = 0xF0  # GENERAL_EXT type of the lab profile: authorize a diverted-to identity
EXT_GROUP = 0xF1  # GENERAL_EXT type of the lab profile: the resolved key is a group key
DEFAULT_VALIDITY = 3600
MAX_VALIDITY = 7 * 24 * 3600


def encode_policy(validity_s: int, group: bool) -> bytes:
    """TP policy data of the lab profile: validity in seconds (32 bits) and flags (8 bits)."""
    return struct.pack(">IB", validity_s, tickets.FLAG_GROUP if group else 0)


def decode_policy(data: bytes) -> tuple[int, int]:
    if len(data) != 5:
        raise MikeyError("mikey.malformed", "ticket policy must be validity(4) || flags(1)")
    validity, flags = struct.unpack(">IB", data)
    if flags & ~tickets.FLAG_GROUP:
        raise MikeyError("mikey.unsupported", "unknown ticket policy flags", flags=flags)
    return validity, flags


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str = "application/mikey"


@dataclass
class KmsStats:
    requests: int = 0
    resolves: int = 0
    diverts: int = 0
    refusals: dict[str, int] = field(default_factory=dict)


class _Refuse(Exception):
    def __init__(self, err_no: int, status: int, reason: str) -> None:
        super().__init__(reason)
        self.err_no, self.status, self.reason = err_no, status, reason


class KmsService:
    """Ticket issuing and resolving for one KMS identity (its FQDN)."""

    def __init__(
        self,
        kms_id: str,
        identities_of: Callable[[str], list[str]],
        *,
        ring: tickets.KeyRing | None = None,
        clock: Callable[[], float] = time.time,
        skew: float = 300.0,
        max_validity: int = MAX_VALIDITY,
    ) -> None:
        self.kms_id = kms_id
        self._identities_of = identities_of
        self.ring = ring or tickets.KeyRing()
        if ring is None:
            self.ring.add(1)
        self.clock = clock
        self.skew = skew
        self.max_validity = max_validity
        self.stats = KmsStats()
        self._diverts: dict[bytes, tuple[int, set[str]]] = {}  # ticket id -> (expiry, identities)

    # -- entry point

    def handle(self, body: bytes, impi: str, btid: str, psk: Secret) -> Reply:
        """One authenticated request body -> the reply (never raises for bad input)."""
        try:
            msg = mikey.Message.decode(body)
        except MikeyError as e:
            return self._refusal(None, None, mikey.ERR_UNSPECIFIED, 400, e.code)
        keys: protect.TransportKeys | None = None
        try:
            rand = msg.one(mikey.Rand).rand
            keys = protect.TransportKeys(psk, msg.header.csb_id, rand, msg.header.prf_func)
            idr_psk = msg.one(mikey.IdRole, mikey.ROLE_PSK)
            if idr_psk.text != btid:
                keys = None  # the message is not under this peer's key: do not sign the refusal
                raise _Refuse(mikey.ERR_AUTH_FAILURE, 403, "IDRpsk is not the authenticated B-TID")
            try:
                protect.verify(body, msg, keys.auth)
            except MikeyError as e:
                keys = None
                raise _Refuse(mikey.ERR_AUTH_FAILURE, 403, e.code) from None
            try:
                protect.check_fresh(msg, self.clock(), self.skew)
            except MikeyError as e:
                raise _Refuse(mikey.ERR_INVALID_TS, 403, e.code) from None
            kms = msg.first(mikey.IdRole, mikey.ROLE_KMS)
            if kms is not None and kms.text != self.kms_id:
                raise _Refuse(mikey.ERR_INVALID_ID, 403, "IDRkms names another KMS")
            if msg.header.data_type == mikey.DT_REQUEST_INIT_PSK:
                return self._request(msg, impi, keys)
            if msg.header.data_type == mikey.DT_RESOLVE_INIT_PSK:
                return self._resolve(msg, impi, keys)
            raise _Refuse(mikey.ERR_INVALID_DT, 400, f"{msg.name} is not a KMS request")
        except _Refuse as r:
            return self._refusal(msg, keys, r.err_no, r.status, r.reason)
        except MikeyError as e:  # structurally valid MIKEY, wrong contents
            return self._refusal(msg, keys, mikey.ERR_UNSPECIFIED, 400, e.code)
        except AgentError as e:
            return self._refusal(msg, keys, mikey.ERR_INVALID_ID, 403, e.code)

    # -- exchanges

    def _own_identity(self, msg: mikey.Message, role: int, impi: str) -> str:
        ident = ids.canonical(msg.one(mikey.IdRole, role).text)
        allowed = {ids.canonical(u) for u in self._identities_of(impi)}
        if ident not in allowed:
            raise _Refuse(mikey.ERR_INVALID_ID, 403, "identity is not one of the subscriber's IMPUs")
        return ident

    def _request(self, msg: mikey.Message, impi: str, keys: protect.TransportKeys) -> Reply:
        initiator = self._own_identity(msg, mikey.ROLE_I, impi)
        recipients = tuple(ids.pattern(r.text) for r in msg.all(mikey.IdRole, mikey.ROLE_R))
        if not recipients:
            raise _Refuse(mikey.ERR_INVALID_ID, 400, "REQUEST_INIT names no recipient")
        tp = msg.one(mikey.TicketPolicy)
        if tp.ticket_type != tickets.TICKET_TYPE_LAB:
            raise _Refuse(mikey.ERR_UNSPECIFIED, 400, "ticket type not issued by this KMS")
        validity, flags = decode_policy(tp.policy)
        validity = min(validity or DEFAULT_VALIDITY, self.max_validity)
        now = int(self.clock())
        contents = tickets.TicketContents(
            os.urandom(16),
            now,
            now + validity,
            flags,
            msg.header.prf_func,
            Secret(os.urandom(tickets.KEY_LEN), "K_t"),
            initiator,
            recipients,
        )
        sealed = tickets.seal(self.ring, contents)
        hdr = mikey.Header(mikey.DT_REQUEST_RESP, msg.header.csb_id, msg.header.prf_func)
        t = protect.timestamp(self.clock())
        resp = mikey.Message(
            hdr,
            [
                t,
                mikey.IdRole(mikey.ROLE_KMS, mikey.ID_NAI, self.kms_id.encode()),
                mikey.Ticket(tickets.TICKET_TYPE_LAB, sealed),
                mikey.TimestampRole(mikey.TS_ROLE_EXPIRY, mikey.TS_NTP_UTC, protect.ntp_utc(contents.expiry)),
                protect.seal_kemac(keys, hdr, t, [mikey.KeyData(mikey.KEY_TGK, contents.key)]),
            ],
        )
        self.stats.requests += 1
        return Reply(200, protect.sign(resp, keys.auth, protect.bind_to(msg)))

    def _resolve(self, msg: mikey.Message, impi: str, keys: protect.TransportKeys) -> Reply:
        responder = self._own_identity(msg, mikey.ROLE_R, impi)
        ticket = msg.one(mikey.Ticket)
        if ticket.ticket_type != tickets.TICKET_TYPE_LAB:
            raise _Refuse(mikey.ERR_TICKET_INVALID, 403, "ticket type not issued by this KMS")
        try:
            t = tickets.open_ticket(self.ring, ticket.data)
        except KmsError as e:
            raise _Refuse(mikey.ERR_TICKET_INVALID, 403, e.message) from None
        now = self.clock()
        if now >= t.expiry:
            raise _Refuse(mikey.ERR_TICKET_EXPIRED, 403, "ticket expired")
        claimed = msg.first(mikey.IdRole, mikey.ROLE_I)
        if claimed is not None and ids.canonical(claimed.text) != t.initiator:
            raise _Refuse(mikey.ERR_TICKET_INVALID, 403, "ticket was issued to another initiator")
        in_policy = any(ids.matches(responder, p) for p in t.recipients)
        divert = next((x for x in msg.all(mikey.GeneralExt) if x.ext_type == EXT_DIVERT), None)
        self._prune(now)
        if divert is not None:
            if not in_policy:
                raise _Refuse(mikey.ERR_NOT_AUTHORIZED, 403, "only a recipient may divert the call")
            target = ids.canonical(divert.data.decode("utf-8", "replace"))
            self._diverts.setdefault(t.ticket_id, (t.expiry, set()))[1].add(target)
            self.stats.diverts += 1
            body = [mikey.GeneralExt(EXT_DIVERT, target.encode())]
        else:
            diverted = responder in self._diverts.get(t.ticket_id, (0, set()))[1]
            if not (in_policy or diverted):
                raise _Refuse(mikey.ERR_NOT_AUTHORIZED, 403, "responder outside the ticket's recipients")
            k_r = tickets.responder_key(t.key, None if t.group else responder, t.prf_func)
            body = [
                mikey.KeyData(mikey.KEY_TGK, k_r),
                mikey.KeyData(mikey.KEY_TGK, tickets.mpk_i(t.key, t.prf_func)),
            ]
            self.stats.resolves += 1
        hdr = mikey.Header(mikey.DT_RESOLVE_RESP, msg.header.csb_id, msg.header.prf_func)
        ts = protect.timestamp(now)
        payloads: list[mikey.Payload] = [
            ts,
            mikey.IdRole(mikey.ROLE_KMS, mikey.ID_NAI, self.kms_id.encode()),
            mikey.IdRole(mikey.ROLE_I, mikey.ID_URI, t.initiator.encode()),
            mikey.TimestampRole(mikey.TS_ROLE_EXPIRY, mikey.TS_NTP_UTC, protect.ntp_utc(t.expiry)),
        ]
        if divert is not None:
            payloads += body  # type: ignore[arg-type]
        else:
            payloads.append(protect.seal_kemac(keys, hdr, ts, body))  # type: ignore[arg-type]
            if t.group:
                payloads.append(mikey.GeneralExt(EXT_GROUP, b""))
        return Reply(200, protect.sign(mikey.Message(hdr, payloads), keys.auth, protect.bind_to(msg)))

    def _prune(self, now: float) -> None:
        for tid in [k for k, (exp, _) in self._diverts.items() if exp <= now]:
            del self._diverts[tid]

    # -- refusals

    def _refusal(
        self,
        req: mikey.Message | None,
        keys: protect.TransportKeys | None,
        err_no: int,
        status: int,
        reason: str,
    ) -> Reply:
        self.stats.refusals[reason] = self.stats.refusals.get(reason, 0) + 1
        csb = req.header.csb_id if req else 0
        prf = req.header.prf_func if req and req.header.prf_func in (0, 1) else 1
        msg = mikey.Message(
            mikey.Header(mikey.DT_ERROR, csb, prf),
            [protect.timestamp(self.clock()), mikey.Error(err_no)],
        )
        if keys is not None and req is not None:
            try:
                bind = protect.bind_to(req)
            except MikeyError:
                return Reply(status, msg.encode())
            return Reply(status, protect.sign(msg, keys.auth, bind))
        return Reply(status, msg.encode())
