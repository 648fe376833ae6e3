"""Each chat's settings in the database (``core.chat_settings``; ``core.ports.ChatSettingsStore``).

One ``chat_settings`` row per chat, shared with ``storage.personas`` (its ``persona`` column);
NULL in a column is the deployment's setting. A value a row holds that no setting takes (written
by hand, or by a later version) reads as NULL rather than failing a reply.
"""

from __future__ import annotations

import logging
from typing import TypeVar

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from core.chat_settings import MAX_HISTORY_TURNS, ChatSettings, ReplyLength, Setting, Value
from core.domain import ChatRef
from core.personas import Persona, PersonaNotFound
from core.speaking import VoiceMode
from storage.database import session_factory
from storage.locks import serialize
from storage.personas import SqlPersonas
from storage.tables import ChatSettingsRow, ConversationRow, PersonaRow, utcnow

log = logging.getLogger(__name__)

E = TypeVar("E", VoiceMode, ReplyLength)


class SqlChatSettings:
    """``core.ports.ChatSettingsStore`` on SQLite or PostgreSQL."""

    def __init__(self, engine: Engine) -> None:
        self._sessions = session_factory(engine)
        self._personas = SqlPersonas(engine)

    def chat_settings(self, chat: ChatRef) -> ChatSettings:
        with self._sessions() as session:
            return _settings(_chat_row(session, chat))

    def conversation_settings(self, conversation_id: int) -> ChatSettings:
        with self._sessions() as session:
            row = session.scalars(
                select(ChatSettingsRow)
                .join(
                    ConversationRow,
                    (ConversationRow.platform == ChatSettingsRow.platform)
                    & (ConversationRow.chat_id == ChatSettingsRow.chat_id),
                )
                .where(ConversationRow.id == conversation_id)
            ).first()
            return _settings(row)

    def set_chat_setting(self, chat: ChatRef, setting: Setting, value: Value, by: str) -> ChatSettings:
        """Store one setting of ``chat`` (None: the deployment's); ``PersonaNotFound`` for a persona
        not stored. One transaction, serialized with the personas' changes: a persona removed at the
        same moment is either found and then cleared by its removal, or refused here."""
        with self._sessions.begin() as session:
            serialize(session, PersonaRow)
            named = setting is Setting.PERSONA and value is not None
            if named and session.scalar(select(PersonaRow.id).where(PersonaRow.name == str(value))) is None:
                raise PersonaNotFound(f"no persona named {value!r}")
            row = _chat_row(session, chat)
            if row is None:
                row = ChatSettingsRow(platform=chat.platform, chat_id=chat.chat_id)
                session.add(row)
            setattr(row, setting.value, value if value is None or setting is Setting.HISTORY else str(value))
            row.updated_by, row.updated_at = by, utcnow()
            session.flush()
            return _settings(row)

    def personas(self) -> list[Persona]:
        return self._personas.personas()


def _chat_row(session: Session, chat: ChatRef) -> ChatSettingsRow | None:
    return session.scalars(
        select(ChatSettingsRow).where(
            ChatSettingsRow.platform == chat.platform, ChatSettingsRow.chat_id == chat.chat_id
        )
    ).first()


def _settings(row: ChatSettingsRow | None) -> ChatSettings:
    if row is None:
        return ChatSettings()
    turns = row.history_turns
    return ChatSettings(
        persona=row.persona,
        spoken=_member(VoiceMode, row.spoken_replies),
        length=_member(ReplyLength, row.reply_length),
        history_turns=turns if turns is not None and 0 <= turns <= MAX_HISTORY_TURNS else None,
    )


def _member(kind: type[E], stored: str | None) -> E | None:
    if stored is None:
        return None
    try:
        return kind(stored)
    except ValueError:
        log.warning("chat settings hold %r, which no setting takes; the deployment's applies", stored)
        return None
