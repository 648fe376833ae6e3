"""Every setting Iris reads, from the environment or ``.env`` (see ``.env.example``).

Each component takes its settings group as it is: ``IRIS_WHISPER_MODEL`` is
``settings.whisper.model``, a field of ``core.transcription.WhisperConfig``, which the
transcriber is given whole. A group's variables are ``IRIS_<GROUP>_<FIELD>``; the few
ungrouped ones are ``IRIS_<FIELD>``, and those other tools already spell a certain way
keep their names (``DATABASE_URL``, ``TELEGRAM_*``, ``DISCORD_*``). Tokens and keys are
``SecretStr`` so that they never show up in a log or a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from dotenv import dotenv_values
from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bots.web.config import WebConfig
from core.access import AccessPolicy
from core.config import ChatConfig
from core.experiments import ABConfig
from core.generation import LlmConfig
from core.limits import RateLimits
from core.memory import MemoryConfig
from core.ports import Generation
from core.remote import ServerConfig
from core.speaking import SpeechConfig
from core.transcription import WhisperConfig
from finetune.config import BuildConfig, FeedbackConfig, GateConfig, RetrainSettings


def _env(name: str) -> AliasChoices:
    return AliasChoices(name, f"IRIS_{name}")


# Id lists come from the environment as "123,456" (JSON lists work too).
IdList = Annotated[list[str], NoDecode]

# Names that moved into a group; a value left under the old name is refused rather than ignored.
RENAMED = {
    "IRIS_SYSTEM_PROMPT": "IRIS_CHAT_SYSTEM_PROMPT",
    "IRIS_HISTORY_TURNS": "IRIS_CHAT_HISTORY_TURNS",
    "IRIS_MAX_AUDIO_SECONDS": "IRIS_CHAT_MAX_AUDIO_SECONDS",
    "IRIS_MAX_FILE_MB": "IRIS_CHAT_MAX_FILE_MB",
    "IRIS_RETENTION_DAYS": "IRIS_CHAT_RETENTION_DAYS",
    "IRIS_MAX_QUEUED_PER_PERSON": "IRIS_CHAT_MAX_QUEUED_PER_PERSON",
    "IRIS_MAX_REPLY_TOKENS": "IRIS_GENERATION_MAX_TOKENS",
    "IRIS_TEMPERATURE": "IRIS_GENERATION_TEMPERATURE",
    "IRIS_TOP_P": "IRIS_GENERATION_TOP_P",
    "IRIS_TOP_K": "IRIS_GENERATION_TOP_K",
    "IRIS_REPEAT_PENALTY": "IRIS_GENERATION_REPEAT_PENALTY",
    "IRIS_SEED": "IRIS_GENERATION_SEED",
    "IRIS_REPLY_VOICE": "IRIS_TTS_REPLIES",
    "IRIS_MAX_SPOKEN_SECONDS": "IRIS_TTS_MAX_SECONDS",
    "IRIS_KEEP_SPOKEN_AUDIO": "IRIS_TTS_KEEP_AUDIO",
}


class Settings(BaseSettings):
    # A group's variables split once after the group's name: IRIS_WHISPER_COMPUTE_TYPE is
    # whisper.compute_type. env_ignore_empty: `IRIS_GENERATION_SEED=` as copied from
    # .env.example means "the default".
    model_config = SettingsConfigDict(
        env_prefix="IRIS_",
        env_file=".env",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="ignore",
        populate_by_name=True,
        env_ignore_empty=True,
    )

    # --- where things live ---
    data_dir: Path = Path("data")
    database_url: str | None = Field(default=None, validation_alias=_env("DATABASE_URL"))
    log_level: str = "WARNING"

    # --- the groups, one per component (.env.example lists every field) ---
    whisper: WhisperConfig = Field(default_factory=WhisperConfig)  # speech to text
    llm: LlmConfig = Field(default_factory=LlmConfig)  # the replies' model
    server: ServerConfig = Field(default_factory=ServerConfig)  # timeouts and retries of both servers
    generation: Generation = Field(default_factory=Generation)  # how a reply is written
    chat: ChatConfig = Field(default_factory=ChatConfig)  # the chat service
    rate_limit: RateLimits = Field(default_factory=RateLimits)  # per person, admins exempt
    tts: SpeechConfig = Field(default_factory=SpeechConfig)  # spoken replies
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)  # what becomes training data
    dataset: BuildConfig = Field(default_factory=BuildConfig)  # iris dataset build
    retrain: RetrainSettings = Field(default_factory=RetrainSettings)  # iris retrain
    gate: GateConfig = Field(default_factory=GateConfig)  # when a retrained model may replace the active one
    ab: ABConfig = Field(default_factory=ABConfig)  # A/B tests of model versions
    memory: MemoryConfig = Field(default_factory=MemoryConfig)  # approved corrections answer at once
    web: WebConfig = Field(default_factory=WebConfig)  # the admins' web console (iris web; docs/web.md)

    # --- chats ---
    shared_group_history: bool = False  # one history per group instead of one per person
    allowed_user_ids: IdList = Field(default_factory=list)  # empty: everyone
    allowed_chat_ids: IdList = Field(default_factory=list)  # empty: every chat
    allowed_role_ids: IdList = Field(default_factory=list)  # Discord roles; a listed role admits too
    admin_user_ids: IdList = Field(default_factory=list)
    # TOML personas loaded into the database when the file changes (core.personas; docs/personas.md).
    personas_file: Path | None = None
    # Whether a person may change their own private chat's settings with /settings (admins change
    # any chat's); false: admins only (core.chat_settings; docs/personas.md).
    settings_self: bool = True

    # --- Telegram ---
    telegram_bot_token: SecretStr | None = Field(default=None, validation_alias=_env("TELEGRAM_BOT_TOKEN"))
    telegram_base_url: str = Field(
        default="https://api.telegram.org/bot", validation_alias=_env("TELEGRAM_BASE_URL")
    )
    telegram_base_file_url: str = Field(
        default="https://api.telegram.org/file/bot", validation_alias=_env("TELEGRAM_BASE_FILE_URL")
    )
    # In groups the bot answers when mentioned or replied to; "all" also answers every voice note.
    telegram_group_voice: Literal["addressed", "all"] = Field(
        default="addressed", validation_alias=_env("TELEGRAM_GROUP_VOICE")
    )
    # Streaming edits: Telegram allows about one a second per chat and 20 messages a minute in a group.
    telegram_edit_interval_seconds: float = Field(
        default=1.0, validation_alias=_env("TELEGRAM_EDIT_INTERVAL_SECONDS")
    )
    telegram_group_edit_interval_seconds: float = Field(
        default=3.0, validation_alias=_env("TELEGRAM_GROUP_EDIT_INTERVAL_SECONDS")
    )
    # Webhook mode when a public HTTPS URL is set; long polling otherwise.
    # With a database, Telegram updates are stored before they are acknowledged and claimed by the
    # processes sharing it (docs/deploy.md); a process that stops gives its claims back after this long.
    inbox_lease_seconds: float = Field(default=30.0, gt=0)
    # An update whose handling crashed or hung the process this many times is set aside, and its
    # sender told, rather than taking down every process in turn.
    inbox_max_attempts: int = Field(default=3, ge=1)
    telegram_webhook_url: str = Field(default="", validation_alias=_env("TELEGRAM_WEBHOOK_URL"))
    # Checked on every delivery (X-Telegram-Bot-Api-Secret-Token); empty: one derived from the bot
    # token, the same in every process (bots.telegram_bot.webhook).
    telegram_webhook_secret: SecretStr | None = Field(
        default=None, validation_alias=_env("TELEGRAM_WEBHOOK_SECRET")
    )
    # Loopback: only a reverse proxy on this machine reaches the webhook server.
    telegram_webhook_listen: str = Field(default="127.0.0.1", validation_alias=_env("TELEGRAM_WEBHOOK_LISTEN"))
    telegram_webhook_port: int = Field(default=8443, validation_alias=_env("TELEGRAM_WEBHOOK_PORT"))
    # The local path the webhook server answers on; empty: the path of TELEGRAM_WEBHOOK_URL.
    telegram_webhook_path: str = Field(default="", validation_alias=_env("TELEGRAM_WEBHOOK_PATH"))
    # Telegram's connections to the webhook at once. One (the default) makes Telegram deliver in
    # order, retrying a failed delivery before it sends the next; each delivery is only stored in
    # the database before it is answered, so one connection keeps up with a crowd.
    telegram_webhook_max_connections: int = Field(
        default=1, ge=1, le=100, validation_alias=_env("TELEGRAM_WEBHOOK_MAX_CONNECTIONS")
    )

    # --- Discord ---
    discord_bot_token: SecretStr | None = Field(default=None, validation_alias=_env("DISCORD_BOT_TOKEN"))
    discord_api_base_url: str = Field(
        default="https://discord.com/api/v10", validation_alias=_env("DISCORD_API_BASE_URL")
    )
    # When to answer in servers (DMs are always answered): "mention" (mentioned or replied to),
    # "voice" (also every voice message in allowed channels), "all" (every message there).
    discord_reply_mode: Literal["mention", "voice", "all"] = Field(
        default="mention", validation_alias=_env("DISCORD_REPLY_MODE")
    )
    # What one conversation is: the channel or thread ("channel") or one reply chain ("reply_chain").
    discord_conversation: Literal["channel", "reply_chain"] = Field(
        default="channel", validation_alias=_env("DISCORD_CONVERSATION")
    )
    # The privileged Message Content intent (enable it in the Developer Portal); without it the
    # bot only reads messages that mention it, replies to it and DMs.
    discord_message_content: bool = Field(default=True, validation_alias=_env("DISCORD_MESSAGE_CONTENT"))
    # Seconds between edits of a streaming reply (Discord allows about five edits per 5 s per channel).
    discord_edit_interval_seconds: float = Field(
        default=1.0, validation_alias=_env("DISCORD_EDIT_INTERVAL_SECONDS")
    )
    # Publish the slash commands at start-up (a bulk overwrite; harmless when nothing changed).
    discord_sync_commands: bool = Field(default=True, validation_alias=_env("DISCORD_SYNC_COMMANDS"))
    # Shards, to spread the gateway over several processes: every process gets the same count and
    # its own ids ("0", "1", or "0,1"); DMs arrive on shard 0. Empty: as many as Discord advises,
    # all in this process.
    discord_shard_count: int | None = Field(default=None, ge=1, validation_alias=_env("DISCORD_SHARD_COUNT"))
    discord_shard_ids: Annotated[list[int], NoDecode] = Field(
        default_factory=list, validation_alias=_env("DISCORD_SHARD_IDS")
    )

    @field_validator(
        "allowed_user_ids",
        "allowed_chat_ids",
        "allowed_role_ids",
        "admin_user_ids",
        "discord_shard_ids",
        mode="before",
    )
    @classmethod
    def _split_ids(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip()
            if value.startswith("["):
                import json

                value = json.loads(value)
            else:
                return [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple):
            return [str(item) for item in value]
        return value

    @property
    def access(self) -> AccessPolicy:
        return AccessPolicy.of(
            users=self.allowed_user_ids,
            chats=self.allowed_chat_ids,
            admins=self.admin_user_ids,
            roles=self.allowed_role_ids,
        )

    @property
    def configured_platforms(self) -> list[str]:
        tokens = {"telegram": self.telegram_bot_token, "discord": self.discord_bot_token}
        return [name for name, token in tokens.items() if token and token.get_secret_value()]


class RenamedSettings(ValueError):
    """A setting is still given under a name it no longer has."""


def check_renamed(env_file: Path | None = Path(".env")) -> None:
    """Refuse old setting names in the environment or ``env_file``: ignored, they would silently
    change what the bot does (a retention period no longer applied, say)."""
    given = set(os.environ)
    if env_file is not None and env_file.is_file():
        given |= set(dotenv_values(env_file))
    old = [f"{name} is now {RENAMED[name]}" for name in sorted(given & RENAMED.keys())]
    if old:
        raise RenamedSettings("renamed settings: " + "; ".join(old) + " (see .env.example)")
