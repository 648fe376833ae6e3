"""The per-person limits on messages and voice minutes an hour, with a clock the test moves by hand."""

from __future__ import annotations

from dataclasses import replace

from bots.app import App
from core.domain import Audio, ChatRef, IncomingMessage, Notice, NoticeKind, Person, ReplyDone, ServiceEvent
from core.limits import RateLimits
from core.service import ChatService
from storage.limits import SqlLimitLedger
from tests.conftest import voice

ADA = Person("telegram", "31", "Ada")
ADMIN = Person("telegram", "900", "Grace")
START = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now

    def advance(self, minutes: float) -> None:
        self.now += minutes * 60


def limited_service(app: App, clock: Clock, **limits: float) -> ChatService:
    config = replace(app.service.config, limits=RateLimits(**limits), exempt=frozenset({ADMIN.user_id}))  # type: ignore[arg-type]
    # Counted in the database, as the composition root has it.
    return ChatService(
        app.store, app.transcriber, app.generator, config, clock=clock, ledger=SqlLimitLedger(app.store.engine)
    )


async def send(
    service: ChatService, person: Person, text: str | None = None, audio: str | None = None
) -> ServiceEvent:
    message = IncomingMessage(
        ChatRef(person.platform, person.user_id),
        person,
        text=text,
        audio=Audio(voice(audio), "audio/ogg") if audio else None,
    )
    last = [event async for event in service.replies.handle(message) if isinstance(event, ReplyDone | Notice)]
    return last[-1]


def user_turns(app: App) -> int:
    return app.store.stats().user_turns


async def test_messages_over_the_hourly_limit_are_refused_with_when_to_come_back(app: App) -> None:
    clock = Clock()
    service = limited_service(app, clock, messages_per_hour=2)
    assert isinstance(await send(service, ADA, "What is the capital of France?"), ReplyDone)
    clock.advance(10)
    assert isinstance(await send(service, ADA, "And of Spain?"), ReplyDone)
    clock.advance(5)

    refused = await send(service, ADA, "And of Italy?")
    assert isinstance(refused, Notice) and refused.kind is NoticeKind.RATE_LIMITED
    assert refused.text == (
        "You have sent me 2 messages in the last hour, my limit per person. "
        "Please come back in 45 minutes (at 09:00 UTC)."
    )
    assert user_turns(app) == 2  # a refused message is not stored

    clock.advance(44.5)
    late = await send(service, ADA, "And of Italy?")
    assert isinstance(late, Notice) and "come back in 1 minute (at 09:00 UTC)" in late.text
    clock.advance(0.5)  # the first message is an hour old now
    assert isinstance(await send(service, ADA, "And of Italy?"), ReplyDone)
    assert user_turns(app) == 3


async def test_admins_are_exempt(app: App) -> None:
    clock = Clock()
    service = limited_service(app, clock, messages_per_hour=1)
    for question in ("What is the capital of France?", "And of Spain?"):
        assert isinstance(await send(service, ADMIN, question), ReplyDone)
    assert isinstance(await send(service, ADA, "What is the capital of France?"), ReplyDone)
    assert isinstance(await send(service, ADA, "And of Spain?"), Notice)


async def test_voice_minutes_over_the_hourly_limit_are_refused(app: App) -> None:
    clock = Clock()
    # The fixture voice note lasts about two seconds: two fit in 0.07 minutes (4.2 s), three do not.
    service = limited_service(app, clock, voice_minutes_per_hour=0.07)
    for _ in range(2):
        assert isinstance(await send(service, ADA, audio="capital_of_france.ogg"), ReplyDone)
        clock.advance(1)

    refused = await send(service, ADA, audio="capital_of_france.ogg")
    assert isinstance(refused, Notice) and refused.kind is NoticeKind.RATE_LIMITED
    assert refused.text.startswith("That would take you over 0.07 minutes of voice in an hour")
    assert "come back in 58 minutes (at 09:00 UTC)" in refused.text
    assert isinstance(await send(service, ADA, "Text still works."), ReplyDone)

    clock.advance(58)
    assert isinstance(await send(service, ADA, audio="capital_of_france.ogg"), ReplyDone)
