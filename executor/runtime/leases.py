"""The leases of the rounds under way, so that a round that never commits hands them back.

A claim leases its rows to this replica until the round commits; a round that is cancelled (the
shutdown grace ran out) or whose commit fails (the database went away mid-round) releases them,
so that its executions run again at once, here or elsewhere, not after the lease's TTL.
"""

from __future__ import annotations

from typing import Any

import anyio

from executor.store import Store


class InFlight:
    """The leases of the rounds under way (two while a commit overlaps the next round): token -> ids."""

    def __init__(self, store: Store, *, release_timeout: float, log: Any) -> None:
        self._store = store
        self._release_timeout = release_timeout
        self._log = log
        self._leases: dict[str, list[str]] = {}

    @property
    def count(self) -> int:
        return sum(len(ids) for ids in self._leases.values())

    def hold(self, token: str, ids: list[str]) -> None:
        self._leases[token] = ids

    def drop(self, token: str) -> None:
        """The round committed (or gave its leases back): nothing of it is in flight any more."""
        self._leases.pop(token, None)

    async def abandon(self, token: str) -> None:
        """Hand the round's leases back if the database lets us; a failure is only logged, since
        the leases lapse anyway when their TTL runs out."""
        ids = self._leases.pop(token, None)
        if ids is None:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(self._release_timeout):
            try:
                await self._store.release_leases(token, ids)
            except Exception as err:
                self._log.info("round.release_failed", error=f"{type(err).__name__}: {err}", leases=len(ids))

    async def release_all(self) -> None:
        """After a cancelled round: hand its leases back so another replica need not wait the TTL."""
        while self._leases:
            token, ids = self._leases.popitem()
            with anyio.CancelScope(shield=True):
                await self._store.release_leases(token, ids)
