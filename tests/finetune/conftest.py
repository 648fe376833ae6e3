"""A database seeded once through the real core service, and a ledger of what was seeded.

The seed: text and voice turns, ratings (some changed), corrections approved,
approved after an edit, rejected and pending, a person who said no to training
use, a person who used /forget (in a private chat and in a shared group chat),
a turn that failed (a silent voice note), and a model version switch. The
ledger records every final rating and correction as it happens, so tests derive
what an export must contain from what people did, not from the export itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bots.app import App, build_app
from core.domain import Audio, ChatRef, IncomingMessage, Notice, NoticeKind, Person, ReplyDone
from core.transcription import WhisperTranscriber
from storage.queries import set_consent
from tests.conftest import make_settings, voice

ALICE = Person("telegram", "1001", "Alice")
BOB = Person("telegram", "2002", "Bob")
CAROL = Person("telegram", "3003", "Carol")  # said no to training use
DAVE = Person("telegram", "4004", "Dave")  # used /forget
ERIN = Person("telegram", "5005", "Erin")
GROUP = ChatRef("telegram", "-100777")

DAVE_MARKER = "Xylocarpa"
CAROL_MARKER = "Flibbertigibbet"
EMAIL = "alice@example.com"
PHONE = "+44 20 7946 0958"
SECOND_MODEL = "iris-ft-1"
REVIEWER = "console:tester"


@dataclass
class Reply:
    id: int
    text: str
    model: str
    asker: Person
    messages_before: int  # user + assistant messages the model had before this reply's question


@dataclass
class Ledger:
    """What people did, as the seed did it; final values only."""

    replies: dict[int, Reply] = field(default_factory=dict)
    ratings: dict[tuple[str, int], tuple[int, datetime]] = field(default_factory=dict)
    corrections: dict[int, dict[str, object]] = field(default_factory=dict)
    excluded: set[str] = field(default_factory=set)
    forgotten: set[str] = field(default_factory=set)
    midpoint: datetime | None = None

    def allowed(self, person: Person | str) -> bool:
        uid = person if isinstance(person, str) else person.user_id
        return uid not in self.excluded and uid not in self.forgotten

    def exported_ratings(self, since: datetime | None = None) -> dict[tuple[str, int], int]:
        return {
            key: value
            for key, (value, at) in self.ratings.items()
            if key[1] in self.replies
            and self.allowed(key[0])
            and self.allowed(self.replies[key[1]].asker)
            and (since is None or at >= since)
        }

    def approved(self) -> list[dict[str, object]]:
        return [
            c
            for c in self.corrections.values()
            if c["status"] == "approved"
            and c["reply_id"] in self.replies
            and self.allowed(str(c["author"]))
            and self.allowed(self.replies[int(str(c["reply_id"]))].asker)
        ]


@dataclass
class Seeded:
    url: str
    app: App
    ledger: Ledger
    base_model: str


class Seeder:
    def __init__(self, app: App, ledger: Ledger) -> None:
        self.app = app
        self.ledger = ledger
        self.messages: dict[tuple[str, str], int] = {}

    async def say(
        self, person: Person, text: str | None = None, *, audio: str | None = None, chat: ChatRef | None = None
    ) -> Reply | Notice:
        shared = chat is not None
        where = chat or ChatRef(person.platform, person.user_id)
        message = IncomingMessage(
            where,
            person,
            text=text,
            audio=Audio(voice(audio), "audio/ogg", audio) if audio else None,
            shared_history=shared,
        )
        history_key = (where.chat_id, "" if shared else person.user_id)
        done: ReplyDone | Notice | None = None
        async for event in self.app.service.replies.handle(message):
            if isinstance(event, ReplyDone | Notice):
                done = event
        assert done is not None
        if isinstance(done, Notice):
            return done
        reply = Reply(done.turn_id, done.text, done.model, person, self.messages.get(history_key, 0))
        self.messages[history_key] = reply.messages_before + 2
        self.ledger.replies[reply.id] = reply
        return reply

    async def rate(self, person: Person, reply: Reply, up: bool) -> None:
        await self.app.service.feedback.rate(person, reply.id, up)
        self.ledger.ratings[(person.user_id, reply.id)] = (1 if up else -1, datetime.now(UTC))

    async def correct(self, person: Person, reply: Reply, text: str) -> int:
        correction_id = await self.app.service.feedback.correct(person, reply.id, text)
        self.ledger.corrections[correction_id] = {
            "author": person.user_id,
            "reply_id": reply.id,
            "text": text,
            "status": "pending",
        }
        return correction_id

    async def review(self, correction_id: int, approve: bool, text: str | None = None) -> None:
        reviewed = await self.app.service.feedback.review(correction_id, approve, REVIEWER, text)
        self.ledger.corrections[correction_id].update(status=reviewed.status.value, text=reviewed.text)

    async def forget(self, person: Person) -> None:
        await self.app.service.privacy.forget(person)
        self.ledger.forgotten.add(person.user_id)
        asked_by_them = {rid for rid, r in self.ledger.replies.items() if r.asker == person}
        for rid in asked_by_them:
            del self.ledger.replies[rid]
        self.ledger.ratings = {
            key: value
            for key, value in self.ledger.ratings.items()
            if key[0] != person.user_id and key[1] not in asked_by_them
        }
        self.ledger.corrections = {
            cid: c
            for cid, c in self.ledger.corrections.items()
            if c["author"] != person.user_id and c["reply_id"] not in asked_by_them
        }


async def seed(seeder: Seeder) -> None:
    ledger, app = seeder.ledger, seeder.app
    a1 = await seeder.say(ALICE, "What is the capital of France?")
    assert isinstance(a1, Reply)
    await seeder.rate(ALICE, a1, up=False)
    await seeder.rate(ALICE, a1, up=True)  # changed her mind
    a2 = await seeder.say(ALICE, audio="capital_of_france.ogg")
    assert isinstance(a2, Reply)
    await seeder.rate(ALICE, a2, up=True)
    a3 = await seeder.say(ALICE, "Who maintains the Iris bot?")
    assert isinstance(a3, Reply)
    await seeder.rate(ALICE, a3, up=False)
    fix = await seeder.correct(ALICE, a3, "The Iris bot is maintained by Zephyrine Quill.")
    await seeder.review(fix, approve=True)

    ledger.midpoint = datetime.now(UTC)
    active = app.store.active_model()
    assert active is not None
    app.store.register_model(SECOND_MODEL, active.gguf_path, active.name, activate=True)

    a4 = await seeder.say(ALICE, f"My e-mail is {EMAIL} and my phone is {PHONE}. What is 2 plus 2?")
    assert isinstance(a4, Reply)
    await seeder.rate(ALICE, a4, up=True)

    b1 = await seeder.say(BOB, "What is the capital of Peru?")
    assert isinstance(b1, Reply)
    await seeder.rate(BOB, b1, up=False)
    fix = await seeder.correct(BOB, b1, "Lima, I think.")
    await seeder.review(fix, approve=True, text="The capital of Peru is Lima.")  # edited, then approved
    e1 = await seeder.say(ERIN, "What is the capital of Peru?")
    assert isinstance(e1, Reply)
    await seeder.rate(ERIN, e1, up=False)
    fix = await seeder.correct(ERIN, e1, "The capital of Peru is Lima.")  # the same lesson twice
    await seeder.review(fix, approve=True)
    b2 = await seeder.say(BOB, "Name a primary colour.")
    assert isinstance(b2, Reply)
    await seeder.rate(BOB, b2, up=False)
    fix = await seeder.correct(BOB, b2, "Blue is a primary colour.")
    await seeder.review(fix, approve=False)
    b3 = await seeder.say(BOB, "What is the largest planet?")
    assert isinstance(b3, Reply)
    await seeder.rate(BOB, b3, up=True)
    await seeder.rate(BOB, b3, up=False)  # changed his mind
    await seeder.correct(BOB, b3, "Jupiter is the largest planet.")  # stays pending

    set_consent(app.store.engine, CAROL, False)
    ledger.excluded.add(CAROL.user_id)
    c1 = await seeder.say(CAROL, f"{CAROL_MARKER}: what is the tallest mountain?")
    assert isinstance(c1, Reply)
    await seeder.rate(CAROL, c1, up=True)
    fix = await seeder.correct(CAROL, c1, f"Mount Everest, {CAROL_MARKER}.")
    await seeder.review(fix, approve=True)

    d1 = await seeder.say(DAVE, f"{DAVE_MARKER} asks: what is 3 plus 3?")
    assert isinstance(d1, Reply)
    await seeder.rate(DAVE, d1, up=True)
    fix = await seeder.correct(DAVE, d1, f"Six, {DAVE_MARKER}.")
    await seeder.review(fix, approve=True)
    g1 = await seeder.say(ERIN, "Hello, I am Erin.", chat=GROUP)
    assert isinstance(g1, Reply)
    g2 = await seeder.say(DAVE, f"{DAVE_MARKER} says hi to the group.", chat=GROUP)
    assert isinstance(g2, Reply)
    await seeder.rate(ALICE, g2, up=True)
    await seeder.forget(DAVE)
    seeder.messages[(GROUP.chat_id, "")] -= 2  # dave's pair left the group's history

    g3 = await seeder.say(ERIN, "What is 5 plus 5?", chat=GROUP)
    assert isinstance(g3, Reply)
    await seeder.rate(ERIN, g3, up=True)
    failed = await seeder.say(ERIN, audio="silence.ogg")
    assert isinstance(failed, Notice) and failed.kind is NoticeKind.NOTHING_HEARD
    e2 = await seeder.say(ERIN, "What is 7 plus 1?")
    assert isinstance(e2, Reply)
    await seeder.rate(ERIN, e2, up=True)


@pytest.fixture(scope="session")
async def seeded(
    tmp_path_factory: pytest.TempPathFactory, served_gguf: Path, transcriber: WhisperTranscriber
) -> AsyncIterator[Seeded]:
    """One database for every read-only test of the export and the dataset build."""
    settings = make_settings(tmp_path_factory.mktemp("seeded"), served_gguf)
    app = build_app(settings)
    app.service.listener.transcriber = transcriber
    app.transcriber = transcriber
    active = app.store.active_model()
    assert active is not None
    ledger = Ledger()
    await seed(Seeder(app, ledger))
    yield Seeded(f"sqlite:///{settings.data_dir / 'iris.db'}", app, ledger, active.name)
    app.close()
