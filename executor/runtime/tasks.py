"""The one task helper the parts of the loop share."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any

import anyio


async def cancel_and_wait(tasks: Collection[asyncio.Task[Any]]) -> None:
    """Cancel plugin calls and wait until they have stopped, whatever cancels the caller meanwhile:
    no call of a round may outlive it."""
    for task in tasks:
        task.cancel()
    with anyio.CancelScope(shield=True):
        await asyncio.wait(tasks)
