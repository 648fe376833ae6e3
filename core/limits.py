"""Per-person limits against abuse: messages and minutes of voice per hour.

A sliding hour, kept in memory per person (a restart starts everyone afresh,
which errs on the person's side). The clock is a parameter so that tests can
move time by hand. Admins are exempt.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from core.domain import Person

WINDOW_S = 3600.0

Clock = Callable[[], float]


@dataclass(frozen=True)
class RateLimits:
    """``IRIS_RATE_LIMIT_*``: per person and sliding hour; ``0`` means no limit."""

    messages_per_hour: int = 0
    voice_minutes_per_hour: float = 0.0


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
        span = f"{minutes} minute" + ("" if minutes == 1 else "s")
        return f"{self.reason} Please come back in {span} (at {at} UTC)."


class RateLimiter:
    """Counts each person's messages and voice seconds over the last hour."""

    def __init__(
        self, limits: RateLimits, exempt: frozenset[str] = frozenset(), clock: Clock = time.time
    ) -> None:
        self.limits = limits
        self.exempt = exempt  # user ids (the admins)
        self.clock = clock
        self._messages: dict[tuple[str, str], deque[float]] = {}
        self._voice: dict[tuple[str, str], deque[tuple[float, float]]] = {}
        self._lock = threading.Lock()

    def _exempt(self, person: Person) -> bool:
        return person.user_id in self.exempt

    def check_message(self, person: Person) -> Refused | None:
        """Refuse a new message when the person already sent the hour's share."""
        limit = self.limits.messages_per_hour
        if limit <= 0 or self._exempt(person):
            return None
        now = self.clock()
        with self._lock:
            sent = self._recent(self._messages.get(_key(person)), now)
            if len(sent) < limit:
                return None
            retry = sent[len(sent) - limit] + WINDOW_S
        sent_text = f"{limit} message" + ("" if limit == 1 else "s")
        return Refused(f"You have sent me {sent_text} in the last hour, my limit per person.", retry)

    def check_voice(self, person: Person, seconds: float) -> Refused | None:
        """Refuse ``seconds`` more of voice when it would go over the hour's minutes."""
        limit_s = self.limits.voice_minutes_per_hour * 60
        if limit_s <= 0 or self._exempt(person):
            return None
        now = self.clock()
        with self._lock:
            used = [(at, s) for at, s in self._voice.get(_key(person), ()) if at > now - WINDOW_S]
            total = sum(s for _, s in used)
            # With nothing used this hour one note always passes, even one longer than the hour's minutes.
            if not used or total + seconds <= limit_s:
                return None
            retry = now + WINDOW_S
            for at, spent in used:  # the moment enough earlier voice has left the hour
                total -= spent
                if total + min(seconds, limit_s) <= limit_s:
                    retry = at + WINDOW_S
                    break
        minutes = self.limits.voice_minutes_per_hour
        return Refused(
            f"That would take you over {minutes:g} minutes of voice in an hour, my limit per person.", retry
        )

    def note_message(self, person: Person) -> None:
        if self.limits.messages_per_hour <= 0 or self._exempt(person):
            return
        now = self.clock()
        with self._lock:
            sent = self._messages.setdefault(_key(person), deque())
            self._recent(sent, now)
            sent.append(now)

    def note_voice(self, person: Person, seconds: float) -> None:
        if self.limits.voice_minutes_per_hour <= 0 or self._exempt(person):
            return
        now = self.clock()
        with self._lock:
            used = self._voice.setdefault(_key(person), deque())
            while used and used[0][0] <= now - WINDOW_S:
                used.popleft()
            used.append((now, seconds))

    @staticmethod
    def _recent(sent: deque[float] | None, now: float) -> deque[float]:
        if sent is None:
            return deque()
        while sent and sent[0] <= now - WINDOW_S:
            sent.popleft()
        return sent


def _key(person: Person) -> tuple[str, str]:
    return person.platform, person.user_id
