"""A reply being written: the model fills a ``Draft`` on its own; the chat follows it at its own pace.

The service writes each reply in a task of its own (``core.writing.ReplyWriter``), so a
chat that is slow to show text (a flood wait, a slow network) never holds the
model; ``fill`` writes the model's pieces into it, ``follow`` turns it into the events a chat shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field

from core.domain import Queued, ReplyDelta, ServiceEvent


@dataclass(eq=False)
class Draft:
    """A reply as the model writes it; the chat reads it at its own pace."""

    text: str = ""
    place: int | None = None  # while waiting for the model: how many replies come first
    finished: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def queued(self, place: int | None) -> None:
        self.place = place
        self.changed.set()

    def add(self, piece: str) -> None:
        self.text += piece
        self.changed.set()

    def finish(self) -> None:
        self.finished = True
        self.changed.set()


async def follow(draft: Draft, notice_after_s: float) -> AsyncGenerator[ServiceEvent, None]:
    """The draft as the chat should show it: its place in line, then the text as it grows.

    Pieces written while the chat was busy showing earlier ones arrive
    together, as one delta. A place in line is shown only once the wait has
    lasted ``notice_after_s``.
    """
    shown_text = ""
    shown_place: int | None = None
    notice_at = time.monotonic() + notice_after_s
    while True:
        timeout = None
        if draft.place is not None and shown_place is None and not draft.text:
            timeout = max(0.0, notice_at - time.monotonic())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(draft.changed.wait(), timeout)
        draft.changed.clear()
        if draft.text != shown_text:
            yield ReplyDelta(draft.text, draft.text[len(shown_text) :])
            shown_text = draft.text
        elif (
            draft.place is not None
            and draft.place != shown_place
            and time.monotonic() >= notice_at
            and not draft.finished
        ):
            shown_place = draft.place
            yield Queued(draft.place)
        if draft.finished and draft.text == shown_text:
            return


class Stalled(Exception):
    """A model or transcriber that produced nothing for ``ChatConfig.stall_seconds``."""


async def fill(draft: Draft, pieces: AsyncGenerator[str, None], stall_s: float) -> None:
    """The model's ``pieces`` into ``draft``; ``Stalled`` when none comes for ``stall_s``.

    A model that hangs (a stuck decoder, a server that stops sending) would otherwise hold
    this turn, and the person's every later message behind it, for as long as the process lives.
    """
    loop = asyncio.get_running_loop()
    async with aclosing(pieces):
        try:
            async with asyncio.timeout(stall_s) as deadline:
                async for piece in pieces:
                    draft.add(piece)
                    deadline.reschedule(loop.time() + stall_s)
        except TimeoutError:
            raise Stalled(f"the model wrote nothing for {stall_s:g} s") from None
