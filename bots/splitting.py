"""Long replies cut to a platform's limit where a reader expects a break, and streamed edits paced.

``split_message`` cuts plain text at a paragraph, a line, a sentence or a word; ``split_markdown``
also keeps a code block whole or closes and reopens its fence; ``EditPacer`` decides when a
growing reply is worth an edit.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

# Where a long reply may be cut, best first: a paragraph, a line, a sentence, a word.
_BREAKS = (re.compile(r"\n\s*\n"), re.compile(r"\n"), re.compile(r"(?<=[.!?…])\s+"), re.compile(r"\s+"))


def split_message(text: str, limit: int) -> list[str]:
    """Cut ``text`` into pieces of at most ``limit`` characters at the best boundary.

    Telegram allows 4,096 characters a message and Discord 2,000; the rest of a
    reply continues in further messages.
    """
    pieces: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        cut = cut_point(rest, limit)
        pieces.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        pieces.append(rest)
    return pieces


def split_rendered(text: str, limit: int, render: Callable[[str], str], cut: int | None = None) -> list[str]:
    """Like ``split_message``, but each piece is ``render``-ed and the rendered piece fits ``limit``.

    Escaping lengthens text (Discord's Markdown escapes add a backslash a character),
    so a piece whose rendering is too long is cut finer, in proportion.
    """
    pieces: list[str] = []
    for piece in split_message(text, cut or limit):
        shown = render(piece)
        if len(shown) <= limit or len(piece) <= 1:
            pieces.append(shown)
        else:
            pieces.extend(split_rendered(piece, limit, render, max(1, len(piece) * limit // len(shown))))
    return pieces


def cut_point(text: str, limit: int) -> int:
    window = text[: limit + 1]
    for pattern in _BREAKS:
        ends = [m.end() for m in pattern.finditer(window) if 0 < m.start() <= limit]
        # A cut in the first fifth would leave a stub; try a finer boundary.
        good = [end for end in ends if end > limit // 5]
        if good:
            return good[-1]  # the piece ends at match.start() <= limit once stripped
    return limit


# A code fence line (CommonMark: up to three spaces, then three or more backticks or tildes).
_FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})(.*)$", re.MULTILINE)


@dataclass(frozen=True)
class _Fence:
    """A fenced code block still open: how it was opened, and where (in the text scanned)."""

    indent: str
    marks: str
    language: str
    start: int  # where its opening line starts
    body: int  # where its code starts

    @property
    def opening(self) -> str:
        return f"{self.indent}{self.marks}{self.language}\n"

    @property
    def closing(self) -> str:
        return f"\n{self.indent}{self.marks}"

    def closed_by(self, line: str) -> bool:
        match = _FENCE.fullmatch(line)
        if match is None:
            return False
        marks, after = match[2], match[3]
        return marks[0] == self.marks[0] and len(marks) >= len(self.marks) and not after.strip()


def _open_fence(text: str, start: int = 0) -> _Fence | None:
    """The code block open at the end of ``text`` (scanned from ``start``), or None."""
    fence: _Fence | None = None
    for match in _FENCE.finditer(text, start):
        indent, marks, info = match.groups()
        if fence is None and not (marks[0] == "`" and "`" in info):  # ``` then a backtick: inline code
            fence = _Fence(indent, marks, (info.split() or [""])[0], match.start(), match.end() + 1)
        elif fence is not None and fence.closed_by(match[0]):
            fence = None
    return fence


def split_markdown(text: str, limit: int) -> list[str]:
    """Like ``split_message``, for the model's Markdown: code blocks stay code blocks.

    A fenced block cut between two messages is closed at the end of the first and opened
    again, with its language, at the start of the next, so both chats show code as code on
    either side of the cut; the added fences count towards ``limit``. A block that would fit
    in the next message whole starts there instead of being cut.
    """
    pieces: list[str] = []
    rest, head = text.strip(), ""  # head: the fence reopening a block the last piece closed
    while len(head) + len(rest) > limit:
        piece, rest, head = _next_piece(head, rest, limit)
        pieces.append(piece)
    if rest:
        pieces.append(head + rest)
    return pieces


def _next_piece(head: str, rest: str, limit: int) -> tuple[str, str, str]:
    """One piece of at most ``limit`` characters off ``head + rest``: (piece, what is left, its head)."""
    room = limit - len(head)
    cut = cut_point(rest, room)
    fence = _open_fence(head + rest[:cut])
    if fence is not None and len(fence.opening) + len(fence.closing) <= limit // 2:
        cut = cut_point(rest, room - len(fence.closing))
        fence = _open_fence(head + rest[:cut])
        if (
            fence is not None
            and fence.start - len(head) > room // 5
            and _block_length(head + rest, fence) <= limit
        ):
            cut, fence = fence.start - len(head), None  # the whole block goes to the next piece
    else:
        fence = None  # a fence too long to repeat (or none): cut as plain text
    piece = (head + rest[:cut]).rstrip()
    if fence is None:
        return piece, rest[cut:].lstrip(), ""
    rest = rest[cut:].lstrip("\n")  # the code's own indentation stays
    line = rest.split("\n", 1)[0]
    if not rest.strip() or fence.closed_by(line):  # the block ends here anyway
        return piece + fence.closing, rest[len(line) :].lstrip(), ""
    return piece + fence.closing, rest, fence.opening


def _block_length(text: str, fence: _Fence) -> int:
    """How long ``fence``'s code block in ``text`` is, from its opening line to the end of its closing line."""
    for match in _FENCE.finditer(text, fence.body):
        if fence.closed_by(match[0]):
            return match.end() - fence.start
    return len(text) - fence.start


class EditPacer:
    """Decides when a streamed reply is worth an edit: text changed and enough time passed.

    Platforms rate-limit edits (about one a second per chat is safe on both
    Telegram and Discord), so intermediate text is skipped rather than queued.
    """

    def __init__(self, interval_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self._last_at = float("-inf")
        self._last_text = ""

    def due(self, text: str) -> bool:
        return text.strip() != self._last_text and self.clock() - self._last_at >= self.interval_s

    def sent(self, text: str) -> None:
        self._last_at = self.clock()
        self._last_text = text.strip()
