"""`GET /api/v1/executions/{id}?wait=30s`: a long-poll that answers when the execution has ended.

A long-poll rather than a stream of server-sent events: the answer is the same document as a plain
GET (`executor get --json`), so a caller needs nothing new to read it, any HTTP client can make the
call, and a proxy that buffers responses does not break it. The request is held until the
execution's phase is final, the time given has passed, or the server stops; then it answers 200
with the execution as it is (the caller tells from `phase` whether it ended, and asks again if
not). Waiting goes through `Client.wait`, so a thousand held requests cost the database one
listener and a read per wake-up (`executor.store.waits`), and `wait` is refused with the
client's words, as `executor wait --timeout` is.
"""

from __future__ import annotations

from typing import Any

import anyio

from executor.client import Client, ExecutionNotFoundError, SubmissionError, wait_seconds
from executor.core.records import ExecutionRecord

#: Longest wait one request may ask for; longer waits are refused (ask again instead): proxies
#: and load balancers close connections silent for longer, and the server's read timeout is
#: set from it (`executor.http.app`).
MAX_WAIT = 60.0

#: The query parameter, for the OpenAPI document of `GET /executions/{id}`.
WAIT_PARAMETER: dict[str, Any] = {
    "name": "wait",
    "in": "query",
    "required": False,
    "schema": {"type": "string"},
    "description": "Long-poll: answer once the execution has ended (SUCCESS, PERMANENT_FAILURE, "
    f"ABORTED), or after this long with the execution as it is then. Seconds, or text such as "
    f"'30s'; at most {MAX_WAIT:g}s. A stopping server answers at once.",
}


class LongPollError(ValueError):
    """`wait` refused (a 400); the message says why."""


class LongPolls:
    """The long-polls a server holds; `close` answers them all at once (the server is stopping)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._scopes: set[anyio.CancelScope] = set()
        self._closed = False

    @staticmethod
    def seconds(text: str) -> float:
        """`wait` in seconds, refused as `Client.wait` refuses a timeout, and above `MAX_WAIT`."""
        try:
            seconds = wait_seconds(text, "wait")
        except SubmissionError as err:
            raise LongPollError(str(err)) from None
        assert seconds is not None
        if seconds > MAX_WAIT:
            raise LongPollError(f"wait must be at most {MAX_WAIT:g}s, got {seconds:g}s; ask again for longer")
        return seconds

    async def answer(self, execution_id: str, wait: str) -> ExecutionRecord | None:
        """The execution once final, or after `wait` (or at close) as it is then; None: not found."""
        seconds = self.seconds(wait)
        scope = anyio.CancelScope(deadline=anyio.current_time() + seconds)
        if self._closed:
            scope.cancel()
        self._scopes.add(scope)
        try:
            with scope:
                return await self._client.wait(execution_id)
        except ExecutionNotFoundError:
            return None
        finally:
            self._scopes.discard(scope)
        return await self._client.get(execution_id)  # the time ran out, or the server stops

    def close(self) -> None:
        self._closed = True
        for scope in self._scopes:
            scope.cancel()
