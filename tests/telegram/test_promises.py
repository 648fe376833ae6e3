"""What the README promises a Telegram chat, each shown through the real PTB client on the fake Bot API.

The conversation reaches the model (and only the person's own, and not past /reset); the chat
allowlist refuses other chats while admins pass every list; "typing…" stays up while a reply
waits; a reviewer's ❌ rejects; a code block cut between messages stays a code block.
"""

from __future__ import annotations

import asyncio
import html
import re
import time
from collections.abc import Callable, Sequence

from bots.app import App
from core.access import REFUSAL
from core.domain import ChatMessage
from tests.fakes import RecordingGenerator, ScriptedGenerator
from tests.telegram.conftest import ADMIN_ID, StartBot, query
from tests.telegram.fake_bot_api import TEXT_LIMIT, FakeBotApi, group_chat, private_chat, user
from tests.telegram.scenario import button, rated_replies, turn_of, wait_for_reply, wait_for_text

ADA, BOB = user(1, "Ada"), user(2, "Bob")
ADMIN = user(ADMIN_ID, "Grace")
TEAM = group_chat()
NOTED = "Noted, thank you."


def said(prompt: Sequence[ChatMessage]) -> list[tuple[str, str]]:
    """The conversation part of a prompt: (role, text) of every turn, without a system prompt."""
    return [(message.role, message.content) for message in prompt if message.role != "system"]


async def test_earlier_turns_reach_the_model_but_not_another_persons_and_not_after_reset(
    start_bot: StartBot, fake_api: FakeBotApi, app: App
) -> None:
    model = RecordingGenerator(NOTED)
    app.service.writer.generator = model
    await start_bot()

    async def ask(person: dict[str, object], text: str, count: int) -> None:
        fake_api.send_text(TEAM, person, f"@iris_test_bot {text}")
        await fake_api.wait_for(lambda: len(rated_replies(fake_api, TEAM["id"])) >= count)

    await ask(ADA, "My kite is red.", 1)
    await ask(BOB, "What colour is my kite?", 2)  # the same group: each person has their own history
    assert said(model.prompts[-1]) == [("user", "What colour is my kite?")]
    await ask(ADA, "What colour is my kite?", 3)
    fake_api.send_text(TEAM, ADA, "/reset")
    await wait_for_text(fake_api, TEAM["id"], "put our earlier messages aside")
    await ask(ADA, "What colour is my kite?", 4)

    assert [said(prompt) for prompt in model.prompts] == [
        [("user", "My kite is red.")],
        [("user", "What colour is my kite?")],  # Bob's: nothing of Ada's
        [("user", "My kite is red."), ("assistant", NOTED), ("user", "What colour is my kite?")],
        [("user", "What colour is my kite?")],  # after /reset
    ]


async def test_a_chat_outside_the_allowed_chats_is_refused_and_admins_pass_every_list(
    start_bot: StartBot, fake_api: FakeBotApi, app: App
) -> None:
    await start_bot(allowed_user_ids=[str(ADA["id"])], allowed_chat_ids=[str(TEAM["id"])])
    elsewhere = group_chat(-1009999, "Elsewhere")

    # A listed person in an unlisted chat, then in an unlisted group; an unlisted person in the listed group.
    fake_api.send_text(private_chat(ADA), ADA, "What is the capital of France?")
    await wait_for_text(fake_api, ADA["id"], REFUSAL)
    fake_api.send_text(elsewhere, ADA, "@iris_test_bot What is the capital of France?")
    await wait_for_text(fake_api, elsewhere["id"], REFUSAL)
    fake_api.send_text(TEAM, BOB, "@iris_test_bot What is the capital of France?")
    await wait_for_text(fake_api, TEAM["id"], REFUSAL)
    fake_api.send_text(TEAM, ADA, "@iris_test_bot What is the capital of France?")  # both listed
    await wait_for_reply(fake_api, TEAM["id"])
    # The admin is on neither list, and is answered in a private chat and in an unlisted group.
    fake_api.send_text(private_chat(ADMIN), ADMIN, "What is the capital of France?")
    await wait_for_reply(fake_api, ADMIN_ID)
    fake_api.send_text(elsewhere, ADMIN, "@iris_test_bot What is the capital of France?")
    await wait_for_reply(fake_api, elsewhere["id"])
    await fake_api.settle(0.5)

    assert [sent.text for sent in fake_api.chat(ADA["id"])] == [REFUSAL]
    assert fake_api.chat(TEAM["id"])[0].text == REFUSAL
    asked = "SELECT p.user_id, t.chat_id FROM turns t JOIN people p ON p.id = t.person_id WHERE t.role = 'user'"
    assert sorted(query(app, asked)) == sorted(
        [
            (str(ADA["id"]), str(TEAM["id"])),
            (str(ADMIN_ID), str(ADMIN_ID)),
            (str(ADMIN_ID), str(elsewhere["id"])),
        ]
    )


async def _typing_until(fake_api: FakeBotApi, shown: Callable[[], bool]) -> tuple[list[float], float]:
    """When each "typing…" went out, and when ``shown()`` first held: sampled every 20 ms."""
    times: list[float] = []
    while not shown():
        count = len(fake_api.calls_to("sendChatAction"))
        times += [time.monotonic()] * (count - len(times))
        await asyncio.sleep(0.02)
    return times, time.monotonic()


async def test_typing_is_renewed_while_a_reply_waits(
    start_bot: StartBot, fake_api: FakeBotApi, app: App
) -> None:
    # The model takes 6.5 s to its first word; Telegram shows "typing…" for 5 s a signal.
    app.service.writer.generator = ScriptedGenerator("Here you are.", pieces=1, pause_s=6.5)
    await start_bot()
    fake_api.send_text(private_chat(ADA), ADA, "Take your time.")
    times, first_message = await _typing_until(fake_api, lambda: bool(fake_api.calls_to("sendMessage")))
    await wait_for_reply(fake_api, ADA["id"])

    assert len(times) >= 2
    gaps = [later - earlier for earlier, later in zip([*times], [*times[1:], first_message], strict=True)]
    assert max(gaps) < 5.0, gaps  # never a moment without "typing…" until the reply shows
    assert {call.params["action"] for call in fake_api.calls_to("sendChatAction")} == {"typing"}
    assert {call.params["chat_id"] for call in fake_api.calls_to("sendChatAction")} == {ADA["id"]}


async def test_a_reviewer_rejects_a_suggested_answer(
    start_bot: StartBot, fake_api: FakeBotApi, app: App
) -> None:
    await start_bot()
    fake_api.send_text(private_chat(ADA), ADA, "What is the capital of France?")
    reply = await wait_for_reply(fake_api, ADA["id"])
    fake_api.press(ADA, reply, button(reply, "✏️"))
    prompt = await wait_for_text(fake_api, ADA["id"], "what should I have said?")
    fake_api.send_text(private_chat(ADA), ADA, "Madrid, obviously.", reply_to=prompt)
    await wait_for_text(fake_api, ADA["id"], "waits for review")

    fake_api.send_text(private_chat(ADMIN), ADMIN, "/review")
    card = await wait_for_text(fake_api, ADMIN_ID, "Madrid, obviously.")
    fake_api.press(ADMIN, card, button(card, "❌"))
    await wait_for_text(fake_api, ADMIN_ID, "❌ Rejected by Grace")
    assert card.buttons == []
    assert fake_api.calls_to("answerCallbackQuery")[-1].params["text"] == "❌ Rejected."
    assert query(app, "SELECT turn_id, status, reviewer FROM corrections") == [
        (turn_of(reply), "rejected", f"telegram:{ADMIN_ID}")
    ]
    fake_api.send_text(private_chat(ADMIN), ADMIN, "/review")
    await wait_for_text(fake_api, ADMIN_ID, "No suggested answers are waiting")


CODE = "\n".join(
    f"    total_{i} = compute(values[{i}]) * 2  # step {i} of the long calculation" for i in range(120)
)
LONG_CODE_REPLY = (
    "Here is the whole program, step by step:\n\n```python\ndef main():\n"
    + CODE
    + "\n    return total_0\n```\nRun it with `python main.py`; it prints nothing."
)


async def test_a_long_reply_keeps_its_code_block_a_code_block_in_every_message(
    start_bot: StartBot, fake_api: FakeBotApi, app: App
) -> None:
    assert len(LONG_CODE_REPLY) > 2 * TEXT_LIMIT
    app.service.writer.generator = ScriptedGenerator(LONG_CODE_REPLY, pieces=12)
    await start_bot()
    fake_api.send_text(private_chat(ADA), ADA, "Write me the program.")
    last = await wait_for_reply(fake_api, ADA["id"])
    await fake_api.settle(0.5)

    shown = fake_api.chat(ADA["id"])
    assert len(shown) == 3 and shown[-1] is last
    assert all(len(sent.text) <= TEXT_LIMIT for sent in shown)
    blocks = [
        re.findall(r'<pre><code class="language-python">(.*?)</code></pre>', sent.html or "", re.S)
        for sent in shown
    ]
    assert all(len(found) == 1 for found in blocks), [sent.html for sent in shown]  # code in each, as code
    code = "\n".join(html.unescape(found[0]) for found in blocks)
    assert code == "def main():\n" + CODE + "\n    return total_0"  # every line once, indentation kept
    assert shown[0].text.startswith("Here is the whole program")
    assert last.html is not None and last.html.endswith(
        "Run it with <code>python main.py</code>; it prints nothing."
    )
    assert "```" not in "".join(sent.text for sent in shown)
    (stored,) = query(app, "SELECT text FROM turns WHERE role = 'assistant'")
    assert stored[0] == LONG_CODE_REPLY
