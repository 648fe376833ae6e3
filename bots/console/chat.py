"""The local console chat (``iris chat``): the same service the bots use, in a terminal."""

from __future__ import annotations

import asyncio
import io
import mimetypes
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from bots.cli_errors import file_problem
from bots.render import VOICE_ASK, choice_card, format_forget, format_voice_choice, voice_choice
from core.choices import AgainRefused, Pick, parse_pick
from core.domain import (
    Audio,
    ChatRef,
    IncomingMessage,
    Notice,
    NoticeKind,
    Person,
    Queued,
    ReplyDelta,
    ReplyDone,
    Spoken,
    Transcribed,
)
from core.feedback import UnknownReply
from core.files import atomic_write
from core.service import ChatService

PLATFORM = "console"
CONSOLE_LIMIT = 100_000  # a terminal has no message limit: both answers are shown whole

HELP = """\
Type a message, or:
  /voice PATH   send an audio file (voice note, MP3, M4A, OGG, WAV)
  /voice on|off replies also spoken (written to an OGG file), or text only
  /good /bad    rate the last reply
  /fix TEXT     suggest a better answer to the last reply
  /again        another answer to the last reply; then 1, 2 or n (neither) picks the better
  /reset        start a new conversation
  /forget       delete everything stored about you
  /help /quit"""


async def _read_stdin() -> str | None:
    # A byte the terminal's encoding cannot read becomes U+FFFD instead of an error that ends the
    # chat (under the C locale Python reads it as a lone surrogate, which the service replaces).
    if isinstance(sys.stdin, io.TextIOWrapper) and sys.stdin.errors == "strict":
        sys.stdin.reconfigure(errors="replace")
    try:
        return await asyncio.to_thread(input, "you> ")
    except EOFError:
        return None


def _write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


class ConsoleChat:
    def __init__(
        self,
        service: ChatService,
        person: Person,
        chat_id: str = "local",
        read_line: Callable[[], Awaitable[str | None]] = _read_stdin,
        write: Callable[[str], None] = _write_stdout,
        spoken_dir: Path = Path("data") / "spoken",
    ) -> None:
        self.service = service
        self.person = person
        self.chat = ChatRef(PLATFORM, chat_id)
        self.read_line = read_line
        self.write = write
        self.last_reply: int | None = None
        self.pair: int | None = None  # the 🔁 pair shown last: a line "1", "2" or "n" picks in it
        self.spoken_dir = spoken_dir  # where spoken replies are written: a terminal cannot play them

    async def run(self) -> None:
        self.write(f"Iris local chat. {HELP}\n")
        while (line := await self.read_line()) is not None:
            line = line.strip()
            if line in ("/quit", "/exit"):
                break
            if line:
                await self.on_line(line)
        self.write("bye\n")

    async def on_line(self, line: str) -> None:
        command, _, argument = line.partition(" ")
        argument = argument.strip()
        pick = parse_pick(line) if self.pair is not None else None
        if pick is not None and self.pair is not None:
            await self.choose(self.pair, pick)
            return
        if command == "/help":
            self.write(HELP + "\n")
        elif command == "/voice" and argument.lower() in ("on", "off", ""):
            await self.choose_voice(argument)
        elif command == "/voice":
            await self.send_voice(Path(argument).expanduser())
        elif command in ("/good", "/bad"):
            await self.rate(up=command == "/good")
        elif command == "/fix":
            await self.fix(argument)
        elif command == "/again":
            await self.again()
        elif command == "/reset":
            await self.service.privacy.reset(self.chat, self.person)
            self.write("(new conversation)\n")
        elif command == "/forget":
            report = await self.service.privacy.forget(self.person)
            self.last_reply = self.pair = None
            self.write(f"({format_forget(report)})\n")
        elif command.startswith("/"):
            self.write(f"unknown command {command}; /help lists them\n")
        else:
            await self.send(IncomingMessage(self.chat, self.person, text=line))

    async def send_voice(self, path: Path) -> None:
        try:
            data = path.read_bytes()
        except OSError as error:
            self.write(f"cannot read {path}: {error.strerror}\n")
            return
        mime, _ = mimetypes.guess_type(path.name)
        await self.send(IncomingMessage(self.chat, self.person, audio=Audio(data, mime, path.name)))

    async def send(self, message: IncomingMessage) -> None:
        streaming = False
        async for event in self.service.replies.handle(message):
            if isinstance(event, Transcribed):
                self.write(f'🎤 "{event.text}"\n')
            elif isinstance(event, Queued):
                self.write(f"({event.text()})\n")
            elif isinstance(event, ReplyDelta):
                if not streaming:
                    self.write("iris> ")
                    streaming = True
                self.write(event.delta)
            elif isinstance(event, ReplyDone):
                self.last_reply, self.pair = event.turn_id, None
                self.write(f"\n  [turn {event.turn_id} · {event.model} · {event.timings.total_ms:.0f} ms]\n")
            elif isinstance(event, Spoken):
                try:
                    path = await asyncio.to_thread(self._keep_spoken, event)
                except OSError as error:  # a full disk costs the audio file, never the reply
                    self.write(f"  (the spoken reply was not kept: {file_problem(error)})\n")
                else:
                    self.write(f"  (🔊 {event.speech.seconds:.1f} s spoken: {path})\n")
            elif isinstance(event, Notice) and event.kind is not NoticeKind.DUPLICATE:
                self.write(("\n" if streaming else "") + f"({event.text})\n")

    async def choose_voice(self, argument: str) -> None:
        on = voice_choice(argument)
        if on is None:
            self.write(f"({VOICE_ASK})\n")
            return
        available = await self.service.replies.set_voice(self.person, on)
        self.write(f"({format_voice_choice(on, available)})\n")

    def _keep_spoken(self, spoken: Spoken) -> Path:
        self.spoken_dir.mkdir(parents=True, exist_ok=True)
        path = self.spoken_dir / f"reply-{spoken.turn_id}.ogg"
        atomic_write(path, spoken.speech.ogg, private=True)  # whole or absent; 0600: people's words
        return path

    async def rate(self, up: bool) -> None:
        if self.last_reply is None:
            self.write("(nothing to rate yet)\n")
            return
        outcome = await self.service.feedback.rate(self.person, self.last_reply, up)
        self.write(f"({'👍' if up else '👎'} {outcome.value} for turn {self.last_reply})\n")

    async def fix(self, text: str) -> None:
        if self.last_reply is None or not text:
            self.write("(usage: /fix THE BETTER ANSWER, after a reply)\n")
            return
        try:
            correction = await self.service.feedback.correct(self.person, self.last_reply, text)
        except UnknownReply as error:
            self.write(f"({error})\n")
            return
        self.write(f"(correction {correction} saved; it waits for review)\n")

    async def again(self) -> None:
        """Write another answer to the last reply and show both; the next line may pick."""
        if self.last_reply is None:
            self.write("(nothing to answer again yet)\n")
            return
        try:
            writing = await self.service.again.ask(self.person, self.last_reply)
            self.write("(writing another answer…)\n")
            pair = await writing
        except (UnknownReply, AgainRefused) as error:
            self.write(f"({error})\n")
            return
        self.pair = pair.id
        self.write(
            f"{choice_card(pair.first, pair.second or '', CONSOLE_LIMIT)}\n(type 1, 2 or n for neither)\n"
        )

    async def choose(self, pair_id: int, pick: Pick) -> None:
        try:
            self.write(f"({await self.service.again.choose(self.person, pair_id, pick)})\n")
        except AgainRefused as error:
            self.write(f"({error})\n")
