"""The HTTP side of the daemon: one ASGI app, served by Hypercorn inside the daemon's event loop.

Hypercorn rather than uvicorn: its `serve(app, config, shutdown_trigger=...)` is made for running
inside a loop someone else owns. Given a shutdown trigger it installs no signal handlers, so the
daemon's own SIGTERM handling (finish the round, release leases) stays the only one; uvicorn's
`Server.serve` captures SIGINT/SIGTERM itself and re-raises them when it returns.

The socket is bound here, before the loop starts, so that an address in use is a one-line error
naming EXECUTOR_HTTP_ADDR (exit 2), and port 0 gives a real port to log.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Any

import anyio
import hypercorn.asyncio
import hypercorn.config
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from executor.client import Client
from executor.http import dashboard, health
from executor.http.api import BODY_READ_TIMEOUT, PREFIX, Api, ApiError, BearerAuth, error_response
from executor.http.metrics import Metrics
from executor.http.waits import MAX_WAIT
from executor.logging import get_logger
from executor.plugin.registry import LoadedPlugins
from executor.settings import Settings, SettingsError, parse_http_addr
from executor.store import StoreRefused, StoreUnavailable, SubmissionFailed


def create_app(
    *,
    client: Client,
    plugins: LoadedPlugins,
    settings: Settings,
    metrics: Metrics,
    body_timeout: float = BODY_READ_TIMEOUT,
) -> Starlette:
    """The whole HTTP surface: probes, metrics, `/api/v1` behind the token, and the dashboard.

    Its parts come from the composition root (`executor.app`): `client` is the one every door
    submits through, over the daemon's store. `body_timeout` bounds how long a request's body may
    take to arrive.
    """
    store = client.store
    api = Api(client, plugins, settings, metrics, body_timeout=body_timeout)
    token = settings.api_token.get_secret_value() if settings.api_token else None

    async def healthz(request: Request) -> Response:
        verdict = health.liveness(metrics, settings)
        return JSONResponse(verdict.body, status_code=200 if verdict.ok else 503)

    async def readyz(request: Request) -> Response:
        verdict = await health.readiness(store, plugins, metrics, settings)
        return JSONResponse(verdict.body, status_code=200 if verdict.ok else 503)

    async def metrics_text(request: Request) -> Response:
        body, content_type = await metrics.render(store, request.headers.get("accept", ""))
        return Response(body, headers={"Content-Type": content_type})

    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Route("/readyz", readyz, methods=["GET", "HEAD"]),
            Route("/metrics", metrics_text, methods=["GET"]),
            Mount(PREFIX, app=BearerAuth(api, token)),
            *dashboard.routes(),
        ],
        middleware=[Middleware(_SecurityHeaders), Middleware(_ErrorsAsJson)],
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            StoreUnavailable: _store_unavailable,
            StoreRefused: _store_refused,
            OSError: _store_unavailable,
        },
    )
    app.state.long_polls = api.long_polls  # answered at once when the server stops (HttpServer.run)
    return app


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    message = {404: f"nothing at {request.url.path}", 405: f"{request.method} is not allowed here"}
    return error_response(
        exc.status_code,
        codes.get(exc.status_code, "http_error"),
        message.get(exc.status_code, str(exc.detail)),
        headers=dict(exc.headers or {}),
    )


async def _store_unavailable(request: Request, exc: Exception) -> Response:
    get_logger().warning(
        "http.store_unavailable", path=request.url.path, error=f"{type(exc).__name__}: {exc}"
    )
    if isinstance(exc, SubmissionFailed):
        # Whether the submission was stored is the caller's next question: the verdict answers it.
        verdict = {"stored": exc.stored, "execution_ids": list(exc.execution_ids)}
        return error_response(503, "store_unavailable", str(exc), [verdict])
    cause = exc.__cause__ if isinstance(exc, StoreUnavailable) and exc.__cause__ is not None else exc
    return error_response(503, "store_unavailable", f"the database does not answer: {type(cause).__name__}")


async def _store_refused(request: Request, exc: Exception) -> Response:
    """A value the database would not store (out of its range, a character it cannot hold): the
    request's fault, and nothing was stored."""
    return error_response(422, "refused_by_store", str(exc))


#: Sent with every response. The dashboard loads only its own script and style sheet and talks only
#: to this server, so the policy allows nothing else; no page of this server may be framed.
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)


class _SecurityHeaders:
    """Adds `SECURITY_HEADERS` to every HTTP response (the dashboard's, the API's, the probes')."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(name, value) for name, value in SECURITY_HEADERS if name not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)


class _ErrorsAsJson:
    """Any other exception: logged through structlog, answered with a JSON 500, not a traceback."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def watch(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as err:
            get_logger().error(
                "http.error", path=scope.get("path"), error=f"{type(err).__name__}: {err}", exc_info=True
            )
            if started or scope["type"] != "http":
                raise
            response = error_response(500, "internal", f"internal error: {type(err).__name__}")
            await response(scope, receive, send)


# -- the server -------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return host == "localhost"


class HttpServer:
    """A bound socket and the app; `run` serves until cancelled, then shuts down gracefully."""

    def __init__(
        self,
        app: ASGIApp,
        sock: socket.socket,
        *,
        metrics: Metrics,
        lag_interval: float = 0.1,
        graceful_timeout: float = 5.0,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.lag_interval = lag_interval
        self.graceful_timeout = graceful_timeout
        host, port = sock.getsockname()[:2]
        self.host, self.port = str(host), int(port)
        self._sock: socket.socket | None = sock

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @classmethod
    def from_settings(
        cls, settings: Settings, *, client: Client, plugins: LoadedPlugins, metrics: Metrics
    ) -> HttpServer | None:
        """Bind EXECUTOR_HTTP_ADDR (None when it is empty) and warn when it is open to the network."""
        if not settings.http_addr:
            return None
        host, port = parse_http_addr(settings.http_addr)
        try:
            sock = bind(host, port)
        except OSError as err:
            reason = err.strerror or str(err)
            raise SettingsError(
                f"invalid setting EXECUTOR_HTTP_ADDR={settings.http_addr!r}: cannot listen there: {reason}"
            ) from None
        app = create_app(client=client, plugins=plugins, settings=settings, metrics=metrics)
        server = cls(
            app,
            sock,
            metrics=metrics,
            graceful_timeout=min(5.0, settings.shutdown_grace.total_seconds()),
        )
        if settings.api_token is None and not is_loopback(server.host):
            get_logger(replica=settings.replica_id).warning(
                "http.unauthenticated",
                address=server.url,
                detail="EXECUTOR_HTTP_ADDR is reachable from other hosts and EXECUTOR_API_TOKEN is not set: "
                "anyone who reaches this port can submit and abort executions",
            )
        return server

    def close(self) -> None:
        """Release the socket of a server that will not run."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def run(self) -> None:
        if self._sock is None:
            raise RuntimeError("an HttpServer runs once, and not after close()")
        config = hypercorn.config.Config()
        config.bind = [f"fd://{self._sock.detach()}"]  # Hypercorn owns and closes it from here
        self._sock = None
        config.accesslog = None
        config.errorlog = _hypercorn_logger()
        config.graceful_timeout = self.graceful_timeout
        # Idle reads are bounded too (the API bounds a body's whole read: BODY_READ_TIMEOUT), but
        # not below a long-poll's longest wait, during which the client rightly sends nothing.
        config.read_timeout = int(max(BODY_READ_TIMEOUT * 2, MAX_WAIT + BODY_READ_TIMEOUT))
        stopping = anyio.Event()
        shield = anyio.CancelScope(shield=True)

        async def serve() -> None:
            with shield:
                await hypercorn.asyncio.serve(self.app, config, shutdown_trigger=stopping.wait)  # type: ignore[arg-type]

        async with anyio.create_task_group() as group:
            group.start_soon(self.metrics.watch_event_loop, self.lag_interval)
            group.start_soon(serve)
            get_logger().info(
                "http.listening", url=self.url, dashboard=f"{self.url}/", api=f"{self.url}{PREFIX}"
            )
            try:
                await anyio.sleep_forever()
            finally:
                # Cancelled (the daemon is stopping): let requests under way finish, within bounds;
                # long-polls answer at once.
                long_polls = getattr(getattr(self.app, "state", None), "long_polls", None)
                if long_polls is not None:
                    long_polls.close()
                stopping.set()
                shield.deadline = anyio.current_time() + self.graceful_timeout + 1


def bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class _ToStructlog(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        log = get_logger()
        level = "error" if record.levelno >= logging.ERROR else "warning"
        getattr(log, level)("http.server", message=record.getMessage(), exc_info=record.exc_info or False)


def _hypercorn_logger() -> logging.Logger:
    """Hypercorn's own messages (warnings and errors), as structlog lines like every other."""
    logger = logging.getLogger("executor.http.hypercorn")
    if not logger.handlers:
        logger.addHandler(_ToStructlog())
        logger.setLevel(logging.WARNING)
        logger.propagate = False
    return logger
