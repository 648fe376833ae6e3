"""The Watch page's figures (``core.watch``), counted the way ``iris stats --plot`` counts them.

Days are UTC days, as in ``storage.queries.activity`` (whose day-by-day helpers this reuses),
but only the window's rows are read: the page polls this every few seconds.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, time, timedelta

from sqlalchemy import Engine, select

from core.domain import Role
from core.watch import MAX_DAYS, WatchFigures
from storage import languages
from storage.database import session_factory
from storage.mapping import aware
from storage.queries import _daily_models, _daily_turns
from storage.tables import RatingRow, TurnRow


class SqlWatch:
    def __init__(self, engine: Engine) -> None:
        self._sessions = session_factory(engine)

    def watch_figures(self, days: int) -> WatchFigures:
        days = max(1, min(days, MAX_DAYS))
        first = datetime.now(UTC).date() - timedelta(days=days - 1)
        start = datetime.combine(first, time(), UTC)
        with self._sessions() as session:
            replies = session.execute(
                select(TurnRow.id, TurnRow.created_at, TurnRow.model_version, RatingRow.value)
                .outerjoin(RatingRow, RatingRow.turn_id == TurnRow.id)
                .where(TurnRow.role == Role.ASSISTANT.value, TurnRow.created_at >= start)
            ).all()
            turns = session.execute(
                select(TurnRow.created_at, TurnRow.from_voice).where(
                    TurnRow.role == Role.USER.value, TurnRow.created_at >= start
                )
            ).all()
            spoken = languages.figures(session)
        hours = Counter(aware(created_at).astimezone(UTC).hour for created_at, _voice in turns)
        return WatchFigures(
            since=first,
            models=_daily_models(replies),
            turns=_daily_turns(turns),
            languages=spoken.by_language,
            hours=[hours[hour] for hour in range(24)],
        )
