"""``ue-agent card info``: the identities on the card the config names."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ue_agent.card.results import CardIdentities
    from ue_agent.card.session import Card


def render(ids: dict, transport: str) -> str:
    lines = [
        f"transport      {transport}",
        f"application    {ids['application']}" + (f"  (AID {ids['aid']})" if ids.get("aid") else ""),
        f"ICCID          {ids.get('iccid') or '-'}",
        f"IMSI           {ids.get('imsi') or '-'}",
        f"IMPI           {ids['impi']}",
        f"home domain    {ids['domain']}",
    ]
    for i, impu in enumerate(ids["impus"]):
        lines.append(f"{'IMPU' if i == 0 else '':15}{impu}")
    lines.append(f"P-CSCF         {', '.join(ids['pcscf']) or '-'}")
    services = ", ".join(str(s) for s in ids.get("isim_services", [])) or "-"
    lines.append(f"ISIM services  {services}")
    lines.append(f"GBA            {'GBA_U (on the card)' if ids.get('gba_u') else 'GBA_ME'}")
    return "\n".join(lines)


#: path failures after which the identities are read once more from the start (the AT driver
#: has resynchronised the port by then; every APDU of the read changes nothing on the card)
_READ_AGAIN = ("modem.timeout", "modem.garbage", "modem.desync", "card.reset")


def _identities(card: Card) -> CardIdentities:
    from ue_agent.errors import CardError

    try:
        return card.identities()
    except CardError as exc:
        if exc.code not in _READ_AGAIN:
            raise
        card.refresh()  # closes the channel it opened; the next read starts from EF_DIR
        return card.identities()


def main(args: argparse.Namespace) -> int:
    from ue_agent.card.pin import PinGate
    from ue_agent.card.session import Card
    from ue_agent.config import load_config
    from ue_agent.pin_unlock import unlock
    from ue_agent.transports import open_transport

    cfg = load_config(args.config)
    transport = open_transport(cfg.card)
    card = Card(transport)
    try:
        unlock(card, PinGate(cfg.card.pin_credential, cfg.card.pin_allow_last_try))
        ids = _identities(card).to_dict()
    finally:
        card.close()  # closes the ISIM's logical channel, then the transport
    if args.json:
        print(json.dumps({"transport": transport.name, **ids}, indent=2))
    else:
        print(render(ids, transport.name))
    return 0
