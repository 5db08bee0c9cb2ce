"""Scenarios 16 and 17: many submissions at once (issue 20).

16 submits `bulk_rows` executions in one `Client.submit_many` (every row validated, then stored in
one transaction), against a raw multi-row insert of the same rows, already encoded, in one
transaction of the driver's own (sqlite3 `executemany`, asyncpg `unnest`): what the database
itself costs. Runs of the two are interleaved, each on a fresh database.

17 runs the daemon (with its HTTP API) and `http_clients` clients that each POST one `echo`
submission after another over a kept-alive connection for `http_seconds`, while the daemon runs
them. It reports submissions/s and the latency of each POST; afterwards every id the API
acknowledged must be in the database (nothing acknowledged and lost).
"""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import time
import urllib.request

import asyncpg

from bench.daemon import DaemonProcess
from bench.databases import Backend, PostgresBackend, SqliteBackend
from bench.harness import percentile
from bench.scenarios import Context
from executor.app.parts import task_types
from executor.client import Client
from executor.core import Phase
from executor.core.records import EventRecord
from executor.settings import load_settings
from executor.store import Store, Submission
from executor.store.columns import encode_event
from executor.store.statements import statements_for
from executor.store.submissions import new_execution_ids, new_row

S16 = "16. Bulk submission through the client"
S17 = "17. Concurrent single submissions over HTTP, daemon running them"
CLIENT = "Client.submit_many"
RAW = "raw multi-row insert, same rows"
SUBMISSIONS_PER_S = "submissions/s"


async def bulk(ctx: Context) -> None:
    for backend in ctx.backends:
        await _bulk_on(ctx, backend)


async def _bulk_on(ctx: Context, backend: Backend) -> None:
    count, store_label = ctx.sizes.bulk_rows, backend.label
    scenario = f"{S16}, {count:,} rows"
    resolver = task_types(load_settings(plugins_dir=ctx.plugins_dir, plugin_entry_points=False))
    rows = [{"task_type": "echo", "inputs": {"i": i}} for i in range(count)]

    async def with_client(url: str) -> float:
        store = Store.from_url(url)
        client = Client(store, task_types=resolver)
        try:
            started = time.perf_counter()
            ids = await client.submit_many(rows)
            seconds = time.perf_counter() - started
        finally:
            await client.close()
        if len(set(ids)) != count:
            raise RuntimeError(f"submit_many stored {len(set(ids))} of {count}")
        return seconds

    for number in range(1, ctx.sizes.runs + 1):
        for subject in (CLIENT, RAW):
            name = "bulk_run"
            await backend.create(name)
            try:
                url = backend.url(name)
                seconds = (
                    await with_client(url) if subject == CLIENT else await _raw_insert(backend, name, count)
                )
            finally:
                await backend.drop(name)
            ctx.report.measurement(
                scenario, store_label, subject, SUBMISSIONS_PER_S, SUBMISSIONS_PER_S
            ).values.append(count / seconds)
            ctx.progress(f"{store_label}: bulk, {subject}, run {number}/{ctx.sizes.runs} done")
    ours = ctx.report.measurement(scenario, store_label, CLIENT, SUBMISSIONS_PER_S, SUBMISSIONS_PER_S)
    limit = ctx.report.measurement(scenario, store_label, RAW, SUBMISSIONS_PER_S, SUBMISSIONS_PER_S)
    ctx.report.ratio(f"{scenario}, {store_label}: client / raw insert", ours, limit)
    ctx.report.target(f"S16 {store_label}: bulk >= 50,000/s", ours.median, 50_000, at_least=True, unit="/s")


async def _raw_insert(backend: Backend, name: str, count: int) -> float:
    """The same rows, encoded beforehand, in one transaction of the driver's own: the database's cost."""
    url = backend.url(name)
    now = time.time()
    encoded = [
        tuple(new_row(execution_id, Submission("echo", {"i": i}), now).values())
        for i, execution_id in enumerate(new_execution_ids(count))
    ]
    first_events = [
        encode_event(EventRecord(row[0], 1, 1, Phase.QUEUED, 0, now, reason="Submitted")) for row in encoded
    ]
    store = Store.from_url(url)
    sql = statements_for(store.dialect)
    await store.close()
    if isinstance(backend, SqliteBackend):
        connection = sqlite3.connect(backend.path(name))
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            started = time.perf_counter()
            with connection:
                connection.executemany(sql.insert_execution, encoded)
                connection.executemany(sql.insert_event, first_events)
            return time.perf_counter() - started
        finally:
            connection.close()
    assert isinstance(backend, PostgresBackend)
    pg = await asyncpg.connect(**backend.connect_kwargs(name))
    try:
        started = time.perf_counter()
        async with pg.transaction():
            for start in range(0, count, 5000):
                await pg.execute(
                    sql.insert_executions_unnest, *zip(*encoded[start : start + 5000], strict=True)
                )
                await pg.execute(
                    sql.insert_events_unnest, *zip(*first_events[start : start + 5000], strict=True)
                )
        return time.perf_counter() - started
    finally:
        await pg.close()


# -- 11: concurrent single submissions over HTTP ----------------------------------------------------


async def concurrent(ctx: Context) -> None:
    for backend in ctx.backends:
        await _concurrent_on(ctx, backend)


async def _concurrent_on(ctx: Context, backend: Backend) -> None:
    sizes, store_label = ctx.sizes, backend.label
    scenario = f"{S17}, {sizes.http_clients} clients, {sizes.http_seconds:g}s"
    for number in range(1, sizes.runs + 1):
        name = "http_run"
        await backend.create(name)
        try:
            rate, latencies, lost = await _one_http_run(ctx, backend, name)
        finally:
            await backend.drop(name)
        report = ctx.report
        report.measurement(
            scenario, store_label, "executor daemon", SUBMISSIONS_PER_S, SUBMISSIONS_PER_S
        ).values.append(rate)
        for label, fraction in (("p50", 0.5), ("p99", 0.99)):
            report.measurement(
                scenario,
                store_label,
                "executor daemon",
                f"POST latency, {label}",
                "ms",
                higher_is_better=False,
            ).values.append(1000 * percentile(latencies, fraction))
        report.measurement(
            scenario, store_label, "executor daemon", "acknowledged and lost", "rows", higher_is_better=False
        ).values.append(lost)
        ctx.progress(f"{store_label}: concurrent submissions, run {number}/{sizes.runs}: {rate:,.0f}/s")
    rate_m = ctx.report.measurement(
        scenario, store_label, "executor daemon", SUBMISSIONS_PER_S, SUBMISSIONS_PER_S
    )
    p99_m = ctx.report.measurement(
        scenario, store_label, "executor daemon", "POST latency, p99", "ms", higher_is_better=False
    )
    ctx.report.target(
        f"S17 {store_label}: >= 5,000 submissions/s", rate_m.median, 5000, at_least=True, unit="/s"
    )
    ctx.report.target(f"S17 {store_label}: POST p99 < 100 ms", p99_m.median, 100, at_least=False, unit="ms")


async def _one_http_run(ctx: Context, backend: Backend, name: str) -> tuple[float, list[float], int]:
    port = _free_port()
    process = DaemonProcess(
        backend.url(name),
        ctx.plugins_dir,
        ctx.sizes.batch_size,
        ctx.workdir / "http-daemon.log",
        http_addr=f"127.0.0.1:{port}",
    )
    try:
        await _wait_until_up(port, process)
        ids, latencies, seconds = await _load(port, ctx.sizes.http_clients, ctx.sizes.http_seconds)
    finally:
        process.stop()
    lost = await _missing(backend, name, ids)
    return len(ids) / seconds, latencies, lost


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _wait_until_up(port: int, process: DaemonProcess, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        process.check_alive()
        try:
            await asyncio.to_thread(
                urllib.request.urlopen, f"http://127.0.0.1:{port}/api/v1/openapi.json", None, 2
            )
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"the daemon's API did not answer on port {port} within {within:g}s")


_BODY = json.dumps({"task_type": "echo", "inputs": {"hello": "world"}}).encode()
_REQUEST = (
    b"POST /api/v1/executions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
    b"Content-Length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY
)


async def _load(port: int, clients: int, seconds: float) -> tuple[list[str], list[float], float]:
    """`clients` connections, each posting one submission after another until `seconds` pass.
    A minimal HTTP/1.1 client: the load generator must cost little beside the daemon."""
    ids: list[str] = []
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def one_client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < stop_at:
                sent = time.perf_counter()
                writer.write(_REQUEST)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                latencies.append(time.perf_counter() - sent)
                if status != 201:
                    raise RuntimeError(f"POST answered {status}: {body[:300]!r}")
                ids.append(json.loads(body)["id"])
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(clients)))
    return ids, latencies, time.perf_counter() - started


async def _missing(backend: Backend, name: str, ids: list[str]) -> int:
    """How many acknowledged ids the database does not hold."""
    if isinstance(backend, SqliteBackend):
        connection = sqlite3.connect(backend.path(name))
        try:
            stored = {row[0] for row in connection.execute("SELECT id FROM executions")}
        finally:
            connection.close()
    else:
        assert isinstance(backend, PostgresBackend)
        pg = await asyncpg.connect(**backend.connect_kwargs(name))
        try:
            stored = {row[0] for row in await pg.fetch("SELECT id FROM executions")}
        finally:
            await pg.close()
    return len(set(ids) - stored)
