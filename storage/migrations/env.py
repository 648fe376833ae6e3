"""Alembic environment: the URL comes from the config that ``storage.migrate`` builds."""

from __future__ import annotations

from alembic import context

from storage.database import make_engine
from storage.tables import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url, "storage.migrate sets sqlalchemy.url"

engine = make_engine(url)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
