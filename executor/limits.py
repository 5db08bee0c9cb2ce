"""What the store can hold, as plain checks every door and the settings share.

The columns fix some limits (32-bit integers, 255-character strings, times the code formats back as
ISO 8601); the rest bound what one caller may make every reader pay for (labels, nesting, reasons).
A value outside them is refused where it comes in, naming the field, so that nothing stored can
later break a read or reach the database as a value it refuses (which it reports differently on
SQLite and PostgreSQL, and which would otherwise look like an outage).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

#: A SQL INTEGER on PostgreSQL (and what SQLite is held to, so both stores agree).
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
#: The length of the String(255) columns: task type, idempotency key, lease owner, replica id.
MAX_NAME = 255
MAX_LABELS = 64
MAX_LABEL_KEY = 255
MAX_LABEL_VALUE = 1024
MAX_REASON = 1024
#: Nesting of inputs: deep enough for any real document, shallow enough for every recursive reader.
MAX_DEPTH = 64
#: The longest duration any option or setting takes: a century, so that "now + duration" is a time
#: the code can still format.
MAX_DURATION_SECONDS = 100 * 365.25 * 86400
#: Times a submission may name: the epoch up to the year 9000 (ISO 8601 formatting ends at 9999).
EARLIEST = 0.0
LATEST = datetime(9000, 1, 1, tzinfo=UTC).timestamp()


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored as text on both stores, or None: PostgreSQL refuses NUL, and a
    lone surrogate is not Unicode that UTF-8 (SQLite's, the API's) can encode."""
    if "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate (not valid Unicode)"
    return None


def name_problem(value: str, limit: int = MAX_NAME) -> str | None:
    """`text_problem`, and a length of 1 to `limit` characters."""
    if not 0 < len(value) <= limit:
        return f"must be 1 to {limit} characters, got {len(value)}"
    return text_problem(value)


def int_problem(value: int, low: int = INT32_MIN, high: int = INT32_MAX) -> str | None:
    if value < low:
        return f"must be at least {low}"
    if value > high:
        return (
            f"must be at most {high} (a 32-bit integer)" if high == INT32_MAX else f"must be at most {high}"
        )
    return None


def json_problem(value: Any, *, max_depth: int = MAX_DEPTH) -> str | None:
    """Why a JSON value cannot be stored and served back, or None: nesting deeper than `max_depth`,
    or a string (or key) that is not Unicode. Iterative, so that no input is too deep to check."""
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, str):
            if text_problem(item) is not None and "\x00" not in item:
                return f"{path or 'the value'}: a string contains a lone surrogate (not valid Unicode)"
            continue
        if isinstance(item, Mapping | list | tuple):
            if depth > max_depth:
                return f"nested more than {max_depth} levels deep"
            children = item.items() if isinstance(item, Mapping) else enumerate(item)
            for key, child in children:
                where = f"{path}.{key}" if isinstance(key, str) else f"{path}[{key}]"
                if isinstance(key, str) and text_problem(key) is not None and "\x00" not in key:
                    return f"{where}: a key contains a lone surrogate (not valid Unicode)"
                stack.append((child, depth + 1, where))
    return None


def time_problem(seconds: float) -> str | None:
    if not EARLIEST <= seconds <= LATEST:
        return "must be between 1970-01-01 and 9000-01-01 (UTC)"
    return None
