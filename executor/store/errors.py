"""The store's own errors: what callers outside `executor/store/` catch instead of SQLAlchemy's.

The one distinction every caller needs is between a database that is not there (retry later, report
an outage: `StoreUnavailable`) and a value the database refused (the caller's fault: `StoreRefused`,
never an outage). Everything else about the driver stays inside the store: `guard.py` translates
the driver's errors at the store's edges, so nothing here needs SQLAlchemy.
"""

from __future__ import annotations


class StoreError(Exception):
    """Any failure of the store that is not a bug in the caller."""


class StoreUnavailable(StoreError, ConnectionError):  # noqa: N818 -- the name the issue and callers use
    """The database or the connection to it failed: the same call may succeed later.

    A `ConnectionError` too, which is what it is: code that treats a lost connection as passing
    (retries it, answers 503) treats this one alike without knowing the store.
    """


class StoreRefused(StoreError):  # noqa: N818
    """The database refused a value (out of range, a character it cannot store): not an outage."""


def is_unavailable(err: BaseException) -> bool:
    """Whether `err` (or every error of a group) is the database being away, which the loop retries.

    The store raises `StoreUnavailable` at its edges; a connection's own errors (`OSError`,
    `ConnectionError`) raised around a store call count as the same.
    """
    if isinstance(err, BaseExceptionGroup):  # store calls made inside a task group
        return all(is_unavailable(inner) for inner in err.exceptions)
    return isinstance(err, StoreUnavailable | OSError | ConnectionError)
