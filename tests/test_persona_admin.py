"""Persona administration (``core.persona_admin``, issue #29) on SQLite and PostgreSQL, and a persona's
voice (``core.speaking``): what an admin changes is stored with its audit line, a refused change
stores nothing, a persona's espeak-ng voice says its replies, and a voice the synthesizer does not
have falls back to the deployment's with one warning."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import core.speech
from core.audit import AuditTrail
from core.domain import AuditAction, ChatRef, Person, Spoken
from core.persona_admin import PersonaAdmin, cleared, temperature_of
from core.personas import Persona, PersonaInvalid, PersonaNotFound, PersonaRefused
from core.speaking import ReplySpeaker, SpeechConfig
from core.speech import EspeakSynthesizer, PiperSynthesizer, UnknownVoice
from storage.personas import SqlPersonas
from storage.repository import SqlStore
from storage.voices import SqlVoicePreferences

GROUP = ChatRef("telegram", "-42", "7")  # a topic: the persona is the whole group's
PIRATE = "You are a cheerful pirate. Answer in one sentence."
ADMIN = "telegram:900"
espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def admin_of(store: SqlStore, voices: dict[str, str] | None = None) -> PersonaAdmin:
    known = voices or {}
    return PersonaAdmin(SqlPersonas(store.engine), AuditTrail(store), lambda voice: known.get(voice))


async def test_a_change_is_stored_with_its_audit_line_and_a_refused_one_stores_nothing(store: SqlStore) -> None:
    admin = admin_of(store, {"xx-nosuch": "espeak-ng has no voice 'xx-nosuch'"})
    added = await admin.add(Persona("pirate", PIRATE, greeting="Ahoy!"), ADMIN)
    assert (added.name, added.version, added.greeting) == ("pirate", 1, "Ahoy!")
    assert (await admin.edit("pirate", ADMIN, prompt="You are a sleepy pirate.")).version == 2
    assert (await admin.make_default("pirate", ADMIN)).is_default
    now = await admin.use(GROUP, "pirate", ADMIN)
    assert now is not None and now.name == "pirate"
    assert await admin.greeting(ChatRef("telegram", "-42")) == "Ahoy!"

    refused = [
        Persona("default", PIRATE),
        Persona("bell", "Ring\x07"),
        Persona("long", "x" * 5000),
        Persona("pirate", PIRATE),  # taken
        Persona("voiced", PIRATE, voice="xx-nosuch"),
    ]
    for persona in refused:
        with pytest.raises((PersonaInvalid, PersonaRefused)) as error:
            await admin.add(persona, ADMIN)
        assert "\n" not in str(error.value) and len(str(error.value)) < 200
    with pytest.raises(PersonaInvalid, match="xx-nosuch"):
        await admin.edit("pirate", ADMIN, voice="xx-nosuch")
    with pytest.raises(PersonaInvalid):
        await admin.edit("pirate", ADMIN)  # nothing to change
    with pytest.raises(PersonaNotFound):
        await admin.use(GROUP, "ghost", ADMIN)
    with pytest.raises(PersonaRefused):
        await admin.remove("pirate", ADMIN)  # the default

    listing = await admin.listing()
    assert [(p.name, p.version, p.voice) for p in listing.personas] == [("pirate", 2, None)]
    assert listing.chats == {"pirate": [ChatRef("telegram", "-42")]}
    trail = [(e.actor, e.action, e.target) for e in store.audit_entries(None)]
    assert trail == [
        (ADMIN, AuditAction.PERSONA_ADD, "pirate"),
        (ADMIN, AuditAction.PERSONA_EDIT, "pirate"),
        (ADMIN, AuditAction.PERSONA_EDIT, "pirate"),
        (ADMIN, AuditAction.PERSONA_USE, "telegram:-42"),
    ]
    assert all(
        PIRATE not in str(e.details) and "sleepy" not in str(e.details) for e in store.audit_entries(None)
    )

    await admin.add(Persona("teacher", "You are a patient teacher.", is_default=True), ADMIN)
    assert await admin.remove("pirate", ADMIN) == [ChatRef("telegram", "-42")]
    back = await admin.use(GROUP, "default", ADMIN)
    assert back is not None and back.name == "teacher"  # the default persona, greeting and all
    assert await admin.greeting(GROUP) is None


def test_chat_words_for_none_and_a_temperature() -> None:
    assert cleared("none") == cleared(" - ") == "" and cleared("en-gb") == "en-gb" and cleared(None) is None
    assert temperature_of(" 0.7 ") == 0.7
    with pytest.raises(PersonaInvalid):
        temperature_of("warm")


# --- the voice of a persona's spoken replies ----------------------------------------------------


class Said:
    """Every espeak-ng command line run (the real program still runs)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.commands: list[list[str]] = []
        run = core.speech._run

        def recording(command: list[str], text: str) -> bytes:
            self.commands.append(command)
            return run(command, text)

        monkeypatch.setattr(core.speech, "_run", recording)

    def voices(self) -> list[str]:
        return [command[command.index("-v") + 1] for command in self.commands]


def speaker(store: SqlStore) -> ReplySpeaker:
    return ReplySpeaker(EspeakSynthesizer(voice="en-us"), SqlVoicePreferences(store.engine), SpeechConfig())


@espeak
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_personas_espeak_voice_says_its_reply_and_an_unknown_one_falls_back_once(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    said = Said(monkeypatch)
    talker = speaker(store)
    ada, chat = Person("telegram", "1", "Ada"), ChatRef("telegram", "1")
    reply = store.record_user_turn(chat, ada, text="Hi", from_voice=False, message_id="1", shared_history=False)
    british = Persona("butler", "You are a butler.", version=1, voice="en-gb")
    voice = await talker.voice(british)
    spoken = await talker.speak(reply.turn_id, "Good evening. Dinner is served.", talker.early(voice), voice)
    assert isinstance(spoken, Spoken)  # a voice note, not a notice
    assert set(said.voices()) == {"en-gb"}

    said.commands.clear()
    ghost = Persona("ghost", "You are a ghost.", version=3, voice="xx-nosuch")
    with caplog.at_level(logging.WARNING, logger="core.speaking"):
        for _ in range(3):
            voice = await talker.voice(ghost)
            assert isinstance(await talker.speak(reply.turn_id, "Boo.", None, voice), Spoken)
    assert set(said.voices()) == {"en-us"}  # the deployment's voice, and no failure
    warnings = [r for r in caplog.records if "xx-nosuch" in r.getMessage()]
    assert len(warnings) == 1 and "ghost" in warnings[0].getMessage()
    assert talker.voice_problem("xx-nosuch") is not None and talker.voice_problem("en-gb") is None
    talker.close()


@espeak
async def test_a_spoken_reply_reads_its_persona_once_so_text_and_voice_are_one_personas(
    tmp_path: Path, served_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chat's persona changes between two reads (an admin's /persona use, a test of personas
    starting): the reply is written and spoken by the same one, read once."""
    from bots.app import build_app
    from core.domain import IncomingMessage, ReplyDone
    from tests.conftest import make_settings

    said = Said(monkeypatch)
    app = build_app(make_settings(tmp_path, served_gguf, tts_replies="always"))
    try:
        writer = app.service.replies.writer
        personas = iter(
            [
                Persona("butler", "You are a butler. Answer in one sentence.", version=1, voice="en-gb"),
                Persona("cowboy", "You are a cowboy. Answer in one sentence.", version=1, voice="en-us"),
            ]
        )
        reads: list[str] = []

        def changing(conversation_id: int) -> Persona:
            persona = next(personas)
            reads.append(persona.name)
            return persona

        monkeypatch.setattr(writer.personas, "for_conversation", changing)
        ada = Person("telegram", "5", "Ada")
        message = IncomingMessage(ChatRef("telegram", "5"), ada, text="Good evening.")
        events = [event async for event in app.service.replies.handle(message)]
        [done] = [e for e in events if isinstance(e, ReplyDone)]
        assert reads == ["butler"] and done.persona == "butler"
        assert any(isinstance(e, Spoken) for e in events) and set(said.voices()) == {"en-gb"}
    finally:
        app.close()


def test_a_piper_voice_is_a_file_or_the_name_of_one_installed(tmp_path: Path) -> None:
    configured = tmp_path / "voices" / "en_US-joe-medium.onnx"
    other = tmp_path / "voices" / "en_GB-alba-medium.onnx"
    for model in (configured, other):
        model.parent.mkdir(exist_ok=True)
        model.write_bytes(b"onnx")
        Path(f"{model}.json").write_text('{"audio": {"sample_rate": 22050}}')
    piper = PiperSynthesizer(tmp_path / "env" / "bin" / "python", configured)
    assert piper.voiced("en_US-joe-medium") is piper
    assert piper.voiced("en_GB-alba-medium").model == other
    assert piper.voiced(str(other)).model == other
    for unknown in ("en_XX-nobody", "../voices/en_GB-alba-medium", "*", str(tmp_path / "missing.onnx")):
        with pytest.raises(UnknownVoice):
            piper.voiced(unknown)


# --- iris persona --voice: checked against the configured synthesizer ----------------------------


@espeak
def test_iris_persona_refuses_a_voice_espeak_lacks_in_one_line(tmp_path: Path) -> None:
    iris = str(Path(sys.executable).with_name("iris"))
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "DISCORD_", "IRIS_", "DATABASE"))
    }
    env = {**clean, "IRIS_DATA_DIR": str(tmp_path / "data")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([iris, "persona", *args], env=env, capture_output=True, text=True, timeout=120)

    refused = run("add", "butler", "--prompt", "You are a butler.", "--voice", "xx-nosuch")
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert "espeak-ng has no voice 'xx-nosuch'" in refused.stderr and "Traceback" not in refused.stderr
    assert run("add", "butler", "--prompt", "You are a butler.", "--voice", "en-gb").returncode == 0
    edited = run("edit", "butler", "--voice", "xx-nosuch")
    assert edited.returncode == 1 and "xx-nosuch" in edited.stderr
    rows = json.loads(run("list", "--json").stdout)
    assert [(row["name"], row["voice"]) for row in rows] == [("butler", "en-gb")]


def test_a_long_list_fits_the_platforms_messages_and_counts_what_it_leaves_out() -> None:
    from bots import persona_render
    from core.persona_admin import PersonaListing

    many = [Persona(f"p{i:03}", f"Prompt {i}. " + "word " * 900, version=1) for i in range(200)]
    for limit in (2000, 4096):
        pieces = persona_render.listing(PersonaListing(many, {}), limit)
        assert 1 < len(pieces) <= persona_render.MAX_PIECES and all(len(piece) <= limit for piece in pieces)
        shown = sum(piece.count("• p") for piece in pieces)
        assert pieces[-1].endswith(f"…and {200 - shown} more: `iris persona list` shows them all.")
    one = persona_render.listing(PersonaListing(many[:1], {"p000": [ChatRef("telegram", "-1")]}), 2000)
    assert len(one) == 1 and "p000: version 1, 1 chat\n" in one[0] and "None is the default" in one[0]
