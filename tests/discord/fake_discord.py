"""A fake Discord on 127.0.0.1: enough REST API, CDN and gateway for the real discord.py client.

It keeps what people would see (messages with their edits and buttons, the
private answers to their button presses and commands) and lets a test act as a
person: post a message (with a voice attachment), press a button, submit a
form, run a slash command. It also lets a test misbehave like Discord does:
answer a request with a 429, or drop the gateway connection.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

API = "/api/v10"
EPHEMERAL = 1 << 6
LOADING = 1 << 7
VOICE_MESSAGE = 1 << 13
ALL_PERMISSIONS = str((1 << 50) - 1)

Json = dict[str, Any]


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class Interaction:
    """One interaction the fake sent, and what the bot answered to it."""

    id: int
    token: str
    kind: int
    user: Json
    channel_id: int
    message_id: int | None = None
    callbacks: list[Json] = field(default_factory=list)
    original_id: int | None = None
    shown: list[str] = field(default_factory=list)  # texts the person saw, in order
    followup_ids: list[int] = field(default_factory=list)

    @property
    def modal(self) -> Json | None:
        return next((c["data"] for c in self.callbacks if c["type"] == 9), None)


@dataclass
class RateLimit:
    method: str
    path: re.Pattern[str]
    times: int
    retry_after: float


@dataclass
class Request:
    method: str
    path: str
    at: float
    status: int = 0
    body: Json | None = None


class FakeDiscord:
    """Discord's REST API under ``/api/v10``, a CDN under ``/attachments`` and a gateway websocket."""

    def __init__(self, token: str = "fake-bot-token", guild_id: int | None = None) -> None:
        self.token = token
        self._ids = itertools.count(1_300_000_000_000_000_000)
        self.app_id = self.new_id()
        self.bot_user: Json = self._user("Iris", bot=True, user_id=self.app_id)
        self.guild_id = guild_id or self.new_id()  # its bits from 22 up choose its shard
        self.member_role_id = self.new_id()
        self.roles: list[Json] = [
            self._role(self.guild_id, "@everyone", 0),
            self._role(self.member_role_id, "listeners", 1),
        ]
        self.channel_id = self.new_id()
        self.other_channel_id = self.new_id()
        self.thread_id = self.new_id()
        self.member_roles: dict[str, list[str]] = {}
        self.owner = self.add_user("owner")
        self.dm_channels: dict[str, int] = {}
        self.messages: dict[int, Json] = {}
        self.revisions: dict[int, list[str]] = {}  # every content a message had, in order
        self.deleted: set[int] = set()
        self.interactions: dict[int, Interaction] = {}
        self.commands: list[Json] = []
        self.files: dict[str, bytes] = {}
        self.refuse_voice_messages = False  # as a channel where voice messages are not allowed
        self.downloads: list[str] = []
        self.requests: list[Request] = []
        self.rate_limits: list[RateLimit] = []
        self.identifies: list[Json] = []
        self.resumes: list[Json] = []
        self.events: list[tuple[int, str, Json]] = []
        self.session_id = secrets.token_hex(16)
        self._socket: web.WebSocketResponse | None = None
        self._shard_sockets: dict[int, web.WebSocketResponse] = {}  # shards other than 0
        self.shard_count = 1
        self.routed: list[tuple[str, int]] = []  # (event, shard) of every dispatch
        self._send_lock = asyncio.Lock()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- running -----------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        hook = f"{API}/webhooks/{{app}}/{{token}}"
        app.add_routes(
            [
                web.get("/gateway", self._gateway),
                web.get("/resume", self._gateway),
                web.get("/attachments/{channel}/{attachment}/{filename}", self._download),
                web.get(f"{API}/users/@me", self._me),
                web.get(f"{API}/oauth2/applications/@me", self._application),
                web.get(f"{API}/gateway/bot", self._gateway_bot),
                web.get(f"{API}/gateway", self._gateway_bot),
                web.put(f"{API}/applications/{{app}}/commands", self._sync_commands),
                web.post(f"{API}/channels/{{channel}}/typing", self._typing),
                web.post(f"{API}/channels/{{channel}}/messages", self._create_message),
                web.get(f"{API}/channels/{{channel}}", self._get_channel),
                web.get(f"{API}/channels/{{channel}}/messages/{{message}}", self._get_message),
                web.patch(f"{API}/channels/{{channel}}/messages/{{message}}", self._edit_message),
                web.delete(f"{API}/channels/{{channel}}/messages/{{message}}", self._delete_message),
                web.post(f"{API}/interactions/{{id}}/{{token}}/callback", self._callback),
                web.post(hook, self._followup),
                web.patch(f"{hook}/messages/{{message}}", self._edit_webhook_message),
                web.get(f"{hook}/messages/{{message}}", self._get_webhook_message),
                web.delete(f"{hook}/messages/{{message}}", self._delete_webhook_message),
            ]
        )
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._socket is not None:
            await self._socket.close()
        for socket in self._shard_sockets.values():
            await socket.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{API}"

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def connected(self) -> bool:
        return self._socket is not None and not self._socket.closed

    # --- people, ids, payloads ---------------------------------------------------

    def new_id(self) -> int:
        return next(self._ids)

    def _user(self, name: str, *, bot: bool = False, user_id: int | None = None) -> Json:
        return {
            "id": str(user_id or self.new_id()),
            "username": name,
            "global_name": name.title(),
            "discriminator": "0",
            "avatar": None,
            "bot": bot,
            "public_flags": 0,
        }

    def add_user(self, name: str, roles: list[int] | None = None) -> Json:
        """A person in the server (with the given role ids besides @everyone)."""
        user = self._user(name)
        self.member_roles[user["id"]] = [str(role) for role in roles or []]
        return user

    def _role(self, role_id: int, name: str, position: int) -> Json:
        return {
            "id": str(role_id),
            "name": name,
            "color": 0,
            "hoist": False,
            "position": position,
            "permissions": ALL_PERMISSIONS if position == 0 else "0",
            "managed": False,
            "mentionable": True,
            "flags": 0,
        }

    def _member(self, user: Json, with_user: bool = True) -> Json:
        member: Json = {
            "roles": self.member_roles.get(user["id"], []),
            "joined_at": _now(),
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "nick": None,
            "avatar": None,
            "permissions": ALL_PERMISSIONS,
        }
        if with_user:
            member["user"] = user
        return member

    def _channel(self, channel_id: int, name: str, position: int) -> Json:
        return {
            "id": str(channel_id),
            "type": 0,
            "guild_id": str(self.guild_id),
            "name": name,
            "position": position,
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
        }

    def _thread(self) -> Json:
        return {
            "id": str(self.thread_id),
            "type": 11,
            "guild_id": str(self.guild_id),
            "parent_id": str(self.channel_id),
            "owner_id": self.owner["id"],
            "name": "a thread",
            "last_message_id": None,
            "message_count": 0,
            "member_count": 1,
            "rate_limit_per_user": 0,
            "flags": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": 1440,
                "archive_timestamp": _now(),
                "locked": False,
            },
        }

    def _guild(self) -> Json:
        return {
            "id": str(self.guild_id),
            "name": "Test server",
            "icon": None,
            "owner_id": self.owner["id"],
            "roles": self.roles,
            "emojis": [],
            "stickers": [],
            "features": [],
            "member_count": 2,
            "members": [self._member(self.bot_user)],
            "channels": [
                self._channel(self.channel_id, "general", 0),
                self._channel(self.other_channel_id, "other", 1),
            ],
            "threads": [self._thread()],
            "presences": [],
            "voice_states": [],
            "large": False,
            "unavailable": False,
            "joined_at": _now(),
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "premium_tier": 0,
            "system_channel_flags": 0,
            "preferred_locale": "en-US",
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
            "afk_timeout": 300,
        }

    def dm_channel(self, user: Json) -> int:
        return self.dm_channels.setdefault(user["id"], self.new_id())

    def _is_dm(self, channel_id: int) -> bool:
        return channel_id in self.dm_channels.values()

    def _message(
        self,
        channel_id: int,
        author: Json,
        content: str,
        *,
        components: list[Json] | None = None,
        reference: int | None = None,
        flags: int = 0,
        attachments: list[Json] | None = None,
        mentions: list[Json] | None = None,
    ) -> Json:
        message: Json = {
            "id": str(self.new_id()),
            "channel_id": str(channel_id),
            "author": author,
            "content": content,
            "timestamp": _now(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": mentions or [],
            "mention_roles": [],
            "attachments": attachments or [],
            "embeds": [],
            "pinned": False,
            "type": 19 if reference else 0,
            "flags": flags,
            "components": components or [],
        }
        if not self._is_dm(channel_id):
            message["guild_id"] = str(self.guild_id)
        if reference is not None:
            message["message_reference"] = {
                "type": 0,
                "message_id": str(reference),
                "channel_id": str(channel_id),
            }
            parent = self.messages.get(reference)
            if parent is not None:
                message["referenced_message"] = {k: v for k, v in parent.items() if k != "referenced_message"}
        self.messages[int(message["id"])] = message
        self.revisions[int(message["id"])] = [content]
        return message

    # --- acting as a person ------------------------------------------------------

    def attachment(
        self,
        data: bytes,
        *,
        filename: str = "voice-message.ogg",
        content_type: str | None = "audio/ogg",
        voice: bool = True,
        duration: float | None = 2.0,
        size: int | None = None,
        channel_id: int | None = None,
    ) -> Json:
        """An uploaded file, served by the fake CDN under a URL with a query string (as Discord's)."""
        attachment_id = self.new_id()
        path = f"/attachments/{channel_id or self.channel_id}/{attachment_id}/{filename}"
        self.files[path] = data
        query = f"?ex={int(time.time()) + 86400:x}&is={int(time.time()):x}&hm={secrets.token_hex(32)}&"
        payload: Json = {
            "id": str(attachment_id),
            "filename": filename,
            "size": len(data) if size is None else size,
            "url": f"{self.origin}{path}{query}",
            "proxy_url": f"{self.origin}{path}{query}",
        }
        if content_type is not None:
            payload["content_type"] = content_type
        if voice:
            payload["duration_secs"] = duration
            payload["waveform"] = "AAAAAAAAAAAA"
            payload["flags"] = 0
        return payload

    async def post(
        self,
        author: Json,
        content: str = "",
        *,
        channel_id: int | None = None,
        dm: bool = False,
        attachments: list[Json] | None = None,
        reply_to: int | None = None,
        mention_bot: bool = False,
    ) -> Json:
        """A person posts a message; it is delivered to the bot over the gateway."""
        channel = self.dm_channel(author) if dm else (channel_id or self.channel_id)
        if mention_bot:
            content = f"<@{self.bot_user['id']}> {content}".strip()
        voice = any("waveform" in a for a in attachments or [])
        mentions = [self.bot_user] if mention_bot else []
        if reply_to is not None and self.messages[reply_to]["author"]["id"] == self.bot_user["id"]:
            mentions = [*mentions, self.bot_user]  # a reply pings its author by default
        message = self._message(
            channel,
            author,
            content,
            attachments=attachments,
            reference=reply_to,
            flags=VOICE_MESSAGE if voice else 0,
            mentions=mentions,
        )
        await self.deliver(message)
        return message

    async def deliver(self, message: Json) -> None:
        """Send (or send again) a MESSAGE_CREATE for a stored message."""
        event = dict(message)
        if "guild_id" in event and not event["author"].get("bot"):
            event["member"] = self._member(event["author"], with_user=False)
        await self.dispatch("MESSAGE_CREATE", event)

    def _interaction(self, kind: int, user: Json, channel_id: int, data: Json, message: Json | None) -> Json:
        interaction = Interaction(self.new_id(), secrets.token_urlsafe(48), kind, user, channel_id)
        if message is not None:
            interaction.message_id = int(message["id"])
        self.interactions[interaction.id] = interaction
        payload: Json = {
            "id": str(interaction.id),
            "application_id": str(self.app_id),
            "type": kind,
            "data": data,
            "token": interaction.token,
            "version": 1,
            "channel_id": str(channel_id),
            "app_permissions": ALL_PERMISSIONS,
            "locale": user.get("locale", "en-US"),  # the person's client language (a test sets it)
            "entitlements": [],
            "attachment_size_limit": 10 * 1024 * 1024,
        }
        if self._is_dm(channel_id):
            payload["channel"] = {"id": str(channel_id), "type": 1, "recipients": [user]}
            payload["user"] = user
            payload["context"] = 1
            payload["authorizing_integration_owners"] = {"0": user["id"]}
        else:
            in_thread = channel_id == self.thread_id
            payload["channel"] = self._thread() if in_thread else self._channel(channel_id, "general", 0)
            payload["guild_id"] = str(self.guild_id)
            payload["guild"] = {"id": str(self.guild_id), "locale": "en-US", "features": []}
            payload["guild_locale"] = "en-US"
            payload["member"] = self._member(user)
            payload["context"] = 0
            payload["authorizing_integration_owners"] = {"0": str(self.guild_id)}
        if message is not None:
            payload["message"] = message
        return payload

    async def press(self, message_id: int, custom_id: str, user: Json, *, forged: bool = False) -> Interaction:
        """A person presses a button on a message; the button must be on it, as in Discord.

        ``forged``: the press arrives as if the message carried a button with this
        custom id (discord.py drops a press whose custom id is not on the message,
        so the forgery rewrites the message too); the channel stays the real one.
        The bot must not take a custom id's word for where the press happened.
        """
        message = self.messages[message_id]
        ids = [c.get("custom_id") for row in message["components"] for c in row.get("components", [])]
        if forged:
            button = {"type": 2, "style": 2, "label": "forged", "custom_id": custom_id}
            message = {**message, "components": [{"type": 1, "components": [button]}]}
        elif custom_id not in ids:
            raise AssertionError(f"no button {custom_id!r} on message {message_id}: {ids}")
        data = {"custom_id": custom_id, "component_type": 2}
        payload = self._interaction(3, user, int(message["channel_id"]), data, message)
        await self.dispatch("INTERACTION_CREATE", payload)
        return self.interactions[int(payload["id"])]

    async def submit(self, opened: Interaction, text: str, user: Json | None = None) -> Interaction:
        """A person fills in the form the bot opened (every text input gets ``text``) and sends it."""
        modal = opened.modal
        if modal is None:
            raise AssertionError("the bot opened no form for that interaction")
        rows = [_filled(row, text) for row in modal["components"]]
        data = {"custom_id": modal["custom_id"], "components": rows}
        message = self.messages.get(opened.message_id) if opened.message_id else None
        payload = self._interaction(5, user or opened.user, opened.channel_id, data, message)
        await self.dispatch("INTERACTION_CREATE", payload)
        return self.interactions[int(payload["id"])]

    async def command(
        self,
        name: str,
        user: Json,
        *,
        channel_id: int | None = None,
        dm: bool = False,
        options: dict[str, str] | None = None,
    ) -> Interaction:
        """A person runs a slash command the bot published, with string options if it takes any."""
        published = next((c for c in self.commands if c["name"] == name), None)
        if published is None:
            raise AssertionError(f"the bot did not publish /{name}: {[c['name'] for c in self.commands]}")
        channel = self.dm_channel(user) if dm else (channel_id or self.channel_id)
        given = [{"name": key, "type": 3, "value": value} for key, value in (options or {}).items()]
        data = {"id": published["id"], "name": name, "type": 1, "options": given}
        payload = self._interaction(2, user, channel, data, None)
        await self.dispatch("INTERACTION_CREATE", payload)
        return self.interactions[int(payload["id"])]

    # --- what people see ---------------------------------------------------------

    def bot_messages(self, channel_id: int | None = None) -> list[Json]:
        """The bot's public messages in a channel as they are now, oldest first."""
        channel = str(channel_id or self.channel_id)
        return [
            m
            for mid, m in self.messages.items()
            if m["channel_id"] == channel
            and m["author"]["id"] == self.bot_user["id"]
            and not m["flags"] & EPHEMERAL
            and mid not in self.deleted
        ]

    def replies_to(self, message_id: int) -> list[Json]:
        """The bot's public messages that reply to one message, oldest first."""
        return [
            m
            for m in self.bot_messages(int(self.messages[message_id]["channel_id"]))
            if m.get("message_reference", {}).get("message_id") == str(message_id)
        ]

    def requests_to(self, method: str, pattern: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and re.fullmatch(pattern, r.path)]

    async def wait_for(self, condition: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
        """Poll until ``condition()`` is truthy; return its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what or condition}")

    # --- misbehaving -------------------------------------------------------------

    def throttle(self, method: str, path: str, times: int = 1, retry_after: float = 0.5) -> None:
        """Answer the next ``times`` matching requests with a 429, as Discord's rate limiter does."""
        self.rate_limits.append(RateLimit(method, re.compile(path), times, retry_after))

    async def drop_connection(self, code: int = 4000) -> None:
        """Close the gateway websocket from the server's side (the client should RESUME)."""
        if self._socket is not None:
            socket, self._socket = self._socket, None
            await socket.close(code=code)

    # --- REST ----------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        record = Request(request.method, request.path, time.monotonic())
        if request.content_type == "application/json":
            raw = await request.read()
            record.body = json.loads(raw) if raw else None
        self.requests.append(record)
        limited = self._rate_limited(request)
        if limited is not None:
            record.status = 429
            return limited
        if request.path.startswith(API) and not self._authorised(request):
            record.status = 401
            return _json({"message": "401: Unauthorized", "code": 0}, status=401)
        response: web.StreamResponse = await handler(request)
        record.status = response.status
        return response

    def _authorised(self, request: web.Request) -> bool:
        # Interaction callbacks and follow-ups are authorised by their token, not the bot's.
        if request.path.startswith((f"{API}/interactions/", f"{API}/webhooks/")):
            return True
        return request.headers.get("Authorization") == f"Bot {self.token}"

    def _rate_limited(self, request: web.Request) -> web.Response | None:
        for rule in self.rate_limits:
            if rule.times > 0 and rule.method == request.method and rule.path.fullmatch(request.path):
                rule.times -= 1
                headers = {
                    "X-RateLimit-Limit": "5",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": f"{time.time() + rule.retry_after:.3f}",
                    "X-RateLimit-Reset-After": f"{rule.retry_after:.3f}",
                    "X-RateLimit-Bucket": "fake-bucket",
                    "X-RateLimit-Scope": "user",
                    "Retry-After": str(max(1, round(rule.retry_after))),
                    # discord.py treats a 429 without Via as a Cloudflare ban, as Discord's own 429s carry it.
                    "Via": "1.1 google",
                }
                body = {"message": "You are being rate limited.", "retry_after": rule.retry_after}
                return _json({**body, "global": False}, status=429, headers=headers)
        return None

    async def _body(self, request: web.Request) -> Json:
        if request.content_type.startswith("multipart/"):
            form = await request.post()
            return json.loads(str(form["payload_json"]))
        raw = await request.read()  # aiohttp keeps the body, so the middleware's read does not empty it
        body: Json = json.loads(raw) if raw else {}
        return body

    async def _me(self, request: web.Request) -> web.Response:
        return _json(self.bot_user)

    async def _application(self, request: web.Request) -> web.Response:
        return _json(
            {
                "id": str(self.app_id),
                "name": "Iris",
                "icon": None,
                "description": "",
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": self.owner,
                "verify_key": secrets.token_hex(32),
                "flags": 0,
                "team": None,
                "summary": "",
            }
        )

    async def _gateway_bot(self, request: web.Request) -> web.Response:
        limit = {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
        url = f"ws://127.0.0.1:{self.port}/gateway"
        return _json({"url": url, "shards": 1, "session_start_limit": limit})

    async def _sync_commands(self, request: web.Request) -> web.Response:
        commands = await request.json()
        self.commands = [
            {**c, "id": str(self.new_id()), "application_id": str(self.app_id), "version": str(self.new_id())}
            for c in commands
        ]
        return _json(self.commands)

    async def _typing(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def _create_message(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        channel_id = int(request.match_info["channel"])
        reference = body.get("message_reference") or {}
        parent = int(reference["message_id"]) if reference.get("message_id") else None
        if parent is not None and parent not in self.messages and reference.get("fail_if_not_exists", True):
            return _json({"message": "Unknown message", "code": 10008}, status=400)
        attachments = await self._uploads(request, body, channel_id)
        flags = body.get("flags") or 0
        if flags & VOICE_MESSAGE and (refused := self._voice_refusal(body, attachments)) is not None:
            return refused
        message = self._message(
            channel_id,
            self.bot_user,
            body.get("content") or "",
            components=body.get("components"),
            reference=parent if parent in self.messages else None,
            flags=flags,
            attachments=attachments,
        )
        await self.deliver(message)
        return _json(message)

    async def _uploads(self, request: web.Request, body: Json, channel_id: int) -> list[Json]:
        """The files of a multipart message, kept on the CDN, described as Discord describes attachments."""
        if not request.content_type.startswith("multipart/"):
            return []
        form = await request.post()
        attachments: list[Json] = []
        for described in body.get("attachments") or []:
            upload = form.get(f"files[{described['id']}]")
            if not isinstance(upload, web.FileField):
                continue
            data = upload.file.read()
            attachment = self.attachment(
                data,
                filename=described.get("filename") or upload.filename,
                content_type=_audio_type(upload.content_type, upload.filename),
                voice=False,
                channel_id=channel_id,
            )
            for key in ("duration_secs", "waveform"):
                if key in described:
                    attachment[key] = described[key]
            attachments.append(attachment)
        return attachments

    def _voice_refusal(self, body: Json, attachments: list[Json]) -> web.Response | None:
        """What Discord answers a voice message it will not post (codes from its API reference)."""
        if self.refuse_voice_messages:
            return _json({"message": "Cannot send voice messages in this channel", "code": 50173}, status=403)
        if body.get("content") or body.get("embeds"):
            return _json({"message": "Voice messages do not support additional content", "code": 50159}, 400)
        if len(attachments) != 1:
            return _json({"message": "Voice messages must have a single audio attachment", "code": 50160}, 400)
        (voice,) = attachments
        waveform = voice.get("waveform")
        try:
            samples = base64.b64decode(waveform, validate=True) if isinstance(waveform, str) else b""
        except ValueError:
            samples = b""
        if not isinstance(voice.get("duration_secs"), int | float) or not 0 < len(samples) <= 256:
            return _json({"message": "Voice messages must have supporting metadata", "code": 50161}, 400)
        return None

    def _stored(self, request: web.Request) -> Json | None:
        message_id = int(request.match_info["message"])
        message = self.messages.get(message_id)
        if message is None or message_id in self.deleted:
            return None
        return message

    async def _get_channel(self, request: web.Request) -> web.Response:
        channel_id = int(request.match_info["channel"])
        for user_id, dm in self.dm_channels.items():
            if dm == channel_id:
                recipient = next(m["author"] for m in self.messages.values() if m["author"]["id"] == user_id)
                return _json({"id": str(dm), "type": 1, "recipients": [recipient], "last_message_id": None})
        guild = self._guild()
        channel = next((c for c in [*guild["channels"], *guild["threads"]] if c["id"] == str(channel_id)), None)
        if channel is None:
            return _json({"message": "Unknown Channel", "code": 10003}, status=404)
        return _json(channel)

    async def _get_message(self, request: web.Request) -> web.Response:
        message = self._stored(request)
        if message is None:
            return _json({"message": "Unknown Message", "code": 10008}, status=404)
        return _json(message)

    def _update(self, message: Json, body: Json) -> None:
        if "content" in body:
            message["content"] = body["content"] or ""
        if "components" in body:
            message["components"] = body["components"] or []
        if "flags" in body and body["flags"] is not None:
            message["flags"] = (message["flags"] & EPHEMERAL) | body["flags"]
        message["flags"] &= ~LOADING
        message["edited_timestamp"] = _now()
        self.revisions[int(message["id"])].append(message["content"])

    async def _edit_message(self, request: web.Request) -> web.Response:
        message = self._stored(request)
        if message is None:
            return _json({"message": "Unknown Message", "code": 10008}, status=404)
        self._update(message, await self._body(request))
        return _json(message)

    async def _delete_message(self, request: web.Request) -> web.Response:
        message = self._stored(request)
        if message is None:
            return _json({"message": "Unknown Message", "code": 10008}, status=404)
        self.deleted.add(int(message["id"]))
        return web.Response(status=204)

    async def _download(self, request: web.Request) -> web.Response:
        self.downloads.append(request.path)
        data = self.files.get(request.path)
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data, content_type="application/octet-stream")

    # --- interactions ----------------------------------------------------------------

    def _by_token(self, request: web.Request) -> Interaction:
        token = request.match_info["token"]
        return next(i for i in self.interactions.values() if i.token == token)

    async def _callback(self, request: web.Request) -> web.Response:
        interaction = self.interactions[int(request.match_info["id"])]
        if interaction.token != request.match_info["token"]:
            return _json({"message": "Invalid Webhook Token", "code": 50027}, status=401)
        if interaction.callbacks:
            error = {"message": "Interaction has already been acknowledged.", "code": 40060}
            return _json(error, status=400)
        body = await self._body(request)
        interaction.callbacks.append(body)
        kind, data = body["type"], body.get("data") or {}
        message: Json | None = None
        if kind in (4, 5):  # a message (or "thinking…") in answer
            flags = (data.get("flags") or 0) | (LOADING if kind == 5 else 0)
            message = self._message(
                interaction.channel_id,
                self.bot_user,
                data.get("content") or "",
                components=data.get("components"),
                flags=flags,
            )
            interaction.original_id = int(message["id"])
            if kind == 4:
                interaction.shown.append(message["content"])
        elif kind in (6, 7):  # acknowledge, or update, the message with the button
            interaction.original_id = interaction.message_id
            if kind == 7 and interaction.message_id is not None:
                message = self.messages[interaction.message_id]
                self._update(message, data)
                interaction.shown.append(message["content"])
        answer: Json = {
            "interaction": {
                "id": str(interaction.id),
                "type": interaction.kind,
                "response_message_loading": kind == 5,
                "response_message_ephemeral": bool((data.get("flags") or 0) & EPHEMERAL),
            },
        }
        if message is not None:
            answer["resource"] = {"type": kind, "message": message}
        return _json(answer)

    async def _followup(self, request: web.Request) -> web.Response:
        interaction = self._by_token(request)
        body = await self._body(request)
        original = self.messages.get(interaction.original_id or 0)
        if original is not None and original["flags"] & LOADING:
            # The first follow-up after "thinking…" replaces it, as in Discord.
            self._update(original, body)
            message = original
        else:
            message = self._message(
                interaction.channel_id,
                self.bot_user,
                body.get("content") or "",
                components=body.get("components"),
                flags=body.get("flags") or 0,
            )
        interaction.followup_ids.append(int(message["id"]))
        interaction.shown.append(message["content"])
        return _json(message)

    def _webhook_message(self, request: web.Request) -> tuple[Interaction, Json | None]:
        interaction = self._by_token(request)
        key = request.match_info["message"]
        message_id = interaction.original_id if key == "@original" else int(key)
        return interaction, self.messages.get(message_id or 0)

    async def _edit_webhook_message(self, request: web.Request) -> web.Response:
        interaction, message = self._webhook_message(request)
        if message is None:
            return _json({"message": "Unknown Message", "code": 10008}, status=404)
        self._update(message, await self._body(request))
        interaction.shown.append(message["content"])
        return _json(message)

    async def _get_webhook_message(self, request: web.Request) -> web.Response:
        _, message = self._webhook_message(request)
        if message is None:
            return _json({"message": "Unknown Message", "code": 10008}, status=404)
        return _json(message)

    async def _delete_webhook_message(self, request: web.Request) -> web.Response:
        _, message = self._webhook_message(request)
        if message is not None:
            self.deleted.add(int(message["id"]))
        return web.Response(status=204)

    # --- gateway -----------------------------------------------------------------------

    def guild_shard(self) -> int:
        """The shard Discord sends the guild's events on: (guild id >> 22) % shard count."""
        return (self.guild_id >> 22) % self.shard_count

    async def dispatch(self, event: str, data: Json) -> None:
        """Send a DISPATCH now, or keep it for the client's RESUME if it is disconnected.

        With several shards connected, a guild's events go to the guild's shard and
        everything else (DMs) to shard 0, as Discord routes them.
        """
        shard = self.guild_shard() if "guild_id" in data and self.shard_count > 1 else 0
        self.routed.append((event, shard))
        if shard != 0:
            socket = self._shard_sockets.get(shard)
            if socket is not None and not socket.closed:
                await self._send({"op": 0, "t": event, "s": None, "d": data}, socket)
            return
        seq = len(self.events) + 1
        self.events.append((seq, event, data))
        if self.connected:
            await self._send({"op": 0, "t": event, "s": seq, "d": data})

    async def _send(self, payload: Json, socket: web.WebSocketResponse | None = None) -> None:
        socket = socket or self._socket
        if socket is None or socket.closed:
            return
        async with self._send_lock:
            await socket.send_str(json.dumps(payload))

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        await self._send({"op": 10, "s": None, "t": None, "d": {"heartbeat_interval": 41250}}, socket)
        async for frame in socket:
            if frame.type is not WSMsgType.TEXT:
                continue
            payload = json.loads(frame.data)
            op = payload["op"]
            if op == 1:
                await self._send({"op": 11, "s": None, "t": None, "d": None}, socket)
            elif op == 2:
                await self._identify(payload["d"], socket)
            elif op == 6:
                self._socket = socket
                await self._resume(payload["d"])
        if self._socket is socket:
            self._socket = None
        return socket

    async def _identify(self, data: Json, socket: web.WebSocketResponse) -> None:
        if data.get("token") != self.token:
            await socket.close(code=4004)
            return
        self.identifies.append(data)
        shard, self.shard_count = data.get("shard") or [0, 1]
        guilds = [{"id": str(self.guild_id), "unavailable": True}] if self.guild_shard() == shard else []
        if shard != 0:  # another shard (another process): its own connection, no RESUME log
            self._shard_sockets[shard] = socket
            ready = {**self._ready(guilds), "shard": [shard, self.shard_count]}
            await self._send({"op": 0, "t": "READY", "s": 1, "d": ready}, socket)
            if guilds:
                await self._send({"op": 0, "t": "GUILD_CREATE", "s": 2, "d": self._guild()}, socket)
            return
        self._socket = socket
        self.events.clear()
        await self.dispatch("READY", {**self._ready(guilds), "shard": [0, self.shard_count]})
        if guilds:
            await self.dispatch("GUILD_CREATE", self._guild())

    def _ready(self, guilds: list[Json]) -> Json:
        return {
            "v": 10,
            "user": self.bot_user,
            "guilds": guilds,
            "session_id": self.session_id,
            "resume_gateway_url": f"ws://127.0.0.1:{self.port}/resume",
            "application": {"id": str(self.app_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "user_settings": {},
        }

    async def _resume(self, data: Json) -> None:
        if data.get("session_id") != self.session_id or data.get("token") != self.token:
            await self._send({"op": 9, "s": None, "t": None, "d": False})
            return
        self.resumes.append(data)
        for seq, event, payload in list(self.events):
            if seq > (data.get("seq") or 0):
                await self._send({"op": 0, "t": event, "s": seq, "d": payload})
        await self.dispatch("RESUMED", {})


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # Exactly "application/json", as Discord sends it: discord.py compares the header verbatim
    # and reads anything else (even with "; charset=utf-8") as text.
    body = json.dumps(data).encode()
    return web.Response(
        body=body, status=status, headers={**(headers or {}), "Content-Type": "application/json"}
    )


def _filled(component: Json, text: str) -> Json:
    """The submitted shape of one modal component, with every text input holding ``text``."""
    kind = component["type"]
    if kind == 1:
        return {"type": 1, "components": [_filled(c, text) for c in component["components"]]}
    if kind == 18:
        return {"type": 18, "component": _filled(component["component"], text)}
    if kind == 4:
        return {"type": 4, "custom_id": component["custom_id"], "value": text}
    return {"type": kind, "custom_id": component.get("custom_id")}


def custom_ids(message: Json) -> list[str]:
    """The custom ids of the buttons on a message, in order."""
    return [c["custom_id"] for row in message.get("components", []) for c in row.get("components", [])]


def walk(components: list[Json]) -> Iterator[Json]:
    for component in components:
        yield component
        yield from walk(component.get("components", []))


def _audio_type(content_type: str | None, filename: str | None) -> str:
    """discord.py uploads every file as application/octet-stream; Discord reads the type from the name."""
    if content_type and content_type != "application/octet-stream":
        return content_type
    return "audio/ogg" if (filename or "").endswith((".ogg", ".oga", ".opus")) else "application/octet-stream"
