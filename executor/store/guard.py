"""The store's edge: the driver's errors become the store's own (`errors.py`) as they leave it.

Every public entry of the store runs its statements inside `guarded`. What the database refuses
about a value becomes `StoreRefused`; everything else the database, the driver or the connection
raises becomes `StoreUnavailable`, as the loop and the HTTP API treated any SQLAlchemy error before
(an outage, retried or answered 503). Errors that are not the database's (a value the store cannot
encode, a bug) pass unchanged.
"""

from __future__ import annotations

import sqlite3
from types import TracebackType

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError

from executor.store.errors import StoreError, StoreRefused, StoreUnavailable

#: SQLSTATE classes of refused values: 22 data exception (out of range, too long, a NUL character
#: on PostgreSQL, invalid input for a parameter), 23 integrity constraint violation.
_REFUSED_SQLSTATE_CLASSES = ("22", "23")


def translated(err: BaseException) -> StoreError | None:
    """The store's error for `err`, or None when `err` is not the database's."""
    if isinstance(err, StoreError):
        return None
    if _refused(err):
        return StoreRefused(f"the database refused a value: {_describe(err)}")
    if isinstance(err, SQLAlchemyError | sqlite3.Error | OSError):
        return StoreUnavailable(f"the database failed: {_describe(err)}")
    return None


def _refused(err: BaseException) -> bool:
    if isinstance(err, IntegrityError | DataError):
        return True
    if isinstance(err, DBAPIError):
        # asyncpg's errors reach SQLAlchemy as one generic class; the SQLSTATE tells them apart.
        sqlstate = getattr(err.orig, "sqlstate", None) or getattr(err.orig, "pgcode", None)
        return isinstance(sqlstate, str) and sqlstate.startswith(_REFUSED_SQLSTATE_CLASSES)
    # sqlite3 raises it, outside its own errors, for an integer beyond 64 bits.
    return isinstance(err, OverflowError)


def _describe(err: BaseException) -> str:
    if isinstance(err, DBAPIError) and err.orig is not None:
        # The driver's own error and message, without SQLAlchemy's statement and parameters
        # (asyncpg's is the cause of SQLAlchemy's adapter around it).
        err = err.orig.__cause__ or err.orig
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


class _Guard:
    """`with guarded:` raises the store's error instead of the driver's (see `translated`).

    A plain class rather than `contextlib.contextmanager`: entering it costs two method calls,
    nothing per row.
    """

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if err is None:
            return
        store_error = translated(err)
        if store_error is not None:
            raise store_error from err


guarded = _Guard()
