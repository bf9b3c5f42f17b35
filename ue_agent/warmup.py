"""Warm-up: the modules the first call needs, imported right after READY=1 in the background.

Start-up stays short (systemd sees READY=1 before any of this), and the first ``mikey.offer``
or ``sdes.offer`` of a call no longer pays 65-165 ms of imports during call set-up. The
imports run in a thread of their own: the event loop keeps answering meanwhile, and a
request that needs a module being imported waits for that import (the import lock), never
imports it twice. Only what the config can use is loaded: the GBA/HTTP/KMS modules only
with a KMS URL. Measured in docs/performance.md (first offer against a warm one, idle RSS
after warm-up).

After the imports, :func:`prime` does the first call's one-time work that is not an import,
on made-up values that carry no key: the converters of a call's requests (type hints
resolved) and the requests' one-pass decoder (:mod:`ue_agent.api.onepass`), and with a KMS
URL the first use of the AES backend (about 1 ms the first time in a process), of the hash
and HMAC constructors, of the BSF XML parser, of the Digest codec, of the identity patterns
and of h11, and one HTTP exchange through the client on the daemon's loop over a socket
pair (:func:`ue_agent.drivers.http.warm_up`; nothing leaves the process); with an https
BSF or KMS URL also the TLS context (the CA store read: about 40
ms and 1.7 MB), which the first HTTP client then takes
(:func:`ue_agent.drivers.http.prepare_tls`).
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import threading
import time
from collections.abc import Callable

from ue_agent.config import Config

log = logging.getLogger(__name__)

#: any request (the operations' declarations load on first use), ``capabilities`` (what a
#: softphone asks before it registers: 2.6-7 ms the first time without it) and any media
#: session (SDES offers/answers, the protection report, the key store)
MEDIA = (
    "ue_agent.ops.registry",
    "ue_agent.media.capabilities",
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
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a missing optional dependency: the call will say so
            log.debug("warm-up: %s not loaded (%s)", name, type(exc).__name__)


#: the families whose requests a call makes: their converters are built in the warm-up
#: (about 8 KiB each), the other operations' on first use
CALL_FAMILIES = frozenset({"sdes", "mikey", "session"})


def _requests() -> None:
    from ue_agent.api.schema import compiled
    from ue_agent.ops.registry import OPERATIONS

    for op in OPERATIONS.values():
        if op.family in CALL_FAMILIES and op.empty is None:
            compiled(op)
    from ue_agent.api.core import one_pass

    one_pass()  # every request's one-pass decoder (msgspec): made once, ~10 ms


def _crypto() -> None:
    import hashlib
    import hmac

    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    zeros = bytes(32)
    hashlib.md5(zeros).digest()  # Digest (RFC 2617 with MD5)
    hmac.new(zeros, zeros, "sha256").digest()  # Ks_NAF (TS 33.220 B.2), the MIKEY PRF and MACs
    hmac.new(zeros, zeros, "sha1").digest()
    Cipher(algorithms.AES(zeros[:16]), modes.CTR(zeros[:16])).encryptor().update(zeros)  # KEMAC


def _ub() -> None:
    from ue_agent.crypto import digest
    from ue_agent.gba.ub import parse_bootstrapping_info

    parse_bootstrapping_info(
        b'<?xml version="1.0" encoding="UTF-8"?><BootstrappingInfo xmlns="uri:3gpp-gba">'
        b"<btid>warm-up@bsf.invalid</btid><lifetime>2000-01-01T00:00:00Z</lifetime></BootstrappingInfo>"
    )
    ch = digest.Challenge.parse('Digest realm="warm-up", nonce="AAAA", qop="auth-int", algorithm=MD5')
    creds = digest.Credentials(
        username="warm-up",
        realm=ch.realm,
        nonce=ch.nonce,
        uri="/",
        response="",
        algorithm=ch.algorithm,
        qop="auth-int",
        nc="00000001",
        cnonce="00",
        opaque=ch.opaque,
    )
    digest.Credentials.parse(creds.to_header())
    digest.compute_response(creds, b"", "POST", b"")


def _mikey() -> None:
    """A REQUEST_INIT_PSK built, MACed, decoded and verified with a made-up all-zero key: the
    MIKEY codec's and the PRF's paths run once before the first call's."""
    from ue_agent.kms import mikey, protect, session
    from ue_agent.secret import Secret

    psk = Secret(bytes(32), "warm-up")
    own, kms = "sip:warm-up@warm-up.invalid", "kms.warm-up.invalid"
    sent = session.build_request_init(own, [own], "warm-up@bsf.warm-up.invalid", psk, kms, validity=60)
    msg = mikey.Message.decode(sent.raw)
    rand = msg.one(mikey.RandRole).rand
    keys = protect.MessageKeys.derive(
        psk, msg.header.csb_id, session.mikey_prf.DIR_INITIAL, rand, None, msg.header.prf_func
    )
    try:
        protect.verify(sent.raw, msg, keys, own.encode() + kms.encode())
    finally:
        keys.zeroize()
        psk.zeroize()


def _ids() -> None:
    from ue_agent.kms import ids

    ids.canonical("sip:warm-up@warm-up.invalid")
    ids.canonical("tel:+1")
    ids.pattern("*@warm-up.invalid")


def _h11() -> None:
    import h11

    c = h11.Connection(h11.CLIENT)
    c.send(h11.Request(method="POST", target="/", headers=[("Host", "warm-up"), ("Content-Length", "1")]))
    c.send(h11.Data(data=b"x"))
    c.send(h11.EndOfMessage())
    c.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")
    while not isinstance(c.next_event(), h11.EndOfMessage | h11.ConnectionClosed):
        pass


def _http(loop: asyncio.AbstractEventLoop | None) -> Callable[[], None]:
    def step() -> None:
        from ue_agent.drivers.http import warm_up

        if loop is None:  # no daemon loop (a test): one of its own
            asyncio.run(warm_up())
        else:  # on the daemon's loop, where the first call's exchanges run
            asyncio.run_coroutine_threadsafe(warm_up(), loop).result(5)

    return step


def _tls(cfg: Config) -> Callable[[], None]:
    def step() -> None:
        from ue_agent.drivers.http import prepare_tls

        prepare_tls(cfg.network.ca_file)

    return step


def steps_for(
    cfg: Config, loop: asyncio.AbstractEventLoop | None = None
) -> list[tuple[str, Callable[[], None]]]:
    """The priming steps :func:`prime` runs for ``cfg``, by name (``loop``: the daemon's)."""
    out: list[tuple[str, Callable[[], None]]] = [("requests", _requests)]
    if cfg.network.kms_url:
        out += [("crypto", _crypto), ("ub", _ub), ("ids", _ids), ("mikey", _mikey), ("h11", _h11)]
        out.append(("http", _http(loop)))
        if any(url.startswith("https:") for url in (cfg.network.bsf_url or "", cfg.network.kms_url)):
            out.append(("tls", _tls(cfg)))  # the CA store, read once ahead (~40 ms, ~2 MB)
    return out


def prime(cfg: Config, loop: asyncio.AbstractEventLoop | None = None) -> list[str]:
    """Run :func:`steps_for` ``cfg``; the names of those that ran without an error."""
    done = []
    for name, step in steps_for(cfg, loop):
        try:
            step()
            done.append(name)
        except Exception as exc:  # a changed helper: the first call does it, as before
            log.debug("warm-up: %s not primed (%s: %s)", name, type(exc).__name__, exc)
    return done


def _warm_up(
    cfg: Config,
    then: Callable[[], None] | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
    freeze: bool = False,
) -> None:
    t0 = time.perf_counter()
    names = modules_for(cfg)
    _import_all(names)
    primed = prime(cfg, loop)
    gc.collect()  # the compiler's garbage, before the agent settles idle
    if freeze:
        # what is left (modules, classes, the agent as started) is out of the cyclic
        # collector's way: a full collection then walks only what came after, 0.5 ms instead
        # of about 10 (python -m benchmarks.bench_gc). The collector never frees these, so it
        # is for the process's own daemon, not one in a test's process
        gc.freeze()
    log.debug(
        "warm-up: %d modules in %.0f ms, primed %s",
        len(names),
        (time.perf_counter() - t0) * 1e3,
        ", ".join(primed) or "nothing",
    )
    if then is not None:
        if loop is None:
            then()
        else:
            loop.call_soon_threadsafe(then)


def start(
    cfg: Config,
    then: Callable[[], None] | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
    *,
    freeze: bool = False,
) -> threading.Thread:
    """Warm up for ``cfg`` (:func:`modules_for`, then :func:`prime`) in a daemon thread;
    returns it (tests join it). ``loop`` (the daemon's) runs the steps that need one, and
    ``then`` when the warm-up is done (without a loop, ``then`` runs in the thread).
    ``freeze``: then move every object left out of the cyclic collector's way (gc.freeze)."""
    t = threading.Thread(target=_warm_up, args=(cfg, then, loop, freeze), name="warm-up", daemon=True)
    t.start()
    return t
