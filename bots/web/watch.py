"""The Watch page: ratings per model version by day, the A/B test, voice against text, languages and
busiest hours, drawn by Chart.js (vendored) and refreshed from ``/watch.json`` while the page is open.

The A/B figures are ``Administration.ab_status``'s report as ``to_json`` writes it: the code and the
numbers of ``iris models ab status --json``, never worked out again here.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bots.web.auth import admin_only
from bots.web.pages import render
from core.watch import MAX_DAYS, watch_json

DAYS = (7, 30, 90, 365)  # the windows offered; any 1…MAX_DAYS is taken
DEFAULT_DAYS = 30
AB_FIELDS = (
    "name",
    "conversations",
    "replies",
    "rated_share",
    "ratings",
    "all_ratings",
    "raters",
    "ups",
    "up_share",
    "interval",
)


def _days(request: Request) -> int | None:
    given = request.query_params.get("days") or str(DEFAULT_DAYS)
    return int(given) if given.isdigit() and 1 <= int(given) <= MAX_DAYS else None


async def _figures(request: Request, days: int) -> dict[str, object]:
    figures = await asyncio.to_thread(request.app.state.records.watch.watch_figures, days)
    return watch_json(figures, await request.app.state.service.admin.ab_status())


@admin_only
async def watch_page(request: Request) -> Response:
    days = _days(request)
    if days is None:
        message = f"Choose a number of days from 1 to {MAX_DAYS}."
        return render(request, "message.html", {"message": message}, status_code=400)
    data = await _figures(request, days)
    return render(request, "watch.html", {"data": data, "days": days, "choices": DAYS, "ab_fields": AB_FIELDS})


@admin_only
async def watch_data(request: Request) -> Response:
    """The page's figures as JSON (``watch.js`` polls it every few seconds)."""
    days = _days(request)
    if days is None:
        return JSONResponse({"error": f"days: from 1 to {MAX_DAYS}"}, status_code=400)
    return JSONResponse(await _figures(request, days), headers={"cache-control": "no-store"})


def routes() -> list[Route]:
    return [Route("/watch", watch_page), Route("/watch.json", watch_data)]
