"""The parts every door shares: the store, the task types and the client, from settings."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from executor.client import Client, ensure_schema
from executor.settings import Settings, load_settings
from executor.store import Store

if TYPE_CHECKING:
    # Imported where used: `executor get`, `list` and `events` load no plugin, and start faster so.
    from executor.plugin.registry import PluginRegistry, TaskTypeResolver


def open_store(settings: Settings, role: str = "client") -> Store:
    """The store EXECUTOR_DATABASE_URL names (not migrated: see `connect` and the daemon). On
    PostgreSQL its connections are named `executor-<role>` in `pg_stat_activity`: the daemon's
    (`executor-daemon <replica>`) apart from the clients' and the command line's."""
    return Store.from_url(settings.database_url, application_name=f"executor-{role}")


def collect_registry(settings: Settings) -> PluginRegistry:
    """Import the plugin modules the settings point at into a fresh registry."""
    from executor.logging import get_logger
    from executor.plugin.loader import PACKAGED_BUILTINS, collect
    from executor.plugin.registry import PluginRegistry

    registry = PluginRegistry()
    log = get_logger()

    def missing(default: Path) -> None:
        log.info(
            "plugins.default_dir_missing", directory=str(default.resolve()), using=str(PACKAGED_BUILTINS)
        )

    collect(
        registry,
        settings.plugins_dir,
        use_entry_points=settings.plugin_entry_points,
        on_missing_default=missing,
    )
    return registry


def task_types(settings: Settings, registry: PluginRegistry | None = None) -> TaskTypeResolver:
    """Which plugin handles which task type, and their input models: what a submission is checked
    against. Plugin modules are imported, but no plugin is loaded (`load_plugin` is not called)."""
    registry = registry if registry is not None else collect_registry(settings)
    return registry.resolver(settings.default_for_task_types)


def client_for(settings: Settings, store: Store, task_types: TaskTypeResolver | None) -> Client:
    """The client over `store`, with every setting that shapes a submission.

    Every door submits through a client made here: the CLI, `Client.connect` and the HTTP API.
    A setting that shapes submissions is added here once and reaches all three.
    """
    return Client(
        store,
        task_types=task_types,
        default_max_attempts=settings.default_max_attempts,
        default_timeout=settings.default_timeout,
        default_deadline=settings.default_deadline,
        max_payload_bytes=settings.max_payload_bytes,
    )


async def connect(
    settings: Settings | None = None,
    *,
    task_types: TaskTypeResolver | None = None,
    migrate: bool | None = None,
) -> Client:
    """Open the store, bring its schema up to date when allowed, and return the client over it."""
    settings = settings or load_settings()
    store = open_store(settings)
    try:
        await ensure_schema(store, migrate=settings.migrate_on_start if migrate is None else migrate)
    except BaseException:
        await store.close()
        raise
    return client_for(settings, store, task_types)
