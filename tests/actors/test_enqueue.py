from typing import Any

import pytest
from dramatiq import Message

from actors import funnel
from actors.broker import broker
from actors.enqueue import enqueue, unit_of_work
from catalog.schema import BotConfig
from db.models import Lead


def funnel_queue() -> list[Message[Any]]:
    return [Message.decode(data) for data in broker.client.hvals("dramatiq:funnel.msgs")]


def test_messages_go_out_after_commit(demo_bot: BotConfig) -> None:
    with unit_of_work():
        Lead.create(bot="demo", person_id=1, chat_id=1)
        enqueue(funnel.welcome.message("demo", 1, 1))
        assert funnel_queue() == []  # not before the commit
    assert [m.args for m in funnel_queue()] == [("demo", 1, 1)]


def test_messages_are_dropped_on_rollback(demo_bot: BotConfig) -> None:
    with pytest.raises(RuntimeError), unit_of_work():
        Lead.create(bot="demo", person_id=1, chat_id=1)
        enqueue(funnel.welcome.message("demo", 1, 1))
        raise RuntimeError("boom")
    assert funnel_queue() == [] and Lead.select().count() == 0


def test_nested_units_flush_with_the_outermost(demo_bot: BotConfig) -> None:
    with unit_of_work():
        with unit_of_work():
            enqueue(funnel.welcome.message("demo", 1, 1))
        assert funnel_queue() == []
    assert len(funnel_queue()) == 1


def test_outside_a_unit_enqueue_is_immediate() -> None:
    enqueue(funnel.welcome.message("demo", 1, 2))
    assert len(funnel_queue()) == 1
