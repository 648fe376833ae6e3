"""Every setting Iris reads, from the environment or ``.env`` (see ``.env.example``).

Names are ``IRIS_<FIELD>`` except the few that other tools already spell a
certain way (``DATABASE_URL``, ``TELEGRAM_*``, ``DISCORD_*``). Tokens are
``SecretStr`` so that they never show up in a log or a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.access import AccessPolicy
from core.service import DEFAULT_SYSTEM_PROMPT


def _env(name: str) -> AliasChoices:
    return AliasChoices(name, f"IRIS_{name}")


# Id lists come from the environment as "123,456" (JSON lists work too).
IdList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="IRIS_", env_file=".env", extra="ignore", populate_by_name=True
    )

    # --- where things live ---
    data_dir: Path = Path("data")
    database_url: str | None = Field(default=None, validation_alias=_env("DATABASE_URL"))
    log_level: str = "WARNING"

    # --- speech to text (faster-whisper) ---
    whisper_model: str = "bundled"  # "bundled" (tiny.en), a size name, a Hub id or a local path
    whisper_language: str = "auto"  # "auto" or a code such as "en"
    whisper_device: str = "cpu"
    whisper_compute_type: str = "int8"
    whisper_vad: bool = True
    whisper_beam_size: int = 5
    max_audio_seconds: float = 300.0
    max_file_mb: float = 20.0

    # --- replies (llama.cpp) ---
    llm_model: str = "bundled"  # "bundled", a .gguf path, or "owner/repo:file.gguf" on the Hub
    llm_bundled_quant: Literal["f16", "q8_0", "q4_1"] = "f16"
    llm_context_tokens: int = 2048
    llm_threads: int | None = None
    # Empty: the system prompt the model was trained with (from its chat template).
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_reply_tokens: int = 256
    # The bundled 135M model answers most coherently when greedy (bench/model_choice.py);
    # raise it for bigger models.
    temperature: float = 0.0
    top_p: float = 0.9
    top_k: int = 40
    repeat_penalty: float = 1.1
    seed: int | None = None
    history_turns: int = 40

    # --- chats ---
    shared_group_history: bool = False  # one history per group instead of one per person
    allowed_user_ids: IdList = Field(default_factory=list)  # empty: everyone
    allowed_chat_ids: IdList = Field(default_factory=list)  # empty: every chat
    allowed_role_ids: IdList = Field(default_factory=list)  # Discord roles; a listed role admits too
    admin_user_ids: IdList = Field(default_factory=list)

    # --- Telegram ---
    telegram_bot_token: SecretStr | None = Field(default=None, validation_alias=_env("TELEGRAM_BOT_TOKEN"))
    telegram_base_url: str = Field(
        default="https://api.telegram.org/bot", validation_alias=_env("TELEGRAM_BASE_URL")
    )
    telegram_base_file_url: str = Field(
        default="https://api.telegram.org/file/bot", validation_alias=_env("TELEGRAM_BASE_FILE_URL")
    )

    # --- Discord ---
    discord_bot_token: SecretStr | None = Field(default=None, validation_alias=_env("DISCORD_BOT_TOKEN"))
    discord_api_base_url: str = Field(
        default="https://discord.com/api/v10", validation_alias=_env("DISCORD_API_BASE_URL")
    )

    @field_validator("allowed_user_ids", "allowed_chat_ids", "allowed_role_ids", "admin_user_ids", mode="before")
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
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)

    @property
    def configured_platforms(self) -> list[str]:
        tokens = {"telegram": self.telegram_bot_token, "discord": self.discord_bot_token}
        return [name for name, token in tokens.items() if token and token.get_secret_value()]
