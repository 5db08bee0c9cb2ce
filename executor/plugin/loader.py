"""Finds plugin modules and imports them into a registry.

Two sources: every module in the plugins directory (drop-in files, as users deploy them) and the
`executor.plugins` entry-point group (plugins shipped as packages). A module that fails to import
stops the daemon at startup with the file and the error: a plugin silently missing would only show
up later as executions failing with `UnknownTaskType`.
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
import types
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from pathlib import Path

from executor.core import PluginEntry
from executor.plugin.registry import PluginRegistry, registering_into

ENTRY_POINT_GROUP = "executor.plugins"

_PACKAGE = Path(__file__).resolve().parent.parent


def _builtins_directory() -> Path:
    """Where the built-in plugins (`core-sleep`, `echo`, `http-job`) are, however executor was installed.

    They are the checkout's `plugins/*.py`. A wheel carries them inside the package, as
    `executor/_builtin_plugins` (pyproject force-includes them); an editable install (`pip install
    -e .`, what `make run` does) and a source tree import the package from the checkout, where
    they sit next to it. Found relative to the package, never the working directory, so the
    daemon and the CLI know the same task types wherever they are started. (The migrations are
    found the same way: `executor.store.migrate.MIGRATIONS_DIR`.)
    """
    packaged = _PACKAGE / "_builtin_plugins"
    checkout = _PACKAGE.parent / "plugins"
    if not packaged.is_dir() and (_PACKAGE.parent / "pyproject.toml").is_file() and checkout.is_dir():
        return checkout
    return packaged


#: The built-in plugins: packaged inside a wheel, or the checkout's `plugins/` (see above).
PACKAGED_BUILTINS = _builtins_directory()


class PluginLoadError(Exception):
    """A plugin module could not be imported; the message names the file and the error."""


def plugin_files(directory: Path) -> list[Path]:
    """Modules and packages directly in `directory`, in a stable order; `_private` ones are skipped."""
    found = [
        path
        for path in directory.iterdir()
        if not path.name.startswith(("_", "."))
        and ((path.suffix == ".py" and path.is_file()) or (path / "__init__.py").is_file())
    ]
    return sorted(found)


def load_directory(registry: PluginRegistry, directory: Path) -> list[str]:
    """Import every plugin module in `directory` into `registry`; returns the files loaded."""
    if not directory.is_dir():
        raise PluginLoadError(f"plugins directory {directory} does not exist or is not a directory")
    loaded = []
    for path in plugin_files(directory):
        _import_file(registry, path)
        loaded.append(str(path))
    return loaded


def load_entry_points(registry: PluginRegistry) -> list[str]:
    """Load the `executor.plugins` entry points: a module that registers on import, a
    `PluginEntry`, or a callable returning one or several entries."""
    loaded = []
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        source = f"entry point {entry_point.name} ({entry_point.value})"
        with registering_into(registry, source):
            try:
                target = entry_point.load()
                _register_object(registry, target)
            except Exception as err:
                raise PluginLoadError(f"{source}: {type(err).__name__}: {err}") from err
        loaded.append(source)
    return loaded


def _register_object(registry: PluginRegistry, target: object) -> None:
    if isinstance(target, types.ModuleType):
        return  # it registered itself while being imported
    produced = target() if callable(target) and not isinstance(target, PluginEntry) else target
    entries: Iterable[object] = [produced] if isinstance(produced, PluginEntry) else produced  # type: ignore[assignment]
    for entry in entries:
        if not isinstance(entry, PluginEntry):
            raise TypeError(f"expected a PluginEntry, got {type(entry).__name__}")
        registry.register_core_plugin(entry)


def _import_file(registry: PluginRegistry, path: Path) -> None:
    """Import one file as a fresh module (re-executed on every load, so each registry sees it)."""
    module_name = f"executor_plugin_{path.stem}"
    location = path / "__init__.py" if path.is_dir() else path
    spec = importlib.util.spec_from_file_location(
        module_name, location, submodule_search_locations=[str(path)] if path.is_dir() else None
    )
    if spec is None or spec.loader is None:
        raise PluginLoadError(f"{location}: not an importable Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # pydantic and dataclasses look the module up while it runs
    with registering_into(registry, str(location)):
        try:
            spec.loader.exec_module(module)
        except SyntaxError as err:
            sys.modules.pop(module_name, None)
            if err.filename is None or _same_file(err.filename, location):
                message = (
                    f"{location}:{err.lineno}: SyntaxError: {err.msg} (the plugin module does not compile)"
                )
            else:  # a module the plugin imports does not compile: name both
                message = (
                    f"{_innermost_frame_in(location, err)}: SyntaxError in {err.filename}:{err.lineno}: "
                    f"{err.msg} (a module the plugin imports does not compile)"
                )
            raise PluginLoadError(message) from err
        except Exception as err:
            sys.modules.pop(module_name, None)
            where = _innermost_frame_in(location, err)
            raise PluginLoadError(f"{where}: {type(err).__name__}: {err}") from err


def _innermost_frame_in(location: Path, err: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(err.__traceback__) if _same_file(f.filename, location)]
    return f"{location}:{frames[-1].lineno}" if frames else str(location)


def _same_file(filename: str, location: Path) -> bool:
    """Code objects carry absolute paths even when the plugins directory was given as a relative one."""
    return Path(filename).resolve() == location.resolve()


def collect(
    registry: PluginRegistry,
    directory: Path | None,
    *,
    use_entry_points: bool = True,
    on_missing_default: Callable[[Path], None] | None = None,
) -> list[str]:
    """Load every plugin source into `registry`.

    `directory=None` means the default `plugins/` next to where the daemon runs; when that does
    not exist (an installed wheel), the built-ins packaged with executor are loaded instead.
    """
    sources: list[str] = []
    if directory is None:
        default = Path("plugins")
        if default.is_dir():
            sources += load_directory(registry, default)
        else:
            if on_missing_default is not None:
                on_missing_default(default)
            if PACKAGED_BUILTINS.is_dir():
                sources += load_directory(registry, PACKAGED_BUILTINS)
    else:
        sources += load_directory(registry, directory)
    if use_entry_points:
        sources += load_entry_points(registry)
    return sources
