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


class ConnectionLost(StoreUnavailable):
    """The connection died mid-call (its session ended by the server, its socket broken): it was
    discarded, and the same call on a fresh connection usually succeeds at once."""


class SubmissionFailed(StoreUnavailable):
    """A submission the database failed, its retries spent: says whether it was stored.

    `stored` is False when no attempt reached its commit (nothing was stored: submitting again is
    safe), None when the connection died while a commit was under way and no later attempt could
    look (it may be stored, as `execution_ids`: look one up before submitting again, or submit
    again with an idempotency key).
    """

    def __init__(self, cause: str, *, stored: bool | None, execution_ids: tuple[str, ...]) -> None:
        self.cause = cause
        self.stored = stored
        self.execution_ids = execution_ids
        if stored is False:
            verdict = "nothing was stored; submitting again is safe"
        else:
            shown = ", ".join(execution_ids[:3]) + (", ..." if len(execution_ids) > 3 else "")
            verdict = (
                f"whether it was stored is unknown: the connection was lost during its commit; "
                f"if it was, its execution id is {shown} (`executor get ID` or "
                f"GET /api/v1/executions/ID tells; not found means not stored)"
            )
        super().__init__(f"{cause}; {verdict}")

    def of_one(self, index: int) -> SubmissionFailed:
        """The verdict for the `index`-th submission of the batch alone (its own id)."""
        return SubmissionFailed(self.cause, stored=self.stored, execution_ids=(self.execution_ids[index],))


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
