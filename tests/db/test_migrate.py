from db.database import db
from db.migrate import migrate, pending


def test_migrate_twice_changes_nothing() -> None:
    assert migrate(db.obj) == []  # the session fixture already applied everything
    assert pending(db.obj) == []
    tables = set(db.get_tables())
    assert {"bot", "gateway", "offer", "lead", "processed_update", "outbound_message", "config_state"} <= tables
