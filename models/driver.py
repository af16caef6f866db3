"""A Core SELECT run at the driver on PostgreSQL: for the lookups every API request makes.

Every `POST /api/v1/referrals` checks the caller's token and looks for a closed referral under
the same key before it starts the workflow. Through SQLAlchemy's execution layer (cache key,
execution context, result set, a greenlet hop for each driver call) those two lookups cost the
API more CPU than the Temporal start they guard; on psycopg's own cursor, about two fifths of
it (`python -m bench.lookups`).

The statement is still written in SQLAlchemy Core and compiled by SQLAlchemy, once, at first use;
its parameters and result columns go through the columns' own type processing (`UTCDateTime`
answers aware UTC datetimes either way); and a psycopg error is raised as the SQLAlchemy error
that SQLAlchemy would have raised for it, after the connection is invalidated when it says the
connection is lost. Callers cannot tell the two paths apart (tests/unit/test_intake_lookups.py
compares them row for row). Other dialects (SQLite) run the statement through SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy import Select
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True)
class _Compiled:
    sql: str
    binds: Mapping[str, Processor]
    #: The statement's own values (its literals), processed.
    fixed: dict[str, Any]
    results: Sequence[Processor]


class DriverQuery:
    """`statement` (or `postgresql`, its PostgreSQL form, where the two must differ) as tuples in
    the order of its selected columns, each value as SQLAlchemy would give it."""

    def __init__(self, statement: Select[Any], *, postgresql: Select[Any] | None = None) -> None:
        self.statement = statement
        self.postgresql = postgresql if postgresql is not None else statement
        self._compiled: _Compiled | None = None

    def compiled(self, dialect: Dialect) -> _Compiled:
        """The PostgreSQL statement's SQL and its type processing, built at first use."""
        if self._compiled is None:
            compiled = self.postgresql.compile(dialect=dialect)
            # By the name each parameter has in the SQL.
            named = {name: bind for bind, name in compiled.bind_names.items()}
            binds = {
                name: bind.type.dialect_impl(dialect).bind_processor(dialect) for name, bind in named.items()
            }
            fixed = {
                name: _processed(binds[name], bind.effective_value)
                for name, bind in named.items()
                if not bind.required
            }
            results = [
                column.type.dialect_impl(dialect).result_processor(dialect, None)
                for column in self.postgresql.selected_columns
            ]
            self._compiled = _Compiled(str(compiled), binds, fixed, results)
        return self._compiled

    async def all(self, connection: AsyncConnection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Every row, in the statement's column order."""
        dialect = connection.dialect
        if dialect.name != "postgresql" or dialect.driver != "psycopg":
            return [tuple(row) for row in await connection.execute(self.statement, dict(params))]
        compiled = self.compiled(dialect)
        values = dict(compiled.fixed)
        values.update((name, _processed(compiled.binds[name], value)) for name, value in params.items())
        driver = (await connection.get_raw_connection()).driver_connection
        assert isinstance(driver, psycopg.AsyncConnection), driver  # checked out: never None
        try:
            async with driver.cursor() as cursor:
                await cursor.execute(compiled.sql, values)
                rows: Sequence[tuple[Any, ...]] = await cursor.fetchall()
        except psycopg.Error as exc:
            lost = bool(driver.broken or driver.closed)
            error = DBAPIError.instance(
                compiled.sql,
                values,
                exc,
                psycopg.Error,
                hide_parameters=connection.sync_engine.hide_parameters,
                connection_invalidated=lost,
                dialect=dialect,
            )
            if lost:  # as SQLAlchemy does: the pool must not hand this connection out again
                await connection.invalidate(exc)
            raise error from exc
        results = compiled.results
        if not any(results):
            return list(rows)
        return [
            tuple(
                value if process is None else process(value)
                for process, value in zip(results, row, strict=True)
            )
            for row in rows
        ]


def _processed(process: Processor, value: Any) -> Any:
    return value if process is None else process(value)
