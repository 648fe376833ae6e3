"""Model text to Telegram's HTML: the Markdown a chat model writes, and the quoted transcript.

Telegram parses only a small set of HTML tags and rejects the whole message when
the markup is broken. The Markdown is parsed by markdown-it-py (CommonMark, plus
``~~strikethrough~~``) and rendered from its tokens into that subset, so tags
always nest. Every piece still goes out as a pair: the HTML to try first and the
plain text to fall back to when Telegram refuses the markup anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markdown_it import MarkdownIt
from markdown_it.token import Token


@dataclass(frozen=True)
class Rendered:
    """One message's text: ``html`` for parse_mode HTML, ``plain`` if Telegram rejects it."""

    html: str
    plain: str


# Raw HTML in a reply is text to show, not markup: with "html" off the parser keeps it as text.
_PARSER = MarkdownIt("commonmark", {"html": False}).enable("strikethrough")
_TAGS = {
    "strong_open": "<b>",
    "strong_close": "</b>",
    "em_open": "<i>",
    "em_close": "</i>",
    "s_open": "<s>",
    "s_close": "</s>",
}
# Only web links become links. tg://user?id=… would let a reply (steered by a prompt) mention
# anyone; tg:// and other schemes are shown as their text.
_LINK_SCHEMES = ("http://", "https://")
_INDENT = "   "


def markdown_to_html(text: str) -> str:
    """Render Markdown as Telegram HTML: emphasis, code, links, quotes, lists and headings.

    Lists become "• item" / "1. item" lines, headings bold lines and a rule "———";
    everything else shows as escaped text. Markers that do not pair up (a half-streamed
    reply, a lone ``*``) stay as they were written.
    """
    html = ""
    lists: list[int | None] = []  # per open list: its next number, or None for bullets
    quotes = 0
    for token in _PARSER.parse(text):
        kind = token.type
        if kind == "inline":
            html += _inline(token.children or [])
        elif kind == "paragraph_close":
            html = _end(html, 1 if token.hidden else 2)  # hidden: a tight list's item
        elif kind == "heading_open":
            html += "<b>"
        elif kind == "heading_close":
            html = _end(html + "</b>", 2)
        elif kind in ("bullet_list_open", "ordered_list_open"):
            start = token.attrGet("start")
            lists.append(None if kind == "bullet_list_open" else int(start or 1))
        elif kind in ("bullet_list_close", "ordered_list_close"):
            lists.pop()
            html = _end(html, 1 if lists else 2)
        elif kind == "list_item_open":
            number = lists[-1]
            if number is not None:
                lists[-1] = number + 1
            html += _INDENT * (len(lists) - 1) + ("•" if number is None else f"{number}.") + " "
        elif kind == "list_item_close" and not html.endswith("\n"):
            html += "\n"  # an empty item; a loose list's items keep their blank line
        elif kind in ("blockquote_open", "blockquote_close"):
            # Telegram refuses a quote inside a quote: only the outermost one is tagged.
            quotes += 1 if kind == "blockquote_open" else -1
            if kind == "blockquote_open" and quotes == 1:
                html += "<blockquote>"
            elif quotes == 0:
                html = _end(_end(html, 0) + "</blockquote>", 2)
        elif kind in ("fence", "code_block"):
            language = token.info.split()[0] if token.info.strip() else ""
            attribute = f' class="language-{escape(language)}"' if language else ""
            code = escape(token.content.rstrip("\n"), quote=False)
            html = _end(html + f"<pre><code{attribute}>{code}</code></pre>", 2)
        elif kind == "hr":
            html = _end(html + "———", 2)
    return _end(html, 0)


def _end(html: str, newlines: int) -> str:
    """``html`` ending in exactly ``newlines`` line breaks (none before the first text)."""
    html = html.rstrip("\n")
    return html + "\n" * newlines if html else ""


def _inline(tokens: Sequence[Token]) -> str:
    html = ""
    linked = False
    for token in tokens:
        kind = token.type
        if kind in _TAGS:
            html += _TAGS[kind]
        elif kind == "code_inline":
            html += f"<code>{escape(token.content, quote=False)}</code>"
        elif kind in ("softbreak", "hardbreak"):
            html += "\n"
        elif kind == "link_open":
            href = str(token.attrGet("href") or "")
            linked = href.startswith(_LINK_SCHEMES)
            html += f'<a href="{escape(href)}">' if linked else ""
        elif kind == "link_close":
            html += "</a>" if linked else ""
            linked = False
        elif kind == "image":
            src = str(token.attrGet("src") or "")
            alt = escape(token.content or src, quote=False)
            html += f'<a href="{escape(src)}">{alt}</a>' if src.startswith(_LINK_SCHEMES) else alt
        else:
            html += escape(token.content, quote=False)
    return html


def reply_text(text: str) -> Rendered:
    """A piece of a reply, formatted when Telegram accepts it."""
    return Rendered(markdown_to_html(text), text)


def transcript_text(text: str) -> Rendered:
    """The words heard, quoted, so the person sees what the bot understood."""
    return Rendered(f"<blockquote>🎤 {escape(text, quote=False)}</blockquote>", f"🎤 “{text}”")


def plain_text(text: str) -> Rendered:
    """Text of the bot's own (notices, help), sent with its characters escaped."""
    return Rendered(escape(text, quote=False), text)
