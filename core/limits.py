"""Per-person limits against abuse: messages, minutes of voice, presses and corrections per hour.

A sliding hour per person, counted in a ``LimitLedger``: the composition root gives
the service one in the database, so that every process on one database counts the
same hour and a restart forgets nothing; without one (tests, the console) a ledger
in this process's memory counts. The clock is a parameter so that tests can move
time by hand. Admins are exempt.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from core.domain import Person
from core.i18n import _, ngettext
from core.ports import LimitEvent, LimitLedger

log = logging.getLogger(__name__)

WINDOW_S = 3600.0
# A stored message with no reply and no failure reason after this long is taken as lost with a
# stopped process, not as waiting: it must not hold a person's place in the queue for ever.
UNANSWERED_WINDOW_S = 600.0

Clock = Callable[[], float]
T = TypeVar("T")


@dataclass(frozen=True)
class RateLimits:
    """``IRIS_RATE_LIMIT_*``: per person and sliding hour; ``0`` means no limit."""

    messages_per_hour: int = 0
    voice_minutes_per_hour: float = 0.0
    # 👍/👎 presses (a changed or repeated one too): each one writes and may run the A/B rule.
    presses_per_hour: int = 120
    corrections_per_hour: int = 20  # better answers sent with ✏️; each one waits for an admin's review
    again_per_hour: int = 10  # 🔁 second answers: each one takes a place at the model (core.choices)


@dataclass(frozen=True)
class Refused:
    """Why a person must wait, and until when (seconds since the epoch)."""

    reason: str
    retry_at: float

    def text(self, now: float) -> str:
        """A message that says what the limit is and when to come back."""
        wait = max(self.retry_at - now, 0.0)
        minutes = max(1, int(-(-wait // 60)))  # rounded up: never "come back in 0 minutes"
        at = datetime.fromtimestamp(self.retry_at, UTC).strftime("%H:%M")
        come_back = ngettext(
            "Please come back in {minutes} minute (at {at} UTC).",
            "Please come back in {minutes} minutes (at {at} UTC).",
            minutes,
        )
        return f"{self.reason} {come_back.format(minutes=minutes, at=at)}"


class MemoryLedger:
    """A ``LimitLedger`` in this process's memory: one process's count, gone on restart."""

    def __init__(self) -> None:
        self._events: dict[tuple[str, str, str], deque[LimitEvent]] = {}  # (kind, platform, user id)
        self._lock = threading.Lock()

    def recent(self, person: Person, kind: str, since: float) -> list[LimitEvent]:
        with self._lock:
            return self._recent(person, kind, since)

    def note(self, person: Person, kind: str, event: LimitEvent, since: float) -> None:
        self.take(person, kind, event, since, lambda _: None)  # counted whatever came before

    def take(
        self,
        person: Person,
        kind: str,
        event: LimitEvent,
        since: float,
        judge: Callable[[list[LimitEvent]], T | None],
    ) -> T | None:
        with self._lock:
            verdict = judge(self._recent(person, kind, since))
            if verdict is None:
                self._events.setdefault((kind, person.platform, person.user_id), deque()).append(event)
            return verdict

    def unanswered(self, person: Person, within_s: float) -> int:
        return 0  # nothing is stored here: the service counts its own messages in progress

    def _recent(self, person: Person, kind: str, since: float) -> list[LimitEvent]:
        key = (kind, person.platform, person.user_id)
        events = self._events.get(key)
        if events is None:
            return []
        while events and events[0].at <= since:
            events.popleft()
        if not events:
            del self._events[key]  # a person who went quiet costs no memory
        return list(events)


class RateLimiter:
    """Counts each person's messages, voice seconds, presses and corrections over the last hour.

    Its methods block on the ledger (a database query): the service calls them from threads.
    A ledger that fails lets the person through (logged): the store they would write to
    is most likely failing too, and says so.
    """

    def __init__(
        self,
        limits: RateLimits,
        exempt: frozenset[str] = frozenset(),
        clock: Clock = time.time,
        ledger: LimitLedger | None = None,
    ) -> None:
        self.limits = limits
        self.exempt = exempt  # user ids (the admins)
        self.clock = clock
        self.ledger: LimitLedger = ledger or MemoryLedger()

    def _exempt(self, person: Person) -> bool:
        return person.user_id in self.exempt

    def check_message(self, person: Person) -> Refused | None:
        """Refuse a new message when the person already sent the hour's share."""
        return self._check_count("message", person, self.limits.messages_per_hour)

    def take_press(self, person: Person) -> Refused | None:
        """Refuse a 👍/👎 press past the hour's share; otherwise count it, as one step across processes."""
        return self._take_count("press", person, self.limits.presses_per_hour)

    def take_correction(self, person: Person) -> Refused | None:
        """Refuse a better answer past the hour's share; otherwise count it, as one step across processes."""
        return self._take_count("correction", person, self.limits.corrections_per_hour)

    def take_again(self, person: Person) -> Refused | None:
        """Refuse a 🔁 second answer past the hour's share; otherwise count it, as one step."""
        return self._take_count("again", person, self.limits.again_per_hour)

    def _check_count(self, kind: str, person: Person, limit: int) -> Refused | None:
        if limit <= 0 or self._exempt(person):
            return None
        now = self.clock()
        events: list[LimitEvent] = self._safely(lambda: self.ledger.recent(person, kind, now - WINDOW_S), [])
        return _count_refusal(kind, events, limit)

    def _take_count(self, kind: str, person: Person, limit: int) -> Refused | None:
        if limit <= 0 or self._exempt(person):
            return None
        now = self.clock()

        def judge(events: list[LimitEvent]) -> Refused | None:
            return _count_refusal(kind, events, limit)

        since = now - WINDOW_S
        return self._safely(lambda: self.ledger.take(person, kind, LimitEvent(now), since, judge), None)

    def take_voice(self, person: Person, seconds: float) -> Refused | None:
        """Refuse ``seconds`` more of voice past the hour's minutes; otherwise count them, as one step."""
        if self.limits.voice_minutes_per_hour <= 0 or self._exempt(person):
            return None
        now = self.clock()
        return self._safely(
            lambda: self.ledger.take(
                person,
                "voice",
                LimitEvent(now, seconds),
                now - WINDOW_S,
                lambda used: self._voice_refusal(used, seconds, now),
            ),
            None,
        )

    def _voice_refusal(self, used: list[LimitEvent], seconds: float, now: float) -> Refused | None:
        limit_s = self.limits.voice_minutes_per_hour * 60
        total = sum(event.amount for event in used)
        # With nothing used this hour one note always passes, even one longer than the hour's minutes.
        if not used or total + seconds <= limit_s:
            return None
        retry = now + WINDOW_S
        for event in used:  # the moment enough earlier voice has left the hour
            total -= event.amount
            if total + min(seconds, limit_s) <= limit_s:
                retry = event.at + WINDOW_S
                break
        minutes = self.limits.voice_minutes_per_hour
        return Refused(
            _("That would take you over {minutes} minutes of voice in an hour, my limit per person.").format(
                minutes=f"{minutes:g}"
            ),
            retry,
        )

    def note_message(self, person: Person) -> None:
        self._note("message", person, self.limits.messages_per_hour, 1.0)

    def _note(self, kind: str, person: Person, limit: float, amount: float) -> None:
        if limit <= 0 or self._exempt(person):
            return
        now = self.clock()
        self._safely(lambda: self.ledger.note(person, kind, LimitEvent(now, amount), now - WINDOW_S), None)

    def unanswered(self, person: Person) -> int:
        """How many of the person's recent messages every process is still answering (0 in memory)."""
        return self._safely(lambda: self.ledger.unanswered(person, UNANSWERED_WINDOW_S), 0)

    @staticmethod
    def _safely(read: Callable[[], T], otherwise: T) -> T:
        try:
            return read()
        except Exception:
            log.exception("could not count against the per-person limits; letting this one through")
            return otherwise


def _count_refusal(kind: str, events: list[LimitEvent], limit: int) -> Refused | None:
    if len(events) < limit:
        return None
    retry = events[len(events) - limit].at + WINDOW_S
    if kind == "press":
        said = ngettext(
            "You have pressed 👍/👎 {count} time in the last hour, my limit per person.",
            "You have pressed 👍/👎 {count} times in the last hour, my limit per person.",
            limit,
        )
    elif kind == "again":
        said = ngettext(
            "You have asked for {count} other answer in the last hour, my limit per person.",
            "You have asked for {count} other answers in the last hour, my limit per person.",
            limit,
        )
    elif kind == "correction":
        said = ngettext(
            "You have sent me {count} better answer in the last hour, my limit per person.",
            "You have sent me {count} better answers in the last hour, my limit per person.",
            limit,
        )
    else:
        said = ngettext(
            "You have sent me {count} message in the last hour, my limit per person.",
            "You have sent me {count} messages in the last hour, my limit per person.",
            limit,
        )
    return Refused(said.format(count=limit), retry)
