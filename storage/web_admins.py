"""The web console's admins in the database (``core.web_admins.WebAdmins``).

In the database rather than a file or the settings, so that every process on it (``iris web``,
``iris run`` with a console) sees an admin added or removed at their next request.
"""

from __future__ import annotations

from sqlalchemy import Engine, delete, select
from sqlalchemy.exc import IntegrityError

from core.web_admins import AdminNameTaken, WebAdmin
from storage.database import session_factory
from storage.mapping import aware
from storage.tables import WebAdminRow


class SqlWebAdmins:
    def __init__(self, engine: Engine) -> None:
        self._sessions = session_factory(engine)

    def add_admin(self, name: str, token_hash: str, session_key: str, created_by: str) -> WebAdmin:
        row = WebAdminRow(
            name=name,
            name_key=name.casefold(),
            token_sha256=token_hash,
            session_key=session_key,
            created_by=created_by,
        )
        try:
            with self._sessions.begin() as session:
                session.add(row)
        except IntegrityError:  # the unique name_key: also when two adds of one name race
            raise AdminNameTaken(f"There is already an admin named {name!r} (names ignore case).") from None
        return _admin(row)

    def remove_admin(self, name: str) -> bool:
        with self._sessions.begin() as session:
            removed = session.execute(delete(WebAdminRow).where(WebAdminRow.name == name))
            return bool(removed.rowcount)  # type: ignore[attr-defined]

    def list_admins(self) -> list[WebAdmin]:
        with self._sessions() as session:
            return [_admin(row) for row in session.scalars(select(WebAdminRow).order_by(WebAdminRow.id))]

    def admin_by_token(self, token_hash: str) -> WebAdmin | None:
        with self._sessions() as session:
            row = session.scalars(select(WebAdminRow).where(WebAdminRow.token_sha256 == token_hash)).first()
            return _admin(row) if row else None

    def admin_by_session(self, admin_id: int, session_key: str) -> WebAdmin | None:
        with self._sessions() as session:
            row = session.get(WebAdminRow, admin_id)
            return _admin(row) if row is not None and row.session_key == session_key else None


def _admin(row: WebAdminRow) -> WebAdmin:
    return WebAdmin(
        id=row.id,
        name=row.name,
        session_key=row.session_key,
        created_at=aware(row.created_at),
        created_by=row.created_by,
    )
