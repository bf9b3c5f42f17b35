"""Warm-up after READY=1: the first call's modules load in the background (ue_agent.warmup)."""

from __future__ import annotations

import importlib.util
import time

from ue_agent import warmup
from ue_agent.config import parse_config


def test_every_warm_up_module_exists() -> None:
    # a renamed module would make the warm-up silently useless
    for name in (*warmup.MEDIA, *warmup.KMS):
        assert importlib.util.find_spec(name) is not None, name


def test_only_what_the_config_can_use() -> None:
    lab = {"card": {"transport": "lab", "subscriber": "x"}}
    assert warmup.modules_for(parse_config(lab)) == list(warmup.MEDIA)
    kms = parse_config(
        {**lab, "network": {"kms_url": "http://127.0.0.1:1/", "bsf_url": "http://127.0.0.1:2/"}}
    )
    assert warmup.modules_for(kms) == [*warmup.MEDIA, *warmup.KMS]


def test_every_priming_step_runs() -> None:
    # a helper that changed shape would make its step silently useless (prime logs it at debug)
    lab = {"card": {"transport": "lab", "subscriber": "x"}}
    assert warmup.prime(parse_config(lab)) == ["requests"]
    kms = parse_config(
        {**lab, "network": {"kms_url": "http://127.0.0.1:1/", "bsf_url": "http://127.0.0.1:2/"}}
    )
    assert warmup.prime(kms) == [name for name, _ in warmup.steps_for(kms)]
    names = [name for name, _ in warmup.steps_for(kms)]
    assert names == ["requests", "crypto", "ub", "ids", "mikey", "h11", "http"]


def test_daemon_warms_up_after_ready(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(network={"kms_url": "http://127.0.0.1:9/", "bsf_url": "http://127.0.0.1:9/"})
    with d.client() as c:  # READY=1 came first; the agent answers while it warms up
        assert c.request("status")["card"]["present"] is True
    for _ in range(400):
        text = d.log_text()
        if "warm-up:" in text and "modules in" in text:
            break
        time.sleep(0.05)
    text = d.log_text()
    assert f"warm-up: {len(warmup.MEDIA) + len(warmup.KMS)} modules in" in text
    assert text.index("ready: listening") < text.index("warm-up:")
    assert "not loaded" not in text
    assert "not primed" not in text
    assert "primed requests, crypto, ub, ids, mikey, h11, http" in text


def test_an_https_network_gets_its_tls_context_made_ahead() -> None:
    """With an https BSF or KMS the warm-up reads the CA store (about 40 ms) once, and the
    first HTTP client takes that context; a client made later (a reload) reads it again."""
    from ue_agent.drivers import http

    lab = {"card": {"transport": "lab", "subscriber": "x"}}
    https = parse_config(
        {**lab, "network": {"kms_url": "https://127.0.0.1:1/", "bsf_url": "https://127.0.0.1:2/"}}
    )
    assert [name for name, _ in warmup.steps_for(https)][-1] == "tls"
    http._prepared.clear()
    try:
        assert warmup.prime(https) == [name for name, _ in warmup.steps_for(https)]
        made = http._prepared[None]
        first, second = http.HttpClient(), http.HttpClient()
        assert first._tls() is made
        assert second._tls() is not made  # made anew, from the CA files as they are now
        assert http.prepare_tls(None) is False  # taken: not made again, nothing kept
        assert http._prepared[None] is None
    finally:
        http._prepared.clear()
