"""Resource quotas kept in the store, so that a quota holds across every replica sharing it.

A namespace has a quota (registered by plugins at set-up, overridable in settings); an allocation
is one row per (namespace, token), so allocating the same token twice is a no-op that succeeds.
Allocations are serialised per namespace: PostgreSQL locks the namespace's quota row for the
transaction (`FOR UPDATE`), SQLite has one writer at a time anyway. Whatever an execution still
holds when its attempt is finalized is released then, with the commit that records the clean-up
(`Store.commit_round(release_allocations_of=...)`): a plugin that forgets
to release cannot leak quota.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from executor.store import postgres
from executor.store.guard import guarded
from executor.store.store import Store
from executor.store.tables import resource_allocations, resource_quotas


class QuotaError(Exception):
    """An allocation in a namespace no quota is registered for, or nonsensical constraints."""


class SqlResourceManager:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def register(self, quotas: Mapping[str, int], *, now: float | None = None) -> None:
        """Set the quota of each namespace (the last replica to start with a changed quota wins)."""
        stamp = time.time() if now is None else now
        # Outside the retry: an IntegrityError must reach it as itself.
        with guarded:
            for namespace, quota in sorted(quotas.items()):
                for attempt in range(2):
                    try:
                        async with self._store._writer.begin() as conn:
                            changed = await conn.execute(
                                update(resource_quotas)
                                .where(resource_quotas.c.namespace == namespace)
                                .values(quota=quota, updated_at=stamp)
                            )
                            if not changed.rowcount:
                                await conn.execute(
                                    insert(resource_quotas).values(
                                        namespace=namespace, quota=quota, updated_at=stamp
                                    )
                                )
                        break
                    except IntegrityError:
                        if attempt:  # another replica inserted it meanwhile: update it the second time
                            raise

    async def quotas(self) -> dict[str, int]:
        with guarded:
            async with self._store.engine.connect() as conn:
                rows = (
                    await conn.execute(select(resource_quotas.c.namespace, resource_quotas.c.quota))
                ).all()
        return {namespace: quota for namespace, quota in rows}

    async def allocate(
        self,
        namespace: str,
        token: str,
        *,
        execution_id: str | None = None,
        constraints: Mapping[str, Any] | None = None,
    ) -> bool:
        """Take one unit of `namespace` for `token`; True if granted (or already held by it).

        `constraints` may carry `limit`: grant only while fewer than that many are held, a cap
        below the quota for this allocation (Flyte's resource constraints, in their simplest form).
        """
        limit = _limit(constraints)
        with guarded:
            async with self._store._writer.begin() as conn:
                quota_query = select(resource_quotas.c.quota).where(resource_quotas.c.namespace == namespace)
                if self._store.dialect is postgres.DIALECT:
                    quota_query = quota_query.with_for_update()  # one allocation per namespace at a time
                quota = (await conn.execute(quota_query)).scalar()
                if quota is None:
                    known = (await conn.execute(select(resource_quotas.c.namespace))).scalars().all()
                    raise QuotaError(
                        f"no quota is registered for namespace {namespace!r} "
                        f"(registered: {', '.join(sorted(known)) or 'none'})"
                    )
                held = await conn.execute(
                    select(resource_allocations.c.token).where(
                        resource_allocations.c.namespace == namespace, resource_allocations.c.token == token
                    )
                )
                if held.first() is not None:
                    return True
                in_use = (
                    await conn.execute(
                        select(func.count()).where(resource_allocations.c.namespace == namespace)
                    )
                ).scalar_one()
                if in_use >= (quota if limit is None else min(quota, limit)):
                    return False
                await conn.execute(
                    insert(resource_allocations).values(
                        namespace=namespace, token=token, execution_id=execution_id, allocated_at=time.time()
                    )
                )
        return True

    async def release(self, namespace: str, token: str) -> None:
        with guarded:
            async with self._store._writer.begin() as conn:
                await conn.execute(
                    delete(resource_allocations).where(
                        resource_allocations.c.namespace == namespace, resource_allocations.c.token == token
                    )
                )

    async def release_execution(self, execution_id: str) -> int:
        """Release every token `execution_id` still holds; returns how many there were."""
        with guarded:
            async with self._store._writer.begin() as conn:
                result = await conn.execute(
                    delete(resource_allocations).where(resource_allocations.c.execution_id == execution_id)
                )
        return int(result.rowcount or 0)

    async def in_use(self, namespace: str | None = None) -> int:
        query = select(func.count()).select_from(resource_allocations)
        if namespace is not None:
            query = query.where(resource_allocations.c.namespace == namespace)
        with guarded:
            async with self._store.engine.connect() as conn:
                return int((await conn.execute(query)).scalar_one())

    def for_execution(self, execution_id: str) -> ExecutionResources:
        return ExecutionResources(self, execution_id)


class ExecutionResources:
    """The `tctx.resource_manager` of one execution: allocations are recorded as its own."""

    __slots__ = ("_execution_id", "_manager")

    def __init__(self, manager: SqlResourceManager, execution_id: str) -> None:
        self._manager = manager
        self._execution_id = execution_id

    async def allocate(
        self, namespace: str, token: str, constraints: Mapping[str, Any] | None = None
    ) -> bool:
        return await self._manager.allocate(
            namespace, token, execution_id=self._execution_id, constraints=constraints
        )

    async def release(self, namespace: str, token: str) -> None:
        await self._manager.release(namespace, token)


def _limit(constraints: Mapping[str, Any] | None) -> int | None:
    if not constraints:
        return None
    unknown = set(constraints) - {"limit"}
    if unknown:
        raise QuotaError(f"unknown allocation constraints {sorted(unknown)}; supported: limit")
    limit = constraints["limit"]
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise QuotaError(f"constraint limit must be a non-negative int, got {limit!r}")
    return limit
