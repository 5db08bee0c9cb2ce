"""structlog set-up: readable lines on a terminal, JSON lines for log collectors otherwise.

The standard library's `logging` (which plugins and libraries use) is routed through the same
processors: its records become structlog lines, with secrets masked like every other line. A
record that bypassed this would print a secret raw (Python's last-resort handler writes warnings
to stderr as they are).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import structlog
from structlog.tracebacks import ExceptionDictTransformer

from executor.redaction import REDACTOR

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(
    level: Literal["debug", "info", "warning", "error"] = "info",
    log_format: Literal["auto", "console", "json"] = "auto",
) -> None:
    as_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    # Tracebacks are rendered to data before secrets are scrubbed, and without frame locals: a
    # local holding a secret would be cut to 80 characters, and a cut secret cannot be masked.
    tracebacks: Any = (
        structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False))
        if as_json
        else structlog.processors.format_exc_info
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            tracebacks,
            REDACTOR.processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    _route_standard_logging(_LEVELS[level])


class StructlogHandler(logging.Handler):
    """Hands the standard library's records to structlog, and so to the redactor and renderer."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a record whose arguments do not fit its format: show both as they are
            message = f"{record.msg!r} % {record.args!r}"
        log = structlog.get_logger(record.name)
        method = {logging.DEBUG: log.debug, logging.INFO: log.info, logging.WARNING: log.warning}.get(
            record.levelno, log.error if record.levelno < logging.CRITICAL else log.critical
        )
        method(message, logger=record.name, exc_info=record.exc_info or False)


def _route_standard_logging(level: int) -> None:
    """The root logger's only handler is `StructlogHandler` (set once; `level` as configured)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, StructlogHandler):
            root.removeHandler(handler)
    root.addHandler(StructlogHandler())
    root.setLevel(level)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


#: Libraries that log every operation (a request, a query) below WARNING: only their warnings show.
_CHATTY = ("aiosqlite", "asyncio", "httpx", "httpcore", "hpack", "sqlalchemy", "alembic")


def get_logger(**bound: Any) -> Any:
    return structlog.get_logger("executor").bind(**bound)
