"""structlog set-up: JSON lines for services, readable lines on a terminal."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

#: Fields that hold personal data of children, families or referrers. Logs leave the secure
#: store (log shippers, support tickets), so these are masked wherever they appear in an event.
PERSONAL_FIELDS = frozenset(
    {
        "given_name",
        "family_name",
        "date_of_birth",
        "expected_date",
        "children",
        "summary",
        "details",
        "referrer",
        "phone",
        "collar_number",
        "note",
        "password",
        "token",
        "authorization",
    }
)
MASK = "[redacted]"


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: MASK if str(k).lower() in PERSONAL_FIELDS else _masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(v) for v in value]
    return value


def mask_personal_data(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: replace personal fields (at any depth) with a fixed mask."""
    for key in list(event):
        if key.lower() in PERSONAL_FIELDS:
            event[key] = MASK
        elif key != "event":
            event[key] = _masked(event[key])
    return event


def configure(level: str = "INFO", *, json: bool | None = None) -> None:
    """Route stdlib and structlog records through one renderer."""
    as_json = (not sys.stderr.isatty()) if json is None else json
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        mask_personal_data,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("uvicorn.access", "aiosqlite", "httpx", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
