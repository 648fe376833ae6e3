"""Personas and each chat's settings in the database (``core.personas``; ``core.ports.PersonaStore``).

Every rule holds in one transaction, so two admins (or a command and the personas file) never
leave two defaults: the previous default is cleared in the transaction that sets a new one, and
the unique ``is_default`` column (True or NULL) refuses a second one at the database itself.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine, case, delete, func, select, update
from sqlalchemy.orm import Session

from core.domain import ChatRef, Person, PersonaStats, Role
from core.personas import DEFAULT, Persona, PersonaNotFound, PersonaRefused, checked
from storage.database import session_factory
from storage.locks import serialize
from storage.tables import ChatSettingsRow, ConversationRow, PersonaRow, RatingRow, TurnRow, utcnow


class SqlPersonas:
    """``core.ports.PersonaStore`` on SQLite or PostgreSQL, and what ``iris persona`` changes."""

    def __init__(self, engine: Engine) -> None:
        self._sessions = session_factory(engine)

    # --- what the writer reads at each reply ------------------------------------------------

    def persona(self, name: str) -> Persona | None:
        with self._sessions() as session:
            row = _row(session, name)
            return _persona(row) if row else None

    def persona_for(self, conversation_id: int) -> Persona | None:
        with self._sessions() as session:
            chat = session.execute(
                select(ConversationRow.platform, ConversationRow.chat_id).where(
                    ConversationRow.id == conversation_id
                )
            ).first()
            chosen = _chat_persona(session, ChatRef(chat.platform, chat.chat_id)) if chat else None
            row = _row(session, chosen) if chosen else None
            if row is None:  # none chosen, or removed a moment ago: the default
                row = session.scalars(select(PersonaRow).where(PersonaRow.is_default.is_(True))).first()
            return _persona(row) if row else None

    def chosen_persona(self, conversation_id: int) -> str | None:
        """The persona set for the conversation's chat (``iris persona use``, /settings); None: none."""
        with self._sessions() as session:
            return session.scalar(
                select(ChatSettingsRow.persona)
                .join(
                    ConversationRow,
                    (ConversationRow.platform == ChatSettingsRow.platform)
                    & (ConversationRow.chat_id == ChatSettingsRow.chat_id),
                )
                .where(ConversationRow.id == conversation_id)
            )

    def personas(self) -> list[Persona]:
        """Every stored persona, by name."""
        with self._sessions() as session:
            return [_persona(row) for row in session.scalars(select(PersonaRow).order_by(PersonaRow.name))]

    def default_persona(self) -> Persona | None:
        with self._sessions() as session:
            row = session.scalars(select(PersonaRow).where(PersonaRow.is_default.is_(True))).first()
            return _persona(row) if row else None

    # --- what admins change ---------------------------------------------------------------------

    def add_persona(self, persona: Persona, by: str) -> Persona:
        """Store a new persona (version 1); ``PersonaRefused`` when the name is taken."""
        persona = checked(persona)
        assert persona.name is not None
        with self._sessions.begin() as session:
            serialize(session, PersonaRow)
            if _row(session, persona.name) is not None:
                raise PersonaRefused(
                    f"a persona named {persona.name!r} exists: change it with `iris persona edit`"
                )
            row = PersonaRow(
                name=persona.name,
                prompt=persona.prompt,
                version=1,
                voice=persona.voice,
                temperature=persona.temperature,
                greeting=persona.greeting,
                updated_by=by,
            )
            session.add(row)
            session.flush()
            if persona.is_default:
                _make_default(session, row)
            return _persona(row)

    def edit_persona(
        self,
        name: str,
        by: str,
        *,
        prompt: str | None = None,
        voice: str | None = None,
        temperature: float | None = None,
        greeting: str | None = None,
        default: bool = False,
    ) -> Persona:
        """Change what is given, None keeping what is stored ("" takes a voice or greeting away);
        a new prompt is the next version; ``default`` makes it the default."""
        with self._sessions.begin() as session:
            serialize(session, PersonaRow)
            row = _row(session, name)
            if row is None:
                raise PersonaNotFound(f"no persona named {name!r}")
            wanted = checked(
                Persona(
                    name=row.name,
                    prompt=row.prompt if prompt is None else prompt,
                    voice=row.voice if voice is None else voice,
                    temperature=row.temperature if temperature is None else temperature,
                    greeting=row.greeting if greeting is None else greeting,
                )
            )
            _apply(row, wanted, by)
            if default:
                _make_default(session, row)
            session.flush()
            return _persona(row)

    def remove_persona(self, name: str, by: str) -> list[ChatRef]:
        """Delete a persona; the chats that used it, now back on the default.

        ``PersonaRefused`` for the default (make another one the default first).
        """
        with self._sessions.begin() as session:
            serialize(session, PersonaRow)
            row = _row(session, name)
            if row is None:
                raise PersonaNotFound(f"no persona named {name!r}")
            if row.is_default:
                raise PersonaRefused(
                    f"{name!r} is the default persona: make another the default first "
                    "(`iris persona edit OTHER --default`)"
                )
            using = session.scalars(select(ChatSettingsRow).where(ChatSettingsRow.persona == name)).all()
            for chat in using:
                chat.persona, chat.updated_by, chat.updated_at = None, by, utcnow()
            session.delete(row)
            return [ChatRef(chat.platform, chat.chat_id) for chat in using]

    def set_chat_persona(self, chat: ChatRef, name: str | None, by: str) -> None:
        """Answer ``chat`` with persona ``name`` from its next reply on (None or "default": the default)."""
        if name is not None and name.casefold() == DEFAULT:
            name = None
        with self._sessions.begin() as session:
            serialize(session, PersonaRow)
            if name is not None and _row(session, name) is None:
                raise PersonaNotFound(f"no persona named {name!r}")
            where = ChatSettingsRow.platform == chat.platform, ChatSettingsRow.chat_id == chat.chat_id
            row = session.scalars(select(ChatSettingsRow).where(*where)).first()
            if row is None:
                row = ChatSettingsRow(platform=chat.platform, chat_id=chat.chat_id)
                session.add(row)
            row.persona, row.updated_by, row.updated_at = name, by, utcnow()

    def chat_persona(self, chat: ChatRef) -> str | None:
        """The persona set for ``chat``; None: the default."""
        with self._sessions() as session:
            return _chat_persona(session, chat)

    def chats(self) -> dict[str, list[ChatRef]]:
        """The chats set to each persona, by persona name."""
        with self._sessions() as session:
            rows = session.execute(
                select(ChatSettingsRow.persona, ChatSettingsRow.platform, ChatSettingsRow.chat_id)
                .where(ChatSettingsRow.persona.is_not(None))
                .order_by(ChatSettingsRow.platform, ChatSettingsRow.chat_id)
            ).all()
        found: dict[str, list[ChatRef]] = {}
        for persona, platform, chat_id in rows:
            found.setdefault(persona or DEFAULT, []).append(ChatRef(platform, chat_id))
        return found

    def load_personas(self, personas: Sequence[Persona], by: str) -> list[str]:
        """Add or change each persona as given, in one transaction; the names that changed."""
        personas = [checked(persona) for persona in personas]
        changed: list[str] = []
        with self._sessions.begin() as session:
            serialize(session, PersonaRow)
            for persona in personas:
                assert persona.name is not None
                row = _row(session, persona.name)
                if row is None:
                    row = PersonaRow(name=persona.name, prompt=persona.prompt, version=1, updated_by=by)
                    session.add(row)
                    session.flush()
                    changed.append(persona.name)
                if _apply(row, persona, by) and persona.name not in changed:
                    changed.append(persona.name)
                if persona.is_default and not row.is_default:
                    _make_default(session, row)
                    if persona.name not in changed:
                        changed.append(persona.name)
        return changed


def _row(session: Session, name: str) -> PersonaRow | None:
    return session.scalars(select(PersonaRow).where(PersonaRow.name == name)).first()


def _chat_persona(session: Session, chat: ChatRef) -> str | None:
    return session.scalar(
        select(ChatSettingsRow.persona).where(
            ChatSettingsRow.platform == chat.platform, ChatSettingsRow.chat_id == chat.chat_id
        )
    )


def _apply(row: PersonaRow, persona: Persona, by: str) -> bool:
    """Give ``row`` what ``persona`` holds (a new prompt: the next version); whether anything changed."""
    wanted = {"voice": persona.voice, "temperature": persona.temperature, "greeting": persona.greeting}
    changed = row.prompt != persona.prompt or any(getattr(row, key) != value for key, value in wanted.items())
    if not changed:
        return False
    if row.prompt != persona.prompt:
        row.prompt, row.version = persona.prompt, row.version + 1
    for key, value in wanted.items():
        setattr(row, key, value)
    row.updated_by, row.updated_at = by, utcnow()
    return True


def _make_default(session: Session, row: PersonaRow) -> None:
    """Make ``row`` the one default: the previous default is cleared first, in the same transaction."""
    session.execute(
        update(PersonaRow)
        .where(PersonaRow.is_default.is_(True), PersonaRow.id != row.id)
        .values(is_default=None)
    )
    session.flush()
    row.is_default = True
    session.flush()


def _persona(row: PersonaRow) -> Persona:
    return Persona(
        name=row.name,
        prompt=row.prompt,
        version=row.version,
        voice=row.voice,
        temperature=row.temperature,
        greeting=row.greeting,
        is_default=bool(row.is_default),
    )


def reply_figures(session: Session) -> list[PersonaStats]:
    """Replies and their 👍/👎 by the persona that wrote them (``iris stats``); None: the configured prompt."""
    rows = session.execute(
        select(
            TurnRow.persona,
            func.count(func.distinct(TurnRow.id)),
            func.count(case((RatingRow.value > 0, 1))),
            func.count(case((RatingRow.value < 0, 1))),
        )
        .outerjoin(RatingRow, RatingRow.turn_id == TurnRow.id)
        .where(TurnRow.role == Role.ASSISTANT.value)
        .group_by(TurnRow.persona)
        .order_by(TurnRow.persona)
    ).all()
    return [PersonaStats(persona, replies, up, down) for persona, replies, up, down in rows]


def forget_settings(session: Session, person_id: int, person: Person) -> None:
    """What chat settings and personas hold about someone who used /forget or whom retention drops.

    Their own chats' settings are deleted: their private chat (on Telegram and in the console its
    id is theirs), any chat whose every conversation is theirs (a Discord DM; call this before
    their conversations are deleted), and a chat they set that holds no conversation at all (a DM
    whose conversations retention already deleted). Elsewhere a change they made stays (a group's
    settings are the group's), but no longer names them.
    """
    here = ConversationRow.platform == person.platform
    others = select(ConversationRow.chat_id).where(
        here, ConversationRow.owner_id.is_(None) | (ConversationRow.owner_id != person_id)
    )
    theirs = select(ConversationRow.chat_id).where(
        here, ConversationRow.owner_id == person_id, ConversationRow.chat_id.not_in(others)
    )
    anyones = select(ConversationRow.chat_id).where(here)
    session.execute(
        delete(ChatSettingsRow).where(
            ChatSettingsRow.platform == person.platform,
            (ChatSettingsRow.chat_id == person.user_id)
            | ChatSettingsRow.chat_id.in_(theirs)
            | ((ChatSettingsRow.updated_by == person.actor) & ChatSettingsRow.chat_id.not_in(anyones)),
        )
    )
    for table in (ChatSettingsRow, PersonaRow):
        session.execute(
            update(table).where(table.updated_by == person.actor).values(updated_by=person.pseudonym)
        )
