"""A crowd of voice notes sent to ``iris run telegram`` itself, with presses and commands sent into it.

``bench/load.py`` measures the service in its own process; this measures the path people
reach: the ``iris run telegram`` command in a child process (its durable inbox, its limits,
python-telegram-bot) polling a fake Bot API on 127.0.0.1 (``tests/telegram/fake_bot_api.py``).

N people each send a voice note at the same moment. From the moment they are sent until the
last reply is finished, a prober sends, one after another, a 👍 or 👎 press on an earlier reply
(by an admin, so no press limit applies), a /help from someone new (with Telegram's
``bot_command`` entity, as a real client sends it) and /stats from an admin, each as soon as
the one before was answered, and times each answer: the press until Telegram is told it was
answered (``answerCallbackQuery``), a command until its reply is sent.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' fake Bot API

from tests.telegram.fake_bot_api import FakeBotApi, Sent, private_chat, user
from tests.telegram.scenario import button, rated_replies, wait_for_reply
from tests.telegram.test_iris_run import iris_environment

# Iris paces what it sends to one chat as Telegram asks (at most 3 s' worth in any 3 s), so the
# prober's messages go to many chats: one admin presses 👍/👎 in theirs, and each /stats comes
# from the next of several admins, as a /help comes from someone new each time.
RATER = user(8, "Rater")
ADMINS = [user(10 + n, f"Admin{n}") for n in range(40)]
PROBE_TIMEOUT_S = 120.0


@dataclass
class RunResult:
    parallel: str  # as set ("1") or "default" (the machine's choice)
    count: int
    wall_s: float
    answered: int
    first_message_s: list[float]  # per person: until the bot's first message in their chat
    press_ms: list[float] = field(default_factory=list)
    help_ms: list[float] = field(default_factory=list)
    stats_ms: list[float] = field(default_factory=list)
    peak_rss_mb: float = 0.0

    @property
    def per_minute(self) -> float:
        return self.answered / self.wall_s * 60


async def iris_run_crowd(
    gguf: Path,
    data_dir: Path,
    audio: bytes,
    count: int,
    parallel: int | None,
    max_tokens: int,
    settings: dict[str, str] | None = None,
) -> RunResult:
    """``count`` voice notes at once to a fresh ``iris run telegram`` on its own database;
    ``settings``: more variables for it (``{"IRIS_WHISPER_BATCH": "8"}``)."""
    api = FakeBotApi()
    await api.start()
    data_dir.mkdir(parents=True)
    environment = {
        **iris_environment(api, data_dir, gguf),
        "TELEGRAM_EDIT_INTERVAL_SECONDS": "1.0",  # iris run's default (the tests' environment says 0.2)
        "IRIS_GENERATION_MAX_TOKENS": str(max_tokens),
        "IRIS_ADMIN_USER_IDS": ",".join(str(admin["id"]) for admin in [RATER, *ADMINS]),
        "IRIS_LOG_LEVEL": "WARNING",
        **(settings or {}),
    }
    if parallel is not None:
        environment["IRIS_LLM_PARALLEL"] = str(parallel)
    iris = Path(sys.executable).with_name("iris")
    log_path = data_dir / "iris.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            str(iris), "run", "telegram", env=environment, cwd=data_dir, stdout=log, stderr=log
        )
    try:
        await api.wait_for(lambda: api.calls_to("getUpdates"), timeout=180)
        api.send_text(private_chat(RATER), RATER, "Hello!")
        earlier = await wait_for_reply(api, RATER["id"], timeout=180)
        people = [user(1000 + n, f"Guest{n}") for n in range(count)]
        result = RunResult(str(parallel or "default"), count, 0.0, 0, [])
        began = time.monotonic()
        for person in people:
            api.send_voice(private_chat(person), person, audio)
        done = asyncio.Event()
        prober = asyncio.create_task(probe(api, earlier, done, result))
        firsts = await asyncio.gather(*(first_message(api, person, began) for person in people))
        await api.wait_for(lambda: all(rated_replies(api, p["id"]) for p in people), timeout=3600)
        result.wall_s = time.monotonic() - began
        done.set()
        await prober
        result.first_message_s = list(firsts)
        result.answered = sum(len(rated_replies(api, p["id"])) for p in people)
        result.peak_rss_mb = peak_rss_mb(process.pid)
        return result
    except Exception:
        print(log_path.read_text()[-4000:], file=sys.stderr)
        raise
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(process.wait(), 60)
            except TimeoutError:
                process.kill()
                await process.wait()
        await api.stop()


async def first_message(api: FakeBotApi, person: dict[str, Any], began: float) -> float:
    await api.wait_for(lambda: api.chat(person["id"]), timeout=3600)
    return time.monotonic() - began


async def probe(api: FakeBotApi, earlier: Sent, done: asyncio.Event, result: RunResult) -> None:
    """A press, a /help and a /stats in turn, each sent once the one before was answered."""
    newcomers = (user(5000 + n, f"New{n}") for n in itertools.count())
    admins = itertools.cycle(ADMINS)
    votes = itertools.cycle(("👎", "👍"))
    while not done.is_set():
        result.press_ms.append(await press(api, earlier, next(votes)))
        result.help_ms.append(await command(api, next(newcomers), "/help"))
        result.stats_ms.append(await command(api, next(admins), "/stats"))
        await asyncio.sleep(0.25)


async def press(api: FakeBotApi, reply: Sent, vote: str) -> float:
    """Milliseconds until the rater's press on ``reply`` is answered."""
    answers = len(api.calls_to("answerCallbackQuery"))
    sent = time.monotonic()
    api.press(RATER, reply, button(reply, vote))
    await api.wait_for(lambda: len(api.calls_to("answerCallbackQuery")) > answers, PROBE_TIMEOUT_S)
    return (time.monotonic() - sent) * 1000


async def command(api: FakeBotApi, person: dict[str, Any], text: str) -> float:
    """Milliseconds until the bot's next message in ``person``'s chat, after they sent ``text``."""
    shown = len(api.chat(person["id"]))
    sent = time.monotonic()
    api.send_text(private_chat(person), person, text)
    await api.wait_for(lambda: len(api.chat(person["id"])) > shown, PROBE_TIMEOUT_S)
    return (time.monotonic() - sent) * 1000


def peak_rss_mb(pid: int) -> float:
    """The child's peak resident memory so far (Linux's VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")
