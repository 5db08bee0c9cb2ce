"""Liveness and readiness, each a JSON body that says why when the answer is no.

- live (`/healthz`): the loop is going round. It reports after every round, and after every
  database error it retries; silence for longer than a round can legitimately take means it is
  stuck (a restart helps). An event loop blocked outright does not answer at all, which a probe
  with a timeout reads the same way.
- ready (`/readyz`): this replica can do work now. The store answers and its schema is the one
  this build needs, and plugins are loaded. A database outage makes a replica not ready, not dead:
  restarting it would not help.
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


def liveness(metrics: Metrics, settings: Settings) -> Verdict:
    now = metrics.clock()
    silent = now - metrics.last_heartbeat
    limit = stale_after(settings)
    body: dict[str, Any] = {
        "status": "ok" if silent <= limit else "stuck",
        "rounds": metrics.rounds,
        "seconds_since_last_round": round(now - metrics.last_round_at, 3) if metrics.last_round_at else None,
        "seconds_since_heartbeat": round(silent, 3),
        "stale_after_seconds": limit,
    }
    if silent > limit:
        body["reason"] = (
            f"the reconciliation loop has not finished a round for {silent:.1f}s "
            f"(more than {limit:g}s: 3 x EXECUTOR_POLL_INTERVAL + 2 x EXECUTOR_HANDLE_TIMEOUT)"
        )
    return Verdict(silent <= limit, body)


async def readiness(store: Store, plugins: LoadedPlugins) -> Verdict:
    checks: dict[str, dict[str, Any]] = {
        "store": await _check_store(store),
        "plugins": _check_plugins(plugins),
    }
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
