"""Iris's own words (issue #28, ``core/i18n.py``): every marked sentence is in the template, every catalog
translates every one of them with the same placeholders and markup, the committed ``.mo`` files say what
their ``.po`` files say, the language is chosen as documented, and concurrent tasks keep their own.
"""

from __future__ import annotations

import asyncio
import gettext
import re
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog, Message
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from bots.render import format_forget
from core import i18n
from core.domain import ForgetReport
from core.i18n import _, ngettext

ROOT = Path(__file__).resolve().parents[1]
CATALOGS = [language for language in i18n.LANGUAGES if language != i18n.DEFAULT]
PLACEHOLDER = re.compile(r"\{[^{}]*\}")
COMMAND = re.compile(r"/(?:start|help|reset|forget|cancel|consent|voice|language|settings|persona|retrain)\b")
# Markup a translation keeps as it is: Discord's bold and code spans, bullets, line breaks.
MARKS = ("**", "`", "•", "\n")


def template() -> Catalog:
    with (i18n.LOCALE_DIR / "iris.pot").open("rb") as file:
        return read_po(file)


def catalog(language: str) -> Catalog:
    with (i18n.LOCALE_DIR / language / "LC_MESSAGES" / "iris.po").open("rb") as file:
        return read_po(file, locale=language)


def ids(messages: Catalog) -> set[str | tuple[str, ...]]:
    return {message.id for message in messages if message.id}


def forms(message: Message) -> list[str]:
    return list(message.string) if isinstance(message.string, tuple) else [message.string]


def test_the_template_holds_every_marked_sentence() -> None:
    """What ``make catalogs`` would extract now is what the committed template holds (none forgotten)."""
    config = ROOT / "babel.cfg"
    method_map = [("core/**.py", "python"), ("bots/**.py", "python")]
    assert config.read_text().count("[python:") == len(method_map)  # the same patterns as babel.cfg
    keywords = {"_": None, "N_": None, "ngettext": (1, 2)}
    found = set()
    for _filename, _line, message, _comments, _context in extract_from_dir(
        str(ROOT), method_map, keywords=keywords
    ):
        found.add(message)
    assert found == ids(template()), "run `make catalogs` and translate what is new"


@pytest.mark.parametrize("language", CATALOGS)
def test_every_catalog_translates_every_sentence_keeping_placeholders(language: str) -> None:
    translated = catalog(language)
    assert translated.num_plurals == (3 if language == "ru" else 2)
    assert ids(translated) == ids(template())
    for message in translated:
        if not message.id:
            continue
        assert not message.fuzzy, message.id
        for index, text in enumerate(forms(message)):
            source = source_of(message, index, language)
            assert text.strip(), f"{language}: no translation of {message.id!r}"
            assert set(PLACEHOLDER.findall(text)) == set(PLACEHOLDER.findall(source)), (language, text)
            for mark in MARKS:
                assert text.count(mark) == source.count(mark), (language, mark, text)
            assert set(COMMAND.findall(source)) <= set(COMMAND.findall(text)), (language, text)


def source_of(message: Message, index: int, language: str) -> str:
    """The English a form translates: the singular for the first form, the plural for the others.

    Russian's first form also serves 21, 31, …: it says the count wherever the plural does.
    """
    if not isinstance(message.id, tuple):
        return message.id
    return message.id[0] if index == 0 and language != "ru" else message.id[1]


@pytest.mark.parametrize("language", CATALOGS)
def test_the_committed_mo_files_say_what_the_po_files_say(language: str) -> None:
    """The ``.mo`` files are committed (no build step on install): stale ones fail here."""
    with (i18n.LOCALE_DIR / language / "LC_MESSAGES" / "iris.mo").open("rb") as file:
        compiled = gettext.GNUTranslations(file)
    for message in catalog(language):
        if not message.id:
            continue
        if isinstance(message.id, tuple):
            for count in (1, 2, 5, 21):
                index = translated_plural_index(language, count)
                assert compiled.ngettext(message.id[0], message.id[1], count) == message.string[index]
        else:
            assert compiled.gettext(message.id) == message.string


def translated_plural_index(language: str, count: int) -> int:
    if language == "ru":
        if count % 10 == 1 and count % 100 != 11:
            return 0
        return 1 if 2 <= count % 10 <= 4 and not 12 <= count % 100 <= 14 else 2
    return 0 if count == 1 else 1


def test_the_language_is_the_persons_choice_then_the_platforms_then_english() -> None:
    assert i18n.choose("ru", "de") == "ru"  # /language wins
    assert i18n.choose(None, "es-ES") == "es"  # Discord's locale
    assert i18n.choose(None, "pt-BR") == "pt"  # one Portuguese catalog for pt-BR and pt-PT
    assert i18n.choose(None, "PT_br") == i18n.choose(None, "pt-PT-x-odd") == "pt"  # odd spellings
    assert i18n.choose(None, "nl-NL") == "en"  # no catalog: English
    assert i18n.choose("nl", "fr") == "fr"  # a /language without a catalog: the platform's
    assert i18n.choose("", None) == "en"
    assert i18n.choose("../../etc", "de_DE") == "de"  # hostile tags choose nothing, never a path
    assert i18n.supported("x" * 500) is None


def test_sentences_in_each_language() -> None:
    """What a person reads, in each catalog's language; English is the text in the code."""
    with i18n.speaking("de"):
        assert _("Deleted.") == "Gelöscht."
    with i18n.speaking("ru"):
        counted = [ngettext("{count} message", "{count} messages", n).format(count=n) for n in (1, 3, 5, 21)]
        assert counted == ["1 сообщение", "3 сообщения", "5 сообщений", "21 сообщение"]
        report = format_forget(ForgetReport(turns=2, ratings=1, corrections=5, conversations=1))
        assert report.startswith("Готово: я удалила 2 сообщения, 1 оценку и 5 предложенных ответов.")
    with i18n.speaking("fr"):
        assert i18n.translate("Deleted.", "es") == "Borrado."  # explicit, whatever the current one
        assert i18n.language_name("de") == "allemand"
    assert _("Deleted.") == "Deleted."  # outside any block: English


async def test_concurrent_tasks_each_keep_their_own_language() -> None:
    """A crowd of handlers in different languages, interleaved on one loop: none takes another's."""

    async def handler(language: str) -> list[str]:
        i18n.use(language)
        said = []
        for _round in range(20):
            await asyncio.sleep(0)  # let every other handler run between two sentences
            said.append(_("Deleted."))
        return said

    languages = ["de", "es", "fr", "ru", "en"] * 20
    results = await asyncio.gather(*(handler(language) for language in languages))
    expected = {language: i18n.translate("Deleted.", language) for language in set(languages)}
    for language, said in zip(languages, results, strict=True):
        assert set(said) == {expected[language]}
    assert len(set(expected.values())) == 5
    assert i18n.current() == i18n.DEFAULT  # the test's own task was never changed


def test_an_edit_prompt_in_any_catalogs_language_is_read_back() -> None:
    """Telegram's ✏️ Edit prompt carries the correction's id in its words; the admin's reply is read back
    from them whatever language the prompt was written in (their /language may have changed since)."""
    from bots.telegram_bot.edits import PROMPT, prompt_id

    for language in i18n.LANGUAGES:
        written = i18n.translate(PROMPT, language).format(id=42)
        found = prompt_id().match(written)
        assert found is not None and [group for group in found.groups() if group] == ["42"], language
    assert prompt_id().match("✏️ Suggested answer #7 is great") is None  # not the prompt's words
