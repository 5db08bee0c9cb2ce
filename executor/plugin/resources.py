"""Quotas plugins register at setup and allocate per execution.

The daemon hands this registrar to `load_plugin`; what plugins register here (with the overrides
of EXECUTOR_RESOURCE_QUOTAS applied) is then written to the store, where allocations are kept
across every replica (`executor.store.quotas`). Used on its own, it is also an in-memory manager
holding quotas within one process, for tests and tools that have no store.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class QuotaError(Exception):
    pass


class InProcessResourceManager:
    """Both the registrar handed to `load_plugin` and the manager handed to `handle`."""

    def __init__(self, overrides: Mapping[str, int] | None = None) -> None:
        self._quotas: dict[str, int] = {}
        self._overrides = dict(overrides or {})
        self._holders: dict[str, set[str]] = {}

    @property
    def quotas(self) -> dict[str, int]:
        """Every namespace's quota: registered ones (overridden), and ones only the settings name."""
        return {**self._overrides, **self._quotas}

    def register_resource_quota(self, namespace: str, quota: int) -> None:
        if quota < 1:
            raise QuotaError(f"quota for namespace {namespace!r} must be at least 1, got {quota}")
        self._quotas[namespace] = self._overrides.get(namespace, quota)
        self._holders.setdefault(namespace, set())

    async def allocate(
        self, namespace: str, token: str, constraints: Mapping[str, Any] | None = None
    ) -> bool:
        if namespace not in self._quotas:
            raise QuotaError(f"no quota is registered for namespace {namespace!r}")
        holders = self._holders[namespace]
        if token in holders:
            return True
        if len(holders) >= self._quotas[namespace]:
            return False
        holders.add(token)
        return True

    async def release(self, namespace: str, token: str) -> None:
        self._holders.get(namespace, set()).discard(token)
