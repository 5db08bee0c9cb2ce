"""Which executions a replica may claim: the queues it serves and the host it runs on.

Every claim and every idle wait of a replica reads through this (see
`statements.served_predicate`); paused task types are read from the database by each statement,
so a pause reaches every replica at its next claim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Served:
    #: The queues this replica claims from (EXECUTOR_QUEUES); None: every queue.
    queues: tuple[str, ...] | None = None
    #: Its host (EXECUTOR_HOST): it claims rows pinned to this host and pins rows that ask for
    #: it here. None: it claims only unpinned rows and pins none.
    host: str | None = None

    def parameters(self) -> dict[str, Any]:
        """The named parameters of `served_predicate(self.queues)`."""
        params: dict[str, Any] = {"host": self.host}
        for number, queue in enumerate(self.queues or ()):
            params[f"queue_{number}"] = queue
        return params


#: Every queue, no host: what a claim without a replica's settings (tests, tools) sees.
EVERYTHING = Served()
