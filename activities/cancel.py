"""Activities that end when they are cancelled, not when the database lets them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def _consume(task: asyncio.Task[Any]) -> None:
    # The abandoned attempt's outcome (usually CancelledError) is nobody's to report.
    with contextlib.suppress(BaseException):
        task.exception()


async def abandon_on_cancel(work: Coroutine[Any, Any, T]) -> T:
    """Await `work`; when cancelled, cancel it too and return at once, without waiting for it.

    A database that stops answering holds psycopg's own query cancellation for many seconds, and
    a cancelled activity that waits for it holds its slot, or for a local try the whole workflow
    task, past the timeout that cancelled it. The abandoned attempt still unwinds (transaction
    rolled back, outbox claim released) in the background; what it writes is idempotent, and the
    next attempt is Temporal's to make.
    """
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.cancel()
        task.add_done_callback(_consume)
        raise
