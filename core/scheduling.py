"""A fair queue in front of a resource that serves a few requests at a time.

The model writes up to ``parallel`` replies together, and one whisper model
transcribes one note at a time. When more conversations wait than there are
places, they are served round-robin, so a chat that sends ten voice notes in a
row does not make every other chat wait behind all ten. Each waiter can be told
its place in line as it moves.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass(eq=False)
class _Waiter:
    future: asyncio.Future[None]
    on_place: Callable[[int], None] | None = field(default=None)


class FairQueue:
    """Round-robin admission per key, ``capacity`` holders at a time."""

    def __init__(self, capacity: int = 1) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._holders = 0
        self._waiting: OrderedDict[Hashable, deque[_Waiter]] = OrderedDict()

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._waiting.values())

    @asynccontextmanager
    async def slot(self, key: Hashable, on_place: Callable[[int], None] | None = None) -> AsyncIterator[None]:
        """Wait for this key's turn, hold a place for the ``async with`` body.

        While waiting, ``on_place(n)`` is called with the number of waiting
        requests that will be served first, now and again each time the line moves.
        """
        if self._holders >= self.capacity or self._waiting:
            waiter = _Waiter(asyncio.get_running_loop().create_future(), on_place)
            self._waiting.setdefault(key, deque()).append(waiter)
            self._tell_places()
            try:
                await waiter.future
            except asyncio.CancelledError:
                if waiter.future.done() and not waiter.future.cancelled():
                    # We were handed a place just as we were cancelled: pass it on.
                    self._release()
                else:
                    self._discard(key, waiter)
                raise
        else:
            self._holders += 1
        try:
            yield
        finally:
            self._release()

    def order(self) -> list[_Waiter]:
        """The waiters in the order they will be served: one per key in turn."""
        queues = [list(queue) for queue in self._waiting.values()]
        served: list[_Waiter] = []
        for depth in range(max((len(q) for q in queues), default=0)):
            served.extend(q[depth] for q in queues if depth < len(q))
        return served

    def _tell_places(self) -> None:
        for place, waiter in enumerate(self.order()):
            if waiter.on_place is not None:
                waiter.on_place(place)

    def _discard(self, key: Hashable, waiter: _Waiter) -> None:
        queue = self._waiting.get(key)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            if not queue:
                del self._waiting[key]
        self._tell_places()

    def _release(self) -> None:
        while self._waiting:
            key, queue = next(iter(self._waiting.items()))
            waiter = queue.popleft()
            if queue:
                self._waiting.move_to_end(key)
            else:
                del self._waiting[key]
            if not waiter.future.done():
                waiter.future.set_result(None)
                self._tell_places()
                return
        self._holders -= 1
        self._tell_places()
