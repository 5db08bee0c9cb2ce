"""The runtime side of the plugin contract: registry, loader, state manager, execution context."""
