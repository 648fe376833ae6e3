"""Personas (issue #29): stored and ruled on SQLite and PostgreSQL, read by the writer at each reply,
changed through the real ``iris`` command and through the personas file, while Iris runs."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from collections.abc import AsyncGenerator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from threading import Barrier

import pytest
from sqlalchemy import select

from core.choices import AgainRefused
from core.config import ChatConfig, ServiceConfig
from core.domain import AuditAction, ChatMessage, ChatRef, IncomingMessage, Person, ReplyDone, Timings
from core.personas import (
    MAX_PROMPT_CHARS,
    Persona,
    PersonaBook,
    PersonaFile,
    PersonaInvalid,
    PersonaNotFound,
    PersonaRefused,
    parse_personas,
)
from core.ports import Generation
from core.service import ChatService
from core.transcription import WhisperTranscriber
from storage.choices import SqlAnswerChoices
from storage.database import make_engine
from storage.personas import SqlPersonas
from storage.repository import SqlStore
from storage.tables import ChatSettingsRow, PersonaRow, TurnRow
from tests.fakes import RecordingGenerator

ALICE = Person("telegram", "100", "Alice")
BOB = Person("telegram", "200", "Bob")
PIRATES = ChatRef("telegram", "-42")  # a group set to the pirate persona
OTHERS = ChatRef("telegram", "-77")  # a group that keeps the default
CONFIGURED = "You are Iris, a helpful assistant."  # IRIS_CHAT_SYSTEM_PROMPT in these tests
PIRATE = "You are a cheerful pirate. Answer in one sentence."
TEACHER = "You are a patient teacher. Explain step by step."


class OptionsRecorder(RecordingGenerator):
    """Keeps the sampling options of each reply too (the persona's temperature must reach them)."""

    def __init__(self) -> None:
        super().__init__("Ahoy there, friend.")
        self.options: list[Generation] = []

    async def stream(self, messages: Sequence[ChatMessage], options: Generation) -> AsyncGenerator[str, None]:
        self.options.append(options)
        async for piece in super().stream(messages, options):
            yield piece


def service_on(store: SqlStore, generator: RecordingGenerator, file: PersonaFile | None = None) -> ChatService:
    """A service as ``bots.app`` builds it, on ``store``'s database (text only: whisper never loads)."""
    config = ServiceConfig(chat=ChatConfig(system_prompt=CONFIGURED), generation=Generation(temperature=0.0))
    book = PersonaBook(SqlPersonas(store.engine), CONFIGURED, file, audit=store)
    return ChatService(
        store,
        WhisperTranscriber(),
        generator,
        config,
        audit=store,
        choices=SqlAnswerChoices(store.engine),
        personas=book,
    )


async def say(service: ChatService, chat: ChatRef, text: str, sender: Person = ALICE) -> ReplyDone:
    message = IncomingMessage(chat, sender, text=text, message_id=f"{chat.chat_id}:{text}")
    events = [event async for event in service.replies.handle(message)]
    done = [event for event in events if isinstance(event, ReplyDone)]
    assert len(done) == 1, events
    return done[0]


def system_prompt(messages: Sequence[ChatMessage]) -> str | None:
    return messages[0].content if messages and messages[0].role == "system" else None


def stored_persona(store: SqlStore, reply_id: int) -> tuple[str | None, int | None]:
    with store.engine.connect() as connection:
        row = connection.execute(
            select(TurnRow.persona, TurnRow.persona_version).where(TurnRow.id == reply_id)
        ).one()
    return row.persona, row.persona_version


def defaults(store: SqlStore) -> list[str]:
    with store.engine.connect() as connection:
        return list(connection.scalars(select(PersonaRow.name).where(PersonaRow.is_default.is_(True))))


# --- storage: the rules, on SQLite and PostgreSQL ---------------------------------------------


def test_one_default_at_a_time(store: SqlStore) -> None:
    personas = SqlPersonas(store.engine)
    personas.add_persona(Persona("pirate", PIRATE, is_default=True), "console:ann")
    personas.add_persona(Persona("teacher", TEACHER, is_default=True), "console:ann")
    assert defaults(store) == ["teacher"]
    personas.edit_persona("pirate", "console:ann", default=True)
    assert defaults(store) == ["pirate"]
    assert [(p.name, p.is_default) for p in personas.personas()] == [("pirate", True), ("teacher", False)]


def test_two_admins_making_two_defaults_at_once_leave_one(store: SqlStore) -> None:
    personas = SqlPersonas(store.engine)
    for name in ("a", "b", "c"):
        personas.add_persona(Persona(name, f"Prompt {name}."), "console:ann")
    personas.edit_persona("c", "console:ann", default=True)
    barrier = Barrier(2)

    def make_default(name: str) -> bool:
        barrier.wait()
        return personas.edit_persona(name, "console:ann", default=True).is_default

    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(make_default, ["a", "b"]))
    # Neither admin gets an error: the second waits for the first, then takes the mark from it.
    assert outcomes == [True, True]
    assert len(defaults(store)) == 1 and defaults(store)[0] in {"a", "b"}


def test_admins_editing_one_persona_at_once_lose_no_version(store: SqlStore) -> None:
    personas = SqlPersonas(store.engine)
    personas.add_persona(Persona("pirate", PIRATE), "console:ann")
    barrier = Barrier(4)

    def edit(n: int) -> int:
        barrier.wait()
        return personas.edit_persona(
            "pirate", f"console:admin{n}", prompt=f"You are pirate number {n}."
        ).version

    with ThreadPoolExecutor(4) as pool:
        versions = sorted(pool.map(edit, range(4)))
    # Each edit read the one before it: four new versions, none written twice.
    assert versions == [2, 3, 4, 5]
    assert personas.persona("pirate").version == 5  # type: ignore[union-attr]


def test_a_new_prompt_is_a_new_version_and_nothing_else_is(store: SqlStore) -> None:
    personas = SqlPersonas(store.engine)
    assert personas.add_persona(Persona("pirate", PIRATE), "console:ann").version == 1
    assert personas.edit_persona("pirate", "console:ann", temperature=0.7).version == 1
    edited = personas.edit_persona("pirate", "console:ann", prompt="You are a grumpy pirate.")
    assert (edited.version, edited.prompt, edited.temperature) == (2, "You are a grumpy pirate.", 0.7)
    # The personas file loading the same prompt again (every process does) changes nothing.
    same = Persona("pirate", "You are a grumpy pirate.", temperature=0.7)
    assert personas.load_personas([same], "personas-file") == []
    assert personas.load_personas([Persona("pirate", PIRATE)], "personas-file") == ["pirate"]
    found = personas.persona("pirate")
    assert found is not None and (found.version, found.prompt, found.temperature) == (3, PIRATE, None)


def test_the_default_cannot_be_removed_and_a_used_persona_sends_its_chats_back(store: SqlStore) -> None:
    personas = SqlPersonas(store.engine)
    personas.add_persona(Persona("teacher", TEACHER, is_default=True), "console:ann")
    personas.add_persona(Persona("pirate", PIRATE), "console:ann")
    personas.set_chat_persona(PIRATES, "pirate", "console:ann")
    receipt = store.record_user_turn(
        PIRATES, ALICE, text="hi", from_voice=False, message_id="1", shared_history=True
    )
    assert personas.persona_for(receipt.conversation_id) == personas.persona("pirate")

    with pytest.raises(PersonaRefused, match="is the default persona"):
        personas.remove_persona("teacher", "console:ann")
    assert personas.persona("teacher") is not None
    assert personas.remove_persona("pirate", "console:ann") == [PIRATES]
    assert personas.chat_persona(PIRATES) is None
    back = personas.persona_for(receipt.conversation_id)
    assert back is not None and back.name == "teacher"
    with pytest.raises(PersonaNotFound):
        personas.set_chat_persona(OTHERS, "pirate", "console:ann")
    assert personas.chat_persona(OTHERS) is None


HOSTILE = [
    pytest.param(Persona("two words", PIRATE), "no spaces", id="space-in-name"),
    pytest.param(Persona("x" * 41, PIRATE), "at most 40", id="name-41-chars"),
    pytest.param(Persona("../etc", PIRATE), "cannot name", id="path-in-name"),
    pytest.param(Persona("Default", PIRATE), "means the default", id="name-default"),
    pytest.param(Persona("", PIRATE), "needs a name", id="no-name"),
    pytest.param(Persona("pirate", "   \n "), "cannot be empty", id="blank-prompt"),
    pytest.param(Persona("pirate", "a" * (MAX_PROMPT_CHARS + 1)), "at most 4000", id="prompt-4001-chars"),
    pytest.param(Persona("pirate", "Hi\x00there"), "control characters", id="nul-in-prompt"),
    pytest.param(Persona("pirate", PIRATE, temperature=2.5), "from 0 to 2", id="temperature-2.5"),
    pytest.param(Persona("pirate", PIRATE, temperature=-0.1), "from 0 to 2", id="temperature-negative"),
    pytest.param(Persona("pirate", PIRATE, temperature=math.nan), "from 0 to 2", id="temperature-nan"),
    pytest.param(Persona("pirate", PIRATE, voice="en\nus"), "control characters", id="newline-in-voice"),
]


@pytest.mark.parametrize(("persona", "says"), HOSTILE)
def test_hostile_personas_are_refused_and_nothing_is_stored(
    store: SqlStore, persona: Persona, says: str
) -> None:
    personas = SqlPersonas(store.engine)
    with pytest.raises(PersonaInvalid, match=says):
        personas.add_persona(persona, "console:ann")
    with pytest.raises(PersonaInvalid, match=says):
        personas.load_personas([persona], "personas-file")
    assert personas.personas() == []


def test_replies_record_their_persona_and_stats_break_down_by_it(store: SqlStore) -> None:
    personas = SqlPersonas(store.engine)
    personas.add_persona(Persona("pirate", PIRATE), "console:ann")
    for n, persona in enumerate([("pirate", 1), ("pirate", 1), None]):
        receipt = store.record_user_turn(
            PIRATES, ALICE, text=f"q{n}", from_voice=False, message_id=str(n), shared_history=True
        )
        reply = store.record_reply(
            receipt.conversation_id, receipt.turn_id, "a", "m1", Timings(), persona=persona
        )
        store.rate(ALICE, reply, 1 if n == 0 else -1)
        store.rate(BOB, reply, -1)
    figures = {row.persona: (row.replies, row.up, row.down) for row in store.stats().by_persona}
    assert figures == {"pirate": (2, 1, 3), None: (1, 0, 2)}


# --- the writer: the chat's persona reaches the model, from the next reply, in every process ---


async def test_a_chats_persona_writes_its_replies_and_other_chats_keep_the_default(
    store: SqlStore, database_url: str
) -> None:
    personas = SqlPersonas(store.engine)
    generator = OptionsRecorder()
    service = service_on(store, generator)
    before = await say(service, PIRATES, "hello before")
    assert system_prompt(generator.prompts[-1]) == CONFIGURED  # nothing stored: the configured prompt
    assert before.persona is None and stored_persona(store, before.turn_id) == (None, None)

    personas.add_persona(Persona("teacher", TEACHER, is_default=True), "console:ann")
    personas.add_persona(Persona("pirate", PIRATE, temperature=0.9), "console:ann")
    personas.set_chat_persona(PIRATES, "pirate", "telegram:1")

    pirate = await say(service, PIRATES, "hello pirate")
    assert system_prompt(generator.prompts[-1]) == PIRATE
    assert generator.options[-1].temperature == 0.9
    assert pirate.persona == "pirate" and stored_persona(store, pirate.turn_id) == ("pirate", 1)
    other = await say(service, OTHERS, "hello other")
    assert system_prompt(generator.prompts[-1]) == TEACHER
    assert generator.options[-1].temperature == 0.0  # the deployment's: the default sets none
    assert stored_persona(store, other.turn_id) == ("teacher", 1)

    # A restart: a fresh service on a fresh connection to the same database keeps both.
    engine = make_engine(database_url)
    try:
        restarted_store = SqlStore(engine)
        restarted = OptionsRecorder()
        again = service_on(restarted_store, restarted)
        assert (await say(again, PIRATES, "after restart")).persona == "pirate"
        assert system_prompt(restarted.prompts[-1]) == PIRATE
        assert (await say(again, OTHERS, "after restart")).persona == "teacher"
        assert system_prompt(restarted.prompts[-1]) == TEACHER
    finally:
        engine.dispose()

    # An edit by another process holds from the next reply: version 2 writes it.
    personas.edit_persona("pirate", "console:bob", prompt="You are a sleepy pirate.")
    edited = await say(service, PIRATES, "hello again")
    assert system_prompt(generator.prompts[-1]) == "You are a sleepy pirate."
    assert stored_persona(store, edited.turn_id) == ("pirate", 2)


async def test_a_second_answer_is_written_with_the_chats_persona(store: SqlStore) -> None:
    personas = SqlPersonas(store.engine)
    personas.add_persona(Persona("pirate", PIRATE, temperature=1.2), "console:ann")
    personas.set_chat_persona(PIRATES, "pirate", "console:ann")
    generator = OptionsRecorder()
    service = service_on(store, generator)
    reply = await say(service, PIRATES, "tell me a joke")
    task = await service.again.ask(ALICE, reply.turn_id)
    with pytest.raises(AgainRefused):  # the fake says the same words twice: no pair is kept
        await task
    assert len(generator.prompts) == 2
    assert system_prompt(generator.prompts[-1]) == PIRATE
    assert generator.options[-1].temperature == 1.2  # above the 🔁 floor of 0.8: the persona's


async def test_a_persona_lookup_that_fails_answers_with_the_configured_prompt(
    store: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    class BrokenPersonas:
        def persona(self, name: str) -> Persona | None:
            raise OSError("database gone")

        def persona_for(self, conversation_id: int) -> Persona | None:
            raise OSError("database gone")

        def load_personas(self, personas: Sequence[Persona], by: str) -> list[str]:
            raise OSError("database gone")

    generator = RecordingGenerator("Hello.")
    service = service_on(store, generator)
    service.writer.personas = PersonaBook(BrokenPersonas(), CONFIGURED)
    with caplog.at_level(logging.ERROR, "core.writing"):
        done = await say(service, PIRATES, "still there?")
    assert done.text == "Hello." and done.persona is None
    assert system_prompt(generator.prompts[-1]) == CONFIGURED
    assert "could not read the persona" in caplog.text


# --- the personas file ------------------------------------------------------------------------


def write_file(path: Path, text: str) -> None:
    """Write the file as an editor does, with a new modification time even within one clock tick."""
    path.write_text(text)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


async def test_editing_the_personas_file_changes_the_next_reply(
    store: SqlStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "personas.toml"
    write_file(path, f'[personas.pirate]\nprompt = "{PIRATE}"\ndefault = true\ntemperature = 0.5\n')
    generator = OptionsRecorder()
    service = service_on(store, generator, PersonaFile(path, every_s=0))

    first = await say(service, OTHERS, "one")
    assert system_prompt(generator.prompts[-1]) == PIRATE and generator.options[-1].temperature == 0.5
    assert stored_persona(store, first.turn_id) == ("pirate", 1)

    write_file(path, '[personas.pirate]\nprompt = "You are a sleepy pirate."\ndefault = true\n')
    second = await say(service, OTHERS, "two")
    assert system_prompt(generator.prompts[-1]) == "You are a sleepy pirate."
    assert generator.options[-1].temperature == 0.0
    assert stored_persona(store, second.turn_id) == ("pirate", 2)

    # A broken file is logged once and changes nothing: the last good personas stay.
    write_file(path, '[personas.pirate]\nprompt = "unclosed\n')
    with caplog.at_level(logging.WARNING, "core.personas"):
        await say(service, OTHERS, "three")
        await say(service, OTHERS, "four")
    assert [system_prompt(p) for p in generator.prompts[-2:]] == ["You are a sleepy pirate."] * 2
    assert caplog.text.count("not loaded") == 1
    entries = [e for e in store.audit_entries() if e.action is AuditAction.PERSONA_FILE]
    assert [e.details["changed"] for e in entries] == [["pirate"], ["pirate"]]


def test_the_file_is_looked_at_no_more_than_every_couple_of_seconds(tmp_path: Path) -> None:
    path = tmp_path / "personas.toml"
    write_file(path, f'[personas.pirate]\nprompt = "{PIRATE}"\n')
    now = [100.0]
    file = PersonaFile(path, every_s=2.0, clock=lambda: now[0])
    assert [p.name for p in file.changed() or []] == ["pirate"]
    write_file(path, f'[personas.teacher]\nprompt = "{TEACHER}"\n')
    now[0] += 1.0
    assert file.changed() is None  # too soon
    now[0] += 1.5
    assert [p.name for p in file.changed() or []] == ["teacher"]
    now[0] += 5
    assert file.changed() is None  # unchanged


def test_a_file_that_could_not_be_stored_is_stored_at_the_next_reply(store: SqlStore, tmp_path: Path) -> None:
    class FailingOnce(SqlPersonas):
        failures = 1

        def load_personas(self, personas: Sequence[Persona], by: str) -> list[str]:
            if self.failures:
                self.failures -= 1
                raise OSError("database restarting")
            return super().load_personas(personas, by)

    path = tmp_path / "personas.toml"
    write_file(path, f'[personas.pirate]\nprompt = "{PIRATE}"\ndefault = true\n')
    book = PersonaBook(FailingOnce(store.engine), CONFIGURED, PersonaFile(path, every_s=0))
    receipt = store.record_user_turn(
        OTHERS, ALICE, text="hi", from_voice=False, message_id="1", shared_history=True
    )
    assert book.for_conversation(receipt.conversation_id).name is None  # not stored yet: the configured prompt
    assert book.for_conversation(receipt.conversation_id).name == "pirate"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("personas = 3", "no \\[personas.NAME\\] table"),
        ('[personas.pirate]\nprompt = ""', "cannot be empty"),
        ('[personas.pirate]\nprompt = "x"\ntempreature = 1', "unknown key 'tempreature'"),
        ('[personas."two words"]\nprompt = "x"', "no spaces"),
        (
            '[personas.a]\nprompt = "x"\ndefault = true\n[personas.b]\nprompt = "y"\ndefault = true',
            "more than one",
        ),
        ('[personas.a]\nprompt = "x"\ntemperature = "hot"', "number from 0 to 2"),
        ("[personas.a\n", "not TOML"),
    ],
)
def test_a_broken_personas_file_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(PersonaInvalid, match=says):
        parse_personas(text)


# --- the command line, as an admin runs it -------------------------------------------------------

IRIS = str(Path(sys.executable).with_name("iris"))


@pytest.fixture
def env(tmp_path: Path, served_gguf: Path) -> dict[str, str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TELEGRAM_", "DISCORD_", "IRIS_", "DATABASE_URL"))
    }
    return {
        **clean,
        "IRIS_DATA_DIR": str(tmp_path / "data"),
        "IRIS_LLM_MODEL": str(served_gguf),
        "IRIS_GENERATION_MAX_TOKENS": "16",
    }


def iris(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([IRIS, *args], env=env, capture_output=True, text=True, timeout=300)


def cli_store(env: dict[str, str]) -> SqlStore:
    return SqlStore(make_engine(f"sqlite:///{env['IRIS_DATA_DIR']}/iris.db"))


def test_admins_steer_personas_with_iris(env: dict[str, str]) -> None:
    added = iris(env, "persona", "add", "pirate", "--prompt", PIRATE, "--temperature", "0.7", "--default")
    assert added.returncode == 0, added.stderr
    assert "added persona pirate (version 1) as the default" in added.stdout
    assert iris(env, "persona", "add", "teacher", "--prompt", TEACHER).returncode == 0
    used = iris(env, "persona", "use", "console", "ask", "teacher")
    assert used.returncode == 0 and "console:ask now answers with persona teacher" in used.stdout

    listed = json.loads(iris(env, "persona", "list", "--json").stdout)
    assert [(p["name"], p["is_default"], p["version"], p["chats"]) for p in listed] == [
        ("pirate", True, 1, []),
        ("teacher", False, 1, ["console:ask"]),
    ]

    asked = iris(env, "ask", "What is the capital of France?", "--json")  # chat console:ask: the teacher
    assert asked.returncode == 0, asked.stderr
    assert json.loads(asked.stdout)["persona"] == "teacher"
    pinned = iris(env, "ask", "Hello", "--persona", "pirate", "--json")
    assert pinned.returncode == 0, pinned.stderr
    answer = json.loads(pinned.stdout)
    assert answer["persona"] == "pirate" and answer["reply"].strip()
    store = cli_store(env)
    try:
        assert stored_persona(store, answer["turn_id"]) == ("pirate", 1)
    finally:
        store.engine.dispose()
    unknown = iris(env, "ask", "Hello", "--persona", "ghost")
    assert unknown.returncode == 1 and "no persona named 'ghost'" in unknown.stderr
    assert "Traceback" not in unknown.stderr

    edited = iris(env, "persona", "edit", "teacher", "--prompt", "You are a strict teacher.")
    assert edited.returncode == 0 and "version 2" in edited.stdout
    refused = iris(env, "persona", "remove", "pirate")
    assert refused.returncode == 1 and "is the default persona" in refused.stderr
    removed = iris(env, "persona", "remove", "teacher")
    assert removed.returncode == 0 and "back on the default: console:ask" in removed.stdout

    stats = iris(env, "stats")
    assert "By persona:" in stats.stdout and "• teacher: 1 replies" in stats.stdout
    assert "• pirate: 1 replies" in stats.stdout

    store = cli_store(env)
    try:
        trail = [(e.actor.split(":")[0], e.action, e.target) for e in store.audit_entries()]
    finally:
        store.engine.dispose()
    assert trail == [
        ("console", AuditAction.PERSONA_ADD, "pirate"),
        ("console", AuditAction.PERSONA_ADD, "teacher"),
        ("console", AuditAction.PERSONA_USE, "console:ask"),
        ("console", AuditAction.PERSONA_EDIT, "teacher"),
        ("console", AuditAction.PERSONA_REMOVE, "teacher"),
    ]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["add", "two words", "--prompt", "x"], "no spaces"),
        (["add", "n" * 41, "--prompt", "x"], "at most 40"),
        (["add", "pirate", "--prompt", ""], "cannot be empty"),
        (["add", "pirate"], "cannot be empty"),
        (["add", "pirate", "--prompt", "p" * 4001], "at most 4000"),
        (["add", "pirate", "--prompt", "x", "--temperature", "3"], "from 0 to 2"),
        (["add", "pirate", "--prompt", "x", "--temperature", "nan"], "from 0 to 2"),
        (["edit", "ghost", "--prompt", "x"], "no persona named 'ghost'"),
        (["edit", "ghost"], "say what to change"),
        (["remove", "ghost"], "no persona named 'ghost'"),
        (["use", "telegram", "-42", "ghost"], "no persona named 'ghost'"),
    ],
)
def test_hostile_input_to_iris_persona_is_refused_in_one_line(
    env: dict[str, str], args: list[str], says: str
) -> None:
    result = iris(env, "persona", *args)
    assert result.returncode == 1, result.stdout
    assert says in result.stderr and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    if not (Path(env["IRIS_DATA_DIR"]) / "iris.db").exists():
        return  # refused before the database was opened: nothing can be stored
    store = cli_store(env)
    try:
        assert SqlPersonas(store.engine).personas() == []
        assert SqlPersonas(store.engine).chats() == {}
        assert store.audit_entries() == []
    finally:
        store.engine.dispose()


# --- what settings hold about a person: /forget and retention ---------------------------------


def settings_rows(store: SqlStore) -> dict[tuple[str, str], tuple[str | None, str | None]]:
    with store.engine.connect() as connection:
        rows = connection.execute(
            select(
                ChatSettingsRow.platform,
                ChatSettingsRow.chat_id,
                ChatSettingsRow.persona,
                ChatSettingsRow.updated_by,
            )
        )
        return {(platform, chat): (persona, by) for platform, chat, persona, by in rows}


def test_forget_deletes_a_persons_own_chat_settings_and_their_name_on_the_rest(store: SqlStore) -> None:
    personas = SqlPersonas(store.engine)
    personas.add_persona(Persona("pirate", PIRATE), ALICE.actor)
    dm = ChatRef("discord", "dm-555")  # a Discord DM: its id is not hers, but only she talks in it
    alice_on_discord = Person("discord", "100", "Alice")
    store.record_user_turn(
        dm, alice_on_discord, text="hi", from_voice=False, message_id=None, shared_history=False
    )
    for chat, who in [
        (ChatRef("telegram", ALICE.user_id), ALICE),  # her private chat: its id is hers
        (PIRATES, ALICE),  # a group she set as its admin
        (OTHERS, BOB),  # a group someone else set
        (dm, alice_on_discord),
    ]:
        store.record_user_turn(chat, who, text="hello", from_voice=False, message_id=None, shared_history=False)
        personas.set_chat_persona(chat, "pirate", who.actor)
    store.record_user_turn(PIRATES, BOB, text="ahoy", from_voice=False, message_id=None, shared_history=False)

    store.forget(ALICE)
    rows = settings_rows(store)
    assert ("telegram", ALICE.user_id) not in rows
    assert rows[("telegram", PIRATES.chat_id)] == ("pirate", ALICE.pseudonym)  # the group keeps its setting
    assert rows[("telegram", OTHERS.chat_id)] == ("pirate", BOB.actor)
    assert ("discord", dm.chat_id) in rows  # her Discord self is another person until she forgets there too
    with store.engine.connect() as connection:
        assert (
            connection.scalar(select(PersonaRow.updated_by).where(PersonaRow.name == "pirate"))
            == ALICE.pseudonym
        )

    store.forget(alice_on_discord)
    assert ("discord", dm.chat_id) not in settings_rows(store)
    assert ALICE.actor not in repr(settings_rows(store)) and alice_on_discord.actor not in repr(
        settings_rows(store)
    )


def test_retention_deletes_the_chat_settings_of_the_people_it_deletes(store: SqlStore) -> None:
    personas = SqlPersonas(store.engine)
    personas.add_persona(Persona("pirate", PIRATE), "console:ann")
    dm = ChatRef("discord", "dm-777")
    carl = Person("discord", "300", "Carl")
    store.record_user_turn(dm, carl, text="hi", from_voice=False, message_id=None, shared_history=False)
    personas.set_chat_persona(dm, "pirate", carl.actor)
    personas.set_chat_persona(PIRATES, "pirate", "console:ann")
    later = datetime.now(UTC) + timedelta(days=400)  # everything is old by then, Carl not seen since

    report = store.prune(later)
    assert report.people == 1
    assert settings_rows(store) == {("telegram", PIRATES.chat_id): ("pirate", "console:ann")}
