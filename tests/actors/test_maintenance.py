import datetime as dt

from actors import maintenance
from db.database import utcnow
from db.models import Click, OutboundMessage, PaymentNotification, PixelEvent, ProcessedUpdate
from tests.conftest import drain


def test_prune_deletes_only_records_whose_job_is_done() -> None:
    now = utcnow()
    old, recent = now - dt.timedelta(days=40), now - dt.timedelta(hours=1)
    for i, at in enumerate((old, old, recent)):
        ProcessedUpdate.create(bot_id="demo", update_id=i, kind="start", received_at=at)
    for key, at, state in (("a", old, "sent"), ("b", old, "sending"), ("c", recent, "sent")):
        OutboundMessage.create(key=key, bot_id="demo", chat_id=1, method="sendMessage", state=state, created_at=at)
    events = (("e1", old, "sent"), ("e2", old, "failed"), ("e3", old, "pending"), ("e4", recent, "sent"))
    for event_id, at, state in events:
        PixelEvent.create(event_id=event_id, event_name="PageView", bot_id="demo", pixel_id="1", event_time=at,
                          payload={}, state=state, next_attempt_at=at, created_at=at)  # fmt: skip
    for token, at, lead in (("k1", old, None), ("k2", old, 7), ("k3", recent, None)):
        Click.create(token=token, bot_id="demo", lead_id=lead, utm={}, clicked_at=at)
    for external_id, at in (("n1", now - dt.timedelta(days=100)), ("n2", recent)):
        PaymentNotification.create(gateway_id="main", external_id=external_id, outcome="applied", received_at=at)
    maintenance.prune.send()
    drain("maintenance")
    assert [u.update_id for u in ProcessedUpdate.select()] == [2]
    assert sorted(c.token for c in Click.select()) == ["k2", "k3"]  # a lead's click is its touch: kept
    assert [n.external_id for n in PaymentNotification.select()] == ["n2"]
    assert sorted(m.key for m in OutboundMessage.select()) == ["b", "c"]  # one still in flight is kept
    assert sorted(e.event_id for e in PixelEvent.select()) == ["e3", "e4"]  # pending: the sweep's business


def test_prune_rows_works_in_batches() -> None:
    now = utcnow()
    rows = [{"bot_id": "demo", "update_id": i, "kind": "start", "received_at": now - dt.timedelta(days=5)}
            for i in range(maintenance.BATCH + 7)]  # fmt: skip
    for start in range(0, len(rows), 500):
        ProcessedUpdate.insert_many(rows[start : start + 500]).execute()
    assert maintenance.prune_processed_updates(now - dt.timedelta(days=3)) == maintenance.BATCH + 7
    assert ProcessedUpdate.select().count() == 0
