"""The leases this replica holds, so that work that never commits hands them back.

A claim leases its rows to this replica until the round commits, or, for a call that outlived its
round, until that call's outcome commits (the loop renews those leases meanwhile). A round that is
cancelled (the shutdown grace ran out) or whose commit fails (the database went away mid-round)
releases them, so that its executions run again at once, here or elsewhere, not after the TTL.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import anyio

from executor.store import Store, is_unavailable

#: Attempts at handing back an abandoned round's leases, and the pause after the first failure
#: (doubled after each next one), all within the release timeout.
RELEASE_ATTEMPTS = 4
RELEASE_RETRY_PAUSE = 0.05


class InFlight:
    """The leases this replica holds: those of the rounds under way (two while a commit overlaps
    the next round) and those of the calls that outlived their round. token -> ids."""

    def __init__(self, store: Store, *, release_timeout: float, log: Any) -> None:
        self._store = store
        self._release_timeout = release_timeout
        self._log = log
        self._leases: dict[str, set[str]] = {}

    @property
    def count(self) -> int:
        return sum(len(ids) for ids in self._leases.values())

    def hold(self, token: str, ids: list[str]) -> None:
        self._leases[token] = set(ids)

    def held(self) -> dict[str, list[str]]:
        """A copy of every lease held, for the renewal."""
        return {token: list(ids) for token, ids in self._leases.items() if ids}

    def drop(self, token: str, keep: Collection[str] = ()) -> None:
        """The round committed (or gave its leases back): only the executions in `keep`, whose
        calls go on, still hold its lease."""
        ids = self._leases.pop(token, None)
        if ids is not None and keep:
            self._leases[token] = ids & set(keep)

    def move(self, token: str, moved: Mapping[str, str]) -> None:
        """A commit under `token` took these executions from the leases `moved` names (id ->
        token): those it kept leased are now `token`'s (see `Store.commit_round`'s `held`)."""
        for execution_id, old in moved.items():
            self.forget(old, (execution_id,))
        if moved:
            self._leases.setdefault(token, set()).update(moved)

    def forget(self, token: str, ids: Collection[str]) -> None:
        """These leases were written off by a commit, or lost to another replica."""
        held = self._leases.get(token)
        if held is not None:
            held.difference_update(ids)
            if not held:
                del self._leases[token]

    def holds(self, token: str, execution_id: str) -> bool:
        return execution_id in self._leases.get(token, ())

    async def abandon(self, token: str) -> None:
        """Hand the round's leases back if the database lets us, trying again while the release
        timeout lasts (a round is abandoned mostly because its connection died, and a fresh one
        usually works at once); a failure is only logged, since the leases lapse anyway when
        their TTL runs out."""
        ids = self._leases.pop(token, None)
        if not ids:
            return
        error: Exception | None = None
        with anyio.CancelScope(shield=True), anyio.move_on_after(self._release_timeout):
            for attempt in range(RELEASE_ATTEMPTS):
                try:
                    await self._store.release_leases(token, ids)
                    return
                except Exception as err:
                    error = err
                    if not is_unavailable(err):
                        break  # not the database being away: trying again would not help
                await anyio.sleep(RELEASE_RETRY_PAUSE * 2**attempt)
        self._log.info("round.release_failed", error=f"{type(error).__name__}: {error}", leases=len(ids))

    async def release_all(self) -> None:
        """After a cancelled round: hand its leases back so another replica need not wait the TTL."""
        for token in list(self._leases):
            await self.abandon(token)  # retried like a round's, and a failure only logged
