"""Presses and commands sent into a crowd, through the real ``iris run telegram`` and its durable inbox.

The inbox hands this process at most ``2 × IRIS_LLM_PARALLEL + 4`` messages at once (6 here);
a 👍 and a /help sent after more messages than that must not wait for the crowd's replies.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from telegram import Update

from bots.telegram_bot.commands import HELP
from bots.telegram_bot.inbox import is_urgent, order_key
from storage.inbox import SqlInbox
from storage.repository import SqlStore
from tests.telegram.fake_bot_api import FakeBotApi, private_chat, user
from tests.telegram.scenario import button, rated_replies, turn_of, wait_for_reply
from tests.telegram.test_iris_run import iris_environment

ADA, BOB = user(42, "Ada"), user(43, "Bob")
CROWD = [user(100 + n, f"Guest{n}") for n in range(6)]
QUESTIONS = [
    "Tell me a long story about a dragon who learns to bake bread.",
    "Explain in detail how a steam engine works, step by step.",
]


def test_presses_are_claimed_apart_from_messages_and_by_one_process(store: SqlStore) -> None:
    inbox = SqlInbox(store.engine)
    for n in range(10):
        inbox.put("telegram", f"m{n}", f"chat:{n}", {"n": f"m{n}"})
    inbox.put("telegram", "p", "update:p", {"n": "press"}, urgent=True)

    taken = inbox.claim("telegram", "first", 30, 3)  # a process whose messages' capacity is nearly full
    assert [item.payload["n"] for item in taken] == ["m0", "m1", "m2"]  # the oldest messages, no press
    with ThreadPoolExecutor(4) as pool:  # four processes look for presses at once
        claims = list(pool.map(lambda n: inbox.claim("telegram", f"p{n}", 30, 32, urgent=True), range(4)))
    assert [item.payload["n"] for claim in claims for item in claim] == ["press"]  # claimed once
    rest = inbox.claim("telegram", "second", 30, 100)
    assert [item.payload["n"] for item in rest] == [f"m{n}" for n in range(3, 10)]  # never the press


async def test_only_what_telegram_marks_a_command_jumps_the_queue(fake_api: FakeBotApi) -> None:
    def update(text: str) -> Update:
        message = fake_api.send_text(private_chat(ADA), ADA, text)
        return Update.de_json({"update_id": message["message_id"], "message": message}, None)

    help_, slash = update("/help"), update("/ what is the capital of France? " + "x" * 500)
    assert is_urgent(help_) and order_key(help_) == f"update:{help_.update_id}"
    # No bot_command entity: a question for the model, in its sender's order like any other.
    assert not is_urgent(slash) and order_key(slash) == f"{ADA['id']}:{ADA['id']}"


def _finished(api: FakeBotApi) -> int:
    """How many of the crowd's replies are finished (they carry their rating buttons)."""
    return sum(len(rated_replies(api, person["id"])) for person in CROWD)


async def test_a_press_and_a_command_sent_into_a_crowd_are_answered_before_it(
    fake_api: FakeBotApi, tmp_path: Path, served_gguf: Path
) -> None:
    environment = {
        **iris_environment(fake_api, tmp_path / "data", served_gguf),
        "IRIS_LLM_PARALLEL": "1",
        "IRIS_GENERATION_MAX_TOKENS": "64",
    }
    log_path = tmp_path / "iris.log"
    iris = Path(sys.executable).with_name("iris")
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            str(iris), "run", "telegram", env=environment, cwd=tmp_path, stdout=log, stderr=log
        )
    try:
        polling = asyncio.ensure_future(fake_api.wait_for(lambda: fake_api.calls_to("getUpdates"), timeout=180))
        exited = asyncio.ensure_future(process.wait())
        await asyncio.wait([polling, exited], return_when=asyncio.FIRST_COMPLETED)
        assert not exited.done(), f"iris exited early:\n{log_path.read_text()}"
        exited.cancel()

        fake_api.send_text(private_chat(ADA), ADA, "What is the capital of France?")
        earlier = await wait_for_reply(fake_api, ADA["id"])

        # Twelve questions, two per person, more than the six messages the inbox hands out at once.
        asked: dict[int, list[int]] = {person["id"]: [] for person in CROWD}
        for question in QUESTIONS:
            for person in CROWD:
                asked[person["id"]].append(
                    fake_api.send_text(private_chat(person), person, question)["message_id"]
                )
        # Iris acknowledged them all (its next getUpdates dropped them): they are in the inbox.
        await fake_api.wait_for(lambda: not fake_api._updates)

        pressed_at = time.monotonic()
        fake_api.press(ADA, earlier, button(earlier, "👍"))
        fake_api.send_text(private_chat(BOB), BOB, "/help")
        seen: dict[str, tuple[float, int]] = {}

        def answered() -> bool:
            if "press" not in seen and fake_api.calls_to("answerCallbackQuery"):
                seen["press"] = (time.monotonic() - pressed_at, _finished(fake_api))
            if "help" not in seen and fake_api.chat(BOB["id"]):
                seen["help"] = (time.monotonic() - pressed_at, _finished(fake_api))
            return len(seen) == 2

        await fake_api.wait_for(answered, timeout=300)
        await fake_api.wait_for(lambda: earlier.buttons[0][0] == "👍 ✓")  # the rating was stored
        assert HELP.splitlines()[0] in fake_api.chat(BOB["id"])[0].text

        for person in CROWD:  # every question is still answered
            await wait_for_reply(fake_api, person["id"], count=len(QUESTIONS), timeout=600)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(process.wait(), 60)
            except TimeoutError:
                process.kill()
                await process.wait()

    print(f"press ack {seen['press'][0]:.2f} s, /help {seen['help'][0]:.2f} s after sending")
    crowd = len(CROWD) * len(QUESTIONS)
    # Behind the crowd they would wait for 12 - 6 + 1 = 7 of its replies; the model writes
    # one at a time here, so answered at once means while most of the crowd still waits.
    assert seen["press"][1] < crowd // 2 and seen["help"][1] < crowd // 2, seen
    assert process.returncode in (0, 130), log_path.read_text()
    with sqlite3.connect(tmp_path / "data" / "iris.db") as db:
        for person in CROWD:  # each person's replies show in the order of their questions
            shown = [turn_of(reply) for reply in rated_replies(fake_api, person["id"])]
            answered_ids = [
                db.execute(
                    "SELECT q.platform_message_id FROM turns r JOIN turns q ON q.id = r.reply_to_id"
                    " WHERE r.id = ?",
                    (turn,),
                ).fetchone()[0]
                for turn in shown
            ]
            assert answered_ids == [str(message_id) for message_id in asked[person["id"]]]
