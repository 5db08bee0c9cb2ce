"""The runtime side of the plugin contract: registry, loader, lifecycle (start, background tasks,
aclose), state manager, execution context."""
