"""Liveness and readiness, each a JSON body that says why when the answer is no.

- live (`/healthz`): rounds complete. The loop reports after every round, and after every
  database error it retries; silence for longer than a round can legitimately take means it is
  stuck (a restart helps). A loop that turns but whose rounds all fail is live for a while (a
  database outage, which a restart would not cure), and not once no round has completed for
  `failing_after` (ten times the stuck limit): rounds that never complete mean a broken replica,
  whatever the loop's heartbeat says. An event loop blocked outright does not answer at all, which
  a probe with a timeout reads the same way.
- ready (`/readyz`): this replica can do work now. The store answers and its schema is the one
  this build needs, plugins are loaded, and rounds complete: a replica whose rounds have failed for
  longer than the stuck limit is not ready at once, before it is not live.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio

from executor.http.metrics import Metrics
from executor.plugin.registry import LoadedPlugins
from executor.settings import Settings
from executor.store import Store
from executor.store.migrate import current_revision, head_revision

#: How long `/readyz` waits for the store before saying it does not answer.
STORE_CHECK_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    body: dict[str, Any]


def stale_after(settings: Settings) -> float:
    """Seconds of silence after which the loop counts as stuck.

    A few poll intervals, plus the longest a healthy round may take: a handle timeout for the
    `handle` calls and another for the `finalize` calls.
    """
    return 3 * settings.poll_interval.total_seconds() + 2 * settings.handle_timeout.total_seconds()


def failing_after(settings: Settings) -> float:
    """Seconds without a completed round, the loop retrying store errors all along, after which
    the replica counts as broken: ten times the stuck limit, which weathers a database restart."""
    return 10 * stale_after(settings)


def liveness(metrics: Metrics, settings: Settings) -> Verdict:
    now = metrics.clock()
    silent = now - metrics.last_heartbeat
    limit = stale_after(settings)
    failing = _failing_for(metrics, now)
    body: dict[str, Any] = {
        "status": "ok",
        "rounds": metrics.rounds,
        "seconds_since_last_round": round(now - metrics.last_round_at, 3) if metrics.last_round_at else None,
        "seconds_since_heartbeat": round(silent, 3),
        "stale_after_seconds": limit,
        "failed_rounds": metrics.failed_rounds,
        "failing_after_seconds": failing_after(settings),
    }
    if silent > limit:
        body["status"] = "stuck"
        body["reason"] = (
            f"the reconciliation loop has not finished a round for {silent:.1f}s "
            f"(more than {limit:g}s: 3 x EXECUTOR_POLL_INTERVAL + 2 x EXECUTOR_HANDLE_TIMEOUT)"
        )
    elif failing > failing_after(settings):
        body["status"] = "failing"
        body["reason"] = (
            f"no round has completed for {failing:.1f}s: {metrics.failed_rounds} rounds in a row failed "
            f"on database errors (more than {failing_after(settings):g}s: see the round.store_error logs)"
        )
    return Verdict(body["status"] == "ok", body)


def _failing_for(metrics: Metrics, now: float) -> float:
    """Seconds since the last completed round (or the start), while rounds fail; 0 when they do not."""
    if metrics.failing_since is None:
        return 0.0
    return now - (metrics.last_round_at if metrics.last_round_at is not None else metrics.started_at)


def _check_rounds(metrics: Metrics, settings: Settings) -> dict[str, Any]:
    failing = _failing_for(metrics, metrics.clock())
    if failing > stale_after(settings):
        return {
            "ok": False,
            "error": f"no round has completed for {failing:.1f}s; {metrics.failed_rounds} failed in a row",
        }
    return {"ok": True, "failed_rounds": metrics.failed_rounds}


async def readiness(
    store: Store, plugins: LoadedPlugins, metrics: Metrics | None = None, settings: Settings | None = None
) -> Verdict:
    checks: dict[str, dict[str, Any]] = {
        "store": await _check_store(store),
        "plugins": _check_plugins(plugins),
    }
    if metrics is not None and settings is not None:
        checks["rounds"] = _check_rounds(metrics, settings)
    ok = all(check["ok"] for check in checks.values())
    body: dict[str, Any] = {"status": "ready" if ok else "not_ready", "checks": checks}
    if not ok:
        body["reason"] = "; ".join(
            f"{name}: {check['error']}" for name, check in checks.items() if not check["ok"]
        )
    return Verdict(ok, body)


async def _check_store(store: Store) -> dict[str, Any]:
    head = head_revision()
    try:
        with anyio.fail_after(STORE_CHECK_TIMEOUT):
            revision = await current_revision(store.engine)
    except TimeoutError:
        return {"ok": False, "error": f"the database did not answer within {STORE_CHECK_TIMEOUT:g}s"}
    except Exception as err:
        return {
            "ok": False,
            "error": f"the database does not answer: {type(err).__name__}: {_first_line(err)}",
        }
    if revision != head:
        return {
            "ok": False,
            "error": f"schema revision {revision or 'none'}, this build needs {head}: run `executor migrate`",
            "revision": revision,
        }
    return {"ok": True, "revision": revision}


def _check_plugins(plugins: LoadedPlugins) -> dict[str, Any]:
    if not plugins.by_id:
        return {"ok": False, "error": "no plugins are loaded: no execution could run", "task_types": []}
    return {"ok": True, "plugins": sorted(plugins.by_id), "task_types": plugins.task_types}


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""
