"""The Audit page: the audit trail newest first, a page at a time, searched by actor, action,
words in the target or details, and a range of UTC days."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bots.web.auth import admin_only
from bots.web.pages import render
from bots.web.review import BadRequest
from core.audit_search import AuditQuery
from core.domain import AuditAction

PAGE = 50
MAX_TEXT = 200  # characters of a search


def _day(values: dict[str, str], name: str) -> date | None:
    given = values.get(name) or ""
    if not given:
        return None
    try:
        return date.fromisoformat(given)
    except ValueError:
        raise BadRequest(f"The {name} date must read YYYY-MM-DD (it was {given[:20]!r}).") from None


def _query(values: dict[str, str]) -> AuditQuery:
    """The search the query string asks for; BadRequest says what is wrong with it."""
    action = values.get("action") or None
    if action is not None and action not in {a.value for a in AuditAction}:
        raise BadRequest(f"Unknown action {action[:40]!r}.")
    text = (values.get("q") or "").strip()
    actor = (values.get("actor") or "").strip()
    if len(text) > MAX_TEXT or len(actor) > MAX_TEXT:
        raise BadRequest(f"Search with at most {MAX_TEXT} characters.")
    before = values.get("before") or ""
    if before and not before.isdigit():
        raise BadRequest("The page to start before must be an audit line number.")
    since, until = _day(values, "since"), _day(values, "until")
    if since and until and until < since:
        raise BadRequest("The until date is before the since date.")
    return AuditQuery(
        actor=actor or None,
        action=AuditAction(action) if action else None,
        text=text or None,
        since=datetime.combine(since, datetime.min.time(), UTC) if since else None,
        # The until day is included: the search ends at the next midnight.
        until=datetime.combine(until + timedelta(days=1), datetime.min.time(), UTC) if until else None,
        before=int(before) if before else None,
        limit=PAGE,
    )


@admin_only
async def audit_page(request: Request) -> Response:
    values = dict(request.query_params)
    try:
        query = _query(values)
    except BadRequest as error:
        return render(request, "message.html", {"message": str(error)}, status_code=400)
    page = await asyncio.to_thread(request.app.state.records.audit.search_audit, query)
    kept = {k: v for k, v in values.items() if k in ("actor", "action", "q", "since", "until") and v}
    return render(
        request,
        "audit.html",
        {
            "page": page,
            "form": kept,
            "actions": [a.value for a in AuditAction],
            "details": lambda d: json.dumps(d, ensure_ascii=False, sort_keys=True),
            "next_url": f"/audit?{urlencode({**kept, 'before': page.next_before})}"
            if page.next_before
            else None,
            "first_url": f"/audit?{urlencode(kept)}" if query.before else None,
        },
    )


def routes() -> list[Route]:
    return [Route("/audit", audit_page)]
