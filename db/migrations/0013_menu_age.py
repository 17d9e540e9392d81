"""When a WhatsApp lead's numbered menu was sent (`lead.menu_at`): a menu older than
WHATSAPP_MENU_TTL is not answered; the lead gets the welcome again.

Frozen column definitions as they were when this migration was written (see 0001)."""

from peewee import DateTimeField


def up(migrator, db):
    migrator.migrate(migrator.add_column("lead", "menu_at", DateTimeField(null=True)))
