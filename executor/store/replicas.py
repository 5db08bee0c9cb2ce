"""Replica heartbeats: each running daemon keeps a row saying it is alive and what it is doing.

Heartbeats are stamped on the database's clock, like leases, so "live" means the same to every
reader whatever its own clock says. A daemon that stops cleanly deletes its row; one that dies
leaves a row whose heartbeat goes stale, shown by `executor replicas --all` until it is pruned.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

import anyio
from sqlalchemy import delete, text

from executor.logging import get_logger
from executor.store.guard import guarded
from executor.store.store import Store
from executor.store.tables import replicas

#: Rows of replicas silent for this long are deleted when another replica starts.
PRUNE_AFTER = 3600.0


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    """What a replica reports with each heartbeat."""

    rounds: int
    #: When its last round ran, on its own clock (seconds since the epoch); None before the first.
    last_round_at: float | None
    #: Executions in the round under way.
    in_flight: int


@dataclass(frozen=True, slots=True)
class Replica:
    id: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    rounds: int
    last_round_at: float | None
    in_flight: int
    #: Seconds since its last heartbeat, on the database's clock.
    silent_for: float
    live: bool


def _upsert(now_sql: str) -> str:
    return (
        "INSERT INTO replicas (id, host, pid, started_at, heartbeat_at, rounds, last_round_at, in_flight) "
        f"VALUES (:id, :host, :pid, {now_sql}, {now_sql}, :rounds, :last_round_at, :in_flight) "
        "ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid, "
        "heartbeat_at = excluded.heartbeat_at, rounds = excluded.rounds, "
        "last_round_at = excluded.last_round_at, in_flight = excluded.in_flight, "
        "started_at = CASE WHEN :first THEN excluded.started_at ELSE replicas.started_at END"
    )


async def beat(store: Store, replica_id: str, status: ReplicaStatus, *, first: bool = False) -> None:
    """Record that `replica_id` is alive; `first` (at start) also resets its start time and prunes
    the rows of replicas long dead."""
    now_sql = store.dialect.now_sql
    params = {
        "id": replica_id,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "rounds": status.rounds,
        "last_round_at": status.last_round_at,
        "in_flight": status.in_flight,
        "first": first,
    }
    with guarded:
        async with store.engine.begin() as conn:
            await conn.execute(text(_upsert(now_sql)), params)
            if first:
                await conn.execute(
                    text(f"DELETE FROM replicas WHERE heartbeat_at < {now_sql} - :prune"),
                    {"prune": PRUNE_AFTER},
                )


async def remove(store: Store, replica_id: str) -> None:
    with guarded:
        async with store.engine.begin() as conn:
            await conn.execute(delete(replicas).where(replicas.c.id == replica_id))


async def list_replicas(store: Store, *, live_within: float, include_stale: bool = False) -> list[Replica]:
    """Replicas whose last heartbeat is at most `live_within` seconds old (and the others, with
    `include_stale`), oldest started first."""
    query = text(
        f"SELECT id, host, pid, started_at, heartbeat_at, rounds, last_round_at, in_flight, "
        f"{store.dialect.now_sql} - heartbeat_at AS silent_for FROM replicas ORDER BY started_at, id"
    )
    with guarded:
        async with store.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
    found = [
        Replica(
            id=row.id,
            host=row.host,
            pid=row.pid,
            started_at=row.started_at,
            heartbeat_at=row.heartbeat_at,
            rounds=row.rounds,
            last_round_at=row.last_round_at,
            in_flight=row.in_flight,
            silent_for=max(float(row.silent_for), 0.0),
            live=float(row.silent_for) <= live_within,
        )
        for row in rows
    ]
    return [replica for replica in found if include_stale or replica.live]


async def heartbeat(
    store: Store, replica_id: str, status: Callable[[], ReplicaStatus], *, interval: float
) -> None:
    """Beat every `interval` seconds until cancelled, then delete the row (the replica is leaving).

    A failed beat (the database is away) is logged and retried at the next interval: the
    heartbeat never stops the daemon, and a replica that cannot reach the database is, rightly,
    shown as silent.
    """
    log = get_logger(replica=replica_id)
    first, failing = True, False
    try:
        while True:
            try:
                # Shielded (and bounded on its own): a beat cancelled halfway at shutdown would leave
                # a half-closed connection whose clean-up can hang the process's exit.
                with anyio.CancelScope(shield=True), anyio.fail_after(max(interval, 5.0)):
                    await beat(store, replica_id, status(), first=first)
                first = False
                if failing:
                    log.info("heartbeat.resumed")
                failing = False
            except Exception as err:
                if not failing:
                    log.warning("heartbeat.failed", error=f"{type(err).__name__}: {err}")
                failing = True
            await anyio.sleep(interval)
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
            try:
                await remove(store, replica_id)
            except Exception as err:
                log.info("heartbeat.remove_failed", error=f"{type(err).__name__}: {err}")
