"""executor: an asyncio daemon that drives task executions to completion through plugins.

Plugin modules import the contract from `executor.core` and register with `plugin_registry()`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from executor.plugin.registry import plugin_registry

__all__ = ["plugin_registry"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Imported on first use, not with the package: every `executor` command imports this package,
    # and most never touch the plugin registry (it costs tens of milliseconds: see tests/test_cli_speed.py).
    if name == "plugin_registry":
        from executor.plugin.registry import plugin_registry

        return plugin_registry
    raise AttributeError(f"module 'executor' has no attribute {name!r}")
