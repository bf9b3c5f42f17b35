"""``card_ops`` for :class:`ue_agent.gba.client.GbaClient` on a soft UICC: the real card layer
(``Card`` on a ``SoftUicc``), its blocking calls in a worker thread as the daemon runs them.
The lab's own GBA users (the conference focus, the mailbox) and the tests use it."""

from __future__ import annotations

import asyncio
from typing import Any

from ue_agent.card.session import Card
from ue_agent.lab.uicc import SoftUicc, SoftUiccTransport
from ue_agent.subscriber import Subscriber


class SoftCardOps:
    def __init__(self, subscriber: Subscriber, **uicc_kw: Any) -> None:
        self.uicc = SoftUicc(subscriber, **uicc_kw)
        self.card = Card(SoftUiccTransport(self.uicc))

    async def authenticate(self, rand: bytes, autn: bytes) -> Any:
        return await asyncio.to_thread(self.card.authenticate, rand, autn)

    async def gba_bootstrap(self, rand: bytes, autn: bytes) -> Any:
        return await asyncio.to_thread(self.card.gba_bootstrap, rand, autn)

    async def gba_naf_derive(self, naf_id: bytes, impi: str) -> Any:
        return await asyncio.to_thread(self.card.gba_naf_derive, naf_id, impi)

    async def store_gba_bootstrap(self, rand: bytes, btid: str, lifetime: str) -> Any:
        return await asyncio.to_thread(self.card.store_gba_bootstrap, rand, btid, lifetime)
