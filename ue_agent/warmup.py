"""Warm-up: the modules the first call needs, imported right after READY=1 in the background.

Start-up stays short (systemd sees READY=1 before any of this), and the first ``mikey.offer``
or ``sdes.offer`` of a call no longer pays 65-165 ms of imports during call set-up. The
imports run in a thread of their own: the event loop keeps answering meanwhile, and a
request that needs a module being imported waits for that import (the import lock), never
imports it twice. Only what the config can use is loaded: the GBA/HTTP/KMS modules only
with a KMS URL. Measured in docs/performance.md (first offer against a warm one, idle RSS
after warm-up).
"""

from __future__ import annotations

import gc
import importlib
import logging
import threading
import time

from ue_agent.config import Config

log = logging.getLogger(__name__)

#: any request (the operations' declarations load on first use) and any media session
#: (SDES offers/answers, the protection report, the key store)
MEDIA = (
    "ue_agent.ops.registry",
    "ue_agent.media.keys",
    "ue_agent.media.protection",
    "ue_agent.media.sdes",
    "ue_agent.media.store",
)
#: a KMS call: GBA over HTTP (h11, defusedxml), the Ua client, the MIKEY-TICKET codec
KMS = (
    "ue_agent.drivers.http",
    "ue_agent.gba.client",
    "ue_agent.gba.naf_client",
    "ue_agent.kms.client",
    "ue_agent.kms.sdp",
    "ue_agent.kms.streams",
)


def modules_for(cfg: Config) -> list[str]:
    """What the first call of each kind this config allows will import."""
    out = list(MEDIA)
    if cfg.network.kms_url:
        out += KMS
    return out


def _import_all(names: list[str]) -> None:
    t0 = time.perf_counter()
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a missing optional dependency: the call will say so
            log.debug("warm-up: %s not loaded (%s)", name, type(exc).__name__)
    gc.collect()  # the compiler's garbage, before the agent settles idle
    log.debug("warm-up: %d modules in %.0f ms", len(names), (time.perf_counter() - t0) * 1e3)


def start(cfg: Config) -> threading.Thread:
    """Import :func:`modules_for` ``cfg`` in a daemon thread; returns it (tests join it)."""
    t = threading.Thread(target=_import_all, args=(modules_for(cfg),), name="warm-up", daemon=True)
    t.start()
    return t
