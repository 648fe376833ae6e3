"""Does a message ask what a stored question asks? A cheap check beside the embedding match.

A sentence embedding scores "When was The Salt Orchard published?" almost as close to "Who
wrote The Salt Orchard?" as a rewording of it: same subject, same words. What differs is small
and easy to read off the words, so the correction memory (``core.memory``) also asks, before it
answers a message from a correction:

* **the kind of answer asked for**: a person (who, which writer…), a time (when, what year…),
  a place (where, which city…), a quantity (how many, how tall, what height…), yes or no (a
  question that starts with is, does, can…), a reason (why, how come) or a manner (how). Both
  known and different: a different question. A question that asks for something else ("what
  colour…", "what is X?") has no kind here and never blocks;
* **distinguishing words**: a number, a weekday or a month in the message that none of the
  stored wordings has ("Who won the 2023 regatta?" against "Who won the 2022 regatta?"), or a
  word whose opposite the stored wordings have and not it ("close" against "open").

English only: a message in another language (``looks_english``) gets no kind and no
distinguishing words, so this check never blocks it; the embedding alone decides.

    >>> kinds("I wonder when the Salt Orchard was published")
    frozenset({<Kind.TIME: 'time'>})
    >>> asks_something_else("Who wrote the 2023 guide?", ["Who wrote the 2022 guide?"])
    'mentions 2023'
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise


def _word_set(words: str) -> frozenset[str]:
    return frozenset(words.split())


class Kind(enum.StrEnum):
    """The kind of answer a question asks for."""

    PERSON = "person"
    TIME = "time"
    PLACE = "place"
    QUANTITY = "quantity"
    YES_NO = "yes-no"
    REASON = "reason"
    MANNER = "manner"


# --- is it English? -------------------------------------------------------------------------

# Frequent English words, and frequent words of the languages people most often mix up with it
# in Latin letters (Spanish, French, German, Dutch, Italian, Portuguese). Words both use ("a",
# "in", "was", "die") are in neither list.
_ENGLISH_WORDS = _word_set(
    "the who whom whose what when where why how which does did you your are were is of and can "
    "could would should will i my me we they it there this that to for with have has at"
)
_OTHER_WORDS = _word_set(
    # Spanish, Portuguese
    "el la los las de del que qué quien quién quienes cuando cuándo donde dónde como cómo cual "
    "cuál cuanto cuánto cuántos por porque es está están un una y se lo hay "
    "quem onde quando qual quais os não é em um uma dos das "
    # French
    "le les des du est où qui quel quelle quels quelles pourquoi comment combien et une "
    "sont c ce il elle je vous nous "
    # German
    "der das den dem ein eine ist sind wer wann wo wie warum welche welcher wieviel und nicht "
    "hat ich sie "
    # Dutch
    "het een wie wanneer waar hoe waarom welke zijn niet en op ik je "
    # Italian
    "il di che chi dove perché quale quanto sono è ha gli della"
)


def _words(text: str) -> list[str]:
    """Lower-case words; an apostrophe splits one ("what's" → "what", "s")."""
    return re.findall(r"[^\W_]+", text.lower())


def looks_english(text: str) -> bool:
    """No frequent word of another language, or more frequent English ones than those.

    A word in another script (Cyrillic, Greek, CJK, Arabic…) counts as another language's; a
    capitalised English word inside the message is a title's ("¿Quién escribió The Salt
    Orchard?") and does not count. A message with neither ("hi", "trail distance") is English.
    """
    english = other = 0
    for n, word in enumerate(re.findall(r"[^\W_]+", text)):
        lower = word.lower()
        if lower in _ENGLISH_WORDS:
            english += n == 0 or not word[0].isupper()
        elif lower in _OTHER_WORDS or not all(_latin(c) for c in word if c.isalpha()):
            other += 1
    return other == 0 or english > other


def _latin(char: str) -> bool:
    return unicodedata.name(char, "").startswith("LATIN")


# --- the kind of answer ------------------------------------------------------------------------

_AUXILIARIES = _word_set(
    "is are was were am do does did can could will would should shall must may might has have had "
    "isn aren wasn weren don doesn didn can cannot couldn won wouldn shouldn hasn haven hadn"
)
# "Do you know who…", "Can you tell me where…": the question inside decides.
_ASKERS = _word_set("you anyone anybody someone somebody u ya")
_ASKING_VERBS = _word_set("know tell remember recall say explain confirm guess")
_LEAD_INS = _word_set("hey hi hello so ok okay oh and but also please well um btw just")

_WHO = frozenset({"who", "whom", "whose", "whos"})
_WHEN = frozenset({"when", "whens"})
_WHERE = frozenset({"where", "wheres"})
_WHAT = frozenset({"what", "which", "whats", "wat"})
_HOW = frozenset({"how", "hows"})

# "how tall", "how many"…: a quantity; "how early": a time; "how old": either.
_HOW_NEXT = {
    **dict.fromkeys(
        _word_set(
            "many much tall high long far big large deep wide heavy often fast small short thick "
            "expensive frequently"
        ),
        frozenset({Kind.QUANTITY}),
    ),
    **dict.fromkeys(_word_set("early late soon"), frozenset({Kind.TIME})),
    "old": frozenset({Kind.QUANTITY, Kind.TIME}),  # "how old is it" ≈ "when was it built"
    "come": frozenset({Kind.REASON}),
}
# The words after "how" that make it ask for a manner ("how do I…", "how is it made").
_MANNER_NEXT = _word_set(
    "do does did can could should would will is are was were am to i you we they it he she has have "
    "had must might may shall"
)
# The noun after "what"/"which" ("what year", "which city", "what's the height of…").
_NOUNS = {
    **dict.fromkeys(
        _word_set(
            "person people man woman guy girl boy writer author poet artist painter designer "
            "architect composer musician singer band actor actress player captain coach founder "
            "inventor creator director manager owner president ceo leader king queen teacher "
            "doctor scientist member winner"
        ),
        frozenset({Kind.PERSON}),
    ),
    **dict.fromkeys(
        _word_set("time year years date dates day days month century decade hour hours season"),
        frozenset({Kind.TIME}),
    ),
    **dict.fromkeys(
        _word_set(
            "city town country capital village county state region province continent island street "
            "location place area district neighbourhood neighborhood"
        ),
        frozenset({Kind.PLACE}),
    ),
    **dict.fromkeys(
        _word_set(
            "number amount size height length width depth weight population percentage price cost "
            "distance speed temperature capacity count total"
        ),
        frozenset({Kind.QUANTITY}),
    ),
    "age": frozenset({Kind.QUANTITY, Kind.TIME}),
}
# Between "what" and its noun: "what is the…", "which exact…". The noun phrase ends at a
# preposition or a verb ("what colour is…", "what's the code for…").
_DETERMINERS = _word_set("is are was were s the a an exact kind sort type")
_PHRASE_ENDS = _AUXILIARIES | _word_set("of in at on for to from by with about does do did")
_NOUN_PHRASE = 4  # words at most


def kinds(text: str) -> frozenset[Kind]:
    """The kinds of answer ``text`` asks for: empty when unknown or not English.

    Each part of a message ("How old is it, when was it built?") may ask one; the message asks
    them all.
    """
    if not looks_english(text):
        return frozenset()
    found: set[Kind] = set()
    for clause in re.split(r"[,;:!?.()\n–—]|\s-\s", text):
        found |= _clause_kinds(_words(clause))
    return frozenset(found)


def _clause_kinds(words: list[str]) -> frozenset[Kind]:
    while words and words[0] in _LEAD_INS:
        words = words[1:]
    if not words:
        return frozenset()
    if words[0] in _AUXILIARIES:
        asking = len(words) > 2 and words[1] in _ASKERS and _ASKING_VERBS & set(words[2:4])
        if not asking:
            return frozenset({Kind.YES_NO})  # "Is the café open on Sundays?"
        words = words[2:]  # "Do you know who…": the question inside
        return _wh_kinds(words) or (frozenset({Kind.YES_NO}) if {"if", "whether"} & set(words) else frozenset())
    if found := _wh_kinds(words):
        return found  # "I wonder who…", "the logo - who designed it?"
    asks_if = any(a in ("wonder", "know", "me", "ask", "check") and b == "if" for a, b in pairwise(words))
    if asks_if or "whether" in words:
        return frozenset({Kind.YES_NO})  # "I wonder if it is open"
    return frozenset()


def _wh_kinds(words: list[str]) -> frozenset[Kind]:
    """The kind its first question word asks for ("who", "how many", "which city"…)."""
    for i, word in enumerate(words):
        following = words[i + 1 : i + 2]
        if word in _WHO:
            return frozenset({Kind.PERSON})
        if word in _WHEN:
            return frozenset({Kind.TIME})
        if word in _WHERE:
            return frozenset({Kind.PLACE})
        if word == "why":
            return frozenset({Kind.REASON})
        if word in _HOW:
            if following == ["long"] and words[i + 2 : i + 3] == ["ago"]:
                return frozenset({Kind.TIME})
            if not following:
                return frozenset()
            if following[0] in _HOW_NEXT:
                return _HOW_NEXT[following[0]]
            # "how do I…", "how is it made", "how to…": a manner; any other word ("how mny",
            # a typo) says nothing, rather than block a quantity question.
            return frozenset({Kind.MANNER}) if following[0] in _MANNER_NEXT else frozenset()
        if word in _WHAT:
            return _noun_kinds(words[i + 1 :])
    return frozenset()


def _noun_kinds(words: list[str]) -> frozenset[Kind]:
    """What the noun phrase after "what"/"which" names; empty for anything else ("what colour")."""
    phrase: list[str] = []
    for word in words:
        if word in _DETERMINERS and not phrase:
            continue
        if word in _PHRASE_ENDS or len(phrase) == _NOUN_PHRASE:
            break
        phrase.append(word)
    for word in phrase:
        if word == "name":
            return frozenset()  # "what is the name of…": a person, a place, a dog…
        if word in _NOUNS:
            return _NOUNS[word]
    return frozenset()


# --- distinguishing words ----------------------------------------------------------------------

_MONTHS = _word_set(
    "january february march april june july august september october november december "
    "jan feb apr jun jul aug sep sept oct nov dec"  # not "may", "mar": other words too
)
_WEEKDAYS = _word_set("monday tuesday wednesday thursday friday saturday sunday")
# Words that ask the opposite question ("When does it close?" against "When does it open?").
_OPPOSITES = (
    ("open opens opened opening", "close closes closed closing shut shuts"),
    (
        "start starts started starting begin begins began beginning",
        "end ends ended ending finish finishes finished",
    ),
    ("first earliest", "last final"),
    ("born birth", "die dies died death"),
    ("arrive arrives arrived arrival", "leave leaves depart departs departure"),
    ("win wins won winner", "lose loses lost loser"),
    ("buy buys bought", "sell sells sold"),
    ("minimum min smallest lowest fewest", "maximum max largest biggest highest"),
    ("before", "after"),
    ("north northern", "south southern"),
    ("east eastern", "west western"),
)
_OPPOSITE_OF = {
    word: _word_set(opposite)
    for one, other in _OPPOSITES
    for side, opposite in ((one, other), (other, one))
    for word in side.split()
}


def marks(text: str) -> frozenset[str]:
    """The words that tell one question from another about the same subject.

    Numbers ("4,380" as "4380") in any language; in English also months, weekdays ("Sundays"
    as "sunday") and the words that have an opposite.
    """
    found = {n.replace(",", "") for n in re.findall(r"\d+(?:[.,:]\d+)*", text)}
    if not looks_english(text):
        return frozenset(found)
    for word in _words(text):
        single = word[:-1] if word.endswith("s") and word[:-1] in _WEEKDAYS else word
        if single in _MONTHS or single in _WEEKDAYS or single in _OPPOSITE_OF:
            found.add(single)
    return frozenset(found)


@dataclass(frozen=True)
class Asked:
    """What a stored question's wordings ask, read once when they are indexed."""

    kinds: frozenset[Kind]
    marks: frozenset[str]

    @classmethod
    def of(cls, wordings: Iterable[str]) -> Asked:
        all_kinds: set[Kind] = set()
        all_marks: set[str] = set()
        for wording in wordings:
            all_kinds |= kinds(wording)
            all_marks |= marks(wording)
        return cls(frozenset(all_kinds), frozenset(all_marks))


def asks_something_else(message: str, wordings: Iterable[str] | Asked) -> str | None:
    """Why ``message`` asks something other than the stored ``wordings`` do; None when it may not.

    Kinds block only when both sides have one and they share none; a mark blocks when the
    message has it and no wording does (a mark with an opposite, only when a wording has the
    opposite: "close" against "open", not "close" against a question with neither). A message
    that is not English is never blocked.
    """
    if not looks_english(message):
        return None
    stored = wordings if isinstance(wordings, Asked) else Asked.of(wordings)
    asked = kinds(message)
    if asked and stored.kinds and not asked & stored.kinds:
        return f"asks for {'/'.join(sorted(asked))}, not {'/'.join(sorted(stored.kinds))}"
    for mark in sorted(marks(message) - stored.marks):
        if mark not in _OPPOSITE_OF or _OPPOSITE_OF[mark] & stored.marks:
            return f"mentions {mark}"
    return None
