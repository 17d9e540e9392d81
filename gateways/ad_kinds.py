"""The registry of ad destinations (as `gateways/channel_kinds.py` is for chat channels): a
destination's name → what the platform knows of it (`gateways.ads.AdKind`). The event pipeline
(actors/pixel.py) sends every event to each destination a bot has keys for; a new one is added here."""

from __future__ import annotations

from gateways import meta, tiktok, utmify
from gateways.ads import AdKind

KINDS: dict[str, AdKind] = {kind.name: kind for kind in (meta.KIND, tiktok.KIND, utmify.KIND)}
