"""WhatsApp channels: each bot names its channel (telegram, evolution, whatsapp_cloud) and keeps
that channel's keys encrypted in `channel_settings`; a lead keeps the numbered choices it was last
shown (WhatsApp answers "1", "2"...) and the Click-to-WhatsApp ad click id it came with."""

from peewee import CharField, TextField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("bot", "channel", CharField(max_length=16, default="telegram")),
        migrator.add_column("bot", "channel_settings", TextField(null=True)),
        migrator.add_column("lead", "menu", TextField(null=True)),
        migrator.add_column("lead", "ctwa_clid", TextField(null=True)),
    )
