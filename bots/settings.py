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
from core.experiments import DEFAULT_MARGIN, DEFAULT_MIN_RATINGS
from core.service import DEFAULT_SYSTEM_PROMPT


def _env(name: str) -> AliasChoices:
    return AliasChoices(name, f"IRIS_{name}")


# Id lists come from the environment as "123,456" (JSON lists work too).
IdList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    # env_ignore_empty: `IRIS_SEED=` as copied from .env.example means "the default".
    model_config = SettingsConfigDict(
        env_prefix="IRIS_", env_file=".env", extra="ignore", populate_by_name=True, env_ignore_empty=True
    )

    # --- where things live ---
    data_dir: Path = Path("data")
    database_url: str | None = Field(default=None, validation_alias=_env("DATABASE_URL"))
    log_level: str = "WARNING"

    # --- speech to text (faster-whisper) ---
    # An OpenAI-compatible /v1/audio/transcriptions server instead of the embedded whisper (docs/deploy.md).
    whisper_url: str | None = None
    whisper_api_key: SecretStr | None = None
    whisper_served_model: str | None = None  # the name the server knows its model by; empty: whisper-1
    whisper_model: str = "bundled"  # "bundled" (tiny.en), a size name, a Hub id or a local path
    whisper_language: str = "auto"  # "auto" or a code such as "en"
    whisper_device: str = "cpu"
    whisper_compute_type: str = "int8"
    whisper_vad: bool = True
    whisper_beam_size: int = 5
    max_audio_seconds: float = 300.0
    max_file_mb: float = 20.0

    # --- replies (llama.cpp) ---
    # An OpenAI-compatible server (llama-server, llama_cpp.server, vLLM, SGLang, Ollama) instead of
    # the embedded llama.cpp; requests name the registry's version unless a served model is set.
    llm_url: str | None = None
    llm_api_key: SecretStr | None = None
    llm_served_model: str | None = None
    # Both servers: timeouts (the read timeout is also the longest pause in a stream) and retries
    # with exponential backoff before the first token (the openai client's).
    server_connect_timeout_seconds: float = 5.0
    server_read_timeout_seconds: float = 60.0
    server_retries: int = Field(default=2, ge=0, le=10)
    llm_model: str = "bundled"  # "bundled", a .gguf path, or "owner/repo:file.gguf" on the Hub
    llm_bundled_quant: Literal["f16", "q8_0", "q4_1"] = "f16"
    llm_context_tokens: int = 2048  # per reply being written
    llm_threads: int | None = None
    # Replies decoded together in one llama.cpp context (continuous batching); each
    # holds llm_context_tokens of KV cache. Beyond it, replies wait round-robin per person.
    llm_parallel: int = Field(default=4, ge=1, le=64)
    # Messages of one person being answered or waiting; past it they are asked to wait.
    max_queued_per_person: int = Field(default=3, ge=1)
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
    # Conversations whose last message is older than this many days are deleted (daily, and by
    # `iris db prune`); consented ones with feedback are kept as training data without identity. 0: keep.
    retention_days: float = 0.0
    # Per person and sliding hour, admins exempt; 0: no limit. Over it, the person is told when to come back.
    rate_limit_messages_per_hour: int = 0
    rate_limit_voice_minutes_per_hour: float = 0.0

    # --- feedback and datasets ---
    # People who never said yes or no to training use: "opt-out" counts them in, "opt-in" leaves them out.
    feedback_consent: Literal["opt-out", "opt-in"] = "opt-out"
    # Mask e-mail addresses and phone numbers in exported feedback.
    feedback_scrub: bool = True
    # How many earlier turns an exported example keeps as its context.
    feedback_context_turns: int = 20
    # FineTome for `iris dataset build`: "sample" (shipped), a Hub name such as
    # mlabonne/FineTome-100k, or a local parquet/JSONL path.
    dataset_finetome: str = "sample"
    dataset_sample_size: int | None = 2000  # FineTome rows drawn after the score filter; empty: all
    dataset_min_score: float | None = 3.5  # FineTome's own quality score; empty: keep all
    dataset_min_chars: int = 2  # replies shorter than this are dropped
    dataset_max_chars: int = 8000  # whole conversations longer than this are dropped
    dataset_near_duplicate: float = 0.8  # estimated Jaccard similarity of a duplicate; 1: exact only
    dataset_feedback_oversample: float = 3.0  # copies of each feedback example in training
    dataset_person_cap: int = 50  # feedback examples one person may contribute; 0: no cap
    dataset_eval_fraction: float = 0.1  # feedback held out for evaluation
    dataset_eval_finetome: int = 100  # FineTome rows held out for evaluation
    dataset_seed: int = 42

    @field_validator("dataset_sample_size", "dataset_min_score", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        # .env.example leaves these as `NAME=` to mean "no limit".
        return None if isinstance(value, str) and not value.strip() else value

    # --- retraining ---
    # "auto" (llama-3.2-1b on an NVIDIA GPU with Unsloth, cpu-tiny otherwise) or a profile name.
    retrain_profile: str = "auto"
    # Runs (dataset, checkpoints, GGUF, report) go to <dir>/runs/<name>; empty: <data_dir>/retrain.
    retrain_dir: Path | None = None
    # GGUF bases converted once for transformers; empty: <data_dir>/models/hf.
    retrain_base_cache: Path | None = None
    # Overrides of the profile's values; empty keeps the profile's.
    retrain_backend: Literal["auto", "unsloth", "trl"] | None = None
    retrain_base_model: str | None = None  # a Hub id, an HF directory, a .gguf file or "bundled"
    retrain_objective: str | None = None  # sft, sft+kto, dpo or sft+dpo
    retrain_max_steps: int | None = None
    retrain_learning_rate: float | None = None
    retrain_batch_size: int | None = None
    retrain_max_seq_length: int | None = None
    retrain_save_steps: int | None = None
    retrain_quant: Literal["auto", "f16", "q8_0", "q4_k_m"] | None = None
    retrain_threads: int | None = None  # torch's CPU threads; empty: the cores free when a run starts
    # Teaching (docs/retrain.md): the share of training rows that are taught answers, whether the
    # rule-made rephrasings are trained too, steps per taught fact and their cap, and the NLL per
    # token at which every taught answer is learned and training stops (0: off).
    retrain_teach_weight: float | None = None
    retrain_teach_wordings: bool | None = None
    retrain_steps_per_fact: int | None = None
    retrain_max_teach_steps: int | None = None
    retrain_teach_target_nll: float | None = None
    # A chat /retrain is stopped after this many minutes (the run can be resumed).
    retrain_timeout_minutes: float = 180.0
    # The gate: the candidate's FineTome NLL may exceed the active model's by this fraction at most,
    # and its held-out feedback NLL must be lower by more than the gain (nats per token).
    gate_finetome_tolerance: float = 0.05
    gate_min_feedback_gain: float = 0.0
    gate_max_rows: int = 64  # held-out rows scored per split
    gate_context_tokens: int = 1024
    # The candidate may get at most this share of the general-knowledge probe fewer right
    # (finetune/data/probe.jsonl); IRIS_GATE_PROBE_QUESTIONS=N asks only the first N (0: all).
    gate_probe_tolerance: float = 0.05
    gate_probe_questions: int = 0
    # The share of taught facts whose greedy answer must contain the key words.
    gate_recall_share: float = 1.0
    # A/B tests (iris models ab start): promote when the candidate's 👍 share is, at 95 %, not worse
    # than the active version's by more than the margin, once both arms have the ratings.
    ab_margin: float = DEFAULT_MARGIN
    retrain_ab_share: float | None = None  # set: a retrained candidate that passes the gate is A/B tested
    ab_min_ratings: int = DEFAULT_MIN_RATINGS  # per arm; how it was chosen: docs/ab.md

    @field_validator(
        "retrain_dir",
        "retrain_base_cache",
        "retrain_backend",
        "retrain_base_model",
        "retrain_objective",
        "retrain_max_steps",
        "retrain_learning_rate",
        "retrain_batch_size",
        "retrain_max_seq_length",
        "retrain_save_steps",
        "retrain_quant",
        "retrain_threads",
        "retrain_teach_weight",
        "retrain_teach_wordings",
        "retrain_steps_per_fact",
        "retrain_max_teach_steps",
        "retrain_teach_target_nll",
        mode="before",
    )
    @classmethod
    def _empty_keeps_profile(cls, value: Any) -> Any:
        # .env.example leaves these as `NAME=` to mean "the profile's value".
        return None if isinstance(value, str) and not value.strip() else value

    # --- spoken replies (text to speech; README: Spoken replies) ---
    # Which replies are also sent as a voice note, for people who have not said /voice on|off:
    # "mirror" answers a voice note with one, "always" every message, "off" none.
    reply_voice: Literal["off", "mirror", "always"] = "mirror"
    # "espeak" (espeak-ng, a Debian package) or "piper" (GPL, its own environment: make piper).
    tts_engine: Literal["espeak", "piper"] = "espeak"
    tts_espeak_voice: str = "en-us"
    tts_piper_python: Path = Path(".venv-piper/bin/python")
    tts_piper_model: Path | None = None  # empty: the voice `make piper` installs (en_US joe, medium)
    # Longer replies are spoken in part (whole sentences); the text reply is always complete.
    max_spoken_seconds: float = Field(default=60.0, gt=0, le=600)
    # Keep each spoken reply's OGG in the database with the reply (deleted with it); off: only its timings.
    keep_spoken_audio: bool = False

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
    telegram_webhook_url: str = Field(default="", validation_alias=_env("TELEGRAM_WEBHOOK_URL"))
    # Checked on every delivery (X-Telegram-Bot-Api-Secret-Token); empty: a random one per start.
    telegram_webhook_secret: SecretStr | None = Field(
        default=None, validation_alias=_env("TELEGRAM_WEBHOOK_SECRET")
    )
    telegram_webhook_listen: str = Field(default="0.0.0.0", validation_alias=_env("TELEGRAM_WEBHOOK_LISTEN"))
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
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)

    @property
    def configured_platforms(self) -> list[str]:
        tokens = {"telegram": self.telegram_bot_token, "discord": self.discord_bot_token}
        return [name for name, token in tokens.items() if token and token.get_secret_value()]
