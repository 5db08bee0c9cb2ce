"""Keeps secret values out of logs, events and error messages.

Every value `tctx.secret_manager.get` hands a plugin is registered here. From then on the log
processor replaces it in every line (messages, fields, formatted tracebacks), and the loop scrubs it
from what a round stores (reasons, error messages, task info) before the commit. A plugin that
logs a secret, raises with it, or reports it in a failure leaves only `[REDACTED]` behind.

A value is masked in every form it takes on its way out, not only as it is: escaped by `repr` (an
exception such as `KeyError(secret)` shows its argument that way, in either quoting) and by JSON
(with and without `ensure_ascii`), and those forms escaped once more (the `repr` of a message that
already holds a `repr`). A secret with a quote or a backslash in it would otherwise leave the
redactor's sight as soon as anything escaped it.

Values shorter than `MIN_LENGTH` are not scrubbed: replacing every "1" in a log would make it
unreadable, and a secret that short protects nothing anyway.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, MutableMapping
from typing import Any

MASK = "[REDACTED]"
MIN_LENGTH = 4


def escaped_forms(value: str) -> set[str]:
    """`value` as `repr` (both quotings) and JSON (ASCII or not) write it inside their quotes."""
    return {
        repr(value)[1:-1],
        # repr quotes with ' and escapes it when the text holds both quotes: force that quoting.
        repr(value + "'\"")[1:-3],
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
    }


def forms(value: str) -> set[str]:
    """Every form of `value` masked: as it is, escaped, and escaped twice."""
    once = escaped_forms(value)
    return {value} | once | {twice for form in once for twice in escaped_forms(form)}


class Redactor:
    def __init__(self) -> None:
        self._secrets: frozenset[str] = frozenset()
        #: Every form of every secret, longest first, so that a form containing another is masked whole.
        self._values: tuple[str, ...] = ()
        self._lock = threading.Lock()  # plugins marked blocking read secrets from worker threads

    def add(self, value: str) -> None:
        if len(value) < MIN_LENGTH or value in self._secrets:
            return
        with self._lock:
            secrets = self._secrets | {value}
            every = {form for secret in secrets for form in forms(secret) if len(form) >= MIN_LENGTH}
            self._values = tuple(sorted(every, key=len, reverse=True))
            self._secrets = frozenset(secrets)

    def __bool__(self) -> bool:
        return bool(self._values)

    def text(self, value: str) -> str:
        for secret in self._values:
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
