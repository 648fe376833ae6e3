"""The Try it page: the signed-in admin talks to Iris in the browser, by text or a voice note.

A message goes through ``service.replies.handle`` as a chat's does (platform ``web``, the admin
as the person, one conversation per admin name), and its events come back as Server-Sent Events
in the POST's own response, read by ``static/try.js`` with ``fetch``: the transcript, the reply
as it is written, the spoken reply's address, and any notice the service gives (too large,
unreadable, nothing heard, too long). 👍/👎 and corrections go through ``service.feedback`` with
the web chat as ``where``, so they are checked, limited and stored exactly as the chats' presses.

Refused before the service, with a sentence and nothing stored: no session or CSRF token
(``admin_only``), a body over the project's file limit (read from Content-Length before the
form is parsed, so a huge upload is never spooled), an upload that is not audio.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from bots.web.auth import Endpoint, admin_only
from bots.web.pages import render
from bots.web.review import MAX_TEXT
from core.domain import (
    Audio,
    ChatRef,
    IncomingMessage,
    Notice,
    NoticeKind,
    Person,
    Queued,
    RatingOutcome,
    ReplyDelta,
    ReplyDone,
    ServiceEvent,
    Spoken,
    Transcribed,
)
from core.feedback import Feedback, FeedbackLimited, UnknownReply

if TYPE_CHECKING:
    from core.service import ChatService

log = logging.getLogger(__name__)

T = TypeVar("T")

PLATFORM = "web"
FORM_SLACK = 64 * 1024  # the multipart envelope and the text field around an upload
KEPT_SPOKEN = 32  # spoken replies kept in memory for the page's <audio> (the newest)
# Browsers label MediaRecorder's Opus as audio/webm or audio/ogg; some say video/webm for the same.
AUDIO_TYPES = ("audio/", "video/webm", "application/ogg")
NOT_AUDIO = "That file is {kind}, not audio: record a voice note, or send an OGG, WebM, MP3, M4A or WAV file."
NEED_LENGTH = "The upload came without its size (Content-Length); send it again from this page."
WENT_WRONG = "Something went wrong while answering that; please try again in a moment."
REPLY_GONE = "That reply is no longer stored, or was not shown here."
SPOKEN_GONE = "That spoken reply is no longer kept here (only the newest are); the text stays above."
NO_CORRECTION = "Type the better answer first."


def _ack(outcome: RatingOutcome, up: bool) -> str:
    emoji = "👍" if up else "👎"
    return {
        RatingOutcome.CREATED: f"Thanks for the {emoji}: stored.",
        RatingOutcome.CHANGED: f"Changed your rating to {emoji}.",
        RatingOutcome.UNCHANGED: f"You already gave this reply a {emoji}.",
    }[outcome]


def sse(event: str, data: dict[str, object]) -> str:
    """One Server-Sent Event; its data is JSON on one line (json.dumps escapes newlines)."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


@dataclass(frozen=True)
class _Speech:
    owner: str
    ogg: bytes


class SpokenReplies:
    """The newest spoken replies' OGG, by reply id, for the page's <audio>; nothing on disk.

    The chats send the voice note itself; a page needs an address to play from, and people's
    words are not written anywhere for it. Replies older than the newest ``KEPT_SPOKEN`` go.
    """

    def __init__(self, size: int = KEPT_SPOKEN) -> None:
        self.size = size
        self._kept: OrderedDict[int, _Speech] = OrderedDict()

    def keep(self, turn_id: int, owner: str, ogg: bytes) -> None:
        self._kept[turn_id] = _Speech(owner, ogg)
        self._kept.move_to_end(turn_id)
        while len(self._kept) > self.size:
            self._kept.popitem(last=False)

    def get(self, turn_id: int, owner: str) -> bytes | None:
        found = self._kept.get(turn_id)
        return found.ogg if found is not None and found.owner == owner else None


def _person(request: Request) -> Person:
    name = request.state.session.name
    return Person(PLATFORM, name, name)


def _chat(request: Request) -> ChatRef:
    return ChatRef(PLATFORM, request.state.session.name)


def _service(request: Request) -> ChatService:
    service: ChatService = request.app.state.service
    return service


def _turn_id(request: Request) -> int | None:
    """The reply id in the address; None past 18 digits (never made here; beyond 64 bits)."""
    digits = str(request.path_params["turn_id"])
    return int(digits) if len(digits) <= 18 else None


async def _on_reply(
    request: Request,
    act: Callable[[Feedback, int], Awaitable[T]],
    answer: Callable[[T], str],
) -> Response:
    """A rating or correction of the reply in the address, refused as the chats refuse it."""
    turn_id = _turn_id(request)
    if turn_id is None:
        return PlainTextResponse(REPLY_GONE, status_code=404)
    try:
        done = await act(_service(request).feedback, turn_id)
    except UnknownReply:
        return PlainTextResponse(REPLY_GONE, status_code=404)
    except FeedbackLimited as limited:
        return PlainTextResponse(str(limited), status_code=429)
    return PlainTextResponse(answer(done))


def _audio_kind(upload: UploadFile) -> str:
    return (upload.content_type or "").split(";")[0].strip().lower()


class TryIt:
    """The page's endpoints; holds the spoken replies the page plays."""

    def __init__(self) -> None:
        self.spoken = SpokenReplies()

    async def page(self, request: Request) -> Response:
        chat = _service(request).config.chat
        limits = {
            "max_bytes": chat.max_file_bytes,
            "max_mb": f"{chat.max_file_mb:g}",
            "max_chars": chat.max_text_chars,
            "max_correction": MAX_TEXT,
        }
        return render(request, "try.html", limits)

    def bounded(self, endpoint: Endpoint) -> Endpoint:
        """``admin_only`` after a size check on Content-Length, before the form is read."""
        guarded = admin_only(endpoint)

        async def check(request: Request) -> Response:
            if await request.app.state.gate.session(request) is not None:  # no session: admin_only refuses
                chat = _service(request).config.chat
                length = request.headers.get("content-length", "")
                if not length.isdigit():
                    return PlainTextResponse(NEED_LENGTH, status_code=411)
                if int(length) > chat.max_file_bytes + FORM_SLACK:
                    too_large = f"That file is too large: the limit is {chat.max_file_mb:g} MB."
                    return PlainTextResponse(too_large, status_code=413)
            return await guarded(request)

        return check

    async def send(self, request: Request) -> Response:
        """A typed message or a recorded voice note in; its events out as they come."""
        form = await request.form()
        upload, text = form.get("audio"), form.get("text")
        person, chat = _person(request), _chat(request)
        if isinstance(upload, UploadFile) and (upload.size or upload.filename):
            kind = _audio_kind(upload)
            if not kind.startswith(AUDIO_TYPES):
                return PlainTextResponse(NOT_AUDIO.format(kind=kind or "of no stated type"), status_code=415)
            audio = Audio(await upload.read(), kind, upload.filename or "voice-note")
            message = IncomingMessage(chat, person, audio=audio)
        else:
            message = IncomingMessage(chat, person, text=text if isinstance(text, str) else "")
        headers = {"cache-control": "no-store", "x-accel-buffering": "no"}  # nginx: do not hold the stream
        return StreamingResponse(
            self._events(request, message), media_type="text/event-stream", headers=headers
        )

    async def _events(self, request: Request, message: IncomingMessage) -> AsyncIterator[str]:
        owner = request.state.session.name
        try:
            async with aclosing(_service(request).replies.handle(message)) as answer:
                async for event in answer:
                    shown = self._shown(event, owner)
                    if shown is not None:
                        yield shown
        except Exception:  # never a traceback on the page: a sentence, and the log has the rest
            log.exception("the Try it page could not answer a message")
            yield sse("notice", {"kind": NoticeKind.MODEL_FAILED.value, "text": WENT_WRONG})
        yield sse("end", {})

    def _shown(self, event: ServiceEvent, owner: str) -> str | None:
        if isinstance(event, Transcribed):
            return sse("transcript", {"text": event.text, "seconds": round(event.audio_seconds, 2)})
        if isinstance(event, Queued):
            return sse("queued", {"text": event.text()})
        if isinstance(event, ReplyDelta):
            return sse("reply", {"text": event.text})
        if isinstance(event, ReplyDone):
            ms = round(event.timings.total_ms or 0)
            return sse("done", {"turn_id": event.turn_id, "text": event.text, "model": event.model, "ms": ms})
        if isinstance(event, Spoken):
            self.spoken.keep(event.turn_id, owner, event.speech.ogg)
            url = f"/try/spoken/{event.turn_id}"
            return sse("spoken", {"url": url, "seconds": round(event.speech.seconds, 2)})
        if isinstance(event, Notice) and event.kind is not NoticeKind.DUPLICATE:
            return sse("notice", {"kind": event.kind.value, "text": event.text})
        return None

    async def spoken_reply(self, request: Request) -> Response:
        turn_id = _turn_id(request)
        ogg = None if turn_id is None else self.spoken.get(turn_id, request.state.session.name)
        if ogg is None:
            return PlainTextResponse(SPOKEN_GONE, status_code=404)
        return Response(ogg, media_type="audio/ogg", headers={"cache-control": "no-store"})

    async def rate(self, request: Request) -> Response:
        form = await request.form()
        up = form.get("rating") == "up"
        if form.get("rating") not in ("up", "down"):
            return PlainTextResponse("Choose 👍 or 👎.", status_code=400)
        return await _on_reply(
            request,
            lambda feedback, turn_id: feedback.rate(_person(request), turn_id, up, _chat(request)),
            lambda outcome: _ack(outcome, up),
        )

    async def correct(self, request: Request) -> Response:
        form = await request.form()
        text = form.get("text")
        if not isinstance(text, str) or not text.strip():
            return PlainTextResponse(NO_CORRECTION, status_code=400)
        if len(text) > MAX_TEXT:  # what the Review page can approve
            return PlainTextResponse(
                f"That answer is over {MAX_TEXT} characters; nothing was stored.", status_code=400
            )
        return await _on_reply(
            request,
            lambda feedback, turn_id: feedback.correct(_person(request), turn_id, text, _chat(request)),
            lambda correction: f"Correction #{correction} saved; it waits for review on the Review page.",
        )

    async def reset(self, request: Request) -> Response:
        await _service(request).privacy.reset(_chat(request), _person(request))
        return PlainTextResponse("A new conversation: earlier turns are no longer in the prompt.")


def routes() -> list[BaseRoute]:
    """The page and its actions, each behind ``admin_only`` (POSTs with the CSRF check)."""
    page = TryIt()
    return [
        Route("/try", admin_only(page.page)),
        Route("/try/send", page.bounded(page.send), methods=["POST"]),
        Route("/try/spoken/{turn_id:int}", admin_only(page.spoken_reply)),
        Route("/try/rate/{turn_id:int}", admin_only(page.rate), methods=["POST"]),
        Route("/try/correct/{turn_id:int}", admin_only(page.correct), methods=["POST"]),
        Route("/try/reset", admin_only(page.reset), methods=["POST"]),
    ]
