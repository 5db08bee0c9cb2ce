"""The SQL store: tables, queries, and the few statements that differ per dialect."""

from executor.store.store import AbortResult, CommitResult, Store, StoreError, Submission, create_engine

__all__ = ["AbortResult", "CommitResult", "Store", "StoreError", "Submission", "create_engine"]
