"""Model text to Telegram's HTML: the Markdown a chat model writes, and the quoted transcript.

Telegram parses only a small set of HTML tags and rejects the whole message when
the markup is broken (crossed or unclosed tags). Every piece therefore goes out
as a pair: the HTML to try first and the plain text to fall back to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html import escape


@dataclass(frozen=True)
class Rendered:
    """One message's text: ``html`` for parse_mode HTML, ``plain`` if Telegram rejects it."""

    html: str
    plain: str


_FENCE = re.compile(r"```([\w+-]*)\n?(.*?)```", re.DOTALL)
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*|__(?=\S)(.+?)(?<=\S)__", re.DOTALL)
_ITALIC = re.compile(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*$", re.MULTILINE)
_LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^)\s]+)\)")


def markdown_to_html(text: str) -> str:
    """Convert the common Markdown of model replies (code, bold, italic, headings, links).

    Markers that do not pair up stay as they are, so a half-streamed reply
    renders as text too.
    """
    parts: list[str] = []
    position = 0
    for fence in _FENCE.finditer(text):
        parts.append(_inline(text[position : fence.start()]))
        language, code = fence.group(1), fence.group(2).rstrip("\n")
        attribute = f' class="language-{escape(language)}"' if language else ""
        parts.append(f"<pre><code{attribute}>{escape(code, quote=False)}</code></pre>")
        position = fence.end()
    parts.append(_inline(text[position:]))
    return "".join(parts)


def _inline(text: str) -> str:
    parts: list[str] = []
    position = 0
    for code in _INLINE_CODE.finditer(text):
        parts.append(_emphasis(text[position : code.start()]))
        parts.append(f"<code>{escape(code.group(1), quote=False)}</code>")
        position = code.end()
    parts.append(_emphasis(text[position:]))
    return "".join(parts)


def _emphasis(text: str) -> str:
    html = escape(text, quote=False)
    html = _LINK.sub(lambda m: f'<a href="{m.group(2).replace(chr(34), "%22")}">{m.group(1)}</a>', html)
    html = _HEADING.sub(r"<b>\1</b>", html)
    html = _BOLD.sub(lambda m: f"<b>{m.group(1) or m.group(2)}</b>", html)
    return _ITALIC.sub(r"<i>\1</i>", html)


def reply_text(text: str) -> Rendered:
    """A piece of a reply, formatted when Telegram accepts it."""
    return Rendered(markdown_to_html(text), text)


def transcript_text(text: str) -> Rendered:
    """The words heard, quoted, so the person sees what the bot understood."""
    return Rendered(f"<blockquote>🎤 {escape(text, quote=False)}</blockquote>", f"🎤 “{text}”")


def plain_text(text: str) -> Rendered:
    """Text of the bot's own (notices, help), sent with its characters escaped."""
    return Rendered(escape(text, quote=False), text)
