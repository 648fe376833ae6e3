"""The Review page: the queue of corrections, filtered and paged, and one request per decision.

Decisions go through the service's ``Feedback.review`` with ``pending_only``, as the chats'
review cards do: the audit trail names the admin (``web:<name>``), the correction memory
follows at once, and of two decisions at once the first stands.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from bots.render import printable
from bots.review import ReviewDesk
from bots.web.auth import admin_only
from bots.web.pages import render
from core.domain import Correction, CorrectionStatus, Turn
from core.ports import AlreadyReviewed
from core.review_queue import ReviewItem

log = logging.getLogger(__name__)

STATUSES = ("pending", "approved", "rejected", "all")
MAX_TEXT = 4000  # characters of an edited answer


@dataclass(frozen=True)
class Card:
    item: ReviewItem
    context: list[Turn]
    message: str | None = None

    @property
    def correction(self) -> Correction:
        return self.item.correction

    @property
    def hidden(self) -> int:
        """Control, bidi and invisible characters in the proposal (stored as they are; flagged)."""
        text = self.correction.text
        return len(text) - len(printable(text))


class BadRequest(ValueError):
    """A query or form the page cannot use; the message says why."""


def _filters(values: dict[str, str]) -> tuple[str, str | None, int | None]:
    status = values.get("status") or "pending"
    if status not in STATUSES:
        raise BadRequest(f"Unknown status {status[:40]!r}: choose one of {', '.join(STATUSES)}.")
    model = values.get("model") or None
    after_text = values.get("after") or ""
    if after_text and not after_text.isdigit():
        raise BadRequest("The page to start after must be a correction number.")
    return status, model, int(after_text) if after_text else None


def _desk(request: Request) -> ReviewDesk:
    return ReviewDesk(request.app.state.service.store, _reviewer(request))


def _reviewer(request: Request) -> str:
    return f"web:{request.state.session.name}"


@admin_only
async def review_page(request: Request) -> Response:
    try:
        status, model, after = _filters(dict(request.query_params))
    except BadRequest as error:
        return render(request, "message.html", {"message": str(error)}, status_code=400)
    queue = request.app.state.queue
    size = request.app.state.config.page_size
    wanted = None if status == "all" else CorrectionStatus(status)
    page = await asyncio.to_thread(queue.page, wanted, model, after, size)
    models = await asyncio.to_thread(queue.model_versions)
    desk = _desk(request)
    contexts = await asyncio.to_thread(lambda: [desk.context(item.correction) for item in page.items])
    cards = [Card(item, context) for item, context in zip(page.items, contexts, strict=True)]
    here = {"status": status, **({"model": model} if model else {})}
    return render(
        request,
        "review.html",
        {
            "cards": cards,
            "status": status,
            "model": model,
            "models": models,
            "counts": {s.value: page.counts.get(s, 0) for s in CorrectionStatus},
            "after": after,
            "next_url": f"/review?{urlencode({**here, 'after': page.next_after})}" if page.next_after else None,
            "first_url": f"/review?{urlencode(here)}" if after else None,
            "statuses": STATUSES,
            "query": urlencode,
        },
    )


@admin_only
async def decide(request: Request) -> Response:
    """Approve (with the text as edited) or reject one correction."""
    correction_id = int(request.path_params["correction_id"])
    form = await request.form()
    action, text = form.get("action"), form.get("text")
    htmx = request.headers.get("hx-request") == "true"
    try:
        status, model, after = _filters({k: v for k, v in form.items() if isinstance(v, str)})
        if action not in ("approve", "reject"):
            raise BadRequest("Choose approve or reject.")
        if text is not None and not isinstance(text, str):
            raise BadRequest("The corrected answer must be text.")
        if action == "approve" and text is not None and not text.strip():
            raise BadRequest("The corrected answer is empty, so nothing was approved.")
        if text is not None and len(text) > MAX_TEXT:
            raise BadRequest(f"The corrected answer is over {MAX_TEXT} characters; nothing was stored.")
    except BadRequest as error:
        return await _answer(request, correction_id, str(error), 400, htmx)
    service = request.app.state.service
    current = await asyncio.to_thread(service.store.correction, correction_id)
    if current is None:
        return await _answer(request, correction_id, f"There is no correction #{correction_id}.", 404, htmx)
    edited = text.strip() if action == "approve" and text and text.strip() != current.text.strip() else None
    reviewer = _reviewer(request)
    try:
        decided = await service.feedback.review(
            correction_id, action == "approve", reviewer, edited, pending_only=True
        )
    except AlreadyReviewed:
        now = await asyncio.to_thread(service.store.correction, correction_id)
        by = f" ({now.status.value} by {now.reviewer or '?'})" if now else ""
        message = (
            f"Correction #{correction_id} was already reviewed{by}; the first decision stands, nothing changed."
        )
        return await _answer(request, correction_id, message, 409, htmx)
    except LookupError:
        return await _answer(request, correction_id, f"There is no correction #{correction_id}.", 404, htmx)
    log.info("correction %s %s by %s", correction_id, decided.status.value, reviewer)
    if not htmx:
        here = {"status": status, **({"model": model} if model else {}), **({"after": after} if after else {})}
        return RedirectResponse(f"/review?{urlencode(here)}", status_code=303)
    verdict = f"{decided.status.value.capitalize()} by {reviewer}" + (" (edited)" if edited else "") + "."
    return await _answer(request, correction_id, verdict, 200, htmx)


async def _answer(request: Request, correction_id: int, message: str, code: int, htmx: bool) -> Response:
    """The correction's card with a message (htmx swaps it in place), or a page saying it."""
    if not htmx:
        return render(request, "message.html", {"message": message}, status_code=code)
    queue = request.app.state.queue
    page = await asyncio.to_thread(queue.page, None, None, correction_id - 1, 1)
    found = [item for item in page.items if item.correction.id == correction_id]
    if not found:
        return render(request, "message_card.html", {"message": message}, status_code=code)
    desk = _desk(request)
    context = await asyncio.to_thread(desk.context, found[0].correction)
    return render(request, "card.html", {"card": Card(found[0], context, message)}, status_code=code)
