"""Sellers' uploads (gateways/media.py): checked by their bytes and size, kept once under their
hash, and sent by each channel by upload the first time and by the provider's id after (Telegram's
file_id, the Cloud API's media id), or inline (Evolution). Providers faked at the HTTP boundary."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
import redis

from db.database import utcnow
from gateways import media
from gateways.channel import Message
from gateways.evolution import EvolutionChannel, EvolutionGateway
from gateways.telegram import FILE_IDS, TelegramChannel, TelegramGateway
from gateways.whatsapp_cloud import CloudChannel, CloudGateway
from tests.conftest import TELEGRAM_BASE, FakeTelegramTransport, telegram_error

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 200
JPEG = b"\xff\xd8\xff\xe0" + b"\x01" * 200


@pytest.fixture
def cache() -> redis.Redis:
    import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    yield client
    client.close()


def test_an_upload_is_checked_by_its_bytes_and_kept_once_under_its_hash() -> None:
    ref = media.store(PNG)
    assert media.REF.match(ref) and ref.endswith(".png") and media.store(PNG) == ref
    name, data, mimetype = media.load(ref)
    assert data == PNG and mimetype == "image/png" and name.endswith(".png")
    with pytest.raises(media.MediaError, match="only JPEG or PNG"):
        media.store(b"GIF89a" + b"\x00" * 100)
    with pytest.raises(media.MediaError, match="at most 5 MB"):
        media.store(JPEG + b"\x00" * 5 * 1024 * 1024)
    with pytest.raises(media.MediaError, match="not in MEDIA_DIR"):
        media.load("media:" + "0" * 64 + ".jpg")


def test_telegram_uploads_a_stored_image_once_then_sends_its_file_id(cache: redis.Redis) -> None:
    ref = media.store(JPEG)
    fake = FakeTelegramTransport()
    channel = TelegramChannel(TelegramGateway(httpx.Client(transport=httpx.MockTransport(fake)), TELEGRAM_BASE),
                              "media-bot", "1:T", cache=cache)  # fmt: skip
    cache.delete(FILE_IDS.format(bot_id="media-bot"))
    message = Message("Bem-vindo!", media_url=ref, reuse_media=True)
    for n in range(2):
        for request in channel.render(f"w{n}", 7, message):
            channel.call(request, 7)
    (first_method, first), (second_method, second) = fake.calls
    assert first_method == second_method == "sendPhoto"
    assert first["photo"] == JPEG and first["caption"] == "Bem-vindo!"  # uploaded (multipart)
    assert second["photo"] == "PHOTO-FILE-ID"  # then by its file_id
    fake.queue("sendPhoto", telegram_error(400, "Bad Request: wrong file identifier"))
    for request in channel.render("w2", 7, message):
        channel.call(request, 7)
    assert fake.calls[-2][1]["photo"] == "PHOTO-FILE-ID" and fake.calls[-1][1]["photo"] == JPEG  # refused: again


def test_the_cloud_api_uploads_a_stored_image_once_per_number_and_evolution_sends_it_inline(
    cache: redis.Redis,
) -> None:
    ref = media.store(PNG)
    calls: list[tuple[str, Any]] = []

    def meta(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/media"):
            calls.append(("media", request.headers["content-type"].split(";")[0]))
            return httpx.Response(200, json={"id": "MEDIA-1"})
        calls.append(("messages", json.loads(request.content)))
        return httpx.Response(200, json={"messages": [{"id": "wamid.1"}]})

    cloud = CloudChannel(CloudGateway(httpx.Client(transport=httpx.MockTransport(meta)), "https://graph.test", "v21.0"),
                         "cloud-media-bot", "111", "token", cache=cache,
                         last_message_at=lambda chat: utcnow())  # fmt: skip
    cache.delete("grimbots:wa:media_id:cloud-media-bot")
    for n in range(2):
        for request in cloud.render(f"c{n}", 5511999990000, Message("Oi", media_url=ref)):
            cloud.call(request, 5511999990000)
    assert [c[0] for c in calls] == ["media", "messages", "messages"] and calls[0][1] == "multipart/form-data"
    assert calls[1][1]["image"] == {"caption": "Oi", "id": "MEDIA-1"} and calls[2][1]["image"]["id"] == "MEDIA-1"

    sent: list[dict[str, Any]] = []

    def evolution(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(201, json={"key": {"id": "E1"}})

    evo = EvolutionChannel(EvolutionGateway(httpx.Client(transport=httpx.MockTransport(evolution))), "evo-bot",
                           "https://evo.test", "loja", "key")  # fmt: skip
    for request in evo.render("e", 5511999990000, Message("Oi", media_url=ref)):
        evo.call(request, 5511999990000)
    assert base64.b64decode(sent[0]["media"]) == PNG and sent[0]["mimetype"] == "image/png"
