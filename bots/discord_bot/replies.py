"""Discord's side of ``bots.delivery``: replies to one message, posted, edited and deleted in its channel."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass, field

import discord

from bots.delivery import Style
from bots.discord_bot.components import feedback_view
from bots.discord_bot.voice import send_voice_message
from core.domain import Speech

log = logging.getLogger(__name__)

MESSAGE_LIMIT = 2000  # Discord's limit on a message's content


async def reply_to(source: discord.Message, text: str, view: discord.ui.View | None = None) -> discord.Message:
    """Reply to a message without pinging anyone; still posts if the message was deleted meanwhile."""
    reference = source.to_reference(fail_if_not_exists=False)
    if view is None:
        return await source.channel.send(text, reference=reference, mention_author=False)
    return await source.channel.send(text, reference=reference, mention_author=False, view=view)


@dataclass
class DiscordChat:
    """Replies to one Discord message; 👍 / 👎 / ✏️ are a view under a message."""

    source: discord.Message
    sent: list[discord.Message] = field(default_factory=list, repr=False)  # every one posted, for reply chains
    limit: int = MESSAGE_LIMIT

    async def send(self, style: Style, text: str, turn_id: int | None, index: int) -> discord.Message:
        message = await reply_to(self.source, _content(style, text), _view(turn_id))
        self.sent.append(message)
        return message

    async def edit(
        self, message: discord.Message, style: Style, text: str, turn_id: int | None
    ) -> discord.Message:
        try:
            return await message.edit(content=_content(style, text), view=_view(turn_id))
        except discord.NotFound:  # someone deleted it: post the piece again
            return await self.send(style, text, turn_id, 0)

    async def add_buttons(self, message: discord.Message, turn_id: int) -> discord.Message:
        return await self.edit(message, "reply", message.content, turn_id)  # buttons go under replies

    async def delete(self, message: discord.Message) -> None:
        with contextlib.suppress(discord.NotFound):
            await message.delete()

    async def keep_typing(self) -> None:
        # Discord shows "typing" for 10 s per signal; discord.py renews it while inside.
        try:
            async with self.source.channel.typing():
                await asyncio.Event().wait()
        except discord.HTTPException:
            log.warning("Discord refused the typing signal in %s", self.source.channel.id, exc_info=True)

    async def send_voice(self, speech: Speech) -> None:
        self.sent.append(await send_voice_message(self.source, speech))


# A masked link, [label](target), whose target is not http(s): tg://, javascript:, file:, a Discord
# deep link... The model's text may carry one planted by a prompt; only web links stay links.
_OTHER_LINK = re.compile(
    r"\[([^\]\n]*)\]\(\s*(?:<(?!https?://)[^>\n]*>|(?![<\s]|https?://)[^)\s]+)(?:\s+\"[^\"\n]*\")?\s*\)",
    re.IGNORECASE,
)
_CODE = re.compile(r"(```.*?(?:```|$)|`[^`\n]*`)", re.DOTALL)


def web_links_only(text: str) -> str:
    """The model's Markdown with every masked link that is not http(s) reduced to its label, as plain text.

    Code is left as written: Discord shows it verbatim, links and all.
    """
    parts = _CODE.split(text)
    # Only the label stays (as on Telegram): never longer than what the model wrote, so it still fits.
    parts[::2] = [_OTHER_LINK.sub(r"\1", part) for part in parts[::2]]
    return "".join(parts)


def _content(style: Style, text: str) -> str:
    return f"🎤 “{discord.utils.escape_markdown(text)}”" if style == "transcript" else web_links_only(text)


def _view(turn_id: int | None) -> discord.ui.View | None:
    return None if turn_id is None else feedback_view(turn_id)
