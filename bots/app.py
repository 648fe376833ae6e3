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

from pydantic import SecretStr

from bots.settings import Settings
from core.ab import ABServing, PinnedGenerator
from core.domain import ModelVersion
from core.generation import LlamaConfig, LlamaGenerator, bundled_model, hub_gguf
from core.limits import RateLimits
from core.ports import Generation
from core.remote import ServerConfig, ServerGenerator, ServerTranscriber
from core.service import ChatService, ServiceConfig
from core.speaking import ReplySpeaker, SpeechConfig, VoiceMode
from core.transcription import WhisperConfig, WhisperTranscriber
from finetune.copies import CopyEraser
from finetune.launcher import RetrainLauncher
from storage.database import make_engine, sqlite_url
from storage.experiments import SqlExperiments
from storage.inbox import SqlInbox
from storage.migrate import upgrade
from storage.repository import SqlStore
from storage.voices import SqlVoicePreferences

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
        self.generator.load()

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

    settings = Settings()
    configure_logging(settings)
    return settings


def retrain_dir(settings: Settings) -> Path:
    """Where retrain runs keep their datasets, checkpoints, GGUFs, reports and logs."""
    return settings.retrain_dir or settings.data_dir / "retrain"


def database_url(settings: Settings) -> str:
    return settings.database_url or sqlite_url(settings.data_dir)


def open_store(settings: Settings) -> SqlStore:
    """The store, with the schema migrated to the latest version."""
    url = database_url(settings)
    upgrade(url)
    return SqlStore(make_engine(url))


def configured_model(settings: Settings) -> ModelVersion:
    """The GGUF the settings name: bundled SmolLM2 (converted once), a path, or a Hub file."""
    spec = settings.llm_model
    if spec == "bundled":
        return bundled_model(settings.data_dir / "models", settings.llm_bundled_quant)
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


def server_config(
    settings: Settings, url: str, api_key: SecretStr | None, served_model: str | None
) -> ServerConfig:
    """How to reach an OpenAI-compatible server (IRIS_LLM_URL or IRIS_WHISPER_URL), with the shared limits."""
    return ServerConfig(
        url=url,
        api_key=api_key.get_secret_value() if api_key else "none",
        served_model=served_model,
        connect_timeout_s=settings.server_connect_timeout_seconds,
        read_timeout_s=settings.server_read_timeout_seconds,
        retries=settings.server_retries,
    )


def build_transcriber(settings: Settings) -> WhisperTranscriber | ServerTranscriber:
    language = None if settings.whisper_language == "auto" else settings.whisper_language
    if settings.whisper_url:
        config = server_config(
            settings, settings.whisper_url, settings.whisper_api_key, settings.whisper_served_model
        )
        return ServerTranscriber(config, language)
    return WhisperTranscriber(
        WhisperConfig(
            model=settings.whisper_model,
            device=settings.whisper_device,
            compute_type=settings.whisper_compute_type,
            language=language,
            vad_filter=settings.whisper_vad,
            beam_size=settings.whisper_beam_size,
        )
    )


def build_generators(
    settings: Settings, store: SqlStore, model: ModelVersion
) -> tuple[LlamaGenerator | ServerGenerator, Callable[[ModelVersion], PinnedGenerator]]:
    """The generator that follows the registry, and how to make one pinned to a version (A/B arms)."""
    if settings.llm_url:
        config = server_config(settings, settings.llm_url, settings.llm_api_key, settings.llm_served_model)
        context = settings.llm_context_tokens
        return (
            ServerGenerator(config, store, model, context),
            lambda version: ServerGenerator(replace(config, served_model=None), None, version, context),
        )
    llama = LlamaConfig(
        context_tokens=settings.llm_context_tokens,
        threads=settings.llm_threads,
        parallel=settings.llm_parallel,
    )
    return LlamaGenerator(store, model, llama), lambda version: LlamaGenerator(None, version, llama)


def build_app(settings: Settings | None = None) -> App:
    settings = settings or Settings()
    store = open_store(settings)
    model = ensure_served_model(store, settings)
    transcriber = build_transcriber(settings)
    generator, pinned = build_generators(settings, store, model)
    service = ChatService(
        store,
        transcriber,
        generator,
        ServiceConfig(
            system_prompt=settings.system_prompt,
            generation=Generation(
                max_tokens=settings.max_reply_tokens,
                temperature=settings.temperature,
                top_p=settings.top_p,
                top_k=settings.top_k,
                repeat_penalty=settings.repeat_penalty,
                seed=settings.seed,
            ),
            history_turns=settings.history_turns,
            max_audio_seconds=settings.max_audio_seconds,
            max_audio_bytes=settings.max_file_bytes,
            retention_days=settings.retention_days,
            parallel_replies=settings.llm_parallel,
            max_queued_per_person=settings.max_queued_per_person,
            limits=RateLimits(
                messages_per_hour=settings.rate_limit_messages_per_hour,
                voice_minutes_per_hour=settings.rate_limit_voice_minutes_per_hour,
                exempt=frozenset(settings.admin_user_ids),
            ),
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
            timeout=settings.retrain_timeout_minutes * 60,
        ),
        copies=CopyEraser(settings.data_dir, retrain_dir(settings)),
        audit=store,
        # An A/B test's candidate is served by a second model, pinned to its version.
        ab=ABServing(SqlExperiments(store.engine), store, pinned),
        speaker=build_speaker(settings, store),
    )
    return App(settings, store, service, transcriber, generator, SqlInbox(store.engine))


def build_speaker(settings: Settings, store: SqlStore) -> ReplySpeaker:
    """Spoken replies: the engine the settings name, speaking off the event loop."""
    from core.speech import EspeakSynthesizer, PiperSynthesizer, find_piper_voice

    synthesizer: EspeakSynthesizer | PiperSynthesizer = EspeakSynthesizer(voice=settings.tts_espeak_voice)
    if settings.tts_engine == "piper":
        python = settings.tts_piper_python
        model = settings.tts_piper_model or find_piper_voice(python) or python.parent / "missing-voice.onnx"
        synthesizer = PiperSynthesizer(python, model)
    config = SpeechConfig(
        VoiceMode(settings.reply_voice), settings.max_spoken_seconds, settings.keep_spoken_audio
    )
    return ReplySpeaker(synthesizer, SqlVoicePreferences(store.engine), config)
