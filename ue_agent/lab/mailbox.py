"""The lab mailbox: deferred delivery's store in the network (TR 33.828 4.2.4, 7.1.2, 7.1.3).

A sender whose receiver is offline leaves the TRANSFER_INIT (the one-way ticket, see
:mod:`ue_agent.kms.deferred`) and the SRTP packets it protected with the keys it got at
offer time. The mailbox stores them per recipient and hands them out later; it holds no
key. It is a subscriber of the lab network like any other (its own IMPI, GBA with the lab
BSF, the KMS as a NAF), so it can *try* to resolve a stored ticket: the KMS refuses it
(RFC 6043 6.10: the ticket's IDRr names the receiver, not the mailbox; ERR 242 ->
``kms.not_authorized``), which is what this component is for in the tests.

HTTP on loopback (JSON; binary values base64), next to the lab BSF and KMS:

- ``POST /mailbox/{user}`` ``{"transfer_init": b64, "packets": [b64...], "media": "audio"}``
  -> 201 ``{"id": ...}``
- ``GET /mailbox/{user}`` -> ``{"items": [id...]}``
- ``GET /mailbox/{user}/{id}`` -> ``{"id", "transfer_init", "packets", "media"}``
- ``POST /mailbox/{user}/{id}/resolve`` -> the mailbox asks the KMS itself: 403 with the
  error code (``kms.not_authorized``) — a mailbox that got keys would answer 200 and be a bug.

``{user}`` is the recipient's URI (percent-encoded in the path). Retrieval needs no
authentication in the lab: what it gives out is ciphertext and a ticket only the named
recipients can resolve.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ue_agent.errors import AgentError
from ue_agent.kms import deferred, ids

if TYPE_CHECKING:
    from ue_agent.kms.client import KmsClient
    from ue_agent.lab.network import LabNetwork
    from ue_agent.subscriber import Subscriber

MAX_BODY = 4 * 1024 * 1024  # 1000 SRTP packets of a few hundred octets, base64
MAX_PACKETS = 100_000
MAX_ITEMS = 1000


@dataclass
class Deposit:
    id: str
    recipient: str
    transfer_init: bytes
    packets: list[bytes] = field(repr=False)
    media: str = "audio"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "recipient": self.recipient,
            "media": self.media,
            "transfer_init": base64.b64encode(self.transfer_init).decode(),
            "packets": [base64.b64encode(p).decode() for p in self.packets],
        }


class MailboxError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Mailbox:
    """Stored TRANSFER_INITs and media per recipient. ``kms``: the mailbox's own KMS client
    (as a subscriber), used only to show that it cannot resolve what it stores."""

    def __init__(self, kms: KmsClient | None = None, *, max_items: int = MAX_ITEMS) -> None:
        self.kms = kms
        self.max_items = max_items
        self._items: dict[str, Deposit] = {}
        self._ids = itertools.count(1)
        #: the error code of every refused resolve attempt, in order
        self.refusals: list[str] = []

    def deposit(
        self, recipient: str, transfer_init: bytes, packets: list[bytes], media: str = "audio"
    ) -> str:
        if len(self._items) >= self.max_items:
            raise MailboxError(507, "mailbox.full", "the mailbox is full")
        if len(packets) > MAX_PACKETS:
            raise MailboxError(413, "mailbox.too_large", "too many packets")
        item_id = f"m{next(self._ids)}"
        self._items[item_id] = Deposit(
            item_id, ids.canonical(recipient), bytes(transfer_init), list(packets), media
        )
        return item_id

    def items(self, recipient: str) -> list[str]:
        who = ids.canonical(recipient)
        return [d.id for d in self._items.values() if d.recipient == who]

    def fetch(self, recipient: str, item_id: str) -> Deposit:
        d = self._items.get(item_id)
        if d is None or d.recipient != ids.canonical(recipient):
            raise MailboxError(404, "mailbox.not_found", "no such item for this recipient")
        return d

    async def try_resolve(self, recipient: str, item_id: str) -> str:
        """Ask the KMS for the stored ticket's keys as the mailbox: the error code it gets."""
        if self.kms is None:
            raise MailboxError(501, "mailbox.no_identity", "this mailbox has no KMS identity")
        d = self.fetch(recipient, item_id)
        try:
            res = await deferred.resolve_stored(self.kms, d.transfer_init)
        except AgentError as exc:
            self.refusals.append(exc.code)
            return exc.code
        for k in res.keys:  # would be a bug of the KMS: never keep them
            k.zeroize()
        return "ok"


# ---------------------------------------------------------------------------- HTTP front


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise MailboxError(400, "mailbox.bad_request", f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise MailboxError(400, "mailbox.bad_request", f"{what} is not base64") from None


def create_mailbox_app(mailbox: Mailbox):
    from aiohttp import web

    def fail(e: MailboxError) -> web.Response:
        return web.json_response({"code": e.code, "message": e.message}, status=e.status)

    async def post_item(request: web.Request) -> web.Response:
        try:
            try:
                body = json.loads(await request.read())
            except (ValueError, UnicodeDecodeError):
                raise MailboxError(400, "mailbox.bad_request", "the body is not JSON") from None
            if not isinstance(body, dict) or not isinstance(body.get("packets", []), list):
                raise MailboxError(400, "mailbox.bad_request", "expected an object with a packets list")
            ti = _b64(body.get("transfer_init"), "transfer_init")
            packets = [_b64(p, "packets[]") for p in body.get("packets", [])]
            media = body.get("media", "audio")
            item_id = mailbox.deposit(request.match_info["user"], ti, packets, str(media))
        except MailboxError as e:
            return fail(e)
        except AgentError as e:
            return fail(MailboxError(400, e.code, e.message))
        return web.json_response({"id": item_id}, status=201)

    async def list_items(request: web.Request) -> web.Response:
        try:
            return web.json_response({"items": mailbox.items(request.match_info["user"])})
        except AgentError as e:
            return fail(MailboxError(400, e.code, e.message))

    async def get_item(request: web.Request) -> web.Response:
        try:
            return web.json_response(
                mailbox.fetch(request.match_info["user"], request.match_info["id"]).to_json()
            )
        except MailboxError as e:
            return fail(e)
        except AgentError as e:
            return fail(MailboxError(400, e.code, e.message))

    async def resolve_item(request: web.Request) -> web.Response:
        try:
            code = await mailbox.try_resolve(request.match_info["user"], request.match_info["id"])
        except MailboxError as e:
            return fail(e)
        if code == "ok":
            return web.json_response({"resolved": True}, status=200)
        return web.json_response({"code": code, "message": "the KMS refused the mailbox"}, status=403)

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post("/mailbox/{user}", post_item)
    app.router.add_get("/mailbox/{user}", list_items)
    app.router.add_get("/mailbox/{user}/{id}", get_item)
    app.router.add_post("/mailbox/{user}/{id}/resolve", resolve_item)
    return app


# ---------------------------------------------------------------------------- a running mailbox


class MailboxServer:
    """A :class:`Mailbox` with its own identity on a lab network, served on loopback.

    ``async with MailboxServer(network, subscriber) as box: box.url ...`` (the network started;
    ``subscriber`` one of the network's, so the lab HSS and KMS know it)."""

    def __init__(self, network: LabNetwork, subscriber: Subscriber, addr: tuple[str, int] = ("127.0.0.1", 0)):
        self.network, self.subscriber, self.addr = network, subscriber, addr
        self.mailbox = Mailbox()
        self.url = ""
        self._runner: Any = None
        self._http: Any = None

    async def start(self) -> MailboxServer:
        from aiohttp import web

        from ue_agent.drivers.http import HttpClient
        from ue_agent.gba.client import GbaClient
        from ue_agent.gba.naf_client import NafClient
        from ue_agent.kms.client import KmsClient
        from ue_agent.lab.card_ops import SoftCardOps

        net, sub = self.network, self.subscriber
        self._http = HttpClient()
        await self._http.__aenter__()
        gba = GbaClient(
            SoftCardOps(sub), net.bsf_url, net.bsf_fqdn, sub.impi, self._http, gba_u=False, clock=net.clock
        )
        self.mailbox.kms = KmsClient(
            NafClient(gba, self._http), net.kms_url, net.kms_fqdn, sub.impu[0], gba=gba, clock=net.clock
        )
        self._runner = web.AppRunner(create_mailbox_app(self.mailbox), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.addr[0], self.addr[1], reuse_address=True)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._http is not None:
            await self._http.__aexit__(None, None, None)
            self._http = None

    async def __aenter__(self) -> MailboxServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
