"""More ad destinations: every pixel_event row names its destination (meta, tiktok, utmify) and is
unique per (destination, event_id); clicks keep TikTok's ttclid and _ttp; bots keep their Utmify
and TikTok credentials (encrypted like the others)."""

from peewee import CharField, TextField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("pixel_event", "destination", CharField(max_length=16, default="meta")),
        migrator.drop_index("pixel_event", "pixel_event_event_id"),
        migrator.add_index("pixel_event", ("destination", "event_id"), True),
        migrator.add_column("click", "ttclid", TextField(null=True)),
        migrator.add_column("click", "ttp", TextField(null=True)),
        migrator.add_column("bot", "utmify_token", TextField(null=True)),
        migrator.add_column("bot", "tiktok_pixel_code", CharField(max_length=64, null=True)),
        migrator.add_column("bot", "tiktok_access_token", TextField(null=True)),
    )
