"""Rows to core types, at the storage boundary."""

from __future__ import annotations

from datetime import UTC, datetime

from core.domain import ChatRef, Correction, CorrectionStatus, ModelVersion, Person, Role, Timings, Turn
from storage.tables import CorrectionRow, ModelVersionRow, PersonRow, TurnRow


def aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything Iris stores is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def to_person(row: PersonRow) -> Person:
    return Person(platform=row.platform, user_id=row.user_id, display_name=row.display_name)


def to_turn(row: TurnRow) -> Turn:
    return Turn(
        id=row.id,
        conversation_id=row.conversation_id,
        role=Role(row.role),
        text=row.text,
        created_at=aware(row.created_at),
        from_voice=row.from_voice,
        audio_seconds=row.audio_seconds,
        model_version=row.model_version,
        timings=Timings(
            transcribe_ms=row.transcribe_ms,
            generate_ms=row.generate_ms,
            total_ms=row.total_ms,
            tokens=row.tokens,
            speak_ms=row.speak_ms,
            spoken_seconds=row.spoken_seconds,
        ),
        error=row.error,
        chat=ChatRef(row.platform, row.chat_id),
        reply_to_id=row.reply_to_id,
        memory_correction_id=row.memory_correction_id,
        language=row.language,
        language_probability=row.language_probability,
    )


def to_correction(
    row: CorrectionRow, person: PersonRow, prompt: str | None, original_reply: str | None, served: int = 0
) -> Correction:
    return Correction(
        id=row.id,
        turn_id=row.turn_id,
        person=to_person(person),
        text=row.text,
        status=CorrectionStatus(row.status),
        created_at=aware(row.created_at),
        prompt=prompt,
        original_reply=original_reply,
        reviewer=row.reviewer,
        reviewed_at=aware(row.reviewed_at) if row.reviewed_at else None,
        served=served,
    )


def to_model_version(row: ModelVersionRow) -> ModelVersion:
    return ModelVersion(
        id=row.id,
        name=row.name,
        gguf_path=row.gguf_path,
        base_model=row.base_model,
        created_at=aware(row.created_at),
        metrics=dict(row.metrics or {}),
        active=row.active,
        load_error=row.load_error,
    )
