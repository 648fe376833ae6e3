"""Showing one run of ``service.replies.handle`` in a chat, the same on every platform (each brings a ``Chat``).

The transcript comes first, quoted. While the reply waits for the model, its place in line
is shown (and updated) in the message the reply then grows in, by edits at most once per
interval; past the platform's limit it continues in further messages. The finished reply
gets the rating buttons on its last piece. A notice takes the place of whatever was shown
of the reply (a broken-off reply was not stored and cannot be rated), except when only
saving a finished reply failed: then the reply stays and the notice follows it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Generic, Literal, Protocol, TypeVar

from bots.splitting import EditPacer, split_markdown, split_message
from core.domain import (
    Notice,
    NoticeKind,
    Queued,
    ReplyDelta,
    ReplyDone,
    ServiceEvent,
    Speech,
    Spoken,
    Transcribed,
)

log = logging.getLogger(__name__)

M = TypeVar("M")  # how a platform names a message it sent: an id, a message object
# What a text is, for the adapter to format: words heard, the model's Markdown, the bot's own words.
Style = Literal["transcript", "reply", "note"]
QUOTE_ROOM = 16  # characters left in each transcript piece for the adapter's quote marks


class Chat(Protocol[M]):
    """What one platform does for the answer to one message: ``limit`` characters a message;
    ``turn_id`` asks for the rating buttons; ``index`` > 0 marks a message that continues a text."""

    limit: int

    async def send(self, style: Style, text: str, turn_id: int | None, index: int) -> M: ...
    async def edit(self, message: M, style: Style, text: str, turn_id: int | None) -> M: ...
    async def add_buttons(self, message: M, turn_id: int) -> M: ...  # the text stays as it is
    async def delete(self, message: M) -> None: ...
    async def keep_typing(self) -> None: ...  # shows "typing…" until cancelled
    async def send_voice(self, speech: Speech) -> None: ...  # the reply spoken, as a voice note


class ReplyStream(Generic[M]):
    """Renders the events of one handled message; create one per message."""

    def __init__(self, chat: Chat[M], edit_interval_s: float) -> None:
        self.chat = chat
        self.pacer = EditPacer(edit_interval_s)
        self.messages: list[M] = []  # the reply's messages (the first showed the place in line, if any)
        self.texts: list[str] = []  # what each of them shows
        self.written = ""  # the reply as far as the model wrote it

    async def render(self, events: AsyncIterator[ServiceEvent]) -> ReplyDone | None:
        """Show every event; return the finished reply, or None when there was none.

        If the chat cannot be written to (the person blocked the bot, the platform is down),
        the events are still read to the end so that the service stores the reply.
        """
        done: ReplyDone | None = None
        showing = True
        typing = asyncio.create_task(self.chat.keep_typing())
        try:
            async for event in events:
                if isinstance(event, ReplyDone):
                    done = event
                if isinstance(event, ReplyDone | Notice):
                    typing.cancel()  # nothing more to wait for
                try:
                    if showing:
                        await self._show(event)
                except Exception:
                    log.exception("could not show a reply in %r; reading on so that it is stored", self.chat)
                    showing = False
                    typing.cancel()
        finally:
            typing.cancel()
            await asyncio.wait([typing])  # not `await typing`: a cancel of this caller must not be swallowed
        return done

    async def _show(self, event: ServiceEvent) -> None:
        if isinstance(event, Transcribed):
            for index, piece in enumerate(split_message(event.text, self.chat.limit - QUOTE_ROOM)):
                await self.chat.send("transcript", piece, None, index)
        elif isinstance(event, Queued):
            await self._update("note", event.text())
        elif isinstance(event, ReplyDelta):
            self.written = event.text
            if self.pacer.due(event.text) and await self._update("reply", event.text):
                self.pacer.sent(event.text)
        elif isinstance(event, ReplyDone):
            await self._update("reply", event.text, event.turn_id)
        elif isinstance(event, Spoken):
            await self.chat.send_voice(event.speech)
        elif event.kind is NoticeKind.SPEECH_FAILED:  # the reply is whole above: the note goes below it
            await self.chat.send("note", event.text, None, 0)
        elif event.kind is NoticeKind.STORE_FAILED and self.written:
            # The answer is complete, only saving it failed: it stays, whole, with the notice below.
            await self._update("reply", self.written)
            await self.chat.send("note", event.text, None, 0)
        elif event.kind is not NoticeKind.DUPLICATE:
            await self._update("note", event.text)

    async def _update(self, style: Style, text: str, turn_id: int | None = None) -> bool:
        """Bring the reply's messages up to ``text``; return whether there was anything to show."""
        split = split_markdown if style == "reply" else split_message  # code blocks stay whole in replies
        pieces = split(text, self.chat.limit)
        if not pieces:
            return False
        for index, piece in enumerate(pieces):
            buttons = turn_id if index == len(pieces) - 1 else None
            if index == len(self.messages):
                self.messages.append(await self.chat.send(style, piece, buttons, index))
                self.texts.append(piece)
            elif self.texts[index] != piece:
                self.messages[index] = await self.chat.edit(self.messages[index], style, piece, buttons)
                self.texts[index] = piece
            elif buttons is not None:  # the text is there already: the screen need not redraw it
                self.messages[index] = await self.chat.add_buttons(self.messages[index], buttons)
        for extra in self.messages[len(pieces) :]:  # the text got shorter: a notice replaced a long reply
            await self.chat.delete(extra)
        del self.messages[len(pieces) :], self.texts[len(pieces) :]
        return True
