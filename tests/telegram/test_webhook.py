"""The webhook server as a stranger meets it: bound to loopback, one secret for every process,
refusals decided by the headers before a byte of the body is read."""

from __future__ import annotations

import asyncio
import json
import re
import socket

import pytest

from bots.telegram_bot.webhook import MAX_BODY_BYTES, SECRET_HEADER, derived_secret
from tests.telegram.conftest import StartBot
from tests.telegram.fake_bot_api import TOKEN, FakeBotApi, private_chat, user
from tests.telegram.scenario import wait_for_reply

ADA = user(1, "Ada")
TEN_MB = 10 * 1024 * 1024


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _start_webhook(start_bot: StartBot, port: int, url_port: int | None = None) -> None:
    """A bot in webhook mode on ``port`` with the default listen address and secret."""
    await start_bot(
        telegram_webhook_url=f"http://127.0.0.1:{url_port or port}/hook", telegram_webhook_port=port
    )


async def _exchange(port: int, head: str, body: bytes = b"", host: str = "127.0.0.1") -> str:
    """Send ``head`` (and ``body``, if any) and return the status line, waiting at most 5 s for it."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(head.encode() + b"\r\n" + body)
        await writer.drain()
        return (await asyncio.wait_for(reader.readline(), 5)).decode().strip()
    finally:
        writer.close()


def _head(length: int | None, secret: str, chunked: bool = False) -> str:
    lines = ["POST /hook HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines.append(f"{SECRET_HEADER}: {secret}")
    lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {length}")
    return "\r\n".join(lines) + "\r\n"


async def test_the_webhook_listens_on_loopback_only_by_default(start_bot: StartBot) -> None:
    port = _free_port()
    await _start_webhook(start_bot, port)

    assert (await _exchange(port, _head(2, "guess"), b"{}")).startswith("HTTP/1.1 403")
    # 127.0.0.2 is this machine too, but a server bound to 127.0.0.1 alone does not answer there,
    # as it would not on any other interface; one bound to 0.0.0.0 would.
    with pytest.raises(ConnectionRefusedError):
        await _exchange(port, _head(2, "guess"), b"{}", host="127.0.0.2")


async def test_processes_on_one_token_register_the_same_secret(
    start_bot: StartBot, fake_api: FakeBotApi
) -> None:
    first, second = _free_port(), _free_port()
    # Two processes behind one public URL (here: the first one's address); the second registers last.
    await _start_webhook(start_bot, first)
    await _start_webhook(start_bot, second, url_port=first)

    secrets = [call.params["secret_token"] for call in fake_api.calls_to("setWebhook")]
    assert len(secrets) == 2 and secrets[0] == secrets[1]
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secrets[0]) and TOKEN not in secrets[0]
    assert derived_secret("5550002:another-bot") != secrets[0]

    # The first process still takes Telegram's deliveries, sent with the secret registered last.
    fake_api.send_text(private_chat(ADA), ADA, "What is the capital of France?")
    reply = await wait_for_reply(fake_api, ADA["id"], timeout=60)
    assert reply.text.strip() and fake_api.webhook_failures == 0


async def test_oversized_posts_are_refused_unread_and_unsigned_ones_refused(
    start_bot: StartBot, fake_api: FakeBotApi
) -> None:
    port = _free_port()
    await _start_webhook(start_bot, port)
    secret = str(fake_api.calls_to("setWebhook")[0].params["secret_token"])

    # Only the headers are sent: the answer comes without the server waiting for the body.
    assert (await _exchange(port, _head(TEN_MB, secret))).startswith("HTTP/1.1 413")
    assert (await _exchange(port, _head(TEN_MB, "guess"))).startswith("HTTP/1.1 413")
    # An update-sized body without the secret, or with a wrong one.
    update = json.dumps({"update_id": 1, "message": fake_api.message(private_chat(ADA), ADA, text="Hi")})
    for secret_sent in ("", "guess", secret[:-1]):
        head = _head(len(update), secret_sent)
        assert (await _exchange(port, head, update.encode())).startswith("HTTP/1.1 403")
    # A chunked body has no length to judge: it is cut off where it passes the limit.
    full = b"%x\r\n%s\r\n1\r\n" % (MAX_BODY_BYTES, b" " * MAX_BODY_BYTES)
    assert (await _exchange(port, _head(None, secret, chunked=True), full)).startswith("HTTP/1.1 400")

    # The next message is answered as usual, and it is the only one answered.
    fake_api.send_text(private_chat(ADA), ADA, "What is the capital of France?")
    assert (await wait_for_reply(fake_api, ADA["id"], timeout=60)).text.strip()
    await fake_api.settle()
    assert len(fake_api.chat(ADA["id"])) == 1
