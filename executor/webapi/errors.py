"""What a remote call can raise, so that the kit knows whether to retry, slow down or give up.

An `AsyncPlugin` raises these from `create`, `get` and `delete` (or lets `check_response` raise
them from an httpx response). Any other exception counts as a retryable `RemoteError`.
"""

from __future__ import annotations


class RemoteError(Exception):
    """The remote call failed. `retryable=False` means trying again cannot help (a 400, a 403)."""

    def __init__(self, message: str, *, retryable: bool = True, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.status_code = status_code


class RateLimitedError(RemoteError):
    """The remote asked us to slow down (HTTP 429, or `Retry-After`); never a failure on its own."""

    def __init__(self, message: str, *, retry_after: float | None = None, status_code: int | None = 429):
        super().__init__(message, retryable=True, status_code=status_code)
        self.retry_after = retry_after


class ResourceNotFoundError(RemoteError):
    """The remote does not know the resource: already deleted, or lost.

    `delete` treats it as success; `get` counts it as a failed sync (a job the remote lost fails
    the execution once `max_sync_failures` is passed).
    """

    def __init__(self, message: str, *, status_code: int | None = 404) -> None:
        super().__init__(message, retryable=True, status_code=status_code)


def describe(err: BaseException) -> str:
    """A one-line description of a failed remote call, for reasons and events."""
    if isinstance(err, RemoteError):
        return err.message
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
