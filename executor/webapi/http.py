"""httpx responses turned into the kit's errors, so a plugin needs one line per remote call."""

from __future__ import annotations

import math
import time
from email.utils import parsedate_to_datetime

import httpx

from executor.webapi.errors import RateLimitedError, RemoteError, ResourceNotFoundError

#: Statuses worth trying again: the remote is busy, restarting or timed out.
_RETRYABLE = frozenset({408, 425, 500, 502, 503, 504})


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delay-seconds (fractions accepted) or an HTTP date."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def check_response(response: httpx.Response, what: str) -> httpx.Response:
    """Return `response` when it succeeded; raise the kit's error that says what to do otherwise.

    429, or any answer with `Retry-After`: `RateLimitedError` (the plugin slows down, nothing fails).
    404 and 410: `ResourceNotFoundError`. 408, 425, 5xx: a retryable `RemoteError`. Other 4xx: a
    permanent one. `what` names the call in the message ("POST /jobs").
    """
    if response.is_success:
        return response
    status = response.status_code
    body = response.text.strip().replace("\n", " ")[:300]
    message = f"{what}: HTTP {status}" + (f": {body}" if body else "")
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    if status == 429 or (retry_after is not None and status in (503, 429)):
        raise RateLimitedError(message, retry_after=retry_after, status_code=status)
    if status in (404, 410):
        raise ResourceNotFoundError(message, status_code=status)
    raise RemoteError(message, retryable=status in _RETRYABLE or status >= 500, status_code=status)
