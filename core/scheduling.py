"""A fair queue in front of a resource that serves one request at a time.

One llama.cpp context (or one whisper model) answers one request at a time.
When several conversations wait, they are served round-robin, so a chat that
sends ten voice notes in a row does not make every other chat wait behind all
ten.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager


class FairQueue:
    """Round-robin admission per key, one holder at a time."""

    def __init__(self) -> None:
        self._busy = False
        self._waiting: OrderedDict[Hashable, deque[asyncio.Future[None]]] = OrderedDict()

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._waiting.values())

    @asynccontextmanager
    async def slot(self, key: Hashable) -> AsyncIterator[None]:
        """Wait for this key's turn, hold the resource for the ``async with`` body."""
        if self._busy or self._waiting:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting.setdefault(key, deque()).append(future)
            try:
                await future
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():
                    # We were handed the slot just as we were cancelled: pass it on.
                    self._release()
                else:
                    self._discard(key, future)
                raise
        else:
            self._busy = True
        try:
            yield
        finally:
            self._release()

    def _discard(self, key: Hashable, future: asyncio.Future[None]) -> None:
        queue = self._waiting.get(key)
        if queue is not None and future in queue:
            queue.remove(future)
            if not queue:
                del self._waiting[key]

    def _release(self) -> None:
        while self._waiting:
            key, queue = next(iter(self._waiting.items()))
            future = queue.popleft()
            if queue:
                self._waiting.move_to_end(key)
            else:
                del self._waiting[key]
            if not future.done():
                future.set_result(None)
                return
        self._busy = False
