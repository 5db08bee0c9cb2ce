"""The plugin loader: drop-in modules from a directory and the `executor.plugins` entry points.

Fixture plugin modules are written into a temporary directory by each test (a module with a
syntax error cannot live in the repository: the linters would trip on it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

from executor.core import PluginEntry, SetupContext
from executor.plugin import loader
from executor.plugin.loader import (
    ENTRY_POINT_GROUP,
    PluginLoadError,
    collect,
    load_directory,
    load_entry_points,
    plugin_files,
)
from executor.plugin.registry import PluginRegistry, PluginRegistryError, load_plugins
from executor.plugin.resources import InProcessResourceManager

REPO = Path(__file__).resolve().parent.parent
REPO_PLUGINS = REPO / "plugins"

PLUGIN = """\
from executor import plugin_registry
from executor.core import PhaseInfo, Plugin, PluginEntry, do_transition


class P(Plugin):
    id = {plugin_id!r}

    async def handle(self, tctx):
        return do_transition(PhaseInfo.success())


plugin_registry().register_core_plugin(
    PluginEntry(id={plugin_id!r}, registered_task_types={task_types!r}, load_plugin=lambda setup: P())
)
"""


def write(directory: Path, name: str, source: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


def plugin_source(plugin_id: str, task_types: list[str] | None = None) -> str:
    return PLUGIN.format(plugin_id=plugin_id, task_types=task_types or [plugin_id])


class _Logger:
    def debug(self, event: str, **kw: Any) -> None: ...
    def info(self, event: str, **kw: Any) -> None: ...
    def warning(self, event: str, **kw: Any) -> None: ...
    def error(self, event: str, **kw: Any) -> None: ...


SETUP = SetupContext(settings=None, logger=_Logger(), resource_registrar=InProcessResourceManager())


@pytest.fixture(autouse=True)
def no_real_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see only the entry points they declare, never whatever the venv has installed."""
    monkeypatch.setattr(loader, "entry_points", lambda group: [])


#: The plugins the project ships in plugins/ (examples/ is a directory without __init__: not loaded).
BUILT_IN_FILES = {"echo.py", "sleep.py", "http_job.py", "shell.py", "ray_job.py"}
BUILT_IN_IDS = {"core-sleep", "echo", "http-job", "shell", "ray-job"}


# -- the repository's plugins/ ------------------------------------------------------------------


@pytest.mark.anyio
async def test_repo_plugins_load_into_two_isolated_registries() -> None:
    first, second = PluginRegistry(), PluginRegistry()
    loaded_first = load_directory(first, REPO_PLUGINS)
    loaded_second = load_directory(second, REPO_PLUGINS)
    assert loaded_first == loaded_second
    assert {Path(p).name for p in loaded_first} == BUILT_IN_FILES
    for registry in (first, second):
        assert {e.id for e in registry.entries} == BUILT_IN_IDS
        assert registry.source_of("echo").endswith("echo.py")
        plugins = await load_plugins(registry, SETUP)
        assert plugins.task_types == sorted(BUILT_IN_IDS)
        sleep = plugins.for_task_type("core-sleep")
        assert sleep is not None and sleep.id == "core-sleep"
    # Each load executed the module afresh: the two registries hold distinct entries.
    assert first.entries[0] is not second.entries[0]


def test_collect_with_no_directory_uses_plugins_in_the_working_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(REPO)
    registry = PluginRegistry()
    sources = collect(registry, None, use_entry_points=False)
    assert len(sources) == len(BUILT_IN_FILES)
    assert {e.id for e in registry.entries} == BUILT_IN_IDS


def test_collect_reports_a_missing_default_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    missing: list[Path] = []
    collect(PluginRegistry(), None, use_entry_points=False, on_missing_default=missing.append)
    assert missing == [Path("plugins")]


def test_outside_the_checkout_an_editable_install_still_loads_the_built_ins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """This test process imports executor from the checkout, as an editable install does: with no
    `./plugins` where it runs, the built-ins come from next to the package, not from nowhere."""
    monkeypatch.chdir(tmp_path)
    registry = PluginRegistry()
    sources = collect(registry, None, use_entry_points=False)
    assert {e.id for e in registry.entries} == BUILT_IN_IDS
    assert {Path(source).parent for source in sources} == {REPO_PLUGINS}
    assert loader.PACKAGED_BUILTINS == REPO_PLUGINS


@pytest.mark.process
def test_a_wheel_loads_the_built_ins_packaged_inside_it(tmp_path: Path) -> None:
    """The wheel (what the image installs) carries the built-ins in the package: started from a
    directory with no `plugins/`, the installed package lists them from there."""
    pytest.importorskip("hatchling", reason="hatchling is in the dev extra")
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = tmp_path.glob("executor-*.whl")
    installed = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(installed)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith("EXECUTOR_")}
    # First on the path: this interpreter's editable install of the checkout comes after it.
    env.update(PYTHONPATH=str(installed), EXECUTOR_PLUGIN_ENTRY_POINTS="false")
    shown = subprocess.run(
        [sys.executable, "-m", "executor", "plugins", "--json"],
        env=env,
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    rows = {row["id"]: row for row in json.loads(shown.stdout)}
    assert set(rows) == BUILT_IN_IDS
    packaged = installed / "executor" / "_builtin_plugins"
    assert {Path(row["source"]).parent for row in rows.values()} == {packaged}


def test_collect_loads_the_directory_and_the_entry_points(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write(tmp_path, "alpha.py", plugin_source("alpha"))
    beta = PluginEntry(id="beta", registered_task_types=["beta"], load_plugin=lambda setup: None)  # type: ignore[arg-type,return-value]
    monkeypatch.setattr(loader, "entry_points", lambda group: [_FakeEntryPoint("beta", beta)])
    registry = PluginRegistry()
    sources = collect(registry, tmp_path)
    assert [e.id for e in registry.entries] == ["alpha", "beta"]
    assert len(sources) == 2
    without = PluginRegistry()
    collect(without, tmp_path, use_entry_points=False)
    assert [e.id for e in without.entries] == ["alpha"]


# -- a directory of drop-in modules -------------------------------------------------------------


def test_loads_modules_and_packages_and_skips_private_and_other_files(tmp_path: Path) -> None:
    write(tmp_path, "alpha.py", plugin_source("alpha"))
    write(tmp_path, "pkg/__init__.py", plugin_source("pkg"))
    write(tmp_path, "_private.py", "raise RuntimeError('a _private module must never be imported')\n")
    write(tmp_path, "_helpers/__init__.py", "raise RuntimeError('nor a _private package')\n")
    write(tmp_path, ".hidden.py", "raise RuntimeError('nor a hidden file')\n")
    write(tmp_path, "notes.txt", "not python\n")
    write(tmp_path, "not_a_package/module.py", "raise RuntimeError('no __init__.py, not a plugin')\n")
    registry = PluginRegistry()
    loaded = load_directory(registry, tmp_path)
    assert [Path(p).name for p in loaded] == ["alpha.py", "pkg"]
    assert [e.id for e in registry.entries] == ["alpha", "pkg"]
    assert [p.name for p in plugin_files(tmp_path)] == ["alpha.py", "pkg"]


def test_relative_directory_works_and_reports_lines(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The default plugins directory is relative (`plugins`): errors must still carry the line."""
    write(tmp_path, "plugins/raises.py", "x = 1\n\nraise RuntimeError('kaput')\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PluginLoadError) as caught:
        load_directory(PluginRegistry(), Path("plugins"))
    assert str(caught.value) == "plugins/raises.py:3: RuntimeError: kaput"


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(PluginLoadError, match=r"nowhere does not exist"):
        load_directory(PluginRegistry(), missing)
    a_file = write(tmp_path, "file.py", "")
    with pytest.raises(PluginLoadError, match="not a directory"):
        load_directory(PluginRegistry(), a_file)


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.py", "import os\n\n\ndef f(:\n    pass\n")
    with pytest.raises(PluginLoadError) as caught:
        load_directory(PluginRegistry(), tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{path}:4: SyntaxError")
    assert "does not compile" in message
    assert "executor_plugin_broken" not in sys.modules


def test_syntax_error_in_an_imported_helper_names_the_helper(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    helpers = tmp_path / "helpers"
    write(helpers, "executor_test_bad_helper.py", "x = 1\ny = (\n")
    monkeypatch.syspath_prepend(str(helpers))
    plugin = write(tmp_path / "plugins", "uses_helper.py", "import os\nimport executor_test_bad_helper\n")
    try:
        with pytest.raises(PluginLoadError) as caught:
            load_directory(PluginRegistry(), tmp_path / "plugins")
    finally:
        sys.modules.pop("executor_test_bad_helper", None)
    message = str(caught.value)
    assert message.startswith(f"{plugin}:2: SyntaxError in ")
    assert "executor_test_bad_helper.py:2" in message


def test_module_raising_on_import_names_file_line_and_error(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "raises.py",
        """\
        import os


        def helper():
            raise LookupError("missing thing")


        helper()
        """,
    )
    with pytest.raises(PluginLoadError) as caught:
        load_directory(PluginRegistry(), tmp_path)
    # The innermost line in the plugin file: where it raised, inside helper().
    assert str(caught.value) == f"{path}:5: LookupError: missing thing"
    assert isinstance(caught.value.__cause__, LookupError)
    assert "executor_plugin_raises" not in sys.modules


def test_registration_conflict_during_import_names_file_and_both_sources(tmp_path: Path) -> None:
    first = write(tmp_path, "a_first.py", plugin_source("same", ["x"]))
    second = write(tmp_path, "b_second.py", plugin_source("same", ["y"]))
    with pytest.raises(PluginLoadError) as caught:
        load_directory(PluginRegistry(), tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{second}:")
    assert "PluginRegistryError" in message
    assert str(first) in message and str(second) in message


def test_two_modules_claiming_one_task_type_fail_at_resolution(tmp_path: Path) -> None:
    write(tmp_path, "one.py", plugin_source("one", ["shared"]))
    write(tmp_path, "two.py", plugin_source("two", ["shared"]))
    registry = PluginRegistry()
    load_directory(registry, tmp_path)
    with pytest.raises(PluginRegistryError) as caught:
        registry.resolver()
    message = str(caught.value)
    assert "'one'" in message and "'two'" in message and "EXECUTOR_DEFAULT_FOR_TASK_TYPES" in message
    assert registry.resolver({"shared": "two"}).plugin_id_for("shared") == "two"


def test_a_failed_module_leaves_earlier_ones_registered_but_stops_the_load(tmp_path: Path) -> None:
    write(tmp_path, "a_good.py", plugin_source("good"))
    write(tmp_path, "b_bad.py", "raise ImportError('nope')\n")
    write(tmp_path, "c_never.py", plugin_source("never"))
    registry = PluginRegistry()
    with pytest.raises(PluginLoadError, match=r"b_bad.py:1: ImportError: nope"):
        load_directory(registry, tmp_path)
    assert [e.id for e in registry.entries] == ["good"]


# -- entry points -------------------------------------------------------------------------------


class _FakeEntryPoint:
    def __init__(self, name: str, target: object, value: str = "fake:target") -> None:
        self.name = name
        self.value = value
        self._target = target

    def load(self) -> object:
        if isinstance(self._target, BaseException):
            raise self._target
        return self._target


def _entry(plugin_id: str) -> PluginEntry:
    return PluginEntry(id=plugin_id, registered_task_types=[plugin_id], load_plugin=lambda setup: None)  # type: ignore[arg-type,return-value]


def test_entry_points_of_every_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    groups: list[str] = []
    points = [
        _FakeEntryPoint("single", _entry("single")),
        _FakeEntryPoint("factory", lambda: _entry("from-factory")),
        _FakeEntryPoint("many", lambda: [_entry("m1"), _entry("m2")]),
    ]

    def fake_entry_points(group: str) -> list[_FakeEntryPoint]:
        groups.append(group)
        return points

    monkeypatch.setattr(loader, "entry_points", fake_entry_points)
    registry = PluginRegistry()
    sources = load_entry_points(registry)
    assert groups == [ENTRY_POINT_GROUP]
    assert [e.id for e in registry.entries] == ["single", "from-factory", "m1", "m2"]
    assert sources == [f"entry point {p.name} ({p.value})" for p in points]
    assert registry.source_of("m2") == "entry point many (fake:target)"


def test_entry_point_module_that_registers_itself(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    module = "executor_test_ep_plugin"
    write(tmp_path, f"{module}.py", plugin_source("ep-module"))
    monkeypatch.syspath_prepend(str(tmp_path))
    point = EntryPoint(name="epmod", value=module, group=ENTRY_POINT_GROUP)
    monkeypatch.setattr(loader, "entry_points", lambda group: [point])
    registry = PluginRegistry()
    try:
        load_entry_points(registry)
    finally:
        sys.modules.pop(module, None)
    assert [e.id for e in registry.entries] == ["ep-module"]
    assert registry.source_of("ep-module") == f"entry point epmod ({module})"


def test_real_entry_point_to_an_attribute(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    module = "executor_test_ep_attr"
    write(
        tmp_path,
        f"{module}.py",
        """\
        from executor.core import PluginEntry

        def entries():
            return [PluginEntry(id="attr", registered_task_types=["attr"], load_plugin=lambda s: None)]
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    point = EntryPoint(name="attr", value=f"{module}:entries", group=ENTRY_POINT_GROUP)
    monkeypatch.setattr(loader, "entry_points", lambda group: [point])
    registry = PluginRegistry()
    try:
        load_entry_points(registry)
    finally:
        sys.modules.pop(module, None)
    assert [e.id for e in registry.entries] == ["attr"]


@pytest.mark.parametrize(
    ("target", "match"),
    [
        (ModuleNotFoundError("No module named 'gone'"), "ModuleNotFoundError: No module named 'gone'"),
        (lambda: 42, "TypeError"),
        (lambda: ["not an entry"], "expected a PluginEntry, got str"),
        ("a string", "expected a PluginEntry, got str"),
    ],
)
def test_broken_entry_point_is_a_load_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, target: object, match: str
) -> None:
    monkeypatch.setattr(loader, "entry_points", lambda group: [_FakeEntryPoint("bad", target, "pkg.mod:fn")])
    with pytest.raises(PluginLoadError) as caught:
        load_entry_points(PluginRegistry())
    message = str(caught.value)
    assert message.startswith("entry point bad (pkg.mod:fn): ")
    assert match in message


def test_entry_point_duplicating_a_directory_plugin_names_both(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write(tmp_path, "dup.py", plugin_source("dup"))
    monkeypatch.setattr(loader, "entry_points", lambda group: [_FakeEntryPoint("dup", _entry("dup"))])
    with pytest.raises(PluginLoadError) as caught:
        collect(PluginRegistry(), tmp_path)
    message = str(caught.value)
    assert str(path) in message and "entry point dup" in message
