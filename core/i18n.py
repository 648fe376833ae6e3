"""Iris's own words in the person's language (issue #28): gettext catalogs, one language per update.

Every sentence Iris writes is marked with ``_()`` (or ``ngettext()``; ``N_()`` marks a module
constant, translated where it is shown) and translated through the catalogs in
``core/locale/<language>/LC_MESSAGES/iris.po`` (the README's Languages section says how to extract,
translate and compile them). English is the source language and the fallback.

Which language a sentence is in is held in a ``ContextVar``, set once per update by the adapter
(``use``): the person's ``/language``, else their platform's language (Telegram's
``language_code``, Discord's interaction locale), else English (``choose``). asyncio gives each
task its own copy of the context (a task made inside a handler inherits it), so a crowd of updates
in different languages never mixes them; gettext's process-wide ``install()`` would.

Placeholders are ``str.format`` names (``_("Up to {seconds} s").format(seconds=30)``), so a
translation may reorder them; a test checks that every catalog keeps them.
"""

from __future__ import annotations

import gettext
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from pathlib import Path

DOMAIN = "iris"
LOCALE_DIR = Path(__file__).with_name("locale")
DEFAULT = "en"
# The languages with a catalog; English is the text in the code.
LANGUAGES = ("en", "de", "es", "fr", "it", "pt", "ru")

_current: ContextVar[str] = ContextVar("iris_language", default=DEFAULT)


def supported(code: str | None) -> str | None:
    """The catalog for a language tag (``de``, ``de-DE``, ``pt_BR``, Discord's ``es-ES``), or None."""
    if not code:
        return None
    base = code.replace("_", "-").split("-", 1)[0].strip().casefold()
    return base if base in LANGUAGES else None


def choose(*candidates: str | None) -> str:
    """The first of ``candidates`` with a catalog, else English: ``choose(preference, platform_code)``."""
    for candidate in candidates:
        found = supported(candidate)
        if found is not None:
            return found
    return DEFAULT


def use(language: str | None) -> None:
    """Speak ``language`` (a tag; unknown: English) for the rest of the current task and the tasks it starts."""
    _current.set(choose(language))


def current() -> str:
    """The language this task speaks."""
    return _current.get()


@contextmanager
def speaking(language: str | None) -> Iterator[None]:
    """Speak ``language`` inside the block only (a notice to someone other than the current person)."""
    token = _current.set(choose(language))
    try:
        yield
    finally:
        _current.reset(token)


@cache
def _catalog(language: str) -> gettext.NullTranslations:
    # fallback: English (the msgid itself) where a catalog or a message is missing.
    return gettext.translation(DOMAIN, LOCALE_DIR, languages=[language], fallback=True)


def translate(message: str, language: str) -> str:
    """``message`` in ``language``, whatever the current one (command menus registered per language)."""
    return _catalog(choose(language)).gettext(message)


def _(message: str) -> str:
    """``message`` in the current task's language."""
    return _catalog(_current.get()).gettext(message)


def ngettext(singular: str, plural: str, count: int) -> str:
    """The form of a sentence for ``count`` in the current language (Russian has three)."""
    return _catalog(_current.get()).ngettext(singular, plural, count)


def language_name(code: str) -> str:
    """A language's name in the current language ("Russisch" in German), from Babel's CLDR data."""
    from babel import Locale  # its data loads on first use

    try:
        found = Locale.parse(current()).languages.get(code)
    except (ValueError, LookupError):
        return code
    return str(found) if found else code


def N_(message: str) -> str:
    """Mark a constant for the catalogs without translating it (``_(CONSTANT)`` where it is shown)."""
    return message
