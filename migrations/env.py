"""Alembic environment: the URL comes from the caller (models.migrate), never from the ini file."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from models.tables import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")
if not url:
    raise RuntimeError("models.migrate sets sqlalchemy.url")

engine = create_engine(url)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
