"""Turning a reply written for the eye (Markdown, code, links, emoji) into words to be spoken.

The text reply stays as the model wrote it; only what a synthesizer reads goes through here.
"""

from __future__ import annotations

import re
import unicodedata

CODE_BLOCK_SAID = "There is a code block in the text reply."

_FENCE = re.compile(r"```.*?(?:```|\Z)", re.S)
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\((?:[^)(]|\([^)]*\))*\)")
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>()\[\]]+", re.I)
_INLINE_CODE = re.compile(r"`([^`]*)`")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s*", re.M)
_QUOTE = re.compile(r"^\s*>+\s?", re.M)
_BULLET = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+", re.M)
_RULE = re.compile(r"^\s*(?:[-*_]\s*){3,}$", re.M)
_EMPHASIS = re.compile(r"(\*{1,3}|_{1,3}|~~)(?=\S)(.+?)(?<=\S)\1")
_TABLE_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(?:\|\s*:?-{2,}:?\s*)*\|?\s*$", re.M)
SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")
_SPACES = re.compile(r"[ \t]+")
_SPACE_BEFORE_MARK = re.compile(r"\s+([.,!?;:…])")
_ENDS_SENTENCE = (".", "!", "?", "…", ":", ";", ",")


def speakable(markdown: str) -> str:
    """Words a synthesizer can read aloud: no markup, code blocks named, links by their site, no emoji."""
    text = _FENCE.sub(f"\n{CODE_BLOCK_SAID}\n", markdown)
    text = _IMAGE.sub(lambda m: m.group(1), text)
    text = _LINK.sub(lambda m: m.group(1), text)
    text = _URL.sub(lambda m: _site(m.group(0)), text)
    text = _INLINE_CODE.sub(lambda m: m.group(1), text)
    text = _TABLE_SEPARATOR.sub("", text)
    text = _RULE.sub("", text)
    text = _HEADING.sub("", text)
    text = _QUOTE.sub("", text)
    text = _BULLET.sub("", text)
    for _ in range(2):  # nested emphasis: ***both*** or **bold _and italic_**
        text = _EMPHASIS.sub(lambda m: m.group(2), text)
    text = text.replace("|", ", ")
    text = "".join(ch for ch in text if not _is_pictograph(ch))
    lines = [_SPACES.sub(" ", line).strip(" ,") for line in text.splitlines()]
    # A list item or a heading is said as a sentence of its own.
    sentences = [line if line.endswith(_ENDS_SENTENCE) else f"{line}." for line in lines if _has_words(line)]
    return _SPACE_BEFORE_MARK.sub(r"\1", " ".join(sentences))


def trim_to_seconds(text: str, seconds: float, words_per_second: float) -> tuple[str, bool]:
    """The whole sentences of ``text`` that fit in ``seconds`` at ``words_per_second``; and whether it was cut.

    A first sentence longer than the budget is kept whole (the audio is cut at the limit instead).
    """
    budget = seconds * words_per_second
    kept: list[str] = []
    words = 0
    for sentence in SENTENCE_END.split(text.strip()):
        count = len(sentence.split())
        if kept and words + count > budget:
            return " ".join(kept), True
        kept.append(sentence)
        words += count
    return " ".join(kept), False


def _site(url: str) -> str:
    host = re.sub(r"^(?:https?://)?(?:www\.)?", "", url, flags=re.I).split("/")[0].split("?")[0]
    return f"a link to {host}" if host else "a link"


def _is_pictograph(ch: str) -> bool:
    if ch in "\u200d\ufe0e\ufe0f\u20e3":  # joiners and emoji presentation selectors
        return True
    return unicodedata.category(ch) == "So" or 0x1F000 <= ord(ch) <= 0x1FAFF


def _has_words(line: str) -> bool:
    return any(ch.isalnum() for ch in line)
