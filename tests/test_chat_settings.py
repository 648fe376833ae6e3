"""Each chat's settings (issue #29, ``/settings``): stored on SQLite and PostgreSQL, checked, audited,
and read by the reply path at each reply: persona, spoken replies, reply length, earlier turns."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from concurrent.futures import ThreadPoolExecutor
from threading import Barrier

import pytest
from sqlalchemy import insert, select

from core.chat_settings import (
    LENGTH_LINES,
    MAX_HISTORY_TURNS,
    ChatSettings,
    ChatSettingsBook,
    ReplyLength,
    Setting,
    SettingInvalid,
    SettingsRefused,
    length_tokens,
    parse,
)
from core.config import ChatConfig, ServiceConfig
from core.domain import (
    Audio,
    AuditAction,
    ChatMessage,
    ChatRef,
    IncomingMessage,
    Person,
    ReplyDone,
    ServiceEvent,
    Spoken,
)
from core.personas import Persona, PersonaBook
from core.ports import Generation
from core.service import ChatService
from core.speaking import ReplySpeaker, SpeechConfig, VoiceMode
from core.speech import EspeakSynthesizer
from core.transcription import WhisperTranscriber
from storage.chat_settings import SqlChatSettings
from storage.database import make_engine
from storage.personas import SqlPersonas
from storage.repository import SqlStore
from storage.tables import ChatSettingsRow, TurnRow
from storage.voices import SqlVoicePreferences
from tests.fakes import RecordingGenerator

ADMIN = Person("telegram", "900", "Ann")
ALICE = Person("telegram", "100", "Alice")
GROUP = ChatRef("telegram", "-42")
OTHER = ChatRef("telegram", "-77")
PIRATE = "You are a cheerful pirate. Answer in one sentence."
MAX_TOKENS = 200


class OptionsRecorder(RecordingGenerator):
    """Keeps each reply's sampling options too: the reply length must reach the model."""

    def __init__(self) -> None:
        super().__init__("Ahoy there. Fair winds to you.")
        self.options: list[Generation] = []

    async def stream(self, messages: Sequence[ChatMessage], options: Generation) -> AsyncGenerator[str, None]:
        self.options.append(options)
        async for piece in super().stream(messages, options):
            yield piece


def service_on(
    store: SqlStore,
    generator: RecordingGenerator,
    speaker: ReplySpeaker | None = None,
    self_service: bool = True,
) -> ChatService:
    """A service as ``bots.app`` builds it, on ``store``'s database (text only: whisper never loads)."""
    config = ServiceConfig(chat=ChatConfig(), generation=Generation(max_tokens=MAX_TOKENS))
    return ChatService(
        store,
        WhisperTranscriber(),
        generator,
        config,
        audit=store,
        speaker=speaker,
        personas=PersonaBook(SqlPersonas(store.engine), "", audit=store),
        chat_settings=ChatSettingsBook(SqlChatSettings(store.engine), store, self_service),
    )


async def say(service: ChatService, chat: ChatRef, text: str, sender: Person = ALICE) -> list[ServiceEvent]:
    message = IncomingMessage(chat, sender, text=text, message_id=f"{chat.chat_id}:{text}")
    events = [event async for event in service.replies.handle(message)]
    assert any(isinstance(event, ReplyDone) for event in events), events
    return events


async def change(service: ChatService, chat: ChatRef, setting: Setting, value: str) -> None:
    await service.chat_settings.change(chat, setting, value, ADMIN.actor, admin=True, private=False)


# --- storage, on SQLite and PostgreSQL --------------------------------------------------------


def test_each_setting_is_stored_and_read_and_default_clears_it(store: SqlStore) -> None:
    settings = SqlChatSettings(store.engine)
    SqlPersonas(store.engine).add_persona(Persona("pirate", PIRATE), "console:ann")
    assert settings.chat_settings(GROUP) == ChatSettings()
    settings.set_chat_setting(GROUP, Setting.PERSONA, "pirate", ADMIN.actor)
    settings.set_chat_setting(GROUP, Setting.SPOKEN, VoiceMode.ALWAYS, ADMIN.actor)
    settings.set_chat_setting(GROUP, Setting.LENGTH, ReplyLength.SHORT, ADMIN.actor)
    settings.set_chat_setting(GROUP, Setting.HISTORY, 0, ADMIN.actor)
    assert settings.chat_settings(GROUP) == ChatSettings("pirate", VoiceMode.ALWAYS, ReplyLength.SHORT, 0)
    assert settings.chat_settings(OTHER) == ChatSettings()
    settings.set_chat_setting(GROUP, Setting.SPOKEN, None, ADMIN.actor)
    assert settings.chat_settings(GROUP) == ChatSettings("pirate", None, ReplyLength.SHORT, 0)
    # The same row iris persona use writes: a persona set either way is the other's too.
    assert SqlPersonas(store.engine).chat_persona(GROUP) == "pirate"
    receipt = store.record_user_turn(
        GROUP, ALICE, text="Hi", from_voice=False, message_id=None, shared_history=True
    )
    assert settings.conversation_settings(receipt.conversation_id) == settings.chat_settings(GROUP)


def test_a_persona_not_stored_is_refused_and_nothing_changes(store: SqlStore) -> None:
    from core.personas import PersonaNotFound

    settings = SqlChatSettings(store.engine)
    with pytest.raises(PersonaNotFound):
        settings.set_chat_setting(GROUP, Setting.PERSONA, "ghost", ADMIN.actor)
    with store.engine.connect() as connection:
        assert connection.execute(select(ChatSettingsRow)).all() == []


def test_values_no_setting_takes_read_as_the_deployments(store: SqlStore) -> None:
    """A row written by hand (or by a later version) never fails a reply: its odd values read as unset."""
    with store.engine.begin() as connection:
        connection.execute(
            insert(ChatSettingsRow).values(
                platform="telegram",
                chat_id="-42",
                spoken_replies="loud",
                reply_length="epic",
                history_turns=10_000,
            )
        )
    assert SqlChatSettings(store.engine).chat_settings(GROUP) == ChatSettings()


def test_two_processes_setting_one_new_chat_at_once_keep_both_changes(store: SqlStore) -> None:
    """Two processes (two engines) create the chat's row at the same moment: neither fails, both hold."""
    url = store.engine.url.render_as_string(hide_password=False)
    engines = [make_engine(url), make_engine(url)]
    barrier = Barrier(2)

    def set_one(job: tuple[int, Setting, VoiceMode | ReplyLength]) -> None:
        index, setting, value = job
        barrier.wait()
        SqlChatSettings(engines[index]).set_chat_setting(OTHER, setting, value, ADMIN.actor)

    jobs = [(0, Setting.SPOKEN, VoiceMode.OFF), (1, Setting.LENGTH, ReplyLength.LONG)]
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(set_one, jobs))
    finally:
        for engine in engines:
            engine.dispose()
    assert SqlChatSettings(store.engine).chat_settings(OTHER) == ChatSettings(
        spoken=VoiceMode.OFF, length=ReplyLength.LONG
    )


# --- the rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "text"),
    [
        (Setting.SPOKEN, "loud"),
        (Setting.LENGTH, "x" * 5000),
        (Setting.HISTORY, "41"),
        (Setting.HISTORY, "-1"),
        (Setting.HISTORY, "１０"),  # full-width digits: isdigit() says yes, int() would take them
        (Setting.HISTORY, "9" * 400),
        (Setting.PERSONA, "p" * 41),
    ],
)
def test_values_no_setting_takes_are_refused_in_one_line(setting: Setting, text: str) -> None:
    with pytest.raises(SettingInvalid) as refused:
        parse(setting, text)
    assert "\n" not in str(refused.value) and len(str(refused.value)) < 100


def test_values_are_parsed() -> None:
    assert parse(Setting.SPOKEN, "ALWAYS") is VoiceMode.ALWAYS
    assert parse(Setting.LENGTH, "default") is None
    assert parse(Setting.HISTORY, "0") == 0 and parse(Setting.HISTORY, str(MAX_HISTORY_TURNS)) == 40


def test_the_lengths_token_limits_come_from_the_deployments() -> None:
    assert [length_tokens(length, 256, 2048) for length in ReplyLength] == [64, 256, 512]
    assert length_tokens(ReplyLength.SHORT, 48, 2048) == 16  # never below 16
    assert length_tokens(ReplyLength.LONG, 256, 512) == 256  # never past half the context
    assert length_tokens(None, 256, 2048) == 256


def test_who_may_change_a_chats_settings(store: SqlStore) -> None:
    allowed = ChatSettingsBook(SqlChatSettings(store.engine), store, self_service=True)
    admins_only = ChatSettingsBook(SqlChatSettings(store.engine), store, self_service=False)
    assert allowed.may_change(admin=True, private=False) and admins_only.may_change(admin=True, private=True)
    assert allowed.may_change(admin=False, private=True)
    assert not allowed.may_change(admin=False, private=False)
    assert not admins_only.may_change(admin=False, private=True)
    assert not ChatSettingsBook(None).may_change(admin=True, private=True)  # no store: nothing to change


async def test_a_refused_or_invalid_change_changes_nothing_and_a_change_is_audited(store: SqlStore) -> None:
    book = ChatSettingsBook(SqlChatSettings(store.engine), store, self_service=False)
    with pytest.raises(SettingsRefused):
        await book.change(GROUP, Setting.SPOKEN, "always", ALICE.actor, admin=False, private=False)
    with pytest.raises(SettingsRefused):
        await book.change(
            ChatRef("telegram", "100"), Setting.SPOKEN, "off", ALICE.actor, admin=False, private=True
        )
    with pytest.raises(SettingInvalid):
        await book.change(GROUP, Setting.PERSONA, "ghost", ADMIN.actor, admin=True, private=False)
    assert store.audit_entries() == []
    view = await book.change(GROUP, Setting.HISTORY, "10", ADMIN.actor, admin=True, private=False)
    assert view.settings == ChatSettings(history_turns=10)
    (entry,) = store.audit_entries()
    assert (entry.actor, entry.action, entry.target) == (
        ADMIN.actor,
        AuditAction.SETTINGS_CHANGE,
        "telegram:-42",
    )
    assert entry.details == {"setting": "history_turns", "value": "10"}


# --- the reply path ---------------------------------------------------------------------------


async def test_a_group_set_to_a_persona_answers_with_it_and_keeps_it_after_a_restart(store: SqlStore) -> None:
    SqlPersonas(store.engine).add_persona(Persona("pirate", PIRATE), "console:ann")
    generator = OptionsRecorder()
    service = service_on(store, generator)
    await change(service, GROUP, Setting.PERSONA, "pirate")
    (done,) = [event for event in await say(service, GROUP, "Who are you?") if isinstance(event, ReplyDone)]
    assert generator.prompts[-1][0] == ChatMessage("system", PIRATE)
    assert done.persona == "pirate"
    await say(service, OTHER, "Who are you?")
    assert generator.prompts[-1][0].role == "user"  # the model's own prompt: no system message

    restarted = service_on(store, generator)  # a new process on the same database
    await say(restarted, GROUP, "And now?")
    await say(restarted, OTHER, "And now?")
    assert [p[0].role for p in generator.prompts[-2:]] == ["system", "user"]  # history, no system message
    assert generator.prompts[-2][0].content == PIRATE
    with store.engine.connect() as connection:
        stored = connection.execute(
            select(TurnRow.chat_id, TurnRow.persona).where(TurnRow.role == "assistant").order_by(TurnRow.id)
        ).all()
    assert [tuple(row) for row in stored] == [
        ("-42", "pirate"),
        ("-77", None),
        ("-42", "pirate"),
        ("-77", None),
    ]
    entries = [(e.action, e.target, e.details) for e in store.audit_entries()]
    assert (AuditAction.PERSONA_USE, "telegram:-42", {"persona": "pirate"}) in entries


async def test_no_earlier_turns_and_a_short_length_reach_the_model(store: SqlStore) -> None:
    generator = OptionsRecorder()
    service = service_on(store, generator)
    await say(service, GROUP, "My name is Ada.")
    await say(service, GROUP, "What is my name?")
    assert len(generator.prompts[-1]) == 3  # the earlier question and answer, then this one
    assert generator.options[-1].max_tokens == MAX_TOKENS

    await change(service, GROUP, Setting.HISTORY, "0")
    await change(service, GROUP, Setting.LENGTH, "short")
    await say(service, GROUP, "And now?")
    assert generator.prompts[-1] == [
        ChatMessage("system", LENGTH_LINES[ReplyLength.SHORT]),
        ChatMessage("user", "And now?"),
    ]
    assert generator.options[-1].max_tokens == MAX_TOKENS // 4
    await say(service, OTHER, "Hello")  # another chat keeps the deployment's
    assert generator.options[-1].max_tokens == MAX_TOKENS and len(generator.prompts[-1]) == 1

    await change(service, GROUP, Setting.LENGTH, "long")
    await change(service, GROUP, Setting.HISTORY, "default")
    await say(service, GROUP, "Once more?")
    assert generator.options[-1].max_tokens == 2 * MAX_TOKENS
    assert generator.prompts[-1][0].content == LENGTH_LINES[ReplyLength.LONG]
    assert len(generator.prompts[-1]) > 2  # the earlier turns are back


async def test_a_chats_spoken_replies_win_over_the_persons_voice_and_the_deployments(store: SqlStore) -> None:
    speaker = ReplySpeaker(
        EspeakSynthesizer(), SqlVoicePreferences(store.engine), SpeechConfig(VoiceMode.MIRROR)
    )
    service = service_on(store, OptionsRecorder(), speaker)
    text = IncomingMessage(GROUP, ALICE, text="Hi")
    note = IncomingMessage(GROUP, ALICE, audio=Audio(b"ogg"))
    assert (await speaker.wanted(text), await speaker.wanted(note)) == (False, True)  # mirror
    await service.replies.set_voice(ALICE, True)  # /voice on
    assert await speaker.wanted(text, VoiceMode.OFF) is False
    assert await speaker.wanted(note, VoiceMode.OFF) is False
    assert await speaker.wanted(text, VoiceMode.ALWAYS) is True
    assert await speaker.wanted(text, None) is True  # no chat setting: the person's /voice

    await change(service, GROUP, Setting.SPOKEN, "always")
    events = await say(service, GROUP, "Say something.", sender=Person("telegram", "300", "Bob"))
    assert any(isinstance(event, Spoken) for event in events)
    await change(service, GROUP, Setting.SPOKEN, "off")
    events = await say(service, GROUP, "Say more.")  # Alice said /voice on: the chat's off wins
    assert not any(isinstance(event, Spoken) for event in events)
    speaker.close()


def test_iris_settings_self_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from bots.settings import Settings

    assert Settings(_env_file=None).settings_self is True  # type: ignore[call-arg]
    monkeypatch.setenv("IRIS_SETTINGS_SELF", "false")
    assert Settings(_env_file=None).settings_self is False  # type: ignore[call-arg]
