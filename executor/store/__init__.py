"""The SQL store: tables, queries, and the few statements that differ per dialect."""

from executor.store.errors import (
    ConnectionLost,
    StoreError,
    StoreRefused,
    StoreUnavailable,
    SubmissionFailed,
    is_unavailable,
)
from executor.store.store import AbortResult, CommitResult, Store, Submission, create_engine

__all__ = [
    "AbortResult",
    "CommitResult",
    "ConnectionLost",
    "Store",
    "StoreError",
    "StoreRefused",
    "StoreUnavailable",
    "Submission",
    "SubmissionFailed",
    "create_engine",
    "is_unavailable",
]
