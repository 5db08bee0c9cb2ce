"""The store's edge: the driver's errors become the store's own (`errors.py`) as they leave it.

Every public entry of the store runs its statements inside `guarded`. What the database refuses
about a value becomes `StoreRefused`; everything else the database, the driver or the connection
raises becomes `StoreUnavailable`, as the loop and the HTTP API treated any SQLAlchemy error before
(an outage, retried or answered 503). Errors that are not the database's (a value the store cannot
encode, a bug) pass unchanged.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TypeVar

import anyio
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError

from executor.store.errors import ConnectionLost, StoreError, StoreRefused, StoreUnavailable

#: SQLSTATE classes of refused values: 22 data exception (out of range, too long, a NUL character
#: on PostgreSQL, invalid input for a parameter), 23 integrity constraint violation.
_REFUSED_SQLSTATE_CLASSES = ("22", "23")


def translated(err: BaseException) -> StoreError | None:
    """The store's error for `err`, or None when `err` is not the database's."""
    if isinstance(err, StoreError):
        return None
    if _refused(err):
        return StoreRefused(f"the database refused a value: {_describe(err)}")
    if _connection_lost(err):
        # The connection died (or its session was ended): it was discarded, never to be reused.
        return ConnectionLost(f"the connection to the database was lost: {_describe(err)}")
    if isinstance(err, SQLAlchemyError | sqlite3.Error | OSError) or _drivers_own(err):
        return StoreUnavailable(f"the database failed: {_describe(err)}")
    return None


#: SQLSTATEs after which the server has closed the session: the whole class 08 (connection
#: exception) and, of class 57, the three shutdowns (57P01 is `pg_terminate_backend`'s).
#: Not 57014 (a statement cancelled or timed out), which leaves the session usable.
_SESSION_OVER = ("08", "57P01", "57P02", "57P03")

#: asyncpg's client-side errors: its protocol is not where the next statement expects it (e.g.
#: "cannot switch to state 12; another operation (2) is in progress": still consuming the FATAL
#: error of a session the server ended) or the connection is closed.
_CLIENT_SIDE = ("InterfaceError", "InternalClientError")


def session_over(err: BaseException) -> bool:
    """Whether `err` (SQLAlchemy's error, or the driver's own) leaves its connection unusable: the
    server ended the session, the socket failed, or asyncpg's protocol lost track of its state;
    a fresh connection cures each. A value the driver could not encode does not."""
    cause: BaseException = err
    while type(cause).__module__.startswith("sqlalchemy.") and cause.__cause__ is not None:
        cause = cause.__cause__  # down to asyncpg's own, under SQLAlchemy's and its adapter's
    sqlstate = getattr(cause, "sqlstate", None)
    if isinstance(sqlstate, str):
        return sqlstate.startswith(_SESSION_OVER)
    if isinstance(cause, ValueError):
        return False
    if _drivers_own(cause):
        return any(cls.__name__ in _CLIENT_SIDE for cls in type(cause).__mro__)
    return isinstance(cause, OSError | TimeoutError)


def _connection_lost(err: BaseException) -> bool:
    if isinstance(err, DBAPIError):
        return err.connection_invalidated or session_over(err)
    return _drivers_own(err) and session_over(err)


def _drivers_own(err: BaseException) -> bool:
    """An error of the driver's that SQLAlchemy did not wrap: asyncpg raises its own from the
    set-up SQLAlchemy runs on each new connection (its JSON codecs), e.g. `InterfaceError:
    connection is closed` when the session is ended right after it began."""
    return any(cls.__module__.startswith("asyncpg.") for cls in type(err).__mro__)


def _refused(err: BaseException) -> bool:
    if isinstance(err, IntegrityError | DataError):
        return True
    if isinstance(err, DBAPIError) or _drivers_own(err):
        # asyncpg's errors reach SQLAlchemy as one generic class; the SQLSTATE tells them apart.
        orig = err.orig if isinstance(err, DBAPIError) else err
        sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
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


T = TypeVar("T")

#: Attempts at a read whose connection was lost, and the pause before the second (doubled before
#: each next one, with jitter).
READ_ATTEMPTS = 3
READ_RETRY_PAUSE = 0.02


async def read_retrying(read: Callable[[], Awaitable[T]]) -> T:
    """`await read()` under the guard; run again on a fresh connection when the connection was
    lost. Only for reads, which may run twice: under killed sessions the API answered 503 for an
    execution it had just stored, when reading it back found the connection dead."""
    for attempt in range(1, READ_ATTEMPTS + 1):
        try:
            with guarded:
                return await read()
        except ConnectionLost:
            if attempt == READ_ATTEMPTS:
                raise
        await anyio.sleep(READ_RETRY_PAUSE * 2 ** (attempt - 1) * random.uniform(0.5, 1.0))
    raise AssertionError("unreachable")  # the loop returns or raises
