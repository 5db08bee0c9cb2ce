"""Keeps secret values out of logs, events and error messages.

Every value `tctx.secret_manager.get` hands a plugin is registered here. From then on the log
processor replaces it in every line (messages, fields, formatted tracebacks), and the loop scrubs it
from what a round stores (reasons, error messages, task info) before the commit. A plugin that
logs a secret, raises with it, or reports it in a failure leaves only `[REDACTED]` behind.

Values shorter than `MIN_LENGTH` are not scrubbed: replacing every "1" in a log would make it
unreadable, and a secret that short protects nothing anyway.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, MutableMapping
from typing import Any

MASK = "[REDACTED]"
MIN_LENGTH = 4


class Redactor:
    def __init__(self) -> None:
        self._values: frozenset[str] = frozenset()
        self._lock = threading.Lock()  # plugins marked blocking read secrets from worker threads

    def add(self, value: str) -> None:
        if len(value) < MIN_LENGTH or value in self._values:
            return
        with self._lock:
            # Longest first, so a secret that contains another is masked whole.
            self._values = frozenset(self._values | {value})

    def __bool__(self) -> bool:
        return bool(self._values)

    def text(self, value: str) -> str:
        for secret in sorted(self._values, key=len, reverse=True):
            if secret in value:
                value = value.replace(secret, MASK)
        return value

    def scrub(self, value: Any) -> Any:
        """`value` with every secret masked, in strings, mappings, lists and tuples, recursively."""
        if not self._values:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.scrub(key): self.scrub(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.scrub(item) for item in value)
        return value

    def processor(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """A structlog processor: place it after tracebacks are rendered, before the renderer."""
        if not self._values:
            return event_dict
        scrubbed: MutableMapping[str, Any] = self.scrub(event_dict)
        return scrubbed


#: The process's redactor: the secret manager feeds it, the logging set-up and the loop read it.
REDACTOR = Redactor()
