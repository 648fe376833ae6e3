"""The composition root: the one place that builds Iris from its settings.

Only it and the command line (``bots.cli``, which administers the database and
the model registry) import ``storage``; the platform adapters see nothing but
``core``, the settings and ``bots.render`` (an import-linter contract).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from bots.settings import Settings, check_renamed
from core.ab import ABServing, PinnedGenerator
from core.chat_settings import ChatSettingsBook
from core.config import ServiceConfig
from core.domain import ModelVersion
from core.generation import LlamaGenerator
from core.gguf import bundled_model, hub_gguf
from core.memory import CorrectionMemory, normalized
from core.model_check import CHECKED_RECORD
from core.personas import PersonaBook, PersonaFile
from core.ports import ServerUnavailable
from core.remote import ServerGenerator, ServerTranscriber
from core.service import ChatService
from core.speaking import ReplySpeaker
from core.transcription import WhisperTranscriber
from finetune.copies import CopyEraser
from finetune.launcher import RetrainLauncher
from storage.chat_settings import SqlChatSettings
from storage.choices import SqlAnswerChoices
from storage.database import make_engine, sqlite_url
from storage.experiments import SqlExperiments
from storage.inbox import SqlInbox
from storage.limits import SqlLimitLedger
from storage.memory import SqlMemoryStore
from storage.migrate import upgrade
from storage.pending import SqlPendingCorrections
from storage.personas import SqlPersonas
from storage.repository import SqlStore
from storage.voices import SqlVoicePreferences

if TYPE_CHECKING:
    from bots.web.records import Records

log = logging.getLogger(__name__)

# Set for an `iris retrain` the bot starts: the bot, not the child, records it in the audit trail.
AUDITED_BY_PARENT = "IRIS_AUDITED_BY_PARENT"


@dataclass
class App:
    settings: Settings
    store: SqlStore
    service: ChatService
    transcriber: WhisperTranscriber | ServerTranscriber
    generator: LlamaGenerator | ServerGenerator
    inbox: SqlInbox  # Telegram updates kept until answered, shared by the processes on one database

    def warm_up(self) -> None:
        """Load both models now rather than on the first message (blocking)."""
        self.transcriber.load()
        if self.service.memory is not None:
            try:
                self.service.memory.sync()
            except Exception:  # replies go on without it; the first lookup tries again
                log.exception("could not index the approved corrections")
        try:
            self.generator.load()
        except ServerUnavailable:  # logged by the generator; replies say so until a model loads
            log.warning("starting without a model: replies say it is unavailable until one loads")

    def close(self) -> None:
        if self.service.ab is not None:
            self.service.ab.close()
        self.generator.close()
        if self.service.speaker is not None:
            self.service.speaker.close()
        self.store.engine.dispose()


def load_settings() -> Settings:
    """The settings from the environment and ``.env``, with logging set up by them."""
    from bots.logs import configure_logging

    check_renamed()
    settings = Settings()
    configure_logging(settings)
    return settings


def retrain_dir(settings: Settings) -> Path:
    """Where retrain runs keep their datasets, checkpoints, GGUFs, reports and logs."""
    return settings.retrain.dir or settings.data_dir / "retrain"


def database_url(settings: Settings) -> str:
    return settings.database_url or sqlite_url(settings.data_dir)


def open_store(settings: Settings) -> SqlStore:
    """The store, with the schema migrated to the latest version."""
    url = database_url(settings)
    upgrade(url)
    return SqlStore(make_engine(url))


def configured_model(settings: Settings) -> ModelVersion:
    """The GGUF the settings name: bundled SmolLM2 (converted once), a path, or a Hub file."""
    spec = settings.llm.model
    if spec == "bundled":
        return bundled_model(settings.data_dir / "models", settings.llm.bundled_quant)
    path = Path(spec).expanduser()
    if not path.exists() and ":" in spec and not spec.endswith(":"):
        path = hub_gguf(spec)
    if not path.exists():
        raise FileNotFoundError(f"IRIS_LLM_MODEL={spec}: no such GGUF file")
    return ModelVersion(id=0, name=path.stem, gguf_path=str(path.resolve()))


@contextmanager
def opened_store(settings: Settings) -> Iterator[SqlStore]:
    """The store for one command: migrated when opened, its connections closed at the end."""
    store = open_store(settings)
    try:
        yield store
    finally:
        store.engine.dispose()


def ensure_served_model(store: SqlStore, settings: Settings) -> ModelVersion:
    """The configured model, registered and made active if no version is active yet.

    After the first start the registry decides what is served: a retrain
    promotes a new version, `iris models activate` picks one.
    """
    model = configured_model(settings)
    if store.active_model() is None:
        store.register_model(model.name, model.gguf_path, model.base_model, activate=True)
    return model


def build_transcriber(settings: Settings) -> WhisperTranscriber | ServerTranscriber:
    if settings.whisper.url:
        return ServerTranscriber(settings.whisper, settings.server)
    return WhisperTranscriber(settings.whisper, settings.data_dir / "models")


def build_generators(
    settings: Settings, store: SqlStore, model: ModelVersion
) -> tuple[LlamaGenerator | ServerGenerator, Callable[[ModelVersion], PinnedGenerator]]:
    """The generator that follows the registry, and how to make one pinned to a version (A/B arms)."""
    llm = settings.llm
    if llm.url:
        pinned = replace(llm, served_model=None)  # an arm asks for its own version by name
        return (
            ServerGenerator(llm, settings.server, store, model),
            lambda version: ServerGenerator(pinned, settings.server, None, version),
        )
    checked = settings.data_dir / CHECKED_RECORD  # the GGUFs that loaded in a child, for every process
    return (
        LlamaGenerator(store, model, llm, checked_record=checked),
        lambda version: LlamaGenerator(None, version, llm, checked_record=checked),
    )


def build_app(settings: Settings | None = None) -> App:
    settings = settings or Settings()
    # Conversations, voices and models live here: readable by the bot's own user only.
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    store = open_store(settings)
    model = ensure_served_model(store, settings)
    transcriber = build_transcriber(settings)
    generator, pinned = build_generators(settings, store, model)
    service = ChatService(
        store,
        transcriber,
        generator,
        ServiceConfig(
            chat=settings.chat,
            generation=settings.generation,
            limits=settings.rate_limit,
            exempt=frozenset(settings.admin_user_ids),
            parallel_replies=settings.llm.parallel,
            parallel_transcripts=settings.whisper.batch,
        ),
        retrainer=RetrainLauncher(
            log_dir=retrain_dir(settings) / "logs",
            # The run is another process: hand it this app's data and database
            # even where they came from code rather than the environment.
            env={
                "IRIS_DATA_DIR": str(settings.data_dir.resolve()),
                "DATABASE_URL": database_url(settings),
                # The service writes this run's audit lines, with the admin who asked for it.
                AUDITED_BY_PARENT: "1",
            },
            timeout=settings.retrain.timeout_minutes * 60,
        ),
        copies=CopyEraser(settings.data_dir, retrain_dir(settings)),
        audit=store,
        # An A/B test's candidate is served by a second model, pinned to its version.
        ab=ABServing(SqlExperiments(store.engine, settings.ab), store, pinned),
        speaker=build_speaker(settings, store),
        ledger=SqlLimitLedger(store.engine),  # the limits count alike in every process on the database
        pending=SqlPendingCorrections(store.engine),  # a ✏️ answered in another process, or after a restart
        choices=SqlAnswerChoices(store.engine),  # 🔁 pairs: one second answer per reply, in every process
        memory=build_memory(settings, store),
        personas=build_personas(settings, store),  # read at each reply: a change holds from the next one
        # Each chat's /settings, read at each reply too; IRIS_SETTINGS_SELF: people set their private chat's.
        chat_settings=ChatSettingsBook(SqlChatSettings(store.engine), store, settings.settings_self),
    )
    inbox = SqlInbox(store.engine, settings.inbox_max_attempts)
    return App(settings, store, service, transcriber, generator, inbox)


def build_personas(settings: Settings, store: SqlStore) -> PersonaBook:
    """Which persona writes each reply: the chat's, else the default, else IRIS_CHAT_SYSTEM_PROMPT;
    with IRIS_PERSONAS_FILE, the file's personas loaded whenever it changes."""
    file = PersonaFile(settings.personas_file.expanduser()) if settings.personas_file else None
    return PersonaBook(SqlPersonas(store.engine), settings.chat.system_prompt, file, audit=store)


async def serve_web(application: App, host: str | None = None, port: int | None = None) -> None:
    """The admins' web console (``bots.web``) on this app's service and store, until cancelled."""
    from bots.web.server import serve_web as serve_console
    from storage.review_queue import SqlReviewQueue
    from storage.web_admins import SqlWebAdmins

    web = application.settings.web
    engine = application.store.engine
    queue = SqlReviewQueue(engine)
    records = console_records(application.store)
    address = (host or web.host, port or web.port or 8080)
    await serve_console(application.service, queue, web, *address, records, SqlWebAdmins(engine))


def console_records(store: SqlStore) -> Records:
    """What the console's Watch, Audit and People pages read, on ``store``'s database."""
    from bots.web.records import Records
    from storage.audit_search import SqlAuditSearch
    from storage.people_directory import SqlPeopleDirectory
    from storage.watch import SqlWatch

    return Records(SqlWatch(store.engine), SqlAuditSearch(store.engine), SqlPeopleDirectory(store.engine))


def build_memory(settings: Settings, store: SqlStore) -> CorrectionMemory | None:
    """The correction memory: approved corrections answer at once (core.memory); None when switched off.

    Indexed by the questions' rule-made wordings too, the ones a retrain trains on; a fact the
    serving model's gate found it recalls alone is left to the model.
    """
    if not settings.memory.enabled:
        return None
    from core.embedding import default_embedder
    from finetune.gate import known_questions
    from finetune.lanes import contrasts
    from finetune.teaching import every_wording

    known: dict[str, set[str]] = {}  # a version's gate figures never change once it is registered

    def known_by(model: str) -> set[str]:
        if model not in known:
            version = next((v for v in store.list_models() if v.name == model), None)
            known[model] = {normalized(q) for q in known_questions(version.metrics)} if version else set()
        return known[model]

    embedder = default_embedder(settings.data_dir)
    return CorrectionMemory(
        SqlMemoryStore(store.engine), embedder, settings.memory, every_wording, known_by, contrasts
    )


def build_speaker(settings: Settings, store: SqlStore) -> ReplySpeaker:
    """Spoken replies: the engine the settings name, speaking off the event loop."""
    from core.speech import EspeakSynthesizer, PiperSynthesizer, find_piper_voice

    tts = settings.tts
    synthesizer: EspeakSynthesizer | PiperSynthesizer = EspeakSynthesizer(voice=tts.espeak_voice)
    if tts.engine == "piper":
        python = tts.piper_python
        model = tts.piper_model or find_piper_voice(python) or python.parent / "missing-voice.onnx"
        synthesizer = PiperSynthesizer(python, model)
    return ReplySpeaker(synthesizer, SqlVoicePreferences(store.engine), tts)
