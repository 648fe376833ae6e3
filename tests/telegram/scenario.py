"""What the scenario tests wait for and look at: the chat as the person sees it."""

from __future__ import annotations

from tests.telegram.fake_bot_api import FakeBotApi, Sent


def rated_replies(api: FakeBotApi, chat_id: int) -> list[Sent]:
    """The bot's finished replies in a chat: the messages that carry a 👍 button."""
    return [sent for sent in api.chat(chat_id) if any(data.endswith(":up") for _, data in sent.buttons)]


async def wait_for_reply(api: FakeBotApi, chat_id: int, count: int = 1, timeout: float = 120.0) -> Sent:
    """Wait until the chat shows ``count`` finished replies; return the latest."""
    await api.wait_for(lambda: len(rated_replies(api, chat_id)) >= count, timeout)
    return rated_replies(api, chat_id)[-1]


async def wait_for_text(api: FakeBotApi, chat_id: int, fragment: str, timeout: float = 60.0) -> Sent:
    """Wait until one of the bot's messages in the chat contains ``fragment``; return it."""

    def find() -> Sent | None:
        return next((sent for sent in api.chat(chat_id) if fragment in sent.text), None)

    await api.wait_for(find, timeout)
    found = find()
    assert found is not None
    return found


def turn_of(sent: Sent) -> int:
    """The reply's turn id, as its 👍 button carries it."""
    data = next(data for _, data in sent.buttons if data.endswith(":up"))
    return int(data.split(":")[1])


def button(sent: Sent, label_start: str) -> str:
    """The callback data of the button whose label starts with ``label_start``."""
    return next(data for label, data in sent.buttons if label.startswith(label_start))
