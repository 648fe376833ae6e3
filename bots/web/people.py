"""The People page: find a person, see what is stored about them, set their consent, and run
/forget on their behalf.

Consent and /forget go through ``service.privacy``, the path the chats' /consent and /forget
take (the same deletions, the same sweep of the copies outside the database, the same
cooldown), and the audit trail names the admin (``web:<name>``), with the person as the target.
/forget is asked twice: a page that says what will go, then a POST that does it.

A consent can be recorded for someone Iris has not stored yet (a "no" given by email before
they first write holds from their first message), as ``iris feedback consent`` can: both end in
the store's ``set_consent``, which creates the person. Only for a platform Iris serves, so that
a typo in the platform stores no one.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlencode

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from bots.render import printable
from bots.web.auth import admin_only
from bots.web.pages import render
from bots.web.review import BadRequest
from core.domain import Person
from core.people_directory import PersonRecord

FOUND = 50  # people listed for a search
CONSENT = {"yes": True, "no": False, "unset": None}
PLATFORMS = ("telegram", "discord", "console")  # where someone not stored yet may be recorded


def _person(values: dict[str, str]) -> Person:
    """The person named by ``platform`` and ``user`` (as stored: the platform's own user id)."""
    platform, user = (values.get("platform") or "").strip(), (values.get("user") or "").strip()
    if not platform or not user:
        raise BadRequest("Name a person by platform and user id.")
    if len(platform) > 32 or len(user) > 128 or printable(platform + user) != platform + user:
        raise BadRequest("That is not a platform and user id Iris could have stored.")
    return Person(platform, user)


def _form(form: FormData) -> dict[str, str]:
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _here(person: Person, path: str = "/people/show") -> str:
    return f"{path}?{urlencode({'platform': person.platform, 'user': person.user_id})}"


def _refusal(request: Request, message: str, status: int, stranger: Person | None = None) -> Response:
    """The People page with a sentence; with ``stranger``, the form that records their consent."""
    context = {"q": "", "found": None, "message": message, "stranger": stranger}
    return render(request, "people.html", context, status_code=status)


async def _stored(request: Request) -> tuple[Person, PersonRecord] | Response:
    """The person the address names and what is stored about them, or the page that says why not."""
    try:
        person = _person(dict(request.query_params))
    except BadRequest as error:
        return _refusal(request, str(error), 400)
    record = await asyncio.to_thread(request.app.state.records.people.person_record, person)
    if record is None:
        gone = (
            f"Nothing is stored about {person.actor}; "
            f"if they used /forget, the audit trail names them {person.pseudonym}."
        )
        return _refusal(request, gone, 404, person if person.platform in PLATFORMS else None)
    return person, record


@admin_only
async def people_page(request: Request) -> Response:
    """A search by user id or name; ``platform:user id`` goes straight to that person."""
    q = (request.query_params.get("q") or "").strip()[:128]
    platform, _, user = q.partition(":")
    if platform and user and " " not in q:
        return RedirectResponse(_here(Person(platform, user)), status_code=303)
    found = await asyncio.to_thread(request.app.state.records.people.find_people, q, FOUND) if q else None
    return render(request, "people.html", {"q": q, "found": found, "message": None, "stranger": None})


@admin_only
async def person_page(request: Request) -> Response:
    found = await _stored(request)
    if isinstance(found, Response):
        return found
    person, record = found
    return render(
        request, "person.html", {"r": record, "forget_url": _here(person, "/people/forget"), "done": None}
    )


@admin_only
async def set_consent(request: Request) -> Response:
    values = _form(await request.form())
    try:
        person = _person(values)
        if values.get("consent") not in CONSENT:
            raise BadRequest("Choose yes, no or unset.")
    except BadRequest as error:
        return _refusal(request, str(error), 400)
    stored = await asyncio.to_thread(request.app.state.records.people.person_record, person)
    if stored is None and person.platform not in PLATFORMS:
        served = ", ".join(PLATFORMS)
        unknown = f"Iris serves no platform named {person.platform!r} ({served}); no consent was recorded."
        return _refusal(request, unknown, 400)
    consent = CONSENT[values["consent"]]
    await request.app.state.service.privacy.set_consent(person, consent, actor=request.state.session.actor)
    return RedirectResponse(_here(person), status_code=303)


@admin_only
async def forget_page(request: Request) -> Response:
    """The confirmation: what /forget will delete, and the button that does it."""
    found = await _stored(request)
    if isinstance(found, Response):
        return found
    person, record = found
    return render(request, "forget.html", {"r": record, "back": _here(person), "report": None})


@admin_only
async def forget(request: Request) -> Response:
    values = _form(await request.form())
    try:
        person = _person(values)
        if values.get("confirm") != "yes":
            raise BadRequest("Nothing was deleted: confirm on the /forget page first.")
    except BadRequest as error:
        return _refusal(request, str(error), 400)
    service = request.app.state.service
    report = await service.privacy.forget(person, actor=request.state.session.actor)
    if report.retry_after_s <= 0:
        await service.feedback.drop_awaited_corrections(person)  # as the chats' /forget does
    status = 429 if report.retry_after_s > 0 else 200
    context = {"r": None, "person": person, "back": _here(person), "report": report}
    return render(request, "forget.html", context, status_code=status)


def routes() -> list[Route]:
    return [
        Route("/people", people_page),
        Route("/people/show", person_page),
        Route("/people/consent", set_consent, methods=["POST"]),
        Route("/people/forget", forget_page),
        Route("/people/forget", forget, methods=["POST"]),
    ]
