"""The agent's network side: GBA (Ub), the NAF client (Ua) and the KMS client, built on first use.

The HTTP client and the GBA/NAF/KMS modules are imported only here, when an operation
needs the network, so an agent that never keys a MIKEY session never loads them.
:class:`KmsReachability` wraps the KMS client's network calls to record, for ``status``,
whether the KMS answered.

A reload that changes ``[network]`` applies at once (:meth:`NetworkSide.reconfigure`): the
clients built for the old settings are retired (their bootstrap, Ks_NAF and cached tickets
zeroized, their HTTP connections closed, requests still running on them cut) and the next
request builds new ones for the new URLs. So ``status`` never shows URLs that requests do
not use.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ue_agent.config import NetworkConfig
from ue_agent.errors import AgentError, CardError, KmsError
from ue_agent.secret import Secret

if TYPE_CHECKING:
    from ue_agent.card.results import CardIdentities
    from ue_agent.card_worker import CardWorker
    from ue_agent.drivers.http import HttpClient
    from ue_agent.gba.client import GbaClient
    from ue_agent.kms.client import AnswerResult, KmsClient, OfferResult
    from ue_agent.kms.divert import Diversion
    from ue_agent.kms.session import PendingOffer
    from ue_agent.kms.streams import SrtpStream, StreamKeyPair, TlsStream

T = TypeVar("T")
log = logging.getLogger(__name__)
Emit = Callable[[str, dict[str, Any]], None]


class NetworkSide:
    """GBA, NAF and KMS clients for one agent, made with the first MIKEY operation.

    ``network`` gives the current [network] settings (a reload may change them);
    ``identities`` reads the card's identities when they are not known yet (None: no card).
    """

    def __init__(
        self,
        network: Callable[[], NetworkConfig],
        card: CardWorker,
        identities: Callable[[], Awaitable[CardIdentities | None]],
        emit: Emit,
    ) -> None:
        self._network = network
        self._card = card
        self._identities = identities
        self._emit = emit
        self.http: HttpClient | None = None
        self.gba: GbaClient | None = None
        self.kms_client: KmsClient | None = None
        #: "unused", "reachable" or "unreachable": what the last KMS exchange showed
        self.kms_state = "unused"
        #: the [network] settings the clients were built for (None: none built)
        self._built: NetworkConfig | None = None
        self._closing: set[asyncio.Task[None]] = set()
        #: called after each successful bootstrap, whatever ran it (the agent's renewal timer)
        self.on_bootstrapped: Callable[[], None] | None = None

    def reconfigure(self) -> bool:
        """[network] may have changed (SIGHUP): clients built for other settings are retired
        now, so the next request uses the new ones. True when something was retired."""
        if self._built is None or self._built == self._network():
            return False
        log.info("[network] changed: the next request bootstraps and reaches the KMS anew")
        self._retire()
        return True

    def _retire(self) -> None:
        kms, gba, http = self.kms_client, self.gba, self.http
        self.kms_client = self.gba = self.http = None
        self._built = None
        self.kms_state = "unused"
        if kms is not None:
            kms.forget()
        if gba is not None:
            gba.close()
        if http is not None:
            task = asyncio.get_running_loop().create_task(http.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def _require(self) -> tuple[str, str, str, str]:
        net = self._network()
        if not (net.bsf_url and net.kms_url):
            raise KmsError("kms.not_configured", "[network] bsf_url and kms_url are needed for MIKEY-TICKET")
        return net.bsf_url, net.bsf_host or "", net.kms_url, net.kms_host or ""

    async def kms(self) -> KmsReachability:
        # a reload retires the clients at once (Agent.reconfigure calls reconfigure()), so the
        # clients found here, or built below from the settings read now, are the current ones
        if self.kms_client is not None:
            return KmsReachability(self.kms_client, self)
        bsf_url, bsf_fqdn, kms_url, kms_fqdn = self._require()
        ids = await self._identities()
        if ids is None:
            error = self._card.state.get("error") or "card.absent"
            raise CardError(error, "the card is not available")
        from ue_agent.card_worker import CardOps
        from ue_agent.drivers.http import HttpClient
        from ue_agent.gba.client import GbaClient
        from ue_agent.gba.naf_client import NafClient
        from ue_agent.kms.client import KmsClient

        if self.kms_client is not None:  # another caller built them while we waited
            return KmsReachability(self.kms_client, self)
        bsf_url, bsf_fqdn, kms_url, kms_fqdn = self._require()
        self._built = net = self._network()
        self.http = HttpClient(ca_file=net.ca_file, timeout_s=net.timeout_s)
        self.gba = GbaClient(
            CardOps(self._card),
            bsf_url,
            bsf_fqdn,
            ids.impi,
            self.http,
            gba_u=ids.gba_u,
            on_event=self._gba_event,
            timeout_s=net.timeout_s,
        )
        naf = NafClient(self.gba, self.http, timeout_s=net.timeout_s)
        self.kms_client = KmsClient(naf, kms_url, kms_fqdn, ids.impus[0], gba=self.gba)
        return KmsReachability(self.kms_client, self)

    async def prepare(self) -> str:
        """GBA bootstrapping and the KMS's Ks_(ext_)NAF, ahead of the first call
        (``[network] bootstrap = "at-start"``): the first MIKEY operation then goes straight to
        the KMS. The B-TID; AgentError as a call would get it (the card, the BSF)."""
        reach = await self.kms()
        return await reach.client.prepare()

    def secrets(self) -> list[Secret]:
        """The keys the network side holds: GBA's Ks and Ks_NAF, the cached tickets' keys."""
        out: list[Secret] = []
        if self.gba is not None:
            out += self.gba.secrets()
        if self.kms_client is not None:
            out += self.kms_client.secrets()
        return out

    def deadline_error(self, seconds: float) -> AgentError:
        """What an operation that reached its deadline waiting on the network fails with:
        ``gba.bsf_unreachable`` while the bootstrap runs (the BSF, or the card for it),
        else ``kms.unreachable``."""
        if self.gba is None or self.gba.bootstrapping:
            net = self._network()
            return AgentError(
                "gba.bsf_unreachable", f"no bootstrap within {seconds:g} s (deadline)", url=net.bsf_url
            )
        self.kms_state = "unreachable"
        return AgentError("kms.unreachable", f"no answer from the KMS within {seconds:g} s (deadline)")

    def _gba_event(self, kind: str, info: dict[str, Any]) -> None:
        self._emit("bootstrap", dict(info))
        if info.get("ok") and self.on_bootstrapped is not None:
            self.on_bootstrapped()

    def renewal_due(self) -> float | None:
        """When (``time.time()``) the current bootstrap stops being used for new keys (its
        lifetime less the GBA client's renewal margin); None without one."""
        gba = self.gba
        st = gba.state if gba is not None else None
        if gba is None or st is None:
            return None
        return st.expires_at - gba.renew_margin_s

    def status(self) -> dict[str, Any]:
        net = self._network()
        out: dict[str, Any] = {
            "kms": {
                "url": net.kms_url,
                "fqdn": net.kms_host,
                "state": self.kms_state if net.kms_url else "off",
            }
        }
        gba = self.gba
        st = gba.state if gba is not None else None
        boot: dict[str, Any] = {"bsf": net.bsf_url, "state": "bootstrapped" if st else "none"}
        if gba is not None and st is not None:
            boot.update(btid=st.btid, expires=st.lifetime_text, gba_u=st.gba_u, runs=gba.runs)
        out["bootstrap"] = boot
        return out

    async def close(self) -> None:
        if self.kms_client is not None:
            self.kms_client.forget()
        if self.gba is not None:
            self.gba.close()
        if self.http is not None:
            await self.http.close()
        for task in list(self._closing):
            await task


class KmsReachability:
    """KmsClient calls that record whether the KMS answered (for status)."""

    def __init__(self, client: KmsClient, side: NetworkSide) -> None:
        self.client, self.side = client, side

    async def offer(
        self,
        responder: str,
        streams: list[SrtpStream | TlsStream],
        *,
        recipients: list[str] | None = None,
        group: bool = False,
        focus: bool = False,
        anonymous: bool = False,
    ) -> OfferResult:
        return await self._track(
            self.client.offer(
                responder, streams, recipients=recipients, group=group, focus=focus, anonymous=anonymous
            )
        )

    async def answer(self, transfer_init: bytes, *, diversion: Diversion | None = None) -> AnswerResult:
        return await self._track(self.client.answer(transfer_init, diversion=diversion))

    async def authorize_divert(self, transfer_init: bytes, new_recipient: str) -> None:
        await self._track(self.client.authorize_divert(transfer_init, new_recipient))

    def complete(self, pending: PendingOffer, transfer_resp: bytes) -> list[StreamKeyPair]:
        return self.client.complete(pending, transfer_resp)

    def complete_with_peer(
        self, pending: PendingOffer, transfer_resp: bytes
    ) -> tuple[list[StreamKeyPair], str, bool]:
        return self.client.complete_with_peer(pending, transfer_resp)

    async def _track(self, call: Awaitable[T]) -> T:
        try:
            result = await call
        except AgentError as exc:
            if exc.code.startswith(("gba.", "kms.")) and "unreachable" in exc.code:
                self.side.kms_state = "unreachable"
            raise
        self.side.kms_state = "reachable"
        return result
