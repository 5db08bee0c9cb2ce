"""Submissions at a constant rate, each timed from submit to its first `handle`.

Scenario 6 times one submission at a time on an idle daemon; a queue in production sees a steady
stream instead, and issue 21 found the pickup latency of such a stream to be what users feel (and
to climb over minutes when the plans rot). Here submissions are offered open-loop, on a fixed
schedule (`rate` a second, whatever the daemon does), so a daemon that falls behind shows it in
the latency rather than by slowing the offer. The latencies are read back from the store once the
stream has been handled: `bench-stamp` records when `handle` was first called.

Used by scenario 6 (a short stream at 200/s: the `at 200/s` rows) and by the long run
(`long-run`: ten minutes, first minute against last minute, autovacuum off on the tables).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from bench import daemon
from executor.client import Client
from executor.core import Phase
from executor.core.records import ExecutionRecord
from executor.store import Store

STAMP = "bench-stamp"
#: Submissions in flight at once at most: a stalled store shows as latency, not as unbounded tasks.
MAX_IN_FLIGHT = 16


@dataclass(frozen=True, slots=True, order=True)
class Sample:
    #: Seconds after the stream's first submission that this one was created.
    offset: float
    #: Submit (the record's `created_at`) to the first `handle`, in seconds.
    latency: float
    #: From the moment `submit` returned (its commit acknowledged) to the first `handle`: the
    #: daemon's own share, less whatever the submitter took to hear of its commit (negative when
    #: the daemon was quicker than that).
    after_return: float


@dataclass(slots=True)
class PacedRun:
    #: Each submission's latency and when it was made, in submission order.
    samples: list[Sample]
    #: How long each `submit` call took (the submitter's own share of the latency).
    submit_seconds: list[float]
    #: Submissions a second actually offered (below `rate` when the submitter could not keep up).
    offered_rate: float


async def paced_samples(url: str, process: daemon.DaemonProcess, *, rate: float, seconds: float) -> PacedRun:
    """Offer `rate` submissions a second for `seconds`, wait until all are handled, and return each
    one's latency with when it was submitted, and what the submitter managed."""
    client = Client(Store.from_url(url))
    try:
        warm_up = await client.submit(STAMP)  # the process has started and its connections are open
        await _handled(client, process, 1, limit=60.0)
        count = max(int(rate * seconds), 1)
        slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        tasks: list[asyncio.Task[str]] = []

        submit_seconds: list[float] = []
        returned_at: dict[str, float] = {}

        async def submit() -> str:
            began = time.perf_counter()
            try:
                execution_id = await client.submit(STAMP)
                returned_at[execution_id] = time.time()
                return execution_id
            finally:
                submit_seconds.append(time.perf_counter() - began)
                slots.release()

        started = time.monotonic()
        for number in range(count):
            delay = started + number / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await slots.acquire()
            tasks.append(asyncio.create_task(submit()))
            if number % 1000 == 0:
                process.check_alive()
        await asyncio.gather(*tasks)
        await _handled(client, process, count + 1, limit=60.0 + seconds)
        records = await _all_succeeded(client)
    finally:
        await client.close()
    stamped = [
        (record.created_at, float(record.outputs["handled_at"]), returned_at[record.id])
        for record in records
        if record.id != warm_up and record.outputs is not None
    ]
    if len(stamped) != count:
        raise RuntimeError(f"{len(stamped)} of {count} paced submissions were stamped")
    first = min(created for created, _, _ in stamped)
    samples = sorted(
        Sample(created - first, handled - created, handled - returned)
        for created, handled, returned in stamped
    )
    span = samples[-1].offset
    return PacedRun(samples, submit_seconds, (len(samples) - 1) / span if span > 0 else float(rate))


async def _handled(client: Client, process: daemon.DaemonProcess, count: int, *, limit: float) -> None:
    deadline = time.monotonic() + limit
    while (await client.store.count_by_phase()).get(Phase.SUCCESS, 0) < count:
        process.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"fewer than {count} executions were handled within {limit:g}s")
        await asyncio.sleep(0.05)


async def _all_succeeded(client: Client) -> list[ExecutionRecord]:
    """Every execution of the stream, a page at a time (newest first)."""
    records: list[ExecutionRecord] = []
    before: tuple[float, str] | None = None
    while True:
        page = await client.list_executions(phases=[Phase.SUCCESS], limit=1000, before=before)
        records.extend(page)
        if len(page) < 1000:
            return records
        before = (page[-1].created_at, page[-1].id)


def window(samples: list[Sample], start: float, end: float) -> list[float]:
    """The latencies of the submissions made between `start` and `end` seconds into the stream."""
    return [sample.latency for sample in samples if start <= sample.offset < end]
