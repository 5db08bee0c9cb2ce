"""executor: an asyncio daemon that drives task executions to completion through plugins.

Plugin modules import the contract from `executor.core` and register with `plugin_registry()`.
"""

from executor.plugin.registry import plugin_registry

__all__ = ["plugin_registry"]
__version__ = "0.1.0"
