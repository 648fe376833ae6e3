"""Showing one answer in a channel: transcript, streamed reply, feedback buttons, notices."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable

import discord

from bots.discord_bot.components import feedback_view
from bots.render import EditPacer, split_message
from core.domain import Notice, NoticeKind, Queued, ReplyDelta, ReplyDone, ServiceEvent, Transcribed

log = logging.getLogger(__name__)

# Discord's limit on a message's content.
MESSAGE_LIMIT = 2000


async def reply_to(source: discord.Message, text: str, view: discord.ui.View | None = None) -> discord.Message:
    """Reply to a message without pinging anyone; still posts if the message was deleted meanwhile."""
    reference = source.to_reference(fail_if_not_exists=False)
    if view is None:
        return await source.channel.send(text, reference=reference, mention_author=False)
    return await source.channel.send(text, reference=reference, mention_author=False, view=view)


class ReplyStream:
    """Renders the service's events for one message.

    The reply grows in one message by edits, paced by ``EditPacer``; past
    Discord's 2,000 characters it continues in further messages, and the
    finished reply gets 👍 / 👎 / ✏️ under its last piece. Every Discord call
    is guarded, so a failed edit never stops the service from storing the reply.
    """

    def __init__(self, source: discord.Message, edit_interval_s: float = 1.0) -> None:
        self.source = source
        self.pacer = EditPacer(edit_interval_s)
        self.pieces: list[discord.Message] = []
        self.sent: list[discord.Message] = []

    async def play(self, events: AsyncIterator[ServiceEvent]) -> None:
        typing = asyncio.create_task(self._keep_typing(), name=f"discord-typing:{self.source.id}")
        try:
            async for event in events:
                if isinstance(event, ReplyDelta | ReplyDone | Notice):
                    typing.cancel()
                if isinstance(event, Transcribed):
                    await self._guard(self._transcript(event.text))
                elif isinstance(event, Queued):
                    await self._guard(self._show(event.text()))
                elif isinstance(event, ReplyDelta):
                    if self.pacer.due(event.text):
                        self.pacer.sent(event.text)
                        await self._guard(self._show(event.text))
                elif isinstance(event, ReplyDone):
                    await self._guard(self._show(event.text, feedback_view(event.turn_id)))
                elif isinstance(event, Notice) and event.kind is not NoticeKind.DUPLICATE:
                    await self._guard(self._notice(event.text))
        finally:
            typing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await typing

    async def _guard(self, step: Awaitable[object]) -> None:
        try:
            await step
        except discord.HTTPException:
            log.warning("Discord refused part of the answer to message %s", self.source.id, exc_info=True)

    async def _keep_typing(self) -> None:
        # Discord shows "typing" for 10 s per signal; discord.py renews it while inside.
        try:
            async with self.source.channel.typing():
                await asyncio.Event().wait()  # until the reply starts showing
        except discord.HTTPException:
            log.warning("Discord refused the typing signal in %s", self.source.channel.id, exc_info=True)

    async def _transcript(self, text: str) -> None:
        quoted = f"🎤 “{discord.utils.escape_markdown(text)}”"
        for piece in split_message(quoted, MESSAGE_LIMIT):
            self.sent.append(await reply_to(self.source, piece))

    async def _show(self, text: str, view: discord.ui.View | None = None) -> None:
        pieces = split_message(text, MESSAGE_LIMIT) or ["…"]
        for index, piece in enumerate(pieces):
            last_view = view if index == len(pieces) - 1 else None
            if index < len(self.pieces):
                await self._edit(index, piece, last_view)
            else:
                message = await reply_to(self.source, piece, last_view)
                self.pieces.append(message)
                self.sent.append(message)
        for extra in self.pieces[len(pieces) :]:
            await extra.delete()
        del self.pieces[len(pieces) :]

    async def _edit(self, index: int, text: str, view: discord.ui.View | None) -> None:
        message = self.pieces[index]
        if message.content == text and view is None:
            return
        try:
            if view is None:
                self.pieces[index] = await message.edit(content=text)
            else:
                self.pieces[index] = await message.edit(content=text, view=view)
        except discord.NotFound:  # someone deleted it: post the piece again
            self.pieces[index] = await reply_to(self.source, text, view)
            self.sent.append(self.pieces[index])

    async def _notice(self, text: str) -> None:
        if not self.pieces:
            self.sent.append(await reply_to(self.source, text))
            return
        # The reply broke off: its partial text was not stored and cannot be rated.
        await self._show(text)
