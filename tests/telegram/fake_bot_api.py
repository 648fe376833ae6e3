"""A fake Telegram Bot API server on 127.0.0.1 for the real python-telegram-bot client.

It speaks the same HTTP as api.telegram.org (``/bot<token>/<method>`` with form
fields, ``/file/bot<token>/<path>`` for downloads), delivers the updates a test
queues through ``getUpdates`` (or, once the bot set a webhook, POSTs them to it and
retries a failed delivery, as Telegram does), keeps every message the bot sent as the chat
would show it now, records every call, and refuses what Telegram refuses:
broken HTML, empty or over-long text, edits that change nothing. A test can make
any method answer with a 429 (flood control) or a 502 (a network drop), or have it
enforce Telegram's sending limits (``enforce_limits``) and count the 429s that cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any, ClassVar

from aiohttp import web

TOKEN = "5550001:TEST-fake-token"
BOT_ID = 5550001
BOT_USERNAME = "iris_test_bot"
BOT_USER = {"id": BOT_ID, "is_bot": True, "first_name": "Iris", "username": BOT_USERNAME}
TEXT_LIMIT = 4096

# Form fields PTB sends JSON-encoded; everything else arrives as a plain string.
_JSON_FIELDS = {"reply_markup", "reply_parameters", "allowed_updates", "commands", "link_preview_options"}
_INT_FIELDS = {"chat_id", "message_id", "offset", "timeout", "limit", "message_thread_id", "cache_time", "port"}


class ApiError(Exception):
    def __init__(self, status: int, description: str, parameters: dict[str, Any] | None = None) -> None:
        super().__init__(description)
        self.status, self.description, self.parameters = status, description, parameters


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    status: int = 200


@dataclass
class Sent:
    """A message the bot sent, as the chat shows it now."""

    chat_id: int
    message_id: int
    text: str
    html: str | None
    reply_markup: dict[str, Any] | None
    reply_to: int | None
    texts: list[str] = field(default_factory=list)  # every text it has shown, first to last

    @property
    def buttons(self) -> list[tuple[str, str]]:
        """(label, callback data) of its inline buttons, row by row."""
        rows = (self.reply_markup or {}).get("inline_keyboard", [])
        return [(button["text"], button.get("callback_data", "")) for row in rows for button in row]

    def as_dict(self, chat: dict[str, Any]) -> dict[str, Any]:
        message: dict[str, Any] = {
            "message_id": self.message_id,
            "date": int(time.time()),
            "chat": chat,
            "from": BOT_USER,
            "text": self.text,
        }
        if self.reply_markup and "inline_keyboard" in self.reply_markup:
            message["reply_markup"] = self.reply_markup
        return message


@dataclass
class SentAudio:
    """A voice note (``sendVoice``) or audio file (``sendAudio``) the bot sent, as uploaded."""

    chat_id: int
    message_id: int
    method: str
    data: bytes
    filename: str | None
    duration: int | None
    reply_to: int | None

    def as_dict(self, chat: dict[str, Any]) -> dict[str, Any]:
        kind = "voice" if self.method == "sendVoice" else "audio"
        media = {
            "file_id": f"sent-{self.message_id}",
            "file_unique_id": f"usent-{self.message_id}",
            "duration": self.duration or 0,
            "mime_type": "audio/ogg",
            "file_size": len(self.data),
        }
        return {
            "message_id": self.message_id,
            "date": int(time.time()),
            "chat": chat,
            "from": BOT_USER,
            kind: media,
        }


@dataclass
class Failure:
    method: str
    status: int
    retry_after: int | None
    description: str
    times: int
    skip: int
    when: Callable[[dict[str, Any]], bool] | None


# Not messages: Telegram limits these apart, if at all.
_UNCOUNTED = {"sendChatAction", "answerCallbackQuery", "getFile", "getUpdates"}


@dataclass
class FloodWait:
    """A call refused for going over one of Telegram's sending limits."""

    method: str
    chat_id: int
    limit: str  # "chat", "group" or "overall"
    retry_after: float  # seconds, as the 429 said


class _Window:
    """The arrival times of the last ``limit`` messages, over ``period`` seconds."""

    def __init__(self, limit: int, period: float) -> None:
        self.period = period
        self.times: deque[float] = deque(maxlen=limit)

    def wait(self, now: float) -> float:
        """Seconds until one more message fits (zero when it does)."""
        if len(self.times) < (self.times.maxlen or 0):
            return 0.0
        return max(0.0, self.times[0] + self.period - now)


@dataclass
class SendingLimits:
    """Telegram's documented limits, each a strict sliding window, all shortened by ``time_scale``.

    About one message a second in a chat, short bursts allowed (here: ``chat_burst`` at once, and
    no more than that in any ``chat_burst / per_chat_per_second`` seconds), 20 a minute in a group
    (a chat with a negative id), 30 a second overall. A refused message is not counted.
    """

    per_chat_per_second: float
    chat_burst: int
    per_group_per_minute: int
    overall_per_second: int
    time_scale: float
    chats: dict[int, _Window] = field(default_factory=dict)
    groups: dict[int, _Window] = field(default_factory=dict)
    overall: _Window | None = None

    def admit(self, method: str, chat_id: int, now: float) -> FloodWait | None:
        """Count the message, or say which limit it is over and how long to wait."""
        scale = self.time_scale
        if self.overall is None:
            self.overall = _Window(self.overall_per_second, scale)
        windows = {
            "chat": self.chats.setdefault(
                chat_id, _Window(self.chat_burst, self.chat_burst / self.per_chat_per_second * scale)
            ),
            "overall": self.overall,
        }
        if chat_id < 0:
            windows["group"] = self.groups.setdefault(chat_id, _Window(self.per_group_per_minute, 60 * scale))
        waits = {name: window.wait(now) for name, window in windows.items()}
        limit, wait = max(waits.items(), key=lambda item: item[1])
        if wait > 0:
            # Telegram says whole seconds; shortened like every window.
            return FloodWait(method, chat_id, limit, max(1, math.ceil(wait / scale)) * scale)
        for window in windows.values():
            window.times.append(now)
        return None


class _TelegramHtml(HTMLParser):
    """Telegram's HTML parse mode: a few tags, properly nested, or the message is refused."""

    TAGS: ClassVar[frozenset[str]] = frozenset(
        {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler", "a"}
        | {"code", "pre", "blockquote", "tg-emoji"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.TAGS:
            raise ApiError(400, f'Bad Request: can\'t parse entities: Unsupported start tag "{tag}"')
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            raise ApiError(
                400, f"Bad Request: can't parse entities: Can't find end tag corresponding to \"{tag}\""
            )
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def visible_text(text: str, parse_mode: str | None) -> str:
    if parse_mode is None:
        return text
    if parse_mode != "HTML":
        raise ApiError(400, f"Bad Request: unsupported parse_mode {parse_mode}")
    parser = _TelegramHtml()
    parser.feed(text)
    parser.close()
    if parser.stack:
        raise ApiError(400, f"Bad Request: can't parse entities: Can't find end tag for \"{parser.stack[-1]}\"")
    return "".join(parser.text)


def _entities(text: str) -> list[dict[str, Any]]:
    """The command and @mention entities Telegram's clients attach (offsets in UTF-16 units)."""

    def units(s: str) -> int:
        return len(s.encode("utf-16-le")) // 2

    found = []
    command = re.match(r"/\w+(@\w+)?", text)
    if command:
        found.append({"type": "bot_command", "offset": 0, "length": units(command.group())})
    for mention in re.finditer(r"(?<![\w/])@\w+", text):
        found.append(
            {"type": "mention", "offset": units(text[: mention.start()]), "length": units(mention.group())}
        )
    return found


def user(user_id: int, first_name: str = "Ada") -> dict[str, Any]:
    return {"id": user_id, "is_bot": False, "first_name": first_name}


def private_chat(person: dict[str, Any]) -> dict[str, Any]:
    return {"id": person["id"], "type": "private", "first_name": person["first_name"]}


def group_chat(chat_id: int = -1001234, title: str = "Team") -> dict[str, Any]:
    return {"id": chat_id, "type": "supergroup", "title": title}


class FakeBotApi:
    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.calls: list[Call] = []
        self.messages: dict[tuple[int, int], Sent] = {}
        self.audio: list[SentAudio] = []  # voice notes and audio files, in the order sent
        self.deleted: list[Sent] = []  # messages the bot deleted, in that order
        self.webhook: dict[str, Any] | None = None
        self._chats: dict[int, dict[str, Any]] = {}
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._message_ids: dict[int, itertools.count[int]] = {}
        self._file_ids = itertools.count(1)
        self._files: dict[str, tuple[str, bytes, int]] = {}
        self._downloads: list[str] = []
        self._failures: list[Failure] = []
        self.limits: SendingLimits | None = None
        self.flood_waits: list[FloodWait] = []  # every 429 the sending limits answered
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._closing = False
        self.port = 0
        self._pushes: set[asyncio.Task[None]] = set()
        self._webhook_queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.webhook_deliveries = 0
        self.webhook_failures = 0  # deliveries that failed and were tried again

    # --- server -------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._on_method)
        app.router.add_get("/file/bot{token}/{path:.+}", self._on_file)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        # Release held long polls first: aiohttp waits for running handlers on cleanup.
        self._closing = True
        for push in self._pushes:
            push.cancel()
        await self._notify()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def base_file_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/file/bot"

    async def _on_method(self, request: web.Request) -> web.Response:
        arrived = time.monotonic()
        if request.match_info["token"] != self.token:
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401
            )
        method = request.match_info["method"]
        params = _decode(dict(await request.post()) if request.can_read_body else dict(request.query))
        call = Call(method, params)
        self.calls.append(call)
        await self._notify()  # a held long poll must not hide that the bot is polling
        try:
            self._maybe_fail(method, params)
            self._within_limits(method, params, arrived)
            handler = getattr(self, f"_api_{method}", None)
            if handler is None:
                raise ApiError(404, "Not Found")
            result = await handler(params)
        except ApiError as error:
            call.status = error.status
            await self._notify()
            if error.status == 502:
                return web.Response(status=502, text="Bad Gateway")
            body: dict[str, Any] = {"ok": False, "error_code": error.status, "description": error.description}
            if error.parameters:
                body["parameters"] = error.parameters
            return web.json_response(body, status=error.status)
        await self._notify()
        return web.json_response({"ok": True, "result": result})

    async def _on_file(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        for stored_path, data, _ in self._files.values():
            if stored_path == path and request.match_info["token"] == self.token:
                self._downloads.append(path)
                return web.Response(body=data)
        return web.Response(status=404)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _maybe_fail(self, method: str, params: dict[str, Any]) -> None:
        for failure in self._failures:
            if failure.method != method or failure.times <= 0 or (failure.when and not failure.when(params)):
                continue
            if failure.skip > 0:
                failure.skip -= 1
                return
            failure.times -= 1
            if failure.retry_after is not None:
                raise ApiError(
                    429,
                    f"Too Many Requests: retry after {failure.retry_after}",
                    {"retry_after": failure.retry_after},
                )
            raise ApiError(failure.status, failure.description)

    def _within_limits(self, method: str, params: dict[str, Any], arrived: float) -> None:
        if self.limits is None or method in _UNCOUNTED or not isinstance(params.get("chat_id"), int):
            return
        flood = self.limits.admit(method, params["chat_id"], arrived)
        if flood is not None:
            self.flood_waits.append(flood)
            raise ApiError(
                429,
                f"Too Many Requests: retry after {flood.retry_after:g}",
                {"retry_after": flood.retry_after},
            )

    # --- what a test does -----------------------------------------------------------

    def enforce_limits(
        self,
        *,
        per_chat_per_second: float = 1.0,
        chat_burst: int = 3,
        per_group_per_minute: int = 20,
        overall_per_second: int = 30,
        time_scale: float = 1.0,
    ) -> None:
        """From now on answer every message over Telegram's sending limits with a 429 (``SendingLimits``).

        Every method that sends or changes a message in a chat counts; typing indicators, button
        answers and file look-ups do not. Windows last ``time_scale`` times as long as Telegram's.
        """
        self.limits = SendingLimits(
            per_chat_per_second, chat_burst, per_group_per_minute, overall_per_second, time_scale
        )

    def fail(
        self,
        method: str,
        *,
        retry_after: int | None = None,
        status: int = 429,
        description: str = "Bad Gateway",
        times: int = 1,
        skip: int = 0,
        when: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` (after ``skip`` good ones) with an error."""
        self._failures.append(Failure(method, status, retry_after, description, times, skip, when))

    def add_file(self, data: bytes, path: str) -> tuple[str, int]:
        file_id = f"file-{next(self._file_ids)}"
        self._files[file_id] = (path, data, len(data))
        return file_id, len(data)

    def deliver(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue a raw update (a copy gets its own update_id) for the next getUpdates, or the webhook."""
        update = {**update, "update_id": next(self._update_ids)}
        if self.webhook is not None:
            self._webhook_queue.put_nowait(update)
            return update
        self._updates.append(update)
        asyncio.get_running_loop().create_task(self._notify())
        return update

    async def _push(self) -> None:
        """One webhook connection: POST the next update until it answers 200, every half second."""
        import aiohttp

        async with aiohttp.ClientSession() as session:
            while True:
                update = await self._webhook_queue.get()
                webhook = self.webhook or {}
                headers = {"X-Telegram-Bot-Api-Secret-Token": str(webhook.get("secret_token") or "")}
                while True:
                    try:
                        async with session.post(webhook["url"], json=update, headers=headers) as response:
                            if response.status == 200:
                                self.webhook_deliveries += 1
                                break
                    except aiohttp.ClientError:
                        pass
                    self.webhook_failures += 1
                    await asyncio.sleep(0.5)

    def message(self, chat: dict[str, Any], sender: dict[str, Any], **content: Any) -> dict[str, Any]:
        """A message from a person, with a fresh id in its chat."""
        self._chats[chat["id"]] = chat
        message = {
            "message_id": self._next_message_id(chat["id"]),
            "date": int(time.time()),
            "chat": chat,
            "from": sender,
            **content,
        }
        return message

    def send_text(
        self, chat: dict[str, Any], sender: dict[str, Any], text: str, reply_to: Sent | None = None
    ) -> dict[str, Any]:
        content: dict[str, Any] = {"text": text}
        if entities := _entities(text):
            content["entities"] = entities
        if reply_to is not None:
            content["reply_to_message"] = reply_to.as_dict(self._chat(reply_to.chat_id))
        message = self.message(chat, sender, **content)
        self.deliver({"message": message})
        return message

    def send_voice(
        self,
        chat: dict[str, Any],
        sender: dict[str, Any],
        data: bytes,
        *,
        duration: int = 3,
        file_size: int | None = None,
        kind: str = "voice",
        mime_type: str = "audio/ogg",
        reply_to: Sent | None = None,
        caption: str | None = None,
    ) -> dict[str, Any]:
        """A voice note (or ``kind`` "audio" / "video_note" / "document") whose file this server serves."""
        file_id, size = self.add_file(data, f"{kind}/file_{len(self._files)}.oga")
        attachment: dict[str, Any] = {
            "file_id": file_id,
            "file_unique_id": f"u{file_id}",
            "file_size": size if file_size is None else file_size,
        }
        if kind in ("voice", "audio", "video_note"):
            attachment["duration"] = duration
        if kind == "video_note":
            attachment["length"] = 240
        else:
            attachment["mime_type"] = mime_type
        content: dict[str, Any] = {kind: attachment}
        if caption is not None:
            content["caption"] = caption
            if entities := _entities(caption):
                content["caption_entities"] = entities
        if reply_to is not None:
            content["reply_to_message"] = reply_to.as_dict(self._chat(reply_to.chat_id))
        message = self.message(chat, sender, **content)
        self.deliver({"message": message})
        return message

    def press(self, sender: dict[str, Any], sent: Sent, data: str) -> dict[str, Any]:
        """A press on one of the bot's inline buttons."""
        query = {
            "id": f"cb-{next(self._update_ids)}",
            "from": sender,
            "chat_instance": "ci-1",
            "data": data,
            "message": sent.as_dict(self._chat(sent.chat_id)),
        }
        return self.deliver({"callback_query": query})

    def calls_to(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    def chat(self, chat_id: int) -> list[Sent]:
        """The bot's messages in a chat, oldest first, as they show now."""
        return sorted((s for s in self.messages.values() if s.chat_id == chat_id), key=lambda s: s.message_id)

    @property
    def downloads(self) -> list[str]:
        return list(self._downloads)

    async def wait_for(self, condition: Callable[[], Any], timeout: float = 120.0) -> Any:
        """Wait until ``condition()`` is truthy (checked after every call the bot makes); return it."""

        async def check() -> Any:
            # Also looked at every 0.2 s, for conditions on things other than calls (the database).
            while not (result := condition()):
                async with self._changed:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), 0.2)
            return result

        return await asyncio.wait_for(check(), timeout)

    async def settle(self, quiet_s: float = 1.0) -> None:
        """Wait until the bot has made no call (other than polling) for ``quiet_s`` seconds."""
        seen = -1
        while seen != len(self._busy_calls()):
            seen = len(self._busy_calls())
            await asyncio.sleep(quiet_s)

    def _busy_calls(self) -> list[Call]:
        return [c for c in self.calls if c.method not in ("getUpdates", "sendChatAction")]

    # --- helpers ----------------------------------------------------------------------

    def _next_message_id(self, chat_id: int) -> int:
        counter = self._message_ids.setdefault(chat_id, itertools.count(100))
        return next(counter)

    def _chat(self, chat_id: int) -> dict[str, Any]:
        return self._chats.get(chat_id, {"id": chat_id, "type": "private", "first_name": "Someone"})

    def _message(self, params: dict[str, Any]) -> Sent:
        sent = self.messages.get((params.get("chat_id"), params.get("message_id")))  # type: ignore[arg-type]
        if sent is None:
            raise ApiError(400, "Bad Request: message to edit not found")
        return sent

    @staticmethod
    def _check_text(text: str) -> None:
        if not text.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        if len(text) > TEXT_LIMIT:
            raise ApiError(400, "Bad Request: message is too long")

    # --- the Bot API methods -------------------------------------------------------------

    async def _api_getMe(self, params: dict[str, Any]) -> Any:
        return {**BOT_USER, "can_join_groups": True, "can_read_all_group_messages": False}

    async def _api_deleteWebhook(self, params: dict[str, Any]) -> Any:
        self.webhook = None
        return True

    async def _api_setWebhook(self, params: dict[str, Any]) -> Any:
        """Deliveries go to ``url`` over at most ``max_connections`` connections at once (Telegram's
        default 40); with one, in order, each retried until it is taken before the next is sent."""
        self.webhook = params
        if not self._pushes:
            connections = int(params.get("max_connections") or 40)
            self._pushes = {asyncio.get_running_loop().create_task(self._push()) for _ in range(connections)}
        return True

    async def _api_setMyCommands(self, params: dict[str, Any]) -> Any:
        return True

    async def _api_getUpdates(self, params: dict[str, Any]) -> Any:
        offset = params.get("offset") or 0
        self._updates = [u for u in self._updates if u["update_id"] >= offset]
        if not self._updates and params.get("timeout"):
            try:
                async with self._changed:
                    await asyncio.wait_for(
                        self._changed.wait_for(lambda: bool(self._updates) or self._closing), params["timeout"]
                    )
            except TimeoutError:
                pass
        return self._updates[: params.get("limit") or 100]

    async def _api_getFile(self, params: dict[str, Any]) -> Any:
        file_id = params["file_id"]
        if file_id not in self._files:
            raise ApiError(400, "Bad Request: invalid file_id")
        path, _, size = self._files[file_id]
        return {"file_id": file_id, "file_unique_id": f"u{file_id}", "file_size": size, "file_path": path}

    async def _api_sendChatAction(self, params: dict[str, Any]) -> Any:
        return True

    async def _api_answerCallbackQuery(self, params: dict[str, Any]) -> Any:
        return True

    async def _api_sendMessage(self, params: dict[str, Any]) -> Any:
        text = visible_text(params["text"], params.get("parse_mode"))
        self._check_text(text)
        chat_id = params["chat_id"]
        reply = params.get("reply_parameters") or {}
        sent = Sent(
            chat_id,
            self._next_message_id(chat_id),
            text,
            params["text"] if params.get("parse_mode") else None,
            params.get("reply_markup"),
            reply.get("message_id"),
            [text],
        )
        self.messages[(chat_id, sent.message_id)] = sent
        return sent.as_dict(self._chat(chat_id))

    async def _api_sendVoice(self, params: dict[str, Any]) -> Any:
        return self._audio("sendVoice", params, "voice")

    async def _api_sendAudio(self, params: dict[str, Any]) -> Any:
        return self._audio("sendAudio", params, "audio")

    def _audio(self, method: str, params: dict[str, Any], field_name: str) -> Any:
        upload = params.get(field_name)
        if not isinstance(upload, web.FileField):
            raise ApiError(400, f"Bad Request: there is no {field_name} in the request")
        chat_id = params["chat_id"]
        reply = params.get("reply_parameters") or {}
        duration = params.get("duration")
        sent = SentAudio(
            chat_id,
            self._next_message_id(chat_id),
            method,
            upload.file.read(),
            upload.filename,
            int(duration) if duration is not None else None,
            reply.get("message_id"),
        )
        self.audio.append(sent)
        return sent.as_dict(self._chat(chat_id))

    async def _api_editMessageText(self, params: dict[str, Any]) -> Any:
        sent = self._message(params)
        text = visible_text(params["text"], params.get("parse_mode"))
        self._check_text(text)
        html = params["text"] if params.get("parse_mode") else None
        markup = params.get("reply_markup")  # an edit without reply_markup removes the buttons
        if (text, html, markup) == (sent.text, sent.html, sent.reply_markup):
            raise ApiError(
                400, "Bad Request: message is not modified: specified new message content is the same"
            )
        sent.text, sent.html, sent.reply_markup = text, html, markup
        sent.texts.append(text)
        return sent.as_dict(self._chat(sent.chat_id))

    async def _api_deleteMessage(self, params: dict[str, Any]) -> Any:
        sent = self._message(params)  # 400 when there is no such message
        del self.messages[(sent.chat_id, sent.message_id)]
        self.deleted.append(sent)
        return True

    async def _api_editMessageReplyMarkup(self, params: dict[str, Any]) -> Any:
        sent = self._message(params)
        markup = params.get("reply_markup")
        if markup == sent.reply_markup:
            raise ApiError(
                400, "Bad Request: message is not modified: specified new message content is the same"
            )
        sent.reply_markup = markup
        return sent.as_dict(self._chat(sent.chat_id))


def _decode(form: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key, value in form.items():
        if key in _JSON_FIELDS:
            params[key] = json.loads(value)
        elif key in _INT_FIELDS:
            params[key] = int(float(value))
        elif value in ("true", "false") and key not in ("text", "caption", "data"):
            params[key] = value == "true"
        else:
            params[key] = value
    return params
