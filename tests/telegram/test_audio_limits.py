"""Audio limits on Telegram: the size getFile reports, and a file whose header lies about its length."""

from __future__ import annotations

from typing import Any

from bots.app import App
from tests import hostile_audio
from tests.conftest import voice
from tests.telegram.conftest import StartBot, query
from tests.telegram.fake_bot_api import FakeBotApi, private_chat, user
from tests.telegram.scenario import wait_for_reply, wait_for_text

ADA = user(1, "Ada")
BEN = user(2, "Ben")


def send_document(api: FakeBotApi, sender: dict[str, Any], data: bytes, mime: str, name: str) -> None:
    """An audio document whose message carries no file_size (the field is optional)."""
    file_id, _ = api.add_file(data, f"documents/{name}")
    document = {"file_id": file_id, "file_unique_id": f"u{file_id}", "mime_type": mime, "file_name": name}
    api.deliver({"message": api.message(private_chat(sender), sender, document=document)})


async def test_a_file_is_refused_by_the_size_getfile_reports_before_download(
    start_bot: StartBot, fake_api: FakeBotApi, app: App
) -> None:
    await start_bot(chat_max_file_mb=1)
    send_document(fake_api, ADA, hostile_audio.noise(1) + bytes(1_500_000), "audio/ogg", "big.ogg")
    refused = await wait_for_text(fake_api, ADA["id"], "MB")
    assert refused.text == "That audio file is 1.4 MB; I can take files up to 1 MB."
    await fake_api.settle()
    assert len(fake_api.calls_to("getFile")) == 1 and fake_api.downloads == []
    assert query(app, "SELECT count(*) FROM turns") == [(0,)]


async def test_a_document_whose_header_lies_is_refused_and_the_next_person_answered(
    start_bot: StartBot, fake_api: FakeBotApi, app: App
) -> None:
    """Ten minutes of Opus behind a WebM header that says ten seconds; Telegram gives no duration."""
    await start_bot()
    send_document(fake_api, ADA, hostile_audio.lying_webm(600, claims=10), "audio/webm", "note.webm")
    refused = await wait_for_text(fake_api, ADA["id"], "too long")
    assert refused.text == "That voice note is too long: I can take up to 300 s."
    assert query(app, "SELECT audio_seconds <= 300.6 FROM turns WHERE from_voice") == [(1,)]

    fake_api.send_voice(private_chat(BEN), BEN, voice("capital_of_france.ogg"))
    answered = await wait_for_reply(fake_api, BEN["id"])
    assert answered.text.strip()
