"""Replies and transcripts from OpenAI-compatible servers, behind the same ports as the embedded ones.

``ServerGenerator`` streams chat completions from llama.cpp's ``llama-server``,
llama-cpp-python's ``python -m llama_cpp.server``, vLLM, SGLang or Ollama;
``ServerTranscriber`` posts to ``/v1/audio/transcriptions`` (faster-whisper-server,
speaches, vLLM's whisper). Both go through the official ``openai`` client, whose
retries (exponential backoff on connection errors, 408, 429 and 5xx) and
connect/read timeouts are settings. Replies stream through the client's asynchronous
flavour on the event loop; the rest (listing models, counting tokens, transcribing)
blocks, so it uses the blocking flavour from the service's worker threads.

Model versions: a request names the registry's active version (or the version an
A/B arm pins) as its ``model``, so the server must serve every version under its
registry name (``iris models server-config`` writes llama-cpp-python's config for
it); a name the server does not list is refused here rather than answered by the
server's default model, since every reply records the version that wrote it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, SecretStr

from core.domain import ChatMessage, ModelVersion
from core.generation import LlmConfig
from core.gguf import open_gguf, serving_version
from core.ports import DecodedAudio, Generation, ModelRegistry, ServerUnavailable, Transcript
from core.transcription import WhisperConfig, decode, flac, heard

if TYPE_CHECKING:
    from openai import AsyncOpenAI, OpenAI

log = logging.getLogger(__name__)

SERVED_LIST_S = 30.0  # how long the server's list of models is trusted


@dataclass(frozen=True)
class ServerConfig:
    """How to talk to either server (``IRIS_SERVER_*``); the URLs are IRIS_LLM_URL and IRIS_WHISPER_URL."""

    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 60.0  # also the longest pause between two streamed pieces
    # Before the first token, with exponential backoff (the openai client's); a stream cut mid-reply
    # is not retried.
    retries: Annotated[int, Field(ge=0, le=10)] = 2


def openai_client(url: str, api_key: SecretStr | None, server: ServerConfig) -> OpenAI:
    """The official client for a server; servers on a private network often take any key."""
    from openai import OpenAI

    return OpenAI(**_client_options(url, api_key, server))


def async_openai_client(url: str, api_key: SecretStr | None, server: ServerConfig) -> AsyncOpenAI:
    """The same client for the event loop it is first used on (an async client belongs to one loop)."""
    from openai import AsyncOpenAI

    return AsyncOpenAI(**_client_options(url, api_key, server))


def _client_options(url: str, api_key: SecretStr | None, server: ServerConfig) -> dict[str, Any]:
    from openai import Timeout

    timeout = Timeout(server.read_timeout_seconds, connect=server.connect_timeout_seconds)
    key = api_key.get_secret_value() if api_key else "none"
    return {"base_url": url, "api_key": key, "timeout": timeout, "max_retries": server.retries}


def _unavailable(what: str, error: Exception) -> ServerUnavailable:
    import openai

    if isinstance(error, openai.APITimeoutError):
        reason = "timed out"
    elif isinstance(error, openai.APIConnectionError):
        reason = "is not reachable"
    elif isinstance(error, openai.APIStatusError):
        reason = f"answered {error.status_code}"
    else:
        reason = f"failed ({type(error).__name__})"
    return ServerUnavailable(f"the {what} server {reason}")


# Chat-control markup as the formats a server may render spell it: ``<|im_end|>`` (ChatML),
# ``<|eot_id|>`` (Llama 3), ``<start_of_turn>``, ``<bos>``, ``</s>`` (Gemma, Llama 2), ``[INST]`` (Mistral).
# A server renders the messages with the model's template and tokenizes the whole prompt with
# special tokens parsed (llama-server, llama-cpp-python's server, vLLM), so these strings in a
# person's text would become control tokens there: a zero-width space after the opening
# character keeps the text as it reads and makes it no token's text.
_CONTROL_MARKUP = re.compile(r"[<\[](?=[|｜])|<(?=/?[A-Za-z_][\w.\-]*>)|\[(?=/?[A-Z_]+\])")
_ZERO_WIDTH_SPACE = "\u200b"


def as_plain_text(content: str) -> str:
    """``content`` with every string that looks like a chat-control token broken, for a server to render."""
    return _CONTROL_MARKUP.sub(lambda mark: mark[0] + _ZERO_WIDTH_SPACE, content)


class ServerGenerator:
    """``ReplyGenerator`` on an OpenAI-compatible chat completions server."""

    def __init__(
        self,
        llm: LlmConfig,
        server: ServerConfig,
        registry: ModelRegistry | None,
        fallback: ModelVersion | None = None,
    ) -> None:
        if llm.url is None:
            raise ValueError("a server generator needs the server's URL (IRIS_LLM_URL)")
        if registry is None and fallback is None and llm.served_model is None:
            raise ValueError("a server generator needs a model registry, a model or a served model name")
        self.config = llm
        self.url = llm.url
        self.server = server
        self.registry = registry
        self.fallback = fallback
        self._client: OpenAI | None = None
        self._streaming: tuple[asyncio.AbstractEventLoop, AsyncOpenAI] | None = None  # and its loop
        self._served: set[str] = set()  # names the server listed
        self._served_at = 0.0
        self._counter: _TokenCounter | None = None
        self._lock = threading.Lock()

    @property
    def client(self) -> OpenAI:
        with self._lock:
            if self._client is None:
                self._client = openai_client(self.url, self.config.api_key, self.server)
            return self._client

    def _streaming_client(self) -> AsyncOpenAI:
        """The async client of the running event loop; a new loop (a test, a restart) gets its own."""
        loop = asyncio.get_running_loop()
        if self._streaming is None or self._streaming[0] is not loop:
            self._streaming = (loop, async_openai_client(self.url, self.config.api_key, self.server))
        return self._streaming[1]

    @property
    def model_name(self) -> str:
        return self.config.served_model or self._wanted().name

    @property
    def context_tokens(self) -> int:
        return self.config.context_tokens

    def _wanted(self) -> ModelVersion:
        return serving_version(self.registry, self.fallback)

    def _check_served(self, name: str) -> None:
        """Refuse a name the server does not list: it would answer with its default model instead.

        The list is asked again after ``SERVED_LIST_S``, so a server restarted with other
        models is noticed.
        """
        if name in self._served and time.monotonic() - self._served_at < SERVED_LIST_S:
            return
        try:
            listed = {model.id for model in self.client.models.list()}
        except Exception as error:
            raise _unavailable("model", error) from error
        self._served, self._served_at = listed, time.monotonic()
        if name not in listed:
            served = ", ".join(sorted(listed)) or "nothing"
            raise ServerUnavailable(
                f"the model server does not serve {name!r} (it serves {served}); "
                "add it to the server's models (iris models server-config)"
            )

    def load(self) -> None:
        """Check at start that the server serves the model; a server still down is only logged."""
        try:
            self._check_served(self.model_name)
        except ServerUnavailable as down:
            log.warning("%s; replies wait for it", down)

    def count_tokens(self, text: str) -> int:
        counter = self._counter
        if counter is None:
            counter = self._counter = _TokenCounter(self.url, self.config.api_key, self.server, self.fallback)
        return counter.count(self.model_name, as_plain_text(text))  # counted as it is sent

    def _served_name(self) -> str:
        """The name this reply asks the server for, checked against what it serves (blocking)."""
        name = self.model_name
        self._check_served(name)
        return name

    async def stream(self, messages: Sequence[ChatMessage], options: Generation) -> AsyncGenerator[str, None]:
        name = await asyncio.to_thread(self._served_name)
        extra: dict[str, Any] = {"top_k": options.top_k, "repeat_penalty": options.repeat_penalty}
        payload: Any = [{"role": m.role, "content": as_plain_text(m.content)} for m in messages]
        try:
            chunks = await self._streaming_client().chat.completions.create(
                model=name,
                messages=payload,
                stream=True,
                max_tokens=options.max_tokens,
                temperature=options.temperature,
                top_p=options.top_p,
                seed=options.seed,
                extra_body=extra,
            )
        except Exception as error:
            raise _unavailable("model", error) from error
        try:
            async for chunk in chunks:
                piece = chunk.choices[0].delta.content if chunk.choices else None
                if piece:
                    yield piece
        except Exception as error:
            raise _unavailable("model", error) from error
        finally:
            await chunks.close()  # the caller stopped listening or the reply ended: free the server's slot

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
            streaming, self._streaming = self._streaming, None
        if streaming is not None and streaming[0].is_running():  # an async client closes on its own loop
            asyncio.run_coroutine_threadsafe(streaming[1].close(), streaming[0])


class _TokenCounter:
    """Counts tokens with the server's own tokenizer endpoint, or the version's GGUF vocabulary.

    llama-cpp-python's server has ``/extras/tokenize/count``, llama.cpp's ``llama-server``
    ``/tokenize``; vLLM and others have neither, and then the local GGUF's vocabulary
    counts (loaded with ``vocab_only``: no weights).
    """

    def __init__(
        self, url: str, api_key: SecretStr | None, server: ServerConfig, local: ModelVersion | None
    ) -> None:
        import httpx

        root = url.rstrip("/").removesuffix("/v1")
        headers = {"Authorization": f"Bearer {api_key.get_secret_value() if api_key else 'none'}"}
        timeout = httpx.Timeout(server.read_timeout_seconds, connect=server.connect_timeout_seconds)
        self._http = httpx.Client(base_url=root, headers=headers, timeout=timeout)
        self._local = local
        self._way: str | None = None
        self._vocab: Any = None

    def count(self, model: str, text: str) -> int:
        import httpx

        ways = [self._way] if self._way else ["extras", "tokenize", "local"]
        for way in ways:
            try:
                if way == "extras":
                    response = self._http.post("/extras/tokenize/count", json={"input": text, "model": model})
                    response.raise_for_status()
                    count = int(response.json()["count"])
                elif way == "tokenize":
                    response = self._http.post("/tokenize", json={"content": text})
                    response.raise_for_status()
                    count = len(response.json()["tokens"])
                else:
                    count = self._local_count(text)
            except httpx.HTTPStatusError as error:
                if error.response.status_code in (404, 405):
                    continue  # this server has no such endpoint: the next way
                raise _unavailable("model", error) from error
            except httpx.TransportError as error:
                raise ServerUnavailable("the model server is not reachable") from error
            self._way = way
            return count
        raise RuntimeError("no way to count tokens")

    def _local_count(self, text: str) -> int:
        if self._local is None:
            raise RuntimeError(
                "the model server has no tokenizer endpoint and no local GGUF is configured to count tokens"
            )
        if self._vocab is None:
            self._vocab = open_gguf(self._local.gguf_path, vocab_only=True, n_ctx=64)
        return len(self._vocab.tokenize(text.encode(), add_bos=False, special=False))


class ServerTranscriber:
    """``Transcriber`` on an OpenAI-compatible ``/v1/audio/transcriptions`` server.

    The audio is decoded here first (with PyAV, to the length limit, whatever its header
    claims), and what was decoded is what the server gets, as FLAC: the limits on length and
    on voice minutes hold as with the embedded whisper, and the server never hears more.
    """

    def __init__(self, whisper: WhisperConfig, server: ServerConfig) -> None:
        if whisper.url is None:
            raise ValueError("a server transcriber needs the server's URL (IRIS_WHISPER_URL)")
        self.config = whisper
        self.url = whisper.url
        self.server = server
        self._client: OpenAI | None = None
        self._lock = threading.Lock()

    def decode(self, audio: bytes, max_seconds: float) -> DecodedAudio:
        # Undecodable or overlong audio is the person's to hear about, not the server's.
        return decode(audio, max_seconds)

    def _client_now(self) -> OpenAI:
        with self._lock:
            if self._client is None:
                self._client = openai_client(self.url, self.config.api_key, self.server)
            return self._client

    def load(self) -> None:
        """Nothing to load: transcription servers have no common health endpoint to check."""
        self._client_now()

    def transcribe(self, audio: DecodedAudio, language: str | None = None) -> Transcript:
        client = self._client_now()
        from openai import omit

        try:
            result = client.audio.transcriptions.create(
                model=self.config.served_model or "whisper-1",
                file=("voice.flac", flac(audio)),
                response_format="verbose_json",
                language=language or self.config.language_code or omit,
            )
        except Exception as error:
            raise _unavailable("transcription", error) from error
        segments = getattr(result, "segments", None)
        # The server's VAD is not reported: only whisper's own scores and the note's length judge phantoms.
        text = " ".join(heard(segments, audio.seconds)) if segments else result.text.strip()
        return Transcript(text.strip(), getattr(result, "language", None), audio.seconds)
