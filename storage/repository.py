"""The conversation store and model registry on SQLAlchemy (SQLite or PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, case, delete, func, select, update
from sqlalchemy.orm import Session, aliased

from core.domain import (
    AuditAction,
    AuditEntry,
    ChatRef,
    Correction,
    CorrectionStatus,
    ForgetReport,
    ModelStats,
    ModelVersion,
    Person,
    PruneReport,
    RatingOutcome,
    Role,
    Stats,
    Timings,
    Turn,
    UserTurnReceipt,
)
from core.experiments import Arm
from core.ports import AlreadyReviewed, UnansweredTurn
from storage import languages, people, personas, queries, retention
from storage.database import dialect_insert, session_factory, truncate_journal
from storage.mapping import aware, to_correction, to_model_version, to_turn
from storage.tables import (
    AuditRow,
    ConversationRow,
    CorrectionMemoryRow,
    CorrectionRow,
    ModelVersionRow,
    PersonRow,
    RatingRow,
    TurnRow,
    utcnow,
)


class NotFound(LookupError):
    pass


class SqlStore(languages.LanguageRows):
    """Implements ``core.ports.ConversationStore``, ``core.ports.ModelRegistry`` and ``core.ports.AuditLog``
    (and ``core.ports.LanguageStore`` through ``storage.languages.LanguageRows``).

    Every method runs in its own short transaction, so it is safe to call from
    several worker threads at once.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = session_factory(engine)

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    # --- people and conversations ------------------------------------------

    def _open_conversation_query(self, chat: ChatRef, owner_id: int | None) -> Any:
        return select(ConversationRow).where(
            ConversationRow.platform == chat.platform,
            ConversationRow.chat_id == chat.chat_id,
            ConversationRow.thread_id == (chat.thread_id or ""),
            ConversationRow.owner_id.is_(None) if owner_id is None else ConversationRow.owner_id == owner_id,
            ConversationRow.closed_at.is_(None),
        )

    def _conversation(self, session: Session, chat: ChatRef, owner_id: int | None) -> ConversationRow:
        query = self._open_conversation_query(chat, owner_id).order_by(ConversationRow.id.desc()).limit(1)
        row: ConversationRow | None = session.scalars(query).first()
        if row is None:
            row = ConversationRow(
                platform=chat.platform,
                chat_id=chat.chat_id,
                thread_id=chat.thread_id or "",
                owner_id=owner_id,
            )
            session.add(row)
            session.flush()
        return row

    # --- turns ---------------------------------------------------------------

    def record_user_turn(
        self,
        chat: ChatRef,
        sender: Person,
        *,
        text: str | None,
        from_voice: bool,
        message_id: str | None,
        shared_history: bool,
        resume: bool = False,
    ) -> UserTurnReceipt:
        if message_id is not None:
            existing = self._find_message(chat, message_id, resume)
            if existing is not None:
                return existing
        with self._session() as session:
            person_id = people.upsert(session, sender).id
            conversation = self._conversation(session, chat, None if shared_history else person_id)
            insert = dialect_insert(session, TurnRow).values(
                conversation_id=conversation.id,
                person_id=person_id,
                role=Role.USER.value,
                text=text,
                from_voice=from_voice,
                platform=chat.platform,
                chat_id=chat.chat_id,
                platform_message_id=message_id,
                created_at=utcnow(),
            )
            # The same update arriving twice at once: the insert stands aside for the other delivery.
            stored = session.execute(
                insert.on_conflict_do_nothing(
                    index_elements=[TurnRow.platform, TurnRow.chat_id, TurnRow.platform_message_id]
                ).returning(TurnRow.id)
            ).first()
            if stored is not None:
                return UserTurnReceipt(turn_id=stored.id, conversation_id=conversation.id)
        existing = self._find_message(chat, message_id) if message_id is not None else None
        if existing is None:
            raise RuntimeError("a turn stood aside for one that is not there")
        return existing

    def _find_message(self, chat: ChatRef, message_id: str, resume: bool = False) -> UserTurnReceipt | None:
        """The turn of a message stored before, and its reply: a duplicate, unless ``resume`` and unanswered."""
        reply = aliased(TurnRow)
        with self._session() as session:
            row = session.execute(
                select(TurnRow.id, TurnRow.conversation_id, TurnRow.error, func.max(reply.id))
                .outerjoin(reply, reply.reply_to_id == TurnRow.id)
                .where(
                    TurnRow.platform == chat.platform,
                    TurnRow.chat_id == chat.chat_id,
                    TurnRow.platform_message_id == message_id,
                )
                .group_by(TurnRow.id, TurnRow.conversation_id, TurnRow.error)
            ).first()
        if row is None:
            return None
        reply_id = row[3]
        unanswered = row.error is None and reply_id is None
        return UserTurnReceipt(
            row.id, row.conversation_id, duplicate=not (resume and unanswered), reply_id=reply_id
        )

    def set_transcript(self, turn_id: int, text: str, audio_seconds: float, transcribe_ms: float) -> None:
        with self._session() as session:
            session.execute(
                update(TurnRow)
                .where(TurnRow.id == turn_id)
                .values(text=text, audio_seconds=audio_seconds, transcribe_ms=transcribe_ms)
            )

    def mark_failed(self, turn_id: int, reason: str, audio_seconds: float | None = None) -> None:
        values: dict[str, Any] = {"error": reason}
        if audio_seconds is not None:
            values["audio_seconds"] = audio_seconds
        with self._session() as session:
            session.execute(update(TurnRow).where(TurnRow.id == turn_id).values(**values))

    def history(self, conversation_id: int, before_turn_id: int, limit: int) -> list[Turn]:
        with self._session() as session:
            rows = session.scalars(
                select(TurnRow)
                .where(
                    TurnRow.conversation_id == conversation_id,
                    TurnRow.id < before_turn_id,
                    TurnRow.error.is_(None),
                    TurnRow.text.is_not(None),
                )
                .order_by(TurnRow.id.desc())
                .limit(limit)
            ).all()
            return [to_turn(row) for row in reversed(rows)]

    def record_reply(
        self,
        conversation_id: int,
        reply_to_turn_id: int,
        text: str,
        model_version: str,
        timings: Timings,
        experiment: tuple[int, Arm] | None = None,
        memory: tuple[int, str] | None = None,
        persona: tuple[str, int] | None = None,
    ) -> int:
        with self._session() as session:
            asked = session.get_one(TurnRow, reply_to_turn_id)
            row = TurnRow(
                conversation_id=conversation_id,
                reply_to_id=reply_to_turn_id,
                role=Role.ASSISTANT.value,
                text=text,
                platform=asked.platform,
                chat_id=asked.chat_id,
                model_version=model_version,
                transcribe_ms=timings.transcribe_ms,
                generate_ms=timings.generate_ms,
                total_ms=timings.total_ms,
                tokens=timings.tokens,
                experiment_id=experiment[0] if experiment else None,
                arm=experiment[1].value if experiment else None,
                memory_correction_id=memory[0] if memory else None,
                memory_mode=memory[1] if memory else None,
                persona=persona[0] if persona else None,
                persona_version=persona[1] if persona else None,
            )
            session.add(row)
            session.flush()
            reply_id = row.id
        # Answered after all: a turn claimed after a restart carries a reason until now. Cleared only
        # once the reply is committed, so a concurrent claim sees the turn failed or answered, never free.
        with self._session() as session:
            claimed = TurnRow.id == reply_to_turn_id, TurnRow.error.is_not(None)
            session.execute(update(TurnRow).where(*claimed).values(error=None))
        return reply_id

    def get_turn(self, turn_id: int) -> Turn | None:
        with self._session() as session:
            row = session.get(TurnRow, turn_id)
            return to_turn(row) if row else None

    def unanswered_turns(self, platform: str, since: datetime, until: datetime) -> list[UnansweredTurn]:
        return queries.unanswered_turns(self.engine, platform, since, until)

    def claim_unanswered(self, turn_id: int, reason: str) -> bool:
        reply = aliased(TurnRow)
        answered = select(reply.id).where(reply.reply_to_id == turn_id).exists()
        with self._session() as session:
            # PostgreSQL re-reads the row after a concurrent claim commits: only one UPDATE matches.
            claimed = session.execute(
                update(TurnRow)
                .where(TurnRow.id == turn_id, TurnRow.error.is_(None), ~answered)
                .values(error=reason)
                .returning(TurnRow.id)
                .execution_options(synchronize_session=False)
            ).first()
            return claimed is not None

    # --- feedback ------------------------------------------------------------

    def rate(self, person: Person, turn_id: int, value: int) -> RatingOutcome:
        if value not in (1, -1):
            raise ValueError("a rating is +1 or -1")
        # A double press can race its own first insert, so neither statement
        # reads first: the insert stands aside for a rating stored meanwhile,
        # and the update changes only a different value.
        with self._session() as session:
            rater = people.upsert(session, person).id
            insert = (
                dialect_insert(session, RatingRow)
                .values(turn_id=turn_id, person_id=rater, value=value)
                .on_conflict_do_nothing(index_elements=[RatingRow.turn_id, RatingRow.person_id])
            )
            created = session.execute(insert.returning(RatingRow.id)).first()
            if created:
                return RatingOutcome.CREATED
            changed = session.execute(
                update(RatingRow)
                .where(RatingRow.turn_id == turn_id, RatingRow.person_id == rater, RatingRow.value != value)
                .values(value=value, updated_at=utcnow())
                .returning(RatingRow.id)
            ).first()
            return RatingOutcome.CHANGED if changed else RatingOutcome.UNCHANGED

    def add_correction(self, person: Person, turn_id: int, text: str) -> int:
        with self._session() as session:
            author = people.upsert(session, person)
            row = CorrectionRow(turn_id=turn_id, person_id=author.id, text=text)
            session.add(row)
            session.flush()
            return row.id

    def corrections(self, status: CorrectionStatus | None = None) -> list[Correction]:
        return self._corrections(*([] if status is None else [CorrectionRow.status == status.value]))

    def correction(self, correction_id: int) -> Correction | None:
        found = self._corrections(CorrectionRow.id == correction_id)
        return found[0] if found else None

    def _corrections(self, *conditions: ColumnElement[bool]) -> list[Correction]:
        reply, question = aliased(TurnRow), aliased(TurnRow)
        served = (
            select(func.count())
            .where(TurnRow.memory_correction_id == CorrectionRow.id)
            .correlate(CorrectionRow)
            .scalar_subquery()
        )
        query = (
            select(CorrectionRow, PersonRow, question.text, reply.text, served)
            .join(PersonRow, PersonRow.id == CorrectionRow.person_id)
            .join(reply, reply.id == CorrectionRow.turn_id)
            .outerjoin(question, question.id == reply.reply_to_id)
            .where(*conditions)
            .order_by(CorrectionRow.id)
        )
        with self._session() as session:
            return [to_correction(*row) for row in session.execute(query).all()]

    def review_correction(
        self,
        correction_id: int,
        approve: bool,
        reviewer: str,
        text: str | None = None,
        pending_only: bool = False,
    ) -> Correction:
        status = CorrectionStatus.APPROVED if approve else CorrectionStatus.REJECTED
        values: dict[str, object] = {"status": status.value, "reviewer": reviewer, "reviewed_at": utcnow()}
        if text and text.strip():
            values["text"] = text.strip()
        decide = update(CorrectionRow).where(CorrectionRow.id == correction_id).values(**values)
        if pending_only:  # one statement: the database lets one of two decisions at once through
            decide = decide.where(CorrectionRow.status == CorrectionStatus.PENDING.value)
        with self._session() as session:
            if session.scalar(decide.returning(CorrectionRow.id)) is None:
                if session.get(CorrectionRow, correction_id) is None:
                    raise NotFound(f"no correction {correction_id}")
                raise AlreadyReviewed(f"correction {correction_id} was reviewed already")
        decided = self.correction(correction_id)
        if decided is None:  # deleted (/forget) the moment after
            raise NotFound(f"no correction {correction_id}")
        return decided

    # --- /reset and /forget ----------------------------------------------------

    def reset(self, chat: ChatRef, sender: Person, shared_history: bool) -> bool:
        with self._session() as session:
            owner_id = None
            if not shared_history:
                person = people.find(session, sender)
                if person is None:
                    return False
                owner_id = person.id
            open_ids = session.scalars(
                self._open_conversation_query(chat, owner_id).with_only_columns(ConversationRow.id)
            ).all()
            if open_ids:
                session.execute(
                    update(ConversationRow).where(ConversationRow.id.in_(open_ids)).values(closed_at=utcnow())
                )
            return bool(open_ids)

    def forget(self, person: Person) -> ForgetReport:
        """Delete the person, their private conversations, their turns in shared ones
        and the bot's replies to those turns, their ratings and corrections."""
        with self._session() as session:
            row = people.find(session, person)
            if row is None:
                return ForgetReport(0, 0, 0, 0, known=False)
            own_conversations = select(ConversationRow.id).where(ConversationRow.owner_id == row.id)
            their_turns = select(TurnRow.id).where(TurnRow.person_id == row.id)
            doomed_turns = select(TurnRow.id).where(
                (TurnRow.conversation_id.in_(own_conversations))
                | (TurnRow.person_id == row.id)
                | (TurnRow.reply_to_id.in_(their_turns))
            )
            turn_ids = list(session.scalars(doomed_turns).all())
            said = session.scalars(select(TurnRow.text).where(TurnRow.person_id == row.id)).all()
            proposed = session.scalars(
                select(CorrectionRow.text).where(CorrectionRow.person_id == row.id)
            ).all()
            report = ForgetReport(
                turns=len(turn_ids),
                ratings=self._count(session, RatingRow, RatingRow.person_id == row.id),
                corrections=self._count(session, CorrectionRow, CorrectionRow.person_id == row.id),
                conversations=self._count(session, ConversationRow, ConversationRow.owner_id == row.id),
                words=tuple(dict.fromkeys(text for text in [*said, *proposed] if text)),
                turn_ids=tuple(turn_ids),
            )
            personas.forget_settings(session, row.id, person)
            # Explicit deletes in dependency order, so nothing depends on the
            # backend's ON DELETE CASCADE being switched on.
            theirs = (CorrectionRow.turn_id.in_(turn_ids)) | (CorrectionRow.person_id == row.id)
            session.execute(
                delete(CorrectionMemoryRow).where(
                    CorrectionMemoryRow.correction_id.in_(select(CorrectionRow.id).where(theirs))
                )
            )
            for table, column in ((RatingRow, RatingRow.turn_id), (CorrectionRow, CorrectionRow.turn_id)):
                session.execute(delete(table).where(column.in_(turn_ids)))
            session.execute(delete(RatingRow).where(RatingRow.person_id == row.id))
            session.execute(delete(CorrectionRow).where(CorrectionRow.person_id == row.id))
            # Replies point at the turns they answer: delete them first.
            session.execute(
                delete(TurnRow).where(TurnRow.id.in_(turn_ids), TurnRow.role == Role.ASSISTANT.value)
            )
            session.execute(delete(TurnRow).where(TurnRow.id.in_(turn_ids)))
            session.execute(delete(ConversationRow).where(ConversationRow.owner_id == row.id))
            session.delete(row)
            # The trail keeps what happened (their consent changes, their own admin
            # actions), but no longer who it was.
            session.execute(
                update(AuditRow).where(AuditRow.actor == person.actor).values(actor=person.pseudonym)
            )
            session.execute(
                update(AuditRow).where(AuditRow.target == person.actor).values(target=person.pseudonym)
            )
        truncate_journal(self.engine)
        return report

    def prune(self, cutoff: datetime, dry_run: bool = False) -> PruneReport:
        """Apply retention to conversations whose last turn is before ``cutoff`` (see ``storage.retention``)."""
        with self._sessions() as session:
            report = retention.prune(session, cutoff.astimezone(UTC))
            if dry_run:
                session.rollback()
                return replace(report, dry_run=True)
            session.commit()
        truncate_journal(self.engine)
        return report

    def set_consent(self, person: Person, consent: bool | None) -> None:
        queries.set_consent(self.engine, person, consent)

    @staticmethod
    def _count(session: Session, table: Any, condition: Any) -> int:
        return session.scalar(select(func.count()).select_from(table).where(condition)) or 0

    # --- stats -------------------------------------------------------------------

    def stats(self) -> Stats:
        with self._session() as session:
            user = TurnRow.role == Role.USER.value
            people = self._count(session, PersonRow, True)
            conversations = self._count(session, ConversationRow, True)
            user_turns = self._count(session, TurnRow, user)
            voice_turns = self._count(session, TurnRow, user & TurnRow.from_voice)
            replies = self._count(session, TurnRow, TurnRow.role == Role.ASSISTANT.value)
            by_status = dict(
                session.execute(select(CorrectionRow.status, func.count()).group_by(CorrectionRow.status)).all()
            )
            by_model = session.execute(
                select(
                    TurnRow.model_version,
                    func.count(func.distinct(TurnRow.id)),
                    func.count(case((RatingRow.value > 0, 1))),
                    func.count(case((RatingRow.value < 0, 1))),
                )
                .outerjoin(RatingRow, RatingRow.turn_id == TurnRow.id)
                .where(TurnRow.role == Role.ASSISTANT.value)
                .group_by(TurnRow.model_version)
                .order_by(TurnRow.model_version)
            ).all()
            memory = dict(
                session.execute(
                    select(TurnRow.memory_mode, func.count())
                    .where(TurnRow.memory_mode.is_not(None))
                    .group_by(TurnRow.memory_mode)
                ).all()
            )
            by_persona = personas.reply_figures(session)
            spoken = languages.figures(session)
            active_row = session.execute(
                select(ModelVersionRow.name, ModelVersionRow.load_error).where(ModelVersionRow.active)
            ).first()
        active, active_error = active_row if active_row else (None, None)
        return Stats(
            people=people,
            conversations=conversations,
            user_turns=user_turns,
            voice_turns=voice_turns,
            replies=replies,
            corrections_pending=by_status.get(CorrectionStatus.PENDING.value, 0),
            corrections_approved=by_status.get(CorrectionStatus.APPROVED.value, 0),
            corrections_rejected=by_status.get(CorrectionStatus.REJECTED.value, 0),
            by_model=[ModelStats(model or "?", n, up, down) for model, n, up, down in by_model],
            active_model=active,
            active_model_error=active_error,
            memory_served=memory.get("served", 0),
            memory_grounded=memory.get("grounded", 0),
            by_persona=by_persona,
            by_language=spoken.by_language,
            replies_off_language=spoken.replies_off_language,
        )

    # --- model registry ------------------------------------------------------------

    def active_model(self) -> ModelVersion | None:
        with self._session() as session:
            row = session.scalars(select(ModelVersionRow).where(ModelVersionRow.active)).first()
            return to_model_version(row) if row else None

    def register_model(
        self,
        name: str,
        gguf_path: str,
        base_model: str | None = None,
        metrics: dict[str, object] | None = None,
        activate: bool = False,
    ) -> ModelVersion:
        with self._session() as session:
            insert = dialect_insert(session, ModelVersionRow).values(
                name=name, gguf_path=gguf_path, base_model=base_model, metrics=metrics or {}
            )
            # Registering a name again re-points it; a missing base model or metrics keeps the stored ones.
            base_model_given = func.nullif(insert.excluded.base_model, "")
            changes: dict[str, Any] = {
                "gguf_path": insert.excluded.gguf_path,
                "base_model": func.coalesce(base_model_given, ModelVersionRow.base_model),
            }
            if metrics is not None:
                changes["metrics"] = insert.excluded.metrics
            session.execute(insert.on_conflict_do_update(index_elements=[ModelVersionRow.name], set_=changes))
        return self.activate_model(name) if activate else self._model(name)

    def activate_model(self, name: str) -> ModelVersion:
        """Make ``name`` the model the bots serve; exactly one version is active."""
        with self._session() as session:
            row = session.scalars(select(ModelVersionRow).where(ModelVersionRow.name == name)).one_or_none()
            if row is None:
                raise NotFound(f"no model version named {name!r}")
            session.execute(update(ModelVersionRow).where(ModelVersionRow.id != row.id).values(active=False))
            row.active, row.activated_at = True, utcnow()
        return self._model(name)

    def report_model_load(self, name: str, error: str | None) -> None:
        """Note that ``name``'s file failed to load or answer (``error``, one line), or loads again (None)."""
        with self._session() as session:
            session.execute(
                update(ModelVersionRow)
                .where(ModelVersionRow.name == name)
                .values(load_error=error, load_error_at=utcnow() if error else None)
            )

    def _model(self, name: str) -> ModelVersion:
        with self._session() as session:
            return to_model_version(
                session.scalars(select(ModelVersionRow).where(ModelVersionRow.name == name)).one()
            )

    def list_models(self) -> list[ModelVersion]:
        with self._session() as session:
            rows = session.scalars(
                select(ModelVersionRow).order_by(ModelVersionRow.created_at, ModelVersionRow.id)
            )
            return [to_model_version(row) for row in rows]

    def previous_model(self) -> ModelVersion | None:
        """The version that was active before the current one (the latest other activation), if any."""
        with self._session() as session:
            row = session.scalars(
                select(ModelVersionRow)
                .where(ModelVersionRow.active.is_(False), ModelVersionRow.activated_at.is_not(None))
                .order_by(ModelVersionRow.activated_at.desc(), ModelVersionRow.id.desc())
                .limit(1)
            ).first()
            return to_model_version(row) if row else None

    def rollback_model(self) -> ModelVersion:
        """Serve again the version that was active before the current one (the latest other activation)."""
        previous = self.previous_model()
        if previous is None:
            raise NotFound("no earlier active version to roll back to")
        return self.activate_model(previous.name)

    # --- audit trail -------------------------------------------------------------------

    def record_audit(
        self,
        actor: str,
        action: AuditAction,
        target: str | None = None,
        details: Mapping[str, object] | None = None,
    ) -> None:
        with self._session() as session:
            session.add(AuditRow(actor=actor, action=action.value, target=target, details=dict(details or {})))

    def audit_entries(self, since: datetime | None = None) -> list[AuditEntry]:
        query = select(AuditRow).order_by(AuditRow.at, AuditRow.id)
        if since is not None:
            query = query.where(AuditRow.at >= (since.astimezone(UTC) if since.tzinfo else since))
        with self._session() as session:
            return [
                AuditEntry(
                    id=row.id,
                    at=aware(row.at),
                    actor=row.actor,
                    action=AuditAction(row.action),
                    target=row.target,
                    details=dict(row.details or {}),
                )
                for row in session.scalars(query)
            ]
