"""What a message must be before it is heard or answered: something, and within the chat's limits."""

from __future__ import annotations

from core.config import ChatConfig
from core.domain import IncomingMessage, Notice, NoticeKind
from core.i18n import _


def checked_input(message: IncomingMessage, limits: ChatConfig) -> Notice | None:
    """The notice that refuses ``message`` (empty, too large, too long), or None when it may be answered."""
    if message.audio is not None:
        size = len(message.audio.data)
        if size == 0:
            return Notice(NoticeKind.UNREADABLE_AUDIO, _("That audio file is empty."))
        if size > limits.max_file_bytes:
            return Notice(
                NoticeKind.TOO_LARGE,
                _("That file is too large: the limit is {megabytes} MB.").format(
                    megabytes=f"{limits.max_file_mb:g}"
                ),
            )
        return None
    if not (message.text or "").strip():
        return Notice(NoticeKind.EMPTY, _("Send me a voice note or a text message."))
    if len(message.text or "") > limits.max_text_chars:
        return Notice(
            NoticeKind.TOO_LONG,
            _("That message is too long for me: the limit is {count} characters.").format(
                count=limits.max_text_chars
            ),
        )
    return None
