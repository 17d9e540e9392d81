"""The registry of chat channel kinds (as `gateways/payments/registry.py` is for payments): a bot's
`channel` → what the platform knows of it (`gateways.channel.ChannelKind`). The configuration's
schema, the edge's webhook routes and `Channels.of` all read it; a new kind is added here."""

from __future__ import annotations

from gateways import evolution, telegram, whatsapp_cloud
from gateways.channel import ChannelKind

KINDS: dict[str, ChannelKind] = {kind.name: kind for kind in (telegram.KIND, evolution.KIND, whatsapp_cloud.KIND)}


def kind_of(name: str) -> ChannelKind:
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown channel {name!r}") from None
