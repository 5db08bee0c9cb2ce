"""A real job service on 127.0.0.1 for the remote-service plugin tests, and helpers to drive them.

`JobServer` speaks the API `plugins/http_job.py` documents, from a thread (stdlib
`ThreadingHTTPServer`, one thread per connection), and can be told to be slow, to answer 429 with
`Retry-After`, to fail creates, to lose jobs and to require a bearer token. It records every call
(method, path, status, monotonic time), the most calls it ever served at once, and the client
connections open now.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

PLUGINS = Path(__file__).resolve().parent.parent / "plugins"
EXAMPLES = PLUGINS / "examples"


@dataclass(frozen=True, slots=True)
class Call:
    method: str
    path: str
    status: int
    started: float
    finished: float


@dataclass(slots=True)
class Job:
    id: str
    name: str
    payload: dict[str, Any]
    created: float
    deleted: bool = False


@dataclass
class Knobs:
    #: Seconds every answer waits before it is sent.
    delay: float = 0.0
    #: The next N requests (of `throttle_methods`) answer 429 with this Retry-After.
    throttle_next: int = 0
    throttle_methods: frozenset[str] = frozenset({"GET", "POST", "DELETE"})
    retry_after: str | None = "1"
    #: The next N creates fail with `create_status` and `create_error`.
    fail_creates: int = 0
    create_status: int = 503
    create_error: str = "database unavailable"
    #: GETs of every job answer 404, as if the service forgot them.
    lose_jobs: bool = False
    #: Seconds after creation a job reports SUCCEEDED; None: it runs until deleted.
    complete_after: float | None = 0.0
    #: Required `Authorization` header value; None: none required.
    token: str | None = None


class JobServer:
    def __init__(self) -> None:
        self.knobs = Knobs()
        self.lock = threading.Lock()
        self.jobs: dict[str, Job] = {}
        self.by_name: dict[str, str] = {}
        self.calls: list[Call] = []
        self.auth_headers: list[str | None] = []
        self.in_flight = 0
        #: Client connections open now, and ever opened (a keep-alive connection counts once).
        self.open_connections = 0
        self.connections_opened = 0
        self.max_in_flight: dict[str, int] = {"GET": 0, "POST": 0, "DELETE": 0}
        self._in_flight_by_method: dict[str, int] = {"GET": 0, "POST": 0, "DELETE": 0}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> JobServer:
        handler = _handler_for(self)
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler, bind_and_activate=False)
        server.daemon_threads = True
        server.request_queue_size = 1024  # a thousand creates at once must not overflow the backlog
        server.allow_reuse_address = True
        server.server_bind()
        server.server_activate()
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- what the tests read ----------------------------------------------------------------------

    def calls_of(self, method: str, status: int | None = None) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.method == method and (status is None or c.status == status)]

    def live_jobs(self) -> int:
        """Jobs created and neither deleted nor finished."""
        now = time.monotonic()
        with self.lock:
            return sum(1 for job in self.jobs.values() if not job.deleted and not self._finished(job, now))

    def _finished(self, job: Job, now: float) -> bool:
        after = self.knobs.complete_after
        return after is not None and now - job.created >= after

    # -- the API ----------------------------------------------------------------------------------

    def answer(
        self, method: str, path: str, body: bytes, auth: str | None
    ) -> tuple[int, dict[str, str], Any]:
        knobs = self.knobs
        with self.lock:
            self.auth_headers.append(auth)
            if knobs.throttle_next > 0 and method in knobs.throttle_methods:
                knobs.throttle_next -= 1
                headers = {"Retry-After": knobs.retry_after} if knobs.retry_after is not None else {}
                return 429, headers, {"error": "slow down"}
            if knobs.token is not None and auth != knobs.token:
                return 401, {}, {"error": "unauthorised"}
            parts = [p for p in path.split("/") if p]
            if method == "POST" and parts == ["jobs"]:
                return self._create(json.loads(body or b"{}"))
            if len(parts) == 2 and parts[0] == "jobs":
                job = self.jobs.get(parts[1])
                if job is None or job.deleted:
                    return 404, {}, {"error": f"job {parts[1]} not found"}
                if method == "GET":
                    if knobs.lose_jobs:
                        return 404, {}, {"error": f"job {job.id} not found"}
                    return 200, {}, self._view(job)
                if method == "DELETE":
                    job.deleted = True
                    return 200, {}, {"id": job.id, "status": "CANCELLED"}
            return 404, {}, {"error": f"no route {method} {path}"}

    def _create(self, request: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        knobs = self.knobs
        if knobs.fail_creates > 0:
            knobs.fail_creates -= 1
            return knobs.create_status, {}, {"error": knobs.create_error}
        name = str(request.get("name", ""))
        existing = self.by_name.get(name)
        if existing is not None:
            return 200, {}, self._view(self.jobs[existing])
        job = Job(uuid.uuid4().hex[:12], name, dict(request.get("payload") or {}), time.monotonic())
        self.jobs[job.id] = job
        self.by_name[name] = job.id
        return 201, {}, {"id": job.id, "status": "PENDING"}

    def _view(self, job: Job) -> dict[str, Any]:
        if job.deleted:
            return {"id": job.id, "status": "CANCELLED"}
        if self._finished(job, time.monotonic()):
            return {"id": job.id, "status": "SUCCEEDED", "result": {"name": job.name, "echo": job.payload}}
        return {"id": job.id, "status": "RUNNING"}


def _handler_for(server: JobServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms stalls

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def setup(self) -> None:
            super().setup()
            with server.lock:
                server.open_connections += 1
                server.connections_opened += 1

        def finish(self) -> None:
            """Called once the client closed its connection (or it broke)."""
            try:
                super().finish()
            finally:
                with server.lock:
                    server.open_connections -= 1

        def _serve(self) -> None:
            method = self.command
            started = time.monotonic()
            status = 500
            with server.lock:
                server.in_flight += 1
                server._in_flight_by_method[method] = server._in_flight_by_method.get(method, 0) + 1
                server.max_in_flight[method] = max(
                    server.max_in_flight.get(method, 0), server._in_flight_by_method[method]
                )
            try:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if server.knobs.delay:
                    time.sleep(server.knobs.delay)
                status, headers, payload = server.answer(
                    method, self.path, body, self.headers.get("Authorization")
                )
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)
            finally:
                with server.lock:
                    server.in_flight -= 1
                    server._in_flight_by_method[method] -= 1
                    server.calls.append(Call(method, self.path, status, started, time.monotonic()))

        do_GET = do_POST = do_DELETE = _serve  # noqa: N815 (the names http.server looks up)

    return Handler


def most_in_window(times: list[float], seconds: float) -> int:
    """The largest number of `times` (sorted or not) within any interval of length `seconds`."""
    ordered = sorted(times)
    most, start = 0, 0
    for end, t in enumerate(ordered):
        while t - ordered[start] > seconds:
            start += 1
        most = max(most, end - start + 1)
    return most


# -- driving executions through the real loop --------------------------------------------------


class FakeClock:
    """The loop's clock: seconds since the epoch, moved only by the test."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Harness:
    """A real Reconciler over the test's SQLite store with the plugins of `plugins/` (and any
    extra directory), the `http-job` kit configuration given, and a fake clock. The plugins run
    their lifecycle as in the daemon (`running_plugins`): started by `build`, closed by `aclose`,
    which must be awaited in the task that built the harness."""

    def __init__(
        self, store: Any, reconciler: Any, clock: FakeClock, step: float, lifecycle: AsyncExitStack
    ) -> None:
        self.store = store
        self.reconciler = reconciler
        self.clock = clock
        self.step = step
        self._lifecycle = lifecycle

    @classmethod
    async def build(
        cls,
        store: Any,
        database_url: str,
        *,
        plugin_config: dict[str, dict[str, Any]] | None = None,
        extra_dirs: tuple[Path, ...] = (),
        step: float = 10.0,
        **settings: Any,
    ) -> Harness:
        from executor.core import SetupContext
        from executor.logging import get_logger
        from executor.plugin.lifecycle import running_plugins
        from executor.plugin.loader import load_directory
        from executor.plugin.registry import PluginRegistry, load_plugins
        from executor.plugin.resources import InProcessResourceManager
        from executor.runtime import Reconciler
        from executor.settings import load_settings

        registry = PluginRegistry()
        load_directory(registry, PLUGINS)
        for directory in extra_dirs:
            load_directory(registry, directory)
        loaded = load_settings(database_url=database_url, **settings)
        resources = InProcessResourceManager(loaded.resource_quotas)
        setup = SetupContext(
            settings=loaded,
            logger=get_logger(),
            resource_registrar=resources,
            plugin_config=plugin_config or {},
        )
        plugins = await load_plugins(registry, setup)
        clock = FakeClock(time.time())
        reconciler = Reconciler(store, plugins, loaded, resource_manager=resources, clock=clock)
        lifecycle = AsyncExitStack()
        await lifecycle.enter_async_context(running_plugins(plugins.by_id, get_logger()))
        return cls(store, reconciler, clock, step, lifecycle)

    def plugin(self, plugin_id: str = "http-job") -> Any:
        return self.reconciler.plugins.by_id[plugin_id]

    async def aclose(self) -> None:
        """Stop the plugins' background tasks and close the plugins, as the daemon's shutdown does."""
        await self._lifecycle.aclose()

    async def submit(self, task_type: str, inputs: list[dict[str, Any]], **fields: Any) -> list[str]:
        from executor.store import Submission

        ids: list[str] = await self.store.submit_many(
            [Submission(task_type, item, **fields) for item in inputs], now=self.clock()
        )
        return ids

    async def records(self, ids: list[str]) -> list[Any]:
        return [await self.store.get(execution_id) for execution_id in ids]

    async def finished(self, ids: list[str]) -> bool:
        """Every execution is in a final phase and finalized."""
        if len(ids) > 20:  # one query, not one per execution (each test has a store of its own)
            counts = await self.store.count_by_phase()
            final = sum(count for phase, count in counts.items() if phase.is_final)
            return final == len(ids) and not await self.store.list_executions(unfinalized=True, limit=1)
        records = await self.records(ids)
        return all(r.phase.is_final and r.finalized for r in records)

    async def drive(
        self,
        done: Callable[[], Awaitable[bool]],
        *,
        within: float = 15.0,
        cache_plugin: str | None = None,
    ) -> int:
        """Run rounds until `done()`; between rounds move the clock one step and either wait for
        the named plugin's cache to finish a refresh pass (an event), or yield briefly (a poll).
        Returns the rounds run; fails the test past `within` seconds."""
        import anyio

        deadline = time.monotonic() + within
        rounds = 0
        while True:
            await self.reconciler.run_round()
            rounds += 1
            if await done():
                return rounds
            if time.monotonic() > deadline:
                raise AssertionError(f"not done after {within}s ({rounds} rounds)")
            self.clock.advance(self.step)
            if cache_plugin is not None and len(self.plugin(cache_plugin).cache):
                cache = self.plugin(cache_plugin).cache
                with anyio.fail_after(max(deadline - time.monotonic(), 0.1)):
                    await cache.wait_for_pass(cache.passes)
            else:
                await anyio.sleep(0.005)
