"""A busy Telegram group against Telegram's sending limits: 429s and time to the last reply.

    .venv/bin/python bench/telegram_group.py [--crowds 10,30] [--questions 3] [--time-scale 0.1]

N people in one group each ask the bot ``--questions`` things at once, and one person asks in
private meanwhile, through the real Telegram application and the tests' fake Bot API, which
enforces Telegram's documented limits (about one message a second in a chat, 20 a minute in a
group, 30 a second overall) as strict sliding windows, ``--time-scale`` times as long as
Telegram's. The model is scripted (a short reply, written at once): only sending is measured.

Each crowd is sent three ways, side by side: paced by the bot's limiter (``ChatRateLimiter``
with the same shortened limits); unpaced, waiting out each 429 and trying again (up to 10
times, how the bot sent before it paced); and unpaced, giving up on a 429 (python-telegram-bot
without a rate limiter). Times are printed as measured and as Telegram would take them
(divided by the time scale). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from bots.app import build_app
from bots.settings import Settings
from bots.telegram_bot import build_application, running
from bots.telegram_bot.limits import ChatRateLimiter
from core.service import ChatService

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' fake Bot API
from tests.fakes import ScriptedGenerator
from tests.telegram.fake_bot_api import (
    BOT_USERNAME,
    TOKEN,
    FakeBotApi,
    group_chat,
    private_chat,
    user,
)
from tests.telegram.scenario import rated_replies

ANSWER = "A short answer, for the group."
UNPACED = {"per_second_overall": 1e6, "per_second_in_a_chat": 1e6, "per_minute_in_a_group": 1e6}
MODES = {
    "paced by the bot's limiter": {},
    "unpaced, 429s waited out": {**UNPACED, "max_retries": 10},
    "unpaced, giving up on a 429": {**UNPACED, "max_retries": 0},
}


@dataclass
class Result:
    mode: str
    crowd: int
    asked: int
    answered: int
    private_s: float | None
    last_s: float
    floods: int
    sends: int


async def flood(tmp: str, mode: str, crowd: int, questions: int, scale: float) -> Result:
    api = FakeBotApi()
    await api.start()
    api.enforce_limits(time_scale=scale)
    name = f"{crowd}-{list(MODES).index(mode)}"
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=Path(tmp) / name,
        database_url=f"sqlite:///{tmp}/{name}.db",
        telegram_bot_token=SecretStr(TOKEN),
        telegram_base_url=api.base_url,
        telegram_base_file_url=api.base_file_url,
    )
    app = build_app(settings)
    app.service = ChatService(
        app.store, app.transcriber, ScriptedGenerator(ANSWER, pieces=2), app.service.config
    )
    team, alone = group_chat(), user(1, "Zoe")
    limiter = ChatRateLimiter(**MODES[mode], time_scale=scale)  # type: ignore[arg-type]
    try:
        async with running(build_application(app.service, settings, rate_limiter=limiter), settings):
            began = time.perf_counter()
            asked = 0
            for round_ in range(questions):
                for n in range(crowd):
                    api.send_text(team, user(100 + n, f"P{n}"), f"@{BOT_USERNAME} question {round_ + 1}")
                    asked += 1
                if round_ == 0:
                    api.send_text(private_chat(alone), alone, "A question of my own.")
            private_s: float | None = None
            done, last_s, busy_seen, changed_at = 0, 0.0, -1, began
            # Until every reply shows, or the bot has sent nothing for longer than any flood wait.
            while True:
                now = time.perf_counter()
                if private_s is None and rated_replies(api, alone["id"]):
                    private_s = now - began
                if (answered := len(rated_replies(api, team["id"]))) > done:
                    done, last_s = answered, now - began
                if (busy := len(api.calls) - len(api.calls_to("getUpdates"))) != busy_seen:
                    busy_seen, changed_at = busy, now
                if (done == asked and private_s is not None) or now - changed_at > 70 * scale:
                    break
                await asyncio.sleep(0.02)
        sends = [c for c in api.calls if c.params.get("chat_id") == team["id"] and c.method != "sendChatAction"]
        return Result(
            mode,
            crowd,
            asked,
            len(rated_replies(api, team["id"])),
            private_s,
            last_s,
            len(api.flood_waits),
            len(sends),
        )
    finally:
        app.close()
        await api.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crowds", default="10,30")
    parser.add_argument("--questions", type=int, default=3)
    parser.add_argument("--time-scale", type=float, default=0.1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)  # the replies lost are counted, not logged
    scale = args.time_scale
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for crowd in [int(c) for c in args.crowds.split(",")]:
            for mode in MODES:
                results.append(await flood(tmp, mode, crowd, args.questions, scale))
                print(f"done: {crowd} people, {mode}", flush=True)
    print()
    print(f"Windows {scale:g}× Telegram's; times measured (and as Telegram would take them).")
    print()
    print("| group | sending | 429s | sends to the group | replies shown | private reply | last group reply |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        private = "none" if r.private_s is None else f"{r.private_s:.2f} s ({r.private_s / scale:.0f} s)"
        print(
            f"| {r.crowd} people × {r.asked // r.crowd} | {r.mode} | {r.floods} | {r.sends} | "
            f"{r.answered}/{r.asked} | {private} | {r.last_s:.1f} s ({r.last_s / scale:.0f} s) |",
            flush=True,
        )


if __name__ == "__main__":
    asyncio.run(main())
